"""The frame_cache's columns and how one clip's row is made: L frames per clip (decord, evenly spaced), resized and centre-cropped for CLIP, as JPEG.

One Parquet file per shard (`<cache>/<dataset>/frame_cache/<shard>.parquet`), a row per
clip: the frames' JPEG bytes, the timestamp and index each frame was taken at, the source
size/fps/duration and a still-video score. Places-style items have one picture: L = 1.
"""

from dataclasses import asdict

import av
import decord
import pyarrow as pa

from assets.caches.shard_builder import CacheSpec
from assets.caches.video_frames import FrameParams, decode_video_frames, encode_jpeg, load_image

CODE_VERSION = "1"

FRAME_FIELDS = [
    ("frames", pa.list_(pa.binary())),  # JPEG bytes, one per frame
    ("timestamps", pa.list_(pa.float32())),  # seconds from the first frame, per frame
    ("frame_indices", pa.list_(pa.int64())),  # -1 for a still image
    ("source_width", pa.int32()), ("source_height", pa.int32()),
    ("source_fps", pa.float32()), ("duration_s", pa.float32()),
    ("still_score", pa.float32()),  # mean abs difference of consecutive sampled frames (0-255)
    ("still", pa.bool_()),
]


def frame_row(task: tuple[str, str, FrameParams]) -> dict:
    """The frame_cache columns of one clip (runs in a worker process)."""
    media, image, p = task
    decoded = load_image(image, p) if image else decode_video_frames(media, p)
    return {
        "frames": [encode_jpeg(f, p.jpeg_quality) for f in decoded.frames],
        "timestamps": decoded.timestamps.tolist(), "frame_indices": decoded.indices.tolist(),
        "source_width": decoded.source_size[0], "source_height": decoded.source_size[1],
        "source_fps": decoded.source_fps, "duration_s": decoded.duration_s,
        "still_score": decoded.still_score, "still": decoded.still,
    }


def quiet_decoders() -> None:
    """Worker init: decoder complaints go into the error records, not onto the run's stderr."""
    decord.logging.set_level(decord.logging.QUIET)
    av.logging.set_level(av.logging.PANIC)


def frame_spec(p: FrameParams, picture_only: bool) -> CacheSpec:
    params = asdict(p) | {"source": "image" if picture_only else "video"}
    return CacheSpec("frame_cache", CODE_VERSION, params, FRAME_FIELDS, {"clipkt.frame_format": "jpeg"})

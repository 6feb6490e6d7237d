"""The frame_cache's columns and how one clip's row is made: L frames over the clip's span (PyAV, evenly spaced), resized and centre-cropped for CLIP, as JPEG.

One Parquet file per shard (`<cache>/<dataset>/frame_cache/<shard>.parquet`), a row per
clip: the frames' JPEG bytes, the time each frame was asked for and the time it has (seconds
from the video stream's first frame; in `keyframe` mode they differ by the seek offset), the
span of the file the clip is and the part of it the video covers, the source size/fps/duration,
a still-video score and warnings (a video shorter than its span, a `segment` file much longer
than its listed length). Places-style items have one picture: L = 1.
"""

from dataclasses import asdict

import av
import numpy as np
import pyarrow as pa

from assets.caches.clip_span import clip_span, span_warnings
from assets.caches.code_versions import FRAME_CACHE
from assets.caches.shard_builder import CacheSpec
from assets.caches.video_frames import FrameParams, decode_video_frames, encode_jpeg, load_image

FRAME_FIELDS = [
    ("frames", pa.list_(pa.binary())),  # JPEG bytes, one per frame
    ("target_times", pa.list_(pa.float32())),  # the times asked for (s from the stream's first frame)
    ("timestamps", pa.list_(pa.float32())),  # the times of the frames returned
    ("seek_offsets", pa.list_(pa.float32())),  # timestamps - target_times (0 up to half a frame in exact mode)
    ("span_start_s", pa.float32()), ("span_end_s", pa.float32()),  # the seconds of the file the clip is
    ("video_end_s", pa.float32()),  # where the part of the span the video covers ends
    ("source_width", pa.int32()), ("source_height", pa.int32()),
    ("source_fps", pa.float32()), ("duration_s", pa.float32()),
    ("still_score", pa.float32()),  # mean abs difference of consecutive sampled frames (0-255)
    ("still", pa.bool_()),
    ("warnings", pa.string()),  # short_video, longer_than_listed ("; "-separated, "" when none)
]


def frame_row(task: tuple) -> dict:
    """The frame_cache columns of one clip (runs in a worker process).

    task: (media path, image path or "", listed start_s, listed end_s, the dataset's media mode, FrameParams)."""
    media, image, start_s, end_s, media_mode, p = task
    span = clip_span(media_mode if not image else "segment", start_s, end_s, media)
    if image:
        decoded, notes, covered = load_image(image, p), [], (0.0, 0.0)
    else:
        decoded = decode_video_frames(media, p, span)
        notes = span_warnings(span, "video", decoded.duration_s, media_mode, p.coverage_margin_s)
        covered = span.covered(decoded.duration_s)
    span_end = span.end_s if span.end_s is not None else covered[1]
    return {
        "frames": [encode_jpeg(f, p.jpeg_quality) for f in decoded.frames],
        "target_times": decoded.targets.tolist(), "timestamps": decoded.timestamps.tolist(),
        "seek_offsets": (decoded.timestamps - decoded.targets).astype(np.float32).tolist(),
        "span_start_s": span.start_s, "span_end_s": span_end, "video_end_s": covered[1],
        "source_width": decoded.source_size[0], "source_height": decoded.source_size[1],
        "source_fps": decoded.source_fps, "duration_s": decoded.duration_s,
        "still_score": decoded.still_score, "still": decoded.still, "warnings": "; ".join(notes),
    }


def quiet_decoders() -> None:
    """Worker init: decoder complaints go into the error records, not onto the run's stderr."""
    av.logging.set_level(av.logging.PANIC)


def frame_spec(p: FrameParams, picture_only: bool, media_mode: str = "segment") -> CacheSpec:
    params = asdict(p) | {"source": "image" if picture_only else "video", "media": media_mode}
    return CacheSpec("frame_cache", FRAME_CACHE, params, FRAME_FIELDS, {"clipkt.frame_format": "jpeg"})

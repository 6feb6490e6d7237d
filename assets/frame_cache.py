"""frame_cache: L frames per clip (decord, evenly spaced), resized and centre-cropped for CLIP, as JPEG.

One Parquet file per shard (`<cache>/<dataset>/frame_cache/<shard>.parquet`), a row per
clip: the frames' JPEG bytes, the timestamp and index each frame was taken at, the source
size/fps/duration and a still-video score. Places-style items have one picture: L = 1.
"""

from dataclasses import asdict

import av
import dagster as dg
import decord
import pyarrow as pa
import pyarrow.parquet as pq

from assets.cache_asset import PoolConfig, member_paths, run_cache_stage
from assets.dataset_config import DatasetConfig
from assets.shard_cache import CacheSpec
from assets.video_frames import FrameParams, decode_video_frames, encode_jpeg, load_image
from pipelines.resources import CachePaths

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


class FrameCacheConfig(PoolConfig):
    num_frames: int = 4  # L frames evenly spaced over the clip, both ends included (seed 001: 4)
    size: int = 224  # the CLIP teacher's input size (ViT-B/32: 224)
    jpeg_quality: int = 95
    still_threshold: float = 2.0  # mean abs frame difference (0-255) below which a clip counts as still


def build_frame_cache_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    picture_only = ds.format == "places"

    @dg.asset(
        key=[ds.name, "frame_cache"], group_name=ds.name, kinds={"parquet"}, partitions_def=shards,
        deps=[dg.AssetKey([ds.name, "clip_shards"])], code_version=CODE_VERSION,
        description=("One picture per item, resized and centre-cropped for CLIP (JPEG)." if picture_only else
                     "L frames per clip, evenly spaced, resized and centre-cropped for CLIP (JPEG), with timestamps "
                     "and a still-video flag."),
    )
    def frame_cache(context: dg.AssetExecutionContext, config: FrameCacheConfig, cache: CachePaths) -> dg.MaterializeResult:
        p = FrameParams(num_frames=1 if picture_only else config.num_frames, size=config.size,
                        jpeg_quality=config.jpeg_quality, still_threshold=config.still_threshold)
        build, result = run_cache_stage(
            context, ds, cache, "frame_cache", frame_spec(p, picture_only),
            lambda m: (*member_paths(ds, m), p),  # Places rows have an image path, video rows do not
            frame_row, config, init=quiet_decoders)
        still = pq.read_table(build.path, columns=["still"]).column("still").to_pylist()
        result.metadata["still_clips"] = dg.MetadataValue.int(sum(1 for x in still if x) if not picture_only else 0)
        return result

    return frame_cache

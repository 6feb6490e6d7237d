"""What every per-shard cache asset shares: pool settings, reading the shard, metadata for the UI."""

from collections.abc import Callable

import dagster as dg
import pyarrow.parquet as pq

from assets.dataset_config import DatasetConfig
from assets.manifest import markdown_table, resolve_inside
from assets.shard_cache import CacheSpec, ShardBuild, build_shard
from pipelines.resources import CachePaths


class PoolConfig(dg.Config):
    workers: int = 2  # worker processes per shard
    timeout_s: float = 60.0  # per-clip time bound; a clip over it is killed and recorded as `timeout`
    max_worker_rss_mb: float = 2048.0  # a worker above this after a clip is replaced
    torch_threads: int = 1  # intra-op threads per worker (parallelism comes from the workers)


def member_paths(ds: DatasetConfig, member: dict) -> tuple[str, str]:
    """Absolute media and image paths of a manifest row (already checked to stay inside the root)."""
    media = resolve_inside(ds.root, member["media_path"]) or ""
    image = resolve_inside(ds.root, member["image_path"]) if member["image_path"] else ""
    return media, image or ""


def run_cache_stage(context: dg.AssetExecutionContext, ds: DatasetConfig, cache: CachePaths, stage: str,
                    spec: CacheSpec, task_of: Callable, compute: Callable, pool: PoolConfig,
                    init: Callable | None = None) -> tuple[ShardBuild, dg.MaterializeResult]:
    shard = context.partition_key
    members = pq.read_table(cache.shard_path(ds.name, shard))
    path = cache.dataset_dir(ds.name) / stage / f"{shard}.parquet"
    build = build_shard(members, spec, path, task_of, compute, workers=pool.workers, timeout_s=pool.timeout_s,
                        max_rss_mb=pool.max_worker_rss_mb, init=init,
                        progress=lambda done, total: context.log.debug(f"{stage} {shard}: {done}/{total} clips"))
    metadata = {
        "path": dg.MetadataValue.path(str(path)), "bytes": build.bytes, "clips": build.rows,
        "ok": build.status_counts.get("ok", 0), "by_status": build.status_counts,
        "computed": build.computed, "reused": build.reused, "skipped_up_to_date": build.skipped,
        "seconds": round(build.seconds, 2), "params": spec.params,
        "first_errors": dg.MetadataValue.md(markdown_table(build.first_errors)),
    }
    if build.pool is not None and build.computed:
        metadata |= {"clips_per_s": round(build.computed / max(build.seconds, 1e-9), 2),
                     "worker_peak_rss_mb": build.pool.per_worker_peak_mb, "timeouts": build.pool.timeouts,
                     "worker_restarts": build.pool.worker_restarts}
    result = dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(build.fingerprint))
    return build, result


"""Sensors: notice dataset changes and request work for exactly what changed.

One sensor per dataset. A tick does two independent things:
1. If the dataset's files changed (metadata or media: path, size, mtime), request a
   manifest run.
2. If the manifest on disk changed since the last tick, compare each shard's digest
   with the one the sensor last saw (and with the one the built shard file carries):
   shards that are new or whose members' files changed are added as partitions (if
   the manifest run has not already) and get one run each. Unchanged shards get none.
3. After a code change that bumps a cache stage's code version (the cursor remembers the
   versions it last checked), read the footers of the built cache files once and request a
   run for every shard built by an older version, so upgraded caches are rebuilt by the
   pipeline itself.
"""


import json
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.caches.code_versions import AUDIO_CACHE, FRAME_CACHE
from assets.core.atomic_io import read_parquet_metadata
from assets.core.cache_layout import CacheLayout
from assets.ingest.dataset_config import DatasetConfig
from assets.ingest.manifest import dataset_fingerprint
from assets.ingest.shard_plan import DIGEST_COLUMNS, shard_digests
from pipelines.jobs import AssetJob
from pipelines.resources import CachePaths

# The cache stages a shard run rebuilds, and the code version their files must carry.
CACHE_CODE_VERSIONS = {"frame_cache": FRAME_CACHE, "fbank_cache": AUDIO_CACHE, "logmel_cache": AUDIO_CACHE,
                       "waveform_cache": AUDIO_CACHE}


def outdated_shards(layout: CacheLayout, ds: DatasetConfig, shards: list[str],
                    versions: Mapping[str, str] = CACHE_CODE_VERSIONS) -> list[str]:
    """Shards with a built cache file of an older code version than `versions` (footers only)."""
    out = []
    for shard in shards:
        for stage, version in versions.items():
            path = layout.stage_path(ds.name, stage, shard)
            if path.exists() and read_parquet_metadata(path).get("clipkt.code_version") != version:
                out.append(shard)
                break
    return out


@dataclass
class TickPlan:
    run_manifest: bool
    shards_to_run: list[str]
    cursor: dict


def plan_tick(cursor: Mapping, fingerprint: str, manifest_version: str | None,
              digests: Mapping[str, str] | None, built: Mapping[str, str]) -> TickPlan:
    """Pure decision of one tick.

    cursor: what the last tick saw; digests: shard -> digest of the manifest now on disk
    (None if there is none or it is the one the cursor saw); built: shard -> digest
    stored in that shard's built file.
    """
    new_cursor = {"fingerprint": fingerprint, "manifest": cursor.get("manifest"),
                  "shards": dict(cursor.get("shards", {}))}
    to_run: list[str] = []
    if digests is not None and manifest_version != cursor.get("manifest"):
        seen = new_cursor["shards"]
        to_run = [s for s, d in sorted(digests.items()) if seen.get(s) != d and built.get(s) != d]
        new_cursor.update(manifest=manifest_version, shards=dict(digests))
    return TickPlan(fingerprint != cursor.get("fingerprint"), to_run, new_cursor)


def _built_digests(layout: CacheLayout, ds: DatasetConfig, shards: list[str]) -> dict[str, str]:
    built = {}
    for s in shards:
        path = layout.shard_path(ds.name, s)
        if path.exists():
            built[s] = read_parquet_metadata(path).get("clipkt.digest", "")
    return built


def build_dataset_sensor(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition,
                         manifest_job: AssetJob,
                         shard_job: AssetJob,
                         minimum_interval_seconds: int = 120) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{ds.name}_files_sensor", jobs=[manifest_job, shard_job],
        minimum_interval_seconds=minimum_interval_seconds, default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Watches {ds.root}; re-reads the manifest when files change and builds new or changed shards only.",
    )
    def dataset_sensor(context: dg.SensorEvaluationContext, cache: CachePaths) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        layout = cache.layout()
        path = layout.manifest_path(ds.name)
        digests = version = None
        if path.exists():
            version = str(path.stat().st_mtime_ns)
            if version != cursor.get("manifest"):
                digests = shard_digests(pq.read_table(path, columns=["shard", *DIGEST_COLUMNS],
                                                      filters=pc.field("shard").is_valid()))
        built = _built_digests(layout, ds, sorted(digests)) if digests else {}
        plan = plan_tick(cursor, dataset_fingerprint(ds), version, digests, built)
        requests = [dg.RunRequest(job_name=shard_job.name, partition_key=s, run_key=f"{s}:{digests[s]}")
                    for s in plan.shards_to_run]
        if cursor.get("code_versions") != CACHE_CODE_VERSIONS:  # first tick after a cache code change
            known = set(context.instance.get_dynamic_partitions(shards.name))
            stamp = ",".join(f"{k}={v}" for k, v in sorted(CACHE_CODE_VERSIONS.items()))
            requests += [dg.RunRequest(job_name=shard_job.name, partition_key=s, run_key=f"{s}:code:{stamp}")
                         for s in outdated_shards(layout, ds, sorted(known)) if s not in plan.shards_to_run]
        plan.cursor["code_versions"] = CACHE_CODE_VERSIONS
        if plan.run_manifest:
            requests.insert(0, dg.RunRequest(job_name=manifest_job.name, run_key=f"manifest:{plan.cursor['fingerprint']}"))
        new = [s for s in plan.shards_to_run if not context.instance.has_dynamic_partition(shards.name, s)]
        return dg.SensorResult(
            run_requests=requests, cursor=json.dumps(plan.cursor),
            dynamic_partitions_requests=[shards.build_add_request(new)] if new else [],
        )

    return dataset_sensor


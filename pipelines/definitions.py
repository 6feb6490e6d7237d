"""The code location: one asset group, three jobs and one sensor per declared dataset.

    dagster dev -w workspace.yaml
    dagster job execute -m pipelines.definitions -j synthav_vggsound_manifest_job
"""

from __future__ import annotations

import dagster as dg

from assets.audio_cache import build_fbank_cache_asset, build_logmel_cache_asset
from assets.fbank_stats import build_fbank_stats_asset
from assets.frame_cache import build_frame_cache_asset
from assets.manifest import build_clip_manifest_asset
from assets.shards import build_clip_shards_asset
from pipelines.datasets import load_datasets
from pipelines.jobs import manifest_job, shard_job, stats_job
from pipelines.partitions import shard_partitions
from pipelines.resources import CachePaths
from pipelines.sensors import build_dataset_sensor


def build_definitions() -> dg.Definitions:
    assets, jobs, sensors = [], [], []
    for ds in load_datasets():
        shards = shard_partitions(ds)
        per_shard = [build_clip_shards_asset(ds, shards), build_fbank_cache_asset(ds, shards)]
        if ds.format != "audiocaps":  # AudioCaps is audio only
            per_shard.append(build_frame_cache_asset(ds, shards))
        if ds.format == "places":  # spoken captions: DaveNet's log-mel input too
            per_shard.append(build_logmel_cache_asset(ds, shards))
        assets += [build_clip_manifest_asset(ds, shards), *per_shard, build_fbank_stats_asset(ds, shards)]
        ds_jobs = [manifest_job(ds), shard_job(ds, per_shard)]
        jobs += [*ds_jobs, stats_job(ds)]
        sensors.append(build_dataset_sensor(ds, shards, *ds_jobs))
    return dg.Definitions(assets=assets, jobs=jobs, sensors=sensors, resources={"cache": CachePaths.from_env()})


defs = build_definitions()

"""The code location: per declared dataset one asset group, five jobs and one sensor; the
demo's tiny CLIP teacher (group `teacher`), fitted on the first Places-format dataset; and
the `experiments` group: audio_encoder and retrieval_metrics partitioned by experiment file
(configs/experiments), and the ablation report; per experiment too, `localisation/sound_localisation`
(heatmaps scored against SynthAV's boxes) and `keywords/keyword_report` (SpeechCLIP's keywords).

The CLIP teacher resource comes from the environment (`ClipTeacherResource.from_env`):
ViT-B-32/openai by default, the tiny teacher with CLIPKT_TEACHER=tiny (the Makefile's choice
for the demo), in which case the embedding assets depend on teacher/tiny_clip. The executor too
(`pipelines.executors`): Dagster's multiprocess default, or Dask with CLIPKT_EXECUTOR=dask
(docs/distributed.md).

    dagster dev -w workspace.yaml
    dagster job execute -m pipelines.definitions -j synthav_vggsound_manifest_job
"""

from __future__ import annotations

import os

import dagster as dg

from assets.caches.assets import (build_fbank_cache_asset, build_fbank_stats_asset, build_frame_cache_asset,
                                  build_logmel_cache_asset, build_waveform_cache_asset)
from assets.ingest.assets import build_clip_manifest_asset, build_clip_shards_asset
from assets.ingest.dataset_config import load_datasets
from assets.keywords.assets import KEYWORDS_KEY, build_keyword_asset
from assets.localisation.assets import LOCALISATION_KEY, build_localisation_asset
from assets.mining.assets import (TINY_TEACHER_KEY, build_image_embeddings_asset, build_neighbor_tables_asset,
                                  build_text_embeddings_asset, build_tiny_teacher_asset)
from assets.training.assets import ENCODER_KEY, METRICS_KEY, REPORT_KEY, build_experiment_assets
from assets.training.experiments import load_all_experiments
from pipelines.executors import executor_from_env
from pipelines.jobs import (embedding_job, experiment_job, keyword_job, localisation_job, manifest_job, neighbors_job,
                            report_job, shard_job, stats_job, teacher_job)
from pipelines.partitions import shard_partitions
from pipelines.resources import CachePaths, ClipTeacherResource
from pipelines.sensors import build_dataset_sensor


def build_definitions() -> dg.Definitions:
    cache = CachePaths.from_env()
    datasets = load_datasets()
    teacher_ds = next((ds for ds in datasets if ds.format == "places"), None)
    tiny_teacher = teacher_ds is not None and os.environ.get("CLIPKT_TEACHER") == "tiny"
    teacher_dep = TINY_TEACHER_KEY if tiny_teacher else None
    assets, jobs, sensors = [], [], []
    for ds in datasets:
        shards = shard_partitions(ds)
        per_shard = [build_clip_shards_asset(ds, shards), build_fbank_cache_asset(ds, shards)]
        embeddings = [build_text_embeddings_asset(ds, shards, teacher_dep)]
        if ds.format != "audiocaps":  # AudioCaps is audio only
            per_shard.append(build_frame_cache_asset(ds, shards))
            embeddings.append(build_image_embeddings_asset(ds, shards, teacher_dep))
        if ds.format == "places":  # spoken captions: DaveNet's log-mel input too
            per_shard.append(build_logmel_cache_asset(ds, shards))
        if ds.waveform_cache:  # samples for a HuBERT featurizer
            per_shard.append(build_waveform_cache_asset(ds, shards))
        assets += [build_clip_manifest_asset(ds, shards), *per_shard, build_fbank_stats_asset(ds, shards),
                   *embeddings, build_neighbor_tables_asset(ds, shards)]
        ds_jobs = [manifest_job(ds), shard_job(ds, per_shard)]
        jobs += [*ds_jobs, stats_job(ds), embedding_job(ds, embeddings), neighbors_job(ds)]
        sensors.append(build_dataset_sensor(ds, shards, *ds_jobs))
    if teacher_ds is not None:
        assets.append(build_tiny_teacher_asset(teacher_ds, shard_partitions(teacher_ds)))
        jobs.append(teacher_job(TINY_TEACHER_KEY))
    experiments = load_all_experiments()
    if experiments:
        experiment_assets, partitions = build_experiment_assets(experiments, datasets, teacher_dep)
        assets += [*experiment_assets, build_localisation_asset(partitions, datasets),
                   build_keyword_asset(partitions, datasets)]
        jobs += [experiment_job(ENCODER_KEY, METRICS_KEY), localisation_job(LOCALISATION_KEY), keyword_job(KEYWORDS_KEY),
                 report_job(REPORT_KEY)]
    return dg.Definitions(assets=assets, jobs=jobs, sensors=sensors, executor=executor_from_env(),
                          resources={"cache": cache, "teacher": ClipTeacherResource.from_env(cache.layout())})


defs = build_definitions()

"""Jobs: per dataset, the manifest, one shard's caches, FBANK stats, one shard's CLIP embeddings, the
neighbour tables; one job that fits the demo's tiny teacher; one that trains and evaluates an
experiment (partition = experiment) and one that writes the ablation report."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets.ingest.dataset_config import DatasetConfig

AssetJob = UnresolvedAssetJobDefinition  # what define_asset_job returns (dagster exports no public name for it)
TEACHER_JOB = "tiny_teacher_job"
EXPERIMENT_JOB = "experiment_job"
LOCALISATION_JOB = "localisation_job"
KEYWORD_JOB = "keyword_job"
REPORT_JOB = "ablation_report_job"


GPU_TRAINING_RUN_TAG = {"clipkt/gpu_training": "true"}  # deploy/dagster.yaml queues these one at a time


def _job(name: str, *selection: dg.AssetKey | dg.AssetsDefinition, description: str,
         tags: dict[str, str] | None = None) -> AssetJob:
    """An asset job over exactly these assets (partitioning inferred from them)."""
    return dg.define_asset_job(name, selection=dg.AssetSelection.assets(*selection), description=description, tags=tags)


def manifest_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_manifest_job"


def shard_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_shard_job"


def stats_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_stats_job"


def embedding_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_embedding_job"


def neighbors_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_neighbors_job"


def manifest_job(ds: DatasetConfig) -> AssetJob:
    return _job(manifest_job_name(ds), dg.AssetKey([ds.name, "clip_manifest"]),
                description=f"Re-read {ds.name}'s metadata and files; registers new shards.")


def shard_job(ds: DatasetConfig, shard_assets: list[dg.AssetsDefinition]) -> AssetJob:
    return _job(shard_job_name(ds), *shard_assets, description=f"Build one {ds.name} shard: its member list and caches.")


def stats_job(ds: DatasetConfig) -> AssetJob:
    return _job(stats_job_name(ds), dg.AssetKey([ds.name, "fbank_stats"]),
                description=f"Recompute {ds.name}'s FBANK normalisation statistics from its fbank_cache shards.")


def embedding_job(ds: DatasetConfig, embedding_assets: list[dg.AssetsDefinition]) -> AssetJob:
    return _job(embedding_job_name(ds), *embedding_assets,
                description=f"Embed one {ds.name} shard with the CLIP teacher: its frames and its captions (or label prompts).")


def neighbors_job(ds: DatasetConfig) -> AssetJob:
    return _job(neighbors_job_name(ds), dg.AssetKey([ds.name, "neighbor_tables"]),
                description=f"Mine {ds.name}'s org/t2t/t2i/i2t/i2i neighbour tables from its embeddings.")


def teacher_job(teacher_key: dg.AssetKey) -> AssetJob:
    return _job(TEACHER_JOB, teacher_key, description="Fit the demo's tiny CLIP teacher (offline machines).")


def experiment_job(encoder_key: dg.AssetKey, metrics_key: dg.AssetKey) -> AssetJob:
    return _job(EXPERIMENT_JOB, encoder_key, metrics_key,
                description="Train one experiment's seeds and evaluate them (partition = experiment; a backfill is an ablation).",
                tags=GPU_TRAINING_RUN_TAG)


def localisation_job(localisation_key: dg.AssetKey) -> AssetJob:
    return _job(LOCALISATION_JOB, localisation_key,
                description="Score one experiment's heatmaps against SynthAV's sounding-object boxes (partition = experiment).")


def keyword_job(keywords_key: dg.AssetKey) -> AssetJob:
    return _job(KEYWORD_JOB, keywords_key,
                description="Detokenise one cascaded SpeechCLIP experiment's keywords and score their hit rate "
                            "(partition = experiment).")


def report_job(report_key: dg.AssetKey) -> AssetJob:
    return _job(REPORT_JOB, report_key, description="Collect every experiment's metrics into the ablation report.")

"""Jobs: per dataset, the manifest, one shard's caches, FBANK stats, one shard's CLIP embeddings, the
neighbour tables; and one job that fits the demo's tiny teacher."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

AssetJob = UnresolvedAssetJobDefinition  # what define_asset_job returns (dagster exports no public name for it)

from assets.dataset_config import DatasetConfig


def manifest_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_manifest_job"


def shard_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_shard_job"


def manifest_job(ds: DatasetConfig) -> AssetJob:
    return dg.define_asset_job(
        manifest_job_name(ds), selection=dg.AssetSelection.assets(dg.AssetKey([ds.name, "clip_manifest"])),
        description=f"Re-read {ds.name}'s metadata and files; registers new shards.",
    )


def stats_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_stats_job"


def shard_job(ds: DatasetConfig, shard_assets: list[dg.AssetsDefinition]) -> AssetJob:
    """One shard partition of every per-shard asset (partitioning inferred from the assets)."""
    return dg.define_asset_job(
        shard_job_name(ds), selection=dg.AssetSelection.assets(*shard_assets),
        description=f"Build one {ds.name} shard: its member list and caches.",
    )


def stats_job(ds: DatasetConfig) -> AssetJob:
    return dg.define_asset_job(
        stats_job_name(ds), selection=dg.AssetSelection.assets(dg.AssetKey([ds.name, "fbank_stats"])),
        description=f"Recompute {ds.name}'s FBANK normalisation statistics from its fbank_cache shards.",
    )


def embedding_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_embedding_job"


def embedding_job(ds: DatasetConfig, embedding_assets: list[dg.AssetsDefinition]) -> AssetJob:
    return dg.define_asset_job(
        embedding_job_name(ds), selection=dg.AssetSelection.assets(*embedding_assets),
        description=f"Embed one {ds.name} shard with the CLIP teacher: its frames and its captions (or label prompts).",
    )


def neighbors_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_neighbors_job"


def neighbors_job(ds: DatasetConfig) -> AssetJob:
    return dg.define_asset_job(
        neighbors_job_name(ds), selection=dg.AssetSelection.assets(dg.AssetKey([ds.name, "neighbor_tables"])),
        description=f"Mine {ds.name}'s org/t2t/t2i/i2t/i2i neighbour tables from its embeddings.",
    )


TEACHER_JOB = "tiny_teacher_job"


def teacher_job(teacher_key: dg.AssetKey) -> AssetJob:
    return dg.define_asset_job(TEACHER_JOB, selection=dg.AssetSelection.assets(teacher_key),
                               description="Fit the demo's tiny CLIP teacher (offline machines).")

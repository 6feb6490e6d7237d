"""Jobs: per dataset, one that rebuilds the manifest, one that builds a shard partition, one for stats."""

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

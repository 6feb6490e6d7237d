"""Jobs: per dataset, one that rebuilds the manifest and one that builds a shard partition."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets.dataset_config import DatasetConfig


def manifest_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_manifest_job"


def shard_job_name(ds: DatasetConfig) -> str:
    return f"{ds.name}_shard_job"


def manifest_job(ds: DatasetConfig) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        manifest_job_name(ds), selection=dg.AssetSelection.assets(dg.AssetKey([ds.name, "clip_manifest"])),
        description=f"Re-read {ds.name}'s metadata and files; registers new shards.",
    )


def shard_job(ds: DatasetConfig) -> UnresolvedAssetJobDefinition:
    """Partitioned by the dataset's shards (inferred from the selected assets)."""
    return dg.define_asset_job(
        shard_job_name(ds), selection=dg.AssetSelection.assets(dg.AssetKey([ds.name, "clip_shards"])),
        description=f"Build one {ds.name} shard partition.",
    )

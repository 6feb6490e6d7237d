"""Resources: where caches live."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

DEFAULT_CACHE_ROOT = "data/cache"


class CachePaths(dg.ConfigurableResource):
    """The cache root and the file layout under it (one directory per dataset)."""

    cache_root: str = DEFAULT_CACHE_ROOT  # relative paths resolve against the working directory

    @classmethod
    def from_env(cls) -> "CachePaths":
        return cls(cache_root=os.environ.get("CLIPKT_CACHE_ROOT", DEFAULT_CACHE_ROOT))

    def dataset_dir(self, dataset: str) -> Path:
        return Path(self.cache_root) / dataset

    def manifest_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "clip_manifest.parquet"

    def shard_path(self, dataset: str, shard: str) -> Path:
        return self.dataset_dir(dataset) / "shards" / f"{shard}.parquet"

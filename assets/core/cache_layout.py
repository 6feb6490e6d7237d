"""Where every cached file lives under the cache root (one directory per dataset).

    <root>/<dataset>/clip_manifest.parquet
    <root>/<dataset>/shards/<shard>.parquet                 a shard's manifest rows
    <root>/<dataset>/<stage>/<shard>.parquet                frame_cache, fbank_cache, logmel_cache,
                                                            clip_image_embeddings, clip_text_embeddings
    <root>/<dataset>/fbank_stats.json
    <root>/<dataset>/neighbor_tables/current.json           names the complete table set in use
    <root>/<dataset>/neighbor_tables/<fingerprint>/*.parquet
    <root>/teacher/clipkt-tiny.{pt,json}                    the demo's tiny CLIP teacher
    <root>/experiments/<experiment>/...                     runs, checkpoints, metrics

Plain paths, no I/O beyond reading `current.json`; the Dagster resource in
pipelines/resources.py wraps this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE_ROOT = "data/cache"
TINY_TEACHER_NAME = "clipkt-tiny"  # the demo teacher's open_clip model name and file stem


@dataclass(frozen=True)
class CacheLayout:
    root: Path = Path(DEFAULT_CACHE_ROOT)  # relative paths resolve against the working directory

    def dataset_dir(self, dataset: str) -> Path:
        return Path(self.root) / dataset

    def manifest_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "clip_manifest.parquet"

    def shard_path(self, dataset: str, shard: str) -> Path:
        return self.dataset_dir(dataset) / "shards" / f"{shard}.parquet"

    def stage_path(self, dataset: str, stage: str, shard: str) -> Path:
        """One shard's file of a per-shard stage (frame_cache, fbank_cache, clip_text_embeddings, ...)."""
        return self.dataset_dir(dataset) / stage / f"{shard}.parquet"

    def fbank_stats_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "fbank_stats.json"

    def neighbor_tables_root(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "neighbor_tables"

    def current_neighbor_tables(self, dataset: str) -> Path:
        """The directory of the complete table set in use (FileNotFoundError before the first build)."""
        root = self.neighbor_tables_root(dataset)
        return root / json.loads((root / "current.json").read_text())["fingerprint"]

    def experiment_dir(self, experiment: str) -> Path:
        """Checkpoints, final weights and metrics of one training experiment (all its seeds)."""
        return Path(self.root) / "experiments" / experiment

    def tiny_teacher_paths(self) -> tuple[Path, Path]:
        """(weights, open_clip model config JSON) of the demo's tiny teacher (asset teacher/tiny_clip)."""
        d = Path(self.root) / "teacher"
        return d / f"{TINY_TEACHER_NAME}.pt", d / f"{TINY_TEACHER_NAME}.json"

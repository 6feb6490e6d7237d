"""Partitions: each dataset's shards are dynamic partitions, added as the dataset grows."""

from __future__ import annotations

import dagster as dg

from assets.ingest.dataset_config import DatasetConfig


def shard_partitions(ds: DatasetConfig) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{ds.name}_shards")

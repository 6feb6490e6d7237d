"""A dataset's ground-truth semantic keys: which clips mean the same thing.

A dataset YAML may name a CSV (`semantic_keys: synthav_keys.csv`, relative to the root) with
header `clip_id,key`: one row per clip, `clip_id` exactly as the manifest makes it, `key` an
opaque string; clips with equal keys are semantically the same (SynthAV writes its generator's
truth). Real datasets have none. The keys let the mining stage measure how many of CLIP's mined
neighbours are true same-key clips and write an oracle table from the truth
(`assets.mining.false_negatives`). Extra columns are ignored; a clip the file does not list
simply has no key.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from assets.ingest.dataset_config import DatasetConfig

COLUMNS = ("clip_id", "key")


class SemanticKeysError(ValueError):
    """A semantic key file that cannot be used; the message names the file (and line) and why."""


def semantic_keys_path(ds: DatasetConfig) -> Path | None:
    """The key file the dataset declares, or None."""
    return None if ds.semantic_keys is None else ds.root / ds.semantic_keys


def load_semantic_keys(ds: DatasetConfig) -> dict[str, str] | None:
    """{clip_id: key} from the dataset's key file; None when the dataset declares none."""
    path = semantic_keys_path(ds)
    if path is None:
        return None
    if not path.is_file():
        raise SemanticKeysError(f"{path}: semantic key file not found (declared as semantic_keys in {ds.source or ds.name})")
    with path.open(newline="", encoding="utf-8-sig") as f:  # a re-saved CSV may carry a byte-order mark
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SemanticKeysError(f"{path}:1: missing column(s) {missing}; expected a header with {list(COLUMNS)}, "
                                    f"got {reader.fieldnames}")
        keys: dict[str, str] = {}
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            clip_id, key = row["clip_id"], row["key"]
            if not clip_id:
                raise SemanticKeysError(f"{path}:{line}: empty clip_id")
            if not key:
                raise SemanticKeysError(f"{path}:{line}: empty key for clip {clip_id!r}")
            if clip_id in keys:
                raise SemanticKeysError(f"{path}:{line}: duplicate clip_id {clip_id!r} (first on line {first_line[clip_id]})")
            keys[clip_id], first_line[clip_id] = key, line
    return keys


def group_ids(clip_ids: list[str], keys: dict[str, str]) -> np.ndarray:
    """(len(clip_ids),) int64: one id per distinct key among these clips (0, 1, ... in key order),
    equal keys getting equal ids; -1 for a clip without a key."""
    keyed = [i for i, c in enumerate(clip_ids) if c in keys]
    groups = np.full(len(clip_ids), -1, np.int64)
    if keyed:
        _, ids = np.unique(np.asarray([keys[clip_ids[i]] for i in keyed], dtype=object), return_inverse=True)
        groups[keyed] = ids
    return groups

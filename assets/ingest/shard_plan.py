"""Stable shard membership: which clips belong to which shard, and a digest per shard.

Rule: a clip keeps the shard it was first given, forever. Clips not seen before are
sorted by id and cut into *new* shards of `shard_size`; existing shards are never
refilled. So when a dataset grows, only new shards appear and a backfill touches only
them; the price is a last shard per growth step that may be smaller than shard_size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

SHARD_PREFIX = "s"


def shard_key(index: int) -> str:
    """Zero-padded, so lexical order is numeric order (the UI and range selections sort keys)."""
    return f"{SHARD_PREFIX}{index:05d}"


def shard_index(key: str) -> int:
    if not (key.startswith(SHARD_PREFIX) and key[len(SHARD_PREFIX):].isdigit()):
        raise ValueError(f"{key!r} is not a shard key like {shard_key(0)!r}")
    return int(key[len(SHARD_PREFIX):])


def assign_shards(clip_ids: Iterable[str], previous: Mapping[str, str], shard_size: int) -> dict[str, str]:
    """clip id -> shard key for every id in clip_ids; ids in `previous` keep their shard."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ids = list(dict.fromkeys(clip_ids))
    assignment = {cid: previous[cid] for cid in ids if cid in previous}
    new = sorted(cid for cid in ids if cid not in previous)
    next_index = 1 + max((shard_index(k) for k in previous.values()), default=-1)
    for start in range(0, len(new), shard_size):
        key = shard_key(next_index)
        for cid in new[start:start + shard_size]:
            assignment[cid] = key
        next_index += 1
    return assignment


# The columns whose change means a shard's downstream caches must be recomputed.
DIGEST_COLUMNS = ("clip_id", "split", "status", "media_path", "image_path", "start_s", "end_s",
                  "media_bytes", "media_mtime_ns", "image_bytes", "image_mtime_ns")


def shard_digests(manifest: pa.Table) -> dict[str, str]:
    """shard key -> sha256 (16 hex) of its members' identity, status and file fingerprints."""
    rows: dict[str, list] = {}
    columns = {c: manifest.column(c).to_pylist() for c in ("shard", *DIGEST_COLUMNS)}
    for i, shard in enumerate(columns["shard"]):
        if shard:
            rows.setdefault(shard, []).append([columns[c][i] for c in DIGEST_COLUMNS])
    return {shard: hashlib.sha256(json.dumps(sorted(members), default=str).encode()).hexdigest()[:16]
            for shard, members in sorted(rows.items())}


def shard_members(manifest: pa.Table, shard: str) -> pa.Table:
    """The manifest rows of one shard, in clip-id order."""
    return manifest.filter(pc.equal(manifest.column("shard"), shard)).sort_by("clip_id")

"""Stable shard membership: which clips belong to which shard, and a digest per shard.

Rule: a clip keeps the shard it was first given, forever. Clips not sharded before whose
files are there are sorted by id and cut into *new* shards of `shard_size`; existing shards
are never refilled. So when a dataset grows (or its downloads arrive), only new shards
appear and a backfill touches only them; the price is a last shard per growth step that may
be smaller than shard_size. (`assets.ingest.manifest.build_manifest` applies the rule.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

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


def next_shard_index(existing: Iterable[str | None]) -> int:
    """The index the next new shard gets: one past the highest existing key."""
    return 1 + max((shard_index(k) for k in existing if k), default=-1)


def cut_new_shards(n: int, first_index: int, shard_size: int) -> list[str]:
    """Shard keys for n clips in id order: shard_size per shard, numbered from first_index."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [shard_key(first_index + i // shard_size) for i in range(n)]


# The columns whose change means a shard's downstream caches must be recomputed.
DIGEST_COLUMNS = ("clip_id", "split", "status", "media_path", "image_path", "start_s", "end_s",
                  "media_bytes", "media_mtime_ns", "image_bytes", "image_mtime_ns")


def shard_digests(manifest: pa.Table) -> dict[str, str]:
    """shard key -> sha256 (16 hex) of its members' identity, status and file fingerprints."""
    rows: dict[str, list] = {}
    manifest = manifest.filter(pc.is_valid(manifest.column("shard")))  # unsharded rows are most of a partial download
    columns = {c: manifest.column(c).to_pylist() for c in ("shard", *DIGEST_COLUMNS)}
    for i, shard in enumerate(columns["shard"]):
        if shard:
            rows.setdefault(shard, []).append([columns[c][i] for c in DIGEST_COLUMNS])
    return {shard: hashlib.sha256(json.dumps(sorted(members), default=str).encode()).hexdigest()[:16]
            for shard, members in sorted(rows.items())}


def shard_members(manifest: pa.Table, shard: str) -> pa.Table:
    """The manifest rows of one shard, in clip-id order."""
    return manifest.filter(pc.equal(manifest.column("shard"), shard)).sort_by("clip_id")

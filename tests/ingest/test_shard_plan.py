"""Stable shard membership and shard digests, on hand-made cases."""

import pyarrow as pa
import pytest

from assets.ingest.manifest import MANIFEST_SCHEMA
from assets.ingest.shard_plan import cut_new_shards, next_shard_index, shard_digests, shard_index, shard_key


def test_new_clips_are_cut_into_full_shards_numbered_on():
    assert cut_new_shards(10, 0, 4) == ["s00000"] * 4 + ["s00001"] * 4 + ["s00002"] * 2
    assert cut_new_shards(3, next_shard_index(["s00004", None, "s00001"]), 2) == ["s00005", "s00005", "s00006"]
    assert next_shard_index([]) == 0 and cut_new_shards(0, 0, 4) == []


def test_shard_keys_sort_numerically_and_reject_foreign_keys():
    assert sorted([shard_key(10), shard_key(9), shard_key(100)]) == ["s00009", "s00010", "s00100"]
    assert shard_index("s00042") == 42
    with pytest.raises(ValueError, match="not a shard key"):
        shard_index("2024-01-01")
    with pytest.raises(ValueError, match="shard_size"):
        cut_new_shards(1, 0, 0)


def _manifest(rows):
    full = [{name: None for name in MANIFEST_SCHEMA.names} | r for r in rows]
    return pa.Table.from_pylist(full, schema=MANIFEST_SCHEMA)


def test_digest_changes_only_for_the_shard_whose_member_changed():
    rows = [{"clip_id": f"c{i}", "shard": f"s0000{i // 2}", "status": "ok", "media_bytes": 100 + i,
             "media_mtime_ns": 5} for i in range(6)]
    base = shard_digests(_manifest(rows))
    assert sorted(base) == ["s00000", "s00001", "s00002"] and len(set(base.values())) == 3
    rows[3] = rows[3] | {"media_mtime_ns": 6}  # c3, in s00001, was rewritten
    changed = shard_digests(_manifest(rows))
    assert [s for s in base if base[s] != changed[s]] == ["s00001"]
    # Unsharded rows (clips whose files are not there yet) are in no digest.
    assert shard_digests(_manifest(rows + [{"clip_id": "late", "shard": None, "status": "missing"}])) == changed
    # Row order in the manifest does not matter.
    assert shard_digests(_manifest(list(reversed(rows)))) == changed

"""Stable shard membership and shard digests, on hand-made cases."""

import pyarrow as pa
import pytest

from assets.ingest.manifest import MANIFEST_SCHEMA
from assets.ingest.shard_plan import assign_shards, shard_digests, shard_index, shard_key


def test_first_assignment_cuts_sorted_ids_into_full_shards():
    ids = [f"c{i:02d}" for i in (7, 3, 9, 1, 0, 5, 2, 8, 6, 4)]
    plan = assign_shards(ids, {}, shard_size=4)
    assert plan == {**{f"c{i:02d}": "s00000" for i in (0, 1, 2, 3)},
                    **{f"c{i:02d}": "s00001" for i in (4, 5, 6, 7)},
                    **{f"c{i:02d}": "s00002" for i in (8, 9)}}


def test_growth_only_creates_new_shards_and_keeps_members():
    before = assign_shards([f"c{i:02d}" for i in range(10)], {}, shard_size=4)
    # New ids sort before and between old ones; they must still not enter old shards.
    grown = [f"c{i:02d}" for i in range(10)] + ["a00", "c045", "z99"]
    after = assign_shards(grown, before, shard_size=4)
    assert {k: after[k] for k in before} == before
    assert {after["a00"], after["c045"], after["z99"]} == {"s00003"}


def test_growth_larger_than_a_shard_numbers_on():
    before = {"x": "s00004"}
    after = assign_shards(["x"] + [f"n{i}" for i in range(5)], before, shard_size=2)
    assert sorted(set(after.values())) == ["s00004", "s00005", "s00006", "s00007"]


def test_shard_keys_sort_numerically_and_reject_foreign_keys():
    assert sorted([shard_key(10), shard_key(9), shard_key(100)]) == ["s00009", "s00010", "s00100"]
    assert shard_index("s00042") == 42
    with pytest.raises(ValueError, match="not a shard key"):
        shard_index("2024-01-01")
    with pytest.raises(ValueError, match="shard_size"):
        assign_shards(["a"], {}, 0)


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
    # Row order in the manifest does not matter.
    assert shard_digests(_manifest(list(reversed(rows)))) == changed

"""Incremental, fault-safe shard cache files, with a stand-in per-clip function."""

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.caches.shard_builder import ArrayColumn, CacheSpec, build_shard, open_array
from assets.core.errors import ClipError
from assets.ingest.manifest import MANIFEST_SCHEMA

SPEC = CacheSpec("toy_cache", "1", {"scale": 2}, [("value", pa.int64())])


def _members(n=10, missing=(3,), mtimes=None):
    rows = []
    for i in range(n):
        status = "missing" if i in missing else "ok"
        rows.append({name: None for name in MANIFEST_SCHEMA.names} | {
            "clip_id": f"c{i:02d}", "split": "train", "status": status,
            "reason": f"c{i:02d}.mp4: no such file" if status != "ok" else "",
            "media_path": f"c{i:02d}.mp4", "media_bytes": 100 + i, "media_mtime_ns": (mtimes or {}).get(i, 7),
            "image_bytes": 0, "image_mtime_ns": 0})
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _task(member):
    return (member["clip_id"], member["media_bytes"])


def _compute(task):
    cid, size = task
    if cid == "c05":
        raise ClipError("corrupt", f"{cid}.mp4: invalid data found when processing input")
    if cid == "c08" and os.environ.get("TOY_SLOW"):
        time.sleep(0.5)
    return {"value": size * 2}


def _build(path, members, spec=SPEC, **kw):
    return build_shard(members, spec, path, _task, _compute, workers=2, timeout_s=30, row_group=4, **kw)


def test_rows_values_and_error_rows(tmp_path):
    path = tmp_path / "s00000.parquet"
    build = _build(path, _members())
    table = pq.read_table(path)
    assert table.column("clip_id").to_pylist() == [f"c{i:02d}" for i in range(10)]
    values = dict(zip(table.column("clip_id").to_pylist(), table.column("value").to_pylist()))
    assert values["c00"] == 200 and values["c09"] == 218 and values["c03"] is None and values["c05"] is None
    assert build.status_counts == {"corrupt": 1, "missing": 1, "ok": 8}
    assert build.computed == 9 and build.reused == 0 and not build.skipped
    assert {e["clip_id"]: e["error_kind"] for e in build.first_errors} == {"c03": "missing", "c05": "corrupt"}
    assert "c05.mp4: invalid data" in build.first_errors[1]["error"]


def test_unchanged_inputs_skip_changed_clip_recomputed_param_change_recomputes_all(tmp_path):
    path = tmp_path / "s00000.parquet"
    _build(path, _members())
    first = pq.read_table(path)
    again = _build(path, _members())
    assert again.skipped and again.computed == 0
    touched = _build(path, _members(mtimes={4: 8}))  # c04 rewritten on disk
    assert not touched.skipped and touched.computed == 1 and touched.reused == 9
    assert pq.read_table(path).column("value").equals(first.column("value"))
    found = _build(path, _members(missing=(), mtimes={4: 8}))  # c03 downloaded since
    assert found.computed == 1 and pq.read_table(path).column("value").to_pylist()[3] == 206
    spec2 = CacheSpec("toy_cache", "1", {"scale": 3}, SPEC.fields)
    assert _build(path, _members(missing=(), mtimes={4: 8}), spec=spec2).computed == 10  # every clip again


def test_exception_mid_shard_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "s00000.parquet"
    _build(path, _members())
    before = path.read_bytes()

    def crash(done, total):
        if done >= 4:
            raise KeyboardInterrupt("injected")
    with pytest.raises(KeyboardInterrupt):
        _build(path, _members(mtimes={1: 9, 9: 9}), progress=crash)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s00000.parquet"]


def _killed_build(path):
    os.environ["TOY_SLOW"] = "1"
    _build(path, _members())


def test_killed_run_leaves_no_partial_file_and_rerun_has_no_duplicates(tmp_path):
    path = tmp_path / "s00000.parquet"
    proc = mp.get_context("fork").Process(target=_killed_build, args=(path,))
    proc.start()
    deadline = time.time() + 20
    while time.time() < deadline and not list(tmp_path.glob(".*.tmp")):
        time.sleep(0.01)
    time.sleep(0.1)
    os.killpg(os.getpgid(proc.pid), 0)  # still there
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert not path.exists()  # nothing that looks complete
    leftovers = list(tmp_path.glob(".*.tmp"))
    assert leftovers  # the killed writer's temp file
    build = _build(path, _members())
    table = pq.read_table(path)
    assert table.num_rows == 10 and len(set(table.column("clip_id").to_pylist())) == 10
    assert build.status_counts["ok"] == 8
    assert not list(tmp_path.glob(".*.tmp"))


ARRAY_SPEC = CacheSpec("toy_cache", "1", {"scale": 2}, [("value", pa.int64())], array=ArrayColumn("features", (2, 3), "float16"))


def _compute_array(task):
    return _compute(task) | {"features": np.full((2, 3), task[1], np.float16)}


def _build_array(path, members, **kw):
    return build_shard(members, ARRAY_SPEC, path, _task, _compute_array, workers=2, timeout_s=30, row_group=4, **kw)


def test_array_beside_the_parquet_rows_reused_and_replaced(tmp_path):
    """The per-clip arrays go to <shard>.<fingerprint>.features.npy, row i = Parquet row i, zeros on
    error rows; a rebuild copies reused rows, writes a new file and removes the old one; an
    interrupted rebuild leaves the old pair."""
    path = tmp_path / "s00000.parquet"
    first = _build_array(path, _members())
    assert "features" not in pq.read_schema(path).names
    array = open_array(path)
    assert array.shape == (10, 2, 3) and array.dtype == np.float16
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s00000.parquet", f"s00000.{first.fingerprint}.features.npy"])
    np.testing.assert_array_equal(array[:, 0, 0], [100, 101, 102, 0, 104, 0, 106, 107, 108, 109])  # c03 missing, c05 corrupt
    before = (path.read_bytes(), array.copy())

    def crash(done, total):
        if done >= 4:
            raise KeyboardInterrupt("injected")
    with pytest.raises(KeyboardInterrupt):
        _build_array(path, _members(mtimes={1: 9}), progress=crash)
    assert path.read_bytes() == before[0] and np.array_equal(open_array(path), before[1])
    assert len(list(tmp_path.iterdir())) == 2  # no temporaries, no orphan array

    second = _build_array(path, _members(mtimes={1: 9}))  # c01 rewritten: computed; the rest copied
    assert (second.computed, second.reused) == (1, 9)
    np.testing.assert_array_equal(open_array(path), before[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s00000.parquet", f"s00000.{second.fingerprint}.features.npy"])
    (tmp_path / f"s00000.{second.fingerprint}.features.npy").unlink()  # the array lost: rebuilt, not skipped
    third = _build_array(path, _members(mtimes={1: 9}))
    assert not third.skipped and third.computed == 9 and np.array_equal(open_array(path), before[1])

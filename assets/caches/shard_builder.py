"""Build one shard's cache file: incremental, fault-safe, one row per member clip.

Shared by every per-clip cache stage (frames, FBANK, log-mel). A stage supplies a
`CacheSpec` (its name, code version, parameters, extra columns) and a per-clip compute
function; this module decides what to compute, runs it on the worker pool and streams
the rows to disk.

Incremental, by file fingerprint: a clip's inputs are identified by the manifest's
(size, mtime) of its files and its manifest status (size+mtime, not content hashes:
hashing terabytes of video on every run costs more than it saves; a rewrite that keeps
size and mtime is not noticed). The shard's fingerprint is a hash of its members' inputs,
the stage's code version and its parameters, stored in the file's metadata:
- same fingerprint as the file on disk: nothing is recomputed (`skipped`);
- same parameters and code version: rows of clips whose inputs did not change are copied
  from the old file, the others are computed;
- anything else: every clip is computed.

Fault-safe: rows are written to a temporary file next to the target, which is renamed
over it only when complete, so a killed run leaves the old file (or none) and never a
partial one; leftovers of killed writers for this file are removed on the next run.
One bad clip is an error row (`status = error`, `error_kind`, `error`), never a failure.

A stage with a fixed-size per-clip array (`CacheSpec.array`: the audio features) stores it
beside the Parquet file, not in it: `<shard>.<fingerprint>.<name>.npy`, one row per Parquet
row (zeros on error rows), so training reads it in place through a memory map. The array is
renamed into place before the Parquet file, which names it in its metadata
(`clipkt.array_file`): a killed run leaves the old Parquet file pointing at its old array.
Arrays no Parquet file names any more are removed after each build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.caches.worker_pool import POOL_DEFAULTS, PoolStats, run_pool
from assets.core.atomic_io import atomic_path

# What identifies a clip's inputs: its manifest status and its files' sizes and mtimes.
INPUT_COLUMNS = ("input_status", "media_bytes", "media_mtime_ns", "image_bytes", "image_mtime_ns")

COMMON_FIELDS = [
    ("clip_id", pa.string()), ("split", pa.string()),
    ("status", pa.string()),  # ok | error
    ("error_kind", pa.string()), ("error", pa.string()),
    ("input_status", pa.string()),  # the manifest's status when the row was made
    ("media_bytes", pa.int64()), ("media_mtime_ns", pa.int64()),
    ("image_bytes", pa.int64()), ("image_mtime_ns", pa.int64()),
]


@dataclass(frozen=True)
class ArrayColumn:
    """A fixed-size per-clip array stored beside the Parquet file (see the module docstring)."""
    name: str  # the key the compute function returns it under, and the file's suffix
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class CacheSpec:
    stage: str
    code_version: str  # bump when the stage's output for the same inputs changes
    params: dict  # every parameter that changes the output (JSON-able)
    fields: list[tuple[str, pa.DataType]]  # the stage's own columns (null on error rows)
    schema_metadata: dict[str, str] = field(default_factory=dict)  # e.g. feature dtype and shape
    array: ArrayColumn | None = None

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(COMMON_FIELDS + self.fields)

    def schema_fields_small(self) -> list[tuple[str, pa.DataType]]:
        """Columns worth dictionary-encoding: everything but binary blobs and lists of them."""
        blob = (pa.binary(), pa.list_(pa.binary()))
        return [(n, t) for n, t in COMMON_FIELDS + self.fields if t not in blob]

    @property
    def params_digest(self) -> str:
        blob = json.dumps({"stage": self.stage, "code": self.code_version, "params": self.params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ShardBuild:
    path: Path
    fingerprint: str
    skipped: bool
    rows: int = 0
    computed: int = 0
    reused: int = 0
    status_counts: dict = field(default_factory=dict)  # "ok" and each error kind -> clips
    first_errors: list = field(default_factory=list)  # [{clip_id, error_kind, error}]
    seconds: float = 0.0
    bytes: int = 0  # the Parquet file and, for a stage with an array, its array file
    pool: PoolStats | None = None


def _inputs(table: pa.Table, status_column: str) -> dict[str, tuple]:
    """clip id -> (manifest status, sizes, mtimes) from a manifest (status) or a cache (input_status)."""
    cols = [table.column(c).to_pylist() for c in ("clip_id", status_column, *INPUT_COLUMNS[1:])]
    return {cid: tuple(rest) for cid, *rest in zip(*cols)}


def shard_fingerprint(members: pa.Table, spec: CacheSpec) -> str:
    blob = json.dumps([spec.params_digest, sorted(_inputs(members, "status").items())], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_meta(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"clipkt.")}


def _reusable(path: Path, spec: CacheSpec, members: pa.Table) -> set[str]:
    """Clip ids whose row in the existing file was made from the same inputs and parameters."""
    if _read_meta(path).get("clipkt.params") != spec.params_digest:
        return set()
    old = _inputs(pq.read_table(path, columns=["clip_id", *INPUT_COLUMNS]), "input_status")
    return {cid for cid, inputs in _inputs(members, "status").items() if old.get(cid) == inputs}


def array_path(path: Path, fingerprint: str, name: str) -> Path:
    return path.with_name(f"{path.stem}.{fingerprint}.{name}.npy")


def open_array(path: Path) -> np.ndarray:
    """The per-clip array a cache file names, memory-mapped read-only, (rows, *shape).
    ValueError when the file names none (built before arrays moved out of Parquet) or when
    the array does not match the file's rows."""
    meta = _read_meta(path)
    name = meta.get("clipkt.array_file")
    if name is None:
        raise ValueError(f"{path}: holds no feature array (built by an older cache version): "
                         "materialise this shard's cache asset again to rebuild it")
    array = np.load(path.with_name(name), mmap_mode="r")
    rows = pq.ParquetFile(path).metadata.num_rows
    if array.shape[0] != rows:
        raise ValueError(f"{path.with_name(name)}: {array.shape[0]} rows, {path.name} has {rows}")
    return array


def _array_bytes(path: Path) -> int:
    """Size of the array file the cache file names (0 when it names none)."""
    name = _read_meta(path).get("clipkt.array_file")
    array = path.with_name(name) if name else None
    return array.stat().st_size if array is not None and array.exists() else 0


def _remove_unnamed_arrays(path: Path, name: str, keep: str | None) -> None:
    for p in path.parent.glob(f"{path.stem}.*.{name}.npy"):
        if p.name != keep:
            p.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> list[Path]:
    """Temp files an interrupted writer of this very file left behind."""
    stale = sorted(path.parent.glob(f".{path.stem}.*.tmp")) if path.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _error_row(kind: str, message: str) -> dict:
    return {"status": "error", "error_kind": kind, "error": message}


def build_shard(members: pa.Table, spec: CacheSpec, path: Path, task_of: Callable[[dict], object],
                compute: Callable[[object], dict], *, workers: int = POOL_DEFAULTS.workers,
                timeout_s: float = POOL_DEFAULTS.timeout_s, max_rss_mb: float = POOL_DEFAULTS.max_worker_rss_mb, init: Callable | None = None, row_group: int = 64,
                progress: Callable[[int, int], None] | None = None) -> ShardBuild:
    """Write the cache file for `members` (a shard's manifest rows); see the module docstring.

    task_of(member_row) -> the picklable task for one clip; compute(task) -> the stage's
    columns for it (runs in a worker; raises ClipError for bad input).
    """
    start = time.perf_counter()
    members = members.sort_by("clip_id")
    fingerprint = shard_fingerprint(members, spec)
    meta = _read_meta(path)
    if meta.get("clipkt.fingerprint") == fingerprint and (
            spec.array is None or path.with_name(meta.get("clipkt.array_file", "-")).exists()):
        return _summary(path, fingerprint, skipped=True, seconds=time.perf_counter() - start)
    remove_stale_temps(path)
    reuse = _reusable(path, spec, members) if path.exists() else set()
    old_array = _old_array(path, spec) if reuse else None
    if spec.array is not None and old_array is None:
        reuse = set()  # no array to copy the reused rows' values from: compute them
    rows = members.to_pylist()
    todo = [m for m in rows if m["status"] == "ok" and m["clip_id"] not in reuse]
    stats = PoolStats(workers)
    results = run_pool(compute, [task_of(m) for m in todo], workers, timeout_s, max_rss_mb, init, stats=stats)
    build = ShardBuild(path, fingerprint, skipped=False, computed=len(todo), reused=len(reuse), pool=stats)
    array_file = array_path(path, fingerprint, spec.array.name) if spec.array else None
    schema = spec.schema.with_metadata({**spec.schema_metadata,
                                        "clipkt.stage": spec.stage, "clipkt.params": spec.params_digest,
                                        "clipkt.params_json": json.dumps(spec.params, sort_keys=True),
                                        "clipkt.fingerprint": fingerprint, "clipkt.code_version": spec.code_version,
                                        **({"clipkt.array_file": array_file.name} if spec.array else {})})
    # The workers own the cores: Arrow's own encoding threads in this process would compete
    # with them (measured: 15% slower per clip with 1 worker on 2 cores).
    arrow_threads = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        # The big per-clip blobs (float16 features, JPEG frames) are unique and barely
        # compressible: no dictionary, no compression; the small columns get both.
        small = [name for name, _ in spec.schema_fields_small()]
        compression = {name: ("snappy" if name in small else "none") for name in schema.names}
        # exits in reverse order: the array is renamed into place before the Parquet file that names it
        with (atomic_path(path) as tmp, atomic_path(array_file) if spec.array else contextlib.nullcontext() as atmp,
              pq.ParquetWriter(tmp, schema, use_dictionary=small, compression=compression) as writer):
            array = (np.lib.format.open_memmap(atmp, mode="w+", dtype=spec.array.dtype,
                                               shape=(len(rows), *spec.array.shape)) if spec.array else None)
            done = 0
            for chunk_start in range(0, len(rows), row_group):
                chunk = rows[chunk_start:chunk_start + row_group]
                table, arrays = _chunk_table(chunk, reuse, results, path, spec, schema, old_array)
                writer.write_table(table)
                if array is not None:
                    array[chunk_start:chunk_start + len(chunk)] = arrays
                done += len(chunk)
                if progress:
                    progress(done, len(rows))
            if array is not None:
                array.flush()
                del array
    finally:
        results.close()  # stops the workers if we got here by an exception
        pa.set_cpu_count(arrow_threads)
    if spec.array:
        _remove_unnamed_arrays(path, spec.array.name, array_file.name)
    summary = _summary(path, fingerprint, skipped=False, seconds=time.perf_counter() - start)
    build.rows, build.status_counts, build.first_errors = summary.rows, summary.status_counts, summary.first_errors
    build.seconds, build.bytes = summary.seconds, summary.bytes
    return build


def _old_array(path: Path, spec: CacheSpec) -> tuple[dict[str, int], np.ndarray] | None:
    """(clip id -> row, array) of the file being replaced, for copying reused rows' arrays."""
    if spec.array is None:
        return None
    try:
        array = open_array(path)
    except (ValueError, OSError):  # named array gone or damaged
        return None
    ids = pq.read_table(path, columns=["clip_id"]).column("clip_id").to_pylist()
    return {cid: i for i, cid in enumerate(ids)}, array


def _chunk_table(chunk: list[dict], reuse: set[str], results, old_path: Path, spec: CacheSpec,
                 schema: pa.Table, old_array) -> tuple[pa.Table, np.ndarray | None]:
    """The rows of one row group (copied, computed or error rows, in clip-id order) and, for a
    stage with an array, their arrays (zeros on error rows)."""
    reused_ids = [m["clip_id"] for m in chunk if m["clip_id"] in reuse]
    old = {}
    if reused_ids:
        table = pq.read_table(old_path, filters=pc.field("clip_id").isin(reused_ids))
        old = {r["clip_id"]: r for r in table.to_pylist()}
    arrays = np.zeros((len(chunk), *spec.array.shape), spec.array.dtype) if spec.array else None
    out = []
    for i, m in enumerate(chunk):
        base = {k: m.get(k) for k, _ in COMMON_FIELDS} | {"status": "ok", "error_kind": "", "error": "",
                                                          "input_status": m["status"]}
        if m["clip_id"] in old:
            out.append(old[m["clip_id"]])
            if arrays is not None:
                rows, array = old_array
                arrays[i] = array[rows[m["clip_id"]]]
        elif m["status"] != "ok":
            out.append(base | _error_row(m["status"], m["reason"]))
        else:
            result = next(results)
            if result.ok:
                value = dict(result.value)
                if arrays is not None:
                    arrays[i] = value.pop(spec.array.name)
                out.append(base | value)
            else:
                out.append(base | _error_row(result.error_kind, result.error))
    return pa.Table.from_pylist(out, schema=schema), arrays


def _summary(path: Path, fingerprint: str, skipped: bool, seconds: float, first: int = 10) -> ShardBuild:
    """Counts and first errors of a written file (reads only the small columns)."""
    t = pq.read_table(path, columns=["clip_id", "status", "error_kind", "error"])
    kinds = Counter(k if s == "error" else "ok" for s, k in zip(t.column("status").to_pylist(),
                                                               t.column("error_kind").to_pylist()))
    errors = [r for r in t.to_pylist() if r["status"] == "error"][:first]
    return ShardBuild(path, fingerprint, skipped, rows=t.num_rows, status_counts=dict(sorted(kinds.items())),
                      first_errors=[{k: r[k] for k in ("clip_id", "error_kind", "error")} for r in errors],
                      seconds=seconds, bytes=path.stat().st_size + _array_bytes(path))

"""clip_manifest: every clip a dataset lists, where its files are, and whether they are usable.

Pure part: parse the metadata (assets.ingest.dataset_formats) in batches, refuse paths that
leave the dataset root, probe the files (assets.ingest.media_probe), assign stable shards
(assets.ingest.shard_plan) and return a Parquet-ready Arrow table. A missing, unreadable,
escaping or malformed clip is a row with a status and a reason, never an exception.

Statuses: ok | missing | unreadable | path_escape | malformed | duplicate | removed
(`removed`: listed by an earlier manifest but not by the metadata now; the row keeps
its shard so shard membership never changes).
"""


import ctypes
import ctypes.util
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.ingest.dataset_config import DatasetConfig
from assets.ingest.dataset_formats import SourceRow, parse_metadata
from assets.ingest.media_probe import DirectoryListing, probe_file
from assets.ingest.shard_plan import cut_new_shards, next_shard_index

MANIFEST_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("shard", pa.string()), ("split", pa.string()),
    ("status", pa.string()), ("reason", pa.string()),
    ("media_path", pa.string()), ("image_path", pa.string()),
    ("start_s", pa.float64()), ("end_s", pa.float64()),
    ("labels", pa.list_(pa.string())), ("label_names", pa.list_(pa.string())),
    ("captions", pa.list_(pa.string())), ("caption_ids", pa.list_(pa.string())),
    ("source", pa.string()),
    ("media_bytes", pa.int64()), ("media_mtime_ns", pa.int64()),
    ("image_bytes", pa.int64()), ("image_mtime_ns", pa.int64()),
])
USABLE_STATUSES = ("ok", "missing", "unreadable", "path_escape")  # clips the metadata lists
SHARDABLE_STATUS = "ok"  # a new shard is cut from clips whose files are there and look right
# The manifest's arrays come from the system allocator: built batch by batch from Python lists,
# their growth buffers are returned to the OS when freed, where Arrow's default mimalloc pool kept
# about 300 MB of them at 2M rows (measured with benchmarks.bench_manifest).
_POOL = pa.system_memory_pool()
try:  # glibc keeps freed heap memory for reuse; malloc_trim hands it back to the OS
    _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def _return_freed_memory() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)


_PARSED = ("clip_id", "split", "media_path", "image_path", "start_s", "end_s", "labels", "label_names",
           "captions", "caption_ids", "source")


def resolve_inside(root: Path, relative: str) -> str | None:
    """Absolute, normalised path of `relative` under root, or None if it leaves root.

    Lexical on purpose: `..` and absolute paths outside root are refused, while a
    media directory that is a symlink to another disk (common for big datasets) is fine.
    """
    return _inside(os.path.normpath(os.path.abspath(root)), relative)


def _inside(base: str, relative: str) -> str | None:
    """resolve_inside for an already normalised absolute base."""
    full = os.path.normpath(os.path.join(base, relative))
    return full if full == base or full.startswith(base + os.sep) else None


@dataclass(frozen=True)
class ManifestParams:
    strict: bool = False  # fail on the first malformed metadata line instead of recording it
    probe_threads: int = 16  # parallel stat + header reads of the files that are there (I/O-bound)
    batch_rows: int = 65536  # metadata rows parsed, checked and turned into Arrow per batch


class _Prober:
    """Status, reason, size and mtime per (role, relative path): one directory listing per directory
    says which files are there; only those are opened (stat + 16 bytes) on a thread pool, so the
    1.8M missing files of a partly downloaded AudioSet cost a set lookup each, not a system call."""

    def __init__(self, root: Path, threads: int):
        self.base = os.path.normpath(os.path.abspath(root))
        self.listing = DirectoryListing()
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads))

    def close(self) -> None:
        self.pool.shutdown()

    def probe(self, paths: list[str], sources: list[str], role: str) -> list[tuple[str, str, int, int]]:
        out: list = [None] * len(paths)
        present = []
        for i, (rel, source) in enumerate(zip(paths, sources)):
            if not rel:
                out[i] = ("ok", "", 0, 0)
                continue
            full = _inside(self.base, rel)
            if full is None:
                out[i] = ("path_escape", f"{source}: {role} path {rel!r} leaves the dataset root {self.base}", 0, 0)
            elif self.listing.absent(full):
                out[i] = ("missing", f"{role} file not found", 0, 0)  # the row's source says where it is listed
            else:
                present.append((i, full, source))
        # chunks of 256 files per task: a future per file cost more than the probe itself
        chunks = [[f for _, f, _ in present[k:k + 256]] for k in range(0, len(present), 256)]
        probes = (p for chunk in self.pool.map(lambda c: [probe_file(f) for f in c], chunks) for p in chunk)
        for (i, _, source), p in zip(present, probes):
            out[i] = (p.status, "" if p.status == "ok" else f"{source}: {p.reason}", p.size_bytes, p.mtime_ns)
        return out


def _checked_batch(rows: list[SourceRow], prober: _Prober) -> pa.Table:
    """One batch of parsed rows as manifest columns (without shards), its files probed."""
    cols = {name: [getattr(r, name) for r in rows] for name in _PARSED}
    problems = [r.problem for r in rows]
    media = prober.probe(cols["media_path"], cols["source"], "media")
    image = prober.probe(cols["image_path"], cols["source"], "image")
    status, reason = [], []
    for problem, m, i in zip(problems, media, image):
        if problem:
            status.append("malformed"), reason.append(problem)
        elif m[0] != "ok":
            status.append(m[0]), reason.append(m[1])
        else:
            status.append(i[0]), reason.append(i[1])
    arrays = {**cols, "status": status, "reason": reason, "shard": [None] * len(rows),
              "media_bytes": [m[2] for m in media], "media_mtime_ns": [m[3] for m in media],
              "image_bytes": [i[2] for i in image], "image_mtime_ns": [i[3] for i in image]}
    return pa.table({f.name: pa.array(arrays[f.name], f.type, memory_pool=_POOL) for f in MANIFEST_SCHEMA},
                    schema=MANIFEST_SCHEMA)


def _mark_duplicates(table: pa.Table) -> pa.Table:
    """A clip id listed twice: the first listing (file order) is the clip, later ones are rows
    `duplicate:<source>` with status duplicate. Malformed rows have unique ids of their own.
    Found by a stable sort of the ids (equal neighbours), which needs a fraction of the memory
    of a hash grouping over 2M strings."""
    n = table.num_rows
    if n < 2:
        return table
    order = pc.sort_indices(table.column("clip_id"), memory_pool=_POOL)  # stable: equal ids keep file order
    ids = pc.take(table.column("clip_id"), order, memory_pool=_POOL)
    same = pc.equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    if not same.any():
        return table
    order = order.to_numpy()
    later = np.flatnonzero(same) + 1  # sorted positions whose id equals the one before
    first_of = np.maximum.accumulate(np.where(np.r_[True, ~same], np.arange(n), 0))  # sorted position of each run's first
    rows = order[later]  # table rows of the later listings
    by_row = np.argsort(rows)  # replace_with_mask fills the masked rows in row order
    rows, firsts = rows[by_row], order[first_of[later]][by_row]
    ids = pc.take(table.column("clip_id"), pa.array(rows)).to_pylist()
    sources = pc.take(table.column("source"), pa.array(rows)).to_pylist()
    first_sources = pc.take(table.column("source"), pa.array(firsts)).to_pylist()
    mask = np.zeros(n, bool)
    mask[rows] = True
    mask = pa.array(mask)
    new = {"clip_id": [f"duplicate:{s}" for s in sources], "status": ["duplicate"] * len(rows),
           "reason": [f"{s}: clip {cid} is already listed at {f}" for s, cid, f in zip(sources, ids, first_sources)]}
    for name, values in new.items():
        column = pc.replace_with_mask(table.column(name).combine_chunks(), mask, pa.array(values, pa.string()))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def _previous(previous: Path | pa.Table | None) -> pa.Table:
    """(clip_id, shard) of the earlier manifest's sharded rows (read as two columns from a file)."""
    if previous is None:
        return pa.table({"clip_id": pa.array([], pa.string()), "shard": pa.array([], pa.string())})
    ids = (pq.read_table(previous, columns=["clip_id", "shard"]) if isinstance(previous, (str, Path))
           else previous.select(["clip_id", "shard"]))
    return ids.filter(pc.is_valid(ids.column("shard")))


def _carried_over(previous: Path | pa.Table | None, sharded: pa.Table, listed: pa.Array) -> pa.Table:
    """Rows of clips an earlier manifest sharded that the metadata no longer lists, as `removed`.
    The hash sets are built over the sharded ids (a fraction of a partial download's listing)."""
    if previous is None or sharded.num_rows == 0:
        return MANIFEST_SCHEMA.empty_table()
    ids = sharded.column("clip_id")
    still = pc.filter(listed, pc.is_in(listed, value_set=ids))
    gone = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=still)))
    if len(gone) == 0:
        return MANIFEST_SCHEMA.empty_table()
    if isinstance(previous, (str, Path)):
        rows = pq.read_table(previous, filters=pc.field("clip_id").isin(gone)).cast(MANIFEST_SCHEMA)
    else:
        rows = previous.filter(pc.is_in(previous.column("clip_id"), gone)).cast(MANIFEST_SCHEMA)
    removed = pc.equal(rows.column("status"), "removed")
    reason = pc.if_else(removed, rows.column("reason"),
                        pc.binary_join_element_wise(rows.column("source"), "no longer listed in the metadata", ": "))
    rows = rows.set_column(rows.schema.get_field_index("status"), "status",
                           pc.if_else(removed, rows.column("status"), "removed"))
    return rows.set_column(rows.schema.get_field_index("reason"), "reason", reason)


def build_manifest(ds: DatasetConfig, previous: Path | pa.Table | None = None,
                   params: ManifestParams = ManifestParams()) -> pa.Table:
    """The manifest table; shard membership continues `previous` (an earlier manifest, its path or
    table), if given.

    Columnar: the metadata is parsed and checked in batches of `batch_rows` and held as Arrow
    (about 250 bytes per AudioSet row), never as a Python object per row. Shards: a clip keeps
    the shard it was first given; clips not sharded before whose files are there (`ok`) are
    sorted by id and cut into new shards of `shard_size`, so every shard is cut from
    `shard_size` clips that can be processed. Listed clips that are missing or unreadable have
    no shard until their files appear (they are then cut into a new shard with the next run);
    a sharded clip keeps its shard whatever happens to its file, so its caches are redone there.
    """
    prober = _Prober(ds.root, params.probe_threads)
    rows = parse_metadata(ds, strict=params.strict)
    batches = []
    try:
        while chunk := list(islice(rows, params.batch_rows)):
            batches.append(_checked_batch(chunk, prober))
    finally:
        prober.close()
    table = _mark_duplicates(pa.concat_tables(batches) if batches else MANIFEST_SCHEMA.empty_table())
    del batches  # the table holds the same buffers
    _return_freed_memory()  # the parsing's Python objects
    sharded = _previous(previous)
    listed = pc.filter(table.column("clip_id"), pc.is_in(table.column("status"), pa.array(USABLE_STATUSES)))
    carried = _carried_over(previous, sharded, listed)
    if carried.num_rows:
        table = pa.concat_tables([table, carried])
    # shards: the earlier assignment, then new shards for the ok clips that have none
    shard = pc.take(sharded.column("shard"), pc.index_in(table.column("clip_id"), value_set=sharded.column("clip_id")))
    new = pc.and_(pc.is_null(shard), pc.equal(table.column("status"), SHARDABLE_STATUS))
    new_idx = np.flatnonzero(new.to_numpy(zero_copy_only=False))
    if len(new_idx):
        ids = pc.take(table.column("clip_id"), pa.array(new_idx))
        order = pc.sort_indices(ids).to_numpy()
        keys = cut_new_shards(len(new_idx), next_shard_index(pc.unique(sharded.column("shard")).to_pylist()),
                              ds.shard_size)
        filled = np.asarray(shard.to_pylist(), dtype=object)
        filled[new_idx[order]] = keys
        shard = pa.array(filled, pa.string())
        del filled, ids
    # Rows stay in metadata order (carried-over rows last): sorting 2M rows would copy the whole
    # table once more; shard_members orders a shard's rows by id.
    return table.set_column(table.schema.get_field_index("shard"), "shard", shard)


def manifest_summary(table: pa.Table, first_errors: int = 10) -> dict:
    """What a person wants to see of a manifest: counts, coverage, the first problems."""
    status = table.column("status")
    counts = {d["values"]: d["counts"] for d in pc.value_counts(status).to_pylist()}
    by_split_status = table.group_by(["split", "status"]).aggregate([("clip_id", "count")]).to_pylist()
    listed = sum(n for s, n in counts.items() if s in USABLE_STATUSES)
    ok = counts.get("ok", 0)
    errors = table.filter(pc.not_equal(status, "ok")).slice(0, first_errors)
    return {
        "clips": table.num_rows,
        "ok": ok,
        "coverage_pct": round(100.0 * ok / listed, 2) if listed else 0.0,
        "by_status": dict(sorted(counts.items())),
        "by_split_status": sorted(({"split": r["split"], "status": r["status"], "clips": r["clip_id_count"]}
                                   for r in by_split_status), key=lambda r: (r["split"] or "", r["status"])),
        "shards": len(pc.unique(table.column("shard")).drop_null()),
        "first_errors": errors.select(["clip_id", "split", "status", "reason", "source"]).to_pylist(),
    }


def dataset_fingerprint(ds: DatasetConfig) -> str:
    """sha256 over (path, size, mtime) of the metadata files and every file under the root.

    Notices added, removed, replaced or rewritten clips and edited metadata, without
    reading file contents (a full scan of a 2M-clip tree is a few seconds of stat calls).
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(ds.root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith(".") and name.endswith(".tmp"):
                continue  # a download or generator still writing
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"{os.path.relpath(path, ds.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def member_paths(root: Path, member: dict) -> tuple[str, str]:
    """Absolute media and image paths of a manifest row (already checked to stay inside the root)."""
    media = resolve_inside(root, member["media_path"]) or ""
    image = resolve_inside(root, member["image_path"]) if member["image_path"] else ""
    return media, image or ""

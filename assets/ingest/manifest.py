"""clip_manifest: every clip a dataset lists, where its files are, and whether they are usable.

Pure part: parse the metadata (assets.ingest.dataset_formats), refuse paths that leave the
dataset root, probe each file (assets.ingest.media_probe), assign stable shards
(assets.ingest.shard_plan) and return a Parquet-ready table. A missing, unreadable, escaping
or malformed clip is a row with a status and a reason, never an exception.

Statuses: ok | missing | unreadable | path_escape | malformed | duplicate | removed
(`removed`: listed by an earlier manifest but not by the metadata now; the row keeps
its shard so shard membership never changes).
"""


import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from assets.ingest.dataset_config import DatasetConfig
from assets.ingest.dataset_formats import SourceRow, parse_metadata
from assets.ingest.media_probe import Probe, probe_file
from assets.ingest.shard_plan import assign_shards

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


def resolve_inside(root: Path, relative: str) -> str | None:
    """Absolute, normalised path of `relative` under root, or None if it leaves root.

    Lexical on purpose: `..` and absolute paths outside root are refused, while a
    media directory that is a symlink to another disk (common for big datasets) is fine.
    """
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(base, relative))
    return full if full == base or full.startswith(base + os.sep) else None


def _check(root: Path, row: SourceRow) -> dict:
    """One manifest record for one parsed row (does file I/O: stat + 16 bytes per file)."""
    record = asdict(row)
    problem = record.pop("problem")
    record.update(status="ok", reason="", media_bytes=0, media_mtime_ns=0, image_bytes=0, image_mtime_ns=0)
    if problem:
        record.update(status="malformed", reason=problem)
        return record
    for role, rel in (("media", row.media_path), ("image", row.image_path)):
        if role == "image" and not rel:
            continue
        full = resolve_inside(root, rel)
        if full is None:
            record.update(status="path_escape", reason=f"{row.source}: {role} path {rel!r} leaves the dataset root {root}")
            return record
        probe: Probe = probe_file(full)
        record[f"{role}_bytes"], record[f"{role}_mtime_ns"] = probe.size_bytes, probe.mtime_ns
        if probe.status != "ok" and record["status"] == "ok":
            record.update(status=probe.status, reason=f"{row.source}: {probe.reason}")
    return record


def check_rows(root: Path, rows: list[SourceRow], threads: int = 16) -> list[dict]:
    """Records for all rows, probing files on a thread pool (the work is I/O-bound)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        records = list(pool.map(lambda r: _check(root, r), rows, chunksize=256))
    first_seen: dict[str, str] = {}
    for record in records:
        cid = record["clip_id"]
        if record["status"] == "malformed":
            continue
        if cid in first_seen:
            record.update(clip_id=f"duplicate:{record['source']}", status="duplicate",
                          reason=f"{record['source']}: clip {cid} is already listed at {first_seen[cid]}")
        else:
            first_seen[cid] = record["source"]
    return records


def _carried_over(previous: pa.Table | None, listed: set[str]) -> list[dict]:
    """Rows of clips an earlier manifest sharded that the metadata no longer lists."""
    if previous is None:
        return []
    gone = []
    for record in previous.to_pylist():
        if record["shard"] and record["clip_id"] not in listed:
            if record["status"] != "removed":
                record.update(status="removed", reason=f"{record['source']}: no longer listed in the metadata")
            gone.append(record)
    return gone


@dataclass(frozen=True)
class ManifestParams:
    strict: bool = False  # fail on the first malformed metadata line instead of recording it
    probe_threads: int = 16  # parallel stat + header reads (I/O-bound)


def build_manifest(ds: DatasetConfig, previous: pa.Table | None = None,
                   params: ManifestParams = ManifestParams()) -> pa.Table:
    """The manifest table; shard membership continues `previous` (an earlier manifest), if given."""
    records = check_rows(ds.root, parse_metadata(ds, strict=params.strict), params.probe_threads)
    shardable = [r for r in records if r["status"] in USABLE_STATUSES]
    records += _carried_over(previous, {r["clip_id"] for r in shardable})
    before = {} if previous is None else {
        c: s for c, s in zip(previous.column("clip_id").to_pylist(), previous.column("shard").to_pylist()) if s}
    keep = [r["clip_id"] for r in records if r["status"] in USABLE_STATUSES or r["status"] == "removed"]
    shards = assign_shards(keep, before, ds.shard_size)
    for r in records:
        r["shard"] = shards.get(r["clip_id"])
    records.sort(key=lambda r: (r["shard"] is None, r["shard"] or "", r["clip_id"]))
    return pa.Table.from_pylist(records, schema=MANIFEST_SCHEMA)


def manifest_summary(table: pa.Table, first_errors: int = 10) -> dict:
    """What a person wants to see of a manifest: counts, coverage, the first problems."""
    splits, statuses = table.column("split").to_pylist(), table.column("status").to_pylist()
    by_split_status = Counter(zip(splits, statuses))
    listed = sum(1 for s in statuses if s in USABLE_STATUSES)
    ok = statuses.count("ok")
    errors = [r for r in table.select(["clip_id", "split", "status", "reason"]).to_pylist() if r["status"] != "ok"]
    return {
        "clips": table.num_rows,
        "ok": ok,
        "coverage_pct": round(100.0 * ok / listed, 2) if listed else 0.0,
        "by_status": dict(sorted(Counter(statuses).items())),
        "by_split_status": [{"split": sp, "status": st, "clips": n} for (sp, st), n in sorted(by_split_status.items())],
        "shards": len({s for s in table.column("shard").to_pylist() if s}),
        "first_errors": errors[:first_errors],
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

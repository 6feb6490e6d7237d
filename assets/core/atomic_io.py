"""Write files so that they appear whole or not at all: temp file in the same directory, fsync, rename."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _temp_name(path: Path) -> Path:
    # Dot-prefixed and unique per writer, so concurrent writers never share a temp file
    # and a crashed writer's leftovers are recognisable.
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; when the block succeeds the temp file is fsynced and
    renamed over `path`, when it fails (or is interrupted) the temp file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(table: pa.Table, path: Path, metadata: dict[str, str] | None = None) -> int:
    """Write table to path atomically; metadata goes into the schema's key-value metadata. Returns bytes."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path.stat().st_size


def read_parquet_metadata(path: Path) -> dict[str, str]:
    """The key-value metadata written by write_parquet_atomic (reads the footer only)."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW")}



def write_json_atomic(path: Path, data: dict, indent: int = 1, sort_keys: bool = True) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=indent, sort_keys=sort_keys))

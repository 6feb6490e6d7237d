"""Per-shard CLIP embedding files and how a clip's several vectors become one.

One Parquet file per shard and modality (`<cache>/<dataset>/clip_image_embeddings/<shard>.parquet`,
`.../clip_text_embeddings/...`), a row per clip of the shard:

    clip_id, split, status ("ok" | "error"), error_kind, error,
    count   int32   frames (image) or captions (text) embedded
    texts   list<string>  the captions / prompts embedded (text files; empty for images)
    vectors binary  count x dim float32, little-endian, each row L2-normalised

The schema metadata carries the embedding dimension, the teacher's description (model,
pretrained tag, weights sha256) and the fingerprint of the inputs that produced the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from assets.core.atomic_io import read_parquet_metadata, write_parquet_atomic

EMBEDDING_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("split", pa.string()), ("status", pa.string()),
    ("error_kind", pa.string()), ("error", pa.string()),
    ("count", pa.int32()), ("texts", pa.list_(pa.string())), ("vectors", pa.binary()),
])
NORM_TOL = 1e-3  # |‖v‖ - 1| allowed for a stored vector


def ok_row(clip_id: str, split: str, vectors: np.ndarray, texts: list[str] | None = None) -> dict:
    v = np.ascontiguousarray(vectors, dtype="<f4")
    return {"clip_id": clip_id, "split": split, "status": "ok", "error_kind": None, "error": None,
            "count": int(v.shape[0]), "texts": texts or [], "vectors": v.tobytes()}


def error_row(clip_id: str, split: str, kind: str, message: str, texts: list[str] | None = None) -> dict:
    return {"clip_id": clip_id, "split": split, "status": "error", "error_kind": kind, "error": message,
            "count": 0, "texts": texts or [], "vectors": None}


def write_embeddings(rows: list[dict], path: Path, dim: int, teacher: dict, params: dict, fingerprint: str) -> int:
    table = pa.Table.from_pylist(rows, schema=EMBEDDING_SCHEMA)
    return write_parquet_atomic(table, path, {
        "clipkt.dim": str(dim), "clipkt.teacher": json.dumps(teacher, sort_keys=True),
        "clipkt.params": json.dumps(params, sort_keys=True), "clipkt.fingerprint": fingerprint})


def stored_fingerprint(path: Path) -> str | None:
    return read_parquet_metadata(path).get("clipkt.fingerprint") if path.exists() else None


def read_embeddings(path: Path) -> tuple[pa.Table, list[np.ndarray | None]]:
    """(the file's table without the vector column, per row a (count, dim) float32 array or None)."""
    table = pq.read_table(path)
    dim = int(read_parquet_metadata(path)["clipkt.dim"])
    vectors = [None if b is None else np.frombuffer(b, dtype="<f4").reshape(-1, dim)
               for b in table.column("vectors").to_pylist()]
    return table.drop_columns(["vectors"]), vectors


def pool(vectors: np.ndarray, how: str) -> np.ndarray:
    """One unit vector standing for a clip's (count, dim) vectors.

    "middle": frame count // 2 (for L=4 frames at 0, 3.3, 6.7, 10 s: the one at 6.7 s);
    "first": row 0 (e.g. the first caption); "mean": the mean, L2-normalised again."""
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"need (count >= 1, dim) vectors, got shape {vectors.shape}")
    if how == "middle":
        return vectors[len(vectors) // 2]
    if how == "first":
        return vectors[0]
    if how == "mean":
        m = vectors.astype(np.float64).mean(axis=0)
        norm = np.linalg.norm(m)
        if norm < 1e-6:  # opposite vectors cancel: fall back to the first, never divide by ~0
            return vectors[0]
        return (m / norm).astype(np.float32)
    raise ValueError(f"pooling must be 'middle', 'first' or 'mean', got {how!r}")


def embedding_problems(path: Path, tol: float = NORM_TOL) -> list[str]:
    """Why the file's vectors are not all finite and unit-norm (empty when they are)."""
    table, vectors = read_embeddings(path)
    problems = []
    for clip_id, status, v in zip(table.column("clip_id").to_pylist(), table.column("status").to_pylist(), vectors):
        if status != "ok":
            continue
        if v is None or len(v) == 0:
            problems.append(f"{clip_id}: status ok but no vectors")
        elif not np.isfinite(v).all():
            problems.append(f"{clip_id}: non-finite values")
        elif np.abs(np.linalg.norm(v.astype(np.float64), axis=1) - 1).max() > tol:
            norms = ", ".join(f"{x:.4f}" for x in np.linalg.norm(v.astype(np.float64), axis=1))
            problems.append(f"{clip_id}: norms [{norms}] are not 1")
    return problems

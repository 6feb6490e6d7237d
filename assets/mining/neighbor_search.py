"""Neighbour tables for the CLIP-mined positives (seed 000): top-k by inner product (= cosine).

Pure functions (numpy + faiss + pyarrow). Given L2-normalised key and query embeddings,
`search` yields, chunk by chunk, every query's k nearest keys by inner product; `write_table`
streams them into a compact Parquet table. Plus the seed's diagnostics: the "average of the
top-K similarity" curve and the fraction of samples that meet a same-neighbour in a batch.

Canonical order. faiss computes float32 inner products whose last bits depend on the code
path (BLAS blocking, the nq < 20 non-BLAS path, GPU), so near-equal scores could come back
in a different order depending on the chunk size or device. The *canonical score* is the
float64 dot product of the float32 vectors rounded to float32; the canonical order is
canonical score descending, then the tie order: neighbour id ascending, or, given a
`tie_seed`, a seeded random order of the keys drawn afresh for each query row (`tie_keys`: a
bijective hash of (seed, query row, key row), so equal seeds give equal orders on any chunking).
The mining stage passes a seed: with id order, clips whose embeddings are identical (the same
label prompt) would all list the same lowest rows, a few hub clips collecting everyone's
neighbours; a per-query order spreads them. `brute_force_topk` computes the canonical order for
every candidate. `search` asks faiss for a few more candidates than needed (k, +1 when
excluding, + a small margin) and re-scores only what can be out of order: runs of
candidates whose faiss scores lie within TIE_EPS of each other (faiss's float32 error on
unit vectors is far below that), then sorts those rows canonically. Neighbour ids and order
are then a function of the candidate sets only: identical across chunk sizes, thread counts
and CPU/GPU, and exact flat search returns `brute_force_topk`'s ids; scores outside tie
runs are faiss's, within float32 rounding (~1e-7) of the canonical ones.

GPUs (faiss-gpu; `use_gpu`): `build_index` puts a flat or IVF index on every visible GPU when there
are several (replicated, or sharded when its vectors exceed GPU_SHARD_BYTES), else on GPU 0; a
failed copy falls back to one GPU, then to the CPU, with a logged warning (`to_gpus`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from assets.core.atomic_io import atomic_path

log = logging.getLogger(__name__)

NORM_TOL = 1e-3
GPU_MAX_K = 2048
# Several GPUs: an index whose vectors exceed this is sharded across them (each holds 1/n of the keys,
# every query goes to all), a smaller one replicated (each holds all keys, the queries are split).
# Replicas search n times faster but need the whole index on each GPU; 8 GiB leaves room on a 16 GB
# card for faiss's temporary memory. AudioSet's 1.67M x 512 float32 keys (3.4 GB) are replicated.
GPU_SHARD_BYTES = 8 << 30
# Extra candidates fetched beyond what is returned, so that float32 rounding in faiss can
# never push a true top-k item out of the candidate set before the canonical re-scoring.
MARGIN = 8
# faiss's float32 scores differ from the canonical ones by far less than this on unit vectors:
# measured at most 7e-7 (dim 128-1024, BLAS and non-BLAS paths), so two code paths differ by
# < 1.5e-6 and any two candidates further apart than TIE_EPS are in canonical order already.
TIE_EPS = 4e-6
# Elements (rows x candidates x dim) gathered at once when re-scoring: bounds the float64 temp.
_RESCORE_ELEMS = 1 << 22

# 4 + 2 + 4 + 2 = 12 bytes/row before compression (int64 ids/rank + float32 score: 28).
TABLE_SCHEMA = pa.schema(
    [("query", pa.int32()), ("rank", pa.int16()), ("neighbor", pa.int32()), ("score", pa.float16())]
)


@dataclass(frozen=True)
class SearchParams:
    k: int = 100  # k_max; seed 000's k-ablation goes up to 1000
    index: str = "flat"  # "flat" (exact), "ivf" (IndexIVFFlat, IP) or "hnsw" (IndexHNSWFlat, IP)
    nlist: int = 0  # IVF lists; 0 -> about 4*sqrt(N) (capped at N // 39, faiss's k-means minimum)
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 100  # HNSW build effort (faiss's default 40 caps recall near 0.9 at 1M points)
    ef_search: int = 128
    ivf_train_per_list: int = 64  # IVF k-means trains on at most this many sampled keys per list
    chunk_rows: int = 4096  # queries per search call: memory stays bounded
    use_gpu: bool | None = None  # None: GPU when faiss has GPU support and a GPU is visible (all of them, if several)
    gpu_shard: bool | None = None  # several GPUs: shard (True) or replicate (False); None: shard above GPU_SHARD_BYTES
    seed: int = 0  # IVF k-means training seed


# ---------------------------------------------------------------------------- validation


def _check_embeddings(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """2-D, float32 (converted), C-contiguous, finite, unit-norm within NORM_TOL; raises ValueError naming `name`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows, dim), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: dimension {x.shape[1]} does not match the keys' dimension {dim}")
    step = max(1, (1 << 24) // x.shape[1])  # bounded temporaries
    worst_row, worst_dev = -1, -1.0
    for lo in range(0, x.shape[0], step):
        block = x[lo : lo + step]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            raise ValueError(f"{name}: row {lo + int(np.argmin(finite))} has non-finite values")
        dev = np.abs(np.sqrt(np.einsum("nd,nd->n", block, block, dtype=np.float64)) - 1.0)
        i = int(np.argmax(dev))
        if dev[i] > worst_dev:
            worst_row, worst_dev = lo + i, float(dev[i])
    if worst_dev > NORM_TOL:
        norm = float(np.linalg.norm(x[worst_row].astype(np.float64)))
        raise ValueError(f"{name}: not L2-normalised; worst row {worst_row} has norm {norm:.6g} (tolerance {NORM_TOL})")
    return x


def _check_exclude(exclude: np.ndarray | None, n_queries: int, n_keys: int) -> np.ndarray | None:
    if exclude is None:
        return None
    e = np.asarray(exclude)
    if e.shape != (n_queries,) or not np.issubdtype(e.dtype, np.integer):
        raise ValueError(f"exclude: expected ({n_queries},) integers, got shape {e.shape} dtype {e.dtype}")
    if n_queries and (e.min() < 0 or e.max() >= n_keys):
        raise ValueError(f"exclude: key rows must be in [0, {n_keys}), got [{e.min()}, {e.max()}]")
    return e.astype(np.int64)


def _check_query_rows(rows: np.ndarray | None, n_queries: int) -> np.ndarray:
    if rows is None:
        return np.arange(n_queries, dtype=np.int64)
    r = np.asarray(rows)
    if r.shape != (n_queries,) or not np.issubdtype(r.dtype, np.integer) or (n_queries and r.min() < 0):
        raise ValueError(f"query_rows: expected ({n_queries},) non-negative integers, got shape {r.shape} dtype {r.dtype}")
    return r.astype(np.int64)


def _check_k(k: int, n_keys: int, excluding: bool) -> None:
    limit = n_keys - 1 if excluding else n_keys
    if not 1 <= k <= limit:
        what = "number of keys - 1 (one is excluded)" if excluding else "number of keys"
        raise ValueError(f"k={k} must be in [1, {limit}] ({what} = {limit})")


# ---------------------------------------------------------------------------- canonical order

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd: id -> base + id * _GOLDEN is injective modulo 2**64


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scrambles every bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def tie_keys(query_rows: np.ndarray, ids: np.ndarray, tie_seed: int | None) -> np.ndarray:
    """Sort keys that order equal canonical scores (ascending) for ids (rows, m) of the given query
    rows: the ids themselves without a seed; with one, mix(base_q + id * odd), base_q a hash of
    (seed, q): for each query a distinct pseudo-random order of every key (a bijection, so no two
    keys of a query tie), a different one per query and per seed."""
    ids = np.asarray(ids)
    if tie_seed is None:
        return ids
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        seed = np.uint64(tie_seed % 2**64)
        base = _mix64(np.asarray(query_rows, dtype=np.int64).astype(np.uint64) * _GOLDEN + seed)
        return _mix64(base[:, None] + ids.astype(np.int64).astype(np.uint64) * _GOLDEN)


def _finalize(
    queries: np.ndarray, keys: np.ndarray, cand: np.ndarray, k: int, exclude: np.ndarray | None,
    query_rows: np.ndarray, tie_seed: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical scores of the candidates, excluded/missing (-1) ids dropped, sorted by
    (score desc, tie order), truncated to k. Rows with fewer than k valid candidates (only
    possible with approximate indexes) are padded with id -1 and score -inf."""
    cand = np.array(cand, dtype=np.int64, copy=True)
    if exclude is not None:
        cand[cand == exclude[:, None]] = -1
    n, m = cand.shape
    scores = np.empty((n, m), dtype=np.float32)
    step = max(1, _RESCORE_ELEMS // (m * keys.shape[1]))
    for lo in range(0, n, step):
        c = cand[lo : lo + step]
        gathered = keys[np.maximum(c, 0)].astype(np.float64)  # (rows, m, d)
        q = queries[lo : lo + step].astype(np.float64)
        scores[lo : lo + step] = np.einsum("nd,nmd->nm", q, gathered)
    scores[cand < 0] = -np.inf
    ties = tie_keys(query_rows, cand, tie_seed)  # padding (-1) sorts last by its -inf score whatever its key
    order = np.lexsort((ties, -scores.astype(np.float64)), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(cand, order, axis=1)


def _canonical_order(
    queries: np.ndarray, keys: np.ndarray, dist: np.ndarray, cand: np.ndarray, k: int, exclude: np.ndarray | None,
    query_rows: np.ndarray, tie_seed: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """faiss's rows (sorted by its float32 score) in canonical order, truncated to k.

    Excluded and missing (-1) ids move to the end (id -1, score -inf, as padding); every
    candidate in a run of scores within TIE_EPS of each other gets its canonical score and
    each run is re-sorted in place by (canonical score desc, tie order). Runs are separated by
    gaps above TIE_EPS, more than faiss's error, so no item can belong outside its run."""
    cand = np.array(cand, dtype=np.int64, copy=True)
    scores = np.array(dist, dtype=np.float32, copy=True)
    scores[cand < 0] = -np.inf  # missing results (approximate indexes) sit at the end already
    if exclude is not None:
        hit = cand == exclude[:, None]  # at most once per row (faiss returns distinct ids)
        rows = np.flatnonzero(hit.any(axis=1))
        if rows.size:  # shift the rest of those rows left over the excluded slot; pad the end
            m = cand.shape[1]
            pos = np.argmax(hit[rows], axis=1)
            src = np.minimum(np.arange(m) + (np.arange(m) >= pos[:, None]), m - 1)
            cand[rows] = np.take_along_axis(cand[rows], src, axis=1)
            scores[rows] = np.take_along_axis(scores[rows], src, axis=1)
            cand[rows, -1], scores[rows, -1] = -1, -np.inf
    with np.errstate(invalid="ignore"):  # -inf - -inf between padding slots: NaN, not close
        close = (scores[:, :-1] - scores[:, 1:] < TIE_EPS) & (cand[:, 1:] >= 0)
    involved = np.zeros(cand.shape, dtype=bool)
    involved[:, :-1] |= close
    involved[:, 1:] |= close
    r, c = np.nonzero(involved)  # row-major: each run of near-equal scores is contiguous here
    if r.size:
        step = max(1, _RESCORE_ELEMS // keys.shape[1])
        canonical = np.empty(r.size, np.float32)
        for lo in range(0, r.size, step):
            rr, cc = r[lo : lo + step], c[lo : lo + step]
            canonical[lo : lo + step] = np.einsum("nd,nd->n", queries[rr], keys[cand[rr, cc]], dtype=np.float64)
        # a run starts where an involved slot does not continue its left neighbour's run
        starts = np.ones(r.size, dtype=bool)
        starts[1:] = ~((r[1:] == r[:-1]) & (c[1:] == c[:-1] + 1) & close[r[1:], np.maximum(c[1:] - 1, 0)])
        run = np.cumsum(starts)
        ids = cand[r, c]
        ties = tie_keys(query_rows[r], ids[:, None], tie_seed)[:, 0]
        order = np.lexsort((ties, -canonical.astype(np.float64), run))  # within each run: score desc, tie order
        cand[r, c], scores[r, c] = ids[order], canonical[order]  # each run stays in its own slots
    return scores[:, :k], cand[:, :k]


def brute_force_topk(
    queries: np.ndarray, keys: np.ndarray, k: int, exclude: np.ndarray | None = None, chunk_rows: int = 1024,
    tie_seed: int | None = None, query_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact numpy reference: (scores (Q, k) float32, ids (Q, k) int64).

    Scores are float64 dot products of the float32 vectors, rounded to float32; rows are sorted
    by score descending, then by the tie order (`tie_keys`: id ascending without tie_seed);
    `exclude[i]` (a key row) is never in row i. query_rows: the queries' rows for the tie order
    (default 0..Q-1), so that a sample of `search`'s queries is ordered as `search` orders it.
    """
    keys = _check_embeddings(keys, "keys")
    queries = _check_embeddings(queries, "queries", keys.shape[1])
    exclude = _check_exclude(exclude, queries.shape[0], keys.shape[0])
    _check_k(k, keys.shape[0], exclude is not None)
    query_rows = _check_query_rows(query_rows, queries.shape[0])
    n_keys = keys.shape[0]
    m = min(n_keys, k + (exclude is not None) + MARGIN)
    k64 = keys.astype(np.float64)
    out_s = np.empty((queries.shape[0], k), np.float32)
    out_i = np.empty((queries.shape[0], k), np.int64)
    chunk_rows = max(1, min(chunk_rows, (1 << 24) // n_keys))  # similarity block <= 16M float64
    for lo in range(0, queries.shape[0], chunk_rows):
        q = queries[lo : lo + chunk_rows]
        sim = (q.astype(np.float64) @ k64.T).astype(np.float32).astype(np.float64)
        if exclude is not None:
            sim[np.arange(q.shape[0]), exclude[lo : lo + chunk_rows]] = -np.inf
        if m < n_keys:
            # Every candidate tied with the m-th best score joins, so ties at the boundary
            # are resolved by the tie order in _finalize rather than by argpartition's arbitrary pick.
            kth = -np.partition(-sim, m - 1, axis=1)[:, m - 1 : m]
            width = int((sim >= kth).sum(axis=1).max())
            cand = np.argpartition(-sim, width - 1, axis=1)[:, :width]
        else:
            cand = np.broadcast_to(np.arange(n_keys), (q.shape[0], n_keys))
        ex = None if exclude is None else exclude[lo : lo + chunk_rows]
        rows = query_rows[lo : lo + chunk_rows]
        out_s[lo : lo + chunk_rows], out_i[lo : lo + chunk_rows] = _finalize(q, keys, cand, k, ex, rows, tie_seed)
    return out_s, out_i


# ---------------------------------------------------------------------------- faiss


def _gpu_wanted(p: SearchParams) -> bool:
    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if p.use_gpu and not available:
        raise ValueError("use_gpu=True but faiss has no GPU support or no GPU is visible")
    return available if p.use_gpu is None else bool(p.use_gpu)


def _nlist(p: SearchParams, n: int) -> int:
    if p.nlist > 0:
        return min(p.nlist, n)
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


def build_index(keys: np.ndarray, p: SearchParams) -> faiss.Index:
    """An inner-product index over the (validated) keys; row i of keys gets id i."""
    keys = _check_embeddings(keys, "keys")
    n, d = keys.shape
    if p.index == "flat":
        index = faiss.IndexFlatIP(d)
    elif p.index == "ivf":
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, _nlist(p, n), faiss.METRIC_INNER_PRODUCT)
        index.referenced_objects = [quantizer]  # keep the quantizer alive with the index
        index.cp.seed = p.seed
        index.cp.max_points_per_centroid = p.ivf_train_per_list  # faiss samples the training keys (seeded)
        index.train(keys)
    elif p.index == "hnsw":
        index = faiss.IndexHNSWFlat(d, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p.ef_construction
    else:
        raise ValueError(f"index must be 'flat', 'ivf' or 'hnsw', got {p.index!r}")
    index.add(keys)
    if p.index != "hnsw" and _gpu_wanted(p):  # faiss has no GPU HNSW
        return to_gpus(index, keys, p)
    return index


def to_gpus(index: faiss.Index, keys: np.ndarray, p: SearchParams) -> faiss.Index:
    """The CPU index on every visible GPU (sharded or replicated, `gpu_shard`), else on GPU 0, else,
    when copying fails (out of memory, a driver error), the CPU index itself, each failure logged as a
    warning. Search results do not depend on the choice (`search` re-scores canonically)."""
    gpus = faiss.get_num_gpus()
    if gpus > 1:
        shard = p.gpu_shard if p.gpu_shard is not None else keys.nbytes > GPU_SHARD_BYTES
        try:
            options = faiss.GpuMultipleClonerOptions()
            options.shard = bool(shard)
            return _mark_gpu(faiss.index_cpu_to_all_gpus(index, co=options), keys, gpus)
        except Exception as e:  # any faiss or CUDA error: one GPU, then the CPU
            log.warning("faiss: %s the index over %d GPUs failed (%s: %s); trying one GPU",
                        "sharding" if shard else "replicating", gpus, type(e).__name__, e)
    try:
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, 0, index)
        gpu.referenced_objects = [res]
        return _mark_gpu(gpu, keys, 1)
    except Exception as e:
        log.warning("faiss: moving the index to GPU 0 failed (%s: %s); searching on the CPU", type(e).__name__, e)
        return index


@dataclass(frozen=True)
class GpuPlacement:
    """Kept in a GPU index's referenced_objects (faiss's keep-alive list; its proxies take no other
    attribute): how many GPUs hold it and its key vectors, since a multi-GPU index (IndexShards or
    IndexReplicas) neither says it is on a GPU nor stores its vectors where `_stored_vectors` looks."""
    gpus: int
    keys: np.ndarray = field(repr=False)


def _mark_gpu(index: faiss.Index, keys: np.ndarray, gpus: int) -> faiss.Index:
    index.referenced_objects = [*(getattr(index, "referenced_objects", None) or []), GpuPlacement(gpus, keys)]
    return index


def gpu_placement(index: faiss.Index) -> GpuPlacement | None:
    return next((o for o in getattr(index, "referenced_objects", None) or [] if isinstance(o, GpuPlacement)), None)


def on_gpu(index: faiss.Index) -> bool:
    return gpu_placement(index) is not None or "Gpu" in type(faiss.downcast_index(index)).__name__


def _stored_vectors(index: faiss.Index) -> np.ndarray:
    """The index's key vectors (zero-copy for flat and HNSW-flat on CPU and for GPU indexes, else reconstructed)."""
    placement = gpu_placement(index)
    if placement is not None:
        return placement.keys
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexHNSW):
        idx = faiss.downcast_index(idx.storage)
    if isinstance(idx, faiss.IndexFlat):
        return faiss.rev_swig_ptr(idx.get_xb(), idx.ntotal * idx.d).reshape(idx.ntotal, idx.d)
    if isinstance(idx, faiss.IndexIVF):
        idx.make_direct_map()
    return idx.reconstruct_n(0, idx.ntotal)


def _configure(index: faiss.Index, p: SearchParams) -> None:
    idx = faiss.downcast_index(index)
    if isinstance(idx, (faiss.IndexReplicas, faiss.IndexShards)):  # several GPUs: each copy or shard
        for i in range(idx.count()):
            _configure(idx.at(i), p)
    elif isinstance(idx, faiss.IndexHNSW):
        idx.hnsw.efSearch = p.ef_search
    elif hasattr(idx, "nprobe"):
        idx.nprobe = p.nprobe


def search(
    index: faiss.Index,
    queries: np.ndarray,
    p: SearchParams,
    exclude: np.ndarray | None = None,
    keys: np.ndarray | None = None,
    tie_seed: int | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first_query_row, scores (n, k) float32, ids (n, k) int64) per chunk of p.chunk_rows queries.

    exclude: optional (Q,) key row dropped from each query's list (t2t/i2i: the query's own row).
    Every row has exactly k results: the excluded id is removed if present, else the last one.
    keys: the indexed vectors, for the canonical re-scoring; by default read from the index.
    tie_seed: orders equal canonical scores by a seeded random order per query row (`tie_keys`);
    None: by key row.
    Inputs are validated before the first chunk is yielded (the function is a generator, so
    that happens on the first next()).
    """
    n_keys, d = index.ntotal, index.d
    queries = _check_embeddings(queries, "queries", d)
    exclude = _check_exclude(exclude, queries.shape[0], n_keys)
    _check_k(p.k, n_keys, exclude is not None)
    if p.chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {p.chunk_rows}")
    if keys is None:
        keys = _stored_vectors(index)
    else:
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        if keys.shape != (n_keys, d):
            raise ValueError(f"keys: shape {keys.shape} does not match the index ({n_keys}, {d})")
    need = p.k + (exclude is not None)
    limit = n_keys
    if on_gpu(index):
        if need > GPU_MAX_K:
            raise ValueError(f"GPU search supports k <= {GPU_MAX_K}; k={p.k} needs {need}")
        limit = min(limit, GPU_MAX_K)
    m = min(limit, need + MARGIN)
    _configure(index, p)
    for lo in range(0, queries.shape[0], p.chunk_rows):
        q = queries[lo : lo + p.chunk_rows]
        ex = None if exclude is None else exclude[lo : lo + p.chunk_rows]
        dist, cand = index.search(q, m)
        rows = np.arange(lo, lo + len(q))
        scores, ids = _canonical_order(q, keys, dist, cand, p.k, ex, rows, tie_seed)
        # A row whose last candidate still ties (within float32 noise) with its k-th result may
        # have had part of a tie group cut off by faiss: search those rows again, wider.
        redo, width = _truncated(dist, scores), m
        while redo.size and width < limit:
            width = min(limit, 2 * width)
            dist, cand = index.search(q[redo], width)
            s2, i2 = _canonical_order(q[redo], keys, dist, cand, p.k, None if ex is None else ex[redo], rows[redo],
                                      tie_seed)
            scores[redo], ids[redo] = s2, i2
            redo = redo[_truncated(dist, s2)]
        yield lo, scores, ids


def _truncated(dist: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rows whose last faiss candidate scores within TIE_EPS of the k-th result (padded rows excluded)."""
    kth = scores[:, -1]
    return np.flatnonzero(np.isfinite(kth) & (dist[:, -1] >= kth - TIE_EPS))


# ---------------------------------------------------------------------------- diagnostics


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / k (both (Q, k); -1 in approx never matches)."""
    a, e = np.asarray(approx_ids), np.asarray(exact_ids)
    if a.shape != e.shape or a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"approx_ids {a.shape} and exact_ids {e.shape} must be the same (Q, k) shape")
    k = a.shape[1]
    hits = 0
    step = max(1, (1 << 24) // (k * k))
    for lo in range(0, a.shape[0], step):
        aa, ee = a[lo : lo + step], e[lo : lo + step]
        hits += int(((aa[:, :, None] == ee[:, None, :]) & (aa[:, :, None] >= 0)).any(axis=2).sum())
    return hits / (a.shape[0] * k)


def top_k_similarity_curve(scores: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Seed 000's "average of the top-K similarity": for each K, mean over queries of the mean of the top-K scores."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores: expected (Q, k), got shape {s.shape}")
    s = -np.sort(-s, axis=1)  # descending (search output already is; tolerate any order)
    out = {}
    for K in ks:
        if not 1 <= K <= s.shape[1]:
            raise ValueError(f"K={K} must be in [1, {s.shape[1]}]")
        out[int(K)] = float(s[:, :K].mean(axis=1).mean())
    return out


def same_neighbour_batch_fraction(ids: np.ndarray, k: int, batch: int, trials: int, seed: int) -> float:
    """Fraction of samples whose batch holds one of their top-k neighbours (a would-be false negative).

    ids: (Q, >=k) neighbour key rows, queries and keys being the same items (t2t, i2i). Each
    trial samples `batch` distinct rows; a sample counts when any *other* sample of its batch
    is among its first k neighbours. Returns the mean fraction over trials.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or not 1 <= k <= ids.shape[1]:
        raise ValueError(f"ids: expected (Q, >= k={k}), got shape {ids.shape}")
    n = ids.shape[0]
    if not 1 <= batch <= n or trials < 1:
        raise ValueError(f"batch={batch} must be in [1, {n}] and trials={trials} >= 1")
    top = ids[:, :k].astype(np.int64)
    if top.max() >= n:
        raise ValueError(f"ids: neighbour {top.max()} is not a row of the {n} items")
    rng = np.random.default_rng(seed)
    in_batch = np.zeros(n + 1, dtype=bool)  # slot n: -1 (missing) ids map there, never in a batch
    fractions = []
    for _ in range(trials):
        rows = rng.choice(n, size=batch, replace=False)
        in_batch[rows] = True
        nb = top[rows]
        nb = np.where(nb < 0, n, nb)
        met = (in_batch[nb] & (nb != rows[:, None])).any(axis=1)
        fractions.append(met.mean())
        in_batch[rows] = False
    return float(np.mean(fractions))


# ---------------------------------------------------------------------------- table I/O


def _chunk_table(first: int, scores: np.ndarray, ids: np.ndarray) -> pa.Table:
    scores, ids = np.asarray(scores), np.asarray(ids)
    if scores.shape != ids.shape or ids.ndim != 2:
        raise ValueError(f"chunk at {first}: scores {scores.shape} and ids {ids.shape} must be the same (n, k)")
    n, k = ids.shape
    if k > np.iinfo(np.int16).max + 1 or first + n > np.iinfo(np.int32).max:
        raise ValueError(f"chunk at {first}: k={k} or query rows exceed the table's int16/int32 columns")
    if ids.size and (ids.max() > np.iinfo(np.int32).max or ids.min() < -1):
        raise ValueError(f"chunk at {first}: neighbour ids outside [-1, int32 max]")
    cols = [
        pa.array(np.repeat(np.arange(first, first + n, dtype=np.int32), k)),
        pa.array(np.tile(np.arange(k, dtype=np.int16), n)),
        pa.array(ids.astype(np.int32).ravel()),
        pa.array(scores.astype(np.float16).ravel()),
    ]
    return pa.Table.from_arrays(cols, schema=TABLE_SCHEMA)


def write_table(path: Path, chunks: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> int:
    """Stream (first_query_row, scores, ids) chunks into a Parquet file, one row group per chunk.

    Written atomically (`assets.core.atomic_io.atomic_path`): a failed or killed run leaves no
    partial table. Rows are 12 bytes before compression (int32 query, int16 rank, int32
    neighbor, float16 score). Returns the number of rows written.
    """
    rows = 0
    with atomic_path(Path(path)) as tmp, pq.ParquetWriter(tmp, TABLE_SCHEMA) as writer:
        for first, scores, ids in chunks:
            table = _chunk_table(first, scores, ids)
            writer.write_table(table, row_group_size=max(1, table.num_rows))
            rows += table.num_rows
    return rows


def trailing_padding(ids: np.ndarray) -> np.ndarray:
    """(Q, k) bool: the -1 ids that pad a row's tail ("no more neighbours"). A -1 followed by a
    real id is not padding: it is a bad id."""
    missing = np.asarray(ids) == -1
    return np.flip(np.logical_and.accumulate(np.flip(missing, axis=1), axis=1), axis=1)


def read_table(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query ids (Q,) int64, neighbour ids (Q, k) int64, scores (Q, k) float32) from write_table's file.

    A neighbour id -1 means "none" and may only pad a row's tail (an approximate index that found
    fewer than k, a group smaller than k in the oracle table); a -1 followed by a real id, or any
    other negative id, is an error naming the file and query."""
    t = pq.read_table(path, schema=TABLE_SCHEMA)
    query = t.column("query").to_numpy().astype(np.int64)
    rank = t.column("rank").to_numpy()
    starts = np.flatnonzero(rank == 0)
    if len(query) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32)
    k = len(query) // max(1, len(starts))
    q = len(starts)
    if q * k != len(query) or not np.array_equal(rank, np.tile(np.arange(k, dtype=rank.dtype), q)):
        raise ValueError(f"{path}: ranks are not 0..k-1 per query; not a table written by write_table")
    query2 = query.reshape(q, k)
    if not (query2 == query2[:, :1]).all():
        raise ValueError(f"{path}: a query's rows are not contiguous")
    ids = t.column("neighbor").to_numpy().astype(np.int64).reshape(q, k)
    rows = np.flatnonzero((ids < 0).any(axis=1))  # usually none: the padding check only reads those rows
    bad = rows[((ids[rows] < 0) & ~trailing_padding(ids[rows])).any(axis=1)]
    if bad.size:
        raise ValueError(f"{path}: query {query2[bad[0], 0]}: negative neighbour ids other than -1 padding at the row's tail")
    scores = t.column("score").to_numpy().astype(np.float32).reshape(q, k)
    return query2[:, 0].copy(), ids, scores

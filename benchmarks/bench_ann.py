"""Approximate (IVF, HNSW) against exact neighbour search, on clustered synthetic embeddings.

    .venv/bin/python -m benchmarks.bench_ann                        # defaults below
    .venv/bin/python -m benchmarks.bench_ann --n 100000 --queries 1000

Question: is an approximate faiss index >= 5x faster than exact flat search at recall@10 >= 0.95?
Everything goes through assets.mining.neighbor_search (build_index, search, recall_at_k), exactly as a
neighbour-table build would use it.

Data: N unit vectors of dimension D around C random unit centres (C = sqrt(N) by default):
centre + noise * gaussian / sqrt(D), L2-normalised, float32. Two members of a cluster have
cosine ~ 1 / (1 + noise^2) (0.64 at the default 0.75), so a query's top 10 has to be picked
out of its ~N/C cluster mates rather than found as near-duplicates. Queries are Q fixed random
database rows searched against all N rows for k=10, their own row excluded.

Reported: the exact baseline (index="flat": build, then `search` over the queries), checked
against brute_force_topk on a few queries, plus a bare faiss IndexFlatIP.search for reference;
then IVF over an nprobe sweep and HNSW over an efSearch sweep, each with its build time
(train + add) and, per setting, search seconds, queries/s, recall@10 against the exact ids,
the search speed-up over exact, and the speed-up for a full N x k table (every row a query):
(flat build + exact time per query * N) / (index build + approx time per query * N).
The verdict per index type takes the fastest setting reaching the target recall.
"""

import argparse
import math
import os
import time
from dataclasses import replace

import faiss
import numpy as np

from assets.mining.neighbor_search import SearchParams, brute_force_topk, build_index, recall_at_k, search


def clustered_unit_vectors(n: int, dim: int, n_clusters: int, noise: float, seed: int) -> np.ndarray:
    """(n, dim) float32 unit vectors around n_clusters random unit centres, generated in row blocks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    block_rows = 1 << 16
    for lo in range(0, n, block_rows):
        rows = min(block_rows, n - lo)
        block = centres[rng.integers(n_clusters, size=rows)]
        block += rng.standard_normal((rows, dim), dtype=np.float32) * np.float32(noise / math.sqrt(dim))
        out[lo : lo + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed_search(index: faiss.Index, queries: np.ndarray, p: SearchParams, exclude: np.ndarray,
                 keys: np.ndarray, repeats: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(best seconds over `repeats` full passes of `search` over the queries, scores (Q, k), ids (Q, k))."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        chunks = list(search(index, queries, p, exclude=exclude, keys=keys))
        best = min(best, time.perf_counter() - start)
    return best, np.concatenate([c[1] for c in chunks]), np.concatenate([c[2] for c in chunks])


def timed_build(keys: np.ndarray, p: SearchParams) -> tuple[float, faiss.Index]:
    start = time.perf_counter()
    index = build_index(keys, p)
    return time.perf_counter() - start, index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="database rows")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=2000, help="database rows used as queries")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=0, help="cluster centres; 0 -> sqrt(N)")
    ap.add_argument("--noise", type=float, default=0.75, help="within-cluster cosine ~ 1/(1+noise^2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists; 0 -> neighbor_search's ~4*sqrt(N)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per search; the best is reported")
    ap.add_argument("--check-queries", type=int, default=20, help="queries checked against brute_force_topk")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--target-speedup", type=float, default=5.0)
    args = ap.parse_args()

    run_start = time.perf_counter()
    n_clusters = args.clusters or round(math.sqrt(args.n))
    print(f"faiss {faiss.__version__}, omp threads {faiss.omp_get_max_threads()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; N={args.n} D={args.dim} Q={args.queries} k={args.k}, "
          f"C={n_clusters} clusters, noise {args.noise}")
    start = time.perf_counter()
    keys = clustered_unit_vectors(args.n, args.dim, n_clusters, args.noise, args.seed)
    query_rows = np.random.default_rng(args.seed + 1).choice(args.n, size=args.queries, replace=False)
    queries = keys[query_rows]
    print(f"data: {time.perf_counter() - start:.1f} s")

    flat = SearchParams(k=args.k, index="flat", use_gpu=False, seed=args.seed)
    flat_build, index = timed_build(keys, flat)
    exact_seconds, exact_scores, exact_ids = timed_search(index, queries, flat, query_rows, keys, args.repeats)
    checked = slice(0, args.check_queries)
    _, brute_ids = brute_force_topk(queries[checked], keys, args.k, exclude=query_rows[checked])
    if not np.array_equal(brute_ids, exact_ids[checked]):
        raise SystemExit("flat search disagrees with brute_force_topk: the exact baseline is wrong")
    bare_seconds = math.inf
    for _ in range(args.repeats):
        start = time.perf_counter()
        index.search(queries, args.k + 1)
        bare_seconds = min(bare_seconds, time.perf_counter() - start)
    del index
    print(f"exact: top-1 cosine {exact_scores[:, 0].mean():.3f}, top-{args.k} {exact_scores[:, -1].mean():.3f} "
          f"(mean); flat build {flat_build:.1f} s, search {exact_seconds:.2f} s "
          f"({args.queries / exact_seconds:.0f} q/s), bare IndexFlatIP.search {bare_seconds:.2f} s; "
          f"brute_force_topk agrees on {args.check_queries} queries")

    exact_table = flat_build + exact_seconds / args.queries * args.n
    sweeps = {  # index -> (SearchParams field swept, its values, base params)
        "ivf": ("nprobe", args.nprobe, replace(flat, index="ivf", nlist=args.nlist)),
        "hnsw": ("ef_search", args.ef_search, replace(flat, index="hnsw", hnsw_m=args.hnsw_m)),
    }
    print(f"\n{'index':<6}{'setting':>14}{'search s':>10}{'q/s':>9}{f'recall@{args.k}':>11}{'speed-up':>10}"
          f"{'table x':>9}")
    verdicts = []
    for name, (field, values, base) in sweeps.items():
        build_seconds, index = timed_build(keys, base)
        shape = f"{index.nlist} lists, train+add" if name == "ivf" else f"M={args.hnsw_m}"
        print(f"{name:<6}  build {build_seconds:.1f} s ({shape})")
        passing = []
        for value in values:
            p = replace(base, **{field: value})
            seconds, _, ids = timed_search(index, queries, p, query_rows, keys, args.repeats)
            recall = recall_at_k(ids, exact_ids)
            speedup = exact_seconds / seconds
            table_speedup = exact_table / (build_seconds + seconds / args.queries * args.n)
            print(f"{name:<6}{f'{field}={value}':>14}{seconds:>10.3f}{args.queries / seconds:>9.0f}"
                  f"{recall:>11.4f}{speedup:>9.1f}x{table_speedup:>8.1f}x")
            if recall >= args.target_recall:
                passing.append((seconds, f"{field}={value}", recall, speedup, table_speedup))
        del index
        verdicts.append((name, min(passing, default=None)))

    print()
    for name, best in verdicts:
        if best is None:
            print(f"VERDICT {name}: FAIL, no setting reaches recall@{args.k} >= {args.target_recall}")
            continue
        _, setting, recall, speedup, table_speedup = best
        search_verdict = "PASS" if speedup >= args.target_speedup else "FAIL"
        table_verdict = "PASS" if table_speedup >= args.target_speedup else "FAIL"
        print(f"VERDICT {name}: {setting} recall@{args.k} {recall:.4f}: search {speedup:.1f}x {search_verdict}, "
              f"full table incl. build {table_speedup:.1f}x {table_verdict} (target {args.target_speedup:g}x)")
    print(f"total {time.perf_counter() - run_start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

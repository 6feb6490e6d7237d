"""How well mined neighbours find the true false negatives, on data whose semantic keys are known.

Seed 000 treats CLIP's mined neighbours as extra positives because a random batch holds clips
that mean the same as the anchor ("false negatives"). Where each clip's ground-truth semantic
key is known (SynthAV; `assets.ingest.semantic_keys`), with `groups` the clips' group ids (-1:
no key) and, for a query q, G_q the *other* clips of q's group:

- `oracle_neighbours`: the table a perfect miner would write, q's neighbours drawn from G_q.
- `false_negative_metrics`: recall@k = |top-k ∩ G_q| / |G_q| and precision@k = |top-k ∩ G_q| / k
  of a neighbour table, with the ceilings that the group sizes allow.
- `same_key_batch_share`: the exact share of clips that meet a same-key clip in a random batch,
  the quantity seed 000's "same neighbour in a batch" statistic estimates with neighbours.

Plain numpy; neighbour ids are rows of the same n items, -1 meaning "no neighbour".
"""

from __future__ import annotations

import math

import numpy as np


def _check_groups(groups: np.ndarray) -> np.ndarray:
    g = np.asarray(groups)
    if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"groups: expected (n,) integers, got shape {g.shape} dtype {g.dtype}")
    if g.size and g.min() < -1:
        raise ValueError(f"groups: ids must be >= 0, or -1 for a clip without a key; got {g.min()}")
    return g.astype(np.int64)


def _others(groups: np.ndarray) -> np.ndarray:
    """(n,) |G_q|: how many other clips share each clip's key (0 without a key)."""
    keyed = groups >= 0
    out = np.zeros(len(groups), np.int64)
    if keyed.any():
        out[keyed] = np.bincount(groups[keyed])[groups[keyed]] - 1
    return out


def oracle_neighbours(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(n, k) int64: each clip's neighbours among the other clips with its key, -1 padding at the tail.

    One seeded random cycle per key: the clips of a key are shuffled (a global seeded permutation,
    grouped by key) and each clip takes the min(k, |G_q|) clips that follow it around its key's
    cycle. So every clip gets a uniformly random subset of its group in random order, and every
    clip is the neighbour of exactly as many others as it has neighbours itself: no hub clips,
    unlike a single shared order whose first k clips would be everyone's neighbours. Clips without
    a key (-1) get a row of -1. O(n k) time and memory.
    """
    g = _check_groups(groups)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    n = len(g)
    perm = np.random.default_rng(seed).permutation(n)
    keyed = perm[g[perm] >= 0]
    cycle = keyed[np.argsort(g[keyed], kind="stable")]  # key by key, shuffled within each
    out = np.full((n, k), -1, np.int64)
    if not cycle.size:
        return out
    gc = g[cycle]
    starts = np.flatnonzero(np.r_[True, gc[1:] != gc[:-1]])
    sizes = np.diff(np.r_[starts, len(cycle)])
    start, size = np.repeat(starts, sizes), np.repeat(sizes, sizes)
    position = np.arange(len(cycle)) - start  # each clip's place on its key's cycle
    step = np.arange(1, k + 1)
    nb = cycle[start[:, None] + (position[:, None] + step) % size[:, None]]
    out[cycle] = np.where(step < size[:, None], nb, -1)  # steps 1 .. size-1 are the other clips
    return out


def same_key_hits(ids: np.ndarray, groups: np.ndarray, k: int, first: int = 0) -> np.ndarray:
    """(rows,) int64: for each query row, |first k neighbours ∩ G_q| (distinct ids; -1 never counts).

    ids: (rows, >= k) neighbour rows of queries first, first + 1, ... among the n clips of
    `groups` (a whole table, or one streamed chunk of it)."""
    g = _check_groups(groups)
    ids = np.asarray(ids)
    if ids.ndim != 2 or not 1 <= k <= ids.shape[1]:
        raise ValueError(f"ids: expected (rows, >= k={k}), got shape {ids.shape}")
    top = np.sort(ids[:, :k].astype(np.int64), axis=1)
    if top.size and (top[:, -1].max() >= len(g) or top[:, 0].min() < -1):
        raise ValueError(f"ids: neighbour rows must be in [0, {len(g)}) or -1, got [{top.min()}, {top.max()}]")
    if not 0 <= first <= len(g) - len(top):
        raise ValueError(f"ids: query rows {first}..{first + len(top) - 1} are not rows of the {len(g)} clips")
    query = np.arange(first, first + len(top))
    gq = g[query][:, None]
    hit = (top >= 0) & (top != query[:, None]) & (gq >= 0) & (g[np.maximum(top, 0)] == gq)
    hit[:, 1:] &= top[:, 1:] != top[:, :-1]  # a repeated id counts once
    return hit.sum(axis=1).astype(np.int64)


def metrics_from_hits(hits: np.ndarray, groups: np.ndarray, k: int) -> dict:
    """false_negative_metrics from every query's same_key_hits at k (so a streamed table can be scored)."""
    g = _check_groups(groups)
    hits = np.asarray(hits, dtype=np.float64)
    if hits.shape != g.shape:
        raise ValueError(f"hits: expected one count per clip ({len(g)},), got shape {hits.shape}")
    others = _others(g).astype(np.float64)
    has_key, has_others = g >= 0, others > 0

    def mean(x: np.ndarray, over: np.ndarray) -> float:
        return float(x[over].mean()) if over.any() else float("nan")

    reachable = np.minimum(others, k)
    safe = np.maximum(others, 1)
    return {"k": k, "recall": mean(hits / safe, has_others), "recall_ceiling": mean(reachable / safe, has_others),
            "precision": mean(hits / k, has_key), "precision_ceiling": mean(reachable / k, has_key),
            "queries": int(has_others.sum()), "queries_with_key": int(has_key.sum())}


def false_negative_metrics(ids: np.ndarray, groups: np.ndarray, k: int) -> dict:
    """How many of a table's top-k neighbours are true same-key clips.

    ids: (n, >= k) neighbour rows of the n clips (-1 padding). Returns recall (mean over queries
    with |G_q| > 0 of |top-k ∩ G_q| / |G_q|), precision (mean over queries with a key of
    |top-k ∩ G_q| / k; a key no other clip shares scores 0), their ceilings given the group sizes
    (mean min(|G_q|, k) / |G_q| and mean min(|G_q|, k) / k over the same queries; the oracle table
    reaches both), `queries` (with |G_q| > 0) and `queries_with_key`. A mean over no queries is NaN.
    """
    return metrics_from_hits(same_key_hits(ids, groups, k), groups, k)


def same_key_batch_share(groups: np.ndarray, batch: int) -> float:
    """Share of clips that meet at least one other same-key clip in a uniformly random batch of
    `batch` distinct clips containing them (clips without a key never do).

    A clip with o same-key others among n clips shares the batch's other batch - 1 places with
    none of them with probability C(n-1-o, batch-1) / C(n-1, batch-1) = prod_i (1 - o / (n-1-i)),
    i < batch - 1; summed as logs (log1p) so small and large probabilities stay exact."""
    g = _check_groups(groups)
    n = len(g)
    if not 1 <= batch <= n:
        raise ValueError(f"batch={batch} must be in [1, {n}] (the number of clips)")
    others = _others(g)
    values, counts = np.unique(others, return_counts=True)
    slots = np.arange(batch - 1, dtype=np.float64)
    share = 0.0
    for o, c in zip(values.tolist(), counts.tolist()):
        if o == 0 or batch == 1:
            continue
        if o > n - batch:  # fewer than batch - 1 clips lack the key: a same-key clip is certain
            share += c
            continue
        share += c * -math.expm1(float(np.log1p(-o / (n - 1 - slots)).sum()))
    return share / n

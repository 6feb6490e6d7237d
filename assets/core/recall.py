"""Cross-modal retrieval metrics: R@k and median rank, with several true matches per query.

`similarity` is (queries, items). `matches[q]` lists the items that are correct for query q
(one for audio<->image; for AudioCaps-style data with 5 captions per clip, A->T has the
clip's 5 captions and T->A, where every caption is a query, has its one clip).

Protocol (the standard one for multi-caption retrieval): a query's rank is the best rank of
any of its true matches. Ties are counted against the model: an item scoring exactly as high
as the best true match ranks ahead of it, so a constant similarity gives R@1 = 0, not 1.
Ranks are 1-based; R@k is the fraction of queries with rank <= k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def query_ranks(similarity: np.ndarray, matches: Sequence[Sequence[int]]) -> np.ndarray:
    """(Q,) 1-based rank of each query's best true match (ties pessimistic)."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or len(matches) != sim.shape[0]:
        raise ValueError(f"similarity {sim.shape} needs one list of true matches per row, got {len(matches)}")
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for q, true in enumerate(matches):
        true = np.asarray(true, dtype=np.int64)
        if true.size == 0 or true.min() < 0 or true.max() >= sim.shape[1]:
            raise ValueError(f"query {q}: true matches {true.tolist()} must be non-empty item indices < {sim.shape[1]}")
        best = sim[q, true].max()
        wrong = np.ones(sim.shape[1], dtype=bool)
        wrong[true] = False
        ranks[q] = 1 + int((sim[q, wrong] >= best).sum())
    return ranks


def recall_metrics(similarity: np.ndarray, matches: Sequence[Sequence[int]], ks: Sequence[int] = (1, 5, 10)) -> dict:
    """{"R@1": .., "R@5": .., "R@10": .., "median_rank": .., "queries": Q, "chance_R@1": ..} (fractions)."""
    ranks = query_ranks(similarity, matches)
    items = np.asarray(similarity).shape[1]
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["queries"] = int(len(ranks))
    out["chance_R@1"] = float(np.mean([len(m) / items for m in matches]))
    return out


def caption_matches(caption_owner: Sequence[int], clips: int) -> tuple[list[list[int]], list[list[int]]]:
    """From the clip index of every caption: (clip -> its captions for A->T, caption -> its clip for T->A)."""
    by_clip: list[list[int]] = [[] for _ in range(clips)]
    for c, owner in enumerate(caption_owner):
        by_clip[owner].append(c)
    return by_clip, [[int(o)] for o in caption_owner]

"""assets.mining.false_negatives: the oracle table, false-negative recall/precision, the same-key batch share."""

from math import comb

import numpy as np
import pytest

from assets.mining.false_negatives import (false_negative_metrics, metrics_from_hits, oracle_neighbours,
                                           same_key_batch_share, same_key_hits)


def direct_metrics(ids: np.ndarray, groups: np.ndarray, k: int) -> dict:
    """The definitions, one query at a time with Python sets."""
    recall, recall_ceiling, precision, precision_ceiling = [], [], [], []
    for q, g in enumerate(groups.tolist()):
        if g < 0:
            continue
        same = {j for j, h in enumerate(groups.tolist()) if h == g and j != q}
        found = len(set(ids[q, :k].tolist()) & same)
        precision.append(found / k)
        precision_ceiling.append(min(len(same), k) / k)
        if same:
            recall.append(found / len(same))
            recall_ceiling.append(min(len(same), k) / len(same))
    return {"k": k, "recall": np.mean(recall), "recall_ceiling": np.mean(recall_ceiling),
            "precision": np.mean(precision), "precision_ceiling": np.mean(precision_ceiling),
            "queries": len(recall), "queries_with_key": len(precision)}


def test_oracle_lists_each_clips_same_key_clips_in_seeded_order():
    rng = np.random.default_rng(0)
    groups = rng.integers(-1, 8, 300)  # groups of ~33, some clips without a key
    groups[[0, 1]] = [50, 51]  # two singleton keys
    for k in (5, 60):
        ids = oracle_neighbours(groups, k, seed=3)
        assert ids.shape == (300, k) and ids.dtype == np.int64
        for q, g in enumerate(groups.tolist()):
            row = ids[q]
            real = row[row >= 0]
            assert (row[len(real):] == -1).all()  # padding only at the tail
            same = {j for j, h in enumerate(groups.tolist()) if h == g and j != q} if g >= 0 else set()
            assert len(set(real.tolist())) == len(real) == min(k, len(same))
            assert set(real.tolist()) <= same
            if k >= len(same):
                assert set(real.tolist()) == same  # the whole group when k allows
        np.testing.assert_array_equal(ids, oracle_neighbours(groups, k, seed=3))
    # every clip is the neighbour of as many others as it lists itself: no hubs
    ids = oracle_neighbours(groups, 5, seed=3)
    np.testing.assert_array_equal(np.bincount(ids[ids >= 0], minlength=300), (ids >= 0).sum(axis=1))
    # large groups: another seed, another sample and order
    big = np.repeat(np.arange(3), 100)
    a, b = oracle_neighbours(big, 10, seed=1), oracle_neighbours(big, 10, seed=2)
    assert (a != b).mean() > 0.9
    assert (oracle_neighbours(np.full(4, -1), 3, seed=0) == -1).all()


def test_false_negative_metrics_hand_case():
    # keys: clips 0, 1, 2 share key 0; 3 and 4 share key 1; 5 has a key of its own; 6 has none
    groups = np.array([0, 0, 0, 1, 1, 2, -1])
    ids = np.array([[1, 3], [0, 2], [5, 6], [0, 1], [4, -1], [0, 1], [0, 1]])  # row 4 lists itself, then padding
    m = false_negative_metrics(ids, groups, 2)
    # same-key hits: 1, 2, 0, 0, 0 (5: no others; 6: no key)
    assert m["queries"] == 5 and m["queries_with_key"] == 6
    assert m["recall"] == pytest.approx((1 / 2 + 2 / 2 + 0 + 0 + 0) / 5)
    assert m["recall_ceiling"] == pytest.approx((1 + 1 + 1 + 1 + 1) / 5)
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 2) / 6)
    assert m["precision_ceiling"] == pytest.approx((1 + 1 + 1 + 1 / 2 + 1 / 2 + 0) / 6)
    assert m == pytest.approx(direct_metrics(ids, groups, 2))
    assert false_negative_metrics(ids, groups, 1)["recall"] == pytest.approx((1 / 2 + 1 / 2) / 5)
    # the oracle reaches both ceilings
    o = false_negative_metrics(oracle_neighbours(groups, 2, 0), groups, 2)
    assert (o["recall"], o["precision"]) == pytest.approx((o["recall_ceiling"], o["precision_ceiling"]))


def test_false_negative_metrics_random_case_and_chunked_hits():
    rng = np.random.default_rng(1)
    n, k = 120, 15
    groups = rng.integers(-1, 10, n)
    ids = np.stack([rng.permutation(n)[:k] for _ in range(n)])
    ids[rng.random((n, k)) < 0.1] = -1  # some padding...
    ids = -np.sort(-ids, axis=1)  # ... moved to the tail (the metric does not care where it sits)
    for kk in (1, 7, 15):
        assert false_negative_metrics(ids, groups, kk) == pytest.approx(direct_metrics(ids, groups, kk))
    # a table scored chunk by chunk, as it streams to disk, gives the same numbers
    hits = np.concatenate([same_key_hits(ids[lo:lo + 32], groups, 7, first=lo) for lo in range(0, n, 32)])
    assert metrics_from_hits(hits, groups, 7) == false_negative_metrics(ids, groups, 7)
    with pytest.raises(ValueError, match="query rows"):
        same_key_hits(ids[:10], groups, 7, first=115)
    with pytest.raises(ValueError, match=r"ids: neighbour rows must be in \[0, 120\)"):
        same_key_hits(ids + 200, groups, 7)


def test_same_key_batch_share_hand_case_and_simulation():
    groups = np.array([0, 0, 0, 0, 1, 1, -1, 2])  # n = 8: a key of 4, a key of 2, no key, a singleton
    # batch of 3: a clip with o others meets one unless both other places miss them
    expected = (4 * (1 - comb(7 - 3, 2) / comb(7, 2)) + 2 * (1 - comb(7 - 1, 2) / comb(7, 2))) / 8
    assert same_key_batch_share(groups, 3) == pytest.approx(expected, rel=1e-12)
    assert same_key_batch_share(groups, 1) == 0.0
    assert same_key_batch_share(groups, 8) == pytest.approx(6 / 8)  # the whole set: every shared key is met
    assert same_key_batch_share(np.full(5, -1), 5) == 0.0
    with pytest.raises(ValueError, match="batch=9"):
        same_key_batch_share(groups, 9)
    # simulation: random batches, each clip of the batch counted
    rng = np.random.default_rng(2)
    groups = rng.integers(-1, 40, 1000)
    met, seen = 0, 0
    for _ in range(3000):
        batch = groups[rng.choice(1000, size=64, replace=False)]
        keyed = batch[batch >= 0]
        counts = np.bincount(keyed, minlength=40)
        met += int((counts[keyed] > 1).sum())
        seen += 64
    assert same_key_batch_share(groups, 64) == pytest.approx(met / seen, abs=0.01)

"""Retrieval metrics against a brute-force definition, with ties and several captions per clip."""


import numpy as np
import pytest

from assets.core.recall import caption_matches, query_ranks, recall_metrics


def _brute_rank(row, true):
    """Every ordering of the items consistent with the scores, worst case for the true items."""
    order = sorted(range(len(row)), key=lambda j: (-row[j], j in true))  # ties: wrong items first
    return 1 + min(order.index(t) for t in true)


def test_hand_case_with_ties_and_multiple_captions():
    sim = np.array([[0.9, 0.5, 0.9, 0.1],    # true {2}: item 0 ties with it -> rank 2
                    [0.2, 0.8, 0.3, 0.8],    # true {1, 3}: both 0.8, no wrong item ahead -> 1
                    [0.5, 0.5, 0.5, 0.5]])   # constant row, true {0}: every item ties -> rank 4
    matches = [[2], [1, 3], [0]]
    assert query_ranks(sim, matches).tolist() == [2, 1, 4]
    m = recall_metrics(sim, matches, ks=(1, 2))
    assert m == {"R@1": 1 / 3, "R@2": 2 / 3, "median_rank": 2.0, "queries": 3,
                 "chance_R@1": pytest.approx((1 / 4 + 2 / 4 + 1 / 4) / 3)}


def test_matches_brute_force_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 5, size=(40, 12)).astype(float)  # coarse scores: many ties
    owner = rng.integers(0, 12, size=40)
    ranks = query_ranks(sim, [[o] for o in owner])
    assert ranks.tolist() == [_brute_rank(list(r), {o}) for r, o in zip(sim, owner)]


def test_caption_protocol_a2t_best_of_five_and_t2a_every_caption():
    owner = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]  # 2 clips x 5 captions
    a2t, t2a = caption_matches(owner, 2)
    assert a2t == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] and t2a == [[0]] * 5 + [[1]] * 5
    rng = np.random.default_rng(1)
    sim = rng.random((2, 10))  # audio x captions
    ranks = query_ranks(sim, a2t)
    for a in range(2):
        assert ranks[a] == _brute_rank(list(sim[a]), set(a2t[a]))
    t_ranks = query_ranks(sim.T, t2a)
    assert len(t_ranks) == 10 and all(r in (1, 2) for r in t_ranks)
    assert t_ranks.tolist() == [_brute_rank(list(sim[:, c]), {owner[c]}) for c in range(10)]


def test_bad_matches_are_rejected():
    with pytest.raises(ValueError, match="query 0"):
        query_ranks(np.zeros((1, 3)), [[3]])
    with pytest.raises(ValueError, match="one list of true matches per row"):
        query_ranks(np.zeros((2, 3)), [[0]])

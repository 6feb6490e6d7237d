"""The batch sampler of the pairs mode and the per-epoch positive statistics."""

import numpy as np
import pytest

from assets.training.batch_stats import BatchPositiveStats
from assets.training.mined_batches import MinedPairBatches

N, B = 40, 8
RING = (np.arange(N)[:, None] + np.arange(1, 4)[None, :]) % N  # clip i's neighbours: i+1, i+2, i+3
FAR = (np.arange(N)[:, None] + np.arange(20, 23)[None, :]) % N  # another table's: i+20, i+21, i+22


def _batches(order):
    return order.reshape(-1, B)


def test_partners_come_from_the_chosen_tables_top_k_only():
    sampler = MinedPairBatches(N, B, {"t2t": RING, "i2i": FAR}, ["org", "t2t"], k=2, partner_share=0.5, seed=0)
    assert sampler.anchors == 5  # round(8 / 1.5): 5 anchors, 3 partners
    fallbacks = 0
    for epoch in range(6):
        for batch in _batches(sampler.epoch(epoch)):
            assert len(set(batch.tolist())) == B  # never a clip twice
            for anchor, partner in zip(batch[:3], batch[5:]):
                allowed = {(anchor + 1) % N, (anchor + 2) % N}  # t2t's top-2; i2i and rank 3 are not sources
                if partner not in allowed:
                    fallbacks += 1
                    assert allowed <= set(batch[:5].tolist()) | set(batch[5:].tolist())  # only when both were taken
    assert fallbacks < 5


def test_seeded_deterministic_and_every_clip_an_anchor_equally_often():
    make = (lambda seed: MinedPairBatches(N, B, {"t2t": RING}, ["t2t"], 2, 0.5, seed))
    assert np.array_equal(make(3).epoch(2), make(3).epoch(2))
    assert not np.array_equal(make(3).epoch(2), make(4).epoch(2))
    sampler = make(3)
    counts = np.zeros(N, int)
    for epoch in range(8):  # 8 epochs x 5 steps x 5 anchors = 200 anchor slots = 5 cycles of 40 clips
        for batch in _batches(sampler.epoch(epoch)):
            np.add.at(counts, batch[:5], 1)
    assert counts.sum() == 200 and counts.max() - counts.min() <= 1


def test_no_partners_without_a_partner_share():
    sampler = MinedPairBatches(N, B, {"t2t": RING}, ["t2t"], 2, 0.0, seed=0)
    order = sampler.epoch(0)
    assert sampler.anchors == B and len(order) == N // B * B and len(set(order.tolist())) == len(order)
    with pytest.raises(ValueError, match="partner_share"):
        MinedPairBatches(N, B, {"t2t": RING}, ["t2t"], 2, 1.5, seed=0)


def test_batch_positive_stats_hand_case():
    stats = BatchPositiveStats()
    mask = np.eye(4, dtype=bool)
    mask[0, 1] = True  # audio 0 - image 1
    mask[2, 1] = True  # audio 2 - image 1
    groups = np.array([7, 7, 8, -1])  # clips 0 and 1 share a key; 2 is alone; 3 has none
    stats.add(mask, groups)
    s = stats.summary()
    assert s["mined_positive_share"] == 3 / 4  # rows 0 and 2 (row), 1 (column)
    assert s["mined_positives_per_row"] == 2 / 4
    assert s["same_key_share"] == 2 / 3  # of the 3 keyed clips, 0 and 1 meet a same-key clip
    assert s["mined_precision"] == 1 / 2  # (0, 1) is same-key, (2, 1) is not
    stats.add(np.eye(4, dtype=bool), np.array([1, 2, 3, 4]))
    assert stats.summary()["mined_positive_share"] == 3 / 8
    assert BatchPositiveStats().summary() == {}

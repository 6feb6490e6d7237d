"""Per-rank sampling under DDP and in-place feature gathering, on hand-made cases."""

import numpy as np
import pytest

from assets.training.data import ShardedFeatures, rank_slice


def test_rank_slice_gives_each_rank_whole_disjoint_batches_of_equal_count():
    order = np.arange(23)[::-1]  # 23 clips, batch 4: 5 whole batches, 4 kept for 2 ranks
    r0, r1 = (rank_slice(order, 4, r, 2) for r in (0, 1))
    np.testing.assert_array_equal(r0, [22, 21, 20, 19, 14, 13, 12, 11])
    np.testing.assert_array_equal(r1, [18, 17, 16, 15, 10, 9, 8, 7])
    assert not set(r0) & set(r1)
    np.testing.assert_array_equal(rank_slice(order, 4, 0, 1), order)  # one process: the order itself
    with pytest.raises(ValueError, match="rank 2"):
        rank_slice(order, 4, 2, 2)


def test_sharded_features_gather_rows_across_shards_in_the_requested_order(tmp_path):
    a = np.arange(5 * 3, dtype=np.float16).reshape(5, 3)
    b = 100 + np.arange(4 * 3, dtype=np.float16).reshape(4, 3)
    np.save(tmp_path / "a.npy", a), np.save(tmp_path / "b.npy", b)
    arrays = [np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r")]
    f = ShardedFeatures(arrays, shard=[1, 0, 0, 1], row=[3, 4, 0, 0])  # clip i = arrays[shard[i]][row[i]]
    assert f.shape == (4, 3) and len(f) == 4 and f.dtype == np.float16
    np.testing.assert_array_equal(f[[2, 0, 3, 0]], np.stack([a[0], b[3], b[0], b[3]]))
    np.testing.assert_array_equal(np.asarray(f), np.stack([b[3], a[4], a[0], b[0]]))
    np.testing.assert_array_equal(np.asarray(f.take([1, 3])), np.stack([a[4], b[0]]))

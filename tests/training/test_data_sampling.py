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


def _clips(ids, features, frames=None, jpegs=True, skipped=None):
    from assets.training.data import ClipSet
    n = len(ids)
    return ClipSet(list(ids), ["train"] * n, features, np.arange(n) + 10, frames, None, None, dict(skipped or {}),
                   [[f"{i}.jpg".encode()] for i in ids] if jpegs else None)


def test_concat_clips_joins_datasets_in_order(tmp_path):
    from assets.training.data import concat_clips
    a = np.arange(3 * 2, dtype=np.float16).reshape(3, 2)
    b = 50 + np.arange(2 * 2, dtype=np.float16).reshape(2, 2)
    left = _clips("xyz", a, np.zeros((3, 4, 5), np.float32), skipped={"audio not ok": 1})
    right = _clips("uv", b, np.ones((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match=r"frame embeddings per clip differ"):
        concat_clips([("vgg", left), ("places", right)])
    both = concat_clips([("vgg", left), ("places", right)], frame_embeddings=False)
    assert both.clip_ids == list("xyzuv") and both.frames is None
    np.testing.assert_array_equal(both.features, np.concatenate([a, b]))
    np.testing.assert_array_equal(both.lengths, [10, 11, 12, 10, 11])
    assert both.frame_jpegs[3] == [b"u.jpg"] and both.skipped == {"vgg: audio not ok": 1}
    # one part read in place from its cache: the joined set reads both in place, rows unchanged
    np.save(tmp_path / "b.npy", b)
    sharded = ShardedFeatures([np.load(tmp_path / "b.npy", mmap_mode="r")], [0, 0], [1, 0])
    mixed = concat_clips([("vgg", left), ("places", _clips("uv", sharded))], frame_embeddings=False)
    assert isinstance(mixed.features, ShardedFeatures)
    np.testing.assert_array_equal(mixed.features[[4, 3, 0]], np.stack([b[0], b[1], a[0]]))
    same = concat_clips([("vgg", left), ("vgg2", _clips("pq", a[:2], np.zeros((2, 4, 5), np.float32)))])
    assert same.frames.shape == (5, 4, 5)
    with pytest.raises(ValueError, match="places's audio features are"):
        concat_clips([("vgg", left), ("places", _clips("uv", np.zeros((2, 3), np.float16)))])

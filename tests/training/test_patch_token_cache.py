"""DenseAV's per-shard patch-token cache: what it stores is the tower's output on the cached
frames, it is rebuilt when the frame cache changes, and a batch built from it shows the same
frames as one decoded from pixels."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from assets.caches.fbank_stats import Normaliser
from assets.caches.video_frames import decode_jpeg, encode_jpeg
from assets.training.data import BatchLoader, ClipSet
from assets.training.patch_token_cache import load_patch_tokens
from models.clip_patch_tokens import ImagePatchTokens
from models.tiny_clip import create_tiny_clip

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
TEACHER = {"model_name": "tiny", "weights_sha256": "0" * 64}


@pytest.fixture(scope="module")
def tower():
    return ImagePatchTokens(create_tiny_clip(seed=0).visual, MEAN, STD).eval()


def _frame_shard(path, clips: dict[str, int | None], seed: int = 0) -> dict[str, list[bytes]]:
    """A frame-cache shard: clip -> that many 64 x 64 JPEG frames (None: an error row)."""
    rng = np.random.default_rng(seed)
    jpegs = {c: [encode_jpeg(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 90) for _ in range(n or 0)]
             for c, n in clips.items()}
    pq.write_table(pa.table({"clip_id": list(clips), "status": ["ok" if n else "error" for n in clips.values()],
                             "frames": [jpegs[c] for c in clips]}), path)
    return jpegs


def test_tokens_are_the_towers_output_and_follow_the_frame_cache(tmp_path, tower):
    frames = tmp_path / "frame_cache"
    frames.mkdir()
    a = _frame_shard(frames / "s0.parquet", {"a": 4, "b": 1, "bad": None})
    c = _frame_shard(frames / "s1.parquet", {"c": 2}, seed=1)
    _frame_shard(frames / "s2.parquet", {"unused": 1})
    logs = []
    tokens = load_patch_tokens(["c", "a", "b"], frames, tmp_path / "tokens", tower, TEACHER, torch.device("cpu"), logs.append)
    assert len(logs) == 2 and not any("s2" in line for line in logs)  # a shard none of the clips is in is not built
    assert tokens.count.tolist() == [2, 4, 1]
    with torch.no_grad():
        expected = tower(torch.from_numpy(np.stack([decode_jpeg(j) for j in a["a"]]))).numpy()
    got = tokens.gather(np.array([1, 1, 1, 1]), np.arange(4)).astype(np.float32)
    assert got.shape == (4, tower.width, *tower.grid)
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2)  # float16 storage
    with torch.no_grad():
        np.testing.assert_allclose(tokens.gather(np.array([0]), np.array([1])).astype(np.float32),
                                   tower(torch.from_numpy(np.stack([decode_jpeg(c["c"][1])]))).numpy(), rtol=1e-2, atol=1e-2)
    again = []
    load_patch_tokens(["a"], frames, tmp_path / "tokens", tower, TEACHER, torch.device("cpu"), again.append)
    assert again == []  # cached
    os.utime(frames / "s0.parquet", ns=(1, 1))  # a rebuilt frame cache shard
    load_patch_tokens(["a"], frames, tmp_path / "tokens", tower, TEACHER, torch.device("cpu"), again.append)
    assert len(again) == 1 and "s0.parquet" in again[0]
    other = []
    load_patch_tokens(["a"], frames, tmp_path / "tokens", tower, {**TEACHER, "weights_sha256": "1" * 64},
                      torch.device("cpu"), other.append)
    assert len(other) == 1 and len(list((tmp_path / "tokens").iterdir())) == 2  # another teacher, its own files
    with pytest.raises(ValueError, match="1 clips have no cached frames.*first: bad"):
        load_patch_tokens(["a", "bad"], frames, tmp_path / "tokens", tower, TEACHER, torch.device("cpu"), print)


def test_a_batch_from_the_cache_shows_the_frames_a_pixel_batch_shows(tmp_path, tower):
    frames = tmp_path / "frame_cache"
    frames.mkdir()
    jpegs = _frame_shard(frames / "s0.parquet", {f"k{i}": 1 + i % 4 for i in range(10)})
    ids = list(jpegs)
    tokens = load_patch_tokens(ids, frames, tmp_path / "tokens", tower, TEACHER, torch.device("cpu"), print)
    clips = ClipSet(ids, ["train"] * 10, np.zeros((10, 8, 4), np.float16), np.full(10, 8), None, None, None, {},
                    [jpegs[c] for c in ids])
    cached = ClipSet(**{**clips.__dict__, "patch_tokens": tokens})
    order = np.random.default_rng(0).permutation(10)
    plain = Normaliser({"mean": 0.0, "std": 1.0})
    pixel_batches = list(BatchLoader(clips, order, 5, plain, caption_seed=3, workers=0, frame_pick="random"))
    token_batches = list(BatchLoader(cached, order, 5, plain, caption_seed=3, workers=0, frame_pick="random"))
    for p, t in zip(pixel_batches, token_batches):
        assert p.image_tokens is None and t.pixels is None
        with torch.no_grad():
            torch.testing.assert_close(t.image_tokens, tower(p.pixels), rtol=1e-2, atol=1e-2)
    sub = cached.subset(np.array([3, 0]))
    assert sub.patch_tokens.count.tolist() == [4, 1]

"""CLIP embeddings: caption/prompt choice, batched frame embedding, the store's round trip and checks."""

import io

import numpy as np
import pytest
from PIL import Image

from assets.mining.embedding_store import embedding_problems, error_row, ok_row, read_embeddings, write_embeddings
from assets.mining.teacher_embedding import clip_texts, decode_frames, embed_frame_lists


def _jpeg(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_clip_texts_captions_then_label_prompts():
    assert clip_texts({"captions": ["a dog barks", " ", "rain"], "label_names": ["Dog"]}, "a video of {label}", "each") \
        == ["a dog barks", "rain"]
    m = {"captions": [], "labels": ["/m/09x0r", "/m/04rlf"], "label_names": ["Speech", "Music"]}
    assert clip_texts(m, "a video of {label}", "each") == ["a video of Speech", "a video of Music"]
    assert clip_texts(m, "the sound of {label}", "joined") == ["the sound of Speech, Music"]
    assert clip_texts({"captions": [], "labels": ["/m/09x0r"], "label_names": []}, "{label}", "each") == ["/m/09x0r"]
    assert clip_texts({"captions": None, "labels": [], "label_names": []}, "{label}", "each") == []
    with pytest.raises(ValueError, match="labels"):
        clip_texts(m, "{label}", "some")


@pytest.mark.parametrize("batch_frames", [1, 3, 4, 100])
def test_embed_frame_lists_batches_keep_clip_order_and_isolate_bad_clips(batch_frames):
    lists = [[_jpeg(10), _jpeg(20)], None, [_jpeg(30)], [b"not a jpeg"], [_jpeg(40), _jpeg(50), _jpeg(60)], []]
    calls = []

    def encode(frames: np.ndarray) -> np.ndarray:  # the frame's mean grey value, as a 1-d "embedding"
        calls.append(len(frames))
        return frames.reshape(len(frames), -1).mean(axis=1, keepdims=True).astype(np.float32)

    out = embed_frame_lists(lists, encode, batch_frames)
    assert out[1] is None and out[5] is None
    assert "cannot decode cached frames" in out[3]
    for i, expected in ((0, [10, 20]), (2, [30]), (4, [40, 50, 60])):
        np.testing.assert_allclose(out[i][:, 0], expected, atol=1.5)  # JPEG of a flat grey: within a level
    assert sum(calls) == 6 and all(c <= max(batch_frames, 3) for c in calls)  # a 3-frame clip is never split


def test_decode_frames_rejects_mixed_sizes():
    assert decode_frames([_jpeg(5), _jpeg(6)]).shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="different sizes"):
        decode_frames([_jpeg(5, 8), _jpeg(5, 16)])


def test_store_round_trip_and_unit_norm_check(tmp_path):
    v = np.array([[0.6, 0.8], [1.0, 0.0]], np.float32)
    rows = [ok_row("a", "train", v, ["x", "y"]), error_row("b", "train", "missing", "b.mp4: no such file"),
            ok_row("c", "test", np.array([[0.5, 0.5]], np.float32)), ok_row("d", "test", np.array([[np.nan, 1]], np.float32))]
    path = tmp_path / "s00000.parquet"
    write_embeddings(rows, path, 2, {"model_name": "m"}, {}, "fp")
    table, vectors = read_embeddings(path)
    assert table.column("clip_id").to_pylist() == ["a", "b", "c", "d"]
    assert table.column("texts").to_pylist()[0] == ["x", "y"] and table.column("count").to_pylist() == [2, 0, 1, 1]
    np.testing.assert_array_equal(vectors[0], v)
    assert vectors[1] is None
    problems = embedding_problems(path)
    assert problems[0].startswith("c: norms [0.7071] are not 1")
    assert problems[1] == "d: non-finite values" and len(problems) == 2

"""assets.mining.table_set with semantic keys: the oracle table, the false-negative metadata, the fingerprint."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from assets.ingest.semantic_keys import group_ids
from assets.mining.embedding_store import ok_row, write_embeddings
from assets.mining.false_negatives import false_negative_metrics, oracle_neighbours, same_key_batch_share
from assets.mining.neighbor_search import read_table
from assets.mining.neighbor_tables import table_problems
from assets.mining.table_set import TableSetParams, build_table_set, read_summary
from tests.mining.test_neighbor_search import random_unit

SHARDS, PER_SHARD, DIM = 3, 50, 16
NEW_FIELDS = ("key_false_negatives", "same_key_in_batch_of_128", "same_key_in_batch_of_64", "distinct_keys",
              "singleton_keys", "clips_without_key")


@pytest.fixture
def shards(tmp_path):
    """Three shards of text and image embeddings (4 frames a clip) of 150 training clips; the
    keys: 10 classes, the class's label prompt as text (exact ties), two singletons, two unkeyed."""
    rng = np.random.default_rng(0)
    prompts = random_unit(10, DIM, 1)
    text_paths, image_paths, keys = [], [], {}
    for s in range(SHARDS):
        texts, images = [], []
        for i in range(PER_SHARD):
            clip, label = f"c{s}_{i:03d}", int(rng.integers(10))
            keys[clip] = f"class{label}"
            texts.append(ok_row(clip, "train", prompts[label][None], [f"a video of class {label}"]))
            images.append(ok_row(clip, "train", random_unit(4, DIM, 100 * s + i)))
        text_paths.append(tmp_path / "text" / f"s{s:05d}.parquet")
        image_paths.append(tmp_path / "image" / f"s{s:05d}.parquet")
        write_embeddings(texts, text_paths[-1], DIM, {}, {}, f"text{s}")
        write_embeddings(images, image_paths[-1], DIM, {}, {}, f"image{s}")
    keys |= {"c0_000": "alone", "c1_000": "alone too"}
    del keys["c2_000"], keys["c2_001"]
    return text_paths, image_paths, keys, tmp_path / "neighbor_tables"


def _build(shards, params, keys):
    text_paths, image_paths, _, root = shards
    return build_table_set("demo", text_paths, image_paths, root, params, log=lambda _: None, keys=keys)


def test_keys_give_an_oracle_table_and_false_negative_metadata(shards):
    keys = shards[2]
    params = TableSetParams(k_max=15, batch_trials=5)
    out, skipped = _build(shards, params, keys)
    assert not skipped
    summary = read_summary(out)
    clip_ids = pq.read_table(out / "clips.parquet").column("clip_id").to_pylist()
    groups = group_ids(clip_ids, keys)
    assert summary["tables"] == ["org", "t2t", "t2i", "i2t", "i2i", "oracle"]
    q, ids, scores = read_table(out / "oracle.parquet")
    np.testing.assert_array_equal(q, np.arange(150))
    np.testing.assert_array_equal(ids, oracle_neighbours(groups, 15, params.seed))
    assert (scores == (ids >= 0)).all() and (ids[clip_ids.index("c0_000")] == -1).all()
    assert table_problems(out / "oracle.parquet", 150, self_excluded=True) == {"ids": [], "order": []}
    meta = summary["metadata"]
    assert all(f in meta for f in NEW_FIELDS)
    assert list(meta).index("key_false_negatives") == list(meta).index("similarity_curve") + 1
    table = meta["key_false_negatives"]
    assert "| table | R@10 | R@10 ceiling | P@10 | P@10 ceiling | queries |" in table
    assert [line.split(" | ")[0] for line in table.splitlines()[-5:]] == ["| t2t", "| t2i", "| i2t", "| i2i", "| oracle"]
    assert meta["same_key_in_batch_of_128"] == round(same_key_batch_share(groups, 128), 4)
    assert meta["same_key_in_batch_of_64"] == round(same_key_batch_share(groups, 64), 4)
    assert (meta["distinct_keys"], meta["singleton_keys"], meta["clips_without_key"]) == (12, 2, 2)
    rows = {line.split(" | ")[0][2:]: [float(v) for v in line.strip(" |").split(" | ")[1:]] for line in table.splitlines()[-5:]}
    for name in ("t2t", "i2i", "oracle"):
        m = false_negative_metrics(read_table(out / f"{name}.parquet")[1], groups, 10)
        assert rows[name] == [round(m[f], 4) for f in ("recall", "recall_ceiling", "precision", "precision_ceiling")] \
            + [m["queries"]]
    # t2t lists the clips with the same class prompt (a tie at 1.0); i2i's random pictures do not
    assert rows["t2t"][0] > 0.5 > rows["i2i"][0] and rows["oracle"][0] == rows["oracle"][1]


def test_the_keys_are_part_of_the_fingerprint(shards):
    keys = shards[2]
    params = TableSetParams(k_max=5, batch_trials=2)
    first, _ = _build(shards, params, keys)
    assert _build(shards, params, dict(reversed(list(keys.items())))) == (first, True)  # same content: up to date
    changed = keys | {"c0_001": "another"}
    second, skipped = _build(shards, params, changed)
    assert not skipped and second != first
    assert read_summary(second)["metadata"]["singleton_keys"] == 3


def test_without_keys_nothing_changes_and_asking_for_the_oracle_fails(shards):
    out, _ = _build(shards, TableSetParams(k_max=5, batch_trials=2), None)
    summary = read_summary(out)
    assert summary["tables"] == ["org", "t2t", "t2i", "i2t", "i2i"]
    assert not any(f in summary["metadata"] for f in NEW_FIELDS) and not (out / "oracle.parquet").exists()
    with pytest.raises(ValueError, match=r"demo neighbor_tables config: tables=\[.org., .t2t., .oracle.\]: table .oracle. needs the clips. ground-truth semantic keys"):
        _build(shards, TableSetParams(k_max=5, tables=("org", "t2t", "oracle")), None)

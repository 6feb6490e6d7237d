"""assets.mining.neighbor_tables: the five tables on disk equal a brute-force numpy top-k, with their
diagnostics; with semantic keys, the oracle table and every table's false-negative scores."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.mining.embedding_store import pool
from assets.mining.false_negatives import false_negative_metrics, oracle_neighbours
from assets.mining.neighbor_search import (TABLE_SCHEMA, SearchParams, brute_force_topk, read_table,
                                           same_neighbour_batch_fraction, tie_keys, top_k_similarity_curve, write_table)
from assets.mining.neighbor_tables import (MiningParams, key_tie_seed, mine_tables, table_problems, tables_for,
                                           zero_shot_r1)
from tests.mining.test_neighbor_search import clustered, random_unit, unit


def _pairs(data: str, n: int = 600, d: int = 32):
    if data == "random":
        return random_unit(n, d, 0), random_unit(n, d, 1)
    images = clustered(n, d, 12, 0.3, 2)
    texts = unit(images + 0.5 / np.sqrt(d) * np.random.default_rng(3).standard_normal((n, d)))
    texts[::7] = texts[0]  # many clips share one text (a label prompt): ties at score 1.0
    return images, unit(texts)


@pytest.mark.parametrize("data", ["random", "clustered"])
def test_tables_equal_brute_force_and_skip_self(data, tmp_path):
    images, texts = _pairs(data)
    p = MiningParams(search=SearchParams(k=20, chunk_rows=128), batch_trials=20)
    out = mine_tables(images, texts, tmp_path, p, log=lambda _: None)
    assert list(out) == ["org", "t2t", "t2i", "i2t", "i2i"]
    vectors = {"t": texts, "i": images}
    modality = {"t": "text", "i": "image"}
    n = len(texts)
    for name in ("t2t", "t2i", "i2t", "i2i"):
        q, ids, scores = read_table(tmp_path / f"{name}.parquet")
        bs, bi = brute_force_topk(vectors[name[0]], vectors[name[2]], 20, exclude=np.arange(n),
                                  tie_seed=key_tie_seed(0, modality[name[2]]))
        np.testing.assert_array_equal(q, np.arange(n))
        np.testing.assert_array_equal(ids, bi)  # ties (identical texts) in the seeded order, like the reference
        np.testing.assert_allclose(scores, bs, rtol=0, atol=5e-4)  # stored as float16: half an ulp near 1
        assert not (ids == np.arange(n)[:, None]).any()
        assert table_problems(tmp_path / f"{name}.parquet", n, self_excluded=True) == {"ids": [], "order": []}
        # diagnostics equal the direct computations on the reference
        s = out[name]
        assert s.k == 20 and s.rows == n * 20 and s.recall is None
        direct = top_k_similarity_curve(bs, [1, 2, 5, 10, 20])
        assert s.curve.keys() == direct.keys()
        np.testing.assert_allclose(list(s.curve.values()), list(direct.values()), atol=1e-6)
        for b in (32, 64, 128, 256):
            assert s.batch_fraction[b] == same_neighbour_batch_fraction(bi, 10, b, 20, 0)
        for row, (e_ids, e_scores) in s.examples.items():
            np.testing.assert_array_equal(e_ids, bi[row])
    if data == "clustered":  # the shared text: its t2t neighbours start with the other copies, in the seeded order
        _, ids, scores = read_table(tmp_path / "t2t.parquet")
        copies = np.arange(7, n, 7)
        order = copies[np.argsort(tie_keys(np.array([0]), copies[None], key_tie_seed(0, "text"))[0])]
        np.testing.assert_array_equal(ids[0, :20], order[:20])
        assert (scores[0, :20] == 1.0).all() and not np.array_equal(ids[0, :5], [7, 14, 21, 28, 35])
    q, ids, scores = read_table(tmp_path / "org.parquet")
    np.testing.assert_array_equal(ids[:, 0], np.arange(n))
    direct = np.einsum("nd,nd->n", images.astype(np.float64), texts.astype(np.float64))
    np.testing.assert_allclose(scores[:, 0], direct, atol=1e-3)
    assert table_problems(tmp_path / "org.parquet", n, self_excluded=False) == {"ids": [], "order": []}


def test_text_only_dataset_gets_org_and_t2t(tmp_path):
    _, texts = _pairs("random", n=50)
    out = mine_tables(None, texts, tmp_path, MiningParams(search=SearchParams(k=100)), log=lambda _: None)
    assert list(out) == ["org", "t2t"]
    assert out["t2t"].k == 49  # k_max is capped at the other clips
    assert np.isnan(read_table(tmp_path / "org.parquet")[2]).all()


def test_approximate_index_reports_recall_against_exact(tmp_path):
    images, texts = _pairs("clustered", n=800)
    p = MiningParams(search=SearchParams(k=10, index="hnsw", ef_search=8, hnsw_m=4), recall_queries=200)
    out = mine_tables(images, texts, tmp_path, p, tables=("i2i",), log=lambda _: None)
    _, ids, _ = read_table(tmp_path / "i2i.parquet")
    _, exact = brute_force_topk(images, images, 10, exclude=np.arange(800))
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(800, size=200, replace=False))  # the same seeded sample as mine_cross_table
    hits = [len(set(a) & set(b)) for a, b in zip(ids[sample], exact[sample])]
    assert out["i2i"].recall == pytest.approx(sum(hits) / (200 * 10))
    assert 0.3 < out["i2i"].recall < 1.0  # a deliberately weak HNSW: recall is measured, not assumed


def test_approximate_recall_compares_seeded_ties_with_seeded_ties(tmp_path):
    """An IVF index probing every list finds exactly what exact search finds, ties included: its
    measured recall is 1 only because the exact reference breaks ties in the same seeded order."""
    images, texts = _pairs("clustered", n=800)
    images[::3] = images[0]  # 267 identical images: i2i's top 10 are all ties
    p = MiningParams(search=SearchParams(k=10, index="ivf", nlist=8, nprobe=8), recall_queries=300)
    out = mine_tables(images, texts, tmp_path, p, tables=("i2i",), log=lambda _: None)
    assert out["i2i"].recall == 1.0
    _, ids, _ = read_table(tmp_path / "i2i.parquet")
    _, by_row = brute_force_topk(images, images, 10, exclude=np.arange(800))
    assert (ids[::3] != by_row[::3]).mean() > 0.5  # against a row-ordered reference it would fall far short


def test_keys_add_the_oracle_table_and_false_negative_scores(tmp_path):
    images, texts = _pairs("clustered", n=300)
    groups = np.random.default_rng(4).integers(-1, 12, 300)
    groups[:3] = [40, 41, 42]  # singletons
    p = MiningParams(search=SearchParams(k=20, chunk_rows=64), batch_trials=5)
    out = mine_tables(images, texts, tmp_path, p, groups=groups, log=lambda _: None)
    assert list(out) == ["org", "t2t", "t2i", "i2t", "i2i", "oracle"]
    q, ids, scores = read_table(tmp_path / "oracle.parquet")
    np.testing.assert_array_equal(ids, oracle_neighbours(groups, 20, 0))
    assert (scores == (ids >= 0)).all() and (ids[:3] == -1).all()  # 1.0 real, 0.0 padding; singletons all padding
    assert table_problems(tmp_path / "oracle.parquet", 300, self_excluded=True) == {"ids": [], "order": []}
    for name, s in out.items():
        if name == "org":
            assert s.key_metrics == {}
            continue
        assert list(s.key_metrics) == [10]  # KEY_KS within k = 20
        _, table_ids, _ = read_table(tmp_path / f"{name}.parquet")
        assert s.key_metrics[10] == pytest.approx(false_negative_metrics(table_ids, groups, 10))
    oracle = out["oracle"].key_metrics[10]
    assert oracle["recall"] == pytest.approx(oracle["recall_ceiling"])
    assert out["t2t"].key_metrics[10]["recall"] < oracle["recall"]
    # without keys: no oracle, unless asked for
    assert "oracle" not in mine_tables(images, texts, tmp_path / "none", p, log=lambda _: None)
    with pytest.raises(ValueError, match="table 'oracle' needs the clips' ground-truth semantic keys"):
        mine_tables(images, texts, tmp_path / "none", p, tables=("org", "oracle"), log=lambda _: None)


def test_tables_for_picks_what_the_data_allows():
    assert tables_for((), True, True) == ["org", "t2t", "t2i", "i2t", "i2i", "oracle"]
    assert tables_for((), False, False) == ["org", "t2t"]
    assert tables_for(("oracle", "t2t", "i2i"), False, True) == ["t2t", "oracle"]  # audio-only: no image tables
    with pytest.raises(ValueError, match=r"unknown table\(s\) \['t2x'\]"):
        tables_for(("t2x",), True, True)


def _write(path, ids, scores):
    write_table(path, [(0, np.asarray(scores, np.float32), np.asarray(ids, np.int64))])


def test_table_problems_finds_bad_ids_self_matches_and_disorder(tmp_path):
    _write(tmp_path / "good.parquet", [[1, 2], [2, 0], [0, 1]], [[0.9, 0.5], [0.8, 0.8], [0.7, -0.1]])
    assert table_problems(tmp_path / "good.parquet", 3, True) == {"ids": [], "order": []}
    _write(tmp_path / "bad.parquet", [[1, 3], [1, 0], [0, 1]], [[0.9, 0.5], [0.8, 0.8], [0.1, 0.7]])
    problems = table_problems(tmp_path / "bad.parquet", 3, True)
    assert problems["ids"] == [f"{tmp_path / 'bad.parquet'}: query 0: neighbour ids outside [0, 3)",
                               f"{tmp_path / 'bad.parquet'}: query 1: lists itself"]
    assert problems["order"] == [f"{tmp_path / 'bad.parquet'}: query 2: scores not sorted descending"]
    _write(tmp_path / "org.parquet", [[0], [2], [2]], [[0.5], [0.5], [0.5]])
    assert table_problems(tmp_path / "org.parquet", 3, False)["ids"] == [
        f"{tmp_path / 'org.parquet'}: query 1: is not its own pair"]
    # -1 pads a row's tail (fewer neighbours than k); anywhere else it is a bad id
    _write(tmp_path / "padded.parquet", [[1, -1], [-1, -1], [-1, 1]], [[0.9, 0.0], [0.0, 0.0], [0.0, 1.0]])
    problems = table_problems(tmp_path / "padded.parquet", 3, True)
    assert problems["ids"] == [f"{tmp_path / 'padded.parquet'}: query 2: neighbour ids outside [0, 3)"]
    float32_scores = TABLE_SCHEMA.set(3, TABLE_SCHEMA.field("score").with_type(pa.float32()))
    pq.write_table(pq.read_table(tmp_path / "good.parquet").cast(float32_scores), tmp_path / "other.parquet")
    assert "not the neighbour-table schema" in table_problems(tmp_path / "other.parquet", 3, True)["ids"][0]


def test_zero_shot_r1_hand_case():
    e = np.eye(3, dtype=np.float32)
    images = unit(np.array([[1, 0.1, 0], [0.1, 1, 0], [1, 0, 0.2]]))  # clip 2's image looks like clip 0's text
    z = zero_shot_r1(images, e, ["a dog", "a cat", "a bird"])
    assert z == {"n": 3, "i2t_R@1": 2 / 3, "t2i_R@1": 1.0, "chance": 1 / 3}  # text 2 -> image 2 (0.196 vs 0)
    # clips 0 and 2 share a label prompt: retrieving either counts (zero-shot classification)
    z = zero_shot_r1(images, e, ["a dog", "a cat", "a dog"])
    assert z["i2t_R@1"] == 1.0 and z["chance"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3) / 3)
    # a tie with a wrong text is a miss (assets.core.recall's rule), even when the true text is the lower row
    tied = unit(np.array([[1.0, 1.0, 0], [0, 1, 0], [0, 0, 1]]))  # image 0: as close to text 1 as to text 0
    z = zero_shot_r1(tied, e, ["a dog", "a cat", "a bird"])
    assert (z["i2t_R@1"], z["t2i_R@1"]) == (2 / 3, 1.0)  # text 1 -> image 1 (1.0 vs 0.707)
    # ... and no miss when the tied text is the same text (another clip with the same label prompt)
    z = zero_shot_r1(tied, e, ["a dog", "a dog", "a bird"])
    assert z["i2t_R@1"] == 1.0


def test_pooling_hand_cases():
    v = unit(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]))
    np.testing.assert_array_equal(pool(v, "middle"), v[2])  # L=4 -> frame 2 (6.7 s of 0/3.3/6.7/10)
    np.testing.assert_array_equal(pool(v[:3], "middle"), v[1])
    np.testing.assert_array_equal(pool(v, "first"), v[0])
    m = v.astype(np.float64).mean(0)
    np.testing.assert_allclose(pool(v, "mean"), m / np.linalg.norm(m), atol=1e-7)
    np.testing.assert_array_equal(pool(np.array([[1.0, 0], [-1.0, 0]], np.float32), "mean"), [1.0, 0])
    with pytest.raises(ValueError, match="pooling"):
        pool(v, "max")

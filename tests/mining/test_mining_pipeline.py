"""Teacher -> embeddings -> neighbour tables materialised with Dagster on the tiny SynthAV."""

import json

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from assets.core.cache_layout import CacheLayout
from assets.ingest.dataset_config import load_dataset_configs
from assets.ingest.semantic_keys import group_ids, load_semantic_keys
from assets.mining.embedding_store import pool, read_embeddings
from assets.mining.false_negatives import oracle_neighbours
from assets.mining.neighbor_search import brute_force_topk, read_table
from assets.mining.neighbor_tables import key_tie_seed
from assets.mining.teacher_embedding import clip_texts, decode_frames
from assets.mining.tiny_teacher import load_pairs, recall_from_similarity
from pipelines.resources import ClipTeacherResource

PLACES, VGG, CAPS = "synthav_places", "synthav_vggsound", "synthav_audiocaps"
TEACHER_FIT = {"ops": {"teacher__tiny_clip": {"config": {"epochs": 2, "batch_size": 8, "warmup_steps": 1}}}}  # as conftest


def _meta(result, key: list[str]) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def _checks(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def mined(mined_caches):
    return mined_caches


def test_teacher_fits_reports_recall_and_is_skipped_when_unchanged(mined):
    defs, instance, cache, teacher_run, _ = mined
    m = _meta(teacher_run, ["teacher", "tiny_clip"])
    weights, config = cache.tiny_teacher_paths()
    assert weights.exists() and json.loads(config.read_text())["embed_dim"] == 128
    assert m["train_pairs"] >= 8 and m["eval_pairs"] >= 3 and 0 <= m["i2t_R@1"] <= 1
    # the reported recall is the saved teacher's own on the held-out pairs, recomputed here
    keys = sorted(instance.get_dynamic_partitions(f"{PLACES}_shards"))
    images, captions, _ = load_pairs([cache.dataset_dir(PLACES) / "frame_cache" / f"{k}.parquet" for k in keys],
                                     [cache.shard_path(PLACES, k) for k in keys], ["val", "test"])
    teacher = ClipTeacherResource.from_env(cache).load()
    r = recall_from_similarity(teacher.encode_images(images) @ teacher.encode_texts(captions).T)
    assert (r["i2t_R@1"], r["t2i_R@1"]) == pytest.approx((m["i2t_R@1"], m["t2i_R@1"]), abs=1e-4)
    again = defs.resolve_job_def("tiny_teacher_job").execute_in_process(instance=instance, run_config=TEACHER_FIT)
    m2 = _meta(again, ["teacher", "tiny_clip"])
    assert m2["skipped_up_to_date"] is True and m2["weights_sha256"] == m["weights_sha256"]


def test_image_embeddings_are_the_teachers_embeddings_of_the_cached_frames(mined):
    _, instance, cache, _, _ = mined
    teacher = ClipTeacherResource.from_env(cache).load()
    for name in (PLACES, VGG):
        key = instance.get_dynamic_partitions(f"{name}_shards")[0]
        frames = pq.read_table(cache.dataset_dir(name) / "frame_cache" / f"{key}.parquet")
        table, vectors = read_embeddings(cache.dataset_dir(name) / "clip_image_embeddings" / f"{key}.parquet")
        assert table.column("clip_id").to_pylist() == frames.column("clip_id").to_pylist()
        for row, (status, jpegs) in enumerate(zip(frames.column("status").to_pylist(), frames.column("frames").to_pylist())):
            if status != "ok":
                assert table.column("status")[row].as_py() == "error" and vectors[row] is None
                assert table.column("error_kind")[row].as_py() == frames.column("error_kind")[row].as_py()
                continue
            assert vectors[row].shape == (len(jpegs), 128)
            np.testing.assert_allclose(vectors[row], teacher.encode_images(decode_frames(jpegs)), atol=1e-5)


def test_text_embeddings_use_captions_or_label_prompts(mined):
    _, instance, cache, _, _ = mined
    teacher = ClipTeacherResource.from_env(cache).load()
    for name in (PLACES, VGG, CAPS):
        for key in instance.get_dynamic_partitions(f"{name}_shards"):
            members = {m["clip_id"]: m for m in pq.read_table(cache.shard_path(name, key)).to_pylist()}
            table, vectors = read_embeddings(cache.dataset_dir(name) / "clip_text_embeddings" / f"{key}.parquet")
            for clip_id, texts, v in zip(table.column("clip_id").to_pylist(), table.column("texts").to_pylist(), vectors):
                assert texts == clip_texts(members[clip_id], "a video of {label}", "each")
                if name == VGG:
                    assert texts == [f"a video of {members[clip_id]['label_names'][0]}"]
                if name == CAPS and members[clip_id]["split"] == "test":
                    assert len(texts) == 5
                np.testing.assert_allclose(v, teacher.encode_texts(texts), atol=1e-5)


def test_neighbor_tables_equal_brute_force_over_the_stored_embeddings(mined, tiny_configs):
    _, instance, cache, _, runs = mined
    datasets = {ds.name: ds for ds in load_dataset_configs(tiny_configs)}
    for name in (PLACES, VGG, CAPS):
        assert all(_checks(runs[name]).values()) and len(_checks(runs[name])) == 2
        out = cache.current_neighbor_tables(name)
        clips = pq.read_table(out / "clips.parquet").to_pylist()
        images, texts = {}, {}
        for key in instance.get_dynamic_partitions(f"{name}_shards"):
            t, tv = read_embeddings(cache.dataset_dir(name) / "clip_text_embeddings" / f"{key}.parquet")
            texts |= {c: pool(v, "mean") for c, v in zip(t.column("clip_id").to_pylist(), tv) if v is not None}
            if name != CAPS:
                t, iv = read_embeddings(cache.dataset_dir(name) / "clip_image_embeddings" / f"{key}.parquet")
                images |= {c: pool(v, "middle") for c, v in zip(t.column("clip_id").to_pylist(), iv) if v is not None}
        ids = [c["clip_id"] for c in clips]
        assert [c["row"] for c in clips] == list(range(len(clips))) and {c["split"] for c in clips} == {"train"}
        expected_ids = sorted(c for c in texts if (name == CAPS or c in images))
        train = {c["clip_id"] for c in clips}
        assert ids == [c for c in expected_ids if c in train]  # shards in order, clip ids sorted within
        T = np.stack([texts[c] for c in ids])
        vectors = {"t": T, "i": np.stack([images[c] for c in ids]) if images else None}
        tables = ["t2t"] if name == CAPS else ["t2t", "t2i", "i2t", "i2i"]
        assert sorted(p.stem for p in out.glob("*.parquet")) == sorted(["clips", "org", *tables, "oracle"])
        for table in tables:
            _, got, scores = read_table(out / f"{table}.parquet")
            ref_s, ref = brute_force_topk(vectors[table[0]], vectors[table[2]], 5, exclude=np.arange(len(ids)),
                                          tie_seed=key_tie_seed(0, {"t": "text", "i": "image"}[table[2]]))
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_allclose(scores, ref_s, atol=1e-3)
        # SynthAV declares its generator's semantic keys: the oracle table and the false-negative scores
        groups = group_ids(ids, load_semantic_keys(datasets[name]))
        np.testing.assert_array_equal(read_table(out / "oracle.parquet")[1], oracle_neighbours(groups, 5, 0))
        m = _meta(runs[name], [name, "neighbor_tables"])
        assert m["clips"] == len(ids) and m["k"] == 5
        assert m["distinct_keys"] == len(set(groups[groups >= 0].tolist())) and m["clips_without_key"] == 0
        assert "| oracle |" in m["key_false_negatives"] and "R@5" in m["key_false_negatives"]  # k_max 5 < 10


def test_unchanged_inputs_skip_and_an_interrupted_rebuild_keeps_the_tables_in_use(mined, monkeypatch):
    defs, instance, cache, _, _ = mined
    job = defs.resolve_job_def(f"{PLACES}_neighbors_job")
    config = {"ops": {f"{PLACES}__neighbor_tables": {"config": {"k_max": 5, "splits": ["train"]}}}}
    result = job.execute_in_process(instance=instance, run_config=config)
    assert _meta(result, [PLACES, "neighbor_tables"])["skipped_up_to_date"] is True
    before = cache.current_neighbor_tables(PLACES)
    t2t = read_table(before / "t2t.parquet")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-build")

    monkeypatch.setattr("assets.mining.table_set.mine_tables", crash)
    changed = {"ops": {f"{PLACES}__neighbor_tables": {"config": {"k_max": 3, "splits": ["train"]}}}}
    with pytest.raises(KeyboardInterrupt):
        job.execute_in_process(instance=instance, run_config=changed, raise_on_error=True)
    assert cache.current_neighbor_tables(PLACES) == before
    np.testing.assert_array_equal(read_table(before / "t2t.parquet")[1], t2t[1])


def test_missing_tiny_teacher_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPKT_TEACHER", "tiny")
    with pytest.raises(FileNotFoundError, match="materialising asset teacher/tiny_clip"):
        ClipTeacherResource.from_env(CacheLayout(tmp_path)).load()

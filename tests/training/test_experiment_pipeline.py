"""Tiny experiments materialised end to end with Dagster on the tiny SynthAV: audio_encoder ->
retrieval_metrics -> ablation_report, for the audio ViT (InfoNCE two seeds, mined positives in
the mask reading, Multiframe Match), DaveNet on spoken captions (InfoNCE, and seed 000's pairs with
the oracle table), audio-text fine-tuning from a checkpoint, and DenseAV (one head, scored for
localisation; two heads on VGGSound + Places speech, with the head split), and a DDP run launched
through Dagster Pipes (torchrun, 2 processes on the CPU) against its single-process twin."""

import json
from dataclasses import replace

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from assets.caches.fbank_stats import load_fbank_stats
from assets.ingest.dataset_config import load_datasets
from assets.training.dense_evaluation import DENSE_SIMILARITY, dense_features
from assets.training.experiments import load_all_experiments
from assets.training.head_split import head_split, paired_head_scores
from assets.training.runs import build_encoder, evaluation_clips, normaliser, read_metrics, run_dir
from assets.training.trainer import FINAL_WEIGHTS, load_encoder_weights
from pipelines.definitions import build_definitions
from pipelines.resources import ClipTeacherResource

TINY_VIT = {"kind": "audio_vit", "patch": [32, 32], "stride": [32, 32], "layers": 1}
COMMON = {"optim": {"optimizer": "adamw", "lr_weights": 1e-3, "lr_biases": 1e-3, "warmup_epochs": 1},
          "epochs": 2, "batch_size": 8, "train": {"splits": ["train"]}, "eval": {"split": "test", "val_size": 4}}
DENSE_LOSS = {"kind": "denseav", "heads": 1, "code_dim": 16, "regularisers": {"samples": 4}}
DENSE = {"time_pools": 1, "image_pool": 1, "aligner_warmup_steps": 2}
EXPERIMENTS = {
    "t_base": {"dataset": "synthav_vggsound", "model": TINY_VIT, "seeds": [0, 1]},
    "t_mined": {"dataset": "synthav_vggsound", "model": TINY_VIT,
                "loss": {"kind": "mined", "mode": "mask", "tables": ["org", "t2t", "i2t"], "k": 3}},
    "t_pairs": {"dataset": "synthav_places", "model": {"kind": "davenet", "width": 0.0625, "trim_padding": True},
                "loss": {"kind": "mined", "mode": "pairs", "tables": ["org", "t2t", "t2i", "oracle"], "k": 2},
                "eval": {"split": "val"}},
    "t_multi": {"dataset": "synthav_vggsound", "model": TINY_VIT, "frames": {"strategy": "multiframe"}},
    "t_speech": {"dataset": "synthav_places", "model": {"kind": "davenet", "width": 0.0625}, "batch_size": 4,
                 "eval": {"split": "val"}},
    "t_dense": {"dataset": "synthav_vggsound", "model": TINY_VIT, "loss": DENSE_LOSS, "dense": DENSE},
    "t_dense_mix": {"dataset": "synthav_vggsound", "model": TINY_VIT, "loss": {**DENSE_LOSS, "heads": 2},
                    "dense": {**DENSE, "train_image": "aligner", "patch_token_cache": True},
                    "train": {"splits": ["train"], "mix": ["synthav_places"]}},
    "t_speechclip": {"dataset": "synthav_places", "model": {"kind": "davenet", "width": 0.0625, "trim_padding": True},
                     "loss": {"kind": "speechclip", "mode": "both", "keywords": 4, "learnable_temperature": False},
                     "batch_size": 4, "eval": {"split": "val"}},
    "t_hubert": {"dataset": "synthav_places", "model": {"kind": "hubert", "weights": "<tiny hubert>"},
                 "loss": {"kind": "speechclip", "mode": "cascaded", "keywords": 2, "learnable_temperature": False},
                 "batch_size": 4, "eval": {"split": "val"}},
    "t_ccl": {"dataset": "synthav_vggsound", "model": TINY_VIT, "loss": {"kind": "ccl", "teachers": ["image", "text"]}},
    "t_ddp": {"dataset": "synthav_vggsound", "model": TINY_VIT,  # t_mined on 2 processes (torchrun through Pipes)
              "loss": {"kind": "mined", "mode": "mask", "tables": ["org", "t2t", "i2t"], "k": 3},
              "train": {"splits": ["train"], "nproc_per_node": 2}},
    "t_ft": {"dataset": "synthav_audiocaps", "stage": "audio_text", "init_from": "t_base", "model": TINY_VIT,
             "seeds": [0, 1], "eval": {"split": "test", "val_split": "val", "val_size": 4}},
}


def _meta(result, key: list[str]) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def _tiny_hubert(path) -> None:
    """A randomly initialised HuBERT saved as a local checkpoint (the real ones cannot be downloaded here)."""
    from transformers import HubertConfig, HubertModel
    config = HubertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    HubertModel(config).save_pretrained(path)


@pytest.fixture(scope="module")
def trained(mined_caches, tmp_path_factory):
    _, instance, cache, _, _ = mined_caches
    exp_dir = tmp_path_factory.mktemp("experiments")
    hubert = tmp_path_factory.mktemp("hubert")
    _tiny_hubert(hubert)
    EXPERIMENTS["t_hubert"]["model"]["weights"] = str(hubert)
    for name, body in EXPERIMENTS.items():
        (exp_dir / f"{name}.yaml").write_text(yaml.safe_dump({**COMMON, **body, "tags": ["test"]}))
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIPKT_EXPERIMENTS_DIR", str(exp_dir))
    defs = build_definitions()
    job = defs.resolve_job_def("experiment_job")
    runs = {name: job.execute_in_process(instance=instance, partition_key=name) for name in EXPERIMENTS}
    yield defs, instance, cache, runs
    mp.undo()


def test_every_experiment_is_a_partition_and_materialises(trained):
    defs, instance, cache, runs = trained
    assert sorted(defs.resolve_job_def("experiment_job").partitions_def.get_partition_keys()) == sorted(EXPERIMENTS)
    for name, run in runs.items():
        assert run.success, name
        m = _meta(run, ["experiments", "audio_encoder"])
        assert m["trained_now"] == EXPERIMENTS[name].get("seeds", [0]) and m["train_clips"] >= 8
        assert 0.0 <= m["data_wait_fraction"] < 1.0
        for seed in m["trained_now"]:
            run_json = json.loads((run_dir(cache, load_all_experiments()[name], seed) / "run.json").read_text())
            assert [h["epoch"] for h in run_json["history"]] == [0, 1]
            assert all(np.isfinite(h["loss"]) for h in run_json["history"])


def test_a_two_process_run_launched_through_pipes_trains_what_one_process_trains(trained):
    defs, instance, cache, runs = trained
    ddp, one = _meta(runs["t_ddp"], ["experiments", "audio_encoder"]), _meta(runs["t_mined"], ["experiments", "audio_encoder"])
    assert ddp["processes"] == 2 and ddp["trained_now"] == [0] and ddp["train_clips"] == one["train_clips"]
    assert "| seed |" in ddp["runs"] and ddp["batch_positives"] == one["batch_positives"]  # rank 0's report, via Pipes
    exps = load_all_experiments()
    assert exps["t_ddp"].fingerprint(0) != exps["t_mined"].fingerprint(0)  # the world size is part of the run
    a, b = (json.loads((run_dir(cache, exps[n], 0) / "run.json").read_text()) for n in ("t_ddp", "t_mined"))
    assert a["world_size"] == 2 and b["world_size"] == 1
    np.testing.assert_allclose([h["loss"] for h in a["history"]], [h["loss"] for h in b["history"]], rtol=1e-4)
    logs = [e.message for e in instance.all_logs(runs["t_ddp"].run_id) if e.message]
    assert any("rank 0 of 2" in m for m in logs) and any("epoch 2/2" in m for m in logs)  # rank 0's log lines


def test_mined_pairs_meet_in_their_batches_and_the_statistics_are_reported(trained):
    _, _, cache, runs = trained
    experiments = load_all_experiments()
    pairs = json.loads((run_dir(cache, experiments["t_pairs"], 0) / "run.json").read_text())
    for epoch in pairs["history"]:
        # every batch of 8 holds 5 anchors and 3 partners sampled from their t2t/t2i/oracle top-2
        assert epoch["mined_positive_share"] > 0 and epoch["mined_positives_per_row"] > 0
        assert 0.0 <= epoch["same_key_share"] <= 1.0  # SynthAV Places declares its semantic keys
    m = _meta(runs["t_pairs"], ["experiments", "audio_encoder"])
    assert set(m["batch_positives"]) >= {"mined_positive_share", "mined_positives_per_row", "same_key_share"}
    base = json.loads((run_dir(cache, experiments["t_speech"], 0) / "run.json").read_text())
    assert all(e["mined_positive_share"] == 0.0 for e in base["history"])  # InfoNCE: the identity
    assert read_metrics(cache, experiments["t_pairs"])["mode"] == "pairs"
    assert read_metrics(cache, experiments["t_mined"])["mode"] == "mask"


def _brute_force_recall(sim: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Row q's true item is column q; rank = 1 + items scoring at least as high (pessimistic ties)."""
    ranks = np.array([1 + int((np.delete(sim[q], q) >= sim[q, q]).sum()) for q in range(len(sim))])
    return {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}


def test_reported_audio_image_recall_equals_a_direct_computation(trained):
    _, _, cache, runs = trained
    exp = load_all_experiments()["t_base"]
    ds = next(d for d in load_datasets() if d.name == exp.dataset)
    clips, with_text = evaluation_clips(cache, ds, exp)
    assert not with_text and len(clips) >= 3
    teacher = ClipTeacherResource.from_env(cache).load()
    stats = load_fbank_stats(cache, ds.name)
    doc = read_metrics(cache, exp)
    for seed in (0, 1):
        model = build_encoder(exp, teacher, 128, seed)
        load_encoder_weights(model, run_dir(cache, exp, seed) / FINAL_WEIGHTS)
        model.eval()
        x = (torch.from_numpy(clips.features.astype(np.float32)) - stats["mean"]) / stats["std"]
        with torch.no_grad():
            audio = torch.nn.functional.normalize(model(x), dim=-1).numpy()
        frame = clips.frames[:, 1]  # VIP-ANT's evaluation frame, ceil(4 / 2) - 1
        sim = audio @ (frame / np.linalg.norm(frame, axis=1, keepdims=True)).T
        for direction, s in (("A->I", sim), ("I->A", sim.T), ("A->I common", sim), ("I->A common", sim.T)):
            expected = _brute_force_recall(s)
            got = {k: doc["per_seed"][str(seed)][direction][k] for k in expected}
            assert got == pytest.approx(expected, abs=1e-9), (seed, direction)
    r1 = [doc["per_seed"][s]["A->I"]["R@1"] for s in ("0", "1")]
    assert doc["summary"]["A->I"]["R@1"]["mean"] == pytest.approx(np.mean(r1))
    assert doc["summary"]["A->I"]["R@1"]["std"] == pytest.approx(np.std(r1, ddof=1))
    assert doc["eval"]["clips"] == len(clips) and doc["eval"]["audio_image_similarity"].startswith("audio vs frame ceil(L/2)-1")


def test_fine_tuning_starts_from_the_audio_image_weights_and_reports_caption_protocol(trained):
    _, _, cache, runs = trained
    experiments = load_all_experiments()
    doc = read_metrics(cache, experiments["t_ft"])
    assert set(doc["summary"]) == {"A->T", "T->A"}
    captions = doc["eval"]["queries"]["T->A"]
    assert captions == 5 * doc["eval"]["clips"]  # AudioCaps test: 5 captions per clip, each a T->A query
    assert "best-ranked true match" in doc["protocol"]
    # the fine-tuned weights moved away from the audio-image run they started from
    from safetensors.torch import load_file
    base = load_file(str(run_dir(cache, experiments["t_base"], 0) / FINAL_WEIGHTS))
    tuned = load_file(str(run_dir(cache, experiments["t_ft"], 0) / FINAL_WEIGHTS))
    assert base.keys() == tuned.keys() and any(not torch.equal(base[k], tuned[k]) for k in base)


def test_speech_and_multiframe_metrics(trained):
    _, _, cache, runs = trained
    experiments = load_all_experiments()
    speech = read_metrics(cache, experiments["t_speech"])
    assert {"A->I", "I->A", "A->I common", "I->A common", "A->T", "T->A"} == set(speech["summary"]) and speech["model"] == "davenet"
    multi = read_metrics(cache, experiments["t_multi"])
    assert multi["eval"]["audio_image_similarity"].startswith("L raw audio segments")
    assert {"A->I common", "I->A common"} <= set(multi["summary"])
    checks = {e.check_name: e.passed for e in runs["t_multi"].get_asset_check_evaluations()}
    assert set(checks) == {"r10_at_least_5x_chance"}


def test_denseav_runs_score_with_their_own_similarity_and_localise(trained):
    defs, instance, cache, runs = trained
    experiments = load_all_experiments()
    doc = read_metrics(cache, experiments["t_dense"])
    assert doc["eval"]["audio_image_similarity"] == DENSE_SIMILARITY and set(doc["summary"]) == {"A->I", "I->A"}
    assert "head_split" not in doc  # one head, one dataset
    run = defs.resolve_job_def("localisation_job").execute_in_process(instance=instance, partition_key="t_dense")
    assert run.success
    loc = json.loads((cache.experiment_dir("t_dense") / "localisation.json").read_text())
    assert loc["maps"] == ["head_1", "combined"] and loc["seeds"] == [0]
    for metrics in loc["per_seed"]["0"].values():
        assert 0.0 <= metrics["cIoU"] <= 1.0 and 0.0 < metrics["pixel_AP"] <= 1.0
    assert 0.0 < loc["chance"]["pixel_AP"] < 1.0 and set(loc["chance"]) == {"cIoU", "AUC", "pixel_AP"}
    assert (cache.experiment_dir("t_dense") / "heatmaps.png").read_bytes()[:4] == b"\x89PNG"


def test_denseav_mixture_trains_on_both_datasets_and_reports_its_head_split(trained):
    """The 2-head run reads VGGSound's and Places' training clips together (the image tower's tokens
    from the patch-token cache of each); its metrics carry the head split over both sources'
    evaluation clips, equal to one computed here from its weights."""
    _, _, cache, runs = trained
    exp = load_all_experiments()["t_dense_mix"]
    datasets = {d.name: d for d in load_datasets()}
    alone = _meta(runs["t_dense"], ["experiments", "audio_encoder"])["train_clips"]
    places = _meta(runs["t_speech"], ["experiments", "audio_encoder"])["train_clips"]
    assert _meta(runs["t_dense_mix"], ["experiments", "audio_encoder"])["train_clips"] == alone + places
    for name in ("synthav_vggsound", "synthav_places"):
        assert list((cache.dataset_dir(name) / "clip_patch_tokens").glob("*/*.npy"))
    doc = read_metrics(cache, exp)
    split = doc["head_split"]
    assert doc["train_mix"] == ["synthav_places"] and split["summary"]["sources"] == ["synthav_vggsound", "synthav_places"]
    assert split["eval"]["synthav_places"]["split"] == "val"  # Places has no test split
    teacher = ClipTeacherResource.from_env(cache).load()
    model = build_encoder(exp, teacher, 128, 0)
    load_encoder_weights(model, run_dir(cache, exp, 0) / FINAL_WEIGHTS)
    ds = datasets["synthav_vggsound"]
    normalise = normaliser(cache, ds, exp, "frames,bins")
    scores = {}
    for name, split_name in (("synthav_vggsound", "test"), ("synthav_places", "val")):
        clips, _ = evaluation_clips(cache, datasets[name], replace(exp, eval=replace(exp.eval, split=split_name)))
        scores[name] = paired_head_scores(dense_features(model, clips, normalise, torch.device("cpu")), 2, "misa")
        assert split["eval"][name]["clips"] == len(clips)
    expected = head_split(scores)
    got = split["per_seed"]["0"]
    assert np.allclose(got["act"], expected["act"], atol=1e-5) and got["act_dis"] == pytest.approx(expected["act_dis"], abs=1e-5)
    assert 0.5 <= got["act_dis"] <= 1.0 and np.shape(got["ap"]) == (2, 2)


def test_speechclip_trains_both_branches_on_its_caption_vocabulary(trained):
    _, _, cache, runs = trained
    exp = load_all_experiments()["t_speechclip"]
    run = json.loads((run_dir(cache, exp, 0) / "run.json").read_text())
    assert all({"loss_cascaded", "loss_parallel"} <= set(h) for h in run["history"])
    for h in run["history"]:
        assert h["loss"] == pytest.approx(h["loss_cascaded"] + h["loss_parallel"], rel=1e-5)
    doc = read_metrics(cache, exp)
    assert {"A->I", "I->A"} <= set(doc["summary"])
    from safetensors.torch import load_file
    weights = load_file(str(run_dir(cache, exp, 0) / FINAL_WEIGHTS))
    teacher = ClipTeacherResource.from_env(cache).load()
    vocabulary = weights["cascaded.token_ids"].tolist()
    datasets = {d.name: d for d in load_datasets()}
    captions = pq.read_table(cache.manifest_path("synthav_places"), columns=["split", "captions"]).to_pylist()
    texts = [t for c in captions if c["split"] == "train" for t in c["captions"]]
    train_ids = set(teacher.tokenizer(texts).flatten().tolist())
    # the ids of the training captions (of the clips usable in every cache), pad, start and end included
    assert set(vocabulary) <= train_ids and {0, 49406, 49407} <= set(vocabulary) and len(vocabulary) > 10
    assert len(vocabulary) == len(set(vocabulary)) and datasets["synthav_places"].format == "places"


def test_speechclip_on_a_local_hubert_reads_the_waveform_cache(trained):
    _, _, cache, runs = trained
    exp = load_all_experiments()["t_hubert"]
    assert runs["t_hubert"].success and read_metrics(cache, exp)["model"] == "hubert"
    from safetensors.torch import load_file
    weights = load_file(str(run_dir(cache, exp, 0) / FINAL_WEIGHTS))
    assert "featurizer.mix.weights" in weights and not any("hubert" in k for k in weights)  # HuBERT is not saved
    assert weights["featurizer.mix.weights"].abs().sum() > 0  # the layer mix learned
    assert list((cache.dataset_dir("synthav_places") / "waveform_cache").glob("*.parquet"))


def test_ccl_trains_its_classifier_and_heads_and_reports_recognition(trained):
    """CCL with the image and text teachers: every term logged, the student's top-1 accuracy on the
    test clips in the metrics (equal to one computed here from its weights) and in the report."""
    _, _, cache, runs = trained
    exp = load_all_experiments()["t_ccl"]
    run = json.loads((run_dir(cache, exp, 0) / "run.json").read_text())
    assert {"loss_ce", "loss_nce_composed_image", "loss_nce_teacher_text", "loss_jsd_image", "loss_head_text"} <= \
        set(run["history"][-1])
    doc = read_metrics(cache, exp)
    top1 = doc["per_seed"]["0"]["recognition"]["top1"]
    assert 0.0 <= top1 <= 1.0 and doc["summary"]["recognition"]["top1"]["mean"] == pytest.approx(top1)
    from assets.training.recognition import class_logits
    from assets.training.runs import dataset_labels, trained_model
    ds = next(d for d in load_datasets() if d.name == exp.dataset)
    clips, _ = evaluation_clips(cache, ds, exp)
    labels = dataset_labels(cache, ds, clips.clip_ids)
    teacher = ClipTeacherResource.from_env(cache).load()
    model = trained_model(cache, exp, 0, teacher, 128, torch.device("cpu"), len(labels.classes))
    logits = class_logits(model, clips, normaliser(cache, ds, exp, "frames,bins"), torch.device("cpu"))
    assert top1 == pytest.approx(float((logits.argmax(1) == labels.class_ids()).mean()))
    assert {"A->I", "I->A"} <= set(doc["summary"])  # the student embedding is evaluated for retrieval too


def test_keyword_report_detokenises_and_scores_against_random_tokens(trained):
    defs, instance, cache, _ = trained
    run = defs.resolve_job_def("keyword_job").execute_in_process(instance=instance, partition_key="t_speechclip")
    assert run.success
    doc = json.loads((cache.experiment_dir("t_speechclip") / "keywords.json").read_text())
    seed = doc["per_seed"]["0"]
    assert 0.0 <= seed["hit_rate"] <= 1.0 and 0.0 <= seed["random_token_rate"] <= 1.0
    assert len(seed["hit_rate_per_keyword"]) == 4 and max(seed["hit_rate_per_keyword"]) <= seed["hit_rate"]
    example = doc["examples"][0]
    assert len(example["keywords"]) == 4 and all(len(k) == 5 for k in example["keywords"])
    first = [k[0] for k in example["keywords"]]
    assert all(abs(c - 1.0) < 1e-3 for _, c in first)  # each keyword's nearest token is its own
    assert not any(t in ("<start_of_text>", "<end_of_text>") for k in example["keywords"] for t, _ in k)
    failed = defs.resolve_job_def("keyword_job").execute_in_process(instance=instance, partition_key="t_base",
                                                                   raise_on_error=False)
    assert not failed.success  # not a SpeechCLIP run: a clear failure


def test_rerun_is_skipped_and_ablation_report_is_written(trained, tmp_path):
    defs, instance, cache, runs = trained
    again = defs.resolve_job_def("experiment_job").execute_in_process(instance=instance, partition_key="t_mined")
    m = _meta(again, ["experiments", "audio_encoder"])
    assert m["trained_now"] == [] and m["skipped_up_to_date"] == [0]
    assert _meta(again, ["experiments", "retrieval_metrics"])["skipped_up_to_date"] is True
    config = {"ops": {"experiments__ablation_report": {"config": {"out_dir": str(tmp_path)}}}}
    report = defs.resolve_job_def("ablation_report_job").execute_in_process(instance=instance, run_config=config)
    assert report.success
    table = pq.read_table(tmp_path / "ablation.parquet").to_pylist()
    assert sorted(r["experiment"] for r in table) == sorted(EXPERIMENTS)
    mined = next(r for r in table if r["experiment"] == "t_mined")
    assert (mined["org"], mined["t2t"], mined["t2i"], mined["i2t"], mined["i2i"]) == (True, True, False, True, False)
    assert mined["k"] == 3
    md = (tmp_path / "ablation.md").read_text()
    assert "| t_mined | random | mask | 3 | ✓ | ✓ | ✗ | ✓ | ✗ | ✗ |" in md
    assert "t_mined vs t_base" in md
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    mix = next(r for r in table if r["experiment"] == "t_dense_mix")
    assert mix["train_mix"] == ["synthav_places"] and 50.0 <= mix["Act.Dis"] <= 100.0
    assert "| t_dense_mix (+ synthav_places) |" in md and "Act.Dis" in md
    ccl = next(r for r in table if r["experiment"] == "t_ccl")
    assert ccl["recognition top1"] is not None and "recognition top1" in md


def test_clip_loading_joins_caches_and_reads_features_in_place(mined_caches, tmp_path):
    """Over the memory budget the features are read in place from the cache's arrays (no copy is
    written), identical to the in-memory ones; a seeded subset is the same clips as subsetting
    the full set, in either form."""
    from assets.training.data import ShardedFeatures, load_clips, seeded_subset
    _, _, cache, _, _ = mined_caches
    base = cache.dataset_dir("synthav_vggsound")
    dirs = (base / "fbank_cache", ["train"], base / "clip_image_embeddings")
    full = load_clips(*dirs)
    manifest = pq.read_table(cache.manifest_path("synthav_vggsound")).to_pylist()
    usable = {m["clip_id"] for m in manifest if m["split"] == "train" and m["status"] == "ok"}
    assert set(full.clip_ids) <= usable and len(full) >= len(usable) - 3  # the silent / too-short clips are left out
    rows = sum(r == "train" for f in (base / "fbank_cache").glob("*.parquet")
               for r in pq.read_table(f, columns=["split"]).column("split").to_pylist())
    assert full.frames.shape == (len(full), 4, 128) and sum(full.skipped.values()) == rows - len(full)
    before = sorted(p.name for p in base.rglob("*") if p.is_file())
    in_place = load_clips(*dirs, memory_budget_bytes=1)
    assert isinstance(in_place.features, ShardedFeatures) and in_place.clip_ids == full.clip_ids
    assert np.array_equal(np.asarray(in_place.features), full.features)
    pick = np.array([5, 0, len(full) - 1, 5])
    assert np.array_equal(in_place.features[pick], full.features[pick])
    assert np.array_equal(np.asarray(in_place.subset(pick[:3]).features), full.features[pick[:3]])
    assert sorted(p.name for p in base.rglob("*") if p.is_file()) == before  # nothing written
    part = load_clips(*dirs, subset=(7, 3))
    index = seeded_subset(len(full), 7, 3)
    assert part.clip_ids == [full.clip_ids[i] for i in index] and np.array_equal(part.features, full.features[index])

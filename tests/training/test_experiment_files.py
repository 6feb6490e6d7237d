"""Experiment files (assets/training/experiments.py): parsing into typed sections, YAML 1.1 float quirks,
unknown keys, every validation rule, directory loading with init_from checks, fingerprints and
the table set. Expectations are written out by hand; nothing here trains or touches a cache."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from assets.core.project_dirs import REPO_ROOT
from assets.training.experiments import (EvalSpec, Experiment, ExperimentError, FrameSpec, LossSpec, ModelSpec,
                                         OptimSpec, TrainSpec, load_experiment, load_experiments, parse_experiment)

FULL_YAML = """\
description: "seed 000 Table 1 (G): org + t2t + i2t"
tags: [seed000, table1]
dataset: places
stage: audio_image
init_from: null
model: {kind: audio_vit, time_frames: 512, mel_bins: 64, patch: [32, 32], stride: [32, 16], layers: 2}
loss: {kind: mined, tables: [org, t2t, i2t], k: 5, temperature: 0.1, learnable_temperature: false}
frames: {strategy: nearest, nearest_start_epoch: 3}
optim: {optimizer: adamw, lr_weights: 3e-4, lr_biases: 4.8e-3, weight_decay: 0.01, momentum: 0.8,
        warmup_epochs: 2, min_lr_ratio: 0.1}
epochs: 12
batch_size: 96
grad_accum: 3
seeds: [0, 1, 2]
train: {splits: [train, balanced_train], max_clips: 500, subset_seed: 7, fbank_std_scale: 2,
        num_workers: 2, prefetch: 8}
eval: {split: val, size: 300, seed: 4, val_split: dev, val_size: 64}
"""

# The smallest valid experiment; the validation cases below change one thing of it.
BASE = {"dataset": "synthav_vggsound", "model": {"kind": "audio_vit"}, "loss": {"kind": "infonce"},
        "frames": {"strategy": "random"}, "optim": {"optimizer": "lars"}, "epochs": 4, "batch_size": 8,
        "seeds": [0]}


def _with(**changes) -> dict:
    """BASE with top-level keys replaced, and `section__key` entries set inside a section."""
    d = copy.deepcopy(BASE)
    for key, value in changes.items():
        if "__" in key:
            section, field = key.split("__")
            d.setdefault(section, {})[field] = value
        else:
            d[key] = value
    return d


def _write(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# --- parsing -------------------------------------------------------------------------------

def test_full_mapping_becomes_typed_experiment(tmp_path):
    path = _write(tmp_path / "table1_g.yaml", FULL_YAML)
    exp = load_experiment(path)
    assert exp == Experiment(
        name="table1_g", dataset="places", path=str(path),
        description="seed 000 Table 1 (G): org + t2t + i2t", tags=("seed000", "table1"),
        stage="audio_image", init_from=None,
        model=ModelSpec(kind="audio_vit", time_frames=512, mel_bins=64, patch=(32, 32), stride=(32, 16), layers=2,
                        width=1.0),
        loss=LossSpec(kind="mined", tables=("org", "t2t", "i2t"), k=5, temperature=0.1, learnable_temperature=False),
        frames=FrameSpec(strategy="nearest", nearest_start_epoch=3),
        optim=OptimSpec(optimizer="adamw", lr_weights=0.0003, lr_biases=0.0048, weight_decay=0.01, momentum=0.8,
                        warmup_epochs=2.0, min_lr_ratio=0.1),
        epochs=12, batch_size=96, grad_accum=3, seeds=(0, 1, 2),
        train=TrainSpec(splits=("train", "balanced_train"), max_clips=500, subset_seed=7, fbank_std_scale=2.0,
                        num_workers=2, prefetch=8),
        eval=EvalSpec(split="val", size=300, seed=4, val_split="dev", val_size=64))
    # nested sections are their dataclasses, YAML lists are tuples (the dataclasses are frozen and hashable)
    assert type(exp.model) is ModelSpec and type(exp.loss) is LossSpec and type(exp.frames) is FrameSpec
    assert type(exp.optim) is OptimSpec and type(exp.train) is TrainSpec and type(exp.eval) is EvalSpec
    for value in (exp.tags, exp.seeds, exp.model.patch, exp.model.stride, exp.loss.tables, exp.train.splits):
        assert type(value) is tuple
    # integers in float fields become floats
    assert type(exp.optim.warmup_epochs) is float and type(exp.train.fbank_std_scale) is float
    hash(exp)


def test_missing_sections_take_their_defaults():
    exp = parse_experiment({"dataset": "places"}, "plain", "plain.yaml")
    assert exp.model == ModelSpec() and exp.loss == LossSpec() and exp.optim == OptimSpec()
    assert (exp.stage, exp.epochs, exp.batch_size, exp.grad_accum, exp.seeds) == ("audio_image", 30, 128, 1, (0,))
    assert exp.loss.tables == ("org",) and exp.model.stride == (16, 24)
    # `model:` with nothing under it (YAML null) is the default section too
    assert parse_experiment({"dataset": "places", "model": None}, "n", "n.yaml").model == ModelSpec()


def test_dataset_is_required():
    with pytest.raises(ExperimentError, match=r"nodata\.yaml: `dataset` is required"):
        parse_experiment({"epochs": 3}, "nodata", "nodata.yaml")


def test_yaml11_exponent_without_dot_is_a_float(tmp_path):
    text = "dataset: places\noptim: {lr_weights: 3e-4, lr_biases: 2E-2, weight_decay: 1e-6}\nloss: {temperature: 5e-2}\n"
    # the premise: PyYAML (YAML 1.1) reads an exponent without a dot as a string
    assert yaml.safe_load(text)["optim"]["lr_weights"] == "3e-4"
    exp = load_experiment(_write(tmp_path / "lr.yaml", text))
    assert exp.optim.lr_weights == 0.0003 and type(exp.optim.lr_weights) is float
    assert exp.optim.lr_biases == 0.02
    assert exp.optim.weight_decay == 0.000001
    assert exp.loss.temperature == 0.05


def test_non_numeric_float_field_names_file_and_field(tmp_path):
    path = _write(tmp_path / "sub" / "fast.yaml", "dataset: places\noptim: {lr_weights: fast}\n")
    with pytest.raises(ExperimentError) as e:
        load_experiment(path)
    msg = str(e.value)
    assert msg.startswith(str(path) + ":")
    assert "`optim.lr_weights`" in msg and "'fast'" in msg


def test_null_in_float_field_is_an_error():
    with pytest.raises(ExperimentError, match=r"n\.yaml: `optim\.momentum` must be set \(not null\), got None"):
        parse_experiment({"dataset": "places", "optim": {"momentum": None}}, "n", "n.yaml")


def test_unknown_top_level_key_is_named(tmp_path):
    path = _write(tmp_path / "typo.yaml", "dataset: places\nepoch: 3\n")
    with pytest.raises(ExperimentError) as e:
        load_experiment(path)
    assert str(e.value).startswith(f"{path}: unknown key(s) ['epoch']")


def test_unknown_key_in_a_section_is_named(tmp_path):
    path = _write(tmp_path / "typo.yaml", "dataset: places\noptim: {optimizer: lars, lr: 0.1}\n")
    with pytest.raises(ExperimentError) as e:
        load_experiment(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: unknown key(s) ['lr'] in `optim`")
    assert "'lr_weights'" in msg  # the known keys are listed


def test_section_must_be_a_mapping():
    with pytest.raises(ExperimentError, match=r"x\.yaml: `loss` must be a mapping, got str"):
        parse_experiment({"dataset": "places", "loss": "mined"}, "x", "x.yaml")


def test_file_must_be_a_mapping_and_valid_yaml(tmp_path):
    with pytest.raises(ExperimentError, match="must be a YAML mapping"):
        load_experiment(_write(tmp_path / "list.yaml", "- a\n- b\n"))
    with pytest.raises(ExperimentError, match="not valid YAML"):
        load_experiment(_write(tmp_path / "broken.yaml", "dataset: [places\n"))


# --- validation: one case per rule -----------------------------------------------------------

RULES = [
    ("bad stage", _with(stage="audio_video"),
     "stage must be one of ('audio_image', 'audio_text'), got 'audio_video'"),
    ("model kind", _with(model__kind="resnet"),
     "model.kind must be one of ('audio_vit', 'davenet', 'hubert'), got 'resnet'"),
    ("hubert without speechclip", _with(model__kind="hubert", model__weights="/models/hubert"),
     "model.kind hubert is SpeechCLIP's frozen featurizer"),
    ("hubert without weights", _with(model__kind="hubert", loss__kind="speechclip", loss__mode="parallel"),
     "model.kind hubert is SpeechCLIP's frozen featurizer: it needs loss.kind speechclip and model.weights"),
    ("loss kind", _with(loss__kind="triplet"),
     "loss.kind must be one of ('infonce', 'mined', 'denseav', 'speechclip', 'ccl'), got 'triplet'"),
    ("ccl teachers", _with(loss__kind="ccl", loss__teachers=["image", "audio"]),
     "loss.teachers must be distinct names from ('image', 'text'), got ['image', 'audio']"),
    ("ccl temperature", _with(loss__kind="ccl", loss__nce_temperature_text=0.0), "loss.nce_temperature_text must be > 0"),
    ("ccl weights", _with(loss__kind="ccl", loss__jsd_weight=-1.0), "must be >= 0"),
    ("ccl multiframe", _with(loss__kind="ccl", frames__strategy="multiframe"), "loss.kind ccl is audio_image training"),
    ("speechclip mode", _with(loss__kind="speechclip", loss__mode="pairs"),
     "loss.mode must be one of ('parallel', 'cascaded', 'both') for speechclip, got 'pairs'"),
    ("speechclip keywords", _with(loss__kind="speechclip", loss__mode="cascaded", loss__keywords=0),
     "loss.keywords must be >= 1, got 0"),
    ("speechclip bn init", _with(loss__kind="speechclip", loss__mode="cascaded", loss__bn_init="tiled"),
     "loss.bn_init must be one of ('per_dimension', 'reference'), got 'tiled'"),
    ("speechclip vocabulary", _with(loss__kind="speechclip", loss__mode="both", loss__vocabulary="english"),
     "loss.vocabulary must be captions or full, got 'english'"),
    ("speechclip parallel retrieving with keywords", _with(loss__kind="speechclip", loss__mode="parallel",
                                                          loss__retrieval="cascaded"), "loss.retrieval must be"),
    ("speechclip nearest frames", _with(loss__kind="speechclip", loss__mode="both", frames__strategy="nearest"),
     "loss.kind speechclip is audio_image training against one frame per clip"),
    ("denseav heads", _with(loss__kind="denseav", loss__heads=3, loss__code_dim=128),
     "loss.code_dim 128 must split into loss.heads 3"),
    ("denseav aggregation", _with(loss__kind="denseav", loss__aggregation="mean"),
     "loss.aggregation must be one of ['mima', 'misa', 'sisa'], got 'mean'"),
    ("denseav nearest frames", _with(loss__kind="denseav", frames__strategy="nearest"),
     "loss.kind denseav is audio_image training on one random frame per clip"),
    ("denseav regulariser", _with(loss__kind="denseav", loss__regularisers={"tv": -1.0}),
     "loss.regularisers: weights must be >= 0"),
    ("denseav unknown regulariser", _with(loss__kind="denseav", loss__regularisers={"mixup": 0.1}),
     "unknown key(s) ['mixup'] in `loss.regularisers`"),
    ("denseav image side", _with(loss__kind="denseav", dense__train_image="full"),
     "dense.train_image must be lora, aligner or frozen, got 'full'"),
    ("denseav window on davenet", _with(loss__kind="denseav", model__kind="davenet"),
     "dense.random_window silences FBANK frames"),
    ("mix names the dataset itself", _with(train__mix=["synthav_vggsound"]),
     "train.mix ['synthav_vggsound'] must name other datasets than synthav_vggsound, each once"),
    ("mix twice", _with(train__mix=["synthav_places", "synthav_places"]), "must name other datasets"),
    ("mix with mined", _with(loss__kind="mined", loss__tables=["t2t"], train__mix=["synthav_places"]),
     "train.mix cannot be used with loss.kind mined"),
    ("mix for audio_text", _with(stage="audio_text", train__mix=["synthav_places"]),
     "train.mix applies to audio_image training"),
    ("token cache with LoRA", _with(loss__kind="denseav", dense__patch_token_cache=True),
     "dense.patch_token_cache needs dense.train_image aligner or frozen"),
    ("unknown table", _with(loss__kind="mined", loss__tables=["org", "t2t", "a2a"]),
     "loss.tables ['a2a'] unknown"),
    ("mined with only org", _with(loss__kind="mined", loss__tables=["org"]),
     "loss.kind mined needs at least one of t2t, t2i, i2t, i2i"),
    ("k < 1", _with(loss__kind="mined", loss__tables=["t2t"], loss__k=0),
     "loss.k must be >= 1, got 0"),
    ("bad frame strategy", _with(frames__strategy="middle"),
     "frames.strategy must be one of ('random', 'nearest', 'multiframe'), got 'middle'"),
    ("audio_text with mined loss", _with(stage="audio_text", loss__kind="mined", loss__tables=["t2t"]),
     "audio_text fine-tuning uses loss.kind infonce"),
    ("audio_text with nearest frames", _with(stage="audio_text", frames__strategy="nearest"),
     "frames.strategy applies to audio_image experiments only"),
    ("davenet + multiframe", _with(model__kind="davenet", frames__strategy="multiframe"),
     "multiframe needs per-segment audio embeddings, which only audio_vit provides"),
    ("bad optimizer", _with(optim__optimizer="sgd"),
     "optim.optimizer must be lars, adamw or adam, got 'sgd'"),
    ("bad lr scaling", _with(optim__lr_scaling="linear"),
     "optim.lr_scaling must be one of ('batch256', 'none'), got 'linear'"),
    ("bad nearest rule", _with(frames__strategy="nearest", frames__nearest_rule="best"),
     "frames.nearest_rule must be one of ('pairwise', 'per_clip'), got 'best'"),
    ("bad pool", _with(model__pool="max"), "model.pool must be one of ('cls', 'segments'), got 'max'"),
    ("segment pool on davenet", _with(model__kind="davenet", model__pool="segments"),
     "model.pool: segments needs the audio ViT"),
    ("spec augment on davenet", _with(model__kind="davenet", train__time_mask=200),
     "train.freq_mask / train.time_mask (SpecAugment) apply to the audio ViT's FBANK input only"),
    ("negative time mask", _with(train__time_mask=-1), "train.time_mask must be an integer >= 0, got -1"),
    ("batch not a multiple of grad_accum", _with(batch_size=100, grad_accum=3),
     "batch_size 100 must be a multiple of grad_accum 3"),
    ("duplicate seeds", _with(seeds=[0, 1, 0]),
     "seeds must be a non-empty list of distinct integers, got [0, 1, 0]"),
    ("no seeds", _with(seeds=[]),
     "seeds must be a non-empty list of distinct integers, got []"),
    ("epochs 0", _with(epochs=0), "epochs must be an integer >= 1, got 0"),
    ("batch_size 1", _with(batch_size=1), "batch_size must be an integer >= 2, got 1"),
    ("epochs not an integer", _with(epochs=2.5), "`epochs` must be an integer, got 2.5"),
    ("grad_accum 0", _with(grad_accum=0), "grad_accum must be an integer >= 1, got 0"),
    ("eval.size 1", _with(eval__size=1), "eval.size must be an integer >= 2, got 1"),
    ("patch not a pair", _with(model__patch=[16]), "model.patch and model.stride are [time, frequency] pairs"),
    ("stride not a pair", _with(model__stride=[16, 16, 16]), "model.patch and model.stride are [time, frequency] pairs"),
]


@pytest.mark.parametrize("data, message", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_validation_rule(data, message):
    with pytest.raises(ExperimentError) as e:
        parse_experiment(data, "bad", "configs/experiments/bad.yaml")
    assert str(e.value).startswith("configs/experiments/bad.yaml: ")
    assert message in str(e.value)


ACCEPTED = [
    ("base", _with()),
    ("k = 1", _with(loss__kind="mined", loss__tables=["org", "i2i"], loss__k=1)),
    ("mined without org listed", _with(loss__kind="mined", loss__tables=["t2i"])),
    ("audio_text infonce random", _with(stage="audio_text")),
    ("davenet nearest", _with(model__kind="davenet", frames__strategy="nearest")),
    ("audio_vit multiframe", _with(frames__strategy="multiframe")),
    ("batch 96 / grad_accum 3", _with(batch_size=96, grad_accum=3)),
    ("epochs 1, batch 2", _with(epochs=1, batch_size=2)),
    ("adamw", _with(optim__optimizer="adamw")),
    ("infonce ignores listed tables", _with(loss__tables=["org", "t2t"])),
]


@pytest.mark.parametrize("data", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_boundaries_of_the_rules_are_accepted(data):
    assert parse_experiment(data, "ok", "ok.yaml").name == "ok"


# --- load_experiments --------------------------------------------------------------------------

def test_load_experiments_is_recursive_and_keyed_by_stem(tmp_path):
    a = _write(tmp_path / "top.yaml", _with())
    b = _write(tmp_path / "table1" / "g.yaml", _with(loss__kind="mined", loss__tables=["t2t", "i2t"]))
    c = _write(tmp_path / "table1" / "deep" / "ft.yaml", _with(stage="audio_text", init_from="top"))
    (tmp_path / "notes.txt").write_text("dataset: nope\n")
    _write(tmp_path / "other.yml", _with())  # only *.yaml files are experiments
    found = load_experiments(tmp_path)
    assert sorted(found) == ["ft", "g", "top"]
    assert {n: e.path for n, e in found.items()} == {"top": str(a), "g": str(b), "ft": str(c)}
    assert found["ft"].init_from == "top" and found["g"].table_set == {"org", "t2t", "i2t"}


def test_load_experiments_rejects_duplicate_stems_naming_both(tmp_path):
    first = _write(tmp_path / "one" / "same.yaml", _with())
    second = _write(tmp_path / "two" / "same.yaml", _with(epochs=9))
    with pytest.raises(ExperimentError) as e:
        load_experiments(tmp_path)
    msg = str(e.value)
    assert str(first) in msg and str(second) in msg and "'same'" in msg


def test_init_from_must_exist(tmp_path):
    ft = _write(tmp_path / "ft.yaml", _with(stage="audio_text", init_from="ghost"))
    with pytest.raises(ExperimentError) as e:
        load_experiments(tmp_path)
    assert str(e.value).startswith(f"{ft}: init_from 'ghost' is not an experiment in {tmp_path}")


def test_init_from_needs_the_same_model_section(tmp_path):
    _write(tmp_path / "base.yaml", _with(model={"kind": "audio_vit", "layers": 2}))
    ft = _write(tmp_path / "ft.yaml", _with(stage="audio_text", init_from="base", model={"kind": "audio_vit", "layers": 4}))
    with pytest.raises(ExperimentError) as e:
        load_experiments(tmp_path)
    assert str(e.value).startswith(f"{ft}: init_from 'base' must be an audio_image experiment with the same model section")
    # the same model, written with a list where the base has the default tuple, is accepted
    _write(tmp_path / "ft.yaml", _with(stage="audio_text", init_from="base",
                                       model={"kind": "audio_vit", "layers": 2, "stride": [16, 24], "width": 1}))
    assert load_experiments(tmp_path)["ft"].model == load_experiments(tmp_path)["base"].model


def test_init_from_must_be_an_audio_image_experiment(tmp_path):
    _write(tmp_path / "base.yaml", _with(stage="audio_text"))
    _write(tmp_path / "ft.yaml", _with(stage="audio_text", init_from="base"))
    with pytest.raises(ExperimentError, match="must be an audio_image experiment"):
        load_experiments(tmp_path)


def test_init_from_needs_every_seed_in_the_base(tmp_path):
    _write(tmp_path / "base.yaml", _with(seeds=[0, 2]))
    ft = _write(tmp_path / "ft.yaml", _with(stage="audio_text", init_from="base", seeds=[0, 1, 2, 3]))
    with pytest.raises(ExperimentError) as e:
        load_experiments(tmp_path)
    assert str(e.value) == f"{ft}: seeds [1, 3] have no run in init_from 'base'"
    _write(tmp_path / "ft.yaml", _with(stage="audio_text", init_from="base", seeds=[2]))
    assert load_experiments(tmp_path)["ft"].seeds == (2,)


def test_the_repository_experiments_load():
    found = load_experiments(REPO_ROOT / "configs" / "experiments")
    assert {"demo_infonce_random", "demo_s000_places_G"} <= set(found)
    assert found["demo_s000_places_G"].table_set == {"org", "t2t", "i2t"}
    assert found["demo_s000_places_G"].loss.mode == "pairs"
    assert found["s000_places_G_mask_k10"].loss.mode == "mask"
    assert found["demo_infonce_random"].optim.lr_weights == 0.001


# --- fingerprint and table set -------------------------------------------------------------------

def _fp(seed=0, **changes) -> str:
    return parse_experiment(_with(**changes), "fp", "fp.yaml").fingerprint(seed)


def test_fingerprint_shape_and_stability():
    fp = _fp()
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert _fp() == fp
    # neither the name nor the file's location determine the weights
    assert parse_experiment(_with(), "renamed", "elsewhere/renamed.yaml").fingerprint(0) == fp


def test_fingerprint_ignores_description_tags_eval_and_other_seeds():
    fp = _fp()
    assert _fp(description="a new description") == fp
    assert _fp(tags=["demo", "table1"]) == fp
    assert _fp(eval={"split": "val", "size": 50, "seed": 3, "val_split": "dev", "val_size": 10}) == fp
    assert _fp(seeds=[0, 1, 2]) == fp  # the run of seed 0 is the same whichever other seeds exist


def test_fingerprint_changes_with_what_determines_the_weights():
    fp = _fp()
    assert _fp(seed=1) != fp
    assert _fp(seed=None) != fp
    assert _fp(optim__lr_weights=0.1) != fp
    assert _fp(epochs=5) != fp
    mined = dict(loss__kind="mined", loss__tables=["t2t"])
    assert _fp(loss__k=10, **mined) != _fp(loss__k=5, **mined)
    # all different from one another
    variants = [fp, _fp(seed=1), _fp(optim__lr_weights=0.1), _fp(epochs=5), _fp(loss__k=10, **mined),
                _fp(loss__k=5, **mined)]
    assert len(set(variants)) == len(variants)


def test_fingerprints_of_existing_runs_survive_later_fields():
    """Fields added after runs were made (DenseAV's, train.mix) leave those runs' fingerprints as they
    were, so their checkpoints and metrics stay current; values pinned from before the fields existed."""
    assert _fp() == "b0924c8680e54272"
    assert _fp(loss__kind="denseav", loss__heads=2) == "8f0f054850dd1af2"
    assert _fp(train__mix=["synthav_places"]) != _fp() and _fp(train__mix=[]) == _fp()
    assert _fp(loss__keywords=4) == _fp()  # SpeechCLIP's fields count only for SpeechCLIP runs
    assert _fp(model__layer_norm_states=True) == _fp()  # the HuBERT featurizer's, only for HuBERT runs
    assert _fp(loss__teachers=["image", "text"]) == _fp()  # CCL's fields count only for CCL runs
    assert _fp(loss__kind="ccl", loss__teachers=["image", "text"]) != _fp(loss__kind="ccl")
    sc = dict(loss__kind="speechclip", loss__mode="cascaded")
    assert _fp(loss__keywords=4, **sc) != _fp(**sc)


def test_fingerprint_equal_for_equal_numbers_however_written():
    assert _fp(optim__lr_weights=1) == _fp(optim__lr_weights=1.0)
    assert _fp(optim__lr_biases="3e-4") == _fp(optim__lr_biases=0.0003)
    assert _fp(model__stride=[16, 24]) == _fp()  # the default, written out


def test_table_set():
    infonce = parse_experiment(_with(loss__tables=["org", "t2t", "i2i"]), "a", "a.yaml")
    assert infonce.table_set == {"org"}
    mined = parse_experiment(_with(loss__kind="mined", loss__tables=["t2i", "i2i"]), "b", "b.yaml")
    assert mined.table_set == {"org", "t2i", "i2i"}
    full = parse_experiment(_with(loss__kind="mined", loss__tables=["org", "t2t", "t2i", "i2t", "i2i"]), "c", "c.yaml")
    assert full.table_set == {"org", "t2t", "t2i", "i2t", "i2i"}


# --- type errors and fine-tuning fingerprints ------------------------------------------------------

def test_scalar_seeds_is_an_experiment_error():
    with pytest.raises(ExperimentError, match="seeds"):
        parse_experiment(_with(seeds=0), "s", "s.yaml")


def test_string_k_is_an_experiment_error():
    with pytest.raises(ExperimentError, match="loss.k"):
        parse_experiment(_with(loss__kind="mined", loss__tables=["t2t"], loss__k="10"), "k", "k.yaml")


def test_boolean_in_float_field_is_an_error():
    with pytest.raises(ExperimentError, match="optim.lr_weights"):
        parse_experiment(_with(optim__lr_weights=True), "b", "b.yaml")


def test_boolean_epochs_is_an_error():
    with pytest.raises(ExperimentError, match="epochs"):
        parse_experiment(_with(epochs=True), "b", "b.yaml")


def test_fine_tune_fingerprint_follows_its_base(tmp_path):
    _write(tmp_path / "base.yaml", _with())
    _write(tmp_path / "ft.yaml", _with(stage="audio_text", init_from="base"))
    before = load_experiments(tmp_path)
    _write(tmp_path / "base.yaml", _with(optim__lr_weights=0.5))
    after = load_experiments(tmp_path)
    assert after["base"].fingerprint(0) != before["base"].fingerprint(0)
    assert after["ft"].fingerprint(0) != before["ft"].fingerprint(0)


def test_base_is_not_a_file_key():
    """`base` (the init_from experiment) is filled in by load_experiments, never read from a file."""
    with pytest.raises(ExperimentError, match=r"b\.yaml: unknown key\(s\) \['base'\]"):
        parse_experiment({"dataset": "places", "base": "other"}, "b", "b.yaml")

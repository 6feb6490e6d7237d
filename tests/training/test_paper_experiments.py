"""The paper experiments (configs/experiments/paper) encode the two seeds' tables faithfully.

Seed 000: the CLIP -> VGS knowledge-transfer slides (Places Audio Caption, DaveNet), Tables 1-4.
Seed 001: Tsubaki et al. 2024 (AudioSet audio-image pretraining, AudioCaps fine-tuning), Tables I, III, IV.
Only the experiment files are read; nothing is trained.
"""

from dataclasses import replace
from pathlib import Path

import pytest

from assets.core.project_dirs import REPO_ROOT
from assets.training.experiments import ModelSpec, load_experiments

EXPERIMENTS_DIR = REPO_ROOT / "configs" / "experiments"

# Slides 000, Table 1: the ✓ marks of the NN Search columns (Original, T2T, T2I, I2T, I2I) per row.
TABLE1_CHECKS = {
    "A": {"org"},
    "B": {"org", "t2t"},
    "C": {"org", "t2i"},
    "D": {"org", "i2t"},
    "E": {"org", "i2i"},
    "F": {"org", "t2t", "i2i"},
    "G": {"org", "t2t", "i2t"},
    "H": {"org", "t2t", "t2i", "i2t"},
    "I": {"org", "t2t", "t2i", "i2t", "i2i"},
}
TABLE1_K = 30  # Table 2's k=30 column equals row (I)
TABLES_1_2_CLIPS = 100_000  # row (A) equals Table 3's 100K column; row (G) equals Table 4's 100K row
TABLE2_KS = {10, 30, 100, 300, 1000}
TABLE3_CLIPS = {"50k": 50_000, "100k": 100_000, "150k": 150_000, "200k": 200_000, "250k": 250_000,
                "300k": 300_000, "350k": 350_000}
TABLE4_CLIPS = {"100k": 100_000, "200k": 200_000}
TABLE4_CHECKS = {"org", "t2t", "i2t"}  # Original, T2T, I2T all ✓ in both rows

# Seed 001: the Table III / IV rows and their frame strategy (n = epoch at which Nearest Match starts).
S001_ROWS = {"vipant": ("random", 0), "nearest_n0": ("nearest", 0), "nearest_n5": ("nearest", 5),
             "nearest_n10": ("nearest", 10), "nearest_n15": ("nearest", 15), "multiframe": ("multiframe", 0)}
S001_MODEL = ModelSpec(kind="audio_vit", time_frames=1000, mel_bins=128, patch=None, stride=(16, 24), layers=None)


@pytest.fixture(scope="module")
def experiments():
    return load_experiments(EXPERIMENTS_DIR)


@pytest.fixture(scope="module")
def paper(experiments):
    return {n: e for n, e in experiments.items() if "paper" in e.tags}


def test_the_paper_set_is_complete(paper):
    expected = ({f"s000_t1_{r}" for r in TABLE1_CHECKS} | {f"s000_t2_k{k}" for k in TABLE2_KS}
                | {f"s000_t3_{s}" for s in TABLE3_CLIPS} | {f"s000_t4_{s}" for s in TABLE4_CLIPS}
                | {f"s001_{r}" for r in S001_ROWS} | {f"s001_ft_{r}" for r in S001_ROWS})
    assert set(paper) == expected
    assert len(paper) == 9 + 5 + 7 + 2 + 6 + 6
    for name, exp in paper.items():
        assert Path(exp.path).parent.name == "paper", name
        assert "demo" not in exp.tags, name  # `make demo` must not pick these up
        first = Path(exp.path).read_text().splitlines()[0]
        assert first.startswith("# Seed 00"), f"{name}: the leading comment names the seed and table"


def test_seed000_common_setup(paper):
    for name, exp in paper.items():
        if not name.startswith("s000_"):
            continue
        assert exp.dataset == "places" and exp.stage == "audio_image", name
        assert exp.model == ModelSpec(kind="davenet", width=1.0), name
        assert exp.frames.strategy == "random", name
        assert exp.seeds == (0,), name
        assert exp.train.splits == ("train",) and exp.train.subset_seed == 0, name
        assert (exp.eval.split, exp.eval.size, exp.eval.seed) == ("val", 1000, 0), name
        assert exp.batch_size == 128 and exp.epochs == 30, name
        assert "seed000" in exp.tags, name


@pytest.mark.parametrize("row", sorted(TABLE1_CHECKS))
def test_table1_rows_have_the_slides_checkmarks(paper, row):
    exp = paper[f"s000_t1_{row}"]
    assert exp.table_set == TABLE1_CHECKS[row]
    assert set(exp.tags) >= {"paper", "seed000", "table1"}
    assert exp.train.max_clips == TABLES_1_2_CLIPS
    if row == "A":
        assert exp.loss.kind == "infonce"
    else:
        assert exp.loss.kind == "mined"
        assert set(exp.loss.tables) == TABLE1_CHECKS[row]
        assert exp.loss.k == TABLE1_K


def test_table2_varies_only_k_over_row_I(paper):
    exps = {n: e for n, e in paper.items() if n.startswith("s000_t2_")}
    assert {e.loss.k for e in exps.values()} == TABLE2_KS
    for name, exp in exps.items():
        assert name == f"s000_t2_k{exp.loss.k}"
        assert exp.loss.kind == "mined"
        assert exp.table_set == TABLE1_CHECKS["I"] == {"org", "t2t", "t2i", "i2t", "i2i"}
        assert exp.train.max_clips == TABLES_1_2_CLIPS
        assert "table2" in exp.tags
    # the k=30 column is row (I): the same training configuration
    assert paper["s000_t2_k30"].fingerprint(0) == paper["s000_t1_I"].fingerprint(0)


def test_table3_baseline_sizes(paper):
    for suffix, clips in TABLE3_CLIPS.items():
        exp = paper[f"s000_t3_{suffix}"]
        assert exp.train.max_clips == clips
        assert exp.loss.kind == "infonce" and exp.table_set == {"org"}
        assert "table3" in exp.tags
    assert paper["s000_t3_100k"].fingerprint(0) == paper["s000_t1_A"].fingerprint(0)


def test_table4_positive_pairs_by_size(paper):
    for suffix, clips in TABLE4_CLIPS.items():
        exp = paper[f"s000_t4_{suffix}"]
        assert exp.train.max_clips == clips
        assert exp.loss.kind == "mined" and exp.table_set == TABLE4_CHECKS and exp.loss.k == TABLE1_K
        assert "table4" in exp.tags
    assert paper["s000_t4_100k"].fingerprint(0) == paper["s000_t1_G"].fingerprint(0)


@pytest.mark.parametrize("row", sorted(S001_ROWS))
def test_seed001_audio_image_table_I(paper, row):
    exp = paper[f"s001_{row}"]
    strategy, n = S001_ROWS[row]
    assert exp.dataset == "audioset" and exp.stage == "audio_image" and exp.init_from is None
    assert exp.model == S001_MODEL
    assert exp.loss.kind == "infonce"
    assert exp.frames.strategy == strategy
    if strategy == "nearest":
        assert exp.frames.nearest_start_epoch == n
    # Table I, audio-image column (LR of weight 2.0e-1, LR of bias 4.8e-3)
    assert exp.batch_size == 128 and exp.grad_accum == 1
    assert exp.optim.optimizer == "lars"
    assert exp.optim.weight_decay == pytest.approx(1e-6)
    assert exp.optim.lr_weights == pytest.approx(0.2)
    assert exp.optim.lr_biases == pytest.approx(4.8e-3)
    assert exp.epochs == 30 and exp.optim.warmup_epochs == 10
    assert exp.seeds == (0, 1, 2)
    # Table II: train on AudioSet unbalanced, validate on balanced, test on eval
    assert exp.train.splits == ("unbalanced_train",) and exp.train.max_clips is None
    assert (exp.eval.split, exp.eval.size, exp.eval.val_split) == ("eval", 1000, "balanced_train")
    assert set(exp.tags) >= {"paper", "seed001", "table3"}


@pytest.mark.parametrize("row", sorted(S001_ROWS))
def test_seed001_audio_text_fine_tuning(paper, row):
    exp = paper[f"s001_ft_{row}"]
    assert exp.init_from == f"s001_{row}"
    base = paper[exp.init_from]
    assert base.stage == "audio_image" and base.model == replace(exp.model, pool="cls") == S001_MODEL
    # a Multiframe run's class token was never trained: its fine-tuning starts from the segment mean
    assert (exp.model.pool, exp.model.segments) == (("segments", 4) if row == "multiframe" else ("cls", 4))
    assert exp.optim.lr_scaling == "batch256" and (exp.train.freq_mask, exp.train.time_mask) == (32, 200)
    assert set(exp.seeds) <= set(base.seeds)
    assert exp.dataset == "audiocaps" and exp.stage == "audio_text"
    assert exp.loss.kind == "infonce" and exp.frames.strategy == "random"
    # Table I, audio-text column
    assert exp.batch_size == 64 and exp.grad_accum == 1
    assert exp.optim.optimizer == "lars"
    assert exp.optim.weight_decay == pytest.approx(1e-6)
    assert exp.optim.lr_weights == pytest.approx(1.0)
    assert exp.optim.lr_biases == pytest.approx(2.4e-2)
    assert exp.epochs == 20 and exp.optim.warmup_epochs == 10
    assert exp.seeds == (0, 1, 2)
    assert exp.train.splits == ("train",)
    assert (exp.eval.split, exp.eval.size, exp.eval.val_split) == ("test", 1000, "val")
    assert set(exp.tags) >= {"paper", "seed001", "table4"}

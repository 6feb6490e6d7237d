"""Experiment files: one YAML per training experiment, read into a typed, validated config.

`configs/experiments/**/<name>.yaml` (the file stem is the experiment's name and its
`audio_encoder` partition key, so adding a file adds a partition):

    description: "seed 000 Table 1 (G): org + t2t + i2t"
    tags: [seed000, table1]          # free labels; `demo` marks what `make demo` trains
    dataset: places                  # a dataset declared in configs/datasets
    stage: audio_image               # audio_image | audio_text (seed 001 II-D fine-tuning)
    init_from: null                  # audio_text: the audio_image experiment whose weights start it
    model: {kind: davenet}           # audio_vit | davenet, plus their knobs (see ModelSpec)
    loss: {kind: mined, mode: pairs, tables: [org, t2t, i2t], k: 10, partner_share: 0.5}
    frames: {strategy: random}       # random | nearest (+ nearest_start_epoch, nearest_rule) | multiframe
    optim: {optimizer: lars, lr_weights: 0.2, lr_biases: 4.8e-3, warmup_epochs: 10}
    epochs: 30
    batch_size: 128
    grad_accum: 1                    # >1: the batch is computed in that many chunks (exact full-batch loss)
    seeds: [0, 1, 2]                 # one run per seed; metrics report mean ± std
    train: {splits: [train], max_clips: null, subset_seed: 0}
    eval: {split: test, size: 1000, seed: 0}

Unknown keys are errors (a typo must not silently fall back to a default); every error names
the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from assets.core.project_dirs import experiments_dir
from losses.dense_similarity import AGGREGATIONS, HEAD_AGGREGATIONS
from losses.denseav import RegulariserWeights
from losses.frame_matching import NEAREST_RULES
from losses.mined_positives import MINED_TABLES, MODES
from models.speechclip import BN_INITS, MODES as SPEECHCLIP_MODES

STAGES = ("audio_image", "audio_text")
MODEL_KINDS = ("audio_vit", "davenet", "hubert")
LOSS_KINDS = ("infonce", "mined", "denseav", "speechclip", "ccl")
CCL_TEACHERS = ("image", "text")
FRAME_STRATEGIES = ("random", "nearest", "multiframe")
LR_SCALINGS = ("batch256", "none")
_DENSE_LOSS_FIELDS = ("heads", "code_dim", "aggregation", "head_agg", "calibration_init", "regularisers")
_HUBERT_MODEL_FIELDS = ("weights", "layer_norm_states")
_CCL_LOSS_FIELDS = ("teachers", "nce_temperature_image", "nce_temperature_text", "jsd_weight", "teacher_weight",
                    "composed_weight")
_SPEECHCLIP_LOSS_FIELDS = ("keywords", "keyword_temperature", "keyword_batchnorm", "bn_init", "vocabulary", "retrieval")
POOLS = ("cls", "segments")
ALL_TABLES = ("org", *MINED_TABLES)


class ExperimentError(ValueError):
    """An experiment file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ModelSpec:
    kind: str = "audio_vit"
    # audio_vit (from the teacher's image tower): input size, patch kernel (null: the teacher's),
    # stride, and how many of the tower's transformer blocks to keep (null: all)
    time_frames: int = 1000
    mel_bins: int = 128
    patch: tuple[int, int] | None = None
    stride: tuple[int, int] = (16, 24)
    layers: int | None = None
    # davenet (log-mel speech input): channel width multiplier; trim_padding: cut each batch after its
    # longest caption (+ the receptive field) instead of running on the cache's 2048 frames (models/davenet.py)
    width: float = 1.0
    trim_padding: bool = False
    # audio_vit: the clip embedding. cls: the class token (VIP-ANT); segments: the mean of `segments` time-segment
    # embeddings (fine-tuning a Multiframe Match run, whose pretraining never trained the class token)
    pool: str = "cls"
    segments: int = 4
    # hubert (SpeechCLIP's featurizer, frozen; reads the dataset's waveform_cache): a local checkpoint directory
    # (transformers HubertModel; nothing is downloaded), and the large configs' LayerNorm on every hidden state
    weights: str | None = None
    layer_norm_states: bool = False


@dataclass(frozen=True)
class LossSpec:
    kind: str = "infonce"  # infonce: the diagonal only; mined: + neighbours from `tables` at top-k; denseav; speechclip
    # mined: pairs (the slides' directional <image, caption> pairs) | mask (symmetric in-batch);
    # speechclip: parallel | cascaded | both (both branches trained, their losses summed)
    mode: str = "pairs"
    tables: tuple[str, ...] = ("org",)  # org, t2t, t2i, i2t, i2i, oracle (SynthAV's same-key clips)
    k: int = 10
    partner_share: float = 0.5  # pairs: share of a batch's anchors that get one mined partner sampled into it
    temperature: float = 0.07  # initial; CLIP's
    learnable_temperature: bool = True
    # denseav (losses/denseav.py, losses/dense_similarity.py; DenseAV's configs/av_align.yaml):
    heads: int = 1  # K; the config's sim_agg_heads (the paper's speech/sound model: 2)
    code_dim: int = 384  # the aligners' output channels, split into K heads
    aggregation: str = "misa"  # max over image, mean over audio time | mima | sisa
    head_agg: str = "max_elementwise"  # heads combined before aggregating | sum | max
    calibration_init: float = 1.0
    regularisers: RegulariserWeights = field(default_factory=RegulariserWeights)
    # speechclip (models/speechclip.py; SpeechCLIP's configs): K keywords in CLIP's token space, the keyword softmax's
    # temperature, the BatchNorm before the token lookup and its initialisation (per_dimension | reference), the token
    # table (captions: the ids of the training captions, the reference's reduced table | full: the whole vocabulary),
    # and for mode both the branch that retrieves (parallel | cascaded)
    keywords: int = 8
    keyword_temperature: float = 0.1
    keyword_batchnorm: bool = True
    bn_init: str = "per_dimension"
    vocabulary: str = "captions"
    retrieval: str = "parallel"
    # ccl (losses/ccl.py, models/ccl.py; CCL's training.py): the teachers distilled (image: the clip's frame
    # embedding; text: its class-name embedding; none: the supervised CE baseline), each one's NCE temperature
    # (the code: 0.1 image, 0.5 for its second teacher), the JSD weight (--loss_weight 0.5) and the poster's
    # lambdas on the teacher and composed NCE terms (the code sums them: 1.0)
    teachers: tuple[str, ...] = ("image",)
    nce_temperature_image: float = 0.1
    nce_temperature_text: float = 0.5
    jsd_weight: float = 0.5
    teacher_weight: float = 1.0
    composed_weight: float = 1.0


@dataclass(frozen=True)
class DenseSpec:
    """DenseAV's architecture and phases (models/denseav.py), for loss.kind denseav."""
    time_pools: int = 2  # the audio aligner's stride-3 (1, 3) convolutions (audio_sa_3_3_pool_2: 2)
    image_pool: int = 2  # training-only average pooling of the aligned image features (image_pool_width)
    aligner_warmup_steps: int = 3000  # steps with frozen backbones, only the aligners learning (pretrain_steps)
    train_image: str = "lora"  # lora (the paper) | aligner | frozen (the released code: the image side never learns)
    lora_rank: int = 8
    lora_alpha: float = 32.0
    random_window: bool = True  # extra_audio_masking: half the clips keep a random window, the rest silenced (audio ViT)
    # train on the teacher's patch tokens cached per shard (assets/training/patch_token_cache.py) instead of running
    # the image tower on decoded frames every step; only when the tower does not learn (train_image aligner | frozen)
    patch_token_cache: bool = False


@dataclass(frozen=True)
class FrameSpec:
    strategy: str = "random"
    nearest_start_epoch: int = 0  # seed 001's n: random frames before this epoch, nearest from it on
    nearest_rule: str = "pairwise"  # pairwise: eq. 3's max per (audio, clip) pair | per_clip: the clip's own audio picks


@dataclass(frozen=True)
class OptimSpec:
    """Defaults: VIP-ANT's optimizer (configs/optimizer/standard.yaml) with seed 001's Table I rates."""
    optimizer: str = "lars"  # lars | adamw | adam (DenseAV's: Adam, eps 1e-7)
    lr_scaling: str = "batch256"  # batch256: rates x batch_size / 256 (VIP-ANT) | none: the rates are the peaks
    lr_weights: float = 0.2  # seed 001 Table I (audio-image); audio-text: 1.0
    lr_biases: float = 4.8e-3  # audio-text: 2.4e-2
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_epochs: float = 10
    min_lr_ratio: float = 0.001  # the cosine's floor, as a fraction of the peak (VIP-ANT: 0.001); 1: constant after warmup
    clip_grad_per_tensor: float = 0.0  # > 0: clip each parameter tensor's gradient norm to this (DenseAV: 10); 0: off


@dataclass(frozen=True)
class TrainSpec:
    splits: tuple[str, ...] = ("train", "balanced_train", "unbalanced_train")
    max_clips: int | None = None  # seed 000 Tables 3-4: a seeded subset of the training clips
    subset_seed: int = 0
    fbank_std_scale: float = 1.0  # normalisation (x - mean) / (std * scale); AST uses 2
    fbank_stats_from: str | None = None  # another dataset's fbank_stats (seed 001 normalises AudioCaps with AudioSet's)
    # other datasets whose clips of `splits` join the training set, all normalised with this experiment's
    # statistics (DenseAV trains on speech and sounds together: [synthav_places] next to synthav_vggsound)
    mix: tuple[str, ...] = ()
    # SpecAugment on the normalised FBANK, training only (assets/training/spec_augment.py): one mask of up to
    # freq_mask - 1 mel bins and one of up to time_mask - 1 frames per clip; VIP-ANT: 32 and 200; 0: off
    freq_mask: int = 0
    time_mask: int = 0
    num_workers: int | None = None  # threads assembling batches ahead; None: 1 on CUDA, 0 (in the loop) on the CPU
    prefetch: int = 4  # batches queued ahead of the device
    # processes (torchrun's --nproc_per_node and --nnodes): > 1 trains under DDP, launched by the audio_encoder
    # asset through Dagster Pipes; batch_size stays the global batch (split evenly over the ranks)
    nproc_per_node: int = 1
    nnodes: int = 1


@dataclass(frozen=True)
class EvalSpec:
    split: str = "test"
    size: int = 1000  # the seeds' 1000-sample evaluation sets
    seed: int = 0
    val_split: str = "val"  # per-epoch curve; when the dataset has no such split, a fixed train subset
    val_size: int = 256


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    path: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    stage: str = "audio_image"
    init_from: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    frames: FrameSpec = field(default_factory=FrameSpec)
    dense: DenseSpec = field(default_factory=DenseSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    epochs: int = 30
    batch_size: int = 128
    grad_accum: int = 1
    seeds: tuple[int, ...] = (0,)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    base: "Experiment | None" = field(default=None, compare=False, repr=False)  # init_from's experiment (load_experiments)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("path")
        d.pop("base")
        return d

    def fingerprint(self, seed: int | None = None) -> str:
        """What determines a run's weights: the config (not its description, tags or evaluation), the
        seed and, for a fine-tuning run, the fingerprint of the run it starts from."""
        d = self.to_dict()
        for k in ("name", "description", "tags", "seeds", "eval"):
            d.pop(k)
        if self.loss.kind != "denseav":  # fields added with DenseAV: runs of other methods keep their fingerprints
            d.pop("dense")
            for k in _DENSE_LOSS_FIELDS:
                d["loss"].pop(k)
        if not self.optim.clip_grad_per_tensor:
            d["optim"].pop("clip_grad_per_tensor")
        if self.model.kind != "hubert":  # fields added with the HuBERT featurizer
            for k in _HUBERT_MODEL_FIELDS:
                d["model"].pop(k)
        if self.loss.kind != "ccl":  # fields added with CCL
            for k in _CCL_LOSS_FIELDS:
                d["loss"].pop(k)
        if self.loss.kind != "speechclip":  # fields added with SpeechCLIP
            for k in _SPEECHCLIP_LOSS_FIELDS:
                d["loss"].pop(k)
        if not self.train.mix:  # added with the mixture: single-dataset runs keep their fingerprints
            d["train"].pop("mix")
        for k in ("nproc_per_node", "nnodes"):  # where it runs; only the world size changes per-rank random draws
            d["train"].pop(k)
        if self.train.nproc_per_node * self.train.nnodes > 1:
            d["world_size"] = self.train.nproc_per_node * self.train.nnodes
        if "dense" in d and not self.dense.patch_token_cache:
            d["dense"].pop("patch_token_cache")
        d["seed"] = seed
        if self.base is not None:
            d["base"] = self.base.fingerprint(seed)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]

    @property
    def table_set(self) -> set[str]:
        """The neighbour tables whose pairs are positives (org always)."""
        return {"org", *self.loss.tables} if self.loss.kind == "mined" else {"org"}


_SECTIONS = {"model": ModelSpec, "loss": LossSpec, "frames": FrameSpec, "dense": DenseSpec, "optim": OptimSpec,
             "train": TrainSpec, "eval": EvalSpec}
_NESTED = {"RegulariserWeights": RegulariserWeights}  # mappings inside a section


def _coerce(value: Any, annotation: str, where: str, source: str) -> Any:
    """Check a value against its field's type. YAML 1.1 reads `3e-4` (no dot) as a string, so
    float fields accept numeric strings; booleans are never numbers; a list field needs a list."""
    def fail(kind: str):
        raise ExperimentError(f"{source}: `{where}` must be {kind}, got {value!r}")

    optional = annotation.endswith("| None")
    if value is None:
        return None if optional else fail("set (not null)")
    base = annotation.removesuffix(" | None")
    if base == "float":
        if isinstance(value, bool):
            fail("a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            fail("a number")
        return number if math.isfinite(number) else fail("a finite number")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if base == "bool":
        return value if isinstance(value, bool) else fail("true or false")
    if base == "str":
        return value if isinstance(value, str) else fail("a string")
    if base.startswith("tuple["):
        if not isinstance(value, (list, tuple)):
            fail("a list")
        item = "int" if "int" in base else "str"
        return tuple(_coerce(v, item, where, source) for v in value)
    return value


def _build(cls, data: Any, where: str, source: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ExperimentError(f"{source}: `{where}` must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ExperimentError(f"{source}: unknown key(s) {unknown} in `{where}`; known: {sorted(known)}")
    kwargs = {key: (_build(_NESTED[known[key].type], value, f"{where}.{key}", source) if known[key].type in _NESTED
                    else _coerce(value, known[key].type, f"{where}.{key}", source)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ExperimentError(f"{source}: `{where}`: {e}") from e


def parse_experiment(data: dict, name: str, source: str = "<experiment>") -> Experiment:
    if not isinstance(data, dict):
        raise ExperimentError(f"{source}: an experiment file must be a YAML mapping")
    top = {f.name for f in fields(Experiment)} - {"name", "path", "base"}  # base: set by load_experiments
    unknown = sorted(set(data) - top)
    if unknown:
        raise ExperimentError(f"{source}: unknown key(s) {unknown}; known: {sorted(top)}")
    if "dataset" not in data:
        raise ExperimentError(f"{source}: `dataset` is required (a dataset name from configs/datasets)")
    types = {f.name: f.type for f in fields(Experiment)}
    kwargs = {k: (_build(_SECTIONS[k], v, k, source) if k in _SECTIONS else _coerce(v, types[k], k, source))
              for k, v in data.items()}
    exp = Experiment(name=name, path=source, **kwargs)
    validate(exp)
    return exp


def validate(exp: Experiment) -> None:
    src = exp.path or exp.name

    def fail(msg: str):
        raise ExperimentError(f"{src}: {msg}")

    if exp.stage not in STAGES:
        fail(f"stage must be one of {STAGES}, got {exp.stage!r}")
    if exp.model.kind not in MODEL_KINDS:
        fail(f"model.kind must be one of {MODEL_KINDS}, got {exp.model.kind!r}")
    if exp.model.kind == "hubert" and (exp.loss.kind != "speechclip" or not exp.model.weights):
        fail("model.kind hubert is SpeechCLIP's frozen featurizer: it needs loss.kind speechclip and model.weights "
             "(a local HuBERT checkpoint directory)")
    if exp.loss.kind not in LOSS_KINDS:
        fail(f"loss.kind must be one of {LOSS_KINDS}, got {exp.loss.kind!r}")
    bad = [t for t in exp.loss.tables if t not in ALL_TABLES]
    if bad:
        fail(f"loss.tables {bad} unknown; choose from {list(ALL_TABLES)}")
    if exp.loss.kind == "mined" and not set(exp.loss.tables) - {"org"}:
        fail("loss.kind mined needs at least one of t2t, t2i, i2t, i2i in loss.tables (org alone is plain InfoNCE)")
    if exp.loss.k < 1:
        fail(f"loss.k must be >= 1, got {exp.loss.k}")
    if exp.loss.kind == "speechclip":
        _validate_speechclip(exp, fail)
    elif exp.loss.mode not in MODES:
        fail(f"loss.mode must be one of {MODES}, got {exp.loss.mode!r}")
    if not 0.0 <= exp.loss.partner_share <= 1.0:
        fail(f"loss.partner_share must be in [0, 1], got {exp.loss.partner_share}")
    if exp.frames.strategy not in FRAME_STRATEGIES:
        fail(f"frames.strategy must be one of {FRAME_STRATEGIES}, got {exp.frames.strategy!r}")
    if exp.stage == "audio_text":
        if exp.loss.kind != "infonce":
            fail("audio_text fine-tuning uses loss.kind infonce (seed 001 eq. 5)")
        if exp.frames.strategy != "random":
            fail("frames.strategy applies to audio_image experiments only")
    if (exp.train.freq_mask or exp.train.time_mask) and exp.model.kind != "audio_vit":
        fail("train.freq_mask / train.time_mask (SpecAugment) apply to the audio ViT's FBANK input only")
    if exp.frames.nearest_rule not in NEAREST_RULES:
        fail(f"frames.nearest_rule must be one of {NEAREST_RULES}, got {exp.frames.nearest_rule!r}")
    if exp.model.pool not in POOLS:
        fail(f"model.pool must be one of {POOLS}, got {exp.model.pool!r}")
    if exp.model.pool == "segments" and (exp.model.kind != "audio_vit" or exp.frames.strategy == "multiframe"):
        fail("model.pool: segments needs the audio ViT, and multiframe runs use their segments already")
    if exp.model.trim_padding and exp.model.kind != "davenet":
        fail("model.trim_padding applies to davenet only (the audio ViT's input length is fixed)")
    if exp.model.kind == "davenet" and exp.frames.strategy == "multiframe":
        fail("multiframe needs per-segment audio embeddings, which only audio_vit provides")
    if exp.optim.optimizer not in ("lars", "adamw", "adam"):
        fail(f"optim.optimizer must be lars, adamw or adam, got {exp.optim.optimizer!r}")
    if exp.optim.clip_grad_per_tensor < 0:
        fail(f"optim.clip_grad_per_tensor must be >= 0, got {exp.optim.clip_grad_per_tensor}")
    if exp.loss.kind == "denseav":
        _validate_denseav(exp, fail)
    if exp.loss.kind == "ccl":
        _validate_ccl(exp, fail)
    if exp.optim.lr_scaling not in LR_SCALINGS:
        fail(f"optim.lr_scaling must be one of {LR_SCALINGS}, got {exp.optim.lr_scaling!r}")
    for name, value, low in (("epochs", exp.epochs, 1), ("batch_size", exp.batch_size, 2), ("grad_accum", exp.grad_accum, 1),
                             ("eval.size", exp.eval.size, 2), ("model.segments", exp.model.segments, 1),
                             ("train.freq_mask", exp.train.freq_mask, 0),
                             ("train.time_mask", exp.train.time_mask, 0),
                             ("train.num_workers", 0 if exp.train.num_workers is None else exp.train.num_workers, 0),
                             ("train.nproc_per_node", exp.train.nproc_per_node, 1), ("train.nnodes", exp.train.nnodes, 1)):
        if not isinstance(value, int) or value < low:
            fail(f"{name} must be an integer >= {low}, got {value!r}")
    world = exp.train.nproc_per_node * exp.train.nnodes if isinstance(exp.train.nproc_per_node, int) else 1
    if exp.batch_size % (exp.grad_accum * world):
        fail(f"batch_size {exp.batch_size} must be a multiple of grad_accum {exp.grad_accum} x "
             f"{world} processes (nproc_per_node x nnodes): every rank takes an equal part of the batch")
    if not exp.seeds or len(set(exp.seeds)) != len(exp.seeds):
        fail(f"seeds must be a non-empty list of distinct integers, got {list(exp.seeds)}")
    if exp.train.mix:
        if exp.dataset in exp.train.mix or len(set(exp.train.mix)) != len(exp.train.mix):
            fail(f"train.mix {list(exp.train.mix)} must name other datasets than {exp.dataset}, each once")
        if exp.loss.kind == "mined":
            fail("train.mix cannot be used with loss.kind mined: neighbour tables are mined within one dataset")
        if exp.stage != "audio_image":
            fail("train.mix applies to audio_image training")
    if exp.model.patch is not None and len(exp.model.patch) != 2 or len(exp.model.stride) != 2:
        fail("model.patch and model.stride are [time, frequency] pairs")


def _validate_ccl(exp: Experiment, fail) -> None:
    loss = exp.loss
    if exp.stage != "audio_image" or exp.frames.strategy != "random" or exp.grad_accum != 1:
        fail("loss.kind ccl is audio_image training against one random frame per clip (frames.strategy: random, "
             "grad_accum 1)")
    bad = [t for t in loss.teachers if t not in CCL_TEACHERS]
    if bad or len(set(loss.teachers)) != len(loss.teachers):
        fail(f"loss.teachers must be distinct names from {CCL_TEACHERS}, got {list(loss.teachers)}")
    for name in ("nce_temperature_image", "nce_temperature_text"):
        if not getattr(loss, name) > 0:
            fail(f"loss.{name} must be > 0, got {getattr(loss, name)}")
    if min(loss.jsd_weight, loss.teacher_weight, loss.composed_weight) < 0:
        fail("loss.jsd_weight, loss.teacher_weight and loss.composed_weight must be >= 0")


def _validate_speechclip(exp: Experiment, fail) -> None:
    loss = exp.loss
    if loss.mode not in SPEECHCLIP_MODES:
        fail(f"loss.mode must be one of {SPEECHCLIP_MODES} for speechclip, got {loss.mode!r}")
    if exp.stage != "audio_image" or exp.frames.strategy != "random" or exp.grad_accum != 1:
        fail("loss.kind speechclip is audio_image training against one frame per clip (frames.strategy: random, "
             "grad_accum 1)")
    if loss.keywords < 1:
        fail(f"loss.keywords must be >= 1, got {loss.keywords}")
    if not loss.keyword_temperature > 0:
        fail(f"loss.keyword_temperature must be > 0, got {loss.keyword_temperature}")
    if loss.bn_init not in BN_INITS:
        fail(f"loss.bn_init must be one of {BN_INITS}, got {loss.bn_init!r}")
    if loss.vocabulary not in ("captions", "full"):
        fail(f"loss.vocabulary must be captions or full, got {loss.vocabulary!r}")
    if loss.retrieval not in ("parallel", "cascaded") or (loss.mode != "both" and loss.retrieval != loss.mode
                                                          and loss.retrieval != "parallel"):
        fail(f"loss.retrieval must be parallel or cascaded (the branch a `both` model retrieves with), "
             f"got {loss.retrieval!r}")


def _validate_denseav(exp: Experiment, fail) -> None:
    loss, dense = exp.loss, exp.dense
    if exp.stage != "audio_image" or exp.frames.strategy != "random":
        fail("loss.kind denseav is audio_image training on one random frame per clip (frames.strategy: random)")
    if exp.grad_accum != 1 or exp.model.pool != "cls":
        fail("loss.kind denseav needs grad_accum 1 and model.pool cls")
    if loss.heads < 1 or loss.code_dim % loss.heads:
        fail(f"loss.code_dim {loss.code_dim} must split into loss.heads {loss.heads} (>= 1) equal heads")
    if loss.aggregation not in AGGREGATIONS:
        fail(f"loss.aggregation must be one of {sorted(AGGREGATIONS)}, got {loss.aggregation!r}")
    if loss.head_agg not in HEAD_AGGREGATIONS:
        fail(f"loss.head_agg must be one of {HEAD_AGGREGATIONS}, got {loss.head_agg!r}")
    if not 0.01 <= loss.calibration_init <= 100:
        fail(f"loss.calibration_init must be in [0.01, 100] (the calibrator's clamp), got {loss.calibration_init}")
    if loss.regularisers.samples < 1 or min(v for k, v in asdict(loss.regularisers).items() if k != "samples") < 0:
        fail("loss.regularisers: weights must be >= 0 and samples >= 1")
    if dense.train_image not in ("lora", "aligner", "frozen"):
        fail(f"dense.train_image must be lora, aligner or frozen, got {dense.train_image!r}")
    for name, value in (("time_pools", dense.time_pools), ("image_pool", dense.image_pool),
                        ("lora_rank", dense.lora_rank)):
        if value < 1:
            fail(f"dense.{name} must be >= 1, got {value}")
    if dense.random_window and exp.model.kind != "audio_vit":
        fail("dense.random_window silences FBANK frames; it applies to the audio ViT only (set it false for davenet)")
    if dense.patch_token_cache and dense.train_image == "lora":
        fail("dense.patch_token_cache needs dense.train_image aligner or frozen: with LoRA the tower's tokens change "
             "every step")
    if dense.aligner_warmup_steps < 0:
        fail(f"dense.aligner_warmup_steps must be >= 0, got {dense.aligner_warmup_steps}")


def load_experiment(path: Path) -> Experiment:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML: {e}") from e
    return parse_experiment(data, Path(path).stem, str(path))


def load_experiments(directory: Path) -> dict[str, Experiment]:
    """Every `*.yaml` under the directory (recursively), by name; names must be unique and
    every `init_from` must name another experiment of the same seeds."""
    found: dict[str, Experiment] = {}
    for path in sorted(Path(directory).rglob("*.yaml")):
        exp = load_experiment(path)
        if exp.name in found:
            raise ExperimentError(f"{path}: experiment name {exp.name!r} also used by {found[exp.name].path}")
        found[exp.name] = exp
    for exp in found.values():
        if exp.init_from is None:
            continue
        base = found.get(exp.init_from)
        if base is None:
            raise ExperimentError(f"{exp.path}: init_from {exp.init_from!r} is not an experiment in {directory}")
        if base.stage != "audio_image" or replace(base.model, pool="cls") != replace(exp.model, pool="cls"):
            raise ExperimentError(f"{exp.path}: init_from {exp.init_from!r} must be an audio_image experiment "
                                  "with the same model section")
        missing = sorted(set(exp.seeds) - set(base.seeds))
        if missing:
            raise ExperimentError(f"{exp.path}: seeds {missing} have no run in init_from {exp.init_from!r}")
        if base.init_from is not None:
            raise ExperimentError(f"{exp.path}: init_from {exp.init_from!r} is itself a fine-tuning run")
    return {name: replace(exp, base=found[exp.init_from]) if exp.init_from else exp for name, exp in found.items()}


def load_all_experiments() -> dict[str, Experiment]:
    """Every experiment this checkout declares (configs/experiments, or $CLIPKT_EXPERIMENTS_DIR)."""
    return load_experiments(experiments_dir())

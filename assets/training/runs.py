"""Running an experiment from the caches: what each seed trains on, where its files go, and
how its trained encoder is evaluated. The assets in `assets.training.assets`
call these with the cache layout (`assets.core.cache_layout.CacheLayout`).

Layout, under the cache root:

    experiments/<name>/seed_<s>/<fingerprint>/checkpoints/epoch_NNNN.{safetensors,state.pt}
    experiments/<name>/seed_<s>/<fingerprint>/final.safetensors, run.json
    experiments/<name>/metrics.json          the evaluation of the current runs, all seeds (with the
                                             final weights' mtimes, so an unchanged run is not re-evaluated)

The fingerprint covers everything that determines the weights (config without description,
tags and eval; the seed), so editing an experiment file starts new runs next to the old ones
instead of overwriting them.

Training clips: the experiment's training splits, `ok` in the audio cache (fbank_cache for the
audio ViT, logmel_cache for DaveNet) and in the teacher's frame embeddings (audio-image) or
caption embeddings (audio-text); `train.max_clips` takes a seeded subset (seed 000 Tables 3-4).
The evaluation subset: `eval.size` clips of `eval.split` (seeded; all of them when fewer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from assets.caches.fbank_stats import Normaliser, load_fbank_stats
from assets.core.atomic_io import write_json_atomic
from assets.core.device import resolve_device
from assets.core.seed_stats import mean_std
from assets.ingest.dataset_config import DatasetConfig
from assets.ingest.semantic_keys import group_ids, load_semantic_keys
from assets.mining.neighbor_search import read_table
from assets.training.class_labels import ClassLabels, class_labels
from assets.training.data import ClipSet, concat_clips, load_clips, seeded_subset
from assets.training.dense_evaluation import DENSE_SIMILARITY, dense_features, dense_retrieval_report
from assets.training.evaluation import COMMON_PROTOCOL, SIMILARITY_NAMES, embed_clips, retrieval_report
from assets.training.experiments import Experiment
from assets.training.head_split import head_split, paired_head_scores, summarise_head_splits
from assets.training.patch_token_cache import TOKENS_DIR, load_patch_tokens
from assets.training.recognition import class_logits, recognition_metrics
from assets.training.trainer import FINAL_WEIGHTS, RUN_FILE, Trainer, TrainInputs, audio_output, load_encoder_weights
from models.audio_encoder import build_audio_encoder, takes_lengths
from models.ccl import CCLModel
from models.clip_patch_tokens import ImagePatchTokens
from models.denseav import DenseAV
from models.speechclip import SpeechCLIP, caption_vocabulary, special_ids

CAPTION_FORMATS = ("places", "audiocaps")  # datasets whose texts are captions (the others: label prompts)
METRICS_FILE = "metrics.json"
SUMMARISED_METRICS = ("median_rank", "top1", "mAP")  # summarised over seeds besides R@k (top1, mAP: recognition)
PROTOCOL = ("R@k = fraction of queries whose best-ranked true match is within the top k; ties count against "
            "the model. A->I, I->A: one true match. A->T: a clip's captions are all true matches (best rank), "
            "T->A: every caption is a query with its one clip.")


@dataclass(frozen=True)
class RunOptions:
    """How a run uses this machine: not part of the experiment file, nor of its fingerprint."""
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:1
    max_memory_gb: float = 16.0  # training features beyond this are read in place from the audio cache (memory maps)
    torch_threads: int = 0  # CPU threads for torch; 0 = torch's default


RUN_DEFAULTS = RunOptions()


def run_dir(cache, exp: Experiment, seed: int) -> Path:
    return cache.experiment_dir(exp.name) / f"seed_{seed}" / exp.fingerprint(seed)


def weights_path(cache, exp: Experiment, seed: int) -> Path:
    """The final weights of the seed's current run (present once it finished)."""
    return run_dir(cache, exp, seed) / FINAL_WEIGHTS


def finished_run(cache, exp: Experiment, seed: int) -> dict | None:
    """run.json of the seed's current run when it completed, else None."""
    path = run_dir(cache, exp, seed) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class DataSources:
    audio_dir: Path
    image_dir: Path | None
    text_dir: Path | None
    layout: str  # features layout of the audio cache
    frame_dir: Path | None = None  # the frame cache, for methods that read pixels (DenseAV)


def data_sources(cache, ds: DatasetConfig, exp: Experiment, with_text: bool, with_frames: bool | None = None) -> DataSources:
    """Where the run's clips come from; `with_frames` (default: DenseAV runs) adds the frame cache's pixels."""
    base = cache.dataset_dir(ds.name)
    davenet = exp.model.kind == "davenet"
    if exp.model.kind == "hubert" and not ds.waveform_cache:
        raise ValueError(f"{exp.path}: the HuBERT featurizer reads 16 kHz waveforms; set `waveform_cache: true` in "
                         f"{ds.source or ds.name} and build its shards")
    if davenet and ds.format != "places":
        raise ValueError(f"{exp.path}: DaveNet reads the spoken-caption log-mel cache, which only places-format "
                         f"datasets have; {ds.name} is {ds.format}")
    audio_image = exp.stage == "audio_image"
    if exp.loss.kind == "speechclip" and ds.format != "places":
        raise ValueError(f"{exp.path}: SpeechCLIP learns from spoken captions of images (places format); "
                         f"{ds.name} is {ds.format}")
    if audio_image and ds.format == "audiocaps":
        raise ValueError(f"{exp.path}: {ds.name} is audio only (AudioCaps format); audio-image training needs frames")
    if exp.stage == "audio_text" and ds.format not in CAPTION_FORMATS:
        raise ValueError(f"{exp.path}: audio-text fine-tuning needs captions; {ds.name} ({ds.format}) has only labels")
    audio = {"davenet": "logmel_cache", "hubert": "waveform_cache"}.get(exp.model.kind, "fbank_cache")
    return DataSources(base / audio,
                       base / "clip_image_embeddings" if audio_image else None,
                       base / "clip_text_embeddings" if with_text else None,
                       {"davenet": "bins,frames", "hubert": "samples"}.get(exp.model.kind, "frames,bins"),
                       base / "frame_cache" if (exp.loss.kind == "denseav" if with_frames is None else with_frames) else None)


def normaliser(cache, ds: DatasetConfig, exp: Experiment, layout: str) -> Normaliser:
    if exp.model.kind in ("davenet", "hubert"):  # DaveNet's own batch norm; HuBERT takes samples as they are
        return Normaliser({"mean": 0.0, "std": 1.0}, layout=layout)
    source = exp.train.fbank_stats_from or ds.name
    try:
        stats = load_fbank_stats(cache, source)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{source} has no fbank_stats yet; materialise {source}/fbank_stats first") from e
    return Normaliser(stats, std_scale=exp.train.fbank_std_scale, layout=layout)


_LOADED: dict[tuple, ClipSet] = {}  # the last clip sets read in this process (a demo or backfill trains many
_LOADED_MAX = 2                     # experiments on the same clips), keyed by their files' sizes and mtimes


def load_clips_cached(cache, ds: DatasetConfig, src: "DataSources", splits, subset: tuple[int | None, int],
                      memory_gb: float | None) -> ClipSet:
    """load_clips, remembered for the next experiment in this process; features over `memory_gb`
    are read in place from the audio cache's feature arrays."""
    dirs = [d for d in (src.audio_dir, src.image_dir, src.text_dir, src.frame_dir) if d is not None]
    stamps = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for d in dirs for p in sorted(Path(d).glob("*.parquet")))
    key = (tuple(map(str, dirs)), src.image_dir is None, src.text_dir is None, src.frame_dir is None, tuple(splits),
           subset, memory_gb, stamps)
    if key not in _LOADED:
        clips = load_clips(src.audio_dir, splits, src.image_dir, src.text_dir, subset=subset,
                           memory_budget_bytes=None if memory_gb is None else int(memory_gb * 2**30),
                           frame_dir=src.frame_dir)
        while len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = clips
    return _LOADED[key]


def training_inputs(cache, ds: DatasetConfig, exp: Experiment, memory_gb: float | None = None,
                    mix: Sequence[DatasetConfig] = (), load_teacher: Callable[[], object] | None = None,
                    device: str = RUN_DEFAULTS.device, log: Callable[[str], None] = print) -> TrainInputs:
    """What every seed of `exp` trains on. `mix`: the datasets `train.mix` names, whose clips of the
    same splits are appended (`concat_clips`); all of them are normalised with `ds`'s statistics
    (or `train.fbank_stats_from`), validation stays on `ds`, and semantic keys are kept per dataset
    (a key of one dataset never groups with another's). `dense.patch_token_cache`: the clips carry
    the teacher's patch tokens of their frames, built per shard where missing (`load_teacher`)."""
    _check_mix(exp, mix)
    src = data_sources(cache, ds, exp, with_text=exp.stage == "audio_text" or exp.loss.kind == "speechclip"
                       or (exp.loss.kind == "ccl" and "text" in exp.loss.teachers))
    subset = (exp.train.max_clips, exp.train.subset_seed)
    own = load_clips_cached(cache, ds, src, exp.train.splits, subset, memory_gb)
    embed_dim = embedding_dim(own)
    parts = [(ds.name, own)] + [
        (m.name, load_clips_cached(cache, m, data_sources(cache, m, exp, with_text=False), exp.train.splits,
                                   subset, memory_gb)) for m in mix]
    if exp.loss.kind == "denseav" and exp.dense.patch_token_cache:
        parts = _with_patch_tokens(cache, parts, load_teacher, device, log)
    train = concat_clips(parts, frame_embeddings=exp.loss.kind != "denseav") if len(parts) > 1 else parts[0][1]
    neighbours = shortfall = None
    if exp.loss.kind == "mined":
        neighbours = _neighbour_inputs(cache, ds, exp, train)
        shortfall = {t: int((ids < 0).any(axis=1).sum()) for t, ids in neighbours.items()}
    keys = {}
    for d in (ds, *mix):
        keys.update({cid: f"{d.name}/{key}" for cid, key in (load_semantic_keys(d) or {}).items()})
    groups = group_ids(train.clip_ids, keys) if keys else None
    val, label = _validation_clips(cache, ds, src, exp, own)
    speechclip = exp.loss.kind == "speechclip"
    labels = dataset_labels(cache, ds, train.clip_ids) if exp.loss.kind == "ccl" else None
    return TrainInputs(train, normaliser(cache, ds, exp, src.layout), neighbours, val, label, shortfall, groups,
                       embed_dim, image_groups(cache, (ds, *mix), train.clip_ids) if speechclip else None, labels)


def _with_patch_tokens(cache, parts: list[tuple[str, ClipSet]], load_teacher: Callable[[], object] | None,
                       device: str, log) -> list[tuple[str, ClipSet]]:
    """Each part with its clips' cached patch tokens (`assets.training.patch_token_cache`)."""
    if load_teacher is None:
        raise ValueError("dense.patch_token_cache needs the teacher to build the token cache")
    teacher = load_teacher()
    tower = ImagePatchTokens(teacher.model.visual, teacher.mean, teacher.std)
    out = []
    for name, clips in parts:
        base = cache.dataset_dir(name)
        tokens = load_patch_tokens(clips.clip_ids, base / "frame_cache", base / TOKENS_DIR, tower, teacher.describe(),
                                   resolve_device(device), log)
        out.append((name, dataclasses.replace(clips, patch_tokens=tokens)))
    return out


def _check_mix(exp: Experiment, mix: Sequence[DatasetConfig]) -> None:
    if [m.name for m in mix] != list(exp.train.mix):
        raise ValueError(f"{exp.path}: train.mix names {list(exp.train.mix)}, but the datasets given are "
                         f"{[m.name for m in mix]}")


def _neighbour_inputs(cache, ds: DatasetConfig, exp: Experiment, train: ClipSet) -> dict[str, np.ndarray]:
    """Per chosen table, each training clip's first k neighbours among the clips being trained on, as
    training-clip rows ((N, k), -1 where fewer remain or the tables do not cover the clip). The tables
    are mined over every training clip; a subset run (seed 000 Tables 3-4) keeps the neighbours inside
    its subset in rank order."""
    try:
        tables_dir = cache.current_neighbor_tables(ds.name)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{exp.path}: the mined loss needs {ds.name}'s neighbour tables; "
                                f"materialise {ds.name}/neighbor_tables first") from e
    clip_ids = pq.read_table(tables_dir / "clips.parquet", columns=["clip_id"]).column("clip_id").to_pylist()
    row_of = {c: i for i, c in enumerate(clip_ids)}
    table_rows = np.asarray([row_of.get(c, -1) for c in train.clip_ids], np.int64)
    covered = table_rows >= 0
    train_row = np.full(len(clip_ids) + 1, -1, np.int64)  # table row -> training row; slot -1: none
    train_row[table_rows[covered]] = np.flatnonzero(covered)
    neighbours = {}
    for t in exp.loss.tables:
        if t == "org":
            continue
        path = tables_dir / f"{t}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{exp.path}: table {t} was not mined for {ds.name} ({path} missing); "
                                    + ("declare the dataset's semantic_keys" if t == "oracle"
                                       else "add it to neighbor_tables' `tables`"))
        _, ids, _ = read_table(path)
        if exp.loss.k > ids.shape[1]:
            raise ValueError(f"{exp.path}: loss.k={exp.loss.k} but {ds.name}'s {t} table holds {ids.shape[1]} "
                             f"neighbours per clip; re-materialise neighbor_tables with k_max >= {exp.loss.k}")
        within = neighbours_within(ids, train_row[:-1] >= 0, exp.loss.k)  # (table rows, k) of table rows
        rows = np.full((len(train), exp.loss.k), -1, np.int32)  # 4 bytes: 100K clips x k=1000 x 5 tables = 2 GB
        rows[covered] = train_row[within[table_rows[covered]]]  # -1 stays -1 (slot -1)
        neighbours[t] = rows
    return neighbours


def neighbours_within(ids: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """(rows, k): each row's first k neighbours (in rank order) that `keep` marks; -1 where fewer remain."""
    valid = (ids >= 0) & keep[np.clip(ids, 0, None)]
    order = np.argsort(~valid, axis=1, kind="stable")[:, :k]  # kept columns first, rank order preserved
    picked = np.take_along_axis(ids, order, axis=1)
    return np.where(np.take_along_axis(valid, order, axis=1), picked, -1)


def _validation_clips(cache, ds: DatasetConfig, src: DataSources, exp: Experiment, train: ClipSet) -> tuple[ClipSet | None, str]:
    if exp.eval.val_size < 2:
        return None, ""
    try:
        return load_clips_cached(cache, ds, src, [exp.eval.val_split], (exp.eval.val_size, exp.eval.seed), None), exp.eval.val_split
    except ValueError:  # no such split (SynthAV VGGSound: train/test only): a fixed train subset
        return train.subset(seeded_subset(len(train), exp.eval.val_size, exp.eval.seed)), "train subset"


def needs_teacher(exp: Experiment) -> bool:
    """The audio ViT starts from the teacher's image tower; DenseAV also runs that tower on frames;
    SpeechCLIP reads keywords through its text tower."""
    return exp.model.kind == "audio_vit" or exp.loss.kind in ("denseav", "speechclip")


def build_encoder(exp: Experiment, teacher, embed_dim: int, seed: int, vocabulary: torch.Tensor | None = None,
                  classes: int | None = None):
    """The trained model: the audio encoder, or for DenseAV the whole `models.denseav.DenseAV`
    (its audio backbone this encoder), or for SpeechCLIP `models.speechclip.SpeechCLIP` (this
    encoder its featurizer; `vocabulary` its token table's ids, None: the whole vocabulary, as a
    model about to load trained weights, which carry their own), or for CCL `models.ccl.CCLModel`
    around it (`classes` outputs), built deterministically from `seed`."""
    m = exp.model
    visual = teacher.model.visual if (m.kind == "audio_vit" and teacher is not None) else None
    audio = build_audio_encoder(m.kind, visual, embed_dim, seed, time_frames=m.time_frames, mel_bins=m.mel_bins,
                                patch=m.patch, stride=m.stride, layers=m.layers, width=m.width,
                                trim_padding=m.trim_padding, weights=m.weights, layer_norm_states=m.layer_norm_states)
    if exp.loss.kind == "speechclip":
        return _speechclip(exp, teacher, audio, embed_dim, seed, vocabulary)
    if exp.loss.kind == "ccl":
        if not classes:
            raise ValueError(f"{exp.path}: a CCL model needs the dataset's number of classes")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return CCLModel(audio, embed_dim, classes, exp.loss.teachers, takes_lengths(audio))
    if exp.loss.kind != "denseav":
        return audio
    d = exp.dense
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image = ImagePatchTokens(teacher.model.visual, teacher.mean, teacher.std,
                                 lora_rank=d.lora_rank if d.train_image == "lora" else None, lora_alpha=d.lora_alpha)
        return DenseAV(audio, image, exp.loss.code_dim, d.time_pools, d.image_pool, d.train_image)


def _speechclip(exp: Experiment, teacher, featurizer, embed_dim: int, seed: int, vocabulary) -> SpeechCLIP:
    loss = exp.loss
    pad, start, end = special_ids(teacher.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SpeechCLIP(featurizer, teacher.model, loss.mode, embed_dim, token_ids=vocabulary,
                          excluded_ids=(pad, start, end), start_id=start, end_id=end, keywords=loss.keywords,
                          temperature=loss.keyword_temperature, batchnorm=loss.keyword_batchnorm, bn_init=loss.bn_init,
                          retrieval=loss.retrieval if loss.mode == "both" else loss.mode)


def training_vocabulary(exp: Experiment, teacher, train: ClipSet) -> torch.Tensor | None:
    """SpeechCLIP's token table ids: those of the training captions (`loss.vocabulary: captions`), or None."""
    if exp.loss.kind != "speechclip" or exp.loss.vocabulary == "full":
        return None
    if train.caption_texts is None:
        raise ValueError(f"{exp.path}: the captions vocabulary needs the training clips' caption texts")
    return caption_vocabulary(teacher.tokenizer, [t for texts in train.caption_texts for t in texts])


def image_groups(cache, datasets: Sequence[DatasetConfig], clip_ids: list[str]) -> np.ndarray:
    """(N,) int64: clips showing the same picture share a value (the manifest's image_path: several spoken
    captions of one image, as Flickr8k's five); clips without an image path (video) are their own group."""
    image_of: dict[str, str] = {}
    for ds in datasets:
        table = pq.read_table(cache.manifest_path(ds.name), columns=["clip_id", "image_path"])
        for cid, path in zip(table.column("clip_id").to_pylist(), table.column("image_path").to_pylist()):
            if path:
                image_of[cid] = f"{ds.name}/{path}"
    keys = [image_of.get(c, f"clip/{c}") for c in clip_ids]
    return np.unique(np.asarray(keys, dtype=object), return_inverse=True)[1].astype(np.int64)


def dataset_labels(cache, ds: DatasetConfig, clip_ids: list[str]) -> ClassLabels:
    """The clips' class labels over the vocabulary of `ds`'s whole manifest (`assets.training.class_labels`)."""
    return class_labels(cache.manifest_path(ds.name), clip_ids)


def embedding_dim(clips: ClipSet) -> int:
    """The teacher's embedding dimension, read off the clips' frame (or caption) embeddings."""
    return int((clips.frames if clips.frames is not None else clips.captions[0]).shape[-1])


def train_experiment(cache, ds: DatasetConfig, exp: Experiment, seeds: list[int], load_teacher: Callable[[], object],
                     experiments: dict[str, Experiment], options: RunOptions = RUN_DEFAULTS,
                     log: Callable[[str], None] = print, warn: Callable[[str], None] | None = None,
                     mix: Sequence[DatasetConfig] = ()) -> tuple[dict[int, dict], list[int]]:
    """Train each of `seeds` whose current run has not finished (resuming its checkpoints); the
    training inputs are read once, for the first seed that trains. `load_teacher` is called only
    for the audio ViT (initialised from the teacher's image tower); `experiments` resolves init_from;
    `mix` are the datasets of `train.mix`. Returns ({seed: its run.json summary}, the seeds trained now)."""
    if options.torch_threads:
        torch.set_num_threads(options.torch_threads)
    runs, trained, inputs = {}, [], None
    for seed in seeds:
        runs[seed] = finished_run(cache, exp, seed)
        if runs[seed] is not None:
            continue
        if inputs is None:
            inputs = training_inputs(cache, ds, exp, options.max_memory_gb, mix, load_teacher, options.device, log)
            _log_inputs(ds, exp, inputs, log, warn or log)
        teacher = load_teacher() if needs_teacher(exp) else None
        runs[seed] = train_seed(cache, ds, exp, seed, teacher, inputs, experiments, options.device, log=log)
        trained.append(seed)
    return runs, trained


def _log_inputs(ds: DatasetConfig, exp: Experiment, inputs: TrainInputs, log, warn) -> None:
    log(f"{exp.name}: {len(inputs.train)} training clips of {' + '.join((ds.name, *exp.train.mix))} "
        f"(left out: {inputs.train.skipped or 'none'}); validation: {inputs.val_label}")
    if inputs.neighbour_shortfall and any(inputs.neighbour_shortfall.values()):
        warn(f"{exp.name}: training clips with fewer than k={exp.loss.k} mined neighbours "
             f"inside the training set, per table: {inputs.neighbour_shortfall} (raise neighbor_tables' k_max)")


def train_seed(cache, ds: DatasetConfig, exp: Experiment, seed: int, teacher, inputs: TrainInputs,
               experiments: dict[str, Experiment], device: str = RUN_DEFAULTS.device, log=print,
               stop_after_epoch: int | None = None) -> dict:
    """Train one seed (resuming its checkpoints); returns its run.json summary."""
    dev = resolve_device(device)
    model = build_encoder(exp, teacher, inputs.embed_dim or embedding_dim(inputs.train), seed,
                          training_vocabulary(exp, teacher, inputs.train),
                          None if inputs.labels is None else len(inputs.labels.classes))
    if exp.init_from is not None:
        base = experiments[exp.init_from]
        weights = weights_path(cache, base, seed)
        if not weights.is_file():
            raise FileNotFoundError(f"{exp.path}: starts from {exp.init_from} seed {seed}, which has no finished run "
                                    f"({weights} missing); materialise audio_encoder partition {exp.init_from} first")
        load_encoder_weights(model, weights)
    trainer = Trainer(exp, seed, model, inputs, run_dir(cache, exp, seed), dev, log)
    return trainer.fit(stop_after_epoch)


def evaluation_clips(cache, ds: DatasetConfig, exp: Experiment, with_frames: bool | None = None) -> tuple[ClipSet, bool]:
    """(the seeded evaluation subset, whether A->T / T->A are measured)."""
    with_text = ds.format in CAPTION_FORMATS
    src = data_sources(cache, ds, exp, with_text, with_frames)
    return load_clips_cached(cache, ds, src, [exp.eval.split], (exp.eval.size, exp.eval.seed), None), with_text


def evaluate_experiment(cache, ds: DatasetConfig, exp: Experiment, load_teacher: Callable[[], object],
                        device: str = RUN_DEFAULTS.device, mix: Sequence[DatasetConfig] = ()) -> tuple[dict, bool]:
    """The experiment's metrics document, and whether it was up to date: metrics.json is kept when it
    belongs to the current runs and no seed's final weights changed since (mtime); otherwise every
    seed is evaluated and metrics.json rewritten. `load_teacher` is called only for the audio ViT.
    Retrieval is measured on `ds`; a multi-head DenseAV run trained on a mixture (`mix`, the datasets
    of `train.mix`) also gets its head split over the evaluation clips of every source (`head_split`)."""
    _check_mix(exp, mix)
    doc = read_metrics(cache, exp)
    if doc is not None:
        stored = doc.get("weights_mtime_ns", {})
        if all(stored.get(s) == m for s, m in _weights_mtimes(cache, exp).items()):
            return doc, True
    clips, with_text = evaluation_clips(cache, ds, exp)
    teacher = load_teacher() if needs_teacher(exp) else None
    sources = _head_split_sources(cache, ds, exp, clips, mix)
    per_seed, splits = {}, {}
    for s in exp.seeds:
        per_seed[s], split = evaluate_seed(cache, ds, exp, s, teacher, clips, with_text, device, sources)
        if split is not None:
            splits[s] = split
    doc = metrics_document(exp, ds, clips, with_text, per_seed)
    if splits:
        doc["head_split"] = {"eval": {name: {"split": c.splits[0], "clips": len(c), "clip_ids_sha256": _ids_digest(c.clip_ids)}
                                      for name, (_, c) in sources.items()},
                             "per_seed": {str(s): v for s, v in splits.items()}, "summary": summarise_head_splits(splits)}
    doc["weights_mtime_ns"] = _weights_mtimes(cache, exp)
    write_metrics(cache, exp, doc)
    return doc, False


def _head_split_sources(cache, ds: DatasetConfig, exp: Experiment, clips: ClipSet,
                        mix: Sequence[DatasetConfig]) -> dict[str, tuple[DatasetConfig, ClipSet]]:
    """{dataset: (config, evaluation clips)} of every training source when the run is a multi-head
    DenseAV mixture, else {}. A mixed-in dataset's clips: `eval.size` of its `eval.split`, or of its
    `eval.val_split` when it has no such split (SynthAV Places has train and val only)."""
    if exp.loss.kind != "denseav" or exp.loss.heads < 2 or not mix:
        return {}
    sources = {ds.name: (ds, clips)}
    for m in mix:
        src = data_sources(cache, m, exp, with_text=False)
        for split in dict.fromkeys((exp.eval.split, exp.eval.val_split)):
            try:
                sources[m.name] = (m, load_clips_cached(cache, m, src, [split], (exp.eval.size, exp.eval.seed), None))
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"{exp.path}: {m.name} has no usable clips in {exp.eval.split} or {exp.eval.val_split} "
                             "to measure the head split on")
    return sources


def _weights_mtimes(cache, exp: Experiment) -> dict[str, int | None]:
    """{seed: mtime_ns of its final weights, None when absent}: tells a re-trained run from the evaluated one."""
    return {str(s): _mtime(weights_path(cache, exp, s)) for s in exp.seeds}


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def evaluate_seed(cache, ds: DatasetConfig, exp: Experiment, seed: int, teacher, clips: ClipSet, with_text: bool,
                  device: str = RUN_DEFAULTS.device,
                  head_split_sources: dict[str, tuple[DatasetConfig, ClipSet]] | None = None) -> tuple[dict, dict | None]:
    """(the seed's retrieval report on `clips`, its head split over `head_split_sources` or None)."""
    dev = resolve_device(device)
    labels = dataset_labels(cache, ds, clips.clip_ids) if exp.loss.kind == "ccl" else None
    model = trained_model(cache, exp, seed, teacher, embedding_dim(clips), dev,
                          None if labels is None else len(labels.classes))
    src = data_sources(cache, ds, exp, with_text)
    normalise = normaliser(cache, ds, exp, src.layout)
    if exp.loss.kind != "denseav":
        emb = embed_clips(model, clips, normalise, dev, audio_output(exp, clips))
        report = retrieval_report(emb, clips, exp.frames.strategy, with_text)
        if labels is not None:
            report["recognition"] = recognition_metrics(class_logits(model, clips, normalise, dev), labels)
        return report, None
    loss = exp.loss
    features = dense_features(model, clips, normalise, dev)
    report = dense_retrieval_report(features, loss.heads, loss.aggregation)
    if not head_split_sources:
        return report, None
    scores = {name: paired_head_scores(features if name == ds.name else dense_features(model, c, normalise, dev),
                                       loss.heads, loss.aggregation)
              for name, (_, c) in head_split_sources.items()}
    return report, head_split(scores)


def trained_model(cache, exp: Experiment, seed: int, teacher, embed_dim: int, device: torch.device,
                  classes: int | None = None):
    """The seed's finished run as a model on `device` (built as training built it, its final weights
    loaded); a seed without final weights is a FileNotFoundError naming the partition to materialise."""
    weights = weights_path(cache, exp, seed)
    if not weights.is_file():
        raise FileNotFoundError(f"{exp.name} seed {seed} has no trained weights ({weights}); "
                                f"materialise audio_encoder partition {exp.name} first")
    model = build_encoder(exp, teacher, embed_dim, seed, classes=classes)
    load_encoder_weights(model, weights)
    return model.to(device)


def summarise_seeds(per_seed: dict[int, dict]) -> dict:
    """{direction: {metric: {"mean", "std", "values"}}}; std is the sample std over seeds (0 for one seed)."""
    directions = sorted({d for r in per_seed.values() for d in r})
    out = {}
    for d in directions:
        metrics = [k for k in next(iter(per_seed.values()))[d] if k.startswith("R@") or k in SUMMARISED_METRICS]
        out[d] = {}
        for m in metrics:
            values = [float(per_seed[s][d][m]) for s in sorted(per_seed)]
            out[d][m] = mean_std(values)
    return out


def metrics_document(exp: Experiment, ds: DatasetConfig, clips: ClipSet, with_text: bool, per_seed: dict[int, dict]) -> dict:
    first = next(iter(per_seed.values()))
    return {
        "experiment": exp.name, "dataset": ds.name, "description": exp.description, "tags": list(exp.tags),
        "stage": exp.stage, "model": exp.model.kind, "frames": exp.frames.strategy,
        "nearest_start_epoch": exp.frames.nearest_start_epoch if exp.frames.strategy == "nearest" else None,
        "nearest_rule": exp.frames.nearest_rule if exp.frames.strategy == "nearest" else None,
        "loss": exp.loss.kind, "mode": exp.loss.mode if exp.loss.kind == "mined" else None,
        "tables": sorted(exp.table_set), "k": exp.loss.k if exp.loss.kind == "mined" else None,
        "seeds": sorted(per_seed), "fingerprints": {str(s): exp.fingerprint(s) for s in sorted(per_seed)},
        "train_mix": list(exp.train.mix),
        "eval": {"split": exp.eval.split, "clips": len(clips), "seed": exp.eval.seed, "requested": exp.eval.size,
                 "queries": {d: first[d]["queries"] for d in first if d != "recognition"},
                 "chance_R@10": {d: min(1.0, 10 * first[d]["chance_R@1"]) for d in first if d != "recognition"},
                 "audio_image_similarity": (DENSE_SIMILARITY if exp.loss.kind == "denseav" else
                                            SIMILARITY_NAMES[exp.frames.strategy]) if clips.frames is not None else None,
                 "common_protocol": COMMON_PROTOCOL if clips.frames is not None and exp.loss.kind != "denseav" else None,
                 "text": "captions" if with_text else None,
                 "clip_ids_sha256": _ids_digest(clips.clip_ids)},
        "eval_config": asdict(exp.eval), "protocol": PROTOCOL, "per_seed": {str(s): r for s, r in sorted(per_seed.items())},
        "summary": summarise_seeds(per_seed),
    }


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def metrics_path(cache, exp: Experiment) -> Path:
    return cache.experiment_dir(exp.name) / METRICS_FILE


def write_metrics(cache, exp: Experiment, doc: dict) -> Path:
    path = metrics_path(cache, exp)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)
    return path


def read_metrics(cache, exp: Experiment) -> dict | None:
    """The experiment's metrics.json when it belongs to its current runs (same fingerprints), else None."""
    path = metrics_path(cache, exp)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    current = {str(s): exp.fingerprint(s) for s in exp.seeds}
    return doc if doc.get("fingerprints") == current and doc.get("eval_config") == asdict(exp.eval) else None


def current_metrics(cache, experiments: dict[str, Experiment], names: Sequence[str] = (), tags: Sequence[str] = ()
                    ) -> tuple[list[dict], list[str]]:
    """The current metrics documents of the chosen experiments (those named, [] = all; then those with
    any of `tags`, [] = no filter), in name order, and the names of the chosen ones without."""
    docs, missing = [], []
    for name, exp in sorted(experiments.items()):
        if (names and name not in names) or (tags and not set(tags) & set(exp.tags)):
            continue
        doc = read_metrics(cache, exp)
        if doc is None:
            missing.append(exp.name)
        else:
            docs.append(doc)
    return docs, missing

"""The demo's CLIP teacher, fitted here: a tiny open_clip model (`models.tiny_clip`) trained on one
dataset's image-caption pairs (SynthAV Places: the cached pictures and their `asr_text`).

No pretrained CLIP weights can be downloaded on an offline machine, so the demo fits its own
(`fit_tiny_clip`: symmetric InfoNCE with a learnable logit scale, AdamW, linear warmup then
cosine decay, fixed data order; deterministic, about 2 minutes on 2 CPU cores at demo size) and
reports its zero-shot image<->text R@k on the held-out split (`retrieval_recall`, by
`assets.core.recall`'s rule). The weights (a state dict) and the open_clip
model config land in `<cache>/teacher/`, where the teacher resource finds them when
CLIPKT_TEACHER=tiny (the Makefile sets it). A rerun with the same pairs and fit settings is
skipped (`build_tiny_teacher`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from assets.core.atomic_io import atomic_path, read_parquet_metadata, write_json_atomic
from assets.core.plots import figure_png, subplots
from assets.core.recall import recall_metrics
from assets.core.schedule import warmup_cosine
from assets.mining.teacher_embedding import decode_frames
from losses.contrastive import symmetric_cross_entropy
from models.teacher_weights import file_sha256, save_weights
from models.tiny_clip import (TINY_CLIP_CONFIG, create_tiny_clip, encode_images, encode_texts, preprocess_images,
                              tokenize)

CODE_VERSION = "2"


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    threads: int = 2
    max_logit_scale: float = 100.0   # clamp of exp(logit_scale), as open_clip's training does
    hflip: bool = True               # random horizontal flips (captions never say left/right)

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate at `step` (0-based) of `total_steps`: linear warmup to `lr`, then a cosine
        that would reach 0 one step after the last (so the last step still moves the weights)."""
        return warmup_cosine(step, self.lr, self.warmup_steps, decay_steps=total_steps - self.warmup_steps)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's convention: no weight decay on biases, norms, embeddings, logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
                   or "logit_scale" in name or "embedding" in name)
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


class _Deterministic:
    """Thread count and deterministic algorithms for the duration of a fit, restored after."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        self.prev_threads = torch.get_num_threads()
        self.prev_det = torch.are_deterministic_algorithms_enabled()
        self.prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(True)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev_threads)
        torch.use_deterministic_algorithms(self.prev_det, warn_only=self.prev_warn)
        return False


def fit_tiny_clip(images: np.ndarray, captions: list[str], cfg: FitConfig = FitConfig(),
                  progress: Callable[[int, float], None] | None = None,
                  config: dict | None = None) -> tuple[nn.Module, list[float]]:
    """Fit a tiny CLIP (`models.tiny_clip`, or the open_clip model `config`) on (N, S, S, 3) uint8
    images and their N captions.

    Deterministic on CPU for a fixed (data, cfg, thread count): same seed -> bit-identical
    weights. `progress(epoch, mean_loss)` is called after each epoch. Returns the model
    (eval mode, parameters frozen) and the mean training loss per epoch."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) < 2:
        raise ValueError("need at least 2 pairs for a contrastive loss")
    model_cfg = config if config is not None else TINY_CLIP_CONFIG
    with _Deterministic(cfg.threads), torch.random.fork_rng(devices=[]):
        model = create_tiny_clip(cfg.seed, config)
        x_all = preprocess_images(images, model_cfg["vision_cfg"]["image_size"])
        t_all = tokenize(captions, model_cfg["text_cfg"]["context_length"])
        n = len(x_all)
        batch = min(cfg.batch_size, n)
        steps_per_epoch = n // batch          # drop the last partial batch (contrastive batches stay full)
        total = steps_per_epoch * cfg.epochs
        opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        order_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x7C11]))
        max_log_scale = math.log(cfg.max_logit_scale)
        model.train()
        losses: list[float] = []
        step = 0
        for epoch in range(cfg.epochs):
            perm = order_rng.permutation(n)
            flips = order_rng.random(n) < 0.5 if cfg.hflip else np.zeros(n, bool)
            total_loss = 0.0
            for b in range(steps_per_epoch):
                idx = perm[b * batch:(b + 1) * batch]
                idx_t = torch.from_numpy(idx)
                x = x_all[idx_t]
                f = torch.from_numpy(flips[idx])
                if f.any():
                    x = torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr_at(step, total)
                img_f = model.encode_image(x, normalize=True)    # (B, D), unit rows
                txt_f = model.encode_text(t_all[idx_t], normalize=True)
                logits = model.logit_scale.exp() * img_f @ txt_f.T   # (scale * img) @ txt.T: this order
                loss = symmetric_cross_entropy(logits)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, max_log_scale)
                total_loss += float(loss.detach())
                step += 1
            losses.append(total_loss / max(1, steps_per_epoch))
            if progress is not None:
                progress(epoch, losses[-1])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, losses


def recall_from_similarity(sim: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Image->text and text->image R@k from an (N, N) similarity matrix whose diagonal holds the
    true pairs (rows = images, columns = captions), by `assets.core.recall`'s rule (a caption or
    image scoring as high as the true one ranks ahead of it). Keys: "n", "i2t_R@k", "t2i_R@k"
    (fractions in [0, 1]) and "i2t_median_rank", "t2i_median_rank" (1-based)."""
    sim = np.asarray(sim)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"need a square similarity matrix, got {sim.shape}")
    own = [[i] for i in range(len(sim))]
    out: dict = {"n": len(sim)}
    for name, m in (("i2t", sim), ("t2i", sim.T)):
        r = recall_metrics(m, own, ks)
        out |= {f"{name}_R@{k}": r[f"R@{k}"] for k in ks}
        out[f"{name}_median_rank"] = r["median_rank"]
    return out


def retrieval_recall(model: nn.Module, images: np.ndarray, captions: Sequence[str],
                     ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Image->text and text->image R@k with one caption per image (caption i belongs to image i)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    with torch.inference_mode():
        sim = encode_images(model, images) @ encode_texts(model, captions).T
    return recall_from_similarity(sim, ks)


@dataclass(frozen=True)
class TinyTeacherParams:
    """Which pairs the tiny teacher is fitted and evaluated on, and the fit settings (`FitConfig`)."""
    train_splits: tuple[str, ...] = ("train",)
    eval_splits: tuple[str, ...] = ("val", "test")  # Places audio captions: val; others: test
    eval_pairs: int = 1000  # the papers' 1000-item evaluation protocol
    fit: FitConfig = FitConfig()

    def fingerprint_fields(self) -> dict:
        """The settings as the asset's config has always recorded them (its fingerprint's input)."""
        fit = asdict(self.fit)
        return {"train_splits": list(self.train_splits), "eval_splits": list(self.eval_splits),
                "eval_pairs": self.eval_pairs} | {k: fit[k] for k in TINY_TEACHER_FIT_FIELDS}


# The FitConfig fields a user sets on the asset (the rest keep FitConfig's defaults).
TINY_TEACHER_FIT_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "threads", "seed")


def load_pairs(frame_paths: list, shard_paths: list, splits) -> tuple[np.ndarray, list[str], list[str]]:
    """(images (N, S, S, 3) uint8, captions, clip ids) of the clips in `splits` with a cached frame
    and a caption: the middle cached frame (Places: the picture) and the first caption."""
    images, captions, ids = [], [], []
    for frame_path, shard_path in zip(frame_paths, shard_paths):
        caption_of = {m["clip_id"]: m["captions"][0] for m in
                      pq.read_table(shard_path, columns=["clip_id", "captions"]).to_pylist() if m["captions"]}
        t = pq.read_table(frame_path, columns=["clip_id", "split", "status", "frames"])
        for clip_id, split, status, frames in zip(*(t.column(c).to_pylist() for c in t.column_names)):
            if status == "ok" and split in splits and clip_id in caption_of and frames:
                images.append(decode_frames([frames[len(frames) // 2]])[0])
                captions.append(caption_of[clip_id])
                ids.append(clip_id)
    if not images:
        return np.zeros((0, 0, 0, 3), np.uint8), [], []
    return np.stack(images), captions, ids


def build_tiny_teacher(frame_paths: list[Path], shard_paths: list[Path], weights: Path, config_path: Path,
                       params: TinyTeacherParams, log=print) -> tuple[dict, bool]:
    """Fit (unless the weights on disk come from the same pairs and settings) and write the weights,
    the model config and `<weights>.report.json`. Returns (the report, whether it was up to date)."""
    report_path = weights.with_suffix(".report.json")
    fingerprint = hashlib.sha256(json.dumps({
        "code": CODE_VERSION, "config": params.fingerprint_fields(), "model": TINY_CLIP_CONFIG,
        "frames": [read_parquet_metadata(p)["clipkt.fingerprint"] for p in frame_paths],
        "shards": [read_parquet_metadata(p)["clipkt.digest"] for p in shard_paths]}, sort_keys=True).encode()).hexdigest()[:16]
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if report.get("fingerprint") == fingerprint and weights.exists() and file_sha256(weights) == report.get("weights_sha256"):
        return report, True
    train_x, train_c, _ = load_pairs(frame_paths, shard_paths, params.train_splits)
    eval_x, eval_c, _ = load_pairs(frame_paths, shard_paths, params.eval_splits)
    eval_x, eval_c = eval_x[:params.eval_pairs], eval_c[:params.eval_pairs]
    if len(train_c) < 2 or len(eval_c) < 2:
        raise ValueError(f"{len(train_c)} train / {len(eval_c)} eval image-caption pairs; need at least 2 of each "
                         f"(splits {list(params.train_splits)} / {list(params.eval_splits)})")
    started = time.perf_counter()
    model, losses = fit_tiny_clip(train_x, train_c, params.fit, progress=lambda e, l: log(f"epoch {e + 1}: loss {l:.4f}"))
    fit_s = time.perf_counter() - started
    recall = retrieval_recall(model, eval_x, eval_c)
    with atomic_path(config_path) as tmp:
        tmp.write_text(json.dumps(TINY_CLIP_CONFIG, indent=1))
    with atomic_path(weights) as tmp:
        sha = save_weights(model, tmp)
    report = {"fingerprint": fingerprint, "weights_sha256": sha, "train_pairs": len(train_c),
              "eval_pairs": len(eval_c), "fit_seconds": round(fit_s, 1), "losses": losses,
              "recall": recall, "fit": asdict(params.fit)}
    write_json_atomic(report_path, report, sort_keys=False)
    return report, False


def recall_table(report: dict) -> list[dict]:
    """The report's zero-shot R@k as table rows, one per direction."""
    r = report["recall"]
    return [{"direction": d, **{f"R@{k}": round(r[f"{d}_R@{k}"], 3) for k in (1, 5, 10)},
             "median rank": r[f"{d}_median_rank"], "chance R@1": round(1 / report["eval_pairs"], 4)}
            for d in ("i2t", "t2i")]


def loss_plot(losses: list[float]) -> bytes:
    fig, ax = subplots(figsize=(5, 2.5), dpi=80)
    ax.plot(range(1, len(losses) + 1), losses, marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train InfoNCE")
    return figure_png(fig)

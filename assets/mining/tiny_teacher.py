"""The demo's CLIP teacher, fitted here: a tiny open_clip model (`models.tiny_clip`) trained on one
dataset's image-caption pairs (SynthAV Places: the cached pictures and their `asr_text`).

No pretrained CLIP weights can be downloaded on an offline machine, so the demo fits its own
(`fit_tiny_clip`: deterministic, about 2 minutes on 2 CPU cores at demo size) and reports its
zero-shot image<->text R@k on the held-out split. The weights (a state dict) and the open_clip
model config land in `<cache>/teacher/`, where the teacher resource finds them when
CLIPKT_TEACHER=tiny (the Makefile sets it). A rerun with the same pairs and fit settings is
skipped (`build_tiny_teacher`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from assets.core.atomic_io import atomic_path, read_parquet_metadata, write_json_atomic
from assets.core.plots import figure_png, subplots
from assets.mining.teacher_embedding import decode_frames
from models.teacher_weights import file_sha256, save_weights
from models.tiny_clip import TINY_CLIP_CONFIG, FitConfig, fit_tiny_clip, retrieval_recall

CODE_VERSION = "1"


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

"""Localisation of an experiment's trained runs (every seed) on its evaluation clips, and the
heatmap grid a person looks at; files under the experiment's directory:

    experiments/<name>/localisation.json   per seed and mean ± std over seeds; per map
                                           (DenseAV: head_1..head_K and combined; global: global)
    experiments/<name>/heatmaps.png        seed 0's first `grid_rows` evaluation pairs that have a box

DenseAV runs are scored with their own heatmaps; audio-image runs of a global encoder (InfoNCE,
class token) with the baseline's patch-cosine map (`assets.localisation.localise`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assets.core.atomic_io import atomic_path, write_json_atomic
from assets.core.device import resolve_device
from assets.core.seed_stats import mean_std
from assets.ingest.dataset_config import DatasetConfig
from assets.localisation.heatmap_grid import heatmap_grid_png
from assets.localisation.localise import (dense_heatmaps, eval_frame_boxes, eval_frames, global_heatmaps,
                                          localisation_metrics)
from assets.training.experiments import Experiment
from assets.training.runs import data_sources, embedding_dim, evaluation_clips, normaliser, trained_model
from data.synthav.generate import BOXES_FILE
from models.clip_patch_tokens import ImagePatchTokens

LOCALISATION_FILE = "localisation.json"
HEATMAPS_FILE = "heatmaps.png"


def map_names(exp: Experiment) -> list[str]:
    if exp.loss.kind == "denseav":
        return [f"head_{k + 1}" for k in range(exp.loss.heads)] + ["combined"]
    return ["global"]


def localise_experiment(cache, ds: DatasetConfig, exp: Experiment, load_teacher, device: str = "auto",
                        grid_rows: int = 6) -> dict:
    if exp.stage != "audio_image" or (exp.loss.kind != "denseav" and exp.frames.strategy == "multiframe"):
        raise ValueError(f"{exp.path}: localisation needs an audio-image run with one audio embedding or DenseAV")
    dev = resolve_device(device)
    teacher = load_teacher()
    clips, _ = evaluation_clips(cache, ds, exp, with_frames=True)
    src = data_sources(cache, ds, exp, False)
    normalise = normaliser(cache, ds, exp, src.layout)
    frames = eval_frames(clips)
    boxes = eval_frame_boxes(clips, cache.dataset_dir(ds.name) / "frame_cache", ds.root / BOXES_FILE, frames.shape[1])
    names = map_names(exp)
    per_seed, grid = {}, None
    for seed in exp.seeds:
        model = trained_model(cache, exp, seed, teacher, embedding_dim(clips), dev)
        if exp.loss.kind == "denseav":
            maps = dense_heatmaps(model, clips, normalise, dev, exp.loss.heads)
        else:
            image = ImagePatchTokens(teacher.model.visual, teacher.mean, teacher.std).to(dev)
            maps = global_heatmaps(model, image, clips, normalise, dev)
        per_seed[str(seed)] = {name: localisation_metrics(maps[:, j], boxes, frames.shape[1]) for j, name in enumerate(names)}
        if grid is None:
            rows = [i for i, b in enumerate(boxes) if b is not None][:grid_rows]
            grid = heatmap_grid_png(frames[rows], maps[rows], names, [clips.clip_ids[i] for i in rows],
                                    [boxes[i] for i in rows])
    doc = {"experiment": exp.name, "dataset": ds.name, "maps": names, "seeds": list(exp.seeds),
           "eval_clips": len(clips), "per_seed": per_seed, "summary": _summary(per_seed, names),
           "chance": chance_levels(boxes, maps.shape[2:], frames.shape[1]),
           "protocol": "frame ceil(L/2)-1 of each evaluation clip; cIoU: share of clips with consensus IoU >= 0.5 "
                       "at the median threshold of the min-max map (EZ-VSL/SLAVC); AUC over IoU thresholds "
                       "0..1; pixel_AP: mean over clips of the pixels' average precision for the box"}
    out_dir = cache.experiment_dir(exp.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / LOCALISATION_FILE, doc)
    with atomic_path(out_dir / HEATMAPS_FILE) as tmp:
        Path(tmp).write_bytes(grid)
    return doc


def chance_levels(boxes: list, grid: tuple[int, int], size: int, draws: int = 5, seed: int = 0) -> dict:
    """The metrics of maps that know nothing: uniform random values on the same grid, mean over `draws`
    (what cIoU, AUC and pixel AP reach by chance, given the boxes' sizes)."""
    rng = np.random.default_rng(seed)
    runs = [localisation_metrics(rng.random((len(boxes), *grid)), boxes, size) for _ in range(draws)]
    return {m: float(np.mean([r[m] for r in runs])) for m in ("cIoU", "AUC", "pixel_AP")}


def _summary(per_seed: dict, names: list[str]) -> dict:
    return {name: {metric: mean_std([per_seed[s][name][metric] for s in per_seed]) for metric in ("cIoU", "AUC", "pixel_AP")}
            for name in names}


def localisation_markdown(docs: list[dict]) -> str:
    """One row per (experiment, map): cIoU, AUC and pixel AP in %, mean ± std over seeds."""
    lines = ["| experiment | map | seeds | cIoU | AUC | pixel AP |", "|---|---|---|---|---|---|"]
    for d in docs:
        for name in d["maps"]:
            s = d["summary"][name]
            cells = [f"{100 * s[m]['mean']:.1f} ± {100 * s[m]['std']:.1f}" for m in ("cIoU", "AUC", "pixel_AP")]
            lines.append(f"| {d['experiment']} | {name} | {len(d['seeds'])} | " + " | ".join(cells) + " |")
        if d.get("chance"):
            lines.append(f"| {d['experiment']} | random maps (chance) | – | "
                         + " | ".join(f"{100 * d['chance'][m]:.1f}" for m in ("cIoU", "AUC", "pixel_AP")) + " |")
    return "\n".join(lines)

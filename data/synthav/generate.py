"""Generate SynthAV: small AudioSet-, VGGSound-, Places- and AudioCaps-style datasets on disk.

    python -m data.synthav --out data/demo            # the demo default
    python -m data.synthav --out /tmp/tiny --scale 0.01
    python -m data.synthav --out /tmp/v --density places=varied   # a density preset per dataset

Deterministic: the same seed and sizes give the same bytes. Item i of a split has its
own random stream, so a larger `scale` adds items and leaves the existing ones as
they were (a dataset that grows, for the shard and sensor tests).

Each dataset also gets KEYS_FILE, every clip's semantic key (world.semantic_key) by clip
id, and is drawn from a density preset (world.DENSITIES) that sets how often clips share one.
Each dataset with pictures gets BOXES_FILE, where its sounding objects are over time
(data.synthav.sounding_boxes).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from data.synthav import layouts, media_io
from data.synthav.layouts import RenderSettings
from data.synthav.world import DENSITIES

# Items per split at scale 1: a 1000-item evaluation split (the papers' protocol) and a
# training split 2.5x larger for the datasets the demo trains and evaluates on; AudioSet
# is there for its format (the most expensive items are mp4s, and the whole default must
# generate in about 2 minutes on 2 cores).
DEMO_COUNTS: dict[str, dict[str, int]] = {
    "vggsound": {"train": 2500, "test": 1000},
    "audioset": {"balanced_train": 200, "eval": 100},
    "places": {"train": 2500, "val": 1000},
    "audiocaps": {"train": 2500, "val": 100, "test": 1000},
}

# Deliberately bad items, appended to the first split of each dataset.
DEFECTS: dict[str, tuple[str, ...]] = {
    "vggsound": ("corrupt", "truncated", "silent", "short", "stereo44k", "missing", "malformed"),
    "audioset": ("corrupt", "missing", "malformed"),
    "places": ("missing", "silent", "escape", "malformed", "corrupt"),
    "audiocaps": ("missing", "short", "malformed"),
}

# Density preset per dataset: Places, whose pictures and captions the demo's CLIP teacher is
# fitted on and whose neighbours the demo mines, is calibrated to seed 000's false-negative rate.
DEFAULT_DENSITY: dict[str, str] = {"vggsound": "varied", "audioset": "varied", "places": "dense",
                                   "audiocaps": "varied"}

STAMP = "SYNTHAV.json"  # written last: its presence means the generation finished
KEYS_FILE = "synthav_keys.csv"  # per dataset: clip_id,key
BOXES_FILE = "sounding_boxes.parquet"  # per dataset with pictures: clip_id, width, height, times, boxes
BOXED_DATASETS = ("vggsound", "audioset", "places")

MAKERS = {"vggsound": layouts.make_vggsound, "audioset": layouts.make_audioset,
          "places": layouts.make_places, "audiocaps": layouts.make_audiocaps}


@dataclass(frozen=True)
class SynthAVConfig:
    out: Path
    scale: float = 1.0  # multiplies every count in DEMO_COUNTS (at least 4 items per split)
    seed: int = 0
    with_defects: bool = True
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    render: RenderSettings = RenderSettings()
    density: dict[str, str] = field(default_factory=dict)  # preset per dataset, over DEFAULT_DENSITY

    def __post_init__(self):
        for dataset, preset in self.density.items():
            if dataset not in DEMO_COUNTS or preset not in DENSITIES:
                raise ValueError(f"density {dataset}={preset}: datasets are {sorted(DEMO_COUNTS)}, "
                                 f"presets {sorted(DENSITIES)}")

    def counts(self, dataset: str) -> dict[str, int]:
        return {split: max(4, math.ceil(n * self.scale)) for split, n in DEMO_COUNTS[dataset].items()}

    def density_of(self, dataset: str) -> str:
        return self.density.get(dataset, DEFAULT_DENSITY[dataset])


def _make(task: tuple) -> dict:
    dataset, root, rs, split, index, defect = task
    return MAKERS[dataset](root, rs, split, index, defect)


def _tasks(cfg: SynthAVConfig, dataset: str) -> list[tuple]:
    root, rs = cfg.out / dataset, replace(cfg.render, seed=cfg.seed, density=cfg.density_of(dataset))
    tasks = [(dataset, root, rs, split, i, "") for split, n in cfg.counts(dataset).items() for i in range(n)]
    if cfg.with_defects:
        first_split = next(iter(DEMO_COUNTS[dataset]))
        tasks += [(dataset, root, rs, first_split, k, d) for k, d in enumerate(DEFECTS[dataset])]
    return tasks


def _write_index(cfg: SynthAVConfig, dataset: str, rows: list[dict]) -> None:
    root = cfg.out / dataset
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r["split"], []).append(r)
    if dataset == "vggsound":
        layouts.write_vggsound_csv(root / "vggsound.csv", rows)
    elif dataset == "audioset":
        layouts.write_audioset_labels(root / "class_labels_indices.csv")
        for split, split_rows in by_split.items():
            layouts.write_audioset_csv(root / f"{split}_segments.csv", split_rows)
    elif dataset == "places":
        for split, split_rows in by_split.items():
            layouts.write_places_json(root / "metadata" / f"{split}.json", split_rows)
    elif dataset == "audiocaps":
        first_id = 1
        for split, split_rows in by_split.items():
            layouts.write_audiocaps_csv(root / f"{split}.csv", split_rows, first_id)
            first_id += 100_000
    layouts.write_keys_csv(root / KEYS_FILE, dataset, rows)
    if dataset in BOXED_DATASETS:
        layouts.write_sounding_boxes(root / BOXES_FILE, dataset, rows)


def _default_sigterm() -> None:
    """Pool worker init: SIGTERM back to its default. A parent that ignores SIGINT (a background
    job) and has run Dagster in process also ignores SIGTERM (Dagster maps SIGTERM to SIGINT's
    handler), and spawned workers inherit that, so Pool.terminate() could not stop them."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def generate(cfg: SynthAVConfig, datasets: tuple[str, ...] = tuple(DEMO_COUNTS)) -> dict[str, int]:
    """Write every dataset under cfg.out; returns items per dataset.

    All items of all datasets go through one pool, so no core idles at a dataset's tail.
    """
    tasks = [t for d in datasets for t in _tasks(cfg, d)]
    ctx = mp.get_context("spawn")  # fork after libespeak/torch threads start is unsafe
    pool = ctx.Pool(cfg.workers, initializer=_default_sigterm)
    try:
        rows = pool.map(_make, tasks, chunksize=max(1, len(tasks) // (16 * cfg.workers)))
        pool.close()  # workers exit on their own after the last task (no signal needed)
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    for dataset in datasets:
        _write_index(cfg, dataset, [r for t, r in zip(tasks, rows) if t[0] == dataset])
    written = {d: sum(1 for t in tasks if t[0] == d) for d in datasets}
    stamp = {"seed": cfg.seed, "scale": cfg.scale, "with_defects": cfg.with_defects, "items": written,
             "density": {d: cfg.density_of(d) for d in datasets}}
    media_io.write_bytes(cfg.out / STAMP, (json.dumps(stamp, indent=1, sort_keys=True) + "\n").encode())
    return written


def is_generated(cfg: SynthAVConfig, datasets: tuple[str, ...] = tuple(DEMO_COUNTS)) -> bool:
    """True if cfg.out holds a finished generation with this seed, scale, dataset list and densities,
    and its box files (a generation from before they existed has none)."""
    try:
        stamp = json.loads((cfg.out / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if not all((cfg.out / d / BOXES_FILE).is_file() for d in datasets if d in BOXED_DATASETS):
        return False
    return (stamp.get("seed"), stamp.get("scale"), stamp.get("with_defects"), sorted(stamp.get("items", {})),
            stamp.get("density")) == (cfg.seed, cfg.scale, cfg.with_defects, sorted(datasets),
                                      {d: cfg.density_of(d) for d in datasets})


def parse_density(items: list[str]) -> dict[str, str]:
    """["places=varied", ...] (the --density option) -> {"places": "varied", ...}."""
    pairs = [item.split("=", 1) for item in items]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--density takes DATASET=PRESET, got {items}")
    return dict(pairs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-defects", action="store_true")
    parser.add_argument("--datasets", nargs="+", default=list(DEMO_COUNTS), choices=list(DEMO_COUNTS))
    parser.add_argument("--density", action="append", default=[], metavar="DATASET=PRESET",
                        help=f"density preset ({', '.join(DENSITIES)}) of a dataset; default "
                        + ", ".join(f"{d}={p}" for d, p in DEFAULT_DENSITY.items()))
    parser.add_argument("--if-missing", action="store_true", help="do nothing if a finished generation with "
                        "the same seed, scale and densities is already there")
    args = parser.parse_args(argv)
    try:
        cfg = SynthAVConfig(out=args.out, scale=args.scale, seed=args.seed, workers=args.workers,
                            with_defects=not args.no_defects, density=parse_density(args.density))
    except ValueError as err:
        parser.error(str(err))
    if args.if_missing and is_generated(cfg, tuple(args.datasets)):
        print(f"SynthAV already generated in {cfg.out} (seed {cfg.seed}, scale {cfg.scale})")
        return
    start = time.perf_counter()
    written = generate(cfg, tuple(args.datasets))
    print(f"SynthAV (seed {cfg.seed}, scale {cfg.scale}) -> {cfg.out}: "
          + ", ".join(f"{k} {n} items ({cfg.density_of(k)})" for k, n in written.items())
          + f" in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""SynthAV generation throughput against a bare single-process loop over the same items.

    .venv/bin/python -m benchmarks.bench_synthav            # a 10% sample of every dataset
    .venv/bin/python -m benchmarks.bench_synthav --full     # also time the whole default (budget: 120 s on 2 cores)

The bare loop calls the same per-item maker functions one after another in this process
(render + encode + write, no pool, no index files); the generator runs them on a process
pool and writes the index files. The ratio is the generator's speed-up over that loop.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from data.synthav.generate import DEMO_COUNTS, MAKERS, SynthAVConfig, _tasks, generate


def bare_loop(cfg: SynthAVConfig) -> float:
    tasks = [t for d in DEMO_COUNTS for t in _tasks(cfg, d)]
    start = time.perf_counter()
    for dataset, root, rs, split, index, defect in tasks:
        MAKERS[dataset](root, rs, split, index, defect)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_synthav_"))
    try:
        sample = SynthAVConfig(out=work / "bare", scale=args.scale)
        items = sum(len(_tasks(sample, d)) for d in DEMO_COUNTS)
        bare = bare_loop(sample)
        start = time.perf_counter()
        generate(SynthAVConfig(out=work / "gen", scale=args.scale))
        gen = time.perf_counter() - start
        print(f"items: {items} (scale {args.scale}), workers: {os.cpu_count()}")
        print(f"bare loop : {bare:6.1f} s  {items / bare:6.1f} items/s")
        print(f"generator : {gen:6.1f} s  {items / gen:6.1f} items/s")
        print(f"ratio generator/bare: {bare / gen:.2f}x")
        if args.full:
            start = time.perf_counter()
            written = generate(SynthAVConfig(out=work / "full"))
            full = time.perf_counter() - start
            print(f"full default: {sum(written.values())} items in {full:.1f} s "
                  f"({full / 120:.2f} of the 120 s budget)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""How often a random batch holds two clips about the same thing, computed exactly.

    python -m data.synthav.calibration              # each preset on the Places train split
    python -m data.synthav.calibration --seed 1 --batch 32 64 128

Seed 000 reports that at batch 128 about 40% of the samples meet at least one false
negative (a semantically similar sample) in their batch; the `dense` preset
(world.DENSITIES) is calibrated to that on SynthAV Places. A clip whose semantic key is
shared by o of the other N - 1 clips meets none of them in a batch of B drawn uniformly
without replacement, itself in it, with probability C(N-1-o, B-1) / C(N-1, B-1): its
B - 1 batch mates all come from the N - 1 - o clips with other keys. The share is the
mean over clips of one minus that, exact rather than simulated, so a calibration does
not move with a simulation's noise. The keys are those of the generated data: the clip
specs come from the generator's own random streams (layouts.item_clip), only nothing
is rendered.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import replace
from pathlib import Path

from data.synthav.generate import SynthAVConfig
from data.synthav.layouts import item_clip
from data.synthav.world import DENSITIES, semantic_key


def same_key_share(keys: Sequence[Hashable], batch: int) -> float:
    """Expected share of a uniformly random batch of `batch` clips (without replacement)
    that meets at least one other clip with its key; keys[i] is clip i's key."""
    n = len(keys)
    if not 1 <= batch <= n:
        raise ValueError(f"batch must be between 1 and the number of clips ({n}), got {batch}")
    all_mates = math.comb(n - 1, batch - 1)
    met = sum(m * (1 - math.comb(n - m, batch - 1) / all_mates) for m in Counter(keys).values())
    return met / n


def places_train_keys(density: str, seed: int = 0, scale: float = 1.0) -> list[str]:
    """The semantic keys of the Places train split generate() writes with this density preset."""
    cfg = SynthAVConfig(out=Path(), seed=seed, scale=scale)
    rs = replace(cfg.render, seed=seed, density=density)
    return [semantic_key(item_clip("places", rs, "train", i)[0]) for i in range(cfg.counts("places")["train"])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args(argv)
    print(f"SynthAV Places train (seed {args.seed}, scale {args.scale}): share of a random batch "
          "meeting a same-key clip")
    print(f"{'preset':<8} {'clips':>6} {'keys':>6} {'singletons':>10}" + "".join(f" {f'share@{b}':>10}" for b in args.batch))
    for name in DENSITIES:
        keys = places_train_keys(name, args.seed, args.scale)
        counts = Counter(keys).values()
        print(f"{name:<8} {len(keys):>6} {len(counts):>6} {sum(1 for c in counts if c == 1):>10}"
              + "".join(f" {same_key_share(keys, b):>10.3f}" for b in args.batch))


if __name__ == "__main__":
    main()

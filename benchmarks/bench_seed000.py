"""What seed 000's training costs beyond InfoNCE, each against a bare baseline in the same run.

    .venv/bin/python -m benchmarks.bench_seed000
    .venv/bin/python -m benchmarks.bench_seed000 --lengths data/cache/synthav_places/logmel_cache

1. DaveNet with `trim_padding` against DaveNet on the cache's full 2048 frames (the reference's
   computation): training steps (forward, backward, AdamW) at batch 128, width 0.25, on random
   log-mels whose true lengths are drawn from the Places log-mel cache when given (else SynthAV
   Places' measured range, 200-400 frames).
2. The pairs-mode batch sampler (`MinedPairBatches.epoch`: anchors + one mined partner for half
   of them) against a bare `rng.permutation` (InfoNCE's epoch order), at seed 000's scale:
   100K clips, k = 30, three tables, batch 128.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from assets.training.mined_batches import MinedPairBatches
from models.davenet import DaveNet


def cache_lengths(directory: Path | None) -> np.ndarray:
    if directory is None:
        return np.random.default_rng(0).integers(200, 400, size=4096)
    lengths = [pq.read_table(p, columns=["n_frames", "status"]).to_pylist() for p in sorted(Path(directory).glob("*.parquet"))]
    return np.asarray([r["n_frames"] for shard in lengths for r in shard if r["status"] == "ok"])


def davenet_steps_per_s(trim: bool, lengths: np.ndarray, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = DaveNet(embed_dim=128, width=0.25, trim_padding=trim)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    rng = np.random.default_rng(0)
    x = torch.zeros(batch, 40, 2048)
    times = []
    for step in range(steps + 1):
        n = torch.from_numpy(rng.choice(lengths, size=batch))
        x.zero_()
        for i, m in enumerate(n.tolist()):
            x[i, :, :m] = -30.0
        start = time.perf_counter()
        loss = model(x, n).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:  # the first step warms up the allocator
            times.append(time.perf_counter() - start)
    return 1.0 / float(np.median(times))


def sampler_seconds(n: int, k: int, batch: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    tables = {t: rng.integers(0, n, size=(n, k)).astype(np.int32) for t in ("t2t", "i2t", "t2i")}
    start = time.perf_counter()
    np.random.default_rng((0, 0)).permutation(n)
    bare = time.perf_counter() - start
    sampler = MinedPairBatches(n, batch, tables, ["org", *tables], k, 0.5, seed=0)
    start = time.perf_counter()
    sampler.epoch(0)
    return bare, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=Path, default=None, help="a logmel_cache directory to draw true lengths from")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--clips", type=int, default=100_000)
    args = ap.parse_args()
    lengths = cache_lengths(args.lengths)
    print(f"caption lengths: mean {lengths.mean():.0f}, max {lengths.max()} of 2048 frames ({len(lengths)} clips)")
    full = davenet_steps_per_s(False, lengths, args.batch, args.steps)
    trim = davenet_steps_per_s(True, lengths, args.batch, args.steps)
    print(f"DaveNet w0.25, batch {args.batch}: full 2048 frames {full:.2f} steps/s, trimmed {trim:.2f} steps/s; "
          f"ratio trimmed/full {trim / full:.2f}x")
    bare, pairs = sampler_seconds(args.clips, 30, args.batch)
    print(f"epoch order for {args.clips} clips: permutation {bare * 1e3:.1f} ms, pairs sampler {pairs:.2f} s "
          f"({pairs / bare:.0f}x the permutation; {args.clips // args.batch} batches)")


if __name__ == "__main__":
    main()

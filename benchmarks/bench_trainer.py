"""The trainer against a bare PyTorch loop with the same model, batch, loss and optimiser.

    .venv/bin/python -m benchmarks.bench_trainer                    # the demo's tiny audio ViT, 1000 x 128 FBANK
    .venv/bin/python -m benchmarks.bench_trainer --model vit-b-32 --batch 16 --clips 64 --epochs 1

Trainer: `assets.training.trainer.Trainer.fit` for `--epochs` epochs over a ClipSet of random float16
FBANKs (the in-memory cache form) with 4 frame embeddings per clip: the background batch
loader (gather, float16 -> float32, normalise), a seeded shuffle, random-frame similarity,
symmetric InfoNCE with learnable temperature, AdamW over two parameter groups, the per-step
warmup + cosine schedule and an epoch checkpoint (safetensors + optimiser state) every epoch.
Per-epoch validation is off (it is evaluation, not training).

The trainer runs twice per repeat: with the features in memory, and with them read in place
from per-shard feature arrays (`<shard>.<fp>.features.npy`, 256 clips per shard, as the
cache stores them; `ShardedFeatures`, the path training takes past `max_memory_gb`), the
files evicted from the page cache first (posix_fadvise DONTNEED), so the first epoch reads
from disk. Each prints its data wait: the share of step time the loop waited for a batch.

Bare loop: the same model, loss, optimiser and schedule over the same clips already
normalised to float32 in memory and sliced in order: no loader, no shuffling, no
checkpoints, no bookkeeping. Both run the same number of steps, `--repeat` times,
alternating; the ratio is given best against best and as the median of the back-to-back
pairs (run-to-run noise on this machine is about +-10%).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from open_clip.model import CLIP

from assets.caches.fbank_stats import Normaliser
from assets.training.data import ClipSet, ShardedFeatures
from assets.training.experiments import parse_experiment
from assets.training.optim import build_optimizer, build_scheduler
from assets.training.trainer import Trainer, TrainInputs, optim_config
from losses.contrastive import SymmetricInfoNCE
from losses.frame_matching import random_frame_similarity
from models.audio_encoder import build_audio_encoder
from models.tiny_clip import TINY_CLIP_CONFIG

MODELS = {  # name: (open_clip config, audio ViT knobs)
    "tiny": (TINY_CLIP_CONFIG, {"patch": [32, 32], "stride": [32, 32], "layers": 1}),  # the demo's experiments
    "vit-b-32": ({"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 1}},
                 {"patch": None, "stride": [16, 24], "layers": None}),
}


def make_clips(n: int, dim: int, seed: int = 0) -> ClipSet:
    rng = np.random.default_rng(seed)
    frames = rng.standard_normal((n, 4, dim)).astype(np.float32)
    frames /= np.linalg.norm(frames, axis=2, keepdims=True)
    features = (rng.standard_normal((n, 1000, 128)) * 4 - 6).astype(np.float16)
    return ClipSet([f"c{i}" for i in range(n)], ["train"] * n, features, np.full(n, 1000), frames)


def in_place(clips: ClipSet, directory: Path, shard_size: int = 256) -> ClipSet:
    """The same clips with their features written as per-shard arrays and read back in place."""
    arrays = []
    for i, start in enumerate(range(0, len(clips), shard_size)):
        path = directory / f"s{i:05d}.bench.features.npy"
        np.save(path, clips.features[start:start + shard_size])
        arrays.append(np.load(path, mmap_mode="r"))
    n = len(clips)
    features = ShardedFeatures(arrays, np.arange(n) // shard_size, np.arange(n) % shard_size)
    return ClipSet(clips.clip_ids, clips.splits, features, clips.lengths, clips.frames)


def evict(directory: Path) -> None:
    """Drop the arrays' pages from the page cache, so the next read comes from the disk."""
    for path in directory.glob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def bare_loop(exp, visual, dim, clips: ClipSet, stats: dict, steps: int) -> float:
    torch.manual_seed(0)
    model = build_audio_encoder("audio_vit", visual, dim, 0, **exp_model_knobs(exp))
    modules = torch.nn.ModuleDict({"encoder": model, "loss": SymmetricInfoNCE()})
    cfg = optim_config(exp, len(clips) // exp.batch_size)
    optimizer = build_optimizer(modules, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    audio = (torch.from_numpy(clips.features).float() - stats["mean"]) / stats["std"]
    frames = torch.from_numpy(clips.frames)
    gen = torch.Generator().manual_seed(0)
    per_epoch = len(clips) // exp.batch_size
    start = time.perf_counter()
    for step in range(steps):
        lo = (step % per_epoch) * exp.batch_size
        emb = model(audio[lo:lo + exp.batch_size])
        loss = modules["loss"](random_frame_similarity(emb, frames[lo:lo + exp.batch_size], gen))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - start


def exp_model_knobs(exp) -> dict:
    m = exp.model
    return {"patch": m.patch, "stride": m.stride, "layers": m.layers}


def trainer_run(exp, visual, dim, clips: ClipSet, stats: dict) -> tuple[float, float]:
    model = build_audio_encoder("audio_vit", visual, dim, 0, **exp_model_knobs(exp))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(exp, 0, model, TrainInputs(clips, Normaliser(stats)), Path(out), torch.device("cpu"),
                          log=lambda _: None)
        start = time.perf_counter()
        summary = trainer.fit()
        seconds = time.perf_counter() - start
    wait = sum(h["data_wait_fraction"] * h["seconds"] for h in summary["history"]) / sum(h["seconds"] for h in summary["history"])
    return seconds, wait


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--clips", type=int, default=1280)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config, knobs = MODELS[args.model]
    torch.manual_seed(0)
    visual = CLIP(**config).visual
    dim = config["embed_dim"]
    exp = parse_experiment({"dataset": "bench", "model": {"kind": "audio_vit", **knobs}, "epochs": args.epochs,
                            "batch_size": args.batch, "eval": {"val_size": 0},
                            "optim": {"optimizer": "adamw", "lr_weights": 1e-4, "lr_biases": 1e-4, "warmup_epochs": 1}},
                           "bench", "<bench>")
    clips = make_clips(args.clips, dim)
    stats = {"mean": -6.0, "std": 4.0}
    steps = args.epochs * (args.clips // args.batch)
    print(f"model {args.model} audio ViT {knobs}, FBANK 1000x128, batch {args.batch}, {args.clips} clips, "
          f"{args.epochs} epochs = {steps} steps, AdamW, random-frame InfoNCE, torch threads {args.threads}, CPU")
    bare, trained, waits, placed, placed_waits = [], [], [], [], []
    with tempfile.TemporaryDirectory() as arrays:
        sharded = in_place(clips, Path(arrays))
        for _ in range(args.repeat):
            bare.append(bare_loop(exp, visual, dim, clips, stats, steps))
            t, w = trainer_run(exp, visual, dim, clips, stats)
            trained.append(t)
            waits.append(w)
            evict(Path(arrays))
            t, w = trainer_run(exp, visual, dim, sharded, stats)
            placed.append(t)
            placed_waits.append(w)
    b, t, p = min(bare), min(trained), min(placed)
    print(f"  bare PyTorch loop (tensors ready in memory) : {b:7.2f} s  {steps / b:6.2f} steps/s")
    print(f"  Trainer.fit, features in memory            : {t:7.2f} s  {steps / t:6.2f} steps/s  "
          f"(data wait {100 * waits[int(np.argmin(trained))]:.1f}% of step time)")
    print(f"  Trainer.fit, features read in place        : {p:7.2f} s  {steps / p:6.2f} steps/s  "
          f"(data wait {100 * placed_waits[int(np.argmin(placed))]:.1f}% of step time, "
          f"max over runs {100 * max(placed_waits):.1f}%; target < 5%)")
    pairs = sorted(x / y for x, y in zip(bare, trained))
    print(f"  ratio trainer/bare steps/s: {b / t:.2f} best vs best, {pairs[len(pairs) // 2]:.2f} median of the "
          f"{len(pairs)} back-to-back pairs  (target >= 0.9); in place / in memory: {t / p:.2f}")


if __name__ == "__main__":
    main()

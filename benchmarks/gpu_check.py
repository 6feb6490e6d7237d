"""The GPU check: every GPU code path of the pipeline run once on the device at hand and compared with the
CPU, in a few minutes, on tensors it makes itself (no dataset, no Dagster). One function per section, one
printed line per check, a JSON of everything (`--out`); docs/benchmarks.md, "The GPU check".

1. environment  torch, CUDA, the device and its memory
2. throughput   seed 001's model (s001_vipant.yaml: the audio ViT-B/32 from a random open_clip ViT-B-32 image
                tower, 1000 x 128 FBANK, stride 16 x 24), batch 128, symmetric InfoNCE against fixed random image
                embeddings, LARS with seed 001's parameter groups, the project's autocast + TF32: steps/s,
                samples/s, peak memory, MFU (FlopCounterMode on one step; 990 TFLOP/s, H100/H200 bf16 dense);
                then the project's Trainer + BatchLoader on an in-memory ClipSet (the same model, loss and
                optimiser, with seed 001's SpecAugment): its data-wait share and its ratio to the bare loop
3. fp16         float16 autocast with an enabled GradScaler, a few steps; its state through a checkpoint
4. parity       one fixed batch, fp32 CPU vs fp32 GPU with TF32 off: loss rel. diff <= 1e-4, gradient cosine
                >= 0.9999; bf16 autocast loss within 2e-2. Without a GPU: fp32 against float64 on the CPU
5. losses       one step each on the device: mined pairs / mask, Nearest Match (both rules), Multiframe
                Match, DenseAV, SpeechCLIP (both branches), CCL: finite loss and gradients
6. teacher      ViT-B-32 (random weights) through models.clip_teacher.ClipTeacher with AMP: images/s at
                batch 256; image and text embeddings' cosine to the fp32 CPU teacher >= 0.999
7. search       assets.mining.neighbor_search on 200k x 512 unit vectors, k 100, 1000 queries: faiss GPU ids
                equal to faiss CPU ids (no faiss GPU: CPU ids equal to brute force); queries/s

On a GPU machine, from the repository root, packages in /tmp/site (torch, torchaudio, timm, safetensors,
numpy, pyarrow, open_clip with ftfy and wcwidth; the trainer's imports also need av, librosa, scipy and
pillow, the search faiss, faiss-gpu for its GPU path):

    PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py --out gpu_check.json

`--small` (tiny open_clip model with 16 x 16 patches, batch 8, a few steps, 2000 x 64 search) with
`--device cpu` is tests/benchmarks/test_gpu_check.py. Exit status 1 when parity fails or cannot run; a
failure elsewhere is printed and listed in the JSON (`failed`), and the other sections still run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import platform
import resource
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
import yaml
from open_clip.model import CLIP
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from assets.core.device import amp_dtype, autocast, enable_tf32, grad_scaler
from losses.ccl import CCLLoss
from losses.contrastive import MultiPositiveInfoNCE, SharedImageInfoNCE, SymmetricInfoNCE, cosine_similarity_matrix
from losses.denseav import DenseAVLoss, RegulariserWeights
from losses.frame_matching import multiframe_similarity, nearest_match_similarity, random_frame_similarity
from losses.mined_positives import positive_mask
from models.audio_encoder import build_audio_encoder

REPO = Path(__file__).resolve().parent.parent
SEED001 = REPO / "configs" / "experiments" / "paper" / "s001_vipant.yaml"
PEAK_FLOPS = 990e12  # H100 / H200 SXM bf16 dense
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
CAPTIONS = ["a dog barking", "rain on a tin roof", "a violin solo", "people cheering"]


@dataclass(frozen=True)
class Sizes:
    clip: str  # open_clip model name; "tiny": TINY_CLIP
    patch: tuple[int, int] | None  # None: the tower's (32 x 32 for ViT-B/32), as seed 001
    batch: int = 128
    steps: int = 20
    warmup: int = 3
    trainer_steps: int = 8  # per epoch, 2 epochs, the second one reported
    small_batch: int = 16  # parity, the other losses
    teacher_batch: int = 256
    teacher_images: int = 1024
    keys: int = 200_000
    dim: int = 512
    k: int = 100
    queries: int = 1000


FULL = Sizes("ViT-B-32", None)
SMALL = Sizes("tiny", (16, 16), batch=8, steps=3, warmup=1, trainer_steps=2, small_batch=8, teacher_batch=16,
              teacher_images=32, keys=2000, dim=64, k=10, queries=100)


class Check:
    """The run's device, sizes, the random CLIP the students copy, and the recorded results."""

    def __init__(self, device: torch.device, sizes: Sizes):
        self.device, self.s = device, sizes
        self.cuda = device.type == "cuda"
        self.config = TINY_CLIP if sizes.clip == "tiny" else open_clip.get_model_config(sizes.clip)
        self.dim = self.config["embed_dim"]
        self.seed001 = yaml.safe_load(SEED001.read_text())
        model = self.seed001["model"]  # FBANK frames x mel bins and the patch stride
        self.frames, self.bins, self.stride = model["time_frames"], model["mel_bins"], tuple(model["stride"])
        self._clip: CLIP | None = None
        self.results: dict[str, dict] = {}
        self.section = ""

    def clip(self) -> CLIP:
        if self._clip is None:
            torch.manual_seed(0)
            self._clip = CLIP(**self.config).eval()
        return self._clip

    def encoder(self) -> nn.Module:
        return build_audio_encoder("audio_vit", self.clip().visual, self.dim, time_frames=self.frames,
                                   mel_bins=self.bins, patch=self.s.patch, stride=self.stride)

    def fbank(self, batch: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.frames, self.bins, generator=g).to(self.device)

    def say(self, name: str, text: str, /, **figures) -> None:
        print(f"[{self.section}] {name:<26} {text}", flush=True)
        self.results[self.section].setdefault("checks", {})[name] = figures

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def seed001_experiment(c: Check, epochs: int):
    """s001_vipant.yaml (batch 128, LARS, seed 001's rates and groups, SpecAugment 32 / 200) sized for the check."""
    from assets.training.experiments import parse_experiment

    raw = copy.deepcopy(c.seed001)
    raw["model"] |= {"patch": None if c.s.patch is None else list(c.s.patch)}
    raw |= {"batch_size": c.s.batch, "epochs": epochs}
    return parse_experiment(raw, "gpu_check_s001", str(SEED001))


def seed001_optimizer(c: Check, modules: nn.Module, steps: int):
    """LARS over seed 001's parameter groups at its batch-scaled rates, warming up over all `steps`: what
    trainer.optim_config gives for one epoch of `steps`, without the trainer's imports (av, librosa)."""
    from assets.training.optim import OptimConfig, build_optimizer, build_scheduler, lr_scale

    o = seed001_experiment(c, 1).optim
    scale = lr_scale(o.lr_scaling, c.s.batch)
    cfg = OptimConfig(optimizer=o.optimizer, lr_weights=o.lr_weights * scale, lr_biases=o.lr_biases * scale,
                      weight_decay=o.weight_decay, momentum=o.momentum, warmup_steps=steps, min_lr_ratio=o.min_lr_ratio)
    optimizer = build_optimizer(modules, cfg)
    return optimizer, build_scheduler(optimizer, cfg, steps)


def finite_grads(module: nn.Module) -> tuple[bool, list[str]]:
    """(every gradient finite and at least one present, the trainable parameters left without a gradient)."""
    trained = [(n, p.grad) for n, p in module.named_parameters() if p.requires_grad]
    missing = [n for n, g in trained if g is None]
    finite = all(bool(torch.isfinite(g).all()) for _, g in trained if g is not None)
    return finite and len(missing) < len(trained), missing


def faiss_gpu(faiss) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def peak_memory_mib(c: Check) -> float:
    if c.cuda:
        return torch.cuda.max_memory_allocated(c.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (Linux: KiB)


# -- 1 -------------------------------------------------------------------------------------------------
def environment(c: Check) -> None:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "open_clip": open_clip.__version__, "device": str(c.device), "torch_threads": torch.get_num_threads()}
    if c.cuda:
        p = torch.cuda.get_device_properties(c.device)
        env |= {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported(), "amp_dtype": str(amp_dtype(c.device))}
    else:
        env |= {"name": platform.processor() or platform.machine(), "capability": None, "memory_gib": None}
    try:
        import faiss
        env |= {"faiss": faiss.__version__, "faiss_gpu": faiss_gpu(faiss)}
    except ImportError as e:
        env |= {"faiss": None, "faiss_gpu": False, "faiss_error": str(e)}
    c.say("environment", " ".join(f"{k}={v}" for k, v in env.items()), **env)


# -- 2 -------------------------------------------------------------------------------------------------
def throughput(c: Check) -> None:
    rate = bare_loop(c)
    trained = trainer_throughput(c)
    ratio = trained["steps_per_s"] / rate
    c.say("trainer", f"{trained['steps_per_s']:.2f} steps/s  data wait {100 * trained['data_wait_fraction']:.1f}%  "
          f"trainer/bare {ratio:.2f}  peak {trained['peak_memory_mib']:.0f} MiB  ({trained['workers']} loader threads; "
          "SpecAugment on, as seed 001)", **trained, ratio_to_bare=ratio)


def bare_loop(c: Check) -> float:
    """The bare training loop's steps/s (and its line)."""
    s, dev = c.s, c.device
    enable_tf32(dev)
    torch.manual_seed(0)
    modules = nn.ModuleDict({"encoder": c.encoder(), "loss": SymmetricInfoNCE()}).to(dev).train()
    total = s.warmup + 1 + s.steps
    optimizer, scheduler = seed001_optimizer(c, modules, total)
    scaler = grad_scaler(dev)
    audio = c.fbank(s.batch)
    image = F.normalize(torch.randn(s.batch, c.dim, generator=torch.Generator().manual_seed(1)), dim=-1).to(dev)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(dev):
            emb = modules["encoder"](audio)
        loss = modules["loss"](cosine_similarity_matrix(emb.float(), image))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return loss.detach()

    for _ in range(s.warmup):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    c.sync()
    if c.cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(s.steps):
        loss = step()
    c.sync()
    rate = s.steps / (time.perf_counter() - start)
    mfu = flops * rate / PEAK_FLOPS if c.cuda else None
    memory = peak_memory_mib(c)
    kind = "torch.cuda.max_memory_allocated" if c.cuda else "process peak RSS"
    c.say("bare loop", f"{rate:.2f} steps/s  {rate * s.batch:.1f} samples/s  peak {memory:.0f} MiB ({kind})  "
          f"{flops / 1e12:.3f} TFLOP/step  MFU " + (f"{100 * mfu:.1f}% of {PEAK_FLOPS / 1e12:.0f} TFLOP/s (H100/H200 "
                                                    "bf16 dense)" if mfu is not None else "n/a (CPU)"),
          steps_per_s=rate, samples_per_s=rate * s.batch, peak_memory_mib=memory, peak_memory_kind=kind,
          flops_per_step=flops, mfu=mfu, loss=float(loss), amp_dtype=str(amp_dtype(dev)), batch=s.batch)
    return rate


def trainer_throughput(c: Check) -> dict:
    from assets.caches.fbank_stats import Normaliser
    from assets.training.data import ClipSet
    from assets.training.trainer import Trainer, TrainInputs

    n = c.s.batch * c.s.trainer_steps
    rng = np.random.default_rng(0)
    features = (rng.standard_normal((n, c.frames, c.bins), dtype=np.float32) * 4 - 6).astype(np.float16)
    frames = rng.standard_normal((n, 4, c.dim)).astype(np.float32)
    frames /= np.linalg.norm(frames, axis=2, keepdims=True)
    clips = ClipSet([f"c{i}" for i in range(n)], ["train"] * n, features, np.full(n, c.frames), frames)
    inputs = TrainInputs(clips, Normaliser({"mean": -6.0, "std": 4.0}))
    if c.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(c.device)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(seed001_experiment(c, epochs=2), 0, c.encoder(), inputs, Path(out), c.device,
                          log=lambda _: None)
        last = trainer.fit()["history"][-1]  # the second epoch: past the first steps' warm-up
    return {"steps_per_s": last["steps_per_s"], "samples_per_s": last["steps_per_s"] * c.s.batch,
            "data_wait_fraction": last["data_wait_fraction"], "loss": last["loss"], "workers": trainer.loader_workers,
            "peak_memory_mib": peak_memory_mib(c)}


# -- 3 -------------------------------------------------------------------------------------------------
def fp16_path(c: Check) -> None:
    from assets.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    dev, steps = c.device, max(3, c.s.warmup + 2)
    torch.manual_seed(0)
    modules = nn.ModuleDict({"encoder": c.encoder(), "loss": SymmetricInfoNCE()}).to(dev).train()
    optimizer, scheduler = seed001_optimizer(c, modules, steps)
    scaler = torch.amp.GradScaler(dev.type, enabled=True)
    audio, image = c.fbank(c.s.small_batch), F.normalize(torch.randn(c.s.small_batch, c.dim), dim=-1).to(dev)
    losses, scales, initial = [], [], scaler.get_scale()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16):
            emb = modules["encoder"](audio)
        loss = modules["loss"](cosine_similarity_matrix(emb.float(), image))
        scaler.scale(loss).backward()
        with warnings.catch_warnings():  # a step the scaler skips (overflow) makes the scheduler warn
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
        losses.append(float(loss.detach()))
        scales.append(scaler.get_scale())
    skipped = sum(b < a for a, b in zip([initial, *scales], scales))  # the scale halves on each overflow
    finite = all(map(math.isfinite, losses)) and all(bool(torch.isfinite(p).all()) for p in modules.parameters())
    with tempfile.TemporaryDirectory() as out:
        save_checkpoint(Path(out), 0, modules, optimizer, scheduler, {"grad_scaler": scaler.state_dict()})
        restored = torch.amp.GradScaler(dev.type, enabled=True)
        state = load_checkpoint(latest_checkpoint(Path(out)), modules, optimizer, scheduler)
        restored.load_state_dict(state["extra"]["grad_scaler"])
    round_trip = restored.state_dict() == scaler.state_dict()
    project = grad_scaler(dev).is_enabled()
    note = ("" if c.cuda else "CPU float16 autocast + CPU GradScaler; ") + \
        f"the project's own grad_scaler is {'enabled' if project else 'disabled'} here (amp dtype {amp_dtype(dev)})"
    c.say("fp16 + GradScaler", f"{'PASS' if finite else 'FAIL'}  {steps} steps, losses "
          f"{losses[0]:.4f}..{losses[-1]:.4f}, scale {initial:g} -> {scales[-1]:g}, {skipped} step(s) skipped on "
          f"overflow; {note}", passed=finite, losses=losses, scales=scales, skipped_steps=skipped, note=note,
          project_scaler_enabled=project)
    c.say("scaler state round trip", f"{'PASS' if round_trip else 'FAIL'}  through save_checkpoint/load_checkpoint "
          f"{scaler.state_dict()}", passed=round_trip, state=scaler.state_dict())


# -- 4 -------------------------------------------------------------------------------------------------
def parity(c: Check) -> None:
    torch.manual_seed(1)
    model, loss_fn = c.encoder(), SymmetricInfoNCE()
    audio = c.fbank(c.s.small_batch, seed=2).cpu()
    image = F.normalize(torch.randn(c.s.small_batch, c.dim, generator=torch.Generator().manual_seed(3)), dim=-1)

    def run(device: torch.device, dtype: torch.dtype, amp: torch.dtype | None = None) -> tuple[float, torch.Tensor]:
        m, f = copy.deepcopy(model).to(device, dtype), copy.deepcopy(loss_fn).to(device, dtype)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            emb = m(audio.to(device, dtype))
        loss = f(cosine_similarity_matrix(emb.to(dtype), image.to(device, dtype)))
        loss.backward()
        params = [*m.parameters(), *f.parameters()]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        grads = torch.cat([g.reshape(-1).double().cpu() for g in grads])
        return float(loss.detach()), grads

    cpu = torch.device("cpu")
    ref_loss, ref_grad = run(cpu, torch.float32)
    if c.cuda:
        flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            other_loss, other_grad = run(c.device, torch.float32)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
        what = "fp32 CPU vs fp32 CUDA, TF32 off"
    else:
        other_loss, other_grad = run(cpu, torch.float64)
        what = "fp32 CPU vs float64 CPU (no GPU: the fp32 path against float64)"
    rel = abs(other_loss - ref_loss) / abs(other_loss)
    cos = float(F.cosine_similarity(ref_grad, other_grad, dim=0))
    ok = rel <= 1e-4 and cos >= 0.9999
    c.say("fp32", f"{'PASS' if ok else 'FAIL'}  loss rel. diff {rel:.2e} (<= 1e-4), gradient cosine {cos:.7f} "
          f"(>= 0.9999); {what}", passed=ok, rel_diff=rel, grad_cosine=cos, losses=[ref_loss, other_loss],
          compared=what)
    bf16_loss, _ = run(c.device, torch.float32, amp=torch.bfloat16)
    rel16 = abs(bf16_loss - ref_loss) / abs(ref_loss)
    ok16 = rel16 <= 2e-2
    what16 = f"bf16 autocast on {c.device.type} vs fp32 CPU"
    c.say("bf16", f"{'PASS' if ok16 else 'FAIL'}  loss rel. diff {rel16:.2e} (<= 2e-2); {what16}", passed=ok16,
          rel_diff=rel16, losses=[ref_loss, bf16_loss], compared=what16)


# -- 5 -------------------------------------------------------------------------------------------------
def other_losses(c: Check) -> None:
    from models.ccl import CCLModel
    from models.clip_patch_tokens import ImagePatchTokens
    from models.denseav import DenseAV
    from models.speechclip import SpeechCLIP, special_ids

    dev, b, frames_per_clip = c.device, c.s.small_batch, 4
    audio = c.fbank(b, seed=4)
    lengths = torch.tensor([c.frames if i % 2 else c.frames // 2 for i in range(b)])  # half the clips padded
    frames = torch.randn(b, frames_per_clip, c.dim, generator=torch.Generator().manual_seed(5))
    frames = F.normalize(frames, dim=-1).to(dev)
    ring = (np.arange(b)[:, None] + np.arange(1, 4)[None, :]) % b  # clip i's neighbours: i+1, i+2, i+3
    neighbours = {"t2t": ring, "i2t": ring[:, ::-1].copy()}
    gen = torch.Generator().manual_seed(6)

    def global_embedding(model: nn.Module) -> torch.Tensor:
        with autocast(dev):
            return model(audio).float()

    def mined(mode: str):
        enc = c.encoder().to(dev)
        mask = positive_mask(mode, np.arange(b), neighbours, ("org", "t2t", "i2t"), 2).to(dev)
        return MultiPositiveInfoNCE().to(dev)(random_frame_similarity(global_embedding(enc), frames, gen), mask), enc

    def nearest(rule: str):
        enc = c.encoder().to(dev)
        sim = nearest_match_similarity(global_embedding(enc), frames, epoch=1, start_epoch=0, generator=gen, rule=rule)
        return SymmetricInfoNCE().to(dev)(sim), enc

    def multiframe():
        from assets.training.evaluation import AudioOutput, encode_audio  # imports the data modules (av, librosa)

        enc = c.encoder().to(dev)
        with autocast(dev):
            segments = encode_audio(enc, audio, lengths, AudioOutput(segments=frames_per_clip)).float()
        return SymmetricInfoNCE().to(dev)(multiframe_similarity(segments, frames)), enc

    def denseav():
        clip = c.clip()
        image = ImagePatchTokens(clip.visual, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, lora_rank=8)
        model = DenseAV(c.encoder(), image, code_dim=24 if c.s.clip == "tiny" else 384).to(dev).train()
        pixels = torch.randint(0, 256, (b, *image.image_size, 3), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(7)).to(dev)
        with autocast(dev):
            feats = model(audio, lengths.to(dev), pixels)
        loss_fn = DenseAVLoss(heads=2, weights=RegulariserWeights(samples=8)).to(dev)  # 8 samples: silence_l1 runs too
        loss = loss_fn(feats.audio, feats.mask, feats.image, gen)
        return loss, nn.ModuleList([model, loss_fn])

    def speechclip():
        tokenizer = open_clip.SimpleTokenizer()
        pad, start, end = special_ids(tokenizer)
        model = SpeechCLIP(c.encoder(), copy.deepcopy(c.clip()), "both", c.dim, token_ids=None,  # the whole vocabulary
                           excluded_ids=(pad, start, end), start_id=start, end_id=end).to(dev).train()
        with autocast(dev):
            branches = model.branches(audio, lengths.to(dev))
        groups = torch.arange(b) // 2  # two spoken captions per picture
        same = (groups[:, None] == groups[None, :]).to(dev)
        loss_fn = SharedImageInfoNCE().to(dev)
        loss = sum(loss_fn(random_frame_similarity(e.float(), frames, gen), same) for e in branches.values())
        return loss, nn.ModuleList([model, loss_fn])

    def ccl():
        model = CCLModel(c.encoder(), c.dim, 5, ("image", "text"), encoder_takes_lengths=False).to(dev)
        with autocast(dev):
            student, logits = model.classify(audio, lengths.to(dev))
        labels = (torch.arange(b) % 5).to(dev)
        teachers = {"image": frames[:, 0], "text": F.normalize(torch.randn(b, c.dim), dim=-1).to(dev)}
        loss_fn = CCLLoss({"image": 0.1, "text": 0.5})
        return loss_fn(student.float(), logits.float(), teachers, model.heads, labels), model

    cases = {"mined pairs": lambda: mined("pairs"), "mined mask": lambda: mined("mask"),
             "nearest pairwise": lambda: nearest("pairwise"), "nearest per_clip": lambda: nearest("per_clip"),
             "multiframe": multiframe, "denseav": denseav, "speechclip": speechclip, "ccl": ccl}
    for name, case in cases.items():
        try:
            loss, module = case()
            loss.backward()
            grads_ok, missing = finite_grads(module)
            value = float(loss.detach())
            ok = math.isfinite(value) and grads_ok
            c.say(name, f"{'PASS' if ok else 'FAIL'}  loss {value:.4f}, gradients "
                  f"{'finite' if grads_ok else 'NOT finite'}; without a gradient: {', '.join(missing) or 'none'}",
                  passed=ok, loss=value, params_without_grad=missing)
        except Exception as e:  # one loss failing does not hide the others
            c.say(name, f"FAIL  {type(e).__name__}: {e}", passed=False, error=f"{type(e).__name__}: {e}")


# -- 6 -------------------------------------------------------------------------------------------------
def teacher(c: Check) -> None:
    from models.clip_teacher import ClipTeacher, TeacherSpec
    from models.teacher_weights import save_weights

    name, config = ("gpu-check-tiny", TINY_CLIP) if c.s.clip == "tiny" else (c.s.clip, None)
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "teacher.pt"
        save_weights(c.clip(), path)
        spec = TeacherSpec(model_name=name, pretrained="", weights_path=str(path), batch_size=c.s.teacher_batch)
        on_device = ClipTeacher(replace(spec, device=str(c.device), precision="amp"), model_config=config)
        reference = ClipTeacher(replace(spec, device="cpu", precision="fp32"), model_config=config)
    size = on_device.image_size
    images = np.random.default_rng(8).integers(0, 256, (c.s.teacher_images, *size, 3), dtype=np.uint8)
    on_device.encode_images(images[:c.s.teacher_batch])  # warm-up
    start = time.perf_counter()
    on_device.encode_images(images)  # returns numpy: synchronised
    rate = len(images) / (time.perf_counter() - start)
    few = images[:8]
    img_cos = float((on_device.encode_images(few) * reference.encode_images(few)).sum(1).min())
    txt_cos = float((on_device.encode_texts(CAPTIONS) * reference.encode_texts(CAPTIONS)).sum(1).min())
    ok = img_cos >= 0.999 and txt_cos >= 0.999
    what = f"{c.device.type} AMP ({'bf16' if not c.cuda or torch.cuda.is_bf16_supported() else 'fp16'}) vs fp32 CPU"
    c.say("teacher", f"{'PASS' if ok else 'FAIL'}  {rate:.1f} images/s at batch {c.s.teacher_batch}, min cosine image "
          f"{img_cos:.5f} text {txt_cos:.5f} (>= 0.999); {what}", passed=ok, images_per_s=rate, image_cosine=img_cos,
          text_cosine=txt_cos, batch=c.s.teacher_batch, compared=what, model=c.s.clip)


# -- 7 -------------------------------------------------------------------------------------------------
def neighbour_search(c: Check) -> None:
    import faiss

    from assets.mining.neighbor_search import SearchParams, brute_force_topk, build_index, search

    s = c.s
    rng = np.random.default_rng(9)
    keys = rng.standard_normal((s.keys, s.dim), dtype=np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queries = rng.standard_normal((s.queries, s.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def timed(use_gpu: bool) -> tuple[np.ndarray, float]:
        params = SearchParams(k=s.k, use_gpu=use_gpu)
        index = build_index(keys, params)
        list(search(index, queries[:10], params, keys=keys))  # warm-up; keys passed, as the mining stage does
        start = time.perf_counter()
        ids = np.concatenate([i for _, _, i in search(index, queries, params, keys=keys)])
        return ids, s.queries / (time.perf_counter() - start)

    cpu_ids, cpu_rate = timed(False)
    gpu = c.cuda and faiss_gpu(faiss)
    if gpu:
        ids, rate = timed(True)
        ok, what = bool(np.array_equal(ids, cpu_ids)), "faiss GPU ids vs faiss CPU ids"
    else:
        rows = min(s.queries, 100)
        ok = bool(np.array_equal(cpu_ids[:rows], brute_force_topk(queries[:rows], keys, s.k)[1]))
        rate, what = cpu_rate, f"no faiss GPU ({faiss.__version__}): faiss CPU ids vs brute force on {rows} queries"
    c.say("search", f"{'PASS' if ok else 'FAIL'}  {s.keys} x {s.dim}, k {s.k}, {s.queries} queries: "
          f"{rate:.0f} queries/s ({'GPU' if gpu else 'CPU'}), CPU {cpu_rate:.0f} queries/s; {what}",
          passed=ok, gpu_search=gpu, queries_per_s=rate, cpu_queries_per_s=cpu_rate, compared=what)
    torch_reference(c, keys, queries, cpu_ids)


def torch_reference(c: Check, keys: np.ndarray, queries: np.ndarray, cpu_ids: np.ndarray) -> None:
    """Not project code: exact top-k by a torch matmul on the device (TF32 off), what a torch path would give."""
    flag = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        k, q = torch.from_numpy(keys).to(c.device), torch.from_numpy(queries).to(c.device)
        torch.topk(q[:10] @ k.T, c.s.k, dim=1)
        c.sync()
        start = time.perf_counter()
        ids = torch.topk(q @ k.T, c.s.k, dim=1).indices.cpu().numpy()
        rate = len(queries) / (time.perf_counter() - start)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = flag
    same = float((ids == cpu_ids).all(axis=1).mean())
    c.say("torch top-k (reference)", f"{rate:.0f} queries/s on {c.device.type}, {100 * same:.1f}% of rows equal the "
          "project's ids (not project code: the project has no torch search)", queries_per_s=rate, rows_equal=same)


SECTIONS = {"environment": environment, "throughput": throughput, "fp16": fp16_path, "parity": parity,
            "losses": other_losses, "teacher": teacher, "search": neighbour_search}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny sizes (the CPU test)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    c = Check(torch.device(args.device), SMALL if args.small else FULL)
    start = time.perf_counter()
    for name, section in SECTIONS.items():
        c.section = name
        c.results[name] = {"status": "ok"}
        t = time.perf_counter()
        try:
            section(c)
        except Exception as e:
            c.results[name] |= {"status": "error", "error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()}
            print(f"[{name}] ERROR {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()  # to stderr
        c.results[name]["seconds"] = round(time.perf_counter() - t, 2)
        if any(v.get("passed") is False for v in c.results[name].get("checks", {}).values()):
            c.results[name]["status"] = "fail"
    failed = [f"{n}: {k}" for n, r in c.results.items() for k, v in r.get("checks", {}).items()
              if v.get("passed") is False]
    failed += [f"{n}: {r['error']}" for n, r in c.results.items() if r["status"] == "error"]
    parity_ok = c.results["parity"]["status"] == "ok"
    summary = {"device": args.device, "small": args.small, "seconds": round(time.perf_counter() - start, 1),
               "parity_passed": parity_ok, "failed": failed, "sections": c.results}
    print(f"done in {summary['seconds']} s: parity {'PASS' if parity_ok else 'FAIL'}, "
          f"{len(failed)} failed check(s){': ' + '; '.join(failed) if failed else ''}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2, default=str))
    return 0 if parity_ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The training loop for one experiment and one seed: contrastive audio-image pretraining or
audio-text fine-tuning of a student audio encoder against the frozen teacher's embeddings.

The teacher is frozen (seed 001), so its frame and caption embeddings come from the
embedding caches instead of being recomputed every step; only the audio encoder (and the
loss's temperature) learn. Per step:

    audio (B, ...) --encoder--> (B, D) or (B, L, D)
    similarity (B, B): frame strategy random | nearest (eq. 3) | multiframe (eq. 4), or captions
    loss: SymmetricInfoNCE, or MultiPositiveInfoNCE with the batch's mined-positive mask (seed 000)

DenseAV (`loss.kind: denseav`, seed 004) trains a `models.denseav.DenseAV` instead: the audio
backbone, the teacher's image tower (LoRA) and both aligners, on the cached frames' pixels (one
random frame per clip per step), with `losses.denseav.DenseAVLoss`; for the first
`dense.aligner_warmup_steps` steps only the aligners learn.

SpeechCLIP (`loss.kind: speechclip`, seed 003) trains a `models.speechclip.SpeechCLIP`: its
featurizer and branches against the teacher's frame embeddings, each branch's
`SharedImageInfoNCE` (other captions of a clip's picture out of its negatives) summed, both
branches scored against the same random frame; the teacher's text tower runs frozen inside the
cascaded branch.

Everything random is seeded per (seed, epoch): the batch order, the random frames, the
caption picks, the SpecAugment masks (training only, `train.freq_mask` / `train.time_mask`);
so a run resumed from its last epoch checkpoint continues exactly as the uninterrupted run
(bit-identical weights on the CPU). On CUDA: TF32 and autocast.

Under torchrun (`train.nproc_per_node` > 1 or several nodes) the model runs in
DistributedDataParallel: `batch_size` stays the global batch, each rank encodes
batch_size / W of its clips, and the loss is the global batch's, computed alike on every rank
from gathered outputs (`assets.training.distributed`); so the loss and the gradients are those of
one process on the whole batch. Rank 0 validates, logs and writes checkpoints and the final
weights; every rank resumes from the same checkpoint. Random draws that must agree across ranks
(frame picks, Nearest Match's random epochs) use one generator seeded alike on every rank;
draws that are per clip (SpecAugment, DenseAV's windows, caption picks, dropout) are seeded
per (seed, epoch, rank), so a DDP run is the single-process run in distribution, not bit for bit.

Gradient accumulation (`grad_accum` > 1) keeps the loss over the whole batch, as a
contrastive loss needs all in-batch negatives: the batch is encoded chunk by chunk without
gradients, the loss and its gradient with respect to the embeddings are computed on the
full batch, then each chunk is encoded again and back-propagated with its slice of that
gradient (the "gradient cache" method); peak memory is one chunk's activations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from assets.caches.fbank_stats import Normaliser
from assets.core.atomic_io import atomic_path, write_json_atomic
from assets.core.device import autocast, enable_tf32, grad_scaler
from assets.training.audio_window import SILENT_FBANK, random_windows, silence_outside
from assets.training.batch_stats import BatchPositiveStats
from assets.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from assets.training.class_labels import ClassLabels
from assets.training.data import Batch, BatchLoader, ClipSet, rank_slice
from assets.training.dense_evaluation import dense_features, dense_retrieval_report
from assets.training.distributed import barrier, broadcast_object, gather_tree, is_main, world
from assets.training.evaluation import AudioOutput, embed_clips, encode_audio, retrieval_report
from assets.training.experiments import Experiment
from assets.training.mined_batches import MinedPairBatches
from assets.training.optim import OptimConfig, build_optimizer, build_scheduler, clip_gradients_per_tensor, lr_scale
from assets.training.spec_augment import spec_augment
from losses.ccl import CCLLoss
from losses.contrastive import MultiPositiveInfoNCE, SharedImageInfoNCE, SymmetricInfoNCE
from losses.denseav import DenseAVLoss
from losses.frame_matching import multiframe_similarity, nearest_match_similarity, random_frame_similarity
from losses.mined_positives import positive_mask

FINAL_WEIGHTS = "final.safetensors"
RUN_FILE = "run.json"


@dataclass
class TrainInputs:
    train: ClipSet
    normalise: Normaliser
    neighbours: dict[str, np.ndarray] | None = None  # table -> (N, k) top-k neighbours as training rows (mined loss)
    val: ClipSet | None = None  # per-epoch retrieval curve
    val_label: str = ""
    neighbour_shortfall: dict[str, int] | None = None  # per table: training clips with fewer than k neighbours
    groups: np.ndarray | None = None  # (N,) semantic key id per training clip (SynthAV's ground truth), -1: none
    embed_dim: int | None = None  # the teacher's embedding width when `train` holds no frame or caption embeddings
    image_groups: np.ndarray | None = None  # (N,) clips of one picture share a value (SpeechCLIP's masked negatives)
    labels: ClassLabels | None = None  # the training clips' classes (CCL)


def make_loss(exp: Experiment) -> nn.Module:
    if exp.loss.kind == "denseav":
        loss = exp.loss
        return DenseAVLoss(loss.heads, loss.aggregation, loss.head_agg, loss.calibration_init, loss.regularisers)
    if exp.loss.kind == "ccl":
        loss = exp.loss
        return CCLLoss({"image": loss.nce_temperature_image, "text": loss.nce_temperature_text}, loss.jsd_weight,
                       loss.teacher_weight, loss.composed_weight)
    cls = {"mined": MultiPositiveInfoNCE, "speechclip": SharedImageInfoNCE}.get(exp.loss.kind, SymmetricInfoNCE)
    return cls(temperature=exp.loss.temperature, learnable=exp.loss.learnable_temperature)


def optim_config(exp: Experiment, steps_per_epoch: int) -> OptimConfig:
    o = exp.optim
    scale = lr_scale(o.lr_scaling, exp.batch_size)
    return OptimConfig(optimizer=o.optimizer, lr_weights=o.lr_weights * scale, lr_biases=o.lr_biases * scale,
                       weight_decay=o.weight_decay, momentum=o.momentum,
                       warmup_steps=min(round(o.warmup_epochs * steps_per_epoch), exp.epochs * steps_per_epoch),
                       min_lr_ratio=o.min_lr_ratio)


def loader_workers(configured: int | None, device: torch.device) -> int:
    """Background batch threads: on CUDA one keeps the GPU fed while the CPU is idle; on the CPU the
    step already uses every core, and a concurrent thread only slows it (measured: 0.85-0.89x of a
    bare loop with one thread, see benchmarks/bench_trainer.py), so batches are built in the loop."""
    if configured is not None:
        return configured
    return 1 if device.type == "cuda" else 0


def audio_output(exp: Experiment, clips: ClipSet) -> AudioOutput:
    """What the experiment's encoder outputs (evaluation.AudioOutput): Multiframe Match's segments (one
    per frame of the clips), the segment mean (`model.pool: segments`), or the class token."""
    if exp.stage == "audio_image" and exp.frames.strategy == "multiframe":
        return AudioOutput(segments=clips.frames.shape[1])
    if exp.model.pool == "segments":
        return AudioOutput(mean_of=exp.model.segments)
    return AudioOutput()


class Trainer:
    """Train `model` for `exp` with `seed`; checkpoints in `out_dir/checkpoints`, final weights and
    `run.json` (history, timings) in `out_dir`."""

    def __init__(self, exp: Experiment, seed: int, model: nn.Module, inputs: TrainInputs, out_dir: Path,
                 device: torch.device, log: Callable[[str], None] = print):
        self.exp, self.seed, self.inputs, self.out_dir, self.device = exp, seed, inputs, Path(out_dir), device
        self.log = log if is_main() else (lambda _: None)  # rank 0 speaks for the run
        n, b = len(inputs.train), exp.batch_size
        if n < b:
            raise ValueError(f"{exp.name}: {n} training clips, fewer than one batch of {b}; lower batch_size")
        if exp.loss.kind == "mined" and inputs.neighbours is None:
            raise ValueError(f"{exp.name}: the mined loss needs neighbour tables")
        self.dense = exp.loss.kind == "denseav"
        self.speechclip = exp.loss.kind == "speechclip"
        self.speechclip_parts: dict[str, torch.Tensor] = {}
        self.ccl = exp.loss.kind == "ccl"
        if self.ccl and inputs.labels is None:
            raise ValueError(f"{exp.name}: CCL trains a classifier; the clips' class labels are missing")
        if self.ccl and "text" in exp.loss.teachers and inputs.train.captions is None:
            raise ValueError(f"{exp.name}: CCL's text teacher needs the clips' class-name embeddings (captions)")
        if self.speechclip and inputs.image_groups is None:
            raise ValueError(f"{exp.name}: SpeechCLIP's loss needs which clips show the same picture (image_groups)")
        if exp.stage == "audio_image" and not self.dense and inputs.train.frames is None:
            raise ValueError(f"{exp.name}: audio-image training needs the teacher's frame embeddings")
        if exp.stage == "audio_text" and inputs.train.captions is None:
            raise ValueError(f"{exp.name}: audio-text fine-tuning needs the teacher's caption embeddings")
        self.steps_per_epoch = n // b
        self.rank, self.world_size = world()
        if b % self.world_size or (b // self.world_size) % exp.grad_accum:
            raise ValueError(f"{exp.name}: batch_size {b} must split into {self.world_size} equal per-rank batches, "
                             f"each a multiple of grad_accum {exp.grad_accum}")
        self.local_batch = b // self.world_size
        if self.dense and inputs.train.frame_jpegs is None:
            raise ValueError(f"{exp.name}: DenseAV trains on the frame cache's pixels; load the clips with frame_dir")
        enable_tf32(device)
        torch.manual_seed(seed)
        self.modules = nn.ModuleDict({"encoder": model, "loss": make_loss(exp)}).to(device)
        self.ddp = None
        if self.world_size > 1:  # parameters and buffers are broadcast from rank 0 here
            # DenseAV's warm-up, SpeechCLIP's and CCL's optional parts leave some parameters without a gradient
            unused = self.dense or self.speechclip or self.ccl
            self.ddp = nn.parallel.DistributedDataParallel(_GlobalBatchLoss(self.modules, self._forward_loss),
                                                           find_unused_parameters=unused)
        cfg = optim_config(exp, self.steps_per_epoch)
        self.optimizer = build_optimizer(self.modules, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, exp.epochs * self.steps_per_epoch)
        self.scaler = grad_scaler(device)
        self.output = audio_output(exp, inputs.train)
        self.loader_workers = loader_workers(exp.train.num_workers, device)
        self.pair_batches = (MinedPairBatches(n, b, inputs.neighbours, exp.loss.tables, exp.loss.k,
                                              exp.loss.partner_share, seed)
                             if exp.loss.kind == "mined" and exp.loss.mode == "pairs" else None)
        self.batch_stats = BatchPositiveStats()
        self.history: list[dict] = []

    # -- one step --------------------------------------------------------------------------
    def _encode(self, batch: Batch):
        if self.dense:
            warm = self.scheduler.last_epoch >= self.exp.dense.aligner_warmup_steps  # steps taken, restored on resume
            return self.modules["encoder"](batch.audio, batch.lengths, batch.pixels, train_backbones=warm, starts=batch.starts,
                                           image_tokens=batch.image_tokens)
        if self.speechclip:
            return self.modules["encoder"].branches(batch.audio, batch.lengths)
        if self.ccl:
            return self.modules["encoder"].classify(batch.audio, batch.lengths)
        return encode_audio(self.modules["encoder"], batch.audio, batch.lengths, self.output)

    def _forward_loss(self, batch: Batch, epoch: int, gen: torch.Generator) -> torch.Tensor:
        with autocast(self.device):
            audio = self._encode(batch)
        return self._loss(audio, batch, epoch, gen)

    def _loss(self, audio, batch: Batch, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """The global batch's loss from this rank's encoder outputs (the whole batch in one process)."""
        if self.world_size > 1:
            audio, batch = gather_tree(audio, with_grad=True), _global_batch(batch)
        exp = self.exp
        if self.dense:
            return self.modules["loss"](audio.audio, audio.mask, audio.image, gen)
        if self.speechclip:
            return self._speechclip_loss(audio, batch, gen)
        if self.ccl:
            return self._ccl_loss(*audio, batch, gen)
        audio = audio.float()
        if exp.stage == "audio_text":
            sim = nn.functional.normalize(audio, dim=-1) @ nn.functional.normalize(batch.captions, dim=-1).T
        elif exp.frames.strategy == "multiframe":
            sim = multiframe_similarity(audio, batch.frames)
        elif exp.frames.strategy == "nearest":
            sim = nearest_match_similarity(audio, batch.frames, epoch, exp.frames.nearest_start_epoch, gen,
                                           exp.frames.nearest_rule)
        else:
            sim = random_frame_similarity(audio, batch.frames, gen)
        loss_fn = self.modules["loss"]
        mask = self._positives(batch.index.numpy())
        if exp.loss.kind == "mined":
            return loss_fn(sim, mask.to(sim.device))
        return loss_fn(sim)

    def _speechclip_loss(self, branches: dict[str, torch.Tensor], batch: Batch, gen: torch.Generator) -> torch.Tensor:
        """SpeechCLIP: each branch's masked InfoNCE against the same random frame of each clip (one
        frame per Places image), other captions of a clip's picture left out of its negatives; the
        branches' losses summed (`both`), each logged as loss_<branch>."""
        rows = batch.index.numpy()
        self._positives(rows)
        groups = torch.from_numpy(self.inputs.image_groups[rows])
        same_image = (groups[:, None] == groups[None, :])
        state = gen.get_state()
        total = 0.0
        for name, emb in branches.items():
            gen.set_state(state)  # both branches see the same frames
            sim = random_frame_similarity(emb.float(), batch.frames, gen)
            loss = self.modules["loss"](sim, same_image.to(sim.device))
            self.speechclip_parts[name] = loss.detach()
            total = total + loss
        return total

    def _ccl_loss(self, student: torch.Tensor, logits: torch.Tensor, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        """CCL: the image teacher is one random frame's embedding per clip, the text teacher the clip's
        class-name embedding; single-label data trains on class ids, multi-label on multi-hot rows."""
        rows = batch.index.numpy()
        self._positives(rows)
        hot = self.inputs.labels.multi_hot[rows]
        labels = torch.from_numpy(hot.argmax(1) if self.inputs.labels.single_label else hot).to(logits.device)
        teachers = {}
        if "image" in self.exp.loss.teachers:
            pick = torch.randint(batch.frames.shape[1], (len(rows),), generator=gen).to(batch.frames.device)
            teachers["image"] = batch.frames[torch.arange(len(rows), device=batch.frames.device), pick]
        if "text" in self.exp.loss.teachers:
            teachers["text"] = batch.captions
        return self.modules["loss"](student.float(), logits.float(), teachers, self.modules["encoder"].heads, labels)

    def _loss_parts(self) -> dict[str, torch.Tensor]:
        """The last step's loss terms, logged per epoch: DenseAV's (unweighted), SpeechCLIP's branches."""
        return self.speechclip_parts if self.speechclip else getattr(self.modules["loss"], "parts", {})

    def _positives(self, rows: np.ndarray) -> torch.Tensor:
        """The batch's positive mask (the identity for InfoNCE), recorded in the epoch's batch statistics."""
        exp = self.exp
        if exp.loss.kind == "mined":
            mask = positive_mask(exp.loss.mode, rows, self.inputs.neighbours, exp.loss.tables, exp.loss.k)
        else:
            mask = torch.eye(len(rows), dtype=torch.bool)
        self.batch_stats.add(mask.numpy(), None if self.inputs.groups is None else self.inputs.groups[rows])
        return mask

    def _step(self, batch: Batch, epoch: int, gen: torch.Generator, augment: torch.Generator) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        t = self.exp.train
        if t.freq_mask or t.time_mask:  # training only: evaluation (embed_clips) never masks
            batch = replace(batch, audio=spec_augment(batch.audio, t.freq_mask, t.time_mask, augment))
        if self.dense and self.exp.dense.random_window:  # DenseAV's extra audio masking, training only
            starts, ends = random_windows(batch.lengths, augment)
            silent = self.inputs.normalise(torch.full((1, 1, batch.audio.shape[-1]), SILENT_FBANK))[0, 0]
            batch = replace(batch, audio=silence_outside(batch.audio, starts, ends, silent),
                            lengths=ends.to(batch.lengths.device), starts=starts.to(batch.lengths.device))
        loss = self._backward(batch, epoch, gen)
        if self.exp.optim.clip_grad_per_tensor:
            self.scaler.unscale_(self.optimizer)
            clip_gradients_per_tensor(self.modules.parameters(), self.exp.optim.clip_grad_per_tensor)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def _backward(self, batch: Batch, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """The step's loss; the parameters' gradients (of the global batch's loss) left in .grad."""
        if self.exp.grad_accum > 1:
            return self._cached_gradient_step(batch, epoch, gen)
        loss = self.ddp(batch, epoch, gen) if self.ddp is not None else self._forward_loss(batch, epoch, gen)
        self.scaler.scale(loss).backward()
        return loss

    def _cached_gradient_step(self, batch: Batch, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """Under DDP: every chunk's backward runs outside DDP's hooks, then the gradients are averaged over
        the ranks in one all-reduce, as DDP would (the loss's own parameters get theirs outside DDP's forward)."""
        chunks = [_slice(batch, idx) for idx in torch.arange(len(batch.index)).chunk(self.exp.grad_accum)]
        with torch.no_grad(), autocast(self.device):
            reps = torch.cat([self._encode(c).float() for c in chunks])
        reps.requires_grad_(True)
        loss = self._loss(reps, batch, epoch, gen)
        self.scaler.scale(loss).backward()
        for c, g in zip(chunks, reps.grad.split([len(c.index) for c in chunks])):
            with autocast(self.device):
                out = self._encode(c).float()
            out.backward(g)
        if self.world_size > 1:
            average_gradients(self.modules.parameters())
        return loss

    # -- epochs ----------------------------------------------------------------------------
    def _validate(self) -> dict:
        val = self.inputs.val
        if val is None or len(val) < 2 or not is_main():
            return {}
        if self.dense:
            feats = dense_features(self.modules["encoder"], val, self.inputs.normalise, self.device)
            report = dense_retrieval_report(feats, self.exp.loss.heads, self.exp.loss.aggregation)
            return {"val_A->I_R@1": report["A->I"]["R@1"], "val_A->I_R@10": report["A->I"]["R@10"]}
        emb = embed_clips(self.modules["encoder"], val, self.inputs.normalise, self.device, self.output)
        report = retrieval_report(emb, val, self.exp.frames.strategy, with_text=self.exp.stage == "audio_text")
        direction = "A->T" if self.exp.stage == "audio_text" else "A->I"
        return {f"val_{direction}_R@1": report[direction]["R@1"], f"val_{direction}_R@10": report[direction]["R@10"]}

    def _order(self, epoch: int) -> np.ndarray:
        """The epoch's training rows, batch_size per batch: mined partners sampled in (pairs mode), else random."""
        if self.pair_batches is not None:
            return self.pair_batches.epoch(epoch)
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.inputs.train))

    def _epoch(self, epoch: int) -> dict:
        exp, train = self.exp, self.inputs.train
        order = rank_slice(self._order(epoch), self.local_batch, self.rank, self.world_size)  # rank r: sub-batch r of each batch
        self.batch_stats = BatchPositiveStats()
        per_rank = [self.rank] if self.world_size > 1 else []
        if per_rank:  # dropout and other global-RNG draws differ per rank, reproducibly
            torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, 3, self.rank]).generate_state(1)[0]))
        loader = BatchLoader(train, order, self.local_batch, self.inputs.normalise,
                             caption_seed=((self.seed << 20) + epoch) * self.world_size + self.rank,
                             workers=self.loader_workers, prefetch=exp.train.prefetch, pin_memory=self.device.type == "cuda",
                             frame_pick="random" if self.dense else None)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        augment = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch, 2, *per_rank]).generate_state(1)[0]))
        self.modules.train()
        total = torch.zeros((), device=self.device)
        parts: dict[str, torch.Tensor] = {}
        start = time.perf_counter()
        for batch in loader:
            total += self._step(batch.to(self.device), epoch, gen, augment)
            for k, v in self._loss_parts().items():
                parts[k] = parts.get(k, 0) + v
        mean_loss = float(total) / len(loader)
        seconds = time.perf_counter() - start
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"{exp.name} seed {self.seed}: loss became {mean_loss} in epoch {epoch}; "
                                     "lower the learning rates")
        row = {"epoch": epoch, "loss": mean_loss, "steps": len(loader), "seconds": seconds,
               "steps_per_s": len(loader) / seconds, "data_wait_fraction": loader.wait_seconds / seconds,
               "lr_weights": self.optimizer.param_groups[0]["lr"],
               "temperature": float(1 / self.modules["loss"].scale().detach())}
        row |= {f"loss_{k}": float(v) / len(loader) for k, v in parts.items()}
        return row | self.batch_stats.summary() | self._validate()

    def fit(self, stop_after_epoch: int | None = None) -> dict:
        """Train (resuming from the newest checkpoint); returns the run summary written to run.json.
        `stop_after_epoch`: stop once that epoch's checkpoint is written (used to test resuming)."""
        ckpt_dir = self.out_dir / "checkpoints"
        first = 0
        latest = broadcast_object(latest_checkpoint(ckpt_dir))  # every rank resumes from rank 0's choice
        if latest is not None:
            state = load_checkpoint(latest, self.modules, self.optimizer, self.scheduler)
            self.history = state["extra"]["history"]
            if state["extra"].get("grad_scaler"):
                self.scaler.load_state_dict(state["extra"]["grad_scaler"])  # float16 AMP's loss scale
            first = state["epoch"] + 1
            self.log(f"{self.exp.name} seed {self.seed}: resuming after epoch {state['epoch']} from {latest}")
        for epoch in range(first, self.exp.epochs):
            row = self._epoch(epoch)
            self.history.append(row)
            if is_main():
                save_checkpoint(ckpt_dir, epoch, self.modules, self.optimizer, self.scheduler,
                                {"history": self.history, "grad_scaler": self.scaler.state_dict()})
            barrier()  # a rank stopped now resumes from this epoch's checkpoint, as rank 0 does
            self.log(f"{self.exp.name} seed {self.seed} epoch {epoch + 1}/{self.exp.epochs}: loss {row['loss']:.4f}, "
                     f"{row['steps_per_s']:.2f} steps/s, data wait {row['data_wait_fraction']:.1%}"
                     + "".join(f", {k} {v:.3f}" for k, v in row.items() if k.startswith("val_")))
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                return {}
        return self._finish(first)

    def _finish(self, first_epoch: int) -> dict:
        encoder = self.modules["encoder"]
        summary = {"experiment": self.exp.name, "seed": self.seed, "fingerprint": self.exp.fingerprint(self.seed),
                   "train_clips": len(self.inputs.train), "steps_per_epoch": self.steps_per_epoch,
                   "neighbour_shortfall": self.inputs.neighbour_shortfall,
                   "resumed_at_epoch": first_epoch or None, "device": str(self.device), "world_size": self.world_size,
                   "temperature": float(1 / self.modules["loss"].scale().detach()), "history": self.history}
        if not is_main():
            barrier()
            return summary
        with atomic_path(self.out_dir / FINAL_WEIGHTS) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(tmp))
        write_json_atomic(self.out_dir / RUN_FILE, summary)
        barrier()  # the other ranks return once the run's files are complete
        return summary


class _GlobalBatchLoss(nn.Module):
    """What DistributedDataParallel wraps: the trained modules (the encoder and the loss, whose
    temperature learns too) and a forward that returns the global batch's loss, so every trained
    parameter is in the graph DDP's gradient hooks follow."""

    def __init__(self, modules: nn.ModuleDict, forward_loss: Callable):
        super().__init__()
        self.trained = modules
        self.forward_loss = forward_loss

    def forward(self, batch: Batch, epoch: int, gen: torch.Generator) -> torch.Tensor:
        return self.forward_loss(batch, epoch, gen)


def _global_batch(batch: Batch) -> Batch:
    """What the loss reads of the global batch, gathered from every rank: the rows, frame and caption
    embeddings (the audio stays on its rank: the loss sees it only through the encoder's outputs)."""
    return Batch(gather_tree(batch.index, False), None, None, gather_tree(batch.frames, False),
                 gather_tree(batch.captions, False))


def average_gradients(params) -> None:
    """Every parameter's gradient averaged over the ranks (one flat all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world()[1]
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _slice(batch: Batch, idx: torch.Tensor) -> Batch:
    pick = (lambda t: None if t is None else t[idx.to(t.device)])
    return Batch(batch.index[idx], pick(batch.audio), pick(batch.lengths), pick(batch.frames), pick(batch.captions),
                 pick(batch.pixels), pick(batch.starts), pick(batch.image_tokens))


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Weights saved by a finished run (its final.safetensors) into a model of the same architecture."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"encoder weights not found: {path}")
    model.load_state_dict(load_file(str(path)))

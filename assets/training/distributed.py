"""Training across processes and GPUs: the process group torchrun sets up, and the collectives
the trainer needs so that a contrastive loss sees the global batch.

How a DDP step computes the same loss and gradients as one process on the concatenated batch:

- `exp.batch_size` is the global batch; each of the W ranks reads batch_size / W clips of it
  (`assets.training.data.rank_slice`: rank r takes sub-batch r of every global batch).
- Each rank encodes its own clips, then gathers every rank's encoder outputs with
  `gather_with_grad` and every rank's batch rows, frame and caption embeddings with `gather`.
  Every rank then computes the global batch's loss, the same number on every rank: the (B, B)
  similarity, mined-positive masks (from the global rows), Nearest / Multiframe matches and
  random frame picks (one generator, seeded alike on every rank) are those of the global batch.
- Backward: the gathered tensor's gradient is summed over the ranks (all-reduce) and each rank
  keeps its own rows: W x dL/d(own outputs), as in open_clip's `gather_features(...,
  gather_with_grad=True)` (torch.distributed.nn.all_gather sums in its backward too).
  DistributedDataParallel then averages the parameters' gradients over the W ranks, which gives
  exactly dL/dθ: each rank's encoder contributes its own clips' share, and parameters used in the
  loss itself (the temperature, CCL's heads) get the same dL/dθ on every rank.

open_clip's `local_loss=True` variant (each rank scores only its own rows against the global
columns, B/W x B logits) saves memory on the logits; here every rank holds the B x B matrix,
which is small at these batch sizes (B = 4096: 64 MB in float32) and lets every similarity
strategy, mask and method run unchanged on the global batch. Tested against one process with the
gloo backend on the CPU (tests/training/test_distributed.py).

A run is distributed when torchrun's environment is there (WORLD_SIZE > 1): `init_from_env`
joins the group (NCCL on CUDA, gloo on the CPU) and picks the rank's GPU (LOCAL_RANK).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# A rank waits this long in a collective (e.g. while rank 0 validates or writes a checkpoint) before failing.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class ProcessGroupEnv:
    """What torchrun (or `srun torchrun`) tells each process."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environ(cls, environ=os.environ) -> "ProcessGroupEnv":
        return cls(int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1)), int(environ.get("LOCAL_RANK", 0)))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str = "auto") -> tuple[ProcessGroupEnv, str]:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL for CUDA, gloo for the CPU) and
    return (env, the device this rank trains on: cuda:LOCAL_RANK under `auto` with CUDA)."""
    env = ProcessGroupEnv.from_environ()
    if not env.distributed or dist.is_initialized():
        return env, device
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if env.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {env.rank}: LOCAL_RANK {env.local_rank} but this node has "
                               f"{torch.cuda.device_count()} GPUs; lower nproc_per_node")
        torch.cuda.set_device(env.local_rank)
        device = f"cuda:{env.local_rank}"
    dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return env, device


def world() -> tuple[int, int]:
    """(rank, world size): the process group's when one is up, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def _comm_device(t: torch.Tensor) -> torch.device:
    """Where a collective needs the tensor: CUDA under NCCL, else where it is."""
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 (equal sizes on every rank); backward: the gradient summed over the
    ranks, this rank's rows kept."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.rows = rank, local.shape[0]
        parts = [torch.empty_like(local) for _ in range(size)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Every rank's `local` concatenated in rank order, differentiable (see the module doc)."""
    if world()[1] == 1:
        return local
    return _GatherWithGrad.apply(local)


def gather(local: torch.Tensor) -> torch.Tensor:
    """Every rank's `local` concatenated in rank order, without gradient, on `local`'s device."""
    if world()[1] == 1:
        return local
    on = local.detach().to(_comm_device(local))
    parts = [torch.empty_like(on) for _ in range(world()[1])]
    dist.all_gather(parts, on.contiguous())
    return torch.cat(parts).to(local.device)


def gather_tree(value, with_grad: bool):
    """`gather` (or `gather_with_grad`) over a tensor, or the tensors inside a tuple, list, dict or
    dataclass; None and non-tensors pass through. Boolean tensors (masks) travel as uint8."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool:
            return gather(value.to(torch.uint8)).bool()
        if with_grad and value.requires_grad:
            return gather_with_grad(value)
        return gather(value)
    if isinstance(value, dict):
        return {k: gather_tree(v, with_grad) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(gather_tree(v, with_grad) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: gather_tree(getattr(value, f.name), with_grad)
                                             for f in dataclasses.fields(value) if f.init})
    return value


def broadcast_object(value):
    """Rank 0's `value` on every rank."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]

"""DDP on the CPU (gloo, 2 processes): one step's loss and every parameter's gradient equal one
process on the concatenated batch, for InfoNCE, mined pairs, Nearest and Multiframe Match and the
gradient cache; a 2-process run trains the same weights as one process, and resumes exactly."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from open_clip.model import CLIP
from safetensors.torch import load_file
from test_trainer import MODEL, TINY, D, N, tiny_clips  # the same tiny clip set and model

from assets.caches.fbank_stats import Normaliser
from assets.training.data import BatchLoader
from assets.training.distributed import ProcessGroupEnv, gather, gather_tree, gather_with_grad
from assets.training.experiments import parse_experiment
from assets.training.trainer import FINAL_WEIGHTS, Trainer, TrainInputs
from models.audio_encoder import build_audio_encoder

BATCH = 8
CASES = {
    "infonce": {},
    "mined_pairs": {"loss": {"kind": "mined", "tables": ["t2t", "i2t", "t2i"], "k": 2}},
    "nearest": {"frames": {"strategy": "nearest", "nearest_start_epoch": 0}},
    "multiframe": {"frames": {"strategy": "multiframe"}},
    "gradient_cache": {"loss": {"kind": "mined", "tables": ["t2i"], "k": 2}, "grad_accum": 2},
}
# Measured (2 ranks): losses bit-identical to one process; gradients within 3e-7 of the largest gradient
# (float32 sums in another order: the encoder on half batches, the all-reduce).
LOSS_RTOL, GRAD_RTOL, GRAD_ATOL = 1e-6, 1e-5, 1e-7


def _exp(**over):
    body = {"dataset": "d", "model": MODEL, "epochs": 2, "batch_size": BATCH, "seeds": [3],
            "optim": {"optimizer": "lars", "lr_weights": 0.5, "lr_biases": 0.05, "warmup_epochs": 1}} | over
    return parse_experiment(body, "t", "t.yaml")


def _trainer(exp, out) -> Trainer:
    torch.manual_seed(0)
    visual = CLIP(**TINY).visual
    model = build_audio_encoder("audio_vit", visual, D, 3, **{k: v for k, v in MODEL.items() if k != "kind"})
    neighbours = None
    if exp.loss.kind == "mined":
        ring = (np.arange(N)[:, None] + np.array([1, 5, 9])[None, :]) % N  # partners across both ranks' halves
        neighbours = {t: ring for t in exp.loss.tables if t != "org"}
    inputs = TrainInputs(tiny_clips(), Normaliser({"mean": 0.5, "std": 2.0}), neighbours, groups=np.arange(N) % 6)
    return Trainer(exp, 3, model, inputs, out, torch.device("cpu"), log=lambda _: None)


def _step(trainer: Trainer, rows: np.ndarray) -> dict:
    """One step's loss and gradients on `rows` (this process's part of the global batch)."""
    batch = next(iter(BatchLoader(trainer.inputs.train, rows, len(rows), trainer.inputs.normalise, workers=0)))
    trainer.optimizer.zero_grad(set_to_none=True)
    loss = trainer._backward(batch, 0, torch.Generator().manual_seed(11))
    return {"loss": loss.detach().clone(),
            "grads": {k: p.grad.clone() for k, p in trainer.modules.named_parameters() if p.grad is not None}}


GLOBAL_ROWS = np.array([5, 17, 2, 9, 0, 21, 14, 6])  # rank r reads rows [4r, 4r + 4)


def _worker(rank: int, world: int, init: str, out: str, task: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        if task == "steps":
            local = np.array_split(GLOBAL_ROWS, world)[rank]
            results = {name: _step(_trainer(_exp(**over), f"{out}/unused"), local) for name, over in CASES.items()}
            torch.save(results, f"{out}/rank{rank}.pt")
        elif task == "gather":
            x = torch.full((2, 3), float(rank + 1), requires_grad=True)
            g = gather_with_grad(x)
            (g * torch.arange(4.0)[:, None]).sum().backward()  # every rank: the same loss over the gathered rows
            tree = gather_tree({"mask": torch.tensor([rank == 0]), "rows": (torch.tensor([rank]),)}, with_grad=False)
            torch.save({"gathered": g.detach(), "grad": x.grad, "tree": tree, "plain": gather(torch.tensor([rank]))},
                       f"{out}/rank{rank}.pt")
        else:  # fit: 2 epochs straight, or "killed" after epoch 0 and resumed
            exp = _exp(**CASES["mined_pairs"])
            if task == "fit_resumed":
                assert _trainer(exp, f"{out}/run").fit(stop_after_epoch=0) == {}
            summary = _trainer(exp, f"{out}/run").fit()
            torch.save(summary, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, task: str, world: int = 2) -> list:
    out = tmp_path / task
    out.mkdir()
    mp.spawn(_worker, args=(world, f"file://{tmp_path}/{task}.pg", str(out), task), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def test_gather_with_grad_sums_the_gradient_over_ranks(tmp_path):
    r0, r1 = _spawn(tmp_path, "gather")
    expected = torch.tensor([[1.0] * 3, [1.0] * 3, [2.0] * 3, [2.0] * 3])
    assert torch.equal(r0["gathered"], expected) and torch.equal(r1["gathered"], expected)
    # d(sum_i w_i g_i)/dx on each rank is w of its own rows, summed over the 2 ranks that computed the loss
    assert torch.equal(r0["grad"], 2 * torch.tensor([[0.0] * 3, [1.0] * 3]))
    assert torch.equal(r1["grad"], 2 * torch.tensor([[2.0] * 3, [3.0] * 3]))
    assert r0["tree"]["mask"].tolist() == [True, False] and r0["tree"]["rows"][0].tolist() == [0, 1]
    assert r1["plain"].tolist() == [0, 1]


def test_ddp_step_equals_one_process_on_the_concatenated_batch(tmp_path):
    ranks = _spawn(tmp_path, "steps")
    for name, over in CASES.items():
        one = _step(_trainer(_exp(**over), tmp_path / "one"), GLOBAL_ROWS)
        for r, got in enumerate(ranks):
            res = got[name]
            torch.testing.assert_close(res["loss"], one["loss"], rtol=LOSS_RTOL, atol=0, msg=f"{name} rank {r} loss")
            assert res["grads"].keys() == one["grads"].keys(), name
            assert len(one["grads"]) > 10 and all(g.abs().sum() > 0 for g in one["grads"].values())  # all trained
            for k, g in one["grads"].items():
                torch.testing.assert_close(res["grads"][k], g, rtol=GRAD_RTOL, atol=GRAD_ATOL,
                                           msg=lambda m: f"{name} rank {r} {k}: {m}")


def test_ddp_fit_trains_the_one_process_weights_and_resumes(tmp_path):
    exp = _exp(**CASES["mined_pairs"])
    one = _trainer(exp, tmp_path / "one").fit()
    straight, _ = _spawn(tmp_path, "fit")
    resumed, _ = _spawn(tmp_path, "fit_resumed")
    assert straight["world_size"] == 2 and resumed["resumed_at_epoch"] == 1
    np.testing.assert_allclose([h["loss"] for h in straight["history"]], [h["loss"] for h in one["history"]], rtol=1e-5)
    a = load_file(str(tmp_path / "one" / FINAL_WEIGHTS))
    for run in ("fit", "fit_resumed"):
        b = load_file(str(tmp_path / run / "run" / FINAL_WEIGHTS))  # written by rank 0 only
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{run} {k}: {m}")
    assert not any(p.name.startswith("rank") for p in (tmp_path / "fit" / "run").iterdir())


def test_process_group_env_reads_torchrun_variables():
    env = ProcessGroupEnv.from_environ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.distributed) == (3, 4, 1, True)
    assert not ProcessGroupEnv.from_environ({}).distributed


@pytest.mark.parametrize("batch_size", [7, 6])
def test_a_batch_that_does_not_split_over_the_ranks_is_an_error(batch_size, monkeypatch, tmp_path):
    import assets.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "world", lambda: (0, 4))
    with pytest.raises(ValueError, match="equal per-rank batches"):
        _trainer(_exp(batch_size=batch_size), tmp_path)


def test_torchrun_command_for_one_node_and_for_slurm_nodes():
    from assets.training.launch import torchrun_command

    one = torchrun_command(_exp(train={"nproc_per_node": 2}), [3], "/cache", {"model_name": "m"}, environ={})
    assert one[1:7] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "--nnodes"]
    assert one[one.index("--experiment") + 1] == "t" and one[-2:] == ["--seeds", "3"]
    two = _exp(train={"nproc_per_node": 4, "nnodes": 2})
    with pytest.raises(RuntimeError, match="needs a SLURM allocation of 2 nodes"):
        torchrun_command(two, [], "/cache", {}, environ={})
    cmd = torchrun_command(two, [], "/cache", {}, environ={"SLURM_JOB_ID": "7", "MASTER_ADDR": "node1"})
    assert cmd[:3] == ["srun", "--nodes=2", "--ntasks-per-node=1"]
    assert cmd[cmd.index("--rdzv_endpoint") + 1] == "node1:29500" and cmd[cmd.index("--rdzv_id") + 1] == "7"
    assert "--seeds" not in cmd and "--standalone" not in cmd

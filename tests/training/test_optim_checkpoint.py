"""Optimiser groups, warmup + cosine schedule, and exact resume from a checkpoint on CPU."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from assets.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from assets.training.experiments import OptimSpec
from assets.training.optim import OptimConfig, build_optimizer, build_scheduler, lr_factor, parameter_groups


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4))


def test_groups_split_weights_from_biases_and_norms():
    cfg = OptimConfig(lr_weights=0.2, lr_biases=4.8e-3)
    g = parameter_groups(_model(), cfg)
    assert [p.shape for p in g[0]["params"]] == [torch.Size([16, 6]), torch.Size([4, 16])]
    assert len(g[1]["params"]) == 4 and all(p.ndim == 1 for p in g[1]["params"])
    assert (g[0]["lr"], g[1]["lr"], g[1]["weight_decay"]) == (0.2, 4.8e-3, 0.0)


def test_defaults_are_the_experiment_files_defaults():
    """One source of default numbers: OptimSpec (seed 001 Table I: weights 0.2, biases 4.8e-3)."""
    cfg, spec = OptimConfig(), OptimSpec()
    assert (cfg.optimizer, cfg.lr_weights, cfg.lr_biases, cfg.weight_decay, cfg.momentum, cfg.min_lr_ratio) == (
        spec.optimizer, spec.lr_weights, spec.lr_biases, spec.weight_decay, spec.momentum, spec.min_lr_ratio)
    assert (spec.lr_weights, spec.lr_biases) == (0.2, 4.8e-3)


def test_schedule_hand_values():
    assert [lr_factor(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 2) == 1.0  # cosine starts at the peak
    assert lr_factor(9, 10, 2) == pytest.approx(0.0, abs=1e-12)  # and ends at min_lr_ratio
    assert lr_factor(5, 10, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
    assert lr_factor(9, 10, 2, min_lr_ratio=0.1) == pytest.approx(0.1)


def _train(model, opt, sched, data, epochs, start=0, ckpt=None):
    for epoch in range(start, epochs):
        order = np.random.permutation(len(data[0]))  # the global numpy RNG: restored on resume
        for b in range(0, len(order), 8):
            idx = torch.from_numpy(order[b:b + 8])
            loss = nn.functional.cross_entropy(model(data[0][idx]), data[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if ckpt is not None:
            save_checkpoint(ckpt, epoch + 1, model, opt, sched)


@pytest.mark.parametrize("optimizer", ["lars", "adamw"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(optimizer, tmp_path):
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(40, 6, generator=g), torch.randint(0, 4, (40,), generator=g))
    cfg = OptimConfig(optimizer=optimizer, warmup_steps=3)

    def fresh():
        model = _model()
        opt = build_optimizer(model, cfg)
        return model, opt, build_scheduler(opt, cfg, total_steps=10)

    torch.manual_seed(5)
    np.random.seed(5)
    straight, opt, sched = fresh()
    _train(straight, opt, sched, data, epochs=2)

    torch.manual_seed(5)
    np.random.seed(5)
    first, opt, sched = fresh()
    _train(first, opt, sched, data, epochs=1, ckpt=tmp_path)  # then the process is "killed"
    torch.manual_seed(123)  # the new process starts from other RNG states
    np.random.seed(123)
    resumed, opt, sched = fresh()
    state = latest_checkpoint(tmp_path)
    assert state.name == "epoch_0001.state.pt"
    start = load_checkpoint(state, resumed, opt, sched)["epoch"]
    _train(resumed, opt, sched, data, epochs=2, start=start)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_incomplete_checkpoint_is_ignored(tmp_path):
    model = _model()
    opt = build_optimizer(model, OptimConfig())
    sched = build_scheduler(opt, OptimConfig(), 10)
    save_checkpoint(tmp_path, 1, model, opt, sched)
    save_checkpoint(tmp_path, 2, model, opt, sched)
    (tmp_path / "epoch_0002.state.pt").unlink()  # killed after the weights, before the state
    assert latest_checkpoint(tmp_path).name == "epoch_0001.state.pt"
    assert latest_checkpoint(tmp_path / "none") is None

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
    assert [lr_factor(s, 10, 2) for s in (0, 1)] == [0.0, 0.5]  # VIP-ANT's warmup starts from 0
    assert lr_factor(2, 10, 2) == 1.0  # cosine starts at the peak
    assert lr_factor(6, 10, 2) == pytest.approx(0.5)  # half way through the 8 decay steps
    assert lr_factor(9, 10, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))  # the floor is at step 10
    assert lr_factor(9, 10, 2, min_lr_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


def _vipant_lr(step, epochs, steps_per_epoch, warmup_epoch, batch_size, lr_weight, lr_bias):
    """VIP-ANT's cvap/module/lars.py: adjust_learning_rate, written out as its code reads."""
    max_steps = epochs * steps_per_epoch
    warmup_steps = int(warmup_epoch * steps_per_epoch)
    base_lr = batch_size / 256
    if step < warmup_steps:
        lr = base_lr * step / warmup_steps
    else:
        step -= warmup_steps
        max_steps -= warmup_steps
        q = 0.5 * (1 + math.cos(math.pi * step / max_steps))
        end_lr = base_lr * 0.001
        lr = base_lr * q + end_lr * (1 - q)
    return lr * lr_weight, lr * lr_bias


@pytest.mark.parametrize("batch_size,lr_weight,lr_bias", [(128, 0.2, 4.8e-3), (64, 1.0, 2.4e-2)])
def test_trainer_schedule_equals_vipant(batch_size, lr_weight, lr_bias):
    """Seed 001's files (lr_scaling batch256, VIP-ANT's defaults) give VIP-ANT's rate at every step."""
    from assets.training.experiments import Experiment
    from assets.training.trainer import optim_config

    exp = Experiment(name="x", dataset="d", epochs=30, batch_size=batch_size,
                     optim=OptimSpec(lr_weights=lr_weight, lr_biases=lr_bias))
    steps = 7
    cfg = optim_config(exp, steps)
    assert cfg.warmup_steps == 70 and cfg.min_lr_ratio == 0.001
    model = _model()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, exp.epochs * steps)
    for step in range(exp.epochs * steps):
        want = _vipant_lr(step, exp.epochs, steps, 10, batch_size, lr_weight, lr_bias)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(want, rel=1e-12, abs=1e-15), step
        opt.step()
        sched.step()


def test_lr_scaling_none_keeps_the_rates():
    from assets.training.experiments import Experiment
    from assets.training.trainer import optim_config

    exp = Experiment(name="x", dataset="d", batch_size=64,
                     optim=OptimSpec(optimizer="adamw", lr_scaling="none", lr_weights=1e-3, lr_biases=2e-3))
    cfg = optim_config(exp, 10)
    assert (cfg.lr_weights, cfg.lr_biases) == (1e-3, 2e-3)
    scaled = optim_config(Experiment(name="x", dataset="d", batch_size=64), 10)
    assert (scaled.lr_weights, scaled.lr_biases) == pytest.approx((0.2 / 4, 4.8e-3 / 4))


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

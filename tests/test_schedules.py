"""Learning-rate schedules: exp-warmup, cosine with warm-up and one-cycle step per batch over the whole run, and a
longer production run (`tune train --epochs N`) keeps the shape of the trial's schedule and says what it changed."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from tests.ship.test_export_train import invoke, ok, write_config
from tuner.datasets import load_splits
from tuner.ship.export import read_export
from tuner.ship.resume import read_state, state_bytes
from tuner.spec import RunConfig
from tuner.train import fit, make_scheduler


def lrs(config: RunConfig, batches: int, optimizer: str = "adam") -> list[float]:
    """The learning rate each batch of a run of `config` trains at."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.Adam(params, lr=config.lr) if optimizer == "adam" else torch.optim.Adagrad(params, lr=config.lr)
    schedule = make_scheduler(config, opt, batches)
    seen = []
    for _ in range(batches * config.epochs):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return seen


def test_cosine_warms_up_linearly_then_falls_to_zero():
    seen = lrs(RunConfig(scheduler="cosine", warmup=0.2, lr=0.01, epochs=5), batches=10)
    assert seen[:10] == pytest.approx([0.001 * (i + 1) for i in range(10)])  # 20 % of 50 batches
    assert max(seen) == pytest.approx(0.01) and seen[10] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(seen[10:], seen[11:], strict=False)) and seen[-1] < 0.0001


def test_exp_warmup_warms_up_linearly_then_multiplies_the_rate_by_gamma_each_epoch():
    seen = lrs(RunConfig(scheduler="exp-warmup", warmup=0.2, gamma=0.5, lr=0.01, epochs=5), batches=10)
    assert seen[:10] == pytest.approx([0.001 * (i + 1) for i in range(10)])  # 20 % of 50 batches
    assert seen[10] == pytest.approx(0.01) and seen[20] == pytest.approx(0.005) and seen[30] == pytest.approx(0.0025)
    assert seen[15] == pytest.approx(0.01 * 0.5 ** 0.5)  # smoothly within an epoch, not in steps
    assert all(a > b for a, b in zip(seen[10:], seen[11:], strict=False))


@pytest.mark.parametrize("gamma", [0.3, 0.7])
def test_onecycle_gamma_is_onecycle_ending_at_lr_times_gamma_per_epoch(gamma):
    config = RunConfig(scheduler="onecycle-gamma", warmup=0.1, lr=0.01, epochs=4, gamma=gamma)
    seen, plain = lrs(config, 10), lrs(config.replace(scheduler="onecycle"), 10)
    assert seen[:4] == pytest.approx(plain[:4])  # the same warm-up from lr / 25
    assert max(seen) == pytest.approx(0.01) and seen[-1] == pytest.approx(0.01 * gamma ** 4, rel=0.05)


@pytest.mark.parametrize("batches", [1, 3, 10, 37])
@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])  # adagrad has no momentum to cycle
def test_onecycle_rises_to_lr_then_ends_far_below(batches, optimizer):
    seen = lrs(RunConfig(scheduler="onecycle", warmup=0.1, lr=0.01, epochs=4), batches, optimizer)
    assert len(seen) == 4 * batches and max(seen) <= 0.01 + 1e-12
    assert seen[-1] < seen[0] < 0.01 and max(seen) > 0.009


@pytest.mark.parametrize("scheduler", ["exp-warmup", "onecycle-gamma", "cosine", "onecycle"])
def test_a_per_batch_schedule_resumed_after_an_epoch_ends_as_an_uninterrupted_run(data_dir, scheduler):
    splits = load_splits("fashion-mnist", str(data_dir), 0.2, 0, "cpu")
    config = RunConfig(model="mlp", scheduler=scheduler, warmup=0.3, lr=3e-3, batch_size=64, epochs=3)
    states = []
    whole = fit(config, splits, on_state=lambda state: states.append(state_bytes(state)))
    resumed = fit(config, splits, resume=read_state(states[0])[0])
    assert [e.val_loss for e in resumed.history] == [e.val_loss for e in whole.history]
    assert resumed.test_accuracy == whole.test_accuracy


def test_a_longer_run_keeps_the_schedules_shape():
    exponential = RunConfig(scheduler="exponential", gamma=0.7, lr=0.01, epochs=8)
    longer, note = exponential.stretched(22)
    assert longer.epochs == 22 and longer.lr * longer.gamma ** 21 == pytest.approx(0.01 * 0.7 ** 7)
    assert note == ("22 epochs instead of 8: exponential gamma 0.7 -> 0.8879 per epoch, so that the last epoch trains "
                    "at the same learning rate (0.000824) as in the original run")
    warm = RunConfig(scheduler="exp-warmup", gamma=0.5, warmup=0.1, lr=0.01, epochs=8)
    longer, note = warm.stretched(16)
    assert longer.gamma ** (16 * 0.9) == pytest.approx(0.5 ** (8 * 0.9)) and longer.warmup == 0.1
    assert note is not None and note.startswith("16 epochs instead of 8: exp-warmup gamma 0.5 -> 0.7071 per epoch")
    assert lrs(longer, 10)[-1] == pytest.approx(lrs(warm, 20)[-1], rel=0.02)  # ends where a twice-longer epoch would
    step, note = RunConfig(scheduler="step", gamma=0.5, step_size=2, epochs=8).stretched(16)
    assert step.step_size == 4 and step.gamma == 0.5 and "every 4 epochs instead of 2" in (note or "")
    cosine, note = RunConfig(scheduler="cosine", warmup=0.2, epochs=8).stretched(12)
    assert (cosine.epochs, cosine.warmup) == (12, 0.2) and "its warm-up the first 20% of the batches" in (note or "")
    assert exponential.stretched(8) == (exponential, None)
    assert RunConfig(epochs=1).stretched(5)[0].gamma == RunConfig().gamma  # one epoch: no decay to match


def test_tune_train_epochs_says_how_it_stretched_the_schedule(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "hand.yaml", batch_size=128, gamma=0.5)
    result = ok(invoke("train", "hand.yaml", "--data-dir", data_dir, "--device", "cpu", "--epochs", 3))
    assert "3 epochs instead of 2: exponential gamma 0.5 -> 0.7071 per epoch" in result.stderr
    trained = read_export("runs/hand/config.yaml").config
    assert trained.epochs == 3 and math.isclose(trained.gamma, 0.5 ** 0.5)
    metrics = yaml.safe_load((tmp_path / "runs" / "hand" / "metrics.json").read_text())
    assert metrics["schedule"].startswith("3 epochs instead of 2")

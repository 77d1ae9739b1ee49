"""Data, models and training: what a trial trains and how it stops."""

from __future__ import annotations

import pytest
import torch

import tuner.train
from tuner.datasets import load_splits
from tuner.errors import TuneError
from tuner.models import build_model
from tuner.spec import RunConfig
from tuner.spec.refs import MODELS
from tuner.train import Diverged, fit, resolve_device


@pytest.fixture
def splits(data_dir):
    return load_splits("fashion-mnist", str(data_dir), 0.2, 0, "cpu")


def test_splits_are_uint8_seeded_and_disjoint(splits, data_dir):
    assert splits.train.x.dtype == torch.uint8 and splits.shape == (1, 28, 28)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (480, 120, 200)
    again = load_splits("fashion-mnist", str(data_dir), 0.2, 0, "cpu")
    assert again is splits  # loaded once per process
    other_seed = load_splits("fashion-mnist", str(data_dir), 0.2, 1, "cpu")
    assert not torch.equal(other_seed.val.y, splits.val.y)


def test_validation_test_selects_on_the_test_split(data_dir):
    splits = load_splits("fashion-mnist", str(data_dir), "test", 0, "cpu")
    assert len(splits.train) == 600 and splits.val is splits.test


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_models_take_uint8_images_of_each_dataset_shape(family, shape):
    model = build_model(RunConfig(model=family, dropout=0.2), shape, 10, (0.5,) * shape[0], (0.25,) * shape[0])
    logits = model(torch.randint(0, 256, (4, *shape), dtype=torch.uint8))
    assert logits.shape == (4, 10)


def test_fit_learns_and_reports_every_epoch(splits):
    seen = []
    result = fit(RunConfig(model="mlp", optimizer="adam", lr=1e-3, epochs=3), splits, seen.append)
    assert [e.epoch for e in seen] == [1, 2, 3]
    assert result.history[-1].val_accuracy > 0.9
    assert result.test_accuracy > 0.9


def test_same_seed_same_result(splits):
    config = RunConfig(model="convnet", optimizer="sgd", lr=0.05, momentum=0.9, epochs=2, seed=7)
    first, second = fit(config, splits), fit(config, splits)
    assert [e.val_loss for e in first.history] == [e.val_loss for e in second.history]
    assert first.test_accuracy == second.test_accuracy


def test_trivial_augment_mixup_and_cutmix_replay_exactly_and_still_learn(splits):
    config = RunConfig(model="mlp", lr=1e-3, epochs=2, seed=3, trivial_augment=True, mixup=0.2, cutmix=1.0,
                       label_smoothing=0.1, class_weights=True)
    first, second = fit(config, splits), fit(config, splits)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                  second.model.state_dict().values(), strict=True))
    plain = fit(config.replace(trivial_augment=False, mixup=0.0, cutmix=0.0), splits)
    assert plain.history[-1].train_loss < first.history[-1].train_loss  # mixed targets are harder to fit
    assert first.test_accuracy is not None and first.test_accuracy > 0.7


def test_exploding_loss_raises_diverged(splits):
    with pytest.raises(Diverged, match="training loss became (nan|inf) in epoch 1"):
        fit(RunConfig(model="mlp", optimizer="sgd", lr=1e6, momentum=0.9, epochs=3), splits)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam"])
@pytest.mark.parametrize("scheduler", ["exponential", "step", "cosine", "onecycle", "none"])
def test_every_optimizer_and_scheduler_trains(splits, optimizer, scheduler):
    config = RunConfig(model="mlp", optimizer=optimizer, scheduler=scheduler, lr=1e-3, epochs=1, batch_size=128)
    assert fit(config, splits).history[0].val_accuracy > 0


def test_devices_that_are_absent_are_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TuneError, match="--device cuda: no CUDA GPU is visible"):
            resolve_device("cuda")


def test_compiled_training_matches_eager(splits, monkeypatch):
    """torch.compile's graph capture (the eager backend, to skip minutes of kernel builds) changes no result."""
    monkeypatch.setattr(tuner.train, "COMPILE_BACKEND", "eager")
    config = RunConfig(model="bncnn", optimizer="adamw", lr=1e-3, epochs=2, batch_size=100, seed=3)
    plain, compiled = fit(config, splits), fit(config.replace(compile=True), splits)
    assert [e.val_loss for e in compiled.history] == pytest.approx([e.val_loss for e in plain.history], rel=1e-4)
    assert set(compiled.model.state_dict()) == set(plain.model.state_dict())  # no "_orig_mod." prefixes


@pytest.mark.parametrize(("model", "optimizer", "scheduler"), [
    ("mlp", "adam", "onecycle"), ("bncnn", "sgd", "cosine"), ("cnn", "rmsprop", "step")])
def test_a_run_resumed_from_its_saved_state_ends_bit_exact(splits, model, optimizer, scheduler):
    """Dropout, flips, shifts, TrivialAugment and CutMix draw random numbers, batch norm keeps running statistics,
    SGD a momentum, the per-batch schedules (one cycle also Adam's betas) a step count: the state `fit` hands out
    after epoch 2, serialized and read back, continues to the uninterrupted run's end."""
    from tuner.ship.resume import read_state, state_bytes

    config = RunConfig(model=model, optimizer=optimizer, scheduler=scheduler, epochs=4, batch_size=32,
                       dropout=0.3, flip=True, translate=2, trivial_augment=model == "bncnn", cutmix=1.0,
                       momentum=0.9, seed=7)
    whole = fit(config, splits)
    saved: list[bytes] = []

    class Killed(Exception):
        pass

    def save(state):
        saved.append(state_bytes(state))
        if state.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(config, splits, on_state=save)
    state, _ = read_state(saved[-1])
    resumed = fit(config, splits, resume=state)
    assert [(e.epoch, e.train_loss, e.val_accuracy, e.val_loss) for e in resumed.history] == [
        (e.epoch, e.train_loss, e.val_accuracy, e.val_loss) for e in whole.history]
    assert resumed.test_accuracy == whole.test_accuracy
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                  whole.model.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="another run config"):
        fit(config.replace(lr=0.5), splits, resume=state)

"""The Optuna objective: sample a run config, train it, report each epoch, prune, and record the outcome."""

from __future__ import annotations

import functools
import gc
import random
from collections.abc import Callable
from typing import cast

import optuna
import torch

from tuner.datasets import Splits
from tuner.errors import TrialFailed
from tuner.record import REASON, SECONDS_ATTR, SEED_ATTR, TEST_ATTR, record_trial_start
from tuner.search.checkpoints import trial_checkpoint
from tuner.search.space import sample_config
from tuner.ship.artifacts import keep_weights
from tuner.spec import StudySpec
from tuner.train import Diverged, Epoch, fit

EpochHook = Callable[[optuna.Trial, Epoch], None]
BatchHook = Callable[[optuna.Trial, int, int, int], None]  # (trial, epoch, batches done, batches in the epoch)


def trial_seed(trial: optuna.Trial, base_seed: int | None) -> int:
    """The trial's training seed: a retried trial keeps its original's (copied into its user attrs by Optuna's
    retry callback); else `base_seed` + the trial number, or a random seed without `base_seed`."""
    if SEED_ATTR in trial.user_attrs:
        return cast(int, trial.user_attrs[SEED_ATTR])
    if base_seed is None:
        return random.SystemRandom().randrange(2**31)
    return base_seed + trial.number


class Objective:
    """Trains one trial of `spec` on `splits`; `on_epoch` lets callers watch each epoch, `on_batch` the progress
    within one (about once a second)."""

    def __init__(self, spec: StudySpec, splits: Splits, seed: int | None = None,
                 on_epoch: EpochHook | None = None, keep_top: int = 3, on_batch: BatchHook | None = None) -> None:
        self.spec = spec
        self.keep_top = keep_top  # weights of the best `keep_top` completed trials are kept as artifacts
        self.splits = splits
        self.seed = seed
        self.on_epoch = on_epoch
        self.on_batch = on_batch

    def __call__(self, trial: optuna.Trial) -> float:
        seed = trial_seed(trial, self.seed)
        config = sample_config(trial, self.spec, seed)
        input_info = self.splits.input_info()
        record_trial_start(trial, config, seed, torch.get_num_threads(), input_info)

        def report(epoch: Epoch, prune: bool = True) -> None:
            trial.report(epoch.metric(self.spec.metric), epoch.epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial, epoch)
            # After the last epoch the work is done: the trial completes with its value, whatever the pruner says.
            if prune and epoch.epoch < config.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch.epoch}")

        # A retry goes on from its original's checkpoint; the checkpoint is deleted when the trial ends for good.
        with trial_checkpoint(trial, config, self.splits.train.compute_device.type) as checkpoint:
            for done in checkpoint.history:  # the epochs its original trained: pruners see one whole curve
                report(done, prune=False)
            out_of_memory = False
            try:
                batch_hook = None if self.on_batch is None else functools.partial(self.on_batch, trial)
                result = fit(config, self.splits, report, on_batch=batch_hook, resume=checkpoint.state,
                             on_state=checkpoint.save)
            except Diverged as e:
                trial.set_user_attr(REASON, str(e))
                raise optuna.TrialPruned(str(e)) from None
            except torch.OutOfMemoryError:
                out_of_memory = True  # handled below, once the traceback no longer holds the trial's tensors
            if out_of_memory:
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                reason = f"out of memory at batch size {config.batch_size} with model {config.model}"
                trial.set_user_attr(REASON, reason)
                raise TrialFailed(reason)

        trial.set_user_attr(TEST_ATTR, result.test_accuracy)
        trial.set_user_attr(SECONDS_ATTR, round(result.seconds, 3))
        value = result.history[-1].metric(self.spec.metric)
        keep_weights(trial, result.model, value, self.keep_top, config, input_info)
        return value

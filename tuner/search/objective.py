"""The Optuna objective: sample a run config, train it, report each epoch, prune, and record the outcome.

In a multi-objective study (the spec's `objectives`) it returns the metric with the model's latency and/or size;
Optuna has no pruning there (`trial.report` and `should_prune` refuse such studies), so each epoch's value is
written to the storage directly, for the dashboard's curves, and only tune's own rules stop a trial: its
constraints before training and the stuck rule (tuner.search.stuck). The median pruner (or any) is not asked."""

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
from tuner.record import PER_CLASS_ATTR, REASON, SECONDS_ATTR, SEED_ATTR, TEST_ATTR, per_class, record_trial_start
from tuner.search.checkpoints import trial_checkpoint
from tuner.search.constraints import check_deployment, objective_values
from tuner.search.space import sample_config
from tuner.search.stuck import Chance, stuck
from tuner.ship.artifacts import keep_weights
from tuner.ship.production import confusion_matrix
from tuner.spec import StudySpec
from tuner.train import Diverged, Epoch, fit, predictions

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
        # `pruner: none` runs every trial to its last epoch: no stuck rule either. The rule reads plain accuracy, which
        # a run selected on balanced accuracy or macro F1 (imbalanced classes, class weights) may rightly trade away
        stuck_rule = spec.pruner != "none" and spec.metric in ("accuracy", "loss")
        self.chance = Chance.of(splits.val.y, splits.num_classes) if stuck_rule else None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        seed = trial_seed(trial, self.seed)
        config = sample_config(trial, self.spec, seed)
        input_info = self.splits.input_info()
        record_trial_start(trial, config, seed, torch.get_num_threads(), input_info)
        measured = check_deployment(trial, self.spec, config, self.splits)  # an infeasible model: pruned untrained
        several = bool(self.spec.objectives)  # a multi-objective study: Optuna prunes nothing

        history: list[Epoch] = []

        def report(epoch: Epoch, prune: bool = True) -> None:
            if several:  # Optuna's report refuses multi-objective studies; the dashboard still plots the curve
                trial.storage.set_trial_intermediate_value(trial._trial_id, epoch.epoch, epoch.metric(self.spec.metric))
            else:
                trial.report(epoch.metric(self.spec.metric), epoch.epoch)
            history.append(epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial, epoch)
            if not prune:
                return
            reason = None if self.chance is None else stuck(history, self.chance, config.epochs)
            if reason is not None:
                trial.set_user_attr(REASON, reason)
                raise optuna.TrialPruned(reason)
            # After the last epoch the work is done: the trial completes with its value, whatever the pruner says.
            if not several and epoch.epoch < config.epochs and trial.should_prune():
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
        # fit keeps no confusion matrix of its epochs: the final model labels the validation split once more
        val = self.splits.val
        confusion = confusion_matrix(val.y, predictions(result.model, val), self.splits.num_classes)
        trial.set_user_attr(PER_CLASS_ATTR, per_class(confusion, self.splits.classes))
        value = result.history[-1].metric(self.spec.metric)
        keep_weights(trial, result.model, value, self.keep_top, config, input_info)
        return objective_values(self.spec, value, measured)

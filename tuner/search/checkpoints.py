"""Trial checkpoints: a running trial's training state after every epoch, kept in the study's artifact store (where
kept weights live, so a TUNE_ARTIFACTS folder that every machine shares serves workers on many machines), so that
a retry of the trial goes on from its last epoch instead of from the start.

A trial finds its checkpoint through its lineage: the artifact ids are a trial system attr (CHECKPOINT_ATTR), and a
retry (queued by Optuna's retry callback for a dead worker, or by `requeue_interrupted` for a trial stopped by
Ctrl-C or SIGTERM) carries a copy of its original's system attrs, so it reads and writes the same ids. A trial
deletes its checkpoint when it ends (complete, pruned, failed by its own error); one whose trial failed for good
otherwise (its worker died once more than Optuna retries) is deleted by `sweep` when a command starts or ends.
"""

from __future__ import annotations

import sys
import uuid
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner.errors import TrialFailed
from tuner.record import CHECKPOINT_ATTR, REQUEUED_FROM, RESUMED_ATTR, RETRY_HISTORY, RETRY_OF
from tuner.ship.artifacts import artifact_dir_for, artifact_store_for, storage_url_of
from tuner.ship.resume import StateWriter, cannot_save, latest_state, remove_states

if TYPE_CHECKING:
    from tuner.spec import RunConfig
    from tuner.train import Epoch, TrainState

SWEEP_AFTER = timedelta(seconds=10)  # a FAIL trial younger than this may be about to get its retry queued


class TrialCheckpoint:
    """One trial's checkpoint: `state` to resume from (None: start at epoch 1), and `save`, which writes each new
    state in the background. Used as a context manager around training: leaving it normally, or by an exception
    that ends the trial for good (pruned, TrialFailed), deletes the checkpoint; Ctrl-C or any other error keeps it
    for the trial's retry."""

    def __init__(self, state: TrainState | None = None, writer: StateWriter | None = None) -> None:
        self.state = state
        self.writer = writer

    @property
    def history(self) -> list[Epoch]:
        """The epochs the checkpoint holds, already trained."""
        return list(self.state.history) if self.state is not None else []

    def save(self, state: TrainState) -> None:
        if self.writer is not None:
            self.writer(state)

    def __enter__(self) -> TrialCheckpoint:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.writer is not None:
            ended = kind is None or issubclass(kind, optuna.TrialPruned | TrialFailed)
            self.writer.close(keep=not ended)


def _ids(trial: optuna.Trial, attrs: dict[str, Any]) -> list[str]:
    """The trial's checkpoint ids: its original's, for a retry; else new ones, recorded on the trial."""
    ids = attrs.get(CHECKPOINT_ATTR)
    if isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, str) for i in ids):
        return ids
    key = uuid.uuid4().hex
    ids = [f"checkpoint-{key}-a", f"checkpoint-{key}-b"]
    trial.storage.set_trial_system_attr(trial._trial_id, CHECKPOINT_ATTR, ids)
    return ids


def _epochs_done(trial: optuna.Trial, attrs: dict[str, Any]) -> int:
    """The epochs the trial this one retries reported before it stopped."""
    lineage = [*(attrs.get(RETRY_HISTORY) or []), attrs.get(REQUEUED_FROM), attrs.get(RETRY_OF)]
    before = max((n for n in lineage if isinstance(n, int)), default=None)  # the newest: numbers only grow
    if before is None:
        return 0
    storage = trial.storage
    try:
        previous = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(trial.study._study_id, before))
    except (KeyError, TypeError):  # not in this study (a hand-made retry)
        return 0
    return len(previous.intermediate_values)


def trial_checkpoint(trial: optuna.Trial, config: RunConfig, device: str = "cpu") -> TrialCheckpoint:
    """The checkpoint of `trial`, which trains `config` on `device` (a type: cpu, cuda): a retry resumes from its
    original's newest usable state saved on the same kind of device (one line on stderr says from which epoch, or
    why it starts over). A study in memory keeps none."""
    url = storage_url_of(trial.storage)
    if url is None:
        return TrialCheckpoint()
    where = f" to {artifact_dir_for(url)}"
    try:
        store = artifact_store_for(url)
    except OSError as e:  # the artifact folder is a file, or cannot be made: trials run without checkpoints
        cannot_save(where, e)
        return TrialCheckpoint()
    attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
    ids = _ids(trial, attrs)
    original = attrs.get(RETRY_OF)
    stamp = {"device": device}
    if original is None:
        return TrialCheckpoint(None, StateWriter(store, ids, where=where, stamp=stamp))
    saved = latest_state(store, ids, config, stamp)
    resumed = saved.state.epoch if saved.state is not None else 0
    trial.set_user_attr(RESUMED_ATTR, resumed)
    if saved.state is not None:
        print(f"trial {trial.number} continues trial {original} after epoch {resumed} of {config.epochs}, from "
              "its checkpoint", file=sys.stderr)
    elif saved.problem is not None:
        print(f"warning: trial {trial.number} retries trial {original} from epoch 1: its checkpoint cannot be "
              f"used ({saved.problem})", file=sys.stderr)
    elif _epochs_done(trial, attrs) > 0:
        print(f"warning: trial {trial.number} retries trial {original} from epoch 1: its checkpoint is missing "
              f"(deleted, or in another machine's artifact folder: share one with $TUNE_ARTIFACTS)", file=sys.stderr)
    else:
        print(f"trial {trial.number} retries trial {original} from epoch 1: it stopped in its first epoch",
              file=sys.stderr)
    return TrialCheckpoint(saved.state, StateWriter(store, ids, first_slot=saved.next_slot, where=where, stamp=stamp))


def sweep(study: optuna.Study) -> int:
    """Delete the checkpoints that no trial will resume from: those of FAIL trials with no retry RUNNING or
    WAITING. Returns how many lineages were swept (most already had nothing left to delete)."""
    url = storage_url_of(study._storage)
    if url is None:
        return 0
    trials = study.get_trials(deepcopy=False)
    alive = {tuple(ids) for t in trials if (ids := t.system_attrs.get(CHECKPOINT_ATTR))
             and t.state in (TrialState.RUNNING, TrialState.WAITING)}
    settled = datetime.now() - SWEEP_AFTER
    dead = {tuple(ids) for t in trials if (ids := t.system_attrs.get(CHECKPOINT_ATTR))
            and t.state == TrialState.FAIL and (t.datetime_complete or settled) <= settled} - alive
    if dead:
        try:
            store = artifact_store_for(url)
        except OSError:  # no artifact folder to delete from (trial_checkpoint said so)
            return 0
        for ids in dead:
            remove_states(store, ids)
    return len(dead)

"""Live progress of a search: trials done of the total, the running trials' epochs and the best so far, as a bar on
a terminal or a line per finished trial in a log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tuner.record import run_of, trial_note
from tuner.search.trial_loop import database_error

if TYPE_CHECKING:
    from tuner.train import Epoch


def describe_best(study: optuna.Study) -> str:
    try:
        best = study.best_trial
    except ValueError:
        return "no completed trial yet"
    return f"best {best.value:.4f} (trial {best.number})"


class SearchProgress:
    """Trials done / total, the running trial's epoch, and the best so far: a live bar on a terminal, else a
    line per finished trial (for logs and CI)."""

    def __init__(self, study: optuna.Study, total: int | None, epochs: int, console: Console) -> None:
        self.study = study
        self.epochs = epochs
        self.console = console
        self.live = console.is_terminal
        self.bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), console=console, disable=not self.live)
        self.best = describe_best(study)  # read from the storage once per finished trial, not per epoch
        self.task = self.bar.add_task(self.best, total=total)

    def __enter__(self) -> SearchProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def on_epoch(self, trial: optuna.Trial, epoch: Epoch) -> None:
        status = f"trial {trial.number} epoch {epoch.epoch}/{self.epochs} val {epoch.val_accuracy:.4f} | {self.best}"
        self.bar.update(self.task, description=status)

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.best = describe_best(study)
        self.bar.update(self.task, advance=1, description=self.best)
        if not self.live:
            value = "" if trial.value is None else f" value {trial.value:.4f}"
            note = trial_note(trial)
            reason = f" ({note})" if note else ""
            epochs = len(trial.intermediate_values)
            self.console.print(f"trial {trial.number} {trial.state.name}{value} after {epochs} epoch(s){reason}; "
                               f"{self.best}", highlight=False)



WATCHED_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class PoolProgress:
    """Progress of the pool in the parent, read from the storage: trials of this invocation done, running trials
    with their epoch, the best so far. Same bar (or lines in a log) as a search in one process."""

    def __init__(self, study: optuna.Study, run: str, reaped: set[int], total: int | None, epochs: int,
                 console: Console) -> None:
        self.study, self.run = study, run
        self.reaped = reaped  # trials of dead workers, failed and queued again: not counted as done
        self.search = SearchProgress(study, total, epochs, console)
        self.epochs = epochs
        self.seen: set[int] = set()

    def __enter__(self) -> PoolProgress:
        self.search.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.search.__exit__(*exc)

    def poll(self) -> None:
        """Print the trials finished since the last poll and show those running; a database that does not answer
        is skipped over (each worker waits for it on its own)."""
        try:
            self._poll()
        except Exception as e:
            if database_error(e) is None:
                raise

    def _poll(self) -> None:
        study, run = self.study, self.run
        # One read, without copies and without the WAITING trials (queued retries); the study's cached storage
        # fetches only the trials that changed since the last poll.
        trials = study.get_trials(deepcopy=False, states=WATCHED_STATES)
        for trial in trials:
            if (trial.state.is_finished() and trial.number not in self.seen and trial.number not in self.reaped
                    and run_of(trial) == run):
                self.seen.add(trial.number)
                self.search.on_trial_end(study, trial)
        running = [f"trial {t.number} epoch {len(t.intermediate_values)}/{self.epochs}"
                   for t in trials if t.state == TrialState.RUNNING and run_of(t) == run]
        status = "; ".join(running[:4]) + (" ..." if len(running) > 4 else "")
        best = describe_best(study)
        self.search.bar.update(self.search.task, description=f"{status} | {best}" if status else best)

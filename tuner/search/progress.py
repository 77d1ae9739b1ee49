"""Live progress of a search: trials done of the total, the running trials' epochs and the best so far, as a bar on
a terminal or a line per finished trial in a log."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from tuner.errors import counted
from tuner.record import run_of, trial_note
from tuner.search.bar import FittedColumn, Forms, best_forms, params_forms, status_forms
from tuner.search.stopping import best_of, stagnation
from tuner.search.trial_loop import database_error
from tuner.storage import first_value, is_multi_objective

if TYPE_CHECKING:
    from tuner.train import Epoch


def describe_best(study: optuna.Study) -> str:
    """The best so far, and how long the search has gone without beating it; in a multi-objective study, the
    Pareto front's size and its best metric."""
    best = best_of(study)
    if best is None:
        return "no completed trial yet"
    if is_multi_objective(study):
        return f"best {first_value(best):.4f} (trial {best.number}), Pareto front of {len(study.best_trials)}"
    flat = stagnation(study.get_trials(deepcopy=False), best)
    return f"best {best.value:.4f} (trial {best.number})" + (f", {flat.text()}" if flat is not None else "")


MAIN_PARAMS = ("model", "optimizer", "lr", "batch_size")  # what the bar shows of the running trial
ETA_WINDOW = 600.0  # seconds of progress the live ETA is estimated from


def main_params(params: dict[str, Any]) -> str:
    """The running trial's main params, as "optimizer=adam lr=0.0031 batch_size=64"."""
    return " ".join(f"{name}={_short(params[name])}" for name in MAIN_PARAMS if name in params)


def _short(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


BAR_WIDTH = 10  # columns of the bar itself: the text beside it needs them more
OVERTIME_NOTE = 60.0  # a log says so once the running trial outlasts --timeout by this (or a quarter of it)


class Overtime:
    """How far the running trial outlasts --timeout: no trial starts after it, but the running one goes on to its
    end. The live bar says so from the first second over; a log once the trial is far over."""

    def __init__(self, deadline: float | None, console: Console) -> None:
        self.deadline = deadline  # time.time() after which no trial starts
        self.timeout = 0.0 if deadline is None else max(0.0, deadline - time.time())
        self.console = console
        self.said = False

    def check(self, running: str) -> Forms | None:
        """The bar's forms of the note (None before the deadline); prints the log line when `running` is far over."""
        if self.deadline is None or time.time() <= self.deadline:
            return None
        over = time.time() - self.deadline
        ago = clock(over)
        if not self.said and not self.console.is_terminal and over >= max(OVERTIME_NOTE, self.timeout / 4):
            self.said = True
            self.console.print(f"{running} runs on {ago} past --timeout {self.timeout:.0f} s: no new trial starts, "
                               "it stops when its epochs are done (Ctrl-C stops it now; the study resumes)",
                               highlight=False, soft_wrap=True)
        return (f"--timeout passed {ago} ago: no trial starts after this one", f"--timeout passed {ago} ago",
                "past --timeout")


class SearchProgress:
    """Trials done / total with the share of the running trial, an ETA, the running trial's epoch (and batch, in
    epochs long enough to report them) and main params, and the best so far: a live bar on a terminal, else a
    line per finished trial (for logs and CI)."""

    def __init__(self, study: optuna.Study, total: int | None, epochs: int, console: Console,
                 deadline: float | None = None) -> None:
        self.study = study
        self.epochs = epochs
        self.console = console
        self.live = console.is_terminal
        fixed = Column(no_wrap=True)  # the counts, elapsed time and ETA never shorten: the text beside them does
        self.bar = Progress(TextColumn("trials", table_column=fixed), MofNCompleteColumn(table_column=fixed),
                            TimeElapsedColumn(table_column=fixed), TextColumn("ETA", table_column=fixed),
                            TimeRemainingColumn(compact=True, table_column=fixed),
                            BarColumn(bar_width=BAR_WIDTH, table_column=fixed), FittedColumn(),
                            console=console, disable=not self.live, speed_estimate_period=ETA_WINDOW)
        self.best = describe_best(study)  # read from the storage once per finished trial, not per epoch
        self.task = self.bar.add_task(self.best, total=total, pieces={"best": best_forms(self.best)})
        self.total = total
        self.done = 0  # trials finished in this run
        self.started = time.monotonic()
        self.overtime = Overtime(deadline, console)
        self.params: tuple[int, str] = (-1, "")  # the running trial's number and main params
        self.val = ""  # its last validation accuracy

    def __enter__(self) -> SearchProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def _trial_params(self, trial: optuna.Trial) -> str:
        if self.params[0] != trial.number:  # read once per trial
            self.params, self.val = (trial.number, main_params(trial.params)), ""
        return self.params[1]

    def show(self, trial: optuna.Trial, epoch: int, batch: str, fraction: float) -> None:
        """The running trial is `fraction` done, in `epoch` (and `batch`, as "100/400", or "")."""
        params = self._trial_params(trial)
        where = f"{epoch}/{self.epochs}"
        pieces = {"status": status_forms(trial.number, where, batch, self.val), "params": params_forms(params),
                  "best": best_forms(self.best)}
        overtime = self.overtime.check(f"trial {trial.number} (epoch {where})")
        if overtime:
            pieces["overrun"] = overtime
        description = f"trial {trial.number} epoch {where}{self.val} | {params} | {self.best}"
        self.bar.update(self.task, completed=self.done + min(fraction, 1.0), description=description,
                        pieces=pieces)

    def on_batch(self, trial: optuna.Trial, epoch: int, done: int, batches: int) -> None:
        self.show(trial, epoch, f"{done}/{batches}", (epoch - 1 + done / max(batches, 1)) / self.epochs)

    def on_epoch(self, trial: optuna.Trial, epoch: Epoch) -> None:
        self._trial_params(trial)
        self.val = f" val {epoch.val_accuracy:.4f}"
        self.show(trial, epoch.epoch, "", epoch.epoch / self.epochs)

    def eta(self) -> str:
        """Time left at the pace of this run so far (for log lines; the live bar estimates its own)."""
        if self.total is None or not self.done:
            return ""
        left = (time.monotonic() - self.started) / self.done * max(0, self.total - self.done)
        return f"; {self.done}/{self.total} done, ETA {clock(left)}"

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.best = describe_best(study)
        self.done += 1
        self.bar.update(self.task, completed=self.done, description=self.best, pieces={"best": best_forms(self.best)})
        if not self.live:
            value = "" if not trial.values else " value " + ", ".join(f"{v:.4f}" for v in trial.values)
            note = trial_note(trial)
            reason = f" ({note})" if note else ""
            epochs = counted(len(trial.intermediate_values), "epoch")
            self.console.print(f"trial {trial.number} {trial.state.name}{value} after {epochs}{reason}; "
                               f"{self.best}{self.eta()}", highlight=False, soft_wrap=True)


WATCHED_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class PoolProgress:
    """Progress of the pool in the parent, read from the storage: trials of this invocation done, running trials
    with their epoch, the best so far. Same bar (or lines in a log) as a search in one process."""

    def __init__(self, study: optuna.Study, run: str, reaped: set[int], total: int | None, epochs: int,
                 console: Console, deadline: float | None = None) -> None:
        self.study, self.run = study, run
        self.reaped = reaped  # trials of dead workers, failed and queued again: not counted as done
        self.search = SearchProgress(study, total, epochs, console, deadline)
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
        running = [t for t in trials if t.state == TrialState.RUNNING and run_of(t) == run]
        shown = [f"trial {t.number} epoch {len(t.intermediate_values)}/{self.epochs}" for t in running[:4]]
        status = "; ".join(shown) + (" ..." if len(running) > 4 else "")
        params = main_params(running[0].params) if len(running) == 1 else ""
        best = describe_best(study)
        share = sum(min(1.0, len(t.intermediate_values) / self.epochs) for t in running)
        pieces = {"status": (status,), "params": params_forms(params), "best": best_forms(best)}
        overtime = self.search.overtime.check(status) if running else None
        if overtime:
            pieces["overrun"] = overtime
        self.search.bar.update(self.search.task, completed=self.search.done + share, pieces=pieces,
                               description=" | ".join(text for text in (status, params, best) if text))

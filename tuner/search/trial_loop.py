"""Running trials one at a time in this process: a trial budget shared with other workers, the objective tagged
with who runs it, and a database that goes away for a while waited for rather than fatal."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import optuna

from tuner.errors import TrialFailed, TuneError
from tuner.record import (
    GPU_ATTR,
    INTERRUPTED,
    REASON,
    REQUEUED_FROM,
    RETRY_OF,
    RUN_ATTR,
    WORKER_ATTR,
    run_tag,
)
from tuner.search.interrupts import Interrupts
from tuner.storage import public_url, rdb

DATABASE_PATIENCE = 60.0  # seconds a worker waits for a lost database before it gives up

Objective = Callable[[optuna.Trial], float | tuple[float, ...]]  # a tuple: a multi-objective study


def worker_name(pid: int | None = None) -> str:
    """How a trial records the process that ran it: host:pid."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


class _LocalCounter:
    """The part of a multiprocessing Value that Budget uses, for one process: no shared memory, no
    resource-tracker process."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


class Budget:
    """N trials shared by processes: each takes a ticket before asking for a trial, so exactly N trials start.

    With a multiprocessing `context`, the counter is shared: make the budget before the workers and hand it to them
    at spawn. Without one (a search in this process alone) it is a plain counter. `total` None: no limit.
    """

    def __init__(self, total: int | None, context: Any = None) -> None:
        self.total = total
        self._taken = context.Value("i", 0) if context is not None else _LocalCounter()
        self._closed = context.Value("i", 0) if context is not None else _LocalCounter()

    def take(self) -> bool:
        with self._taken.get_lock():
            if self._closed.value or (self.total is not None and self._taken.value >= self.total):
                return False
            self._taken.value += 1
            return True

    def give_back(self) -> None:
        """Return a ticket whose trial never started, or whose trial died with its worker and will be retried."""
        with self._taken.get_lock():
            self._taken.value -= 1

    def close(self) -> None:
        """No more tickets, for any process (the search is done: --stop-when-flat); running trials finish."""
        with self._taken.get_lock():
            self._closed.value = 1

    @property
    def left(self) -> int | None:
        if self._closed.value:
            return 0
        return None if self.total is None else self.total - self._taken.value



class Tagged:
    """The objective, after recording on the trial who runs it (host:pid, GPU, invocation) for `tune status`."""

    def __init__(self, objective: Objective, tags: dict[str, Any]) -> None:
        self.objective = objective
        self.tags = {k: v for k, v in tags.items() if v is not None}
        self.started = 0  # trials this process started: the objective runs only once a trial exists
        self.trial_id: int | None = None  # the storage id of the last of them

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self.started += 1
        self.trial_id = trial._trial_id
        Interrupts.in_objective = True
        try:
            Interrupts.check()  # a SIGTERM that came while Optuna created this trial
            for key, value in self.tags.items():
                trial.set_user_attr(key, value)
            return self.objective(trial)
        except KeyboardInterrupt:
            Interrupts.in_objective = False  # a second signal now waits: the reason is written whole
            with contextlib.suppress(Exception):  # a database that went away must not hide the interrupt
                trial.set_user_attr(REASON, INTERRUPTED)
            raise
        finally:
            Interrupts.in_objective = False



def requeue_interrupted(study: optuna.Study, trial_id: int) -> None:
    """Queue a trial that Ctrl-C or SIGTERM failed again, as Optuna's retry callback queues one whose worker died:
    same params, seed and checkpoint ids (so the next `tune start` goes on from its last epoch), `failed_trial`
    naming the first of the line. Not counted against Optuna's retry limit: the user stopped it, it did not crash;
    the interrupted reason stays with the failed trial."""
    from optuna.trial import TrialState

    with contextlib.suppress(Exception):  # a database that went away must not hide the interrupt
        trial = study._storage.get_trial(trial_id)
        if trial.state != TrialState.FAIL:
            return
        system_attrs = {**trial.system_attrs, RETRY_OF: trial.system_attrs.get(RETRY_OF, trial.number),
                        REQUEUED_FROM: trial.number}
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k != REASON}
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                                  distributions=trial.distributions, user_attrs=user_attrs,
                                                  system_attrs=system_attrs))


def tagged(objective: Objective, *, run: str, trials: int | None, gpu: str | None) -> Tagged:
    """`objective`, recording on each trial the process, the GPU and the invocation (its id and --trials) that run
    it, for `tune status`."""
    return Tagged(objective, {WORKER_ATTR: worker_name(), GPU_ATTR: gpu, RUN_ATTR: run_tag(run, trials)})


class DatabaseLost(TuneError):
    """The storage stayed unreachable longer than the worker's patience."""


def database_error(error: BaseException) -> BaseException | None:
    """The connection error behind `error` (optuna wraps them in StorageInternalError), if it is one."""
    from sqlalchemy import exc

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, exc.OperationalError | exc.InterfaceError | exc.DisconnectionError):
            return seen
        if isinstance(seen, exc.DBAPIError) and seen.connection_invalidated:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def short_reason(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return " ".join(text.split("\n")[0].split())[:200]


def _reachable(storage: optuna.storages.RDBStorage) -> bool:
    from sqlalchemy import text

    storage.remove_session()
    try:
        with storage.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def wait_for_database(storage: optuna.storages.RDBStorage, error: BaseException,
                      patience: float = DATABASE_PATIENCE) -> None:
    """Back off (1, 2, 4, 8, 8 ... s) until the database answers again; DatabaseLost after `patience` seconds."""
    reason = short_reason(error)
    print(f"worker {worker_name()}: lost the database ({reason}); retrying for {patience:.0f} s", file=sys.stderr)
    deadline, pause = time.monotonic() + patience, 1.0
    while time.monotonic() < deadline:
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        if _reachable(storage):
            return
        pause = min(pause * 2, 8.0)
    where = public_url(storage.engine.url)
    raise DatabaseLost(f"worker {worker_name()} gave up: the database {where} did not answer for {patience:.0f} s "
                       f"({reason}); its trial will be retried once a worker runs again")


@contextlib.contextmanager
def _quiet_heartbeat_errors() -> Iterator[None]:
    """A heartbeat thread that loses the database prints one line, not a traceback (the main thread retries)."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and database_error(args.exc_value) is not None:
            print(f"worker {worker_name()}: heartbeat failed: {short_reason(args.exc_value)}", file=sys.stderr)
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def run_trials(study: optuna.Study, objective: Tagged, budget: Budget, *, deadline: float | None = None,
               callbacks: Iterable[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
               patience: float = DATABASE_PATIENCE,
               keep_going: Callable[[], bool] = lambda: True) -> None:
    """Run trials one at a time until `budget` or the wall-clock `deadline` (time.time()) runs out, or until
    `keep_going` says no.

    Each trial goes through `study.optimize`, so Optuna fails stale trials first, keeps the heartbeat and
    records the outcome. A trial that fails for its own reasons (TrialFailed) does not stop the loop; a lost
    database is waited for (`wait_for_database`); KeyboardInterrupt marks the running trial FAIL and propagates.
    """
    with _quiet_heartbeat_errors():
        while True:
            Interrupts.check()  # a SIGTERM that came while Optuna recorded the last trial
            if not ((deadline is None or time.time() < deadline) and keep_going() and budget.take()):
                return
            started = objective.started
            try:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=list(callbacks))
            except KeyboardInterrupt:
                if objective.started == started:
                    budget.give_back()
                elif objective.trial_id is not None:
                    requeue_interrupted(study, objective.trial_id)
                raise
            except Exception as e:
                if database_error(e) is None:
                    raise
                if objective.started == started:
                    budget.give_back()  # no trial was created: the ticket is still good
                # a database error: the study is in an RDB storage
                wait_for_database(cast(optuna.storages.RDBStorage, rdb(study._storage)), e, patience)

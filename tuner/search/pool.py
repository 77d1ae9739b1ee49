"""Many worker processes on one study: spawned, watched, replaced when killed, stopped in order.

Optuna's `n_jobs` runs threads in one process; training wants processes, one or more per GPU. The parent process
creates the study, then spawns workers (the 'spawn' start method: safe with CUDA) that only load it. Each worker
asks for trials in a loop and takes a ticket from a shared `Budget` before each, so `--trials N` runs exactly N
trials whatever the number of workers. A worker that dies (SIGKILL, the OOM killer, an error such as a lost
database) is noticed by the parent, which fails its running trial at once and queues a retry with the same params;
a killed worker is replaced by a new one. On Ctrl-C or SIGTERM the parent asks every worker to stop (SIGTERM):
their running trials end FAIL and the study can be resumed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, cast

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from tuner.record import RETRY_HISTORY, WORKER_ATTR
from tuner.search.interrupts import sigterm_as_interrupt
from tuner.search.progress import PoolProgress
from tuner.search.trial_loop import Budget, database_error, short_reason, worker_name
from tuner.search.worker import EXIT_INTERRUPTED, WorkerJob, worker_main
from tuner.storage import MAX_RETRY

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

    from rich.console import Console

    from tuner.search.stopping import FlatStop

STOP_SECONDS = 30.0  # seconds workers get to fail their running trials after SIGTERM, before SIGKILL
POLL_SECONDS = 2.0  # how often the parent reads progress from the storage


def fail_trials_of(study: optuna.Study, worker: str, *, retry: bool) -> list[int]:
    """Fail the RUNNING trials recorded as run by `worker` ("host:pid", a process known to be dead) at once,
    without waiting for their heartbeat to go stale; with `retry`, queue each again with the same params through
    the storage's RetryHeartbeatStaleTrialCallback, as a stale heartbeat would. Returns their numbers."""
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) != worker:
            continue
        try:  # FrozenTrial has no public id; optuna's own fail_stale_trials uses the same storage calls
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed.append(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished, or someone else failed it, meanwhile
    # a pool's study is in an RDB storage, which keeps heartbeats
    callback = cast(BaseHeartbeat, storage).get_heartbeat_stale_trial_callback() if retry else None
    for trial in failed:
        if callback is not None:
            callback(study, storage.get_trial(trial._trial_id))
    return [t.number for t in failed]



@contextlib.contextmanager
def _child_environment(gpu: str | None) -> Iterator[None]:
    """What a child inherits at spawn: its GPU as CUDA_VISIBLE_DEVICES (read before CUDA starts), and SIGINT
    ignored, so that Ctrl-C in a terminal reaches the parent only, which stops the workers in order."""
    saved_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        saved_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        saved_sigint = None
    try:
        yield
    finally:
        if saved_sigint is not None:
            signal.signal(signal.SIGINT, saved_sigint)
        if gpu is not None:
            if saved_env is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved_env


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class WorkersFailed(Exception):
    """Some workers stopped with an error; the others finished. The message lists them."""


@dataclass
class Pool:
    """Worker processes of one invocation: one per slot (a GPU, or None), replaced when killed."""

    study: optuna.Study
    job: WorkerJob
    slots: list[str | None]
    budget: Budget
    console: Console
    processes: dict[int, SpawnProcess] = field(default_factory=dict)
    restarts: int = 0
    reaped: set[int] = field(default_factory=set)  # trials of dead workers, failed and queued for retry
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False  # a worker was stopped by a signal sent to it alone
    stopping: bool = False

    def start(self, slot: int) -> None:
        context = multiprocessing.get_context("spawn")
        job = replace(self.job, gpu=self.slots[slot], sampler_seed=self._sampler_seed(slot))
        process = context.Process(target=worker_main, args=(job, self.budget), name=f"tune-worker-{slot}",
                                  daemon=False)
        with _child_environment(job.gpu):
            process.start()
        self.processes[slot] = process

    def _sampler_seed(self, slot: int) -> int | None:
        if self.job.sampler_seed is None:
            return None
        return self.job.sampler_seed + 7919 * (slot + 1) + 104729 * self.restarts

    def wait(self, seconds: float) -> None:
        """Wait until a worker exits or `seconds` pass; deal with each worker that exited."""
        wait([p.sentinel for p in self.processes.values()], timeout=seconds)
        for slot, process in list(self.processes.items()):
            if process.exitcode is not None:
                process.join()
                del self.processes[slot]
                self._exited(slot, process)

    def _exited(self, slot: int, process: SpawnProcess) -> None:
        """A worker ended. Unless the pool is stopping, the trial it left RUNNING is failed at once and queued again
        with the same params, whatever ended the worker. Killed (SIGKILL, OOM killer, a crash): a new worker takes
        its place. Interrupted (SIGTERM sent to it alone, which fails its own trial): the run ends as interrupted.
        Failed with an error (a lost database: exit 2): the others go on; the run ends with an error."""
        code = process.exitcode
        if code == 0 or (self.stopping and code == EXIT_INTERRUPTED):
            return
        name = worker_name(process.pid)
        where = f"worker {name}" + (f" on GPU {self.slots[slot]}" if self.slots[slot] is not None else "")
        killed = code is not None and code < 0 and not self.stopping
        trials = self._fail_trials(name, retry=not self.stopping)
        if self.stopping and not trials:
            return  # stopped before it ran a trial
        text = f"{where} {_exit_text(code)}"
        if trials:
            text += f"; its trial {', '.join(map(str, trials))} is marked FAIL"
        if trials and not self.stopping:
            text += self._requeued(trials)
        if killed:
            text += self._replace(slot)
        elif code == EXIT_INTERRUPTED:
            self.interrupted = True
        elif not self.stopping:
            self.failures.append(f"{where} {_exit_text(code)}")
        self.console.print(text, highlight=False, soft_wrap=True)

    def _fail_trials(self, name: str, retry: bool) -> list[int]:
        try:
            return fail_trials_of(self.study, name, retry=retry)
        except Exception as e:  # the database may be what killed it: heartbeats will fail the trial later
            self.console.print(f"could not fail the trials of worker {name}: {short_reason(e)}", highlight=False,
                               soft_wrap=True)
            return []

    def _requeued(self, failed: list[int]) -> str:
        """The trials of a dead worker, queued again (those Optuna's retry limit let through): each retry takes
        its dead trial's place in the budget."""
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        retried = [n for n in failed if n in {(t.system_attrs.get(RETRY_HISTORY) or [None])[-1] for t in waiting}]
        for _ in retried:
            self.budget.give_back()
        self.reaped.update(failed)
        if len(retried) == len(failed):
            return " and queued again with the same params"
        return (f"; {len(failed) - len(retried)} not queued again: retried {MAX_RETRY} times already"
                + (f" ({len(retried)} queued again)" if retried else ""))

    def _replace(self, slot: int) -> str:
        """After a worker was killed, a new worker takes its slot while work is left (at most one restart per slot
        on average, so that a crash loop ends)."""
        if self.budget.left is not None and self.budget.left <= 0:
            return ""
        if self.restarts >= len(self.slots):
            self.failures.append(f"workers were killed {self.restarts + 1} times; not starting another")
            return ""
        self.restarts += 1
        self.start(slot)
        return "; started a new worker in its place"

    def stop(self) -> None:
        """SIGTERM every worker (each fails its running trial and exits), then SIGKILL those still there."""
        self.stopping = True
        for process in self.processes.values():
            assert process.pid is not None  # started before it was added
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        try:
            while self.processes and time.monotonic() < deadline:
                self.wait(0.2)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: kill at once
        for process in self.processes.values():
            process.kill()
        while self.processes:
            self.wait(1.0)



def _flat(stop: FlatStop | None, study: optuna.Study, budget: Budget) -> bool:
    """Whether --stop-when-flat ends the search now: then no worker starts another trial."""
    try:
        reason = stop.check(study) if stop is not None else None
    except Exception as e:
        if database_error(e) is None:
            raise
        return False  # judged at the next poll
    if reason is not None:
        budget.close()
    return reason is not None


def run_pool(study: optuna.Study, job: WorkerJob, slots: list[str | None], console: Console,
             stop: FlatStop | None = None) -> None:
    """Run `job.run_trials` trials of `study` in len(slots) worker processes (slot = GPU or None).

    Returns when the budget is spent (or the job's deadline passed, or `stop` found the search flat: the running
    trials finish); raises KeyboardInterrupt after stopping the workers on Ctrl-C or SIGTERM, and WorkersFailed if
    a worker stopped with an error.
    """
    pool = Pool(study, job, slots, Budget(job.run_trials, multiprocessing.get_context("spawn")), console)
    progress = PoolProgress(study, job.run, pool.reaped, job.run_trials, job.spec.epochs, console, job.deadline)
    with progress, sigterm_as_interrupt(runs_trials=False):
        try:
            if not _flat(stop, study, pool.budget):
                for slot in range(len(slots)):
                    pool.start(slot)
            while pool.processes:
                pool.wait(POLL_SECONDS)
                progress.poll()
                _flat(stop, study, pool.budget)
        except BaseException:  # Ctrl-C, SIGTERM, or a bug here: no worker outlives the parent's run
            pool.stop()
            raise
        finally:
            with contextlib.suppress(Exception):  # the last look at the storage must not hide why we stopped
                progress.poll()
    if pool.failures:
        raise WorkersFailed("; ".join(pool.failures))
    if pool.interrupted and pool.budget.left:
        raise KeyboardInterrupt

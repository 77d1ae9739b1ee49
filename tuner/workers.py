"""Many worker processes on one study: GPU placement, a trial budget shared between them, crash recovery.

Optuna's `n_jobs` runs threads in one process; training wants processes, one or more per GPU. The parent process
creates the study, then spawns workers (the 'spawn' start method: safe with CUDA) that only load it. Each worker
asks for trials in a loop and takes a ticket from a shared `Budget` before each, so `--trials N` runs exactly N
trials whatever the number of workers. A worker that dies (SIGKILL, the OOM killer, an error such as a lost
database) is noticed by the parent, which fails its running trial at once and queues a retry with the same params;
a killed worker is replaced by a new one. On Ctrl-C or SIGTERM the parent asks every worker to stop (SIGTERM):
their running trials end FAIL and the study can be resumed.

This module is imported by every worker process: it must stay light (torch is imported only to train).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner.errors import TrialFailed, TuneError
from tuner.storage import WORKER_ATTR, close_storage, fail_trials_of, open_storage, public_url, rdb

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

    from rich.console import Console

    from tuner.runner import Session

# Trial user attrs besides WORKER_ATTR: the GPU it ran on (when pinned), and the invocation that ran it as
# {"id": ..., "trials": its --trials}, so that `tune status` can tell how many trials are left.
GPU_ATTR, RUN_ATTR = "gpu", "run"
DATABASE_PATIENCE = 60.0  # seconds a worker waits for a lost database before it gives up
STOP_SECONDS = 30.0  # seconds workers get to fail their running trials after SIGTERM, before SIGKILL
POLL_SECONDS = 2.0  # how often the parent reads progress from the storage
EXIT_INTERRUPTED, EXIT_USER_ERROR = 130, 2

Objective = Callable[[optuna.Trial], float]


# --- placement: which worker runs on which GPU ----------------------------------------------------------------

def parse_gpus(text: str) -> list[str]:
    """'0,1,2,3' -> ['0', '1', '2', '3']: CUDA_VISIBLE_DEVICES entries (indices or GPU UUIDs)."""
    gpus = [g.strip() for g in text.split(",")]
    if not all(gpus):
        raise TuneError(f"--gpus {text!r} has an empty entry: give GPU ids separated by commas, like --gpus 0,1")
    if len(set(gpus)) < len(gpus):
        raise TuneError(f"--gpus {text!r} names a GPU twice: use --per-gpu K to put K workers on each GPU")
    return gpus


def visible_gpus(ids: list[str]) -> list[str]:
    """--gpus counts among the GPUs this process may use: where CUDA_VISIBLE_DEVICES is set already (Slurm and
    Kubernetes set it to the GPUs they allocated), index i is its i-th entry, not the machine's GPU i."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return ids
    out = []
    for gpu in ids:
        if not gpu.isdigit():
            out.append(gpu)  # a GPU UUID: taken as it is
        elif int(gpu) < len(visible):
            out.append(visible[int(gpu)])
        else:
            raise TuneError(f"--gpus names GPU {gpu} but only {len(visible)} are visible "
                            f"(CUDA_VISIBLE_DEVICES={','.join(visible)}): use indices 0 to {len(visible) - 1}")
    return out


def plan_workers(workers: int | None, gpus: str | None, per_gpu: int | None) -> list[str | None]:
    """The GPU of each worker (None: not pinned). Without --workers there are len(gpus) x per_gpu workers, else
    one; with both, workers go round-robin over the GPUs, at most per_gpu on each."""
    if gpus is None:
        if per_gpu is not None:
            raise TuneError("--per-gpu needs --gpus: name the GPUs, like --gpus 0,1 --per-gpu 2")
        return [None] * (workers or 1)
    ids = visible_gpus(parse_gpus(gpus))
    capacity = len(ids) * (per_gpu or 1)
    if workers is None:
        workers = capacity
    elif per_gpu is not None and workers > capacity:
        raise TuneError(f"--workers {workers} is more than --per-gpu {per_gpu} x {len(ids)} GPU(s) = {capacity}: "
                        f"use --per-gpu {-(-workers // len(ids))} or fewer workers")
    return [ids[i % len(ids)] for i in range(workers)]


def threads_per_worker(local_workers: int) -> int:
    """CPU threads for each of `local_workers` processes on this machine, so that together they use each core once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // local_workers)


def run_tag(run: str, trials: int | None) -> dict[str, Any]:
    """The RUN_ATTR of the trials of one invocation."""
    return {"id": run, "trials": trials}


def run_of(trial: optuna.trial.FrozenTrial) -> str | None:
    """The id of the invocation that ran `trial`, if tune ran it."""
    tag = trial.user_attrs.get(RUN_ATTR)
    return tag.get("id") if isinstance(tag, dict) else None


def worker_name(pid: int | None = None) -> str:
    """How a trial records the process that ran it: host:pid."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


# --- the budget shared by the workers of one invocation ------------------------------------------------------

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

    def take(self) -> bool:
        with self._taken.get_lock():
            if self.total is not None and self._taken.value >= self.total:
                return False
            self._taken.value += 1
            return True

    def give_back(self) -> None:
        """Return a ticket whose trial never started, or whose trial died with its worker and will be retried."""
        with self._taken.get_lock():
            self._taken.value -= 1

    @property
    def left(self) -> int | None:
        return None if self.total is None else self.total - self._taken.value


# --- running trials in one process -----------------------------------------------------------------------------

class Interrupts:
    """SIGTERM without a trial left RUNNING. Inside the objective it raises KeyboardInterrupt at once, and Optuna
    marks the trial FAIL; elsewhere (while Optuna creates or records a trial, where an exception would leave the
    trial RUNNING) it is only noted, and raised as the next objective starts or before the next trial is asked for.
    """

    requested = False
    in_objective = False

    @classmethod
    def reset(cls) -> None:
        cls.requested = cls.in_objective = False

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.requested = True
        if cls.in_objective:
            raise KeyboardInterrupt

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise KeyboardInterrupt


class Tagged:
    """The objective, after recording on the trial who runs it (host:pid, GPU, invocation) for `tune status`."""

    def __init__(self, objective: Objective, tags: dict[str, Any]) -> None:
        self.objective = objective
        self.tags = {k: v for k, v in tags.items() if v is not None}
        self.started = 0  # trials this process started: the objective runs only once a trial exists

    def __call__(self, trial: optuna.Trial) -> float:
        self.started += 1
        Interrupts.in_objective = True
        try:
            Interrupts.check()  # a SIGTERM that came while Optuna created this trial
            for key, value in self.tags.items():
                trial.set_user_attr(key, value)
            return self.objective(trial)
        finally:
            Interrupts.in_objective = False


class DatabaseLost(TuneError):
    """The storage stayed unreachable longer than the worker's patience."""


def _database_error(error: BaseException) -> BaseException | None:
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


def _one_line(error: BaseException) -> str:
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
    reason = _one_line(error)
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
        if args.exc_value is not None and _database_error(args.exc_value) is not None:
            print(f"worker {worker_name()}: heartbeat failed: {_one_line(args.exc_value)}", file=sys.stderr)
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def run_trials(study: optuna.Study, objective: Tagged, budget: Budget, *, deadline: float | None = None,
               callbacks: Iterable[Callable] = (), patience: float = DATABASE_PATIENCE,
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
                raise
            except Exception as e:
                if _database_error(e) is None:
                    raise
                if objective.started == started:
                    budget.give_back()  # no trial was created: the ticket is still good
                wait_for_database(rdb(study._storage), e, patience)


# --- one worker process ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs to join the study: plain, picklable values (it is spawned, not forked)."""

    study_name: str
    storage_url: str
    spec: dict  # StudySpec.to_dict() of the spec to run
    data_dir: str
    device: str = "auto"
    seed: int | None = None  # training seeds: seed + trial number
    sampler_seed: int | None = None  # distinct per worker, so that workers do not sample the same params
    keep_top: int = 3
    threads: int = 1  # torch CPU threads
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES of this worker
    run: str = ""  # id of the invocation, recorded on each trial
    run_trials: int | None = None  # the invocation's budget, recorded on each trial
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    deadline: float | None = None  # time.time() after which no trial starts
    objective: Objective | None = None  # a picklable objective instead of training (tests, benchmarks)


def training_objective(job: WorkerJob) -> Objective:
    """The real objective: load the data once for this process (load_splits is cached) and train each trial."""
    import torch

    from tuner.datasets import splits_for
    from tuner.objective import Objective as TrainingObjective
    from tuner.spec import StudySpec
    from tuner.train import resolve_device

    torch.set_num_threads(job.threads)
    spec = StudySpec.from_dict(job.spec)
    device = resolve_device(job.device)
    splits = splits_for(spec, job.data_dir, str(device))
    return TrainingObjective(spec, splits, job.seed, keep_top=job.keep_top)


def _load_study(job: WorkerJob, storage: optuna.storages.RDBStorage) -> optuna.Study:
    from tuner.samplers import make_pruner, make_sampler
    from tuner.spec import StudySpec

    spec = StudySpec.from_dict(job.spec)
    return optuna.load_study(study_name=job.study_name, storage=storage, sampler=make_sampler(spec, job.sampler_seed),
                             pruner=make_pruner(spec))


def _parent_alive() -> bool:
    """Whether the process that spawned this worker still runs: an orphaned worker finishes its trial and exits."""
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def work(job: WorkerJob, budget: Budget) -> None:
    """Body of a worker process: join the study and run trials until the budget is spent."""
    storage = open_storage(job.storage_url, heartbeat_interval=job.heartbeat_interval,
                           grace_period=job.grace_period)
    try:
        study = _load_study(job, storage)
        objective = Tagged(job.objective or training_objective(job),
                           {WORKER_ATTR: worker_name(), GPU_ATTR: job.gpu, RUN_ATTR: run_tag(job.run, job.run_trials)})
        run_trials(study, objective, budget, deadline=job.deadline, keep_going=_parent_alive)
    finally:
        close_storage(storage)


def worker_main(job: WorkerJob, budget: Budget) -> None:
    """Entry point of a spawned worker: SIGTERM fails the running trial (as Ctrl-C does) and exits 130; errors a
    user can fix (a lost database) print one line and exit 2. SIGINT is left to the parent, which relays it."""
    signal.signal(signal.SIGTERM, Interrupts.handle)
    try:
        work(job, budget)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except TuneError as e:
        print(f"worker {worker_name()}: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


# --- the parent: spawn, watch, replace, stop ------------------------------------------------------------------

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
            self.console.print(f"could not fail the trials of worker {name}: {_one_line(e)}", highlight=False,
                               soft_wrap=True)
            return []

    def _requeued(self, retried: list[int]) -> str:
        """The trials of a dead worker, queued again: each retry takes its dead trial's place in the budget."""
        for _ in retried:
            self.budget.give_back()
        self.reaped.update(retried)
        return " and queued again with the same params"

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


WATCHED_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class PoolProgress:
    """Progress of the pool in the parent, read from the storage: trials of this invocation done, running trials
    with their epoch, the best so far. Same bar (or lines in a log) as a search in one process."""

    def __init__(self, pool: Pool, total: int | None, epochs: int) -> None:
        from tuner.runner import SearchProgress

        self.pool = pool
        self.search = SearchProgress(pool.study, total, epochs, pool.console)
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
            if _database_error(e) is None:
                raise

    def _poll(self) -> None:
        from tuner.runner import describe_best

        study, run = self.pool.study, self.pool.job.run
        # One read, without copies and without the WAITING trials (queued retries); the study's cached storage
        # fetches only the trials that changed since the last poll.
        trials = study.get_trials(deepcopy=False, states=WATCHED_STATES)
        for trial in trials:
            if (trial.state.is_finished() and trial.number not in self.seen and trial.number not in self.pool.reaped
                    and run_of(trial) == run):
                self.seen.add(trial.number)
                self.search.on_trial_end(study, trial)
        running = [f"trial {t.number} epoch {len(t.intermediate_values)}/{self.epochs}"
                   for t in trials if t.state == TrialState.RUNNING and run_of(t) == run]
        status = "; ".join(running[:4]) + (" ..." if len(running) > 4 else "")
        best = describe_best(study)
        self.search.bar.update(self.search.task, description=f"{status} | {best}" if status else best)


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def run_pool(session: Session, slots: list[str | None], *, n_trials: int | None, timeout: float | None,
             seed: int | None, keep_top: int, console: Console, objective: Objective | None = None) -> None:
    """Run `n_trials` trials of the session's study in len(slots) worker processes (slot = GPU or None).

    Returns when the budget is spent (or `timeout` passed); raises KeyboardInterrupt after stopping the workers
    on Ctrl-C or SIGTERM, and WorkersFailed if a worker stopped with an error.
    """
    from tuner.runner import sigterm_as_interrupt

    run = new_run_id()
    job = WorkerJob(
        study_name=session.study.study_name, storage_url=session.storage_url, spec=session.spec.to_dict(),
        data_dir=session.data_dir, device=session.device, seed=seed,
        sampler_seed=None if seed is None else seed + len(session.study.trials), keep_top=keep_top,
        threads=threads_per_worker(len(slots)), run=run, run_trials=n_trials,
        heartbeat_interval=session.heartbeat_interval, grace_period=session.grace_period,
        deadline=None if timeout is None else time.time() + timeout, objective=objective)
    pool = Pool(session.study, job, slots, Budget(n_trials, multiprocessing.get_context("spawn")), console)
    with PoolProgress(pool, n_trials, session.spec.epochs) as progress, sigterm_as_interrupt(runs_trials=False):
        try:
            for slot in range(len(slots)):
                pool.start(slot)
            while pool.processes:
                pool.wait(POLL_SECONDS)
                progress.poll()
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


# --- a test double -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuickObjective:
    """A stand-in for training, for tests and benchmarks of the pool: suggests x in [0, 1], reports it `steps`
    times `seconds` apart (as epochs), returns it. Picklable, so it travels to spawned workers; records the
    worker's CUDA_VISIBLE_DEVICES so that GPU pinning can be checked without GPUs."""

    steps: int = 1
    seconds: float = 0.0

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("cuda_visible_devices", os.environ.get("CUDA_VISIBLE_DEVICES"))
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(1, self.steps + 1):
            time.sleep(self.seconds)
            trial.report(x, step)
        return x

"""One worker process of a pool: it joins the study and runs trials until the shared budget is spent.

This module is imported by every spawned worker: it must stay light (torch is imported only to train).
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from dataclasses import dataclass

import optuna

from tuner.errors import TuneError
from tuner.search.interrupts import Interrupts
from tuner.search.samplers import make_pruner, make_sampler
from tuner.search.trial_loop import Budget, Objective, run_trials, tagged, worker_name
from tuner.spec import StudySpec
from tuner.storage import close_storage, open_storage, quiet_optuna

EXIT_INTERRUPTED, EXIT_USER_ERROR = 130, 2


@dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs to join the study: plain, picklable values (it is spawned, not forked)."""

    study_name: str
    storage_url: str
    spec: StudySpec  # the spec to run
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
    from tuner.search.objective import Objective as TrainingObjective
    from tuner.train import resolve_device

    torch.set_num_threads(job.threads)
    splits = splits_for(job.spec, job.data_dir, str(resolve_device(job.device)))
    return TrainingObjective(job.spec, splits, job.seed, keep_top=job.keep_top)


def _load_study(job: WorkerJob, storage: optuna.storages.RDBStorage) -> optuna.Study:
    return optuna.load_study(study_name=job.study_name, storage=storage,
                             sampler=make_sampler(job.spec, job.sampler_seed), pruner=make_pruner(job.spec))


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
        objective = tagged(job.objective or training_objective(job), run=job.run, trials=job.run_trials, gpu=job.gpu)
        run_trials(study, objective, budget, deadline=job.deadline, keep_going=_parent_alive)
    finally:
        close_storage(storage)


def worker_main(job: WorkerJob, budget: Budget) -> None:
    """Entry point of a spawned worker: SIGTERM fails the running trial (as Ctrl-C does) and exits 130; errors a
    user can fix (a lost database) print one line and exit 2. SIGINT is left to the parent, which relays it."""
    signal.signal(signal.SIGTERM, Interrupts.handle)
    quiet_optuna()
    try:
        work(job, budget)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except TuneError as e:
        print(f"worker {worker_name()}: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)

"""Benchmarks behind docs/distributed.md: which embedded storage holds many local workers, and whether two
worker processes beat one on a small machine.

    python scripts/bench_workers.py storage [--workers 4 8] [--trials 200]
        N processes run fast fake trials (no training) against the embedded SQLite (WAL, 60 s busy timeout,
        heartbeats: what `tune` uses) and against an Optuna journal file. Reports trials/s, errors such as
        'database is locked', trials left RUNNING, and whether the trial of a SIGKILLed worker comes back.

    python scripts/bench_workers.py training [--trials 8] [--epochs 2] [--data-dir ../shared/data/fashion-mnist-mini]
        `tune start --workers 1` then `--workers 2` on real images, with a fixed config (only lr varies), so each
        trial costs the same: trials per minute, with and without the start-up (spawn, imports, data loading).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from tuner.search.trial_loop import Budget
from tuner.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)
REPO = Path(__file__).resolve().parents[1]
MINI_DATA = REPO.parent / "shared" / "data" / "fashion-mnist-mini"
HEARTBEAT, GRACE = 1, 2  # seconds, short so that the crash check is quick


# --- storage: SQLite vs journal --------------------------------------------------------------------------------

def make_storage(kind: str, path: str) -> optuna.storages.BaseStorage:
    if kind == "sqlite":
        return open_storage(f"sqlite:///{path}", heartbeat_interval=HEARTBEAT, grace_period=GRACE)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(path))


def fake_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("worker", f"bench:{os.getpid()}")
    trial.report(x, 1)
    return x


def sleepy_objective(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(0.0, 1)
    time.sleep(600)  # killed long before
    return 0.0


def fake_worker(kind: str, path: str, budget: Budget, errors, sleepy: bool = False) -> None:
    study = optuna.load_study(study_name="bench", storage=make_storage(kind, path),
                              sampler=optuna.samplers.RandomSampler())
    while budget.take():
        try:
            study.optimize(sleepy_objective if sleepy else fake_objective, n_trials=1)
        except Exception as e:  # noqa: BLE001 - counted and reported: this is what the benchmark looks for
            with errors.get_lock():
                errors.value += 1
            print(f"  {kind} worker {os.getpid()}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")


def bench_storage_once(kind: str, workers: int, trials: int, directory: Path) -> dict:
    path = str(directory / f"{kind}-{workers}.{'db' if kind == 'sqlite' else 'log'}")
    optuna.create_study(study_name="bench", storage=make_storage(kind, path))
    context = multiprocessing.get_context("spawn")
    budget, errors = Budget(trials, context), context.Value("i", 0)
    processes = [context.Process(target=fake_worker, args=(kind, path, budget, errors)) for _ in range(workers)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    seconds = time.perf_counter() - started
    stored = optuna.load_study(study_name="bench", storage=make_storage(kind, path)).trials
    states = [t.state for t in stored]
    first = min(t.datetime_start for t in stored)
    last = max(t.datetime_complete for t in stored if t.datetime_complete)
    return {"kind": kind, "workers": workers, "trials": len(stored), "seconds": seconds,
            "per_second": len(stored) / max((last - first).total_seconds(), 1e-9), "errors": errors.value,
            "complete": states.count(optuna.trial.TrialState.COMPLETE),
            "running": states.count(optuna.trial.TrialState.RUNNING)}


def crash_recovery(kind: str, directory: Path) -> str:
    """SIGKILL a worker in mid-trial, wait past the grace period, run one more trial: is the dead one reaped?"""
    path = str(directory / f"crash-{kind}.{'db' if kind == 'sqlite' else 'log'}")
    optuna.create_study(study_name="bench", storage=make_storage(kind, path))
    context = multiprocessing.get_context("spawn")
    budget, errors = Budget(1, context), context.Value("i", 0)  # kept alive until the child has unpickled them
    victim = context.Process(target=fake_worker, args=(kind, path, budget, errors, True))
    victim.start()
    study = optuna.load_study(study_name="bench", storage=make_storage(kind, path))
    while not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        if not victim.is_alive():
            return f"{kind}: the worker died before its trial started (exit code {victim.exitcode})"
        time.sleep(0.1)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    time.sleep(GRACE + 1.5)
    study.optimize(fake_objective, n_trials=1)  # Optuna fails stale trials before each trial (RDB storages only)
    states = [t.state.name for t in study.trials]
    retried = any("failed_trial" in t.system_attrs for t in study.trials)
    return f"{kind}: states after the next trial {states}; retried with the same params: {retried}"


def bench_storage(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'storage':8} {'workers':>7} {'trials':>6} {'wall s':>7} {'trials/s':>8} {'errors':>6} "
              f"{'COMPLETE':>8} {'RUNNING':>7}")
        for workers in args.workers:
            for kind in ("sqlite", "journal"):
                r = bench_storage_once(kind, workers, args.trials, Path(tmp))
                print(f"{r['kind']:8} {r['workers']:>7} {r['trials']:>6} {r['seconds']:>7.1f} "
                      f"{r['per_second']:>8.1f} {r['errors']:>6} {r['complete']:>8} {r['running']:>7}", flush=True)
        print("crash recovery (heartbeat 1 s, grace 2 s):")
        for kind in ("sqlite", "journal"):
            print("  " + crash_recovery(kind, Path(tmp)), flush=True)


# --- training: one worker vs two --------------------------------------------------------------------------------

BENCH_SPEC = """\
name: bench
dataset: fashion-mnist
model: convnet
validation: 0.2
sampler: random
pruner: none
search:
  optimizer: adam
  lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  batch_size: 64
  scheduler: exponential
  gamma: 0.9
"""


def bench_training_once(workers: int, args: argparse.Namespace, directory: Path) -> dict:
    spec = directory / "bench.yaml"
    spec.write_text(BENCH_SPEC)
    url = f"sqlite:///{directory / f'train-{workers}.db'}"
    command = [sys.executable, "-m", "tuner", "start", "--workers", str(workers), "--trials", str(args.trials),
               "--epochs", str(args.epochs), "--spec", str(spec), "--data-dir", str(args.data_dir),
               "--storage", url, "--device", "cpu", "--keep-top", "0", "--seed", "0"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    trials = optuna.load_study(study_name="bench", storage=open_storage(url)).trials
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    busy = (last - first).total_seconds()
    return {"workers": workers, "trials": len(trials), "seconds": seconds, "per_minute": 60 * len(trials) / seconds,
            "steady_per_minute": 60 * len(trials) / busy}


def bench_training(args: argparse.Namespace) -> None:
    print(f"{os.cpu_count()} CPU cores; {args.trials} trials x {args.epochs} epochs, convnet, batch 64, "
          f"on {args.data_dir}")
    print(f"{'workers':>7} {'trials':>6} {'wall s':>7} {'trials/min':>10} {'trials/min, first trial on':>27}")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            r = bench_training_once(workers, args, Path(tmp))
            print(f"{r['workers']:>7} {r['trials']:>6} {r['seconds']:>7.1f} {r['per_minute']:>10.2f} "
                  f"{r['steady_per_minute']:>27.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    storage = commands.add_parser("storage", help="SQLite vs journal file under many local workers")
    storage.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    storage.add_argument("--trials", type=int, default=200)
    training = commands.add_parser("training", help="trials per minute with one worker and with two")
    training.add_argument("--trials", type=int, default=8)
    training.add_argument("--epochs", type=int, default=2)
    training.add_argument("--data-dir", type=Path, default=MINI_DATA)
    args = parser.parse_args()
    bench_storage(args) if args.command == "storage" else bench_training(args)


if __name__ == "__main__":
    main()

"""Long studies, measured on the mini Fashion-MNIST (docs/benchmarks.md, "Long studies").

    python scripts/bench_long_studies.py flat --minutes 3 --epochs 4 --seeds 1 2 3
        Per seed, the default study run to a full `--timeout` budget, and the same command with --stop-when-flat
        (alternating which goes first). For each: wall time, trials, the best trial's validation accuracy and its
        test accuracy (the exported winner's: `tune train` replays a trial exactly), and why the flat run stopped.
        Afterwards, on the full run's trials: where the rule would have stopped (replayed trial by trial), and
        Optuna's regret bound (optuna.terminator.RegretBoundEvaluator) every 20 completed trials, with its cost.

    python scripts/bench_long_studies.py warm --trials 20 --epochs 2 --seeds 1 2 3
        Per seed, a source study of 20 trials with one choice changed (--model convnet instead of the default bncnn),
        then the default study for 20 trials, with and without --warm-start from it: the best validation accuracy
        after 20 trials and that trial's test accuracy.

Each run is one `tune start` in its own process, on all the machine's cores (report the load: a loaded machine
measures the load). Writes long_studies_<mode>.json in --out, and keeps the studies in long_studies_<mode>/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MINI_DATA = REPO.parent / "shared" / "data" / "fashion-mnist-mini"
VALIDATION_IMAGES = 258  # 15 % of the mini set's 1,722 training images


def tune(*args: object, env: dict[str, str]) -> float:
    """Run `tune ARGS`; returns its wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tuner", *map(str, args)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`tune {' '.join(map(str, args))}` failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def outcome(storage: str, name: str) -> dict[str, Any]:
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial
    return {"trials": len(trials), "complete": sum(t.state.name == "COMPLETE" for t in trials),
            "best_trial": best.number, "best_val": best.value, "best_test": best.user_attrs.get("test_accuracy"),
            "stopped": (study.user_attrs.get("stopped_when_flat") or {}).get("reason")}


def replay(storage: str, name: str) -> dict[str, Any]:
    """On a full run's trials: where --stop-when-flat would have stopped, and Optuna's regret bound along the way."""
    import optuna
    from optuna.terminator import RegretBoundEvaluator

    from tuner.search.stopping import FlatStop, accuracy_noise

    study = optuna.load_study(study_name=name, storage=storage)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    partial = optuna.create_study(direction=study.direction)
    stop, stopped_at = FlatStop("accuracy", VALIDATION_IMAGES), None
    bounds, complete = [], 0
    for trial in trials:
        if not trial.state.is_finished():
            continue
        partial.add_trial(trial)
        complete += trial.state.name == "COMPLETE"
        if stopped_at is None and stop.check(partial):
            best = partial.best_trial
            stopped_at = {"trials": len(partial.trials), "best_val": best.value,
                          "best_test": best.user_attrs.get("test_accuracy"),
                          "seconds": (trial.datetime_complete - trials[0].datetime_start).total_seconds()}
        if trial.state.name == "COMPLETE" and complete % 20 == 0:
            started = time.perf_counter()
            try:
                bound = RegretBoundEvaluator(seed=0).evaluate(partial.trials, partial.direction)
            except ValueError:
                bound = None
            noise = accuracy_noise(partial.best_value, VALIDATION_IMAGES)
            bounds.append({"complete": complete, "bound": bound, "noise": noise,
                           "seconds": time.perf_counter() - started})
    return {"rule_would_stop": stopped_at, "regret_bound": bounds}


def flat(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for index, seed in enumerate(args.seeds):
        arms = ["full", "flat"] if index % 2 == 0 else ["flat", "full"]
        for arm in arms:
            storage = f"sqlite:///{work / f'{arm}-{seed}.db'}"
            flags = ["--stop-when-flat"] if arm == "flat" else []
            seconds = tune("start", "--study", "fm", "--timeout", args.minutes * 60, "--trials", 100_000,
                           "--epochs", args.epochs, "--seed", seed, "--device", "cpu", "--data-dir", args.data_dir,
                           "--storage", storage, "--keep-top", 0, *flags, env=env)
            runs[f"{arm}-{seed}"] = {"wall_seconds": seconds, **outcome(storage, "fm")}
            print(arm, seed, json.dumps(runs[f"{arm}-{seed}"]), flush=True)
        runs[f"full-{seed}"]["replay"] = replay(f"sqlite:///{work / f'full-{seed}.db'}", "fm")
        print("replay", seed, json.dumps(runs[f"full-{seed}"]["replay"]), flush=True)
    saved = [1 - runs[f"flat-{s}"]["wall_seconds"] / runs[f"full-{s}"]["wall_seconds"] for s in args.seeds]
    print(f"time saved: mean {statistics.mean(saved):.0%}; test accuracy full "
          f"{statistics.mean(runs[f'full-{s}']['best_test'] for s in args.seeds):.4f}, flat "
          f"{statistics.mean(runs[f'flat-{s}']['best_test'] for s in args.seeds):.4f}")
    return runs


def warm(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for seed in args.seeds:
        storage = f"sqlite:///{work / f'warm-{seed}.db'}"
        common = ["--trials", args.trials, "--epochs", args.epochs, "--seed", seed, "--device", "cpu",
                  "--data-dir", args.data_dir, "--storage", storage, "--keep-top", 0]
        source = tune("start", "--study", "source", "--model", "convnet", *common, env=env)
        runs[f"source-{seed}"] = {"wall_seconds": source, **outcome(storage, "source")}
        for arm, flags in (("cold", []), ("warm", ["--warm-start", "source"])):
            seconds = tune("start", "--study", arm, *common, *flags, env=env)
            runs[f"{arm}-{seed}"] = {"wall_seconds": seconds, **outcome(storage, arm)}
        print(seed, json.dumps({k: v for k, v in runs.items() if k.endswith(f"-{seed}")}), flush=True)
    for arm in ("cold", "warm"):
        print(f"{arm}: best validation accuracy after {args.trials} trials, mean "
              f"{statistics.mean(runs[f'{arm}-{s}']['best_val'] for s in args.seeds):.4f}; its test accuracy "
              f"{statistics.mean(runs[f'{arm}-{s}']['best_test'] for s in args.seeds):.4f}")
    return runs


def main() -> None:
    warnings.filterwarnings("ignore")  # optuna.terminator's deprecation, repeated at each regret bound
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["flat", "warm"])
    parser.add_argument("--data-dir", default=str(MINI_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--minutes", type=float, default=3.0, help="flat: the full run's --timeout")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial [flat: 4, warm: 2]")
    parser.add_argument("--trials", type=int, default=20, help="warm: trials per study")
    parser.add_argument("--out", default=".", help="where to write long_studies_<mode>.json")
    args = parser.parse_args()
    args.epochs = args.epochs or (4 if args.mode == "flat" else 2)
    work = Path(args.out) / f"long_studies_{args.mode}"  # the studies stay, to replay other rules on
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XDG_DATA_HOME": str(work / "data"), "XDG_CACHE_HOME": str(work / "cache")}
    print(f"load average before: {os.getloadavg()}", flush=True)
    runs = flat(args, work, env) if args.mode == "flat" else warm(args, work, env)
    print(f"load average after: {os.getloadavg()}", flush=True)
    path = Path(args.out) / f"long_studies_{args.mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2, default=str) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

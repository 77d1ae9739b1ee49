"""Deployment-aware search behind docs/benchmarks.md ("Deployment-aware search"): the default study with and without
`--max-latency` at a third of the unconstrained winner's latency, and how steady the latency figures are.

    python scripts/bench_deploy.py --data-dir ../shared/data/fashion-mnist-mini --trials 30 --seeds 1 2 3
        1. Stability: each architecture of the default study (bncnn at model.width 8-32) measured `--repeats`
           times as a search measures it (tuner.ship.latency, 200 timed calls at batch 1 on ONNX Runtime, one
           thread): the median, spread and worst of p50 and p95 over the repeats.
        2. Per seed: `tune start --trials N --seed S` without constraints, then with `--max-latency` at a third of
           the p95 of the unconstrained winner's architecture (the median of step 1). Fixed trial counts, so that
           the machine's load changes how long the searches take, not what they find. Reads the best trial of each
           (validation and test accuracy, its architecture's p95), the trials pruned before training, and the
           epochs trained in all.
    python scripts/bench_deploy.py --dataset ../shared/data/photos-dev --image-size 64 --trials 15 --seeds 1
        The same on a folder of photos: its default study (the photo family rescnn at model.width 16-32; 8-32
        under the limit), both
        arms at one image size (`--image-size`, what `tune start` chose there; fixed so that the arms compare the
        same architectures).
    python scripts/bench_deploy.py --data-dir ../shared/data/fashion-mnist-mini --fixed-config --split-seeds 1 2 3
        What each width can do apart from the search: one conventional config (the photo default's first trial:
        AdamW 3e-3, batch 64, onecycle-gamma 0.5, weight decay 5e-4, dropout 0.2) trained at every width through
        `tuner.train.fit` on one torch thread per run (two runs at once), once per validation split; validation
        and test accuracy per run and the mean test accuracy per width (test reported only, never chosen on).
Writes deploy.json in --out and prints the tables as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna

from tuner.models import build_model
from tuner.record import CONFIG_ATTR, DEPLOY_ATTR, REASON
from tuner.ship.latency import measure
from tuner.spec import RunConfig
from tuner.spec.defaults import BUDGET_WIDTHS, PHOTO_FIRST_TRIAL
from tuner.storage import open_storage

# the default study's architectures (the benchmarks' bncnn and the photo family alike), with the narrower ones a
# budget adds to its space
WIDTHS = tuple(sorted({16, 24, 32, *BUDGET_WIDTHS}))


def stability(repeats: int, model: str, shape: tuple[int, int, int], classes: int) -> dict[int, dict[str, Any]]:
    out = {}
    channels = shape[0]
    for width in WIDTHS:
        config = RunConfig(model=model, model_args={"width": width})
        network = build_model(config, shape, classes, (0.0,) * channels, (1.0,) * channels, load_pretrained=False)
        runs = [measure(network, shape) for _ in range(repeats)]
        row: dict[str, Any] = {"params": runs[0].params, "size_bytes": runs[0].size_bytes,
                               "load": [r.environment.get("load") for r in runs]}
        for stat in ("p50", "p95"):
            values = [r.latency(stat) for r in runs]
            row[stat] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                         "cv": statistics.pstdev(values) / statistics.mean(values)}
        out[width] = row
    return out


def search(flags: list[str], seed: int, trials: int, data: list[str], work: Path, name: str,
           epochs: int | None) -> dict[str, Any]:
    storage = f"sqlite:///{work / 'bench.db'}"
    env = {**os.environ, "HOME": str(work / "home")}
    command = [sys.executable, "-m", "tuner", "start", "--study", name, "--storage", storage, *data,
               "--trials", str(trials), "--seed", str(seed), "--device", "cpu", *flags,
               *(["--epochs", str(epochs)] if epochs else [])]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 and "of the search space meets the constraints" in done.stderr:  # said before a trial
        return {"pruned_before_training": 0, "trials": 0, "epochs": 0, "best_trial": None,
                "refused": done.stderr.strip().splitlines()[-1]}
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials_ = study.get_trials(deepcopy=False)
    before = [t for t in trials_ if str(t.user_attrs.get(REASON, "")).startswith("infeasible")]
    out: dict[str, Any] = {"pruned_before_training": len(before), "trials": len(trials_),
                           "epochs": sum(len(t.intermediate_values) for t in trials_), "best_trial": None}
    try:
        best = study.best_trial
    except ValueError:  # every architecture broke the limit
        return out
    record = best.user_attrs.get(DEPLOY_ATTR) or {}
    return {**out, "best_trial": best.number, "val": best.value, "test": best.user_attrs.get("test_accuracy"),
            "width": (best.user_attrs.get(CONFIG_ATTR) or {}).get("model_args", {}).get("width"),  # searched or not
            "p95": (record.get("measured") or {}).get("latency_ms", {}).get("p95")}


def fixed_run(job: tuple[dict[str, Any], str | None, int, int]) -> tuple[int, int, float, float]:
    """(width, split seed, last validation accuracy, test accuracy) of one conventional config trained at a width."""
    import torch

    from tuner.datasets import load_splits
    from tuner.train import fit

    torch.set_num_threads(1)
    base, data_dir, width, split_seed = job
    config = RunConfig(**base, model_args={"width": width}, split_seed=split_seed, seed=split_seed)
    splits = load_splits(config.dataset, data_dir or "", config.validation, config.split_seed, "cpu",
                         image_size=config.image_size)
    result = fit(config, splits)
    return width, split_seed, result.history[-1].val_accuracy, float(result.test_accuracy or 0.0)


def fixed_config(args: argparse.Namespace) -> None:
    values = {k.removeprefix("model."): v for k, v in PHOTO_FIRST_TRIAL.items() if k != "model.width"}
    base: dict[str, Any] = {**values, "scheduler": "onecycle-gamma", "epochs": args.epochs or 8, "validation": 0.15}
    if args.dataset:
        base.update(dataset=str(args.dataset.resolve()), model="rescnn", image_size=args.image_size, flip=True)
    else:  # the benchmarks' space has no crops or jitter
        base.update(dataset="fashion-mnist", model="bncnn", crop=1.0, jitter=0.0)
    jobs = [(base, None if args.dataset else str(args.data_dir), width, split)
            for split in args.split_seeds for width in WIDTHS]
    with ProcessPoolExecutor(2) as pool:
        runs = list(pool.map(fixed_run, jobs))
    print("| width | " + " | ".join(f"split {s}: val / test" for s in args.split_seeds) + " | mean test |")
    print("|---|" + "---|" * (len(args.split_seeds) + 1))
    for width in WIDTHS:
        mine = [run for run in runs if run[0] == width]
        cells = " | ".join(f"{val:.3f} / {test:.3f}" for _, _, val, test in mine)
        print(f"| {width} | {cells} | {statistics.mean(run[3] for run in mine):.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fixed.json").write_text(json.dumps(runs, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="where Fashion-MNIST's files are (the benchmarks' default study)")
    where.add_argument("--dataset", type=Path, help="a folder of photos (DIR/train/CLASS/*.jpg): its default study")
    parser.add_argument("--image-size", type=int, default=64, help="with --dataset: the side images are trained at")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--epochs", type=int, help="epochs per trial [default: the default study's, 8]")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--share", type=float, default=1 / 3,
                        help="the limit, as a share of the unconstrained winner's p95 [default: a third]")
    parser.add_argument("--fixed-config", action="store_true",
                        help="train one conventional config at every width instead of searching")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[1, 2, 3], help="with --fixed-config")
    args = parser.parse_args()
    if args.fixed_config:
        return fixed_config(args)
    if args.dataset:
        classes = len([d for d in (args.dataset / "train").iterdir() if d.is_dir()])
        table = stability(args.repeats, "rescnn", (3, args.image_size, args.image_size), classes)
        data = ["--dataset", str(args.dataset.resolve()), "--image-size", str(args.image_size), "--model", "rescnn"]
    else:
        table = stability(args.repeats, "bncnn", (1, 28, 28), 10)
        data = ["--data-dir", str(args.data_dir)]
    print("| width | params | ONNX MB | p50 ms median (min-max, CV) | p95 ms median (min-max, CV) |")
    print("|---|---|---|---|---|")
    for width, row in table.items():
        cells = [f"{row[s]['median']:.3g} ({row[s]['min']:.3g}-{row[s]['max']:.3g}, {row[s]['cv']:.0%})"
                 for s in ("p50", "p95")]
        print(f"| {width} | {row['params']:,} | {row['size_bytes'] / 1e6:.2f} | {cells[0]} | {cells[1]} |",
              flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in args.seeds:
            free = search([], seed, args.trials, data, work, f"free-{seed}", args.epochs)
            limit = table[free["width"]]["p95"]["median"] * args.share
            bound = search(["--max-latency", f"{limit:.4f}ms"], seed, args.trials, data, work,
                           f"bound-{seed}", args.epochs)
            results.append({"seed": seed, "limit_ms": limit, "free": free, "bound": bound})
            print(json.dumps(results[-1]), flush=True)
    print("\n| seed | arm | best val | its test | width | its p95 ms | pruned before training | epochs |")
    print("|---|---|---|---|---|---|---|---|")
    for run in results:
        for arm in ("free", "bound"):
            r = run[arm]
            name = "no constraint" if arm == "free" else f"--max-latency {run['limit_ms']:.3g}ms"
            if r["best_trial"] is None:
                what = "no width of the space meets it: refused before any trial" if "refused" in r else \
                    "none completed"
                print(f"| {run['seed']} | {name} | {what} | - | - | - | {r['pruned_before_training']}/"
                      f"{r['trials']} | {r['epochs']} |")
                continue
            p95 = r["p95"] if r["p95"] is not None else table[r["width"]]["p95"]["median"]
            print(f"| {run['seed']} | {name} | {r['val']:.4f} | {r['test']:.4f} | {r['width']} | {p95:.3g} | "
                  f"{r['pruned_before_training']}/{r['trials']} | {r['epochs']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deploy.json").write_text(json.dumps({"stability": table, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Learning-rate schedules side by side at fixed hyperparameters, behind docs/benchmarks.md's schedule tables:
each schedule (and each gamma of the gamma-bearing ones) trained through `tuner.train.fit` on the same splits, at
several learning rates and seeds, one torch thread. Prints validation / test accuracy per cell, mean of the seeds;
the validation figure is the one to choose on, the test figure is reported only.

    python scripts/bench_schedules.py --data-dir ../shared/data/fashion-mnist-mini --seeds 1 2 3 --jobs 2

The run is the typical winner of docs/benchmarks.md (bncnn, Adam, batch 64, label smoothing 0.1, dropout 0.3,
weight decay 1e-4, 8 epochs, warm-up 0.1). Accuracy does not depend on the machine's load (the runs are
deterministic on one thread); `--jobs` runs that many in parallel processes.
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MINI_DATA = REPO.parent / "shared" / "data" / "fashion-mnist-mini"
ARMS: list[dict[str, Any]] = [
    {"scheduler": "cosine"},
    {"scheduler": "onecycle"},
    *({"scheduler": "exp-warmup", "gamma": gamma} for gamma in (0.5, 0.65, 0.8)),
    *({"scheduler": "onecycle-gamma", "gamma": gamma} for gamma in (0.3, 0.5, 0.7)),
]
BASE: dict[str, Any] = {"model": "bncnn", "optimizer": "adam", "batch_size": 64, "label_smoothing": 0.1,
                        "dropout": 0.3, "weight_decay": 1e-4, "epochs": 8, "warmup": 0.1}


def run(job: tuple[dict[str, Any], float, int, str]) -> tuple[str, float, float, float]:
    import torch

    from tuner.datasets import load_splits
    from tuner.spec import RunConfig
    from tuner.train import fit

    torch.set_num_threads(1)
    arm, lr, seed, data_dir = job
    config = RunConfig(**BASE, **arm, lr=lr, seed=seed, validation=0.15)
    splits = load_splits("fashion-mnist", data_dir, config.validation, config.split_seed, "cpu")
    result = fit(config, splits)
    return label(arm), lr, result.history[-1].val_accuracy, float(result.test_accuracy or 0.0)


def label(arm: dict[str, Any]) -> str:
    return arm["scheduler"] + (f", gamma {arm['gamma']}" if "gamma" in arm else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(MINI_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--schedulers", nargs="+", help="only these schedules (default: all)")
    args = parser.parse_args()
    arms = [arm for arm in ARMS if not args.schedulers or arm["scheduler"] in args.schedulers]
    jobs = [(arm, lr, seed, args.data_dir) for arm in arms for lr in args.lrs for seed in args.seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, jobs))
    print("| schedule | " + " | ".join(f"lr {lr:g}" for lr in args.lrs) + " |")
    print("| --- |" + " --- |" * len(args.lrs))
    for arm in arms:
        cells = []
        for lr in args.lrs:
            found = [(v, t) for name, at, v, t in results if name == label(arm) and at == lr]
            cells.append(f"{statistics.mean(v for v, _ in found):.3f} / {statistics.mean(t for _, t in found):.3f}")
        print(f"| {label(arm)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

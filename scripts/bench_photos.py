"""One fixed photo config at several lengths, sizes and validation splits, behind docs/benchmarks.md's "Photos":
each arm trained through `tuner.train.fit` on one torch thread (deterministic, so the machine's load changes the
time, not the accuracy), validation accuracy per epoch and the test accuracy at the end (reported, never chosen on).

    python scripts/bench_photos.py --dataset ../shared/data/photos-dev --jobs 2
    python scripts/bench_photos.py --arms "16 epochs" "16 epochs, trivial_augment" "16 epochs, cutmix 1" \
        --split-seeds 1 2 --seeds 1 2 --jobs 2
    python scripts/bench_photos.py --augment-cost       # images per CPU-second of the batch augmentations alone

The config is a typical winner of the default photo study (rescnn width 24, AdamW 3e-3, batch 64, onecycle-gamma
0.5, weight decay 5e-4, dropout 0.2, flips, crops of >= 0.8 of the area, jitter 0.1) at 64 px on split 1 (another
15 % held out than the searches' split 0); arms change one or two of those.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "photos-dev"
BASE: dict[str, Any] = {"image_size": 64, "model": "rescnn", "model_args": {"width": 24}, "optimizer": "adamw",
                        "lr": 3e-3, "batch_size": 64, "scheduler": "onecycle-gamma", "gamma": 0.5,
                        "weight_decay": 5e-4, "dropout": 0.2, "flip": True, "crop": 0.8, "jitter": 0.1,
                        "validation": 0.15, "split_seed": 1, "seed": 1, "epochs": 8}
ARMS: dict[str, dict[str, Any]] = {
    "8 epochs": {},
    "8 epochs, onecycle": {"scheduler": "onecycle"},
    "16 epochs": {"epochs": 16},
    "24 epochs": {"epochs": 24},
    "48 epochs": {"epochs": 48},
    "24 epochs, crop 0.5, jitter 0.2": {"epochs": 24, "crop": 0.5, "jitter": 0.2},
    "16 epochs, 80 px": {"epochs": 16, "image_size": 80},
    "32 epochs, 48 px": {"epochs": 32, "image_size": 48},
    "8 epochs, split 2": {"split_seed": 2},
    "24 epochs, split 2": {"epochs": 24, "split_seed": 2},
    "16 epochs, trivial_augment": {"epochs": 16, "trivial_augment": True, "jitter": 0.0},
    "16 epochs, trivial_augment alone": {"epochs": 16, "trivial_augment": True, "jitter": 0.0, "crop": 1.0},
    "16 epochs, mixup 0.2": {"epochs": 16, "mixup": 0.2},
    "16 epochs, cutmix 1": {"epochs": 16, "cutmix": 1.0},
    "8 epochs, adagrad 1e-3": {"optimizer": "adagrad", "lr": 1e-3},
    "48 epochs, adagrad 1e-3": {"epochs": 48, "optimizer": "adagrad", "lr": 1e-3},
    "8 epochs, adagrad 1e-2": {"optimizer": "adagrad", "lr": 1e-2},
    "48 epochs, adagrad 1e-2": {"epochs": 48, "optimizer": "adagrad", "lr": 1e-2},
}
AUGMENTS: dict[str, dict[str, Any]] = {  # --augment-cost: Augment's arguments
    "flip, crop 0.8, jitter 0.1": {"flip": True, "crop": 0.8, "jitter": 0.1},
    "flip, trivial_augment": {"flip": True, "trivial": True},
    "flip, crop 0.8, jitter 0.1, trivial_augment": {"flip": True, "crop": 0.8, "jitter": 0.1, "trivial": True},
    "flip, crop 0.8, jitter 0.1, mixup 0.2": {"flip": True, "crop": 0.8, "jitter": 0.1, "mixup": 0.2},
    "flip, crop 0.8, jitter 0.1, cutmix 1": {"flip": True, "crop": 0.8, "jitter": 0.1, "cutmix": 1.0},
}


def run(job: tuple[str, str, int, int]) -> tuple[str, list[float], float, float]:
    import torch

    from tuner.datasets import load_splits
    from tuner.spec import RunConfig
    from tuner.train import fit

    torch.set_num_threads(1)
    name, dataset, split_seed, seed = job
    config = RunConfig(**{**BASE, **ARMS[name], "dataset": dataset, "split_seed": split_seed, "seed": seed})
    splits = load_splits(config.dataset, "", config.validation, config.split_seed, "cpu",
                         image_size=config.image_size)
    started = time.process_time()
    result = fit(config, splits)
    label = f"{name} (split {config.split_seed}, seed {config.seed})"
    return (label, [epoch.val_accuracy for epoch in result.history], float(result.test_accuracy or 0.0),
            time.process_time() - started)


def augment_cost(rounds: int = 3, batches: int = 50) -> None:
    """Images per CPU-second of each batch augmentation alone: 64 uint8 images of 3x64x64, one torch thread."""
    import torch

    from tuner.augment import Augment

    torch.set_num_threads(1)
    images = torch.randint(0, 256, (64, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 2, (64,))
    print("| batch augmentation | images/CPU-s, each round |\n| --- | --- |")
    rates: dict[str, list[float]] = {name: [] for name in AUGMENTS}
    for _ in range(rounds):  # rounds alternate the arms, so a change of the machine's load falls on each alike
        for name, options in AUGMENTS.items():
            augment, generator = Augment(**options), torch.Generator().manual_seed(0)
            started = time.process_time()
            for _ in range(batches):
                out = augment(images, generator)
                if augment.mixes:
                    augment.mix(out, labels, generator)
            rates[name].append(batches * len(images) / (time.process_time() - started))
    for name, found in rates.items():
        print(f"| {name} | {' / '.join(f'{rate:,.0f}' for rate in found)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(PHOTOS), help="a folder of photos with train/ and test/")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), metavar="ARM")
    parser.add_argument("--split-seeds", type=int, nargs="+", help="each arm on these validation splits instead")
    parser.add_argument("--seeds", type=int, nargs="+", help="each arm with these training seeds instead")
    parser.add_argument("--jobs", type=int, default=1, help="arms trained at once, one core each")
    parser.add_argument("--augment-cost", action="store_true", help="instead: the cost of the batch augmentations")
    args = parser.parse_args()
    if args.augment_cost:
        augment_cost()
        return
    dataset = str(Path(args.dataset).resolve())
    jobs = [(arm, dataset, split, seed) for arm in args.arms
            for split in (args.split_seeds or [ARMS[arm].get("split_seed", BASE["split_seed"])])
            for seed in (args.seeds or [BASE["seed"]])]
    print("| arm | val (last epoch) | best val | test | CPU-s |\n| --- | --- | --- | --- | --- |")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name, curve, test, seconds in pool.map(run, jobs):
            print(f"| {name} | {curve[-1]:.3f} | {max(curve):.3f} | {test:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()

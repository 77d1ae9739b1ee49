"""Training throughput: tune's trial loop against the tutorial's Optuna + DataLoader objective, side by side.

Both train the same model family with the same optimizer, learning rate, batch size and epochs on the same
train/validation split of the same data on the same device, and evaluate validation accuracy after every epoch:

- baseline: what Optuna's PyTorch example does: torchvision dataset with ToTensor (and Normalize, as PyTorch's MNIST
  example), built inside the objective, a shuffled DataLoader, one `.to(device)` per batch, a validation
  DataLoader, a `.item()` per validation batch;
- tune: `tuner.train.fit`: uint8 tensors on the device, batches drawn by index, one host sync per epoch.

Throughput is training samples per second of wall time over whole epochs (train + validation). The last line
printed is JSON. `--model` takes any model reference (`torchvision:resnet18`); `--augment-cost` also times tune's
epochs with on-device flips and translations against none and against kornia.augmentation; `--schedule-cost` times
them with each learning-rate schedule (cosine and onecycle step after every batch).

`--photos DIR` (a folder of photos, DIR/train/CLASS/*.jpg) instead times, at each of `--sizes`, tune's loop
(`train_epoch` on the decoded uint8 cache, flips, random-resized crops and colour jitter on the device) against
torchvision's ImageFolder + transforms.v2 (the same augmentations, per image) + DataLoader with each of `--workers`,
arms alternating, the same network (rescnn width 24, channels-last), Adam and precision each way: a whole epoch
each at 64 px, `--photo-images` images above; and tune's one-time cache build, which the DataLoader replaces by
decoding every epoch. About 8 minutes on one thread of the 2-core CPU here; on a GPU add `--device cuda` and more
workers (`--workers 0 4 8`). Examples:

    python scripts/bench_search.py --device cpu --data-dir ../shared/data/fashion-mnist-mini
    python scripts/bench_search.py --device cpu --data-dir ../shared/data/fashion-mnist-mini --model bncnn \
        --augment-cost --repeats 5
    python scripts/bench_search.py --device cpu --data-dir ../shared/data/fashion-mnist-mini \
        --model torchvision:resnet18 --epochs 1 --repeats 2
    OMP_NUM_THREADS=1 python scripts/bench_search.py --device cpu --photos ../shared/data/photos-dev --batch-size 64
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from tuner.datasets import Splits, load_splits
from tuner.datasets.splits import split_off
from tuner.models import build_model
from tuner.spec import RunConfig, StudySpec
from tuner.spec.refs import BENCHMARKS
from tuner.testing import write_idx_dataset
from tuner.train import fit, make_optimizer, make_scheduler, resolve_device

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def baseline_fit(config: RunConfig, data_dir: str, splits: Splits, device: torch.device,
                 on_epoch: Callable[[int, float], None] | None = None) -> float:
    """The tutorial's loop (DataLoader + ToTensor, `.to(device)` and `.item()` per batch) on tune's split and
    model; calls `on_epoch(epoch, validation accuracy)` and returns the last epoch's accuracy."""
    import torchvision
    from torchvision import transforms

    dataset_cls = getattr(torchvision.datasets, BENCHMARKS[config.dataset].torchvision_class)
    # The tutorials normalize in the transform pipeline, per image; tune's models do it on the batch.
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(splits.mean, splits.std)])
    full = dataset_cls(data_dir, train=True, download=False, transform=transform)
    train_index, val_index = split_off_indices(len(full), config.validation, config.split_seed)
    train_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(full, train_index.tolist()),
                                               batch_size=config.batch_size, shuffle=True)
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(full, val_index.tolist()),
                                             batch_size=config.batch_size)
    torch.manual_seed(config.seed)
    model = build_model(config, splits.shape, splits.num_classes, splits.mean, splits.std)
    model = model[1].to(device)  # the same network, without tune's built-in normalization (model[0])
    optimizer = make_optimizer(config, model.parameters(), torch.device("cpu"))  # the tutorial: no fused kernels
    scheduler = make_scheduler(config, optimizer)
    accuracy = 0.0
    for epoch in range(1, config.epochs + 1):
        model.train()
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in val_loader:
                data, target = data.to(device), target.to(device)
                correct += model(data).argmax(dim=1).eq(target).sum().item()
        accuracy = correct / len(val_index)
        if on_epoch is not None:
            on_epoch(epoch, accuracy)
    return accuracy


def baseline_epochs(config: RunConfig, data_dir: str, splits: Splits, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    baseline_fit(config, data_dir, splits, device)
    synchronize(device)
    return time.perf_counter() - started


def split_off_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (train, validation) indices `tuner.datasets.splits.split_off` uses."""
    from tuner.datasets import Images

    images = Images(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.arange(n))
    rest, held = split_off(images, fraction, seed)
    return rest.y, held.y


def tune_epochs(config: RunConfig, splits: Splits, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    fit(config, splits, test=False)
    synchronize(device)
    return time.perf_counter() - started


def augment_cost(config: RunConfig, splits: Splits, device: torch.device, repeats: int) -> dict:
    """Median seconds per epoch of tune's loop without augmentation, with tune's (flip + translate 2) and with
    kornia.augmentation doing the same per image (on floats in [0, 1], which the model's Standardize accepts)."""
    import kornia.augmentation as K

    from tuner import augment

    height, width = splits.shape[1:]
    kornia = nn.Sequential(K.RandomHorizontalFlip(), K.RandomCrop((height, width), padding=2))

    def kornia_call(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return kornia(x.float().div_(255))

    augmented = config.replace(flip=True, translate=2)
    timings: dict[str, list[float]] = {"none": [], "tune": [], "kornia": []}
    tune_call = augment.Augment.__call__
    for _ in range(repeats):
        timings["none"].append(tune_epochs(config, splits, device))
        timings["tune"].append(tune_epochs(augmented, splits, device))
        augment.Augment.__call__ = kornia_call
        try:
            timings["kornia"].append(tune_epochs(augmented, splits, device))
        finally:
            augment.Augment.__call__ = tune_call
    out = {kind: round(statistics.median(seconds) / config.epochs, 4) for kind, seconds in timings.items()}
    # The augmentation alone over one epoch's batches: steadier than the difference of two whole epochs.
    generator = torch.Generator(device=device).manual_seed(0)
    for kind, apply in (("tune_alone", lambda x: augment.Augment(True, 2)(x, generator)),
                        ("kornia_alone", lambda x: kornia(x.float().div_(255)))):
        seconds = []
        for _ in range(repeats):
            synchronize(device)
            started = time.perf_counter()
            for start in range(0, len(splits.train), config.batch_size):
                apply(splits.train.take(slice(start, start + config.batch_size))[0])
            synchronize(device)
            seconds.append(time.perf_counter() - started)
        out[kind] = round(statistics.median(seconds), 4)
    return out


def schedule_cost(config: RunConfig, splits: Splits, device: torch.device, repeats: int) -> dict:
    """Median seconds per epoch of tune's loop with each learning-rate schedule, alternating within each repeat:
    cosine and onecycle step after every batch (host arithmetic, no device sync), the others after each epoch;
    and the schedule's step alone, in microseconds per call."""
    from tuner.train import make_scheduler

    kinds = ("none", "exponential", "cosine", "onecycle")
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind in kinds:
            timings[kind].append(tune_epochs(config.replace(scheduler=kind), splits, device))
    out: dict[str, float] = {kind: round(statistics.median(s) / config.epochs, 4) for kind, s in timings.items()}
    for kind in ("cosine", "onecycle"):
        optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-3)
        schedule = make_scheduler(config.replace(scheduler=kind, epochs=100), optimizer, 1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stepped without optimizer steps: a timing, not training
            started = time.perf_counter()
            for _ in range(10_000):
                schedule.step()
        out[f"{kind}_step_us"] = round((time.perf_counter() - started) / 10_000 * 1e6, 2)
    return out


def measure(config: RunConfig, data_dir: str, splits: Splits, device: torch.device, repeats: int) -> dict:
    """Median seconds of each side over `repeats` runs, alternating so that both see the same machine state."""
    baseline, tune = [], []
    tune_epochs(config.replace(epochs=1), splits, device)  # warm-up: allocator, kernels, thread pools
    for _ in range(repeats):
        baseline.append(baseline_epochs(config, data_dir, splits, device))
        tune.append(tune_epochs(config, splits, device))
    samples = len(splits.train) * config.epochs
    result = {
        "model": config.model,
        "batch_size": config.batch_size,
        "baseline_samples_per_s": round(samples / statistics.median(baseline), 1),
        "tune_samples_per_s": round(samples / statistics.median(tune), 1),
        "baseline_epoch_s": round(statistics.median(baseline) / config.epochs, 4),
        "tune_epoch_s": round(statistics.median(tune) / config.epochs, 4),
    }
    result["speedup"] = round(result["tune_samples_per_s"] / result["baseline_samples_per_s"], 2)
    return result


class BusySampler:
    """GPU busy share while a block runs: nvidia-smi's utilization sampled every 0.5 s (CUDA only)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self.stop = device, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import subprocess

        index = self.device.index or 0
        while not self.stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip().isdigit():
                self.samples.append(int(out.stdout.strip()))

    def __enter__(self) -> BusySampler:
        if self.device.type == "cuda":
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()

    @property
    def share(self) -> float | None:
        return round(statistics.mean(self.samples) / 100, 3) if self.samples else None


def study_rate(kind: str, spec: StudySpec, data_dir: str, splits: Splits, device: torch.device,
               seconds: float, seed: int) -> dict:
    """Trials per hour of one pruned study run for `seconds`, with tune's objective or the tutorial's."""
    import optuna

    from tuner.search.objective import Objective
    from tuner.search.samplers import make_pruner, make_sampler
    from tuner.search.space import sample_config

    def tutorial_objective(trial: optuna.Trial) -> float:
        config = sample_config(trial, spec, seed + trial.number)

        def report(epoch: int, accuracy: float) -> None:
            trial.report(accuracy, epoch)
            if epoch < config.epochs and trial.should_prune():
                raise optuna.TrialPruned()

        return baseline_fit(config, data_dir, splits, device, report)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    objective = Objective(spec, splits, seed, keep_top=0) if kind == "tune" else tutorial_objective
    study = optuna.create_study(direction="maximize", sampler=make_sampler(spec, seed), pruner=make_pruner(spec))
    started = time.perf_counter()
    with BusySampler(device) as busy:
        study.optimize(objective, timeout=seconds)
    elapsed = time.perf_counter() - started
    finished = [t for t in study.trials if t.state.is_finished()]
    return {"trials": len(finished), "seconds": round(elapsed, 1),
            "trials_per_hour": round(len(finished) / elapsed * 3600, 1),
            "best_value": round(study.best_value, 4), "gpu_busy": busy.share}


def timed(run: Callable[[], T], device: torch.device) -> tuple[T, float, float]:
    """(what `run()` returns, wall seconds, CPU seconds): the CPU of this process and of its children that ended
    meanwhile (DataLoader workers, which end with their epoch)."""
    synchronize(device)
    before, started = os.times(), time.perf_counter()
    out = run()
    synchronize(device)
    after = os.times()
    return out, time.perf_counter() - started, sum(after[:4]) - sum(before[:4])


def loader_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader[Any],
                 device: torch.device) -> None:
    """The plain loop: batches from a DataLoader moved to the device, the same step as tune's (bf16 on CUDA)."""
    model.train()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def photo_speed(root: Path, size: int, workers: list[int], images_per_arm: int, batch_size: int, rounds: int,
                device: torch.device) -> dict[str, Any]:
    """Training images/s at `size` px of tune's loop (the decoded uint8 cache, batches drawn by index, flips,
    crops and jitter on the device: `train_epoch`) and of torchvision's ImageFolder + transforms.v2 + DataLoader
    (each JPEG decoded and augmented per image, every epoch) with each count of `workers`, arms alternating in
    `rounds` rounds over the same number of images: a whole epoch at 64 px or less, else `images_per_arm`. The
    same network (rescnn width 24, channels-last as `fit` trains it), Adam and precision each way. Also the
    one-time cost of tune's cache (decoding the folder once; $TUNE_CACHE_DIR: a fresh one)."""
    from torchvision import datasets
    from torchvision.transforms import v2

    from tuner.augment import Augment
    from tuner.train import train_epoch

    config = RunConfig(dataset=str(root), image_size=size, model="rescnn", model_args={"width": 24}, optimizer="adam",
                       lr=1e-3, batch_size=batch_size, dropout=0.0, flip=True, crop=0.35, jitter=0.2)
    splits, cache_s, cache_cpu_s = timed(lambda: load_splits(config.dataset, "", config.validation,
                                                             config.split_seed, str(device), True, size), device)
    n = len(splits.train) if size <= 64 else min(images_per_arm, len(splits.train))
    images = splits.train.subset(torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[:n])
    augment = Augment(flip=config.flip, crop=config.crop, jitter=config.jitter)
    transform = v2.Compose([v2.RandomResizedCrop(size, scale=(config.crop, 1.0)), v2.RandomHorizontalFlip(),
                            v2.ColorJitter(config.jitter, config.jitter, config.jitter), v2.ToImage(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(splits.mean, splits.std)])
    folder = datasets.ImageFolder(str(root / "train"), transform=transform)
    subset = torch.utils.data.Subset(folder, torch.randperm(len(folder))[:n].tolist())

    def loader(workers: int, data: torch.utils.data.Dataset[Any] = subset) -> DataLoader[Any]:
        return DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                          pin_memory=device.type == "cuda")

    torch.manual_seed(0)
    tune_model, plain = (build_model(config, splits.shape, splits.num_classes, splits.mean, splits.std)
                         .to(device).to(memory_format=torch.channels_last) for _ in range(2))
    plain = cast(nn.Sequential, plain)[1]  # the network alone: the transform normalizes
    tune_optimizer, plain_optimizer = (make_optimizer(config, m.parameters(), device) for m in (tune_model, plain))
    generator = torch.Generator(device=device).manual_seed(0)
    arms: dict[str, Callable[[], object]] = {
        "tune": functools.partial(train_epoch, tune_model, tune_optimizer, images, batch_size, generator, augment)}
    for w in workers:
        arms[f"loader{w}"] = functools.partial(loader_epoch, plain, plain_optimizer, loader(w), device)
    # warm-up (kernels, allocator), untimed: a batch each way
    train_epoch(tune_model, tune_optimizer, images.subset(torch.arange(batch_size)), batch_size, generator, augment)
    loader_epoch(plain, plain_optimizer, loader(0, torch.utils.data.Subset(subset, range(batch_size))), device)
    times: dict[str, list[tuple[float, float]]] = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            times[arm].append(timed(arms[arm], device)[1:])
    row: dict[str, Any] = {"size": size, "images_per_arm": n, "rounds": rounds, "tune_cache_s": round(cache_s, 2),
                           "tune_cache_cpu_s": round(cache_cpu_s, 2)}
    for arm, measured in times.items():
        row[f"{arm}_images_per_s"] = round(n / statistics.median(wall for wall, _ in measured), 1)
        row[f"{arm}_images_per_cpu_s"] = round(n / statistics.median(cpu for _, cpu in measured), 1)
    best = max(arms.keys() - {"tune"}, key=lambda arm: row[f"{arm}_images_per_s"])
    row["best_loader"], row["speedup"] = best, round(row["tune_images_per_s"] / row[f"{best}_images_per_s"], 2)
    epochs, train = RunConfig().epochs, len(splits.train)  # a default trial: 8 epochs of the whole training split
    row["trial_s"] = {"tune_with_cache": round(cache_s + epochs * train / row["tune_images_per_s"], 1),
                      "loader": round(epochs * train / row[f"{best}_images_per_s"], 1)}
    print(f"{size} px, {n} images per arm, {rounds} rounds: tune {row['tune_images_per_s']:.0f} img/s "
          f"({row['tune_images_per_cpu_s']:.0f} img/CPU-s); "
          + "; ".join(f"DataLoader workers {w} {row[f'loader{w}_images_per_s']:.0f} img/s "
                      f"({row[f'loader{w}_images_per_cpu_s']:.0f} img/CPU-s)" for w in workers)
          + f"; tune / best DataLoader {row['speedup']:.2f}x. Tune's cache, built once: {cache_s:.1f} s "
          f"({cache_cpu_s:.1f} CPU-s); {epochs} epochs of {train} images: tune {row['trial_s']['tune_with_cache']} s "
          f"with its cache, DataLoader {row['trial_s']['loader']} s (decoding every epoch)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--data-dir", help="torchvision data dir; default: synthetic data written to a temp dir")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--model", default="mlp",
                        help="model reference: bncnn, torchvision:resnet18, ... (default: the tutorial's MLP)")
    parser.add_argument("--augment-cost", action="store_true",
                        help="also time epochs without augmentation, with tune's and with kornia's")
    parser.add_argument("--batch-size", type=int, default=128, help="default: the tutorial's 128")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic-size", type=int, default=60_000, help="training images when synthetic")
    parser.add_argument("--sweep", action="store_true", help="also measure every model at batch 64 and 512")
    parser.add_argument("--schedule-cost", action="store_true",
                        help="time tune's epochs with each learning-rate schedule (per-epoch and per-batch ones)")
    parser.add_argument("--study-seconds", type=float, default=0,
                        help="also run a pruned study (the default search space) for S seconds with each objective "
                             "and compare trials/hour")
    parser.add_argument("--study-model", default=None, help="model of that study (default: the default study's)")
    parser.add_argument("--study-epochs", type=int, default=None, help="epochs per trial of that study")
    parser.add_argument("--photos", type=Path, metavar="DIR",
                        help="image folder (DIR/train/CLASS/*.jpg): tune's loop against ImageFolder + DataLoader")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224], help="--photos: image sizes")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="--photos: DataLoader workers")
    parser.add_argument("--photo-images", type=int, default=512,
                        help="--photos: images each arm trains per round above 64 px (64 px: a whole epoch)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.photos:
        print(f"device: {device}, threads: {torch.get_num_threads()}, load average: {os.getloadavg()}")
        with tempfile.TemporaryDirectory(prefix="tune-bench-cache-") as cache:  # built afresh, then deleted
            os.environ["TUNE_CACHE_DIR"] = cache
            rows = [photo_speed(args.photos, size, args.workers, args.photo_images, args.batch_size, args.repeats,
                                device) for size in args.sizes]
        print(json.dumps({"device": str(device), "photos": rows, "load_average": os.getloadavg()}))
        return
    data_dir = args.data_dir
    if data_dir is None or not (Path(data_dir) / BENCHMARKS[args.dataset].files).exists():
        data_dir = str(write_idx_dataset(tempfile.mkdtemp(prefix="tune-bench-"), args.dataset,
                                         n_train=args.synthetic_size, n_test=10_000, noise=0.8))
        print(f"data: synthetic {args.synthetic_size} training images in {data_dir}")
    config = RunConfig(dataset=args.dataset, model=args.model, optimizer="adam", lr=1e-3,
                       batch_size=args.batch_size, epochs=args.epochs, scheduler="none", dropout=0.0)
    started = time.perf_counter()
    splits = load_splits(args.dataset, data_dir, config.validation, config.split_seed, str(device))
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"threads: {torch.get_num_threads()}, train/val images: {len(splits.train)}/{len(splits.val)}, "
          f"tune's one-time load: {time.perf_counter() - started:.2f} s")

    if args.augment_cost:
        cost = augment_cost(config, splits, device, args.repeats)
        print(f"{config.model} batch {config.batch_size}: s/epoch without augmentation {cost['none']:.3f}, with "
              f"tune's flip + translate {cost['tune']:.3f}, with kornia's {cost['kornia']:.3f}; the augmentation "
              f"alone: tune's {cost['tune_alone']:.4f}, kornia's {cost['kornia_alone']:.4f}")
        print(json.dumps({"augment_seconds_per_epoch": cost}))
        return
    if args.schedule_cost:
        cost = schedule_cost(config, splits, device, args.repeats)
        print(f"{config.model} batch {config.batch_size}: s/epoch " + ", ".join(f"{k} {v}" for k, v in cost.items()))
        print(json.dumps({"schedule_seconds_per_epoch": cost}))
        return
    rows = [measure(config, data_dir, splits, device, args.repeats)]
    if args.sweep:
        for model in ("mlp", "convnet", "cnn"):
            for batch_size in (64, 512):
                rows.append(measure(config.replace(model=model, batch_size=batch_size), data_dir, splits, device,
                                    max(1, args.repeats - 1)))
    for row in rows:
        print(f"{row['model']:8} batch {row['batch_size']:4}: tune {row['tune_samples_per_s']:9.0f} samples/s "
              f"({row['tune_epoch_s']:.3f} s/epoch), baseline {row['baseline_samples_per_s']:9.0f} samples/s "
              f"({row['baseline_epoch_s']:.3f} s/epoch), speedup {row['speedup']:.2f}x")
    summary = {"device": str(device), "epochs": args.epochs, "train_samples": len(splits.train), **rows[0]}
    if args.sweep:
        summary["sweep"] = rows[1:]
    if args.study_seconds:
        spec = StudySpec(dataset=args.dataset).replace(model=args.study_model, epochs=args.study_epochs)
        rates = {kind: study_rate(kind, spec, data_dir, splits, device, args.study_seconds, seed=0)
                 for kind in ("baseline", "tune")}
        for kind, rate in rates.items():
            print(f"study ({spec.model}, {spec.epochs} epochs, {spec.pruner} pruner) with the {kind} objective: "
                  f"{rate['trials']} trials in {rate['seconds']} s = {rate['trials_per_hour']:.0f} trials/hour, "
                  f"best {rate['best_value']}, GPU busy {rate['gpu_busy']}")
        summary["study"] = rates
        summary["trials_per_hour_speedup"] = round(rates["tune"]["trials_per_hour"]
                                                   / rates["baseline"]["trials_per_hour"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

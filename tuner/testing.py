"""Test doubles that ship with tune: synthetic, learnable image datasets written in torchvision's raw IDX layout,
and a quick objective that stands in for training.

Tests and benchmarks use the datasets where the real data cannot be downloaded: torchvision loads them exactly as
it loads the real files, so the whole path from `--data-dir` to the trained model is exercised.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from tuner.spec.refs import BENCHMARKS

MNIST_LIKE = tuple(name for name, b in BENCHMARKS.items() if b.shape == (1, 28, 28) and b.sample_of is None)


def _write_idx(path: Path, tensor: torch.Tensor) -> None:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian sizes, then the data."""
    header = struct.pack(">4B", 0, 0, 0x08, tensor.ndim) + struct.pack(f">{tensor.ndim}I", *tensor.shape)
    path.write_bytes(header + tensor.to(torch.uint8).contiguous().numpy().tobytes())


def make_images(n: int, *, num_classes: int = 10, size: int = 28, noise: float = 0.6, seed: int = 0,
                class_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` uint8 images (n, size, size): each class is a fixed random pattern, blurred and mixed with noise.

    `class_seed` fixes the class patterns (keep it for train and test), `seed` the samples. `noise` in [0, 1] is
    the share of noise per pixel: near 0 every model learns the classes at once, near 1 none does.
    """
    templates = torch.rand(num_classes, 1, size // 4, size // 4, generator=torch.Generator().manual_seed(class_seed))
    templates = torch.nn.functional.interpolate(templates, size=(size, size), mode="bilinear").squeeze(1)
    generator = torch.Generator().manual_seed(seed + 1000)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    pixels = (1 - noise) * templates[labels] + noise * torch.rand(n, size, size, generator=generator)
    return (pixels * 255).round().to(torch.uint8), labels


def write_idx_dataset(root: str | Path, dataset: str = "fashion-mnist", *, n_train: int = 600, n_test: int = 200,
                      noise: float = 0.6, seed: int = 0) -> Path:
    """Write a synthetic `dataset` under `root` in torchvision's layout (ROOT/FashionMNIST/raw/...); returns root."""
    if dataset not in MNIST_LIKE:
        raise ValueError(f"synthetic data is written for {', '.join(MNIST_LIKE)}, not {dataset!r}")
    raw = Path(root) / BENCHMARKS[dataset].files
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, sample_seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = make_images(n, noise=noise, seed=sample_seed, class_seed=seed)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Path(root)


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

"""Datasets as uint8 tensors on the training device, loaded once per worker process and split reproducibly.

torchvision reads (or downloads) the files; from then on no DataLoader or PIL is involved: batches are drawn by
index from the tensors on the device, and the model converts uint8 to normalized floats itself.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tuner.errors import TuneError

TORCHVISION_CLASSES = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST", "kmnist": "KMNIST", "cifar10": "CIFAR10"}
DATASET_FOLDERS = {"cifar10": "cifar-10-batches-py"}  # where torchvision keeps the files, if not CLASS/raw


def default_data_dir() -> Path:
    """Where datasets are read from and downloaded to unless --data-dir says otherwise."""
    if os.environ.get("TUNE_DATA_DIR"):
        return Path(os.environ["TUNE_DATA_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tune" / "data"


@dataclass(frozen=True)
class Images:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,), both on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Images:
        return Images(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Splits:
    """The three splits of one dataset: train to fit, val to select and prune on, test to report."""

    train: Images
    val: Images
    test: Images
    mean: tuple[float, ...]  # per-channel mean of the training split, in [0, 1]
    std: tuple[float, ...]
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])


def _torchvision_dataset(dataset: str, root: Path, train: bool):
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_CLASSES[dataset])
    try:
        return cls(root=str(root), train=train, download=False)
    except RuntimeError:
        pass  # not there yet: download it below
    try:
        # torchvision prints each mirror it tries; keep the terminal for tune's own output.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return cls(root=str(root), train=train, download=True)
    except Exception as e:  # URLError, RuntimeError from torchvision's mirrors, OSError on a read-only dir
        reason = " ".join(str(e).split())[:200]
        raise TuneError(
            f"{dataset} is not in {root} and could not be downloaded ({reason}). "
            f"Put torchvision's files in {root / DATASET_FOLDERS.get(dataset, TORCHVISION_CLASSES[dataset] + '/raw')}"
            " or pass --data-dir DIR that holds them"
        ) from None


def load_images(dataset: str, data_dir: str | Path, train: bool) -> Images:
    """One official split of a torchvision dataset as uint8 tensors on the CPU."""
    root = Path(data_dir).expanduser()
    ds = _torchvision_dataset(dataset, root, train)
    x = torch.as_tensor(ds.data)
    # MNIST family: (N, H, W) tensors; CIFAR: (N, H, W, C) arrays.
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return Images(x.contiguous(), y)


def split_off(images: Images, fraction: float, seed: int) -> tuple[Images, Images]:
    """(rest, held out): a seeded random `fraction` of the images held out, the same for every call."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    n_held = max(1, round(len(images) * fraction))
    held, rest = order[:n_held].sort().values, order[n_held:].sort().values
    return Images(images.x[rest], images.y[rest]), Images(images.x[held], images.y[held])


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).float() / 255
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).clamp_min(1e-3).tolist())


@functools.cache
def load_splits(dataset: str, data_dir: str, validation: float | str, split_seed: int, device: str,
                with_validation: bool = True) -> Splits:
    """Train, validation and test splits on `device`, cached for the life of the process.

    `validation` is the fraction of the official training set held out, or "test" to select on the test split
    (as Optuna's tutorials do). `with_validation=False` trains on the whole training set (production runs).
    """
    full_train = load_images(dataset, data_dir, train=True)
    test = load_images(dataset, data_dir, train=False)
    if validation == "test" or not with_validation:
        train, val = full_train, test
    else:
        train, val = split_off(full_train, float(validation), split_seed)
    mean, std = channel_stats(train.x)
    num_classes = int(max(full_train.y.max(), test.y.max())) + 1
    test_on_device = test.to(device)
    val_on_device = test_on_device if val is test else val.to(device)
    return Splits(train.to(device), val_on_device, test_on_device, mean, std, num_classes)

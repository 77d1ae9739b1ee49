"""torchvision's benchmark datasets (Fashion-MNIST, MNIST, KMNIST, CIFAR-10) as a source: torchvision reads, or
downloads, the files; from then on the images are uint8 tensors."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import torch

from tuner.datasets.splits import Images, Source
from tuner.errors import DataUnavailable, one_line
from tuner.fileio import no_empty_folders_on_error
from tuner.spec.refs import BENCHMARKS


def _torchvision_dataset(dataset: str, root: Path, train: bool) -> Any:  # a torchvision VisionDataset
    import torchvision

    cls = getattr(torchvision.datasets, BENCHMARKS[dataset].torchvision_class)
    try:
        return cls(root=str(root), train=train, download=False)
    except RuntimeError:
        pass  # not there yet: download it below
    try:
        # torchvision prints each mirror it tries; keep the terminal for tune's own output.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                no_empty_folders_on_error(root / BENCHMARKS[dataset].files):
            return cls(root=str(root), train=train, download=True)
    except Exception as e:  # URLError, RuntimeError from torchvision's mirrors, OSError on a read-only dir
        reason = one_line(e)
        raise DataUnavailable(
            f"{dataset} is not in {root} and could not be downloaded ({reason}). "
            f"Put torchvision's files in {root / BENCHMARKS[dataset].files}"
            " or pass --data-dir DIR that holds them", dataset, str(root), reason
        ) from None


def load_images(dataset: str, data_dir: str | Path, train: bool) -> tuple[Images, tuple[str, ...]]:
    """One official split of a torchvision dataset as uint8 tensors on the CPU, and its class names."""
    root = Path(data_dir).expanduser()
    ds = _torchvision_dataset(dataset, root, train)
    x = torch.as_tensor(ds.data)
    # MNIST family: (N, H, W) tensors; CIFAR: (N, H, W, C) arrays.
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return Images(x.contiguous(), y), tuple(ds.classes)


def load(dataset: str, data_dir: str | Path) -> Source:
    """The official train and test splits of `dataset` (no validation split: it is held out of train)."""
    from tuner.datasets.images import preprocess_record

    train, classes = load_images(dataset, data_dir, train=True)
    test, _ = load_images(dataset, data_dir, train=False)
    channels, height, width = train.x.shape[1:]
    info = {"kind": "torchvision", "name": dataset, "root": str(Path(data_dir).expanduser())}
    return Source(train, None, test, classes, preprocess_record(channels, (height, width)), info)

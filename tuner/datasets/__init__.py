"""Datasets as uint8 tensors, loaded once per process, split reproducibly and held where the run reads them.

A dataset reference is the name of one of torchvision's benchmarks (`tuner.datasets.torchvision`), of a sample
bundled with tune (`tuner.datasets.sample`), or the path of a folder of images, one subfolder per class
(`tuner.datasets.folder`). Each source yields a `Source`; `load_splits`
turns it into train, validation and test splits, held on the device, on the host or streamed (`tuner.datasets.loader`;
folders live in a memory-mapped store that every process shares, `tuner.datasets.store`). From then on no
DataLoader or PIL is involved: batches are drawn by index, and the model converts uint8 to normalized floats itself.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from tuner.datasets.splits import Images, Source, Splits, make_splits
from tuner.errors import TuneError
from tuner.spec.refs import is_folder, is_sample

__all__ = ["Images", "Source", "Splits", "data_warnings", "default_data_dir", "is_folder", "load_source", "load_splits",
           "splits_for"]


def default_data_dir() -> Path:
    """Where torchvision's datasets are read from and downloaded to unless --data-dir says otherwise."""
    if os.environ.get("TUNE_DATA_DIR"):
        return Path(os.environ["TUNE_DATA_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tune" / "data"


def load_source(dataset: str, data_dir: str | Path | None = None, image_size: int | None = None) -> Source:
    """The dataset `dataset` names, as its source reads it (decoded once and cached for folders)."""
    if is_folder(dataset):
        from tuner.datasets import folder

        return folder.load(dataset, image_size)
    if is_sample(dataset):
        from tuner.datasets import sample

        source = sample.load(dataset)
    else:
        from tuner.datasets import torchvision

        source = torchvision.load(dataset, data_dir or default_data_dir())
    native = source.preprocess["size"]
    if image_size is not None and [image_size, image_size] != native:
        raise TuneError(f"image size {image_size}: {dataset} comes in {native[0]}x{native[1]} images and is used "
                        "at that size; image_size applies to image folders")
    return source


@functools.cache
def load_splits(dataset: str, data_dir: str, validation: float | str, split_seed: int, device: str,
                with_validation: bool = True, image_size: int | None = None) -> Splits:
    """Train, validation and test splits on `device`, cached for the life of the process.

    `validation` is the fraction of the training set held out when the dataset has no validation split, or
    "test" to select on the test split (as Optuna's tutorials do). `with_validation=False` trains on train +
    validation (production runs). Folders and bundled samples hold out the same share of every class; see
    `make_splits`.
    """
    source = load_source(dataset, data_dir, image_size)
    return make_splits(source, validation, split_seed, device, with_validation,
                       stratified=is_folder(dataset) or is_sample(dataset))


def splits_for(run: Any, data_dir: str | Path | None, device: str, with_validation: bool = True) -> Splits:
    """`load_splits` for a study spec or a run config: both name the dataset, image size, validation and split
    seed the same way, so a trial, a worker and `tune train` load the very same splits."""
    return load_splits(run.dataset, str(data_dir or default_data_dir()), run.validation, run.split_seed, device,
                       with_validation, run.image_size)


def data_warnings(splits: Splits, recorded_fingerprint: str | None, since: str, consequence: str) -> list[str]:
    """Lines about data just loaded: where the run holds the images when it is not the usual place (streamed, or
    on the host for a GPU), a folder whose files changed `since` (its fingerprint then was `recorded_fingerprint`),
    saying the `consequence`, and the images skipped as unreadable."""
    from tuner.datasets.folder import unreadable_warning

    lines = []
    if splits.train.mode == "streamed" or (splits.train.mode == "host" and splits.train.compute_device.type != "cpu"):
        lines.append(splits.info["placement_line"])
    current = splits.info.get("fingerprint")
    if recorded_fingerprint and current and recorded_fingerprint != current:
        lines.append(f"warning: {splits.info.get('root')} changed since {since} (fingerprint {current}, then "
                     f"{recorded_fingerprint}: files added, removed or modified): {consequence}")
    skipped = unreadable_warning(splits.info)
    return lines + ([skipped] if skipped else [])

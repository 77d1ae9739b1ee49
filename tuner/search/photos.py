"""What a new study of a folder of photos settles before it loads the images: whether the default study starts
from pretrained weights (when they are at hand) and the image size, chosen for the device and the budget
(tuner.spec.defaults) from a count of the training images and a sample of their headers. Each choice is said in
one line, printed once the data has loaded. The folder loader then only receives the size."""

from __future__ import annotations

import contextlib
import io
import os
import statistics
from typing import TYPE_CHECKING, Any

from tuner.errors import counted
from tuner.spec import Choices, Domain, Fixed, Range, StudySpec
from tuner.spec.defaults import (
    PHOTO_FIRST_TRIAL,
    PHOTO_MODEL,
    PRETRAINED_BACKBONE,
    PRODUCTION_EPOCHS_FACTOR,
    photo_image_size,
    pretrained_search,
)
from tuner.spec.refs import is_folder

if TYPE_CHECKING:
    import torch

HEADER_SAMPLE = 64  # headers read for the median side: enough for a median, a fraction of a second


def photo_defaults(spec: StudySpec, device: torch.device, default_model: bool,
                   default_study: bool) -> tuple[StudySpec, list[str]]:
    """`spec` (a new study's) with, for a folder, the pretrained backbone when `default_model` (no spec file, no
    --model) and its weights are at hand, the image size chosen when none is given, and for the `default_study`
    (no spec file) from scratch longer production runs and a median pruner that waits for half a trial's epochs;
    and the lines that say so (for once the data has loaded: a folder that cannot be a dataset stays one line)."""
    if not is_folder(spec.dataset):
        return spec, []
    lines: list[str] = []
    if default_model:
        spec = _pretrained(spec, lines)
    spec = with_photo_size(spec, device, lines)
    if default_study and spec.production_epochs is None and not spec.pretrained:  # measured from scratch
        longer = PRODUCTION_EPOCHS_FACTOR * spec.epochs
        spec = spec.replace(production_epochs=longer)
        lines.append(f"tune train --full-train will train the winner {counted(longer, 'epoch')}, "
                     f"{PRODUCTION_EPOCHS_FACTOR}x a trial's (photos keep improving long after a short trial): "
                     "change it with tune train --epochs N")
        if spec.pruner == "median" and not spec.pruner_options and spec.epochs >= 4:
            wait = spec.epochs // 2
            spec = spec.replace(pruner_options={"n_warmup_steps": wait})
            lines.append(f"trials are compared for pruning from epoch {wait} of {spec.epochs} on (the first epochs of "
                         "a photo run from scratch rank it poorly); trials stuck at chance still stop at epoch 2")
    return spec, lines


def first_trial(spec: StudySpec) -> tuple[dict[str, Any], str] | None:
    """(params, the line that says so) of the first trial of a new default study of a folder trained from scratch:
    the values of PHOTO_FIRST_TRIAL its space holds; None for other studies."""
    if not is_folder(spec.dataset) or spec.model != PHOTO_MODEL or spec.pretrained:
        return None
    params = {name: value for name, value in PHOTO_FIRST_TRIAL.items()
              if name in spec.search and _holds(spec.search[name], value)}
    if not params:
        return None
    shown = ", ".join(f"{name.removeprefix('model.')} {value}" for name, value in params.items()
                      if name in ("optimizer", "lr", "batch_size", "model.width"))
    return params, f"trial 0 trains a conventional starting config ({shown}); the search goes on from there"


def _holds(domain: Domain, value: Any) -> bool:
    if isinstance(domain, Fixed):
        return False  # nothing to choose
    if isinstance(domain, Choices):
        return value in domain.values
    return isinstance(domain, Range) and bool(domain.low <= value <= domain.high)


def _pretrained(spec: StudySpec, lines: list[str]) -> StudySpec:
    from tuner.models.hubs import pretrained_at_hand

    # torch's "Downloading: ..." (stdout) of an attempt that fails offline
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        why_not = pretrained_at_hand(PRETRAINED_BACKBONE)
    if why_not is not None:
        lines.append(f"NOTE: training {spec.model} from scratch: {why_not}")
        return spec
    lines.append(f"starting from the ImageNet weights of torchvision:{PRETRAINED_BACKBONE} (--model rescnn: from "
                 "scratch)")
    return spec.replace(model=f"torchvision:{PRETRAINED_BACKBONE}", pretrained=True,
                        search=pretrained_search(spec.dataset))


def with_photo_size(spec: StudySpec, device: torch.device, lines: list[str]) -> StudySpec:
    """`spec` with its image size chosen when it is a folder's and has none; the line that says so added to
    `lines`."""
    if spec.image_size is not None or not is_folder(spec.dataset):
        return spec
    from tuner.datasets.folder import scan_folder
    from tuner.datasets.images import UnreadableImage, open_image

    scan = scan_folder(spec.dataset)
    train = [path for path, split, _ in scan.files if split == "train"]
    sides = []
    for path in train[::max(1, len(train) // HEADER_SAMPLE)]:
        try:
            with open_image(scan.root / path) as image:
                sides.append(min(image.size))
        except (UnreadableImage, OSError):
            continue  # the loader counts and reports unreadable files
    held_out = spec.validation if isinstance(spec.validation, float) and "val" not in scan.split_folders else 0.0
    size, line = photo_image_size(device.type, os.cpu_count() or 1, round(len(train) * (1 - held_out)),
                                  spec.epochs, statistics.median_low(sides) if sides else None)
    lines.append(line)
    return spec.replace(image_size=size)

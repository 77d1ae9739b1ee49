"""The default study per kind of data, and the image size a folder of photos is trained at.

Torchvision's benchmarks and the bundled samples take the shared default space (`tuner.spec.params.default_search`);
a folder of images takes the same space with only the photo-specific entries replaced: the photo family `rescnn`
and its width, and photo augmentations (flips, random-resized crops, colour jitter), which hurt on Fashion-MNIST's
centred, upright garments (flips) and so stay out of the benchmarks' space. Everything else (optimizer, learning
rate and its schedule, regularization) is the shared space's, and follows it when it changes.
"""

from __future__ import annotations

from tuner.errors import counted
from tuner.spec.params import Choices, Domain, Fixed, Range, default_search
from tuner.spec.refs import MODEL_ARG, is_folder

PHOTO_MODEL = "rescnn"
# Entries of the default space a folder of photos replaces: docs/benchmarks.md, "Photos". TrivialAugment, Mixup and
# CutMix stay out: none paid in 16-epoch runs on two validation splits there (specs can still search them).
PHOTO_SEARCH: dict[str, Domain] = {
    MODEL_ARG + "width": Choices((16, 24, 32)),
    "flip": Fixed(True),
    "crop": Range(0.25, 1.0),
    "jitter": Range(0.0, 0.4),
}

# `tune train --full-train` of a folder's default study trains its winner this many times a trial's epochs: on
# photos from scratch a fixed config's test accuracy kept rising from 8 to 24 epochs (+6 and +8 points on two
# splits) and from 24 to 48 (+1.8 on three splits), where twice the epochs added 0.1 point on Fashion-MNIST
# (docs/benchmarks.md): searches stay short, the one production run trains long. A trial takes about
# TRIAL_SECONDS on a CPU (the image size sees to it), so the production run stays within minutes.
PRODUCTION_EPOCHS_FACTOR = 6

# The first trial of a folder's default study from scratch: conventional values for a small CNN on photos (AdamW at
# 3e-3, batch 64, mild crops and jitter), not the best of any search. TPE's start-up trials are random, so a
# 10-minute CPU search (8-9 trials) was a lottery: its winners ranged from 0.726 to 0.781 in production; this
# config alone reached 0.781 / 0.778 trained for production_epochs on two validation splits (docs/benchmarks.md).
PHOTO_FIRST_TRIAL: dict[str, object] = {
    MODEL_ARG + "width": 24, "optimizer": "adamw", "lr": 3e-3, "batch_size": 64, "gamma": 0.5,
    "weight_decay": 5e-4, "dropout": 0.2, "label_smoothing": 0.0, "crop": 0.8, "jitter": 0.1,
}

# A folder's default study starts from this backbone's ImageNet weights when they are at hand: about the photo
# family's cost per image on a CPU (docs/benchmarks.md, "Photos"), so the same image size serves both.
PRETRAINED_BACKBONE = "mobilenet_v3_small"
PRETRAINED_SEARCH: dict[str, Domain] = {"backbone_lr": Range(0.01, 1.0, log=True)}  # the head at lr, the rest lower

# What one core trains of the photo family per second (pixels of training images, forward and backward, with the
# batch augmentations and evaluation): half of the 8e5 that one thread of the 2-core CPU of docs/benchmarks.md
# ("Photos") measured at width 32, for a second thread's lesser gain and other work. GPUs: a conservative floor.
PIXELS_PER_CORE_SECOND = {"cpu": 4e5, "mps": 4e6, "cuda": 4e7}
TRIAL_SECONDS = 75  # what a trial of the default photo study should take, about (CPU: well under 2 minutes)
MIN_SIZE = 8  # the smallest side of tiny images (the folder loader's floor too)
SIZES = (32, 48, 64, 80, 96, 112, 128, 160, 192, 224)  # chosen from; 224: what pretrained backbones were trained at


# Under a deployment budget (--max-latency, --max-params, --max-size) the default study also tries narrower widths of
# the built-in family: 16-32 is its accurate range, but a latency limit a third of the widest model's fitted none of
# them on a quiet CPU (docs/benchmarks.md, "Deployment-aware search").
BUDGET_WIDTHS = (8, 12)


def default_model(dataset: str) -> str | None:
    """The default study's model for `dataset`: the photo family for folders; None: the benchmarks' default."""
    return PHOTO_MODEL if is_folder(dataset) else None


def default_search_for(dataset: str) -> dict[str, Domain]:
    """The default study's search space for `dataset` (a benchmark's name or a folder)."""
    if not is_folder(dataset):
        return default_search()
    return {**default_search(), **PHOTO_SEARCH}


def pretrained_search(dataset: str) -> dict[str, Domain]:
    """The default photo space for a pretrained torchvision backbone: the family's width left out, the backbone's
    share of the learning rate searched."""
    return {**{k: v for k, v in default_search_for(dataset).items() if k != MODEL_ARG + "width"},
            **PRETRAINED_SEARCH}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes" if seconds >= 60 else f"{max(1, round(seconds))} s"


def photo_image_size(device_type: str, cores: int, train_images: int, epochs: int,
                     median_side: int | None = None) -> tuple[int, str]:
    """(side, the line that says it) of the images of a folder: the largest of SIZES at which a trial of `epochs`
    epochs over `train_images` images trains in about TRIAL_SECONDS on this device, never above the images'
    `median_side` (upscaling adds cost, not detail)."""
    rate = PIXELS_PER_CORE_SECOND.get(device_type, PIXELS_PER_CORE_SECOND["cpu"])
    rate *= max(1, cores) if device_type == "cpu" else 1
    pixels = max(1, train_images * epochs)
    fitting = [s for s in SIZES if s * s * pixels <= rate * TRIAL_SECONDS] or [SIZES[0]]
    side = fitting[-1]
    if median_side is not None and median_side < side:  # smaller images than any of SIZES keep their median side
        side = max([s for s in SIZES if s <= median_side], default=max(MIN_SIZE, median_side))
    where = counted(cores, "CPU core") if device_type == "cpu" else device_type.upper()
    median = f"; median shorter side {median_side} px" if median_side is not None else ""
    runs = counted(epochs, "epoch")
    return side, (f"image size {side} px, for {where} and {train_images:,} training images x {runs} "
                  f"(about {_minutes(side * side * pixels / rate)} a trial{median}): change it with --image-size N "
                  "(larger: slower, often more accurate)")


def budget_search(search: dict[str, Domain]) -> dict[str, Domain] | None:
    """`search` with BUDGET_WIDTHS added to a searched `model.width` of the built-in family; None when it searches
    no width or already holds them."""
    widths = search.get(MODEL_ARG + "width")
    if not isinstance(widths, Choices) or set(BUDGET_WIDTHS) <= set(widths.values):
        return None
    return {**search, MODEL_ARG + "width": Choices(tuple(sorted({*widths.values, *BUDGET_WIDTHS})))}

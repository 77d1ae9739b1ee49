"""`tune data`: what a search would see in a dataset, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tuner.datasets import cache, folder
from tuner.datasets.building import SPLITS
from tuner.datasets.loader import choose
from tuner.datasets.splits import TEST_FRACTION, carve

DEFAULT_VALIDATION = 0.15  # the default spec's; a spec with another fraction may need more images


def default_device() -> torch.device:
    """The device a run takes by default (`--device auto`): the one whose placement `tune data` reports."""
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if mps is not None and mps.is_available() else "cpu")


def _class_counts(labels: torch.Tensor, classes: list[str]) -> dict[str, int]:
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    return dict(zip(classes, counts, strict=True))


IMBALANCED = 2.0  # largest / smallest class of the training images from which `tune data` suggests another metric


def imbalance(per_class: dict[str, int]) -> dict[str, Any] | None:
    """The largest and smallest training classes when the first has IMBALANCED times the images of the second (then
    plain accuracy rewards predicting the large classes), else None."""
    largest, smallest = max(per_class, key=per_class.__getitem__), min(per_class, key=per_class.__getitem__)
    ratio = per_class[largest] / max(1, per_class[smallest])
    if ratio < IMBALANCED:
        return None
    return {"largest": largest, "largest_images": per_class[largest], "smallest": smallest,
            "smallest_images": per_class[smallest], "ratio": round(ratio, 2)}


def folder_report(root: str | Path, image_size: int | None = None) -> dict[str, Any]:
    """The layout, classes, images per split and class, image sizes and modes, skipped files and the cache of the
    folder at `root`, decoding it (and writing the cache) if the cache is missing or stale."""
    scan = folder.scan_folder(root)
    cache_file = cache.cache_path(scan.root, image_size)
    store, fresh = folder.cached(scan.root, image_size)
    meta = store.meta
    train, val, test = carve(folder.as_source(store, fresh), DEFAULT_VALIDATION, 0, stratified=True)  # or raise
    distinct = {id(part): part for part in (train, val, test)}.values()
    placement = choose(sum(part.nbytes for part in distinct), default_device())
    classes = meta["classes"]
    splits = {}
    for code, name in enumerate(SPLITS):
        labels = store.y[store.split == code]
        if len(labels):
            splits[name] = {"images": len(labels), "per_class": _class_counts(labels, classes)}
    carved = {}
    if "test" not in splits:
        carved["test"] = f"{TEST_FRACTION:.0%} of train per class (seed 0)"
    if "val" not in splits:
        carved["val"] = "the spec's validation fraction of train per class (default 15%, seeded by split_seed)"
    unreadable = meta["unreadable"]
    return {
        "root": meta["root"],
        "layout": meta["layout"],
        "split_folders": meta["split_folders"],
        "classes": classes,
        "splits": splits,
        "carved_out": carved,
        "image_size": meta["image_size"],
        "image_size_rule": "shorter side resized to the image size, then the center square cropped",
        "default_image_size": meta["requested_size"] is None,
        "channels": meta["channels"],
        "source_sizes": meta["sizes"],
        "source_modes": meta["modes"],
        "ignored": meta["ignored"],
        "unreadable": {"count": len(unreadable), "first": unreadable[0] if unreadable else None},
        "cache": {"path": str(cache_file), "fresh": fresh, "bytes": cache_file.stat().st_size
                  if cache_file.is_file() else None, "decode_seconds": meta["decode_seconds"]},
        "placement": {"device": str(default_device()), "mode": placement.mode, "line": placement.line()},
        "imbalance": imbalance(_class_counts(store.y[store.split == 0], classes)),
        "ready": True,
    }

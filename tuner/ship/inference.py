"""Labelling images with a saved model: files and folders prepared exactly as in training, batched inference,
class names and probabilities out; `tuner.predict` and `tune predict` are this module.

(Not `tuner/predict.py`: importing a submodule of that name would replace the function `tuner.predict`.)
Files are prepared by `ModelInfo.prepare` (`tuner.datasets.images.decode_for` with the preprocessing recorded in
the weights, the one that made the training images), on a thread per core while the model works on the previous batch.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tuner.errors import TuneError
from tuner.ship.checkpoint import Classifier, ModelInfo, load_model

if TYPE_CHECKING:
    from torch import nn

BATCH_SIZE = 256
PREFETCH = 2  # batches decoded ahead of the one the model works on
TTA = ("none", "flip")  # test-time augmentation: flip averages each image's probabilities with its mirror's


@dataclass(frozen=True)
class Prediction:
    """One image's label."""

    path: str | None  # the file; None for images passed as a tensor
    class_name: str  # the predicted class
    probability: float  # its softmax probability
    top: tuple[tuple[str, float], ...]  # the top-k (class, probability), best first; top[0] is the prediction
    index: int  # the predicted class's index (the model's output)
    folder_class: str | None = None  # the class a folder it was found in is named after, if any

    def row(self, top_k: int = 1) -> dict[str, Any]:
        """path, class, probability, then class_2, probability_2, ... up to `top_k`."""
        out: dict[str, Any] = {"path": self.path, "class": self.class_name, "probability": self.probability}
        for rank, (name, probability) in enumerate(self.top[1:top_k], start=2):
            out[f"class_{rank}"] = name
            out[f"probability_{rank}"] = probability
        return out


@dataclass
class Predictions:
    """The labels of a set of images, in input order, and the files that could not be read."""

    classes: tuple[str, ...]
    items: list[Prediction] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable files: "path: reason"
    notes: list[str] = field(default_factory=list)  # what the user should know about how they were labelled

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Prediction:
        return self.items[index]

    def labelled(self) -> list[Prediction]:
        """The predictions of images found in folders named after a class."""
        return [p for p in self.items if p.folder_class is not None]

    def accuracy(self) -> float | None:
        """The share of labelled images predicted as their folder's class; None without labelled images."""
        labelled = self.labelled()
        if not labelled:
            return None
        return sum(p.class_name == p.folder_class for p in labelled) / len(labelled)

    def confusion(self) -> list[list[int]]:
        """counts[true][predicted] over the labelled images, in class order."""
        index = {name: i for i, name in enumerate(self.classes)}
        counts = [[0] * len(self.classes) for _ in self.classes]
        for p in self.labelled():
            assert p.folder_class is not None  # labelled() keeps those found in a class folder
            counts[index[p.folder_class]][p.index] += 1
        return counts


# --- inputs

def image_files(inputs: Iterable[str | Path], classes: Sequence[str] = ()) -> list[tuple[Path, str | None]]:
    """(file, class its folder is named after or None) for every input: files as given, folders walked
    recursively (sorted; hidden files and files that are not images by their ending are left out).

    A file's class is the name of the nearest folder above it, up to the folder given, that names a class.
    """
    from tuner.datasets.images import image_suffixes

    suffixes = image_suffixes()
    known = set(classes)
    found: list[tuple[Path, str | None]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            found.append((path, _folder_class(path, None, known)))
        elif path.is_dir():
            found += [(file, _folder_class(file, path, known)) for file in _walk(path, suffixes)]
        else:
            raise TuneError(f"no such file or folder: {path}")
    return found


def _walk(root: Path, suffixes: frozenset[str]) -> list[Path]:
    files = []
    for directory, subdirs, names in os.walk(root, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        files += [Path(directory) / name for name in sorted(names)
                  if not name.startswith(".") and Path(name).suffix.lower() in suffixes]
    return files


def _folder_class(file: Path, root: Path | None, known: set[str]) -> str | None:
    """The class that the nearest folder above `file` names, up to `root` (None: only the file's own folder). A class
    name with "/" in it (Fashion-MNIST's "T-shirt/top") is named by as many nested folders (T-shirt/top/)."""
    names = [folder.name for folder in file.parents]  # nearest first
    last = next((i for i, folder in enumerate(file.parents) if folder == root), 0)
    parts = max((name.count("/") + 1 for name in known), default=1)
    for i in range(last + 1):
        for j in range(min(i + parts, len(names)), i, -1):
            candidate = "/".join(reversed(names[i:j]))
            if candidate in known:
                return candidate
    return None


def check_images(images: torch.Tensor, info: ModelInfo) -> torch.Tensor:
    """`images` as (N, C, H, W) uint8 of the model's input shape, or one line saying what is wrong."""
    shape = tuple(info.shape)
    if images.dtype != torch.uint8:
        raise TuneError(f"images must be uint8 (0-255), got {images.dtype}: scale floats in [0, 1] with "
                        "(x * 255).round().to(torch.uint8), or pass image files")
    if images.ndim == len(shape):
        images = images.unsqueeze(0)
    if images.ndim != len(shape) + 1:
        raise TuneError(f"images must be a tensor (N, {', '.join(map(str, shape))}) or one image "
                        f"({', '.join(map(str, shape))}), got shape {tuple(images.shape)}")
    if images.shape[1] != shape[0] and len(shape) == 3:
        kind = "grayscale" if shape[0] == 1 else "RGB"
        raise TuneError(f"images have {images.shape[1]} channel(s), the model takes {shape[0]} ({kind}): convert "
                        "them, or pass image files and tune converts them")
    if tuple(images.shape[1:]) != shape:
        size = "x".join(map(str, shape[1:]))
        raise TuneError(f"images are {'x'.join(map(str, images.shape[2:]))}, the model takes {size}: resize them "
                        "(shorter side, then the center crop), or pass image files and tune resizes them")
    return images


# --- inference

def _decode(path: Path, info: ModelInfo) -> torch.Tensor | str:
    from tuner.datasets.images import UnreadableImage

    try:
        return info.prepare(path)
    except UnreadableImage as e:
        return str(e)


def _decoded_batches(files: list[tuple[Path, str | None]], info: ModelInfo, batch_size: int,
                     workers: int) -> Iterator[list[tuple[Path, str | None, torch.Tensor | str]]]:
    """Batches of (file, folder class, image or why unreadable), decoded PREFETCH batches ahead."""
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[list[tuple[Path, str | None, Future[torch.Tensor | str]]]] = deque()
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            pending.append([(f, c, pool.submit(_decode, f, info)) for f, c in chunk])
            if len(pending) > PREFETCH:
                yield [(f, c, future.result()) for f, c, future in pending.popleft()]
        while pending:
            yield [(f, c, future.result()) for f, c, future in pending.popleft()]


@torch.inference_mode()
def logits(network: nn.Module, images: torch.Tensor, device: torch.device | None = None,
           batch_size: int = BATCH_SIZE, *, flip: bool = False) -> torch.Tensor:
    """The network's float32 logits of uint8 `images` (left-right mirrored when `flip`), in batches on `device`
    (default: where it is), on the CPU."""
    device = device or next(network.parameters()).device
    batches = (images[start:start + batch_size].to(device) for start in range(0, len(images), batch_size))
    parts = [network(batch.flip(-1) if flip else batch).float().cpu() for batch in batches]
    return torch.cat(parts) if parts else torch.empty(0, 0)


def probabilities(network: nn.Module, images: torch.Tensor, device: torch.device | None = None,
                  batch_size: int = BATCH_SIZE, tta: str = "none") -> torch.Tensor:
    """The softmax of each image; with `tta="flip"` the mean of the image's and its left-right mirror's."""
    out = torch.softmax(logits(network, images, device, batch_size), dim=1)
    if check_tta(tta) == "flip":
        out = (out + torch.softmax(logits(network, images, device, batch_size, flip=True), dim=1)) / 2
    return out


def check_tta(tta: str) -> str:
    if tta not in TTA:
        raise TuneError(f"unknown tta {tta!r}: use {' or '.join(TTA)}")
    return tta


def trained_with_flips(info: ModelInfo) -> bool:
    """Whether every network of the model was trained on randomly mirrored images (its run config's `flip`)."""
    members = info.members()
    return all(c.flip for c in members) if members else info.config.get("flip") is True


def tta_notes(model: Classifier, tta: str) -> list[str]:
    """The NOTE for flip TTA on a model that never saw mirrored images: allowed, but it may not pay."""
    if tta != "flip" or trained_with_flips(model.info):
        return []
    return ["NOTE: --tta flip on a model trained without flips (flip: false): mirrored images are new to it, "
            "so averaging may not help"]


def accuracy_on(network: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], tta: str = "none") -> float:
    """The share of (images, labels) `batches` that `network` labels right (in full precision, as `predict`)."""
    right = total = 0
    network.eval()
    for images, labels in batches:
        predicted = probabilities(network, images, tta=tta).argmax(1)
        right += int((predicted == labels.cpu()).sum())
        total += len(labels)
    return right / total if total else 0.0


def _labels(model: Classifier, images: torch.Tensor, paths: Sequence[Path | None], folder_classes: Sequence[str | None],
            top_k: int, device: torch.device, batch_size: int, tta: str = "none") -> list[Prediction]:
    k = min(top_k, model.info.num_classes)
    values, indices = probabilities(model.network, images, device, batch_size, tta).topk(k, dim=1)
    classes = model.classes
    out = []
    for path, folder_class, top_p, top_i in zip(paths, folder_classes, values.tolist(), indices.tolist(),
                                               strict=True):
        top = tuple((classes[i], p) for i, p in zip(top_i, top_p, strict=True))
        out.append(Prediction(None if path is None else str(path), top[0][0], top[0][1], top, top_i[0],
                              folder_class))
    return out


def predict(model: Classifier | str | Path, images: torch.Tensor | Iterable[str | Path], *, top_k: int = 1,
            device: str | torch.device | None = None, batch_size: int = BATCH_SIZE, tta: str = "none") -> Predictions:
    """Label `images` with `model` (from `tuner.load_model`, or the path of a run folder or weights file).

    `images` are image files or folders (walked recursively; each image prepared exactly as the training images
    were; unreadable files are left out and listed in `.skipped`) or a uint8 tensor (N, C, H, W) at the model's
    input shape (or a list of (C, H, W) ones). Returns the predictions in input order: class name, probability and the
    `top_k` best classes. `tta="flip"` averages each image's probabilities with its left-right mirror's (for models
    trained with flips; `.notes` says when the model was not).

    >>> model = tuner.load_model("runs/best")
    >>> for p in tuner.predict(model, ["photos/"]): print(p.path, p.class_name, p.probability)
    """
    from tuner.train import resolve_device

    if top_k < 1:
        raise TuneError(f"top_k must be at least 1, got {top_k}")
    check_tta(tta)
    if not isinstance(model, Classifier):
        model = load_model(model)
    torch_device = resolve_device(str(device)) if device is not None else next(model.parameters()).device
    model.eval().to(torch_device)
    result = Predictions(model.classes, notes=tta_notes(model, tta))
    if isinstance(images, list | tuple) and images and all(isinstance(i, torch.Tensor) for i in images):
        images = torch.stack([check_images(i, model.info)[0] for i in images])
    if isinstance(images, torch.Tensor):
        images = check_images(images, model.info)
        result.items = _labels(model, images, [None] * len(images), [None] * len(images), top_k, torch_device,
                               batch_size, tta)
        return result
    if isinstance(images, str | Path):
        images = [images]
    for item in stream(model, image_files(images, model.classes), top_k=top_k, device=torch_device,
                       batch_size=batch_size, tta=tta):
        if isinstance(item, Prediction):
            result.items.append(item)
        else:
            result.skipped.append(item)
    return result


def stream(model: Classifier, files: Sequence[tuple[Path, str | None]], *, top_k: int = 1,
           device: torch.device | None = None, batch_size: int = BATCH_SIZE,
           tta: str = "none") -> Iterator[Prediction | str]:
    """The prediction of each file in order (or, for an unreadable one, why), a batch at a time: memory holds
    PREFETCH + 1 batches of images however many files there are (`tune predict` on a folder larger than memory)."""
    device = device or next(model.parameters()).device
    for batch in _decoded_batches(list(files), model.info, batch_size, os.cpu_count() or 1):
        good = [(f, c, x) for f, c, x in batch if isinstance(x, torch.Tensor)]
        yield from (x for _, _, x in batch if isinstance(x, str))
        if good:
            stacked = torch.stack([x for _, _, x in good])
            yield from _labels(model, stacked, [f for f, _, _ in good], [c for _, c, _ in good], top_k, device,
                               batch_size, tta)

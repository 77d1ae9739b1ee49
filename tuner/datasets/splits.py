"""What every dataset source produces: uint8 image tensors with labels, class names and the preprocessing that
made them, split reproducibly into train, validation and test, and placed where training reads batches from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch

from tuner.errors import TuneError

# Share of a folder dataset's images held out as its test split when it has no test/ folder (stratified, seed 0).
TEST_FRACTION = 0.2
# A CUDA device keeps the dataset in its memory when it takes at most this share of the free memory; else the
# images stay in pinned host memory and each batch is copied over.
DEVICE_SHARE = 0.5


@dataclass(frozen=True)
class Images:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,). `device` is where batches go (`take`); None: where
    the tensors are. A dataset too big for the GPU keeps its tensors in (pinned) host memory."""

    x: torch.Tensor
    y: torch.Tensor
    device: torch.device | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def compute_device(self) -> torch.device:
        return self.device if self.device is not None else self.x.device

    def take(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of `index` (a tensor of positions or a slice) on the compute device."""
        if self.device is None or self.device == self.x.device:
            return self.x[index], self.y[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        x, y = self.x[index], self.y[index]
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def to(self, device: torch.device | str) -> Images:
        return Images(self.x.to(device), self.y.to(device))

    def subset(self, index: torch.Tensor) -> Images:
        return Images(self.x[index], self.y[index])


@dataclass(frozen=True)
class Source:
    """A dataset as a source reads it: its splits as found (val and test may be missing), the class names, how a
    file became an image tensor (`preprocess`), and facts for the study and `tune data` (`info`)."""

    train: Images
    val: Images | None
    test: Images | None
    classes: tuple[str, ...]
    preprocess: dict[str, Any]  # channels, size [H, W], resize rule: what `tune predict` repeats on new files
    info: dict[str, Any] = field(default_factory=dict)  # kind, root, fingerprint, counts, skipped files


@dataclass(frozen=True)
class Splits:
    """The three splits of one dataset: train to fit, val to select and prune on, test to report."""

    train: Images
    val: Images
    test: Images
    mean: tuple[float, ...]  # per-channel mean of the training split, in [0, 1]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    preprocess: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return cast(tuple[int, int, int], tuple(self.train.x.shape[1:]))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def input_info(self) -> dict[str, Any]:
        """What a model trained on these splits takes and gives: recorded with studies, exports and weights."""
        out = {"shape": list(self.shape), "classes": list(self.classes), "preprocess": self.preprocess}
        if self.info.get("fingerprint"):
            out["fingerprint"] = self.info["fingerprint"]
        return out


def split_off(images: Images, fraction: float, seed: int) -> tuple[Images, Images]:
    """(rest, held out): a seeded random `fraction` of the images held out, the same for every call."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    n_held = max(1, round(len(images) * fraction))
    held, rest = order[:n_held].sort().values, order[n_held:].sort().values
    return images.subset(rest), images.subset(held)


def stratified_split_off(images: Images, fraction: float, seed: int) -> tuple[Images, Images]:
    """(rest, held out): `fraction` of each class held out (rounded; at least one image of every class with two
    or more), seeded, so that both parts keep the class balance of the whole."""
    generator = torch.Generator().manual_seed(seed)
    held_parts = []
    for label in torch.unique(images.y):
        members = torch.nonzero(images.y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = min(len(members) - 1, max(1, round(len(members) * fraction)))
        held_parts.append(members[:n_held])
    held = torch.cat(held_parts).sort().values
    mask = torch.ones(len(images), dtype=torch.bool)
    mask[held] = False
    rest = torch.nonzero(mask).flatten()
    return images.subset(rest), images.subset(held)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).float() / 255
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).clamp_min(1e-3).tolist())


def _concat(a: Images, b: Images) -> Images:
    return Images(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]))


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether `nbytes` of images may live on `device`: always off CUDA; on CUDA within DEVICE_SHARE of free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_SHARE * free


def place(images: Images, device: torch.device, on_device: bool) -> Images:
    """`images` on `device`, or kept in host memory with each batch going to `device` (`Images.take` gathers a
    batch into new memory and pins that: pinning the whole dataset too would only cost a copy of it)."""
    return images.to(device) if on_device else Images(images.x, images.y, device)


def check_not_empty(source: Source, parts: dict[str, Images]) -> None:
    """One line when a split came out empty: too few images per class to hold out validation and test images."""
    empty = [name for name, part in parts.items() if len(part) == 0]
    if empty:
        where = source.info.get("root") or source.info.get("name", "the dataset")
        raise TuneError(f"{where} has too few images to hold out {' and '.join(empty)} images ({len(source.train)} "
                        f"in train): add images (at least 3 per class without val/ and test/ folders) or val/ and "
                        "test/ folders of their own")


def make_splits(source: Source, validation: float | str, split_seed: int, device: str | torch.device,
                with_validation: bool = True, stratified: bool = False) -> Splits:
    """Train, validation and test splits of `source` on `device`.

    A missing test split is carved out of train first (TEST_FRACTION, stratified, seed 0, so that it never depends
    on the study's split seed). `validation` is the fraction of train held out when the source has no validation
    split, or "test" to select on the test split. `with_validation=False` trains on train + validation
    (production runs). `stratified` holds out the same share of every class (folders); torchvision's benchmarks
    keep the plain random split they always had, so earlier studies replay exactly.
    """
    device = torch.device(device)
    train, val, test = source.train, source.val, source.test
    if test is None:
        train, test = stratified_split_off(train, TEST_FRACTION, 0)
    if validation == "test":
        val = test
    elif val is None:
        split = stratified_split_off if stratified else split_off
        train, val = split(train, float(validation), split_seed)
    check_not_empty(source, {"training": train, "validation": val, "test": test})
    if not with_validation and val is not test:
        train, val = _concat(train, val), test
    mean, std = channel_stats(train.x)
    distinct = [train, val] if val is test else [train, val, test]
    on_device = fits_on(device, sum(part.x.numel() for part in distinct))
    test_placed = place(test, device, on_device)
    val_placed = test_placed if val is test else place(val, device, on_device)
    return Splits(place(train, device, on_device), val_placed, test_placed, mean, std, source.classes,
                  source.preprocess, source.info)

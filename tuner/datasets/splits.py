"""What every dataset source produces: uint8 image tensors with labels, class names and the preprocessing that
made them, split reproducibly into train, validation and test, and placed where training reads batches from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from tuner.datasets.loader import Gatherer, Placement, choose, stream_order, to_device
from tuner.datasets.store import Store
from tuner.errors import TuneError

# Share of a folder dataset's images held out as its test split when it has no test/ folder (stratified, seed 0).
TEST_FRACTION = 0.2
EXACT_STATS_ELEMENTS = 2**26  # channel statistics of larger training sets are summed a chunk at a time
STATS_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Images:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,). `pixels` holds the images: they themselves, or
    (with `rows`) a larger set they are rows of, such as a store's read-only mapping that every process shares and
    none copies. `device` is where batches go; None: where `pixels` is. `mode` is how batches get there
    (tuner.datasets.loader); `store` is the file `pixels` maps, when it does."""

    pixels: torch.Tensor
    y: torch.Tensor
    device: torch.device | None = None
    rows: torch.Tensor | None = None
    mode: str = "device"
    store: Store | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def x(self) -> torch.Tensor:
        """The images themselves: a copy when they are rows of a larger set (small sets, tests and reports)."""
        return self.pixels if self.rows is None else self.pixels[self.rows]

    @property
    def shape(self) -> tuple[int, int, int]:
        return cast(tuple[int, int, int], tuple(self.pixels.shape[1:]))

    @property
    def nbytes(self) -> int:
        return len(self) * self.pixels[0].numel() if len(self.pixels) else 0

    @property
    def compute_device(self) -> torch.device:
        return self.device if self.device is not None else self.pixels.device

    def take(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of `index` (a tensor of positions or a slice) on the compute device."""
        if self.store is not None:
            self.store.check()  # one fstat: a truncated mapping would kill the process with SIGBUS
        if isinstance(index, torch.Tensor) and index.device != self.pixels.device:
            index = index.to(self.pixels.device)
        rows = index if self.rows is None else self.rows[index]
        x, y = self.pixels[rows], self.y[index]
        if self.compute_device == x.device:
            return x, y
        return x.to(self.compute_device, non_blocking=True), y.to(self.compute_device, non_blocking=True)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor,
                                                                                               torch.Tensor]]:
        """(images, labels) on the compute device, `batch_size` at a time: in a seeded random order with
        `generator` (chunk-shuffled when streamed), else in order."""
        device = self.compute_device
        if self.store is not None:
            self.store.check()
        if generator is None:
            order = None
        elif self.mode == "streamed":
            order = stream_order(len(self), self.pixels[0].numel(), generator)
        else:
            order = torch.randperm(len(self), device=device, generator=generator)
        if self.mode == "device" or (self.mode == "host" and device == self.pixels.device):
            for start in range(0, len(self), batch_size):
                yield self.take(slice(start, start + batch_size) if order is None else order[start:start + batch_size])
            return
        if order is None:
            order = torch.arange(len(self))
        will_need = self.store.will_need if self.store is not None and self.mode == "streamed" else None
        yield from self._gatherer(will_need).batches(order, batch_size, sort=generator is not None)

    def _gatherer(self, will_need: Callable[[int, int], None] | None) -> Gatherer:
        """One per set, living as long as it: its pinned buffers are reused from epoch to epoch."""
        found = self.__dict__.get("_gatherer_made")
        if found is None:
            found = self.__dict__["_gatherer_made"] = Gatherer(self.pixels, self.rows, self.y, self.compute_device,
                                                               will_need)
        return cast(Gatherer, found)

    def to(self, device: torch.device | str) -> Images:
        """The images copied to `device` (a chunk at a time from a mapping), batches drawn there by index."""
        device = torch.device(device)
        if self.rows is None and self.pixels.device == device:
            return Images(self.pixels, self.y.to(device))
        return Images(to_device(self.pixels, self.rows, device), self.y.to(device))

    def subset(self, index: torch.Tensor) -> Images:
        """The images at positions `index`: rows of the same pixels, nothing copied."""
        rows = index if self.rows is None else self.rows[index]
        return Images(self.pixels, self.y[index], self.device, rows, self.mode, self.store)


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
        return self.train.shape

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


def channel_stats(images: Images) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of `images`, in [0, 1]: for sets in memory and stores up to
    EXACT_STATS_ELEMENTS as always (so that earlier studies replay bit for bit); for larger stores from per-channel
    histograms summed a chunk at a time, never a float copy of the whole set."""
    if images.store is None or images.nbytes <= EXACT_STATS_ELEMENTS:
        x = images.x
        flat = x.transpose(0, 1).reshape(x.shape[1], -1).float() / 255
        return tuple(flat.mean(1).tolist()), tuple(flat.std(1).clamp_min(1e-3).tolist())
    channels = images.shape[0]
    counts = torch.zeros((channels, 256), dtype=torch.float64)
    step = max(1, STATS_CHUNK_BYTES // images.pixels[0].numel())
    for start in range(0, len(images), step):
        rows = torch.arange(start, min(start + step, len(images))) if images.rows is None else \
            images.rows[start:start + step]
        part = images.pixels[rows]
        for channel in range(channels):
            counts[channel] += torch.bincount(part[:, channel].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(1)
    mean = (counts * values).sum(1) / total
    variance = (counts * (values - mean[:, None]) ** 2).sum(1) / (total - 1).clamp_min(1)
    return tuple(mean.tolist()), tuple(variance.sqrt().clamp_min(1e-3).tolist())


def _concat(a: Images, b: Images) -> Images:
    if a.pixels is b.pixels:  # rows of one set (a store): concatenated rows, nothing copied
        rows = [torch.arange(len(part)) if part.rows is None else part.rows for part in (a, b)]
        return Images(a.pixels, torch.cat([a.y, b.y]), rows=torch.cat(rows), store=a.store)
    return Images(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]))


def place(images: Images, device: torch.device, placement: Placement) -> Images:
    """`images` as the run holds them: copied to `device` (a chunk at a time), or left in the shared mapping with
    batches gathered from it (tuner.datasets.loader)."""
    if placement.mode == "device" and device.type != "cpu":
        return images.to(device)
    mode = "host" if placement.mode == "device" else placement.mode
    return Images(images.pixels, images.y, device, images.rows, mode, images.store)


def check_not_empty(source: Source, parts: dict[str, Images]) -> None:
    """One line when a split came out empty: too few images per class to hold out validation and test images."""
    empty = [name for name, part in parts.items() if len(part) == 0]
    if empty:
        where = source.info.get("root") or source.info.get("name", "the dataset")
        raise TuneError(f"{where} has too few images to hold out {' and '.join(empty)} images ({len(source.train)} "
                        f"in train): add images (at least 3 per class without val/ and test/ folders) or val/ and "
                        "test/ folders of their own")


def carve(source: Source, validation: float | str, split_seed: int, with_validation: bool = True,
          stratified: bool = False) -> tuple[Images, Images, Images]:
    """(train, validation, test) of `source`, as `make_splits` describes, without touching an image: rows of the
    source's images, or the source's own parts."""
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
    return train, val, test


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
    train, val, test = carve(source, validation, split_seed, with_validation, stratified)
    mean, std = channel_stats(train)
    distinct = [train, val] if val is test else [train, val, test]
    placement = choose(sum(part.nbytes for part in distinct), device)
    test_placed = place(test, device, placement)
    val_placed = test_placed if val is test else place(val, device, placement)
    info = {**source.info, "placement": placement.mode, "placement_line": placement.line()}
    return Splits(place(train, device, placement), val_placed, test_placed, mean, std, source.classes,
                  source.preprocess, info)

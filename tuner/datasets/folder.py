"""Your own images: a folder with one subfolder per class, or split folders (train/, val/, test/) of those.

The first load decodes every image in parallel (tuner.datasets.images says how) and writes the tensors, labels,
class names and file list to one safetensors file under the cache directory; later loads, and every worker
process, read that file. Its key covers each file's path, size and modification time and the image size asked
for, so adding, removing or changing a file, or another image size, rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import PIL
import torch

from tuner.datasets.cache import CACHE_VERSION, cache_path, read_cache, write_cache
from tuner.datasets.images import (
    UnreadableImage,
    decode,
    decode_as_stored,
    image_suffixes,
    is_grayscale,
    open_image,
    preprocess_record,
)
from tuner.datasets.parallel import parallel_map
from tuner.datasets.splits import Images, Source
from tuner.errors import TuneError, one_line
from tuner.spec.refs import BENCHMARKS

A = TypeVar("A")
R = TypeVar("R")

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SPLITS = ("train", "val", "test")
MAX_DEFAULT_SIZE = 224  # the default image size is the median shorter side, at most this
MIN_DEFAULT_SIZE = 8
PARALLEL_FILE_BYTES = 12_288  # mean file size from which a thread per core decodes faster (docs/benchmarks.md)
EXAMPLE = "DIR/cat/1.jpg, DIR/dog/2.jpg"


@dataclass
class Scan:
    """What a walk of the folder found, before any image is decoded."""

    root: Path
    layout: str  # "classes" (ROOT/<class>/...) or "splits" (ROOT/train/<class>/...)
    classes: tuple[str, ...]
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (path relative to root, split, class index)
    stats: list[tuple[str, int, int]] = field(default_factory=list)  # (path, bytes, mtime_ns): the fingerprint
    ignored: Counter[str] = field(default_factory=Counter)  # why -> how many files: hidden, not an image, ...
    split_folders: dict[str, str] = field(default_factory=dict)  # split -> its folder name

    @property
    def fingerprint(self) -> str:
        """A hash of the layout, the class folders and every image file's path, size and modification time:
        changes whenever the data does."""
        content = [self.layout, list(self.classes), self.split_folders, sorted(self.stats)]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and _visible(p))


def check_folder(root: Path) -> Path:
    """`root` (with `~` expanded), or one line saying why it cannot be a dataset folder."""
    if str(root) in BENCHMARKS:
        raise TuneError(f"{root} is a dataset tune knows by name, not a folder of images: tune data reads folders; "
                        f"search it with tune start --dataset {root}")
    root = Path(root).expanduser()
    if not root.exists():
        raise TuneError(f"no such folder: {root} (give a folder with one subfolder per class, like {EXAMPLE}, "
                        f"or a shipped dataset: {', '.join(BENCHMARKS)})")
    if not root.is_dir():
        raise TuneError(f"{root} is a file, not a folder: give the folder that holds one subfolder per class "
                        f"({EXAMPLE})")
    return root.resolve()


def _walk_class(scan: Scan, folder: Path | str, split: str, label: int, suffixes: frozenset[str]) -> None:
    """Every image file below `folder`, in name order. Plain os.scandir, not pathlib: the walk is most of a cached
    load, and it stays about 5 microseconds a file."""
    prefix_length = len(str(scan.root)) + 1
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            if entry.is_file():
                scan.ignored["hidden"] += 1
        elif entry.is_dir():
            _walk_class(scan, entry.path, split, label, suffixes)
        elif os.path.splitext(entry.name)[1].lower() not in suffixes:
            scan.ignored["not an image"] += 1
        else:
            info = entry.stat()
            relative = entry.path[prefix_length:]
            scan.files.append((relative, split, label))
            scan.stats.append((relative, info.st_size, info.st_mtime_ns))


def _count_loose_files(scan: Scan, folder: Path, why: str) -> None:
    scan.ignored[why] += sum(1 for p in folder.iterdir() if p.is_file())


def scan_folder(root: str | Path) -> Scan:
    """Walk `root`: its layout, classes and image files. Raises TuneError for a folder that cannot be a dataset."""
    root = check_folder(Path(root))
    top = _subfolders(root)
    found = {SPLIT_FOLDERS[p.name.lower()]: p for p in top if p.name.lower() in SPLIT_FOLDERS}
    named = {split: found[split] for split in SPLITS if split in found}
    suffixes = image_suffixes()
    if named:
        if "train" not in named:
            raise TuneError(f"{root} has {', '.join(p.name + '/' for p in named.values())} but no train/: add "
                            f"{root}/train/<class>/ with the training images")
        classes = tuple(p.name for p in _subfolders(named["train"]))
        scan = Scan(root, "splits", classes, split_folders={s: p.name for s, p in named.items()})
        for split, folder in named.items():
            in_split = tuple(p.name for p in _subfolders(folder))
            if split != "train" and in_split != classes:
                missing, extra = sorted(set(classes) - set(in_split)), sorted(set(in_split) - set(classes))
                what = "; ".join(filter(None, [f"lacks {', '.join(missing)}" if missing else "",
                                               f"has {', '.join(extra)} that train/ lacks" if extra else ""]))
                raise TuneError(f"{folder} has other classes than {named['train']} ({what}): use the same class "
                                "folders in every split")
            for label, name in enumerate(classes):
                _walk_class(scan, folder / name, split, label, suffixes)
            _count_loose_files(scan, folder, "outside a class folder")
        scan.ignored["outside the split folders"] += sum(1 for p in root.iterdir() if _visible(p)
                                                         and p.name.lower() not in SPLIT_FOLDERS)
    else:
        scan = Scan(root, "classes", tuple(p.name for p in top))
        for label, folder in enumerate(top):
            _walk_class(scan, folder, "train", label, suffixes)
        _count_loose_files(scan, root, "outside a class folder")
    _check_classes(scan)
    return scan


def _check_classes(scan: Scan) -> None:
    where = scan.root / scan.split_folders["train"] if scan.layout == "splits" else scan.root
    if not scan.classes:
        if not any(_visible(p) for p in where.iterdir()):
            raise TuneError(f"{where} is empty: put one subfolder per class in it, with its images ({EXAMPLE})")
        raise TuneError(f"{where} has no class folders: put the images in one subfolder per class ({EXAMPLE})")
    if len(scan.classes) < 2:
        raise TuneError(f"{where} has only one class ({scan.classes[0]}): a classifier needs at least two class "
                        "folders")
    if not scan.files:
        raise TuneError(f"no image files in {scan.root} (looked for {', '.join(sorted(image_suffixes())[:8])}, ...): "
                        f"put the images in one subfolder per class ({EXAMPLE})")


# --- decoding -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    size: tuple[int, int]
    mode: str
    grayscale: bool


def _header(path: Path) -> Header:
    image = open_image(path)
    with image:
        return Header(image.size, image.mode, is_grayscale(image))


def default_image_size(headers: list[Header]) -> int:
    """The median shorter side of the images, within [MIN_DEFAULT_SIZE, MAX_DEFAULT_SIZE]."""
    median = statistics.median_low(min(h.size) for h in headers)
    return max(MIN_DEFAULT_SIZE, min(MAX_DEFAULT_SIZE, median))


def decode_threads(scan: Scan) -> int:
    """A thread per core for files big enough that decoding them is most of the work (Pillow releases the GIL
    while it decodes and resizes); one for small files, whose time is Python's, which threads only contend for."""
    mean_bytes = sum(size for _, size, _ in scan.stats) / max(1, len(scan.stats))
    return (os.cpu_count() or 1) if mean_bytes >= PARALLEL_FILE_BYTES else 1


def _try(function: Callable[[A], R]) -> Callable[[A], R | UnreadableImage]:
    """`function` returning its UnreadableImage instead of raising it, for a parallel map over many files."""
    def attempt(argument: A) -> R | UnreadableImage:
        try:
            return function(argument)
        except UnreadableImage as e:
            return e
    return attempt


def _decode_all(paths: list[Path], channels: list[int], size: int,
                threads: int) -> list[torch.Tensor | UnreadableImage]:
    jobs = [(p, c, size) for p, c in zip(paths, channels, strict=True)]
    return parallel_map(_try(lambda job: decode(*job)), jobs, "decoding images", threads)


def _probe_and_decode(job: tuple[Path, int]) -> tuple[Header, torch.Tensor] | UnreadableImage:
    """One opening of the file: its header, and the image decoded in its own channel count."""
    try:
        size, mode, gray, tensor = decode_as_stored(*job)
    except UnreadableImage as e:
        return e
    return Header(size, mode, gray), tensor


def _decode_images(paths: list[Path], image_size: int | None, threads: int) -> tuple[
        list[Header | UnreadableImage], list[torch.Tensor | UnreadableImage], int, int]:
    """(headers, decoded tensors or errors, channels, size) of every file. With the size known each file is opened
    once; else a first pass reads the headers for the default size. Grayscale files are decoded again in RGB when
    the folder also has color images: exactly what `tune predict` does with them then."""
    decoded: list[torch.Tensor | UnreadableImage] | None
    if image_size is not None:
        probed = parallel_map(_probe_and_decode, [(p, image_size) for p in paths], "decoding images", threads)
        headers = [r[0] if isinstance(r, tuple) else r for r in probed]
        decoded = [r[1] if isinstance(r, tuple) else r for r in probed]
        size = image_size
    else:
        headers = parallel_map(_try(_header), paths, "reading image headers")
        readable = [h for h in headers if isinstance(h, Header)]
        size = default_image_size(readable) if readable else 1
        decoded = None
    good = [h for h in headers if isinstance(h, Header)]
    channels = 1 if all(h.grayscale for h in good) else 3
    if decoded is None:
        decoded = _decode_all(paths, [channels] * len(paths), size, threads)  # unreadable ones fail again, cheaply
    elif channels == 3:
        redo = [i for i, h in enumerate(headers) if isinstance(h, Header) and h.grayscale]
        for i, tensor in zip(redo, _decode_all([paths[i] for i in redo], [3] * len(redo), size, threads), strict=True):
            decoded[i] = tensor
    return headers, decoded, channels, size


def build(scan: Scan, image_size: int | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Decode every image of `scan`: (tensors x, y, split; metadata). Unreadable files are left out and counted."""
    started = time.perf_counter()
    paths = [scan.root / relative for relative, _, _ in scan.files]
    headers, decoded, channels, size = _decode_images(paths, image_size, decode_threads(scan))
    kept = [(i, t) for i, t in enumerate(decoded) if isinstance(t, torch.Tensor)]
    unreadable = [str(t) for t in decoded if not isinstance(t, torch.Tensor)]
    if not kept:
        raise TuneError(f"no readable image in {scan.root}: all {len(paths)} image files failed to decode (first: "
                        f"{unreadable[0]}): check that they are images")
    x = torch.empty((len(kept), channels, size, size), dtype=torch.uint8)
    for row, (_, tensor) in enumerate(kept):
        x[row] = tensor
    split_codes = {name: code for code, name in enumerate(SPLITS)}
    y = torch.tensor([scan.files[i][2] for i, _ in kept], dtype=torch.int64)
    split = torch.tensor([split_codes[scan.files[i][1]] for i, _ in kept], dtype=torch.int8)
    good_headers = [cast(Header, headers[i]) for i, _ in kept]  # a file that decoded had its header read
    sizes = [h.size for h in good_headers]
    meta = {
        "version": CACHE_VERSION,
        "pillow": PIL.__version__,  # another Pillow may decode (or resize) a file to other pixels
        "root": str(scan.root),
        "layout": scan.layout,
        "split_folders": scan.split_folders,
        "classes": list(scan.classes),
        "fingerprint": scan.fingerprint,
        "image_size": size,
        "requested_size": image_size,
        "channels": channels,
        "unreadable": unreadable,
        "ignored": dict(scan.ignored),
        "modes": dict(Counter(h.mode for h in good_headers)),
        "sizes": {"min": [min(w for w, _ in sizes), min(h for _, h in sizes)],
                  "median": [statistics.median_low(w for w, _ in sizes), statistics.median_low(h for _, h in sizes)],
                  "max": [max(w for w, _ in sizes), max(h for _, h in sizes)]},
        "decode_seconds": round(time.perf_counter() - started, 3),
    }
    return {"x": x, "y": y, "split": split}, meta


def cached(root: str | Path, image_size: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
    """(tensors, metadata, whether the cache was fresh) of the folder, decoding it if the cache is missing or stale.
    A cache that cannot be written (read-only disk) costs the next load a decode, nothing else."""
    from safetensors import SafetensorError

    scan = scan_folder(root)
    path = cache_path(scan.root, image_size)
    found = read_cache(path, scan.fingerprint)
    if found is not None:
        tensors, meta = found
        return tensors, {**meta, "cache": str(path)}, True
    tensors, meta = build(scan, image_size)
    try:
        write_cache(path, tensors, meta)
    except (OSError, SafetensorError) as e:
        reason = getattr(e, "strerror", None) or one_line(e, 160)
        print(f"warning: cannot write the image cache {path} ({reason}); the next load decodes again",
              file=sys.stderr)
    return tensors, {**meta, "cache": str(path)}, False


def load(root: str | Path, image_size: int | None = None) -> Source:
    """The folder as a Source: its splits as found (val and test None when the folder has none)."""
    return as_source(*cached(root, image_size))


def as_source(tensors: dict[str, torch.Tensor], meta: dict[str, Any], fresh: bool) -> Source:
    """The cached tensors and metadata of a folder as a Source, checked: every class has training images."""
    parts: dict[str, Images | None] = {}
    for code, name in enumerate(SPLITS):
        members = torch.nonzero(tensors["split"] == code).flatten()
        parts[name] = Images(tensors["x"][members], tensors["y"][members]) if len(members) else None
    if parts["train"] is None:
        raise TuneError(f"no readable image in {meta['root']}/train: add the training images")
    _check_train_classes(meta, parts["train"])
    info = {key: meta[key] for key in ("root", "layout", "fingerprint", "image_size", "channels", "unreadable",
                                       "ignored", "cache")}
    info.update(kind="folder", cache_fresh=fresh)
    preprocess = preprocess_record(meta["channels"], (meta["image_size"], meta["image_size"]))
    return Source(parts["train"], parts["val"], parts["test"], tuple(meta["classes"]), preprocess, info)


def _check_train_classes(meta: dict[str, Any], train: Images) -> None:
    counts = torch.bincount(train.y, minlength=len(meta["classes"]))
    empty = [name for name, count in zip(meta["classes"], counts.tolist(), strict=True) if count == 0]
    if empty:
        raise TuneError(f"class folder(s) {', '.join(empty)} in {meta['root']} have no readable training image: "
                        "add images or remove the folder")


def unreadable_warning(info: dict[str, Any]) -> str | None:
    """One line for the images a load skipped, naming how many and the first; None when none was."""
    skipped = info.get("unreadable") or []
    if not skipped:
        return None
    return (f"warning: skipped {len(skipped)} unreadable image(s) in {info.get('root')}, first: {skipped[0]}")

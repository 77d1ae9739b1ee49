"""Your own images: a folder with one subfolder per class, or split folders (train/, val/, test/) of those.

The first load decodes every image in parallel (tuner.datasets.images says how), a chunk at a time, into one store
file under the cache directory (tuner.datasets.store: fixed-shape uint8 rows, labels, class names and metadata);
later loads, and every worker process, map that file read-only and share it. Its key covers each file's path, size
and modification time and the image size asked for, so adding, removing or changing a file, or another image size,
rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuner.datasets.building import SPLITS, build
from tuner.datasets.cache import cache_path, read_cache
from tuner.datasets.images import image_suffixes, preprocess_record
from tuner.datasets.splits import Images, Source
from tuner.datasets.store import Store, building
from tuner.errors import TuneError
from tuner.spec.refs import BENCHMARKS

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
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


def cached(root: str | Path, image_size: int | None = None) -> tuple[Store, bool]:
    """(the folder's store, whether it was fresh), decoding the folder into it if it is missing or stale. One
    process builds it at a time; a second one waits and reads what the first built."""
    scan = scan_folder(root)
    path = cache_path(scan.root, image_size)
    found = read_cache(path, scan.fingerprint)
    if found is not None:
        return found, True
    with building(path):
        found = read_cache(path, scan.fingerprint)  # built by another process meanwhile
        if found is not None:
            return found, True
        return build(scan, image_size, path), False


def load(root: str | Path, image_size: int | None = None) -> Source:
    """The folder as a Source: its splits as found (val and test None when the folder has none)."""
    return as_source(*cached(root, image_size))


def as_source(store: Store, fresh: bool) -> Source:
    """A folder's store as a Source, checked: every class has training images. Its splits are rows of the store's
    mapping: nothing is copied."""
    meta = store.meta
    parts: dict[str, Images | None] = {}
    for code, name in enumerate(SPLITS):
        members = torch.nonzero(store.split == code).flatten()
        parts[name] = Images(store.x, store.y[members], rows=members, store=store) if len(members) else None
    if parts["train"] is None:
        raise TuneError(f"no readable image in {meta['root']}/train: add the training images")
    _check_train_classes(meta, parts["train"])
    info = {key: meta[key] for key in ("root", "layout", "fingerprint", "image_size", "channels", "unreadable",
                                       "ignored")}
    info.update(kind="folder", cache_fresh=fresh, cache=str(store.path) if store.path else None)
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

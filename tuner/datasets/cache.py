"""The decode cache of image folders: one store (tuner.datasets.store) per folder and image size, holding the
decoded uint8 images with their labels and metadata, keyed on every file's path, size and mtime (the folder's
fingerprint), the image size, the classes (in the fingerprint) and Pillow's version."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import PIL

from tuner.datasets.store import SUFFIX, Store, open_store

CACHE_VERSION = 2  # bump when the cache's content or the decoding rule changes
CACHE_ENV = "TUNE_CACHE_DIR"


def cache_dir() -> Path:
    """$TUNE_CACHE_DIR, else ~/.cache/tune/folders ($XDG_CACHE_HOME/tune/folders)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tune" / "folders"


def cache_path(root: Path, image_size: int | None) -> Path:
    """One cache file per folder and image size: `<folder name>-<hash of path and size>.images`."""
    digest = hashlib.sha256(f"{root}\0{image_size}".encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.name)[:40] or "folder"
    return cache_dir() / f"{safe}-{digest}{SUFFIX}"


def read_cache(path: Path, fingerprint: str) -> Store | None:
    """The store at `path`, mapped, if it is there, whole, and made from the same files by this decoder."""
    store = open_store(path)
    if store is None:
        return None
    meta = store.meta
    if (meta.get("version"), meta.get("pillow"), meta.get("fingerprint")) != (CACHE_VERSION, PIL.__version__,
                                                                              fingerprint):
        return None
    return store

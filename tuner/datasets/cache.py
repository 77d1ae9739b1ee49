"""The decode cache of image folders: one safetensors file per folder and image size, holding the decoded uint8
images with their labels and metadata, keyed on every file's path, size and mtime (the folder's fingerprint)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import PIL
import torch

CACHE_VERSION = 1  # bump when the cache's content or the decoding rule changes
CACHE_ENV = "TUNE_CACHE_DIR"


def cache_dir() -> Path:
    """$TUNE_CACHE_DIR, else ~/.cache/tune/folders ($XDG_CACHE_HOME/tune/folders)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tune" / "folders"



def cache_path(root: Path, image_size: int | None) -> Path:
    """One cache file per folder and image size: `<folder name>-<hash of path and size>.safetensors`."""
    digest = hashlib.sha256(f"{root}\0{image_size}".encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.name)[:40] or "folder"
    return cache_dir() / f"{safe}-{digest}.safetensors"


def read_cache(path: Path, fingerprint: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The cached tensors and metadata, if the file is there, whole, and made from the same files."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["meta"])
        stale = (meta.get("version"), meta.get("pillow"), meta.get("fingerprint"))
        if stale != (CACHE_VERSION, PIL.__version__, fingerprint):
            return None
        return load_file(str(path)), meta
    except (SafetensorError, OSError, KeyError, ValueError):
        return None  # torn or foreign: rebuild it


def write_cache(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Written whole or not at all: workers starting meanwhile read the old file or the new one, and an interrupted
    write leaves no partial file behind."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata={"meta": json.dumps(meta)})
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)

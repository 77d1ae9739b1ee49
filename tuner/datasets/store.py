"""The image store: decoded images of one dataset in one file of fixed-shape uint8 rows, written in chunks and read
memory-mapped by every process (the OS page cache holds the one copy that all of them share).

Layout: a 4096-byte header (magic, then JSON: the shape and where each part starts), the images as uint8
(N, C, H, W) rows from offset 4096, the labels (int64, N), a split code per image (int8, N), and the metadata
(JSON). A file is built under a temporary name, preallocated to its full size before the first image is decoded
(so a disk too small says so at once) and renamed into place when whole: readers see the old file or the new one,
never a part. One process builds a given store at a time (a lock beside it); others wait, then read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import sys
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from tuner.errors import TuneError

MAGIC = b"TUNEIMG\x01"
HEADER_BYTES = 4096
SUFFIX = ".images"
GB = 1e9


def _gb(nbytes: float) -> str:
    return f"{nbytes / GB:.2f} GB"


def file_bytes(rows: int, row_shape: tuple[int, ...], meta_bytes: int = 0) -> int:
    """The size of a store of `rows` images of `row_shape`."""
    return HEADER_BYTES + rows * (int(np.prod(row_shape)) + 9) + meta_bytes


@dataclass
class Store:
    """An opened store: `x` (N, C, H, W) uint8, read-only and memory-mapped (in memory when it could not be
    written), `y` int64 labels, `split` int8 codes, `meta`; `path` None for an in-memory one."""

    x: torch.Tensor
    y: torch.Tensor
    split: torch.Tensor
    meta: dict[str, Any]
    path: Path | None = None
    identity: tuple[int, int, int] = (0, 0, 0)  # (inode, size, mtime_ns) of the file as it was opened
    _fd: int | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return self.x.numel()

    def check(self) -> None:
        """One line if the file was truncated or rewritten in place since it was opened (reading a truncated
        mapping would kill the process). A file replaced by a new one is fine: this process keeps the old one."""
        if self.path is None:
            return
        try:
            info = os.stat(self._fd if self._fd is not None else self.path)
        except OSError as e:
            raise TuneError(f"the image cache {self.path} cannot be read any more ({e.strerror}): run again, "
                            "and tune rebuilds it") from None
        if (info.st_ino, info.st_size, info.st_mtime_ns) != self.identity:
            raise TuneError(f"the image cache {self.path} was changed or truncated while this process read it "
                            f"({info.st_size:,} bytes, was {self.identity[1]:,}): do not edit cache files; run "
                            "again, and tune rebuilds it")

    def will_need(self, first: int, count: int) -> None:
        """Ask the OS to read rows [first, first + count) ahead (no effect on an in-memory store)."""
        if self._fd is None or count <= 0 or not hasattr(os, "posix_fadvise"):
            return
        row = self.x[0].numel()
        os.posix_fadvise(self._fd, HEADER_BYTES + first * row, count * row, os.POSIX_FADV_WILLNEED)


def _read_header(path: Path) -> dict[str, Any] | None:
    with path.open("rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:8] != MAGIC:
        return None
    length = int.from_bytes(head[8:16], "little")
    header: dict[str, Any] = json.loads(head[16:16 + length])
    return header


def open_store(path: Path) -> Store | None:
    """The store at `path` mapped read-only, or None when it is missing, torn or not a store."""
    if not path.is_file():
        return None
    try:
        header = _read_header(path)
        if header is None:
            return None
        shape = tuple(header["shape"])
        count, row = shape[0], int(np.prod(shape[1:]))
        meta_at = HEADER_BYTES + count * (row + 9)
        fd = os.open(path, os.O_RDONLY)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        info = os.fstat(fd)
        if info.st_size != meta_at + header["meta_bytes"]:
            os.close(fd)
            return None
        labels = os.pread(fd, count * 9, HEADER_BYTES + count * row)
        meta = json.loads(os.pread(fd, header["meta_bytes"], meta_at))
        array = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER_BYTES, shape=shape) if count else \
            np.zeros(shape, np.uint8)
    except (OSError, ValueError, KeyError, TypeError):
        os.close(fd)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a read-only mapping: torch warns that it is not writable; nothing writes
        x = torch.from_numpy(array)
    y = torch.from_numpy(np.frombuffer(labels, np.int64, count, 0).copy())
    split = torch.from_numpy(np.frombuffer(labels, np.int8, count, count * 8).copy())
    opened = Store(x, y, split, meta, path, (info.st_ino, info.st_size, info.st_mtime_ns), fd)
    weakref.finalize(opened, os.close, fd)  # the descriptor lives as long as the store
    return opened


def in_memory(x: torch.Tensor, y: torch.Tensor, split: torch.Tensor, meta: dict[str, Any]) -> Store:
    return Store(x, y, split, meta)


# --- writing


def check_room(directory: Path, nbytes: int) -> None:
    """One line, before any decoding, when the disk under `directory` has less than `nbytes` free."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < nbytes:
        raise TuneError(f"the image cache needs {_gb(nbytes)} in {directory}, which has {_gb(free)} free: free "
                        f"some space there, or point TUNE_CACHE_DIR at a disk with room")


class Writer:
    """A store being built: rows are written as they come (`put`), at most a chunk in memory; `finish` adds the
    labels and metadata and renames the file into place. Without a writable file the rows go to memory (as
    before there was a store), and `finish` says so in one warning."""

    def __init__(self, path: Path, capacity: int, row_shape: tuple[int, ...]) -> None:
        self.path, self.row_shape, self.count = path, row_shape, 0
        self.row_bytes = int(np.prod(row_shape))
        self.partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        self.memory: np.ndarray | None = None
        self.fd: int | None = None
        self.failure = ""
        try:
            check_room(path.parent, file_bytes(capacity, row_shape) + 1_000_000)
            self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            if hasattr(os, "posix_fallocate") and capacity:
                os.posix_fallocate(self.fd, 0, HEADER_BYTES + capacity * self.row_bytes)
        except OSError as e:
            self._abandon(e)
            self.memory = np.empty((capacity, *row_shape), np.uint8)

    def _abandon(self, error: OSError) -> None:
        self.failure = error.strerror or str(error)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.partial.unlink(missing_ok=True)

    def put(self, rows: np.ndarray) -> None:
        """Append `rows` (n, *row_shape) uint8."""
        if self.memory is not None:
            self.memory[self.count:self.count + len(rows)] = rows
        elif self.fd is not None:
            data = memoryview(cast(Any, np.ascontiguousarray(rows))).cast("B")
            try:
                written = os.pwrite(self.fd, data, HEADER_BYTES + self.count * self.row_bytes)
            except OSError as e:
                written, self.failure = -1, e.strerror or str(e)
            if written != len(data):
                self.close()
                raise TuneError(f"cannot write the image cache {self.path} ({self.failure or 'short write'}): free "
                                f"space in {self.path.parent} or point TUNE_CACHE_DIR elsewhere, and run again")
        self.count += len(rows)

    def finish(self, y: np.ndarray, split: np.ndarray, meta: dict[str, Any]) -> Store:
        """The whole store, opened as readers open it."""
        labels = np.ascontiguousarray(y, np.int64).tobytes() + np.ascontiguousarray(split, np.int8).tobytes()
        text = json.dumps(meta).encode()
        header = json.dumps({"shape": [self.count, *self.row_shape], "meta_bytes": len(text)}).encode()
        if self.fd is not None:
            try:
                end = HEADER_BYTES + self.count * self.row_bytes
                os.pwrite(self.fd, labels + text, end)
                os.ftruncate(self.fd, end + len(labels) + len(text))
                os.pwrite(self.fd, MAGIC + len(header).to_bytes(8, "little") + header, 0)
                os.close(self.fd)
                self.fd = None
                self.partial.replace(self.path)
                opened = open_store(self.path)
                if opened is not None:
                    return opened
                self.failure = "it did not read back whole"
            except OSError as e:
                self._abandon(e)
        print(f"warning: cannot write the image cache {self.path} ({self.failure}); the next load decodes again",
              file=sys.stderr)
        memory = self.memory if self.memory is not None else self._read_back()
        return in_memory(torch.from_numpy(memory[:self.count]), torch.from_numpy(y.astype(np.int64)),
                         torch.from_numpy(split.astype(np.int8)), meta)

    def _read_back(self) -> np.ndarray:
        raise TuneError(f"the image cache {self.path} could not be finished ({self.failure}): free space in "
                        f"{self.path.parent} or point TUNE_CACHE_DIR elsewhere, and run again")

    def close(self) -> None:
        """Leave nothing behind when the build failed or was interrupted."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.partial.unlink(missing_ok=True)


@contextlib.contextmanager
def building(path: Path) -> Iterator[None]:
    """Hold the lock that lets one process at a time build the store at `path`; a second one says so in one line
    and waits, and then finds the store built (the caller reads it again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield  # a read-only cache folder: nothing is written, so there is nothing to serialize
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another tune process is building the image cache {path}; waiting for it", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in path.parent.glob(glob.escape(path.name) + ".*.partial"):  # a killed builder's: no one else builds
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)

"""Decoding an image folder into its store, in bounded memory: a first pass reads every file's header (size, mode,
grayscale: the image size by default and the channel count follow from them), then the images are decoded in
parallel a chunk at a time and each chunk is written to the store (tuner.datasets.store) before the next one is
decoded. Memory stays about a chunk of decoded images however large the folder."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import PIL

from tuner.datasets.cache import CACHE_VERSION
from tuner.datasets.images import UnreadableImage, decode, is_grayscale, open_image
from tuner.datasets.parallel import _progress, parallel_map
from tuner.datasets.store import Store, Writer
from tuner.errors import TuneError

A = TypeVar("A")
R = TypeVar("R")

SPLITS = ("train", "val", "test")
MAX_DEFAULT_SIZE = 224  # the default image size is the median shorter side, at most this
MIN_DEFAULT_SIZE = 8
PARALLEL_FILE_BYTES = 12_288  # mean file size from which a thread per core decodes faster (docs/benchmarks.md)
CHUNK_BYTES = 64 * 2**20  # decoded images held at once while building a store


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


def decode_threads(scan: Any) -> int:
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


def _decode_into(writer: Writer, paths: list[Path], channels: int, size: int,
                 threads: int) -> tuple[list[int], list[str]]:
    """Decode `paths` chunk by chunk into `writer`: (positions of the files kept, why each other one was not)."""
    chunk = max(16, CHUNK_BYTES // max(1, channels * size * size))
    kept: list[int] = []
    unreadable: list[str] = []
    def decode_one(path: Path) -> Any:
        return decode(path, channels, size)

    attempt = _try(decode_one)
    with _progress(len(paths), "decoding images") as progress, ThreadPoolExecutor(threads) as pool:
        task = progress.add_task("decoding images", total=len(paths))
        for start in range(0, len(paths), chunk):
            part = paths[start:start + chunk]
            decoded = list(pool.map(attempt, part)) if threads > 1 else [attempt(p) for p in part]
            good = [(start + i, t) for i, t in enumerate(decoded) if not isinstance(t, UnreadableImage)]
            unreadable += [str(t) for t in decoded if isinstance(t, UnreadableImage)]
            if good:
                rows = np.empty((len(good), channels, size, size), np.uint8)
                for row, (_, tensor) in enumerate(good):
                    rows[row] = tensor.numpy()
                writer.put(rows)
                kept += [i for i, _ in good]
            progress.advance(task, len(part))
    return kept, unreadable


def build(scan: Any, image_size: int | None, path: Path) -> Store:
    """Decode every image of `scan` (a tuner.datasets.folder.Scan) into a store at `path` (in memory if it cannot
    be written). Unreadable files are left out and counted."""
    started = time.perf_counter()
    paths = [scan.root / relative for relative, _, _ in scan.files]
    threads = decode_threads(scan)
    headers = parallel_map(_try(_header), paths, "reading image headers", threads)
    good_headers = [h for h in headers if isinstance(h, Header)]
    if not good_headers:
        first = next(str(h) for h in headers if isinstance(h, UnreadableImage))
        raise TuneError(f"no readable image in {scan.root}: all {len(paths)} image files failed to decode (first: "
                        f"{first}): check that they are images")
    size = image_size if image_size is not None else default_image_size(good_headers)
    channels = 1 if all(h.grayscale for h in good_headers) else 3
    readable = [i for i, h in enumerate(headers) if isinstance(h, Header)]
    writer = Writer(path, len(readable), (channels, size, size))
    try:
        kept_of_readable, unreadable = _decode_into(writer, [paths[i] for i in readable], channels, size, threads)
        kept = [readable[i] for i in kept_of_readable]
        unreadable = [str(h) for h in headers if isinstance(h, UnreadableImage)] + unreadable
        if not kept:
            raise TuneError(f"no readable image in {scan.root}: all {len(paths)} image files failed to decode "
                            f"(first: {unreadable[0]}): check that they are images")
        split_codes = {name: code for code, name in enumerate(SPLITS)}
        y = np.array([scan.files[i][2] for i in kept], np.int64)
        split = np.array([split_codes[scan.files[i][1]] for i in kept], np.int8)
        meta = _meta(scan, [headers[i] for i in kept], size, image_size, channels, unreadable)
        meta["decode_seconds"] = round(time.perf_counter() - started, 3)
        return writer.finish(y, split, meta)
    finally:
        writer.close()


def _meta(scan: Any, headers: list[Any], size: int, image_size: int | None, channels: int,
          unreadable: list[str]) -> dict[str, Any]:
    sizes = [h.size for h in headers]
    return {
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
        "modes": dict(Counter(h.mode for h in headers)),
        "sizes": {"min": [min(w for w, _ in sizes), min(h for _, h in sizes)],
                  "median": [statistics.median_low(w for w, _ in sizes), statistics.median_low(h for _, h in sizes)],
                  "max": [max(w for w, _ in sizes), max(h for _, h in sizes)]},
    }

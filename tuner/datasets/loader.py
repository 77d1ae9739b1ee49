"""Where a run's images live and how its batches reach the model: one of three ways, chosen per run and said in
one line with the reason (`choose`).

- "device": the images are copied to the GPU once, in chunks, and batches are drawn there by index (as always).
  On the CPU, the CPU is the device: batches are drawn straight from the store's shared mapping, no copy.
- "host": the images stay in the store's mapping (one physical copy in the OS page cache, shared by every
  process); each batch is gathered from it (sorted rows) into a reusable pinned buffer on a background thread and
  copied to the GPU with `non_blocking` on a side stream while the previous batch trains.
- "streamed": the images do not fit in memory: each epoch visits chunks of consecutive rows in a random order and
  shuffles the images of a window of chunks, asking the OS to read the next window ahead, so the disk reads long
  runs while training still sees well-mixed batches.

`TUNE_DATA_PLACEMENT=device|host|streamed` forces one (benchmarks, tests).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

PLACEMENT_ENV = "TUNE_DATA_PLACEMENT"
MODES = ("device", "host", "streamed")
DEVICE_SHARE = 0.5  # a GPU keeps the images when they take at most this share of its free memory
HOST_SHARE = 0.5  # the host keeps them in memory when they take at most this share of the memory left
CHUNK_BYTES = 4 * 2**20  # streamed: consecutive rows read together
WINDOW_BYTES = 128 * 2**20  # streamed: the rows shuffled together (and read ahead)
COPY_BYTES = 64 * 2**20  # the chunks in which images go to the GPU
PREFETCH = 3  # batches gathered ahead of the one training


@dataclass(frozen=True)
class Placement:
    mode: str  # "device", "host" or "streamed"
    reason: str

    def line(self) -> str:
        where = {"device": "on the device", "host": "on the host, batches gathered from the shared mapping",
                 "streamed": "streamed from disk, chunk-shuffled with read-ahead"}[self.mode]
        return f"data: {where} ({self.reason})"


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB"


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v1 or v2), None without one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidates = [Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes"]
        elif controllers == "":
            candidates = [Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max",
                          Path("/sys/fs/cgroup/unified") / path.lstrip("/") / "memory.max"]
        else:
            continue
        for candidate in candidates:
            try:
                text = candidate.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 2**60:
                return int(text)
    return None


def memory_room() -> tuple[int, str]:
    """(bytes of memory this process may fill, where that figure comes from): the smaller of the memory the
    kernel calls available and the cgroup's limit."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    limit = _cgroup_limit()
    if limit is not None and limit < available:
        return limit, f"the cgroup's memory limit, {_gb(limit)}"
    return available, f"{_gb(available)} of memory available"


def choose(nbytes: int, device: torch.device) -> Placement:
    """How a run on `device` holds `nbytes` of images (TUNE_DATA_PLACEMENT forces a way)."""
    forced = os.environ.get(PLACEMENT_ENV, "")
    if forced:
        if forced not in MODES:
            from tuner.errors import TuneError

            raise TuneError(f"{PLACEMENT_ENV}={forced}: use one of {', '.join(MODES)} (or unset it)")
        if forced == "device" and device.type == "cpu":
            forced = "host"
        return Placement(forced, f"{_gb(nbytes)} of images; {PLACEMENT_ENV}={forced}")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes <= DEVICE_SHARE * free:
            return Placement("device", f"{_gb(nbytes)} of images fit in {DEVICE_SHARE:.0%} of the GPU's "
                                       f"{_gb(free)} free")
    elif device.type != "cpu":
        return Placement("device", f"{_gb(nbytes)} of images on {device.type}")
    room, why = memory_room()
    if nbytes <= HOST_SHARE * room:
        gpu = " but not on the GPU" if device.type == "cuda" else ""
        return Placement("host", f"{_gb(nbytes)} of images fit in {HOST_SHARE:.0%} of {why}{gpu}")
    return Placement("streamed", f"{_gb(nbytes)} of images exceed {HOST_SHARE:.0%} of {why}")


def to_device(pixels: torch.Tensor, rows: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The images (`pixels`, or its `rows`) copied to `device` a chunk at a time: never a whole copy on the host."""
    count = len(pixels) if rows is None else len(rows)
    out = torch.empty((count, *pixels.shape[1:]), dtype=pixels.dtype, device=device)
    step = max(1, COPY_BYTES // max(1, pixels[0].numel() if len(pixels) else 1))
    for start in range(0, count, step):
        part = pixels[start:start + step] if rows is None else pixels[rows[start:start + step]]
        out[start:start + len(part)].copy_(part)
    return out


def stream_order(count: int, row_bytes: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of range(count) for one streamed epoch: chunks of consecutive positions in a random order,
    the positions of each window of chunks shuffled together."""
    chunk = max(1, CHUNK_BYTES // max(1, row_bytes))
    window = max(1, WINDOW_BYTES // (chunk * max(1, row_bytes)))
    chunks = torch.randperm(-(-count // chunk), generator=generator, device=generator.device).cpu()
    starts = chunks * chunk
    parts = []
    for first in range(0, len(starts), window):
        positions = torch.cat([torch.arange(s, min(s + chunk, count)) for s in starts[first:first + window].tolist()])
        mix = torch.randperm(len(positions), generator=generator, device=generator.device).cpu()
        parts.append(positions[mix])
    return torch.cat(parts)


class Gatherer:
    """Batches of `pixels` (its `rows`, when set) and labels `y`, gathered on a background thread PREFETCH batches
    ahead into reusable (pinned, on CUDA) buffers, then sent to `device` on a side stream."""

    def __init__(self, pixels: torch.Tensor, rows: torch.Tensor | None, y: torch.Tensor, device: torch.device,
                 will_need: Callable[[int, int], None] | None = None) -> None:
        self.pixels, self.rows, self.y, self.device, self.will_need = pixels, rows, y, device, will_need
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.buffers: list[tuple[torch.Tensor, torch.Tensor, torch.cuda.Event | None]] = []
        self.batch_size = 0

    def _ring(self, batch_size: int) -> None:
        if batch_size == self.batch_size:
            return
        self.batch_size, shape = batch_size, (batch_size, *self.pixels.shape[1:])
        self.buffers = [(torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda),
                         torch.empty(batch_size, dtype=torch.int64, pin_memory=self.cuda),
                         torch.cuda.Event() if self.cuda else None) for _ in range(PREFETCH + 2)]

    def _gather(self, number: int, rows: torch.Tensor,
                index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.cuda.Event | None]:
        """Batch `number`: new tensors on the CPU; on CUDA, the next pinned buffer of the ring, once the copy
        that last read it is done."""
        if not self.cuda:
            return self.pixels.index_select(0, rows), self.y.index_select(0, index), None
        x, y, event = self.buffers[number % len(self.buffers)]
        assert event is not None
        event.synchronize()
        n = len(index)
        torch.index_select(self.pixels, 0, rows, out=x[:n])
        torch.index_select(self.y, 0, index, out=y[:n])
        return x[:n], y[:n], event

    def _produce(self, order: torch.Tensor, batch_size: int, sort: bool, out: queue.Queue[object],
                 stop: threading.Event) -> None:
        try:
            window = max(batch_size, WINDOW_BYTES // max(1, self.pixels[0].numel()))
            for number, start in enumerate(range(0, len(order), batch_size)):
                if self.will_need is not None and start % window < batch_size:
                    ahead = order[start + window:start + 2 * window]
                    if self.rows is not None and len(ahead):
                        ahead = self.rows[ahead]
                    for first in torch.unique(ahead // 64).tolist():
                        self.will_need(first * 64, 64)
                index = order[start:start + batch_size]
                if sort:
                    index = index.sort().values
                rows = index if self.rows is None else self.rows[index]
                if not _hand_over(out, self._gather(number, rows, index), stop):
                    return
            _hand_over(out, None, stop)
        except BaseException as e:  # handed to the training thread, which raises it
            _hand_over(out, e, stop)

    def batches(self, order: torch.Tensor, batch_size: int, sort: bool) -> Iterator[tuple[torch.Tensor,
                                                                                        torch.Tensor]]:
        """(images, labels) on the device for each `batch_size` positions of `order`."""
        if self.cuda:
            self._ring(batch_size)
        out: queue.Queue[object] = queue.Queue(PREFETCH)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(order.cpu(), batch_size, sort, out, stop), daemon=True)
        worker.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                x, y, event = cast(tuple[torch.Tensor, torch.Tensor, 'torch.cuda.Event | None'], item)
                if not self.cuda:
                    yield x, y
                    continue
                assert self.stream is not None and event is not None
                with torch.cuda.stream(self.stream):
                    x_device, y_device = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    event.record(self.stream)
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(self.stream)
                x_device.record_stream(current)
                y_device.record_stream(current)
                yield x_device, y_device
        finally:
            stop.set()
            worker.join()


def _hand_over(out: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put `item` on `out` unless the consumer stopped first (a full queue then never empties): whether it went."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False

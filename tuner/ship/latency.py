"""How fast and how big a model is where it will be served: latency percentiles of one batch on ONNX Runtime (the
file `tune convert` writes) or torch, its parameter count and its ONNX file size, with the environment they were
measured in. Search (before a trial trains), `tune export` (again, with more runs) and `tune train` / `tune
convert` (the production model) all measure through `measure`.

Latency depends on the graph and the input shape, not on the weights (dense fp32), so an untrained model measures
as its trained self. Timing runs in the calling process with the runtime's own thread count (`threads`), after a
warm-up; percentiles of hundreds of timed calls are robust to a few slow calls on a shared machine, not to a
machine that is loaded throughout: the environment fingerprint says where a figure holds, and `load` records the
load average while it was taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner.errors import counted
from tuner.spec.constraints import STATS

SEARCH_RUNS = 200  # timed calls per architecture during a search
EXPORT_RUNS = 1000  # timed calls when an export or a production model is proven
WARMUP_RUNS = 20
MAX_SECONDS = 20.0  # a slow model stops timing after this long (with at least MIN_RUNS calls)
MIN_RUNS = 30


@dataclass(frozen=True)
class Measurement:
    """One model measured: latency of one batch in milliseconds at each percentile of `runs` timed calls."""

    runtime: str  # onnxruntime or torch
    batch: int
    threads: int
    runs: int
    latency_ms: dict[str, float]  # p50, p90, p95, p99, and mean
    params: int
    size_bytes: int | None  # the ONNX file (None when timed on torch without the onnx extra)
    environment: dict[str, Any] = field(default_factory=dict)  # cpu, cores, load, versions
    fingerprint: str = ""  # of the environment, load aside: figures with the same fingerprint compare
    canary_ms: float | None = None  # p50 of a fixed reference network timed just before: the machine's drift

    def latency(self, stat: str) -> float:
        return self.latency_ms[stat]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Measurement:
        return cls(**raw)

    def text(self, stat: str = "p95") -> str:
        """`p95 1.23 ms (p50 1.1) at batch 1 on onnxruntime, 1 thread, 612k params, 2.4 MB`."""
        size = f", {self.size_bytes / 1e6:.3g} MB" if self.size_bytes is not None else ""
        return (f"{stat} {self.latency(stat):.3g} ms (p50 {self.latency('p50'):.3g}) at batch {self.batch} on "
                f"{self.runtime}, {counted(self.threads, 'thread')}, "
                f"{self.params / 1e3:.4g}k params{size}")


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (Linux), else what the platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(runtime: str, threads: int) -> dict[str, Any]:
    """Where a measurement was taken: CPU, cores, the runtime's threads and library versions; `load` (the 1-minute
    load average per core) is recorded but left out of the fingerprint."""
    versions = {name: _version(name) for name in ("torch", "onnxruntime", "onnx")}
    load = os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "runtime": runtime, "threads": threads,
            "python": platform.python_version(), "versions": versions,
            "load": None if load is None else round(load, 2)}


def fingerprint(env: dict[str, Any]) -> str:
    stable = {k: v for k, v in env.items() if k != "load"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:12]


def percentiles(seconds: list[float]) -> dict[str, float]:
    """Milliseconds at p50, p90, p95 and p99 (nearest rank) of timed calls, and their mean."""
    ordered = sorted(seconds)
    out = {stat: ordered[max(0, math.ceil(int(stat[1:]) / 100 * len(ordered)) - 1)] * 1e3 for stat in STATS}
    out["mean"] = sum(ordered) / len(ordered) * 1e3
    return {k: round(v, 4) for k, v in out.items()}


def time_calls(call: Callable[[], object], runs: int, warmup: int = WARMUP_RUNS,
               max_seconds: float = MAX_SECONDS) -> list[float]:
    """Seconds of each of `runs` calls after `warmup` untimed ones; a slow model stops after `max_seconds` (with at
    least MIN_RUNS calls)."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < runs and (len(times) < MIN_RUNS or time.perf_counter() - started < max_seconds):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return times


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def canary_ms(threads: int) -> float:
    """p50 milliseconds of a fixed reference network (a 784-256-10 MLP on torch, fixed weights) with `threads`
    threads: timed beside each measurement, so that a figure that moved can be told from a machine that did."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(784, 256, generator=generator), torch.randn(256, 10, generator=generator)
    images = torch.rand(1, 784, generator=generator)
    with torch_threads(threads), torch.inference_mode():
        times = time_calls(lambda: (images @ weights[0]).relu() @ weights[1], 100, warmup=10)
    return percentiles(times)["p50"]


def parameter_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def _onnx_session(path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def measure(network: nn.Module, shape: tuple[int, ...], *, batch: int = 1, runtime: str = "onnxruntime",
            threads: int = 1, runs: int = SEARCH_RUNS, name: str = "model", onnx_file: Path | None = None,
            with_size: bool = True) -> Measurement:
    """Time `network` (taking uint8 images of `shape`) on `runtime` at `batch` images per call with `threads`
    threads: WARMUP_RUNS untimed calls, then `runs` timed ones. The ONNX file is exported here (into a temporary
    folder) unless `onnx_file` gives the one to time; its size is part of the measurement (on torch, only
    `with_size`: the export takes a few seconds)."""
    from tuner.errors import TuneError
    from tuner.ship.onnxfile import INPUT_NAME, OUTPUT_NAME, onnx_graph

    network = network.cpu().eval()
    images = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if runtime == "onnxruntime" and not _onnx_available():
        raise TuneError("latency on onnxruntime needs the onnx extra: pip install -e \".[onnx]\" in tune's folder, or "
                        "measure with --latency-on torch")
    with tempfile.TemporaryDirectory() as tmp:
        path, size = onnx_file, None
        if path is None and _onnx_available() and (with_size or runtime == "onnxruntime"):
            path = Path(tmp) / "model.onnx"
            example = images.repeat(2, 1, 1, 1) if batch == 1 else images  # batch 1 would be baked into the graph
            onnx_graph(network, path, example, name)
        if path is not None:
            size = path.stat().st_size
        with torch_threads(threads), torch.inference_mode():
            if runtime == "onnxruntime":
                assert path is not None  # _onnx_available() checked above
                session, feed = _onnx_session(path, threads), {INPUT_NAME: images.numpy()}
                times = time_calls(lambda: session.run([OUTPUT_NAME], feed), runs)
            else:
                times = time_calls(lambda: network(images), runs)
    env = environment(runtime, threads)
    return Measurement(runtime, batch, threads, len(times), percentiles(times), parameter_count(network), size,
                       env, fingerprint(env), canary_ms(threads))

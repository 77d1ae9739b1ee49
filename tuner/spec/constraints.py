"""Deployment constraints of a study: the latency, parameter count and file size a served model must meet.

Spec keys under `constraints:` (and the `tune start` flags of the same names): `max_latency` (`5ms`, `800us`, or a
number of milliseconds), `latency_stat` (p50, p90, p95, p99), `max_params` (`3M`, `250k`, or a number),
`max_size` (the ONNX file: `10MB`, `512KB`, or a number of bytes), `latency_batch`, `latency_on` (onnxruntime or
torch) and `latency_threads`. How they are measured is tuner.ship.latency; how a trial meets them,
tuner.search.constraints.

`objectives:` (and `tune start --objectives`) makes a study multi-objective: the study's metric first, then
`latency` (milliseconds at `latency_stat`, measured as above) and/or `size` (the ONNX file in MB), both minimized.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from tuner.errors import SpecError, counted
from tuner.spec import checks

STATS = ("p50", "p90", "p95", "p99")
RUNTIMES = ("onnxruntime", "torch")
_TIME = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6, "s": 1000.0}
_COUNT = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
DEPLOY_OBJECTIVES = ("latency", "size")  # what may follow the metric in `objectives:`, each minimized
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zµ]*)\s*$", re.IGNORECASE)


def _quantity(name: str, raw: Any, units: dict[str, float], example: str) -> float | None:
    """A positive number from `raw`: a bare number (in the first unit) or a number with one of `units`."""
    if raw is None:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return checks.number(name, raw, low=0, low_open=True)
    match = _QUANTITY.match(str(raw))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in units:
        raise SpecError(f"{name} must be a positive number with a unit ({', '.join(u for u in units if u)}), "
                        f"like {example}; got {raw!r}")
    return checks.number(name, float(match.group(1)) * units[unit], low=0, low_open=True)


def _count_text(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.4g}{unit}"
    return f"{value:.0f}"


@dataclass(frozen=True)
class Constraints:
    """What a model must meet to be served, and how its latency is measured. None: no limit."""

    max_latency: float | None = None  # milliseconds of one batch of `latency_batch` images, at `latency_stat`
    latency_stat: str = "p95"  # which percentile of the timed runs max_latency bounds
    max_params: int | None = None  # parameters of the network (weights and biases; buffers aside)
    max_size: int | None = None  # bytes of the model's ONNX file (fp32 weights and graph)
    latency_batch: int = 1  # images per timed call: 1 for a model that answers one request at a time
    latency_on: str = "onnxruntime"  # the runtime timed: onnxruntime (the file `tune convert` writes) or torch
    latency_threads: int = 1  # CPU threads of that runtime while timing (1: steady figures on a shared machine)

    def __post_init__(self) -> None:
        checks.choice("constraints.latency_stat", self.latency_stat, STATS)
        checks.choice("constraints.latency_on", self.latency_on, RUNTIMES)
        checks.number("constraints.latency_batch", self.latency_batch, low=1, integer=True)
        checks.number("constraints.latency_threads", self.latency_threads, low=1, integer=True)
        for name in ("max_latency", "max_params", "max_size"):
            value = getattr(self, name)
            if value is not None:
                checks.number(f"constraints.{name}", value, low=0, low_open=True)

    @property
    def active(self) -> bool:
        """Whether any limit is set: only then does a trial measure its model before it trains."""
        return any(v is not None for v in (self.max_latency, self.max_params, self.max_size))

    @classmethod
    def from_dict(cls, raw: Any) -> Constraints:
        """From spec data or flags: units parsed (`5ms`, `3M`, `10MB`), unknown keys refused with the known ones."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise SpecError(f"constraints must be a mapping like {{max_latency: 5ms}}, got {raw!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise SpecError(f"unknown constraint(s) {', '.join(unknown)}: use {', '.join(known)}")
        values = dict(raw)
        values["max_latency"] = _quantity("constraints.max_latency", raw.get("max_latency"), _TIME, "5ms")
        params = _quantity("constraints.max_params", raw.get("max_params"), _COUNT, "3M")
        size = _quantity("constraints.max_size", raw.get("max_size"), _BYTES, "10MB")
        values["max_params"] = None if params is None else round(params)
        values["max_size"] = None if size is None else round(size)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults, in the units `from_dict` reads (ms, parameters, bytes)."""
        default = Constraints()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    def merged(self, changes: dict[str, Any]) -> Constraints:
        """These constraints with some keys changed (flags over a spec's `constraints:`)."""
        return Constraints.from_dict({**self.to_dict(), **changes})

    def __str__(self) -> str:
        limits = []
        if self.max_latency is not None:
            limits.append(f"{self.latency_stat} <= {self.max_latency:g} ms")
        if self.max_params is not None:
            limits.append(f"params <= {_count_text(self.max_params)}")
        if self.max_size is not None:
            limits.append(f"ONNX size <= {self.max_size / 1e6:.4g} MB")
        if not limits:
            return "none"
        return (f"{', '.join(limits)} (batch {self.latency_batch}, {self.latency_on}, "
                f"{counted(self.latency_threads, 'thread')})")


def check_objectives(raw: Any, metric: str) -> tuple[str, ...]:
    """`objectives` as a tuple: the metric, then latency and/or size (a list, or text like "accuracy,latency");
    () for a single-objective study (none given, or the metric alone)."""
    if raw is None or raw == () or raw == []:
        return ()
    names = [part.strip() for part in raw.split(",")] if isinstance(raw, str) else raw
    usage = (f"objectives must be the metric ({metric}) then latency, size or both, like {metric},latency or "
             f"{metric},latency,size; got {raw if isinstance(raw, str) else ','.join(map(str, raw))!r}")
    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) for n in names):
        raise SpecError(usage)
    rest = list(names[1:])
    if names[0] != metric or len(set(rest)) != len(rest) or not set(rest) <= set(DEPLOY_OBJECTIVES):
        raise SpecError(usage)
    return tuple(names) if rest else ()

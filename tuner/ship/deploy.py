"""A model against its deployment constraints: what breaks them (for a trial before it trains, tuner.search), and the
proof an export or a production model carries: measured again, with more runs, beside the search-time figure.

Constraint values are relative, (measured - limit) / limit, feasible at 0 or below, so that a sampler can rank
infeasible trials by how far they miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuner.errors import TuneError
from tuner.ship.latency import EXPORT_RUNS, Measurement, measure
from tuner.spec.constraints import Constraints

if TYPE_CHECKING:
    from torch import nn

    from tuner.spec import RunConfig

DRIFT = 0.10  # a re-measured latency further than this from the search-time figure is said


def violations(measured: Measurement, constraints: Constraints) -> dict[str, float]:
    """Each limit's constraint value: (measured - limit) / limit, feasible at 0 or below."""
    out: dict[str, float] = {}
    if constraints.max_latency is not None:
        out["latency"] = measured.latency(constraints.latency_stat) / constraints.max_latency - 1
    if constraints.max_params is not None:
        out["params"] = measured.params / constraints.max_params - 1
    if constraints.max_size is not None:
        if measured.size_bytes is None:
            raise TuneError("--max-size is the size of the ONNX file: install the onnx extra (pip install "
                            "-e \".[onnx]\" in tune's folder) or drop --max-size")
        out["size"] = measured.size_bytes / constraints.max_size - 1
    return {name: round(value, 6) for name, value in out.items()}


def infeasibility(measured: Measurement, constraints: Constraints, values: dict[str, float]) -> str | None:
    """What the model breaks, in one line ("p95 latency 0.31 ms > 0.1 ms (batch 1, onnxruntime, 1 thread(s))"),
    or None when it meets every limit."""
    broken = []
    if values.get("latency", 0) > 0:
        broken.append(f"{constraints.latency_stat} latency {measured.latency(constraints.latency_stat):.3g} ms > "
                      f"{constraints.max_latency:g} ms")
    if values.get("params", 0) > 0:
        broken.append(f"{measured.params:,} params > {constraints.max_params:,}")
    if values.get("size", 0) > 0 and measured.size_bytes is not None and constraints.max_size is not None:
        broken.append(f"ONNX file {measured.size_bytes / 1e6:.3g} MB > {constraints.max_size / 1e6:.3g} MB")
    if not broken:
        return None
    return f"{'; '.join(broken)} (batch {measured.batch}, {measured.runtime}, {measured.threads} thread(s))"


def untrained(config: RunConfig, shape: Sequence[int], num_classes: int) -> nn.Module:
    """`config`'s network with fresh weights: it times as the trained one (dense fp32), and needs no data."""
    from tuner.models import build_model

    channels = int(shape[0])
    return build_model(config, (channels, int(shape[1]), int(shape[2])), num_classes, (0.0,) * channels,
                       (1.0,) * channels, load_pretrained=False)


def measure_network(network: nn.Module, shape: Sequence[int], constraints: Constraints, runs: int,
                    name: str = "model", with_size: bool = False) -> Measurement:
    """`network` measured as `constraints` says: batch, runtime and threads (and the ONNX file's size when they
    bound it, `with_size` asks for it or ONNX Runtime is timed)."""
    return measure(network, tuple(shape), batch=constraints.latency_batch, runtime=constraints.latency_on,
                   threads=constraints.latency_threads, runs=runs, name=name,
                   with_size=with_size or constraints.max_size is not None)


def _machine_drift(now: Measurement, then: Measurement) -> str:
    """How the machine itself moved between two measurements: the reference network's time, and the load."""
    load = f"load per core now {now.environment.get('load')}, then {then.environment.get('load')}"
    if now.canary_ms and then.canary_ms:
        return f"the reference network {now.canary_ms / then.canary_ms - 1:+.0%} on the same machine; {load}"
    return load


def constraints_in(provenance: dict[str, Any]) -> Constraints | None:
    """The study's constraints an export file carries (provenance.deployment.constraints), if any."""
    deployment = provenance.get("deployment")
    raw = deployment.get("constraints") if isinstance(deployment, dict) else None
    return Constraints.from_dict(raw) if isinstance(raw, dict) else None


def proof(measured: Measurement, constraints: Constraints, search: Measurement | None = None,
          what: str = "the model") -> tuple[dict[str, Any], list[str]]:
    """(the deployment section of an export or a run: constraints, the figures, whether they are met; the lines to
    say about it): loud when `measured` breaks a limit, a note when it drifted from the search-time figure by more
    than DRIFT or was taken elsewhere (another environment fingerprint)."""
    values = violations(measured, constraints)
    broken = infeasibility(measured, constraints, values)
    section: dict[str, Any] = {"constraints": constraints.to_dict(), "meets": broken is None,
                               "measured": measured.to_dict(), "constraint_values": values}
    lines = [] if broken is None else [f"WARNING: {what} BREAKS its deployment constraints: {broken}"]
    if search is not None:
        section["search"] = search.to_dict()
        stat = constraints.latency_stat
        then, now = search.latency(stat), measured.latency(stat)
        if then > 0 and abs(now / then - 1) > DRIFT:
            lines.append(f"note: {stat} latency {now:.3g} ms now, {then:.3g} ms when the search measured it "
                         f"({now / then - 1:+.0%}; {_machine_drift(measured, search)})")
        if search.fingerprint != measured.fingerprint:
            lines.append(f"note: measured in another environment than the search's ({measured.environment.get('cpu')}"
                         f", {measured.runtime}, {measured.threads} thread(s)): figures compare only within one")
    return section, lines


def prove_config(config: RunConfig, shape: Sequence[int], num_classes: int, constraints: Constraints,
                 search: Measurement | None = None, runs: int = EXPORT_RUNS,
                 what: str = "the model") -> tuple[dict[str, Any], list[str]]:
    """`config`'s architecture measured again with `runs` timed calls, against `constraints` (see `proof`)."""
    measured = measure_network(untrained(config, shape, num_classes), shape, constraints, runs, config.model)
    return proof(measured, constraints, search, what)


def production_proof(network: nn.Module, shape: Sequence[int], provenance: dict[str, Any],
                     what: str = "the production model") -> dict[str, Any]:
    """A trained model's deployment section for metrics.json and the model card: measured against the constraints
    of the study its export came from (with EXPORT_RUNS runs, beside the search-time figure), else on torch at batch
    1 with one thread; `notes` holds the lines to say (loud when it breaks the constraints)."""
    constraints = constraints_in(provenance)
    if constraints is None:
        measured = measure(network, tuple(shape), runtime="torch", with_size=False)
        return {"measured": measured.to_dict(), "notes": []}
    recorded = provenance["deployment"].get("search")
    search = Measurement.from_dict(recorded) if isinstance(recorded, dict) else None
    section, lines = proof(measure_network(network, shape, constraints, EXPORT_RUNS), constraints, search, what)
    return {**section, "notes": lines}

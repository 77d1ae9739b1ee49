"""tuner.ship.deploy: what a measurement breaks, and what an export or a run folder says about it."""

from __future__ import annotations

import dataclasses

from tuner.ship.deploy import infeasibility, proof, violations
from tuner.ship.latency import Measurement
from tuner.spec.constraints import Constraints

SEARCHED = Measurement("onnxruntime", 1, 1, 200, {"p50": 0.1, "p90": 0.15, "p95": 0.2, "p99": 0.4, "mean": 0.12},
                       50_000, 200_000, {"cpu": "x", "load": 0.5}, "abc", canary_ms=0.01)


def test_constraint_values_are_relative_and_name_what_breaks():
    limits = Constraints(max_latency=0.1, max_params=100_000, max_size=100_000)
    values = violations(SEARCHED, limits)
    assert values == {"latency": 1.0, "params": -0.5, "size": 1.0}
    assert infeasibility(SEARCHED, limits, values) == ("p95 latency 0.2 ms > 0.1 ms; ONNX file 0.2 MB > 0.1 MB "
                                                       "(batch 1, onnxruntime, 1 thread(s))")
    assert infeasibility(SEARCHED, Constraints(max_latency=1.0), violations(SEARCHED, Constraints(max_latency=1.0))) \
        is None


def test_a_proof_is_loud_when_broken_and_tells_a_loaded_machine_from_a_slower_model():
    slower_machine = dataclasses.replace(SEARCHED, latency_ms={**SEARCHED.latency_ms, "p95": 0.3}, canary_ms=0.015)
    section, lines = proof(slower_machine, Constraints(max_latency=0.25), SEARCHED, "trial 3")
    assert section["meets"] is False and section["search"]["latency_ms"]["p95"] == 0.2
    assert lines[0] == ("WARNING: trial 3 BREAKS its deployment constraints: p95 latency 0.3 ms > 0.25 ms "
                        "(batch 1, onnxruntime, 1 thread(s))")
    assert "p95 latency 0.3 ms now, 0.2 ms when the search measured it (+50%; the reference network +50% on the " \
           "same machine" in lines[1]
    steady, said = proof(SEARCHED, Constraints(max_latency=0.25), SEARCHED)
    assert steady["meets"] is True and said == []

"""Constraints in study specs: units, checks with one line naming the field, and a round trip through storage."""

from __future__ import annotations

import pytest

from tuner.errors import SpecError
from tuner.spec import StudySpec
from tuner.spec.constraints import Constraints


def test_units_are_read_into_milliseconds_parameters_and_bytes():
    got = Constraints.from_dict({"max_latency": "800us", "max_params": "3M", "max_size": "10MB"})
    assert (got.max_latency, got.max_params, got.max_size) == (0.8, 3_000_000, 10_000_000)
    assert Constraints.from_dict({"max_latency": 5, "max_size": "1MiB"}).max_size == 1024**2
    assert str(got) == "p95 <= 0.8 ms, params <= 3M, ONNX size <= 10 MB (batch 1, onnxruntime, 1 thread)"


@pytest.mark.parametrize(("raw", "message"), [
    ({"max_latency": "5 parsecs"}, "constraints.max_latency must be a positive number with a unit"),
    ({"max_latency": "-5ms"}, "constraints.max_latency must be a positive number with a unit"),
    ({"max_size": 0}, "constraints.max_size must be > 0"),
    ({"latency_stat": "p42"}, "unknown constraints.latency_stat 'p42': choose one of p50, p90, p95, p99"),
    ({"latency_on": "tensorrt"}, "unknown constraints.latency_on 'tensorrt': choose one of onnxruntime, torch"),
    ({"max_lat": "5ms"}, "unknown constraint(s) max_lat: use max_latency, latency_stat"),
    ({"latency_threads": 0}, "constraints.latency_threads must be >= 1"),
])
def test_bad_constraints_are_one_line_naming_the_field(raw, message):
    with pytest.raises(SpecError) as caught:
        StudySpec.from_dict({"constraints": raw})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_spec_keeps_its_constraints_through_storage_and_flags_change_some_keys():
    spec = StudySpec.from_dict({"constraints": {"max_latency": "5ms", "max_params": "3M"}})
    assert StudySpec.from_dict(spec.to_dict()) == spec
    changed = spec.replace(constraints={"latency_stat": "p99", "max_latency": "2ms"})
    assert changed.constraints == Constraints(max_latency=2.0, latency_stat="p99", max_params=3_000_000)
    assert "constraints" not in StudySpec().to_dict()  # specs without constraints are stored as before
    assert not StudySpec().constraints.active and spec.constraints.active

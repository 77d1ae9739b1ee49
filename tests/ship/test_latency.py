"""tuner.ship.latency: percentiles of timed calls, parameters, ONNX size, and the environment they hold in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuner.ship import latency
from tuner.ship.latency import Measurement, measure, percentiles


class ToFloat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255


def small_net(width: int) -> nn.Module:
    """Takes uint8 images, as tune's models do."""
    return nn.Sequential(ToFloat(), nn.Flatten(), nn.Linear(28 * 28, width), nn.ReLU(), nn.Linear(width, 10))


def test_percentiles_are_nearest_rank_in_milliseconds():
    seconds = [i / 1000 for i in range(1, 101)]  # 1 ms ... 100 ms
    got = percentiles(seconds)
    assert (got["p50"], got["p90"], got["p95"], got["p99"]) == (50.0, 90.0, 95.0, 99.0)
    assert got["mean"] == pytest.approx(50.5)


def test_time_calls_runs_warmup_then_the_timed_calls():
    calls = []
    times = latency.time_calls(lambda: calls.append(1), runs=50, warmup=7)
    assert len(times) == 50 and len(calls) == 57


def test_time_calls_stops_a_slow_model_after_its_budget_with_the_minimum_runs():
    times = latency.time_calls(lambda: None, runs=10_000, warmup=0, max_seconds=0.0)
    assert len(times) == latency.MIN_RUNS


def test_torch_measurement_counts_params_and_restores_threads():
    threads = torch.get_num_threads()
    got = measure(small_net(32), (1, 28, 28), runtime="torch", threads=1, runs=40, batch=4)
    assert torch.get_num_threads() == threads
    assert got.params == 28 * 28 * 32 + 32 + 32 * 10 + 10
    assert got.runs == 40 and got.batch == 4 and got.runtime == "torch" and got.threads == 1
    ms = got.latency_ms
    assert 0 < ms["p50"] <= ms["p90"] <= ms["p95"] <= ms["p99"]
    assert got.environment["threads"] == 1 and got.environment["versions"]["torch"]
    assert Measurement.from_dict(got.to_dict()) == got


def test_onnx_measurement_times_the_file_and_its_size_grows_with_the_weights():
    pytest.importorskip("onnxruntime")
    small = measure(small_net(16), (1, 28, 28), runs=30)
    large = measure(small_net(256), (1, 28, 28), runs=30)
    assert small.runtime == "onnxruntime" and small.size_bytes is not None and large.size_bytes is not None
    assert large.size_bytes > 4 * (large.params - small.params) > 0  # fp32: 4 bytes per parameter at least
    assert small.fingerprint == large.fingerprint  # same machine, runtime and threads
    assert "p95" in small.text() and "onnxruntime" in small.text()


def test_fingerprint_ignores_the_load_but_not_the_threads():
    env = latency.environment("onnxruntime", 1)
    assert latency.fingerprint({**env, "load": 99.0}) == latency.fingerprint(env)
    assert latency.fingerprint(latency.environment("onnxruntime", 2)) != latency.fingerprint(env)

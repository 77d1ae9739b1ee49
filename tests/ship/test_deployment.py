"""From a constrained search to a served file: the export, `tune train` and `tune convert` each measure the model
and record its latency and size (metrics.json, the model card); a model that breaks the study's constraints is
said loudly."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.search.test_constraints import WIDTHS_SPEC

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")


@pytest.fixture
def exported(cli, tmp_path, data_dir, storage_url):
    """A search constrained to the narrow MLP, its pick exported to export.yaml."""
    spec = tmp_path / "widths.yaml"
    spec.write_text(WIDTHS_SPEC)
    started = cli("start", "--trials", 3, "--spec", spec, "--data-dir", data_dir, "--storage", storage_url,
                  "--seed", 0, "--device", "cpu", "--max-params", "30k", "--max-size", "1MB")
    assert started.exit_code == 0, started.output
    path = tmp_path / "export.yaml"
    result = cli("export", "widths", "--storage", storage_url, "--pick", "best-feasible", "-o", path)
    assert result.exit_code == 0, result.output
    return path


def test_train_and_convert_record_the_production_models_latency_and_size(cli, exported, tmp_path):
    deployment = yaml.safe_load(exported.read_text())["provenance"]["deployment"]
    assert deployment["meets"] is True and deployment["measured"]["runtime"] == "onnxruntime"
    assert deployment["measured"]["params"] == 13_002 and deployment["measured"]["size_bytes"] < 1_000_000

    run = tmp_path / "run"
    trained = cli("train", exported, "--out", run, "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((run / "metrics.json").read_text())["deployment"]
    assert metrics["meets"] is True and metrics["measured"]["runs"] >= 100
    assert metrics["search"]["params"] == metrics["measured"]["params"] == 13_002
    card = (run / "README.md").read_text()
    assert "## Latency and size" in card and "this model meets them" in card
    assert f"p95 {metrics['measured']['latency_ms']['p95']:.3g} ms" in card

    converted = cli("convert", run, "--to", "onnx")
    assert converted.exit_code == 0, converted.output
    assert "Latency p95" in converted.output and "onnxruntime" in converted.output
    record = json.loads((run / "metrics.json").read_text())["deployment"]["converted"]["onnx"]
    assert record["file_bytes"] == (run / "model.onnx").stat().st_size and record["runtime"] == "onnxruntime"


def test_a_production_model_that_breaks_the_constraints_is_said_loudly(cli, exported, tmp_path):
    data = yaml.safe_load(exported.read_text())
    data["provenance"]["deployment"]["constraints"]["max_size"] = 1000  # bytes: no network fits
    exported.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    trained = cli("train", exported, "--out", run, "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    assert "WARNING: the production model BREAKS its deployment constraints: ONNX file" in trained.output
    assert json.loads((run / "metrics.json").read_text())["deployment"]["meets"] is False
    assert "**BREAKS them**" in (run / "README.md").read_text()

"""The whole journey on a fresh machine without network or --data-dir: start (on the bundled sample), show, export,
train, predict on the sample's test images written as files, convert."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tuner.datasets.sample import main as write_sample
from tuner.storage import default_storage_url

SAMPLE = "fashion-mnist-sample"


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_every_command_works_offline_on_the_sample(cli, fresh_machine, monkeypatch):
    monkeypatch.chdir(fresh_machine)
    start = ok(cli("start", "--trials", 2, "--epochs", 1, "--seed", 0))
    assert "searching the 2,222-image sample bundled with tune instead" in start.stderr
    shown = ok(cli("show", SAMPLE)).stdout
    assert shown.startswith(f"Study {SAMPLE}: maximize accuracy; 2 trials") and f"Data: {SAMPLE}" in shown

    ok(cli("export", SAMPLE, "-o", "best.yaml"))
    exported = yaml.safe_load(Path("best.yaml").read_text())
    assert exported["config"]["dataset"] == SAMPLE and exported["provenance"]["study"] == SAMPLE
    assert exported["input"]["classes"][0] == "T-shirt/top"

    ok(cli("train", "best.yaml", "--out", "run"))
    metrics = json.loads(Path("run/metrics.json").read_text())
    best = optuna.load_study(study_name=SAMPLE, storage=default_storage_url()).best_trial
    assert metrics["test_accuracy"] == pytest.approx(best.user_attrs["test_accuracy"], abs=1e-6)
    assert sum(map(sum, metrics["confusion"])) == 500  # the sample's own test split
    assert f"trained on `{SAMPLE}`" in Path("run/README.md").read_text()

    assert write_sample(["sample-test"]) == 0
    predicted = ok(cli("predict", "run", "sample-test", "--format", "csv"))
    right = round(metrics["test_accuracy"] * 500)
    assert f"Accuracy {metrics['test_accuracy']:.4f}: {right} of 500 images" in predicted.stderr
    assert len(predicted.stdout.splitlines()) == 501

    converted = ok(cli("convert", "run", "--to", "onnx"))
    assert Path("run/model.onnx").is_file()
    assert f"test images of {SAMPLE}: largest logit difference" in converted.stderr

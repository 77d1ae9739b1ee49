"""Ensembles of the best trials: `tune export` lists the runners-up, `tune train FILE --ensemble K` trains them into
one model that averages their probabilities, and that model predicts, loads and converts like any other."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState, create_trial
from safetensors import safe_open

import tuner
from tests.ship.test_export_train import assert_one_line_error, invoke, ok
from tuner.models.ensemble import Ensemble
from tuner.ship.checkpoint import load_model
from tuner.ship.export import read_export
from tuner.spec import RunConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v0.1"
BASE = RunConfig(model="mlp", model_args={"width": 32, "depth": 1}, optimizer="adam", lr=3e-3, batch_size=128,
                 epochs=1, validation=0.2)


def study_of(storage_url: str, configs: list[tuple[float, RunConfig]]) -> optuna.Study:
    """Study `ens`: a complete trial per (value, config), as `tune start` records them, plus a pruned one."""
    study = optuna.create_study(study_name="ens", storage=storage_url, direction="maximize")
    for value, config in configs:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value,
                                     user_attrs={"config": config.to_dict(), "test_accuracy": value - 0.01}))
    study.add_trial(create_trial(state=TrialState.PRUNED, value=0.99, intermediate_values={1: 0.99},
                                 user_attrs={"config": BASE.replace(lr=0.5).to_dict()}))
    return study


@pytest.fixture
def exported(storage_url, tmp_path) -> Path:
    """An export of `ens`: best trial 1; runners-up trial 3 (a seed-only twin of 1 is left out), then trial 0."""
    study_of(storage_url, [
        (0.80, BASE.replace(lr=1e-3, seed=0)),
        (0.90, BASE.replace(seed=1)),
        (0.70, BASE.replace(lr=2e-3, batch_size=64, seed=2)),
        (0.85, BASE.replace(scheduler="cosine", warmup=0.2, seed=3)),
        (0.89, BASE.replace(seed=4)),  # trial 1's config, another seed: not a distinct member
    ])
    path = tmp_path / "best.yaml"
    ok(invoke("export", "ens", "--storage", storage_url, "-o", path, "--top", 3))
    return path


def test_export_lists_the_best_distinct_configs_after_the_trial(exported):
    document = yaml.safe_load(exported.read_text())
    assert list(document) == ["config", "input", "ensemble", "provenance"]
    assert [(m["trial"], m["value"]) for m in document["ensemble"]] == [(3, 0.85), (0, 0.80)]
    assert document["ensemble"][0]["config"] == {"scheduler": "cosine", "warmup": 0.2, "seed": 3}  # what differs
    members = read_export(exported).members()
    assert [config for config, _ in members] == [BASE.replace(seed=1), BASE.replace(scheduler="cosine", warmup=0.2,
                                                                                     seed=3), BASE.replace(lr=1e-3)]
    assert [origin["trial"] for _, origin in members] == [1, 3, 0]


def test_ensemble_trains_into_one_model_that_averages_its_members(exported, data_dir, tmp_path):
    result = ok(invoke("train", exported, "--ensemble", 2, "--data-dir", data_dir, "--device", "cpu",
                       "--out", tmp_path / "run"))
    assert "member 2 of 2: mlp adam lr 0.003 batch 128 cosine, 1 epoch" in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result.stdout.startswith(f"Test accuracy {metrics['test_accuracy']:.4f} of the ensemble of 2 (each alone: ")
    assert [m["trial"] for m in metrics["members"]] == [1, 3]
    assert all(0 < m["test_accuracy"] <= 1 for m in metrics["members"])

    weights = tmp_path / "run" / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert {key.split(".")[1] for key in keys} == {"0", "1"} and all(key.startswith("members.") for key in keys)
    assert [m["config"]["scheduler"] for m in json.loads(metadata["members"])] == ["exponential", "cosine"]

    model = load_model(tmp_path / "run")
    assert isinstance(model.network, Ensemble) and len(model.network.members) == 2
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        mean = torch.stack([member(images).softmax(1) for member in model.network.members]).mean(0)
        assert torch.allclose(model(images).softmax(1), mean, atol=1e-6)

    card = (tmp_path / "run" / "README.md").read_text()
    assert "## Members" in card and "| 2 | 3 | mlp | adam | 0.003 | cosine | 1 |" in card
    again = read_export(tmp_path / "run" / "config.yaml")  # the run's config trains the same ensemble again
    assert f"# Train it again:  tune train {tmp_path / 'run' / 'config.yaml'} --ensemble 2\n" in (
        tmp_path / "run" / "config.yaml").read_text()
    assert [config for config, _ in again.members()] == [BASE.replace(seed=1),
                                                         BASE.replace(scheduler="cosine", warmup=0.2, seed=3)]


def test_an_ensemble_predicts_and_converts_like_any_model(exported, data_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
    import onnx

    ok(invoke("train", exported, "--ensemble", 3, "--data-dir", data_dir, "--device", "cpu", "--full-train",
              "--out", tmp_path / "run"))
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    converted = ok(invoke("convert", tmp_path / "run", "--to", "onnx", "--data-dir", data_dir))
    assert "Checked with ONNX Runtime" in converted.stderr
    graph = onnx.load(str(tmp_path / "run" / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["images"]  # one graph: uint8 images in, the mean's logits out
    predicted = tuner.predict(tmp_path / "run", images, top_k=2)
    assert len(predicted) == 3 and all(0 < p.probability <= 1 for p in predicted)


def test_too_few_members_and_old_exports_are_one_line(exported, data_dir, tmp_path):
    assert_one_line_error(invoke("train", exported, "--ensemble", 4, "--data-dir", data_dir, "--device", "cpu"),
                          f"{exported} lists 3 distinct config(s), not 4: export the study again (`tune export "
                          f"STUDY --top 4 -o {exported}`) once it has 4 complete trials with distinct configs, or "
                          "train --ensemble 3")
    old = FIXTURES / "export.yaml"
    assert_one_line_error(invoke("train", old, "--ensemble", 2, "--data-dir", data_dir, "--device", "cpu"),
                          f"{old} lists 1 distinct config(s), not 2: export the study again (`tune export STUDY "
                          f"--top 2 -o {old}`) once it has 2 complete trials with distinct configs, or train "
                          "--ensemble 1")
    broken = tmp_path / "broken.yaml"
    broken.write_text("config: {model: mlp}\nensemble: [{trial: 3, config: {lr: -1}}]\n")
    assert_one_line_error(invoke("train", broken, "--ensemble", 2, "--data-dir", data_dir),
                          f"{broken}: ensemble member 1: lr must be > 0, got -1")

"""`tune export --pick`: the trial a rule picks from a constrained study, ties within the validation noise going to
the faster model, and the export that measures the pick again and says when it breaks the constraints."""

from __future__ import annotations

import optuna
import pytest
import yaml

from tuner.record import CONFIG_ATTR, DEPLOY_ATTR, INPUT_ATTR, SPEC_ATTR
from tuner.spec import RunConfig, StudySpec
from tuner.storage import open_storage

CLASSES = [f"c{i}" for i in range(10)]
# (value, p95 ms, feasible): trial 1 is within the validation noise of trial 0 and faster; trial 2 is the most
# accurate but broke the constraints; trial 3 is the fastest, 10 points down
TRIALS = [(0.900, 0.5, True), (0.895, 0.1, True), (0.950, 0.05, False), (0.800, 0.05, True)]


def add_study(storage_url: str, name: str = "fast", constraints: dict | None = None,
              measure: bool = True) -> optuna.Study:
    """A study of TRIALS; without `measure`, as a study started without constraints records it."""
    constraints = {"max_latency": 1.0, "latency_on": "torch"} if constraints is None else constraints
    spec = StudySpec.from_dict({"name": name, "model": "mlp", "constraints": constraints})
    study = optuna.create_study(study_name=name, storage=open_storage(storage_url), direction="maximize")
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    for value, p95, feasible in TRIALS:
        measured = {"runtime": "torch", "batch": 1, "threads": 1, "runs": 200, "params": 1000, "size_bytes": None,
                    "latency_ms": {"p50": p95 / 2, "p90": p95, "p95": p95, "p99": p95, "mean": p95 / 2},
                    "environment": {"load": 0.1}, "fingerprint": "f"}
        config = RunConfig(model="mlp", model_args={"width": 16, "depth": 1}, epochs=1).to_dict()
        deployment = {DEPLOY_ATTR: {"measured": measured, "validation_images": 500,
                                    "constraints": {"latency": -0.5 if feasible else 0.5}}} if measure else {}
        study.add_trial(optuna.trial.create_trial(
            value=value, params={}, distributions={},
            user_attrs={CONFIG_ATTR: config, INPUT_ATTR: {"shape": [1, 28, 28], "classes": CLASSES}, **deployment},
            system_attrs={"constraints:latency": -0.5 if feasible else 0.5} if measure else {}))
    return study


@pytest.mark.parametrize(("rule", "number", "why"), [
    ("best-feasible", 1, "the fastest of 2 trial(s) within 0.0134 of the best (the validation noise)"),
    ("fastest-within:11pp", 3, "the fastest of 3 trial(s) within 0.1100 of the best"),
    ("knee", 1, "knee: trial 1 (value 0.8950, p95 0.1 ms)"),
    ("trial:2", 2, ""),
])
def test_each_rule_picks_its_trial_and_says_why(cli, storage_url, tmp_path, rule, number, why):
    add_study(storage_url)
    out = tmp_path / "picked.yaml"
    result = cli("export", "fast", "--storage", storage_url, "--pick", rule, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"Wrote trial {number} of 'fast'" in result.output and why in result.output
    exported = yaml.safe_load(out.read_text())
    assert exported["provenance"]["trial"] == number
    deployment = exported["provenance"]["deployment"]
    assert deployment["constraints"] == {"max_latency": 1.0, "latency_on": "torch"}
    assert deployment["measured"]["runs"] >= 30 and deployment["search"]["latency_ms"]["p95"] == TRIALS[number][1]


def test_an_export_that_breaks_the_constraints_says_so_loudly(cli, storage_url, tmp_path):
    add_study(storage_url, constraints={"max_latency": "1ns", "latency_on": "torch"})
    result = cli("export", "fast", "--storage", storage_url, "--pick", "best-feasible", "-o", tmp_path / "x.yaml")
    assert result.exit_code == 0, result.output
    assert "WARNING: trial 1 BREAKS its deployment constraints: p95 latency" in result.output
    assert yaml.safe_load((tmp_path / "x.yaml").read_text())["provenance"]["deployment"]["meets"] is False


@pytest.mark.parametrize(("args", "message"), [
    (["--pick", "fastest"], "Error: unknown --pick 'fastest': use one of best-feasible, knee, fastest-within:0.5pp"),
    (["--pick", "knee", "--trial", "1"], "--trial N and --pick RULE both choose the trial"),
])
def test_bad_picks_are_one_line(cli, storage_url, args, message):
    add_study(storage_url)
    result = cli("export", "fast", "--storage", storage_url, *args)
    assert result.exit_code == 2 and message in result.output


def test_among_equally_fast_trials_the_better_one_is_picked(cli, storage_url, monkeypatch):
    monkeypatch.setattr("tests.search.test_pick.TRIALS", [(0.80, 0.1, True), (0.81, 0.1, True), (0.79, 0.1, True)])
    add_study(storage_url)
    result = cli("export", "fast", "--storage", storage_url, "--pick", "best-feasible", "-o", "-")
    assert result.exit_code == 0 and "best-feasible: trial 1 (value 0.8100" in result.output


def test_latency_rules_need_a_study_that_measured_latency(cli, storage_url):
    add_study(storage_url, constraints={}, measure=False)
    result = cli("export", "fast", "--storage", storage_url, "--pick", "knee", "-o", "-")
    assert result.exit_code == 2
    assert "have no measured latency (the study was started without constraints)" in result.output
    plain = cli("export", "fast", "--storage", storage_url, "--pick", "best-feasible", "-o", "-")
    assert plain.exit_code == 0 and "best-feasible: trial 2 (value 0.9500)" in plain.output
    assert "deployment:" not in plain.output  # nothing to prove without constraints

"""Multi-objective studies (`--objectives accuracy,latency`): one value per objective with its direction, Optuna's
Pareto front in `tune show`, `trials`, `best`, `status` and `export`, and objectives as part of a study's identity."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

import tuner.search.constraints
from tests.conftest import run_cli
from tests.search.test_constraints import WIDTHS_SPEC
from tuner.record import DEPLOY_ATTR, REASON
from tuner.ship.latency import Measurement, parameter_count
from tuner.spec import SpecError, StudySpec
from tuner.storage import open_storage

TrialState = optuna.trial.TrialState
FRONT_SPEC = WIDTHS_SPEC.replace("name: widths", "name: front")  # the wider MLP: slower, likely more accurate


def fake_measure(network, shape, constraints, runs, name="model", with_size=False) -> Measurement:
    """A measurement without timing: latency grows with the parameters (1 ms per 100k), size is fp32 weights."""
    params = parameter_count(network)
    ms = params / 1e5
    return Measurement("torch", 1, 1, runs, {stat: ms for stat in ("p50", "p90", "p95", "p99", "mean")}, params,
                       params * 4 if with_size else None)


@pytest.fixture(scope="module")
def front(tmp_path_factory, data_dir) -> tuple[str, str]:
    """The storage URL of study `front`, 3 trials of accuracy against p95 latency, searched once; its search's
    output. Tests only read it (a refused resume and an export's note change nothing they look at)."""
    folder = tmp_path_factory.mktemp("front")
    spec, url = folder / "front.yaml", f"sqlite:///{folder / 'studies.db'}"
    spec.write_text(FRONT_SPEC)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuner.search.constraints, "measure_network", fake_measure)
        result = run_cli("start", "--trials", 3, "--spec", spec, "--data-dir", data_dir, "--storage", url,
                         "--seed", 0, "--device", "cpu", "--objectives", "accuracy,latency")
    assert result.exit_code == 0, result.output
    return url, result.output


def load(storage_url: str, name: str = "front") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage_url))


def test_each_trial_stores_its_accuracy_and_latency_with_their_directions(front):
    storage_url, output = front
    study = load(storage_url)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_accuracy", "p95_latency_ms"]
    assert study.user_attrs["spec"]["objectives"] == ["accuracy", "latency"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete and all(t.state != TrialState.FAIL for t in study.trials)  # should_prune was never asked
    for trial in complete:
        measured = trial.user_attrs[DEPLOY_ATTR]["measured"]
        assert len(trial.values) == 2 and trial.values[1] == pytest.approx(measured["latency_ms"]["p95"])
        assert trial.values[0] == pytest.approx(trial.intermediate_values[1])  # the curve, for the dashboard
    assert "Pareto front: " in output and "Best: trial " in output and "p95_latency_ms" in output


def test_show_trials_best_and_status_give_the_front(front, cli):
    storage_url = front[0]
    front_numbers = {t.number for t in load(storage_url).best_trials}
    show = cli("show", "front", "--storage", storage_url)
    assert show.exit_code == 0, show.output
    assert "Pareto front: " in show.output and "val_accuracy maximized, p95_latency_ms minimized" in show.output
    trials = cli("trials", "front", "--storage", storage_url, "--sort", "value")
    assert trials.exit_code == 0, trials.output
    assert "p95_latency_ms" in trials.output
    best = cli("best", "front", "--storage", storage_url)
    assert best.exit_code == 0, best.output
    assert f"Pareto front: {len(front_numbers)} trial" in best.output
    rows = json.loads(cli("best", "front", "--storage", storage_url, "--format", "json").stdout)
    assert {row["number"] for row in rows} == front_numbers
    assert all(set(row["values"]) == {"val_accuracy", "p95_latency_ms"} for row in rows)
    status = cli("status", "front", "--storage", storage_url, "--once")
    assert status.exit_code == 0, status.output
    assert "(maximize,minimize)" in status.output and "Pareto front of" in status.output


def test_the_dashboard_and_tune_plot_show_the_front(front, cli, tmp_path):
    import threading
    import urllib.request

    from tuner.look.dashboard import make_app, make_server

    storage_url = front[0]
    plot = cli("plot", "front", "--storage", storage_url, "-o", tmp_path / "plots")
    assert plot.exit_code == 0, plot.output
    assert "Pareto front" in (tmp_path / "plots" / "index.html").read_text()
    server = make_server(make_app(storage_url), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/api/studies"
        (summary,) = json.load(urllib.request.urlopen(base, timeout=30))["study_summaries"]
        detail = json.load(urllib.request.urlopen(f"{base}/{summary['study_id']}?after=0", timeout=30))
    finally:
        server.shutdown()
        server.server_close()
    assert detail["directions"] == ["maximize", "minimize"]
    assert detail["objective_names"] == ["val_accuracy", "p95_latency_ms"]  # the Pareto page's axes
    assert {t["number"] for t in detail["best_trials"]} == {t.number for t in load(storage_url).best_trials}


def test_export_picks_a_front_trial_and_says_why(front, cli, tmp_path):
    storage_url = front[0]
    out = tmp_path / "front.yaml"
    result = cli("export", "front", "--storage", storage_url, "-o", out)
    assert result.exit_code == 0, result.output
    assert "picking from its Pareto front by --pick best-feasible" in result.output
    exported = yaml.safe_load(out.read_text())
    assert exported["provenance"]["trial"] in {t.number for t in load(storage_url).best_trials}
    assert set(exported["provenance"]["objectives"]) == {"val_accuracy", "p95_latency_ms"}
    knee = cli("export", "front", "--storage", storage_url, "--pick", "knee", "-o", tmp_path / "knee.yaml")
    assert knee.exit_code == 0, knee.output
    assert "knee: trial " in knee.output


def test_resuming_with_other_objectives_is_one_line(front, cli, data_dir):
    storage_url = front[0]
    for flags in (["--objectives", "accuracy,size"], ["--objectives", "accuracy"]):
        result = cli("start", "--trials", 1, "--study", "front", "--data-dir", data_dir, "--storage", storage_url,
                     "--device", "cpu", *flags)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert result.output.startswith(f"Error: {' '.join(flags)}: study 'front' was created with objectives "
                                        "'val_accuracy,p95_latency_ms'")
    assert len(load(storage_url).trials) == 3


@pytest.mark.parametrize("value", ["accuracy,speed", "latency,accuracy", "accuracy,latency,latency", ""])
def test_a_bad_objectives_flag_is_one_line_and_creates_nothing(cli, tiny_spec, data_dir, storage_url, value):
    result = cli("start", "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url, "--objectives", value)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --objectives must be the metric (accuracy) then latency, size or both")
    assert len(result.output.strip().splitlines()) == 1
    assert not Path(storage_url.removeprefix("sqlite:///")).exists()


def test_the_spec_key_is_checked_and_kept():
    spec = StudySpec.from_dict({"objectives": ["accuracy", "size", "latency"]})
    assert spec.objectives == ("accuracy", "size", "latency") and spec.directions == ["maximize", "minimize",
                                                                                        "minimize"]
    assert spec.metric_names == ["val_accuracy", "onnx_mb", "p95_latency_ms"]
    assert StudySpec.from_dict(spec.to_dict()) == spec
    assert StudySpec.from_dict({"objectives": ["accuracy"]}).objectives == ()
    assert "objectives" not in StudySpec().to_dict()
    with pytest.raises(SpecError, match=r"^objectives must be the metric \(loss\)"):
        StudySpec.from_dict({"metric": "loss", "objectives": "accuracy,latency"})
    with pytest.raises(SpecError, match="^sampler cmaes takes one objective"):
        StudySpec.from_dict({"sampler": "cmaes", "objectives": ["accuracy", "latency"]})
    with pytest.raises(SpecError, match="^stop_when_flat judges one value"):
        StudySpec.from_dict({"stop_when_flat": True, "objectives": ["accuracy", "latency"]})


def test_a_trial_whose_size_cannot_be_weighed_fails_with_the_reason(cli, tiny_spec, data_dir, storage_url,
                                                                     monkeypatch):
    monkeypatch.setattr(tuner.search.constraints, "measure_network",
                        lambda *args, **kwargs: fake_measure(*args[:4]))  # as without the onnx extra: no size
    result = cli("start", "--trials", 1, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu", "--objectives", "accuracy,size")
    assert result.exit_code == 0, result.output
    (trial,) = load(storage_url, "tiny").trials
    assert trial.state == TrialState.FAIL and not trial.intermediate_values
    assert trial.user_attrs[REASON].startswith("cannot measure mlp for its objectives: the size objective is the "
                                               "ONNX file's")


def test_the_stuck_rule_still_prunes_and_a_resume_keeps_the_objectives(cli, tiny_spec, data_dir, storage_url,
                                                                         monkeypatch):
    import tuner.search.objective

    monkeypatch.setattr(tuner.search.constraints, "measure_network", fake_measure)
    monkeypatch.setattr(tuner.search.objective, "stuck", lambda *args: "stuck at chance (a test)")
    common = ("--data-dir", data_dir, "--storage", storage_url, "--device", "cpu", "--trials", 1)
    first = cli("start", "--spec", tiny_spec, "--epochs", 1, "--objectives", "accuracy,latency", *common)
    assert first.exit_code == 0, first.output
    again = cli("start", "--study", "tiny", *common)  # resumed without the flag: the study's own objectives
    assert again.exit_code == 0, again.output
    study = load(storage_url, "tiny")
    assert len(study.directions) == 2 and len(study.trials) == 2
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED and trial.values is None
        assert trial.user_attrs[REASON] == "stuck at chance (a test)" and list(trial.intermediate_values) == [1]

"""Constrained searches: each architecture measured once, infeasible trials pruned before training with their
reason and Optuna constraint values, feasible ones trained; constraint flags checked in one line."""

from __future__ import annotations

import os

import optuna
import pytest

import tuner.search.constraints
import tuner.search.objective
from tuner.record import DEPLOY_ATTR, LATENCY_CACHE, REASON, stored_spec
from tuner.search.constraints import is_feasible
from tuner.ship.latency import Measurement
from tuner.spec import Choices
from tuner.storage import open_storage
from tuner.train import fit as real_fit

TrialState = optuna.trial.TrialState
# The tiny study's MLP at two widths: 13,002 and 55,050 parameters
WIDTHS_SPEC = """\
name: widths
dataset: fashion-mnist
model: mlp
epochs: 1
validation: 0.2
sampler: {name: tpe, n_startup_trials: 3}
search:
  optimizer: adam
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
  batch_size: 64
  model.width: [16, 64]
  model.depth: 2
"""
# The same widths as a range: no study measures a range's architectures up front, each trial measures its own
RANGE_SPEC = WIDTHS_SPEC.replace("model.width: [16, 64]", "model.width: {low: 16, high: 64, step: 48}")


@pytest.fixture
def widths_spec(tmp_path):
    path = tmp_path / "widths.yaml"
    path.write_text(WIDTHS_SPEC)
    return path


@pytest.fixture
def range_spec(tmp_path):
    path = tmp_path / "widths.yaml"
    path.write_text(RANGE_SPEC)
    return path


def load(storage_url: str, name: str = "widths") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage_url))


def test_infeasible_architectures_are_pruned_before_training(cli, range_spec, data_dir, storage_url, monkeypatch):
    trained = []

    def counting_fit(config, *args, **kwargs):
        trained.append(config.model_args["width"])
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", counting_fit)
    result = cli("start", "--trials", 8, "--spec", range_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--seed", 0, "--device", "cpu", "--max-params", "30k", "--latency-on", "torch")
    assert result.exit_code == 0, result.output
    study = load(storage_url)
    wide = [t for t in study.trials if t.params["model.width"] == 64]
    narrow = [t for t in study.trials if t.params["model.width"] == 16]
    assert wide and narrow
    assert set(trained) == {16}  # no epoch of the infeasible width
    for trial in wide:
        assert trial.state == TrialState.PRUNED and not trial.intermediate_values
        assert trial.user_attrs[REASON].startswith("infeasible, pruned before training: 55,050 params > 30,000")
        assert trial.constraints["params"] == pytest.approx(55_050 / 30_000 - 1, abs=1e-6)
        assert not is_feasible(trial)
    assert all(t.state == TrialState.COMPLETE and t.constraints["params"] < 0 and is_feasible(t) for t in narrow)
    assert narrow[0].user_attrs[DEPLOY_ATTR]["measured"]["params"] == 13_002
    # every architecture measured once for the whole study
    assert len([key for key in study.user_attrs if key.startswith(LATENCY_CACHE)]) == 2
    assert "infeasible, pruned before training" in result.output
    assert (f"Constraints: params <= 30k (batch 1, torch, 1 thread); {len(wide)} of 8 trials pruned before "
            "training; the best: p95") in result.output


def test_a_latency_limit_prunes_by_the_measured_percentile(cli, range_spec, data_dir, storage_url):
    result = cli("start", "--trials", 2, "--spec", range_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--seed", 0, "--device", "cpu", "--max-latency", "1us", "--latency-stat", "p50",
                 "--latency-on", "torch")
    assert result.exit_code == 0, result.output
    for trial in load(storage_url).trials:
        measured = trial.user_attrs[DEPLOY_ATTR]["measured"]
        assert trial.state == TrialState.PRUNED and "p50 latency" in trial.user_attrs[REASON]
        assert trial.constraints["latency"] == pytest.approx(measured["latency_ms"]["p50"] / 0.001 - 1, rel=1e-4)
    # nothing trained: the summary says how far the fastest model was from the limit, and what to change
    assert "2 of 2 trials pruned before training. None met them; the fastest, trial " in result.output
    assert "loosen the limits, or search smaller models" in result.output


def test_spec_constraints_are_stored_and_a_flag_changes_one_on_resume(cli, widths_spec, data_dir, storage_url):
    widths_spec.write_text(WIDTHS_SPEC + "constraints: {max_params: 30k, latency_on: torch}\n")
    first = cli("start", "--trials", 1, "--spec", widths_spec, "--data-dir", data_dir, "--storage", storage_url,
                "--device", "cpu")
    assert first.exit_code == 0, first.output
    again = cli("start", "--trials", 1, "--study", "widths", "--data-dir", data_dir, "--storage", storage_url,
                "--device", "cpu", "--max-params", "100k")
    assert again.exit_code == 0, again.output
    assert "constraints params <= 30k" in again.output and "params <= 100k" in again.output
    stored = load(storage_url).user_attrs["spec"]["constraints"]
    assert stored == {"max_params": 100_000, "latency_on": "torch"}


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-latency", "5 parsecs"], "Error: --max-latency must be a positive number with a unit"),
    (["--max-params", "lots"], "Error: --max-params must be a positive number with a unit"),
    (["--max-size", "-1MB"], "Error: --max-size must be a positive number with a unit"),
])
def test_bad_constraint_flags_are_one_line_and_create_nothing(cli, tiny_spec, data_dir, storage_url, flags, message):
    result = cli("start", "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url, *flags)
    assert result.exit_code == 2
    assert result.output.strip().startswith(message) and len(result.output.strip().splitlines()) == 1
    assert not os.path.exists(storage_url.removeprefix("sqlite:///"))


def test_a_model_that_cannot_be_measured_fails_its_trial_with_the_reason(cli, widths_spec, data_dir, storage_url,
                                                                          monkeypatch):
    import tuner.search.constraints as constraints
    from tuner.errors import TuneError

    def no_exporter(*args, **kwargs):
        raise TuneError("cannot convert mlp to ONNX (no exporter): try --to torchscript")

    monkeypatch.setattr(constraints, "measure_network", no_exporter)
    result = cli("start", "--trials", 2, "--spec", widths_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu", "--max-latency", "5ms")
    assert result.exit_code == 0, result.output
    for trial in load(storage_url).trials:
        assert trial.state == TrialState.FAIL and not trial.intermediate_values
        assert trial.user_attrs[REASON] == ("cannot measure mlp for the constraints: cannot convert mlp to ONNX (no "
                                            "exporter): try --to torchscript")


@pytest.mark.filterwarnings("ignore:.*constraints_func.*:FutureWarning")  # Optuna 5 deprecates the Optuna 4 path
def test_on_optuna_4_tpe_reads_the_constraints_through_constraints_func(monkeypatch):
    from tuner.search.constraints import constraint_values
    from tuner.search.samplers import make_sampler
    from tuner.spec import StudySpec

    spec = StudySpec.from_dict({"constraints": {"max_params": "1M"}})
    assert make_sampler(spec, 0)._constraints_func is None  # Optuna 5: trial.set_constraint, no deprecated path
    for cls in optuna.trial.Trial.__mro__:  # as on Optuna 4, where no trial class has it
        if "set_constraint" in vars(cls):
            monkeypatch.delattr(cls, "set_constraint")
    assert make_sampler(spec, 0)._constraints_func is constraint_values
    assert make_sampler(StudySpec(), 0)._constraints_func is None  # no constraints, nothing to read
    trial = optuna.trial.create_trial(value=0.5, user_attrs={DEPLOY_ATTR: {"measured": {}, "constraints":
                                                                           {"params": 0.25}}})
    assert constraint_values(trial) == [0.0, 0.25, 0.0]


def test_a_budget_widens_the_default_study_then_keeps_the_widths_that_meet_it(cli, data_dir, storage_url):
    result = cli("start", "--trials", 1, "--epochs", 1, "--data-dir", data_dir, "--storage", storage_url,
                 "--seed", 0, "--device", "cpu", "--max-params", "180k", "--latency-on", "torch")
    assert result.exit_code == 0, result.output
    assert "with a deployment budget the search also tries narrower models: model.width [8, 12, 16, 24, 32]" \
        in result.output
    assert ("measured the 5 architectures before the search: model.width 16, 24, 32 break the constraints "
            "(model.width 16: 206,970 params > 180,000 (batch 1, torch, 1 thread(s))) and leave the space; it searches "
            "model.width 8, 12") \
        in result.output
    study = load(storage_url, "fashion-mnist")
    spec = stored_spec(study)
    assert spec is not None and spec.search["model.width"] == Choices((8, 12))
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].params["model.width"] in (8, 12)
    assert len([key for key in study.user_attrs if key.startswith(LATENCY_CACHE)]) == 5  # measured once, up front


def test_a_spec_files_choices_are_measured_up_front_and_kept_as_written(cli, widths_spec, data_dir, storage_url):
    flags = ("--spec", widths_spec, "--data-dir", data_dir, "--storage", storage_url, "--seed", 0, "--device", "cpu",
             "--max-params", "30k", "--latency-on", "torch")
    result = cli("start", "--trials", 4, *flags)
    assert result.exit_code == 0, result.output
    assert "narrower models" not in result.output
    assert ("measured the 2 architectures before the search: model.width 64 breaks the constraints (model.width 64: "
            "55,050 params > 30,000 (batch 1, torch, 1 thread(s))): trials that draw it are pruned before training") \
        in result.output
    study = load(storage_url)
    spec = stored_spec(study)
    assert spec is not None and spec.search["model.width"] == Choices((16, 64))  # the file's space, as written
    assert len([key for key in study.user_attrs if key.startswith(LATENCY_CACHE)]) == 2  # measured once, up front
    again = cli("start", "--trials", 1, *flags)  # the same command resumes the study
    assert again.exit_code == 0, again.output
    assert len(load(storage_url).trials) == 5


def test_a_budget_no_model_meets_is_one_line_before_any_study(cli, widths_spec, data_dir, storage_url):
    result = cli("start", "--trials", 2, "--spec", widths_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu", "--max-params", "1k", "--latency-on", "torch")
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "Error: no model.width of the search space meets the constraints (params <= 1k (batch 1, torch, 1 thread)): "
        "the closest, model.width 16, measures " + result.output.split("measures ", 1)[1].strip()]
    assert "13k params: loosen the limits, or search smaller models" in result.output
    assert not os.path.exists(storage_url.removeprefix("sqlite:///"))


def test_a_latency_just_over_the_limit_is_measured_again_before_a_width_is_ruled_out(cli, widths_spec, data_dir,
                                                                                    storage_url, monkeypatch):
    # p95 per width, one figure per measurement: width 16's first is a tail spike 20 % over the limit (0.1 ms)
    figures = {13_002: [0.12, 0.08, 0.09], 55_050: [0.3]}
    calls: list[int] = []

    def fake(network, shape, constraints, runs, name="model", with_size=False):
        params = sum(p.numel() for p in network.parameters())
        calls.append(params)
        p95 = figures[params].pop(0)
        return Measurement(runtime="torch", batch=1, threads=1, runs=runs, params=params, size_bytes=None,
                           latency_ms={"p50": p95 / 2, "p90": p95, "p95": p95, "p99": p95, "mean": p95 / 2})

    monkeypatch.setattr(tuner.search.constraints, "measure_network", fake)
    result = cli("start", "--trials", 2, "--spec", widths_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--seed", 0, "--device", "cpu", "--max-latency", "0.1ms", "--latency-on", "torch")
    assert result.exit_code == 0, result.output
    assert calls.count(13_002) == 3 and calls.count(55_050) == 1  # far over the limit: once is enough
    # width 16 judged by the middle of its three figures (0.09 ms): it meets the limit; only width 64 breaks it
    assert "model.width 64 breaks the constraints (model.width 64: p95 latency 0.3 ms > 0.1 ms" in result.output
    for trial in load(storage_url).trials:
        feasible = trial.params["model.width"] == 16
        assert trial.state == (TrialState.COMPLETE if feasible else TrialState.PRUNED)
        if feasible:
            assert trial.user_attrs[DEPLOY_ATTR]["measured"]["latency_ms"]["p95"] == 0.09

"""`tune ls`, `show`, `trials`, `best`, `plot`, `delete` on studies built from fake trials: what a user sees."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.cli import main
from tuner.look.inspect import MIN_IMPORTANCE_TRIALS
from tuner.spec import RunConfig

START = datetime(2025, 1, 2, 3, 4, 5)
SPACE = {"optimizer": CategoricalDistribution(["adam", "sgd"]), "lr": FloatDistribution(1e-4, 1e-1, log=True),
         "batch_size": CategoricalDistribution([32, 64])}


def add_trial(study: optuna.Study, state: TrialState = TrialState.COMPLETE, value: float | None = None,
              epochs: int = 3, seconds: float = 10.0, extra: dict | None = None, **params) -> None:
    """A trial as `tune start` records it: params, per-epoch values, the run config and test accuracy (and the
    user attrs in `extra`)."""
    params = {"optimizer": "adam", "lr": 0.01, "batch_size": 64, **params}
    config = RunConfig(model="mlp", epochs=3, validation=0.2, **params).to_dict()
    attrs = {"config": config, "seed": len(study.trials), **(extra or {})}
    if state == TrialState.COMPLETE:
        assert value is not None, "a complete trial has a value"
        attrs["test_accuracy"] = round(value - 0.01, 4)
    curve = {epoch: (value or 0.1) - 0.1 / epoch for epoch in range(1, epochs + 1)}
    trial = create_trial(state=state, value=value, params=params, distributions={k: SPACE[k] for k in params},
                         user_attrs=attrs, intermediate_values=curve)
    trial.datetime_start = START + timedelta(minutes=len(study.trials))
    trial.datetime_complete = None if state == TrialState.RUNNING else trial.datetime_start + timedelta(seconds=seconds)
    study.add_trial(trial)


def make_study(url: str, name: str = "fmnist", direction: Literal["maximize", "minimize"] = "maximize") -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=url, direction=direction)
    study.set_user_attr("spec", {"name": name, "epochs": 3, "metric": "accuracy"})
    return study


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    """12 complete trials (batch_size never varies), 2 pruned after epochs 1 and 2, one failed, one running."""
    path = tmp_path_factory.mktemp("study") / "fmnist.db"
    study = make_study(f"sqlite:///{path}")
    for i in range(12):
        add_trial(study, value=0.5 + i / 40, seconds=10 + i, optimizer=("adam", "sgd")[i % 2], lr=10 ** (-1 - i / 4))
    add_trial(study, TrialState.PRUNED, value=None, epochs=1)
    add_trial(study, TrialState.PRUNED, value=None, epochs=2)
    add_trial(study, TrialState.FAIL, epochs=0)
    add_trial(study, TrialState.RUNNING, epochs=1)
    return path


@pytest.fixture
def study(study_file, storage_url) -> None:
    """Study `fmnist` (see study_file) in this test's own storage."""
    shutil.copyfile(study_file, storage_url.removeprefix("sqlite:///"))


def invoke(*args: object, input: str | None = None, env: dict | None = None):
    """The CLI with stdout and stderr apart, as a shell pipeline sees them."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env, prog_name="tune")


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {message}\n"
    assert "Traceback" not in result.output


# --- tune ls

def test_ls_lists_every_study_with_states_best_and_last_activity(study, storage_url):
    make_study(storage_url, "empty", direction="minimize")
    rows = json.loads(invoke("ls", "--storage", storage_url, "--format", "json").stdout)
    by_name = {row["name"]: row for row in rows}
    assert by_name["fmnist"]["trials"] == 16
    assert by_name["fmnist"]["states"] == {"RUNNING": 1, "COMPLETE": 12, "PRUNED": 2, "FAIL": 1, "WAITING": 0}
    assert (by_name["fmnist"]["best_trial"], by_name["fmnist"]["best_value"]) == (11, 0.5 + 11 / 40)
    assert by_name["fmnist"]["last_activity"] == (START + timedelta(minutes=15)).isoformat()
    assert by_name["empty"] == {"name": "empty", "direction": "minimize", "trials": 0,
                                "states": dict.fromkeys(("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"), 0),
                                "best_value": None, "best_trial": None, "last_activity": None}

    rows = parse_csv(invoke("ls", "--storage", storage_url, "--format", "csv").stdout)
    assert [r["name"] for r in rows] == ["fmnist", "empty"]
    assert rows[0]["states_COMPLETE"] == "12" and rows[0]["best_trial"] == "11"

    table = invoke("ls", "--storage", storage_url).stdout
    assert "fmnist" in table and "empty" in table and "maximize" in table


def test_ls_on_a_storage_that_does_not_exist_lists_nothing_and_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    result = invoke("ls", "--storage", url, "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert result.stderr == f"No studies in {url}: create one with `tune start`.\n"
    assert not (tmp_path / "none.db").exists()


# --- tune show

def test_show_json_has_best_top_pruning_and_importances(study, storage_url):
    detail = json.loads(invoke("show", "fmnist", "--storage", storage_url, "--format", "json").stdout)
    assert detail["best"]["number"] == 11
    assert detail["best"]["user_attrs"]["test_accuracy"] == round(0.5 + 11 / 40 - 0.01, 4)
    assert detail["best"]["epochs"] == 3 and detail["best"]["duration"] == 21.0
    assert [t["number"] for t in detail["top"]] == [11, 10, 9, 8, 7]
    # 12 complete trials ran 3 epochs, the pruned ones 1 and 2: 39 of the 42 epochs they would have run unpruned.
    assert detail["pruning"] == {"finished": 14, "pruned": 2, "pruned_at_epoch": {"1": 1, "2": 1}, "epochs_run": 39,
                                 "epochs_without_pruning": 42, "epochs_saved_fraction": round(3 / 42, 4)}
    assert set(detail["importances"]) == {"optimizer", "lr"}
    assert detail["importances_note"] == "not varied: batch_size"


def test_show_table_and_csv(study, storage_url):
    table = invoke("show", "fmnist", "--storage", storage_url).stdout
    assert "Best: trial 11, value 0.775, test accuracy 0.765, 3 epochs in 21.0 s" in table
    assert "Pruning: 2 of 14 finished trials pruned (after epoch 1: 1, after epoch 2: 1); 39 epochs run against 42 " \
           "without pruning (7% saved)" in table
    assert "Parameter importances" in table
    pairs = {row["key"]: row["value"] for row in parse_csv(invoke("show", "fmnist", "--storage", storage_url,
                                                                  "--format", "csv").stdout)}
    assert pairs["best.number"] == "11" and pairs["top.1.number"] == "10" and pairs["pruning.pruned"] == "2"


def test_show_explains_missing_importances_and_best(storage_url):
    study = make_study(storage_url)
    assert "Best: no completed trial yet" in invoke("show", "fmnist", "--storage", storage_url).stdout
    assert_one_line_error(invoke("plot", "fmnist", "--storage", storage_url),
                          "study 'fmnist' has no completed trial to plot yet: run `tune start --study fmnist` first")
    add_trial(study, value=0.8)
    detail = json.loads(invoke("show", "fmnist", "--storage", storage_url, "--format", "json").stdout)
    assert detail["importances"] == {}
    assert detail["importances_note"] == f"needs {MIN_IMPORTANCE_TRIALS} completed trials, has 1"
    add_trial(study, value=0.7, lr=0.001)  # from 2 completed trials, as in optuna-dashboard, saying they are rough
    detail = json.loads(invoke("show", "fmnist", "--storage", storage_url, "--format", "json").stdout)
    assert set(detail["importances"]) == {"lr"}
    assert detail["importances_note"] == ("rough: from 2 completed trials, steadier from 10; not varied: batch_size, "
                                          "optimizer")
    assert "(rough: from 2 completed trials, steadier from 10; " in invoke("show", "fmnist", "--storage",
                                                                          storage_url).stdout


def test_show_lists_the_worst_classes_of_the_best_trial(storage_url):
    study = make_study(storage_url)
    add_trial(study, value=0.8)  # recorded by a tune before per-class accuracy: no table
    assert "Validation accuracy per class" not in invoke("show", "fmnist", "--storage", storage_url).stdout
    classes = {f"class {i:02d}": {"images": 10 + i, "accuracy": (20 - i) / 20} for i in range(12)}
    add_trial(study, value=0.9, extra={"val_per_class": {**classes, "empty": {"images": 0, "accuracy": None}}})
    table = invoke("show", "fmnist", "--storage", storage_url).stdout
    lines = table.splitlines()
    start = lines.index("Validation accuracy per class, trial 1, worst first:")
    rows = [line.split("│")[1:4] for line in lines[start + 4:start + 14]]
    assert [cell.strip() for cell in rows[0]] == ["class 11", "21", "0.45"]
    assert [row[0].strip() for row in rows] == [f"class {i:02d}" for i in range(11, 1, -1)]
    assert lines[start + 15] == "  ... 3 more (--format json lists all)"
    detail = json.loads(invoke("show", "fmnist", "--storage", storage_url, "--format", "json").stdout)
    assert [row["class"] for row in detail["per_class"]] == [f"class {i:02d}" for i in range(11, -1, -1)] + ["empty"]
    assert detail["per_class"][0] == {"class": "class 11", "images": 21, "accuracy": 0.45}


def test_show_without_a_name_shows_the_only_study(study, storage_url, tmp_path):
    result = invoke("show", "--storage", storage_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Study fmnist: maximize accuracy; 16 trials")
    make_study(storage_url, "other")
    assert_one_line_error(invoke("show", "--storage", storage_url),
                          f"2 studies in {storage_url}: name one (fmnist, other)")
    assert_one_line_error(invoke("show", "--storage", f"sqlite:///{tmp_path / 'none.db'}"),
                          f"no studies in sqlite:///{tmp_path / 'none.db'}: create one with `tune start`, or "
                          "point --storage at yours")


def test_show_and_the_dashboard_give_the_same_importances(study, storage_url):
    from wsgiref.util import setup_testing_defaults

    from tuner.look.dashboard import make_app

    detail = json.loads(invoke("show", "fmnist", "--storage", storage_url, "--format", "json").stdout)
    study_id = optuna.load_study(study_name="fmnist", storage=storage_url)._study_id
    environ = {"PATH_INFO": f"/api/studies/{study_id}/param_importances"}
    setup_testing_defaults(environ)
    body = b"".join(make_app(storage_url)(environ, lambda *response: None))
    (served,) = json.loads(body)["param_importances"]
    dashboard = {row["name"]: row["importance"] for row in served}
    total = sum(dashboard[name] for name in detail["importances"])
    varied = {name: dashboard[name] / total for name in detail["importances"]}
    assert varied == pytest.approx(detail["importances"])  # tune leaves out batch_size, which never varied



# --- tune trials

def test_trials_filter_sort_and_limit(study, storage_url):
    def numbers(*args):
        result = invoke("trials", "fmnist", "--storage", storage_url, "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return [row["number"] for row in json.loads(result.stdout)]

    assert numbers() == list(range(16))
    assert numbers("--state", "pruned,FAIL") == [12, 13, 14]
    assert numbers("--state", "complete", "--sort", "value", "--limit", "3") == [11, 10, 9]
    assert numbers("--sort", "value")[-4:] == [12, 13, 14, 15]  # no value: last
    assert numbers("--state", "complete", "--sort", "duration", "--limit", "2") == [11, 10]


def test_trials_sort_by_value_is_ascending_in_minimize_studies(storage_url):
    study = make_study(storage_url, "loss", direction="minimize")
    for value in (0.3, 0.1, 0.2):
        add_trial(study, value=value)
    rows = json.loads(invoke("trials", "loss", "--storage", storage_url, "--sort", "value", "--format", "json").stdout)
    assert [row["value"] for row in rows] == [0.1, 0.2, 0.3]
    assert json.loads(invoke("best", "loss", "--storage", storage_url, "--format", "json").stdout)["value"] == 0.1


def test_trial_rows_use_optunas_names(study, storage_url):
    row = json.loads(invoke("trials", "fmnist", "--storage", storage_url, "--limit", "1", "--format", "json").stdout)[0]
    assert {"number", "state", "value", "params", "user_attrs", "duration", "epochs"} <= set(row)
    assert row["state"] == "COMPLETE" and row["params"]["optimizer"] == "adam"
    rows = parse_csv(invoke("trials", "fmnist", "--storage", storage_url, "--format", "csv").stdout)
    assert len(rows) == 16
    assert rows[0]["params_lr"] == "0.1" and rows[0]["user_attrs_test_accuracy"] == "0.49"
    assert json.loads(rows[0]["user_attrs_config"])["model"] == "mlp"
    assert rows[15]["state"] == "RUNNING" and rows[15]["value"] == "" and rows[15]["duration"] == ""


def test_trials_table_shows_params_as_columns(study, storage_url):
    table = invoke("trials", "fmnist", "--storage", storage_url, "--state", "pruned").stdout
    assert "optimizer" in table and "lr" in table and table.count("PRUNED") == 2


def test_unknown_state_is_one_line(study, storage_url):
    result = invoke("trials", "fmnist", "--storage", storage_url, "--state", "complete,done")
    assert_one_line_error(result, "unknown trial state 'done': use a comma-separated list of running, complete, "
                                  "pruned, fail, waiting")


# --- tune best

def test_best_in_every_format(study, storage_url):
    row = json.loads(invoke("best", "fmnist", "--storage", storage_url, "--format", "json").stdout)
    assert row["number"] == 11 and row["params"]["optimizer"] == "sgd"
    rows = parse_csv(invoke("best", "fmnist", "--storage", storage_url, "--format", "csv").stdout)
    assert len(rows) == 1 and rows[0]["number"] == "11"
    table = invoke("best", "fmnist", "--storage", storage_url).stdout
    assert "test accuracy" in table and "0.765" in table
    assert table.splitlines()[0] == "Best trial of fmnist"  # on one line, not wrapped to the table's width


def test_best_without_completed_trials_is_one_line(storage_url):
    add_trial(make_study(storage_url), TrialState.PRUNED, epochs=1)
    assert_one_line_error(invoke("best", "fmnist", "--storage", storage_url),
                          "study 'fmnist' has no completed trial yet: run `tune start --study fmnist`; see its "
                          "trials with `tune trials fmnist`, export one with `tune export fmnist --trial N`")


@pytest.mark.parametrize("command", ["show", "trials", "best", "export", "plot", "delete"])
def test_unknown_study_is_one_line(study, storage_url, command):
    assert_one_line_error(invoke(command, "nope", "--storage", storage_url),
                          "no study named 'nope' in this storage (studies: fmnist); check --storage / "
                          "TUNE_STORAGE or run `tune ls`")


# --- tune plot

def test_plot_writes_one_html_that_opens_offline(study, storage_url, tmp_path):
    pytest.importorskip("plotly", reason="tune plot needs plotly")
    result = invoke("plot", "fmnist", "--storage", storage_url, "-o", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "<script src=" not in page  # plotly.js is inlined, not fetched from a CDN
    for title in ("Optimization history", "Intermediate values", "Parameter importances", "Parallel coordinates",
                  "Slice plot"):
        assert title in page
    if importlib.util.find_spec("kaleido") is None:
        assert result.stderr == "PNG skipped: kaleido is not installed (pip install kaleido); wrote HTML only\n"


def test_plot_leaves_out_importances_until_enough_trials(storage_url, tmp_path, monkeypatch):
    pytest.importorskip("plotly", reason="tune plot needs plotly")
    monkeypatch.chdir(tmp_path)
    add_trial(make_study(storage_url, "a b"), value=0.8)
    result = invoke("plot", "a b", "--storage", storage_url)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Wrote a_b-plots/index.html\n"
    assert f"Parameter importances left out: needs {MIN_IMPORTANCE_TRIALS} completed trials, has 1" in result.stderr
    assert "Parameter importances" not in Path("a_b-plots/index.html").read_text()


def test_the_plot_page_fits_1400_px_with_many_params(storage_url, tmp_path):
    pytest.importorskip("plotly", reason="tune plot needs plotly")
    import re

    study = make_study(storage_url, "wide")
    space = {f"p{i}": FloatDistribution(0.0, 1.0) for i in range(10)}
    for n in range(6):
        params = {name: (n * 7 + i) % 10 / 10 for i, name in enumerate(space)}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=n / 10, params=params, distributions=space,
                                     intermediate_values={1: n / 10}))
    result = invoke("plot", "wide", "--storage", storage_url, "-o", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "plots" / "index.html").read_text()
    widths = [int(w) for w in re.findall(r'"width":(\d+)', page)]
    assert widths and max(widths) <= 1400  # one slice plot of 10 params was 3000 px wide
    assert "Slice plot, part 3" in page and "max-width: 1400px" in page


# --- tune delete, completion, help

def test_delete_asks_first(study, storage_url):
    result = invoke("delete", "fmnist", "--storage", storage_url, input="n\n")
    assert result.exit_code == 1 and "Aborted!" in result.output
    assert f"Delete study 'fmnist' and its 16 trial(s) from {storage_url}? [y/N]" in result.output
    assert "fmnist" in invoke("ls", "--storage", storage_url, "--format", "csv").stdout

    result = invoke("delete", "fmnist", "--storage", storage_url, "--yes")
    assert result.exit_code == 0 and result.stdout == "Deleted study 'fmnist': 16 trial(s).\n"
    assert json.loads(invoke("ls", "--storage", storage_url, "--format", "json").stdout) == []


def test_study_names_complete_in_the_shell(study, storage_url):
    make_study(storage_url, "fashion")
    make_study(storage_url, "cifar")
    env = {"_TUNE_COMPLETE": "bash_complete", "COMP_WORDS": "tune show f", "COMP_CWORD": "2",
           "TUNE_STORAGE": storage_url}
    result = invoke(env=env)
    assert result.stdout.split() == ["plain,fmnist", "plain,fashion"]


@pytest.mark.parametrize("command", ["ls", "show", "trials", "best", "export", "train", "plot", "delete"])
def test_every_command_has_an_example_in_its_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Examples:\n    tune " in result.stdout

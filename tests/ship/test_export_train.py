"""`tune export` and `tune train`: the winner leaves the study as one file and trains back to the trial's result."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState, create_trial
from safetensors import safe_open

from tests.conftest import TINY_SPEC
from tuner.cli import main
from tuner.datasets.images import preprocess_record, with_steps
from tuner.ship.checkpoint import load_model
from tuner.ship.export import read_export
from tuner.spec import RunConfig


def invoke(*args: object, input: str | None = None):
    """The CLI with stdout and stderr apart, as a shell pipeline sees them."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input, prog_name="tune")


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {message}\n"
    assert "Traceback" not in result.output


def search(spec: Path, data_dir: Path, storage_url: str, trials: int = 3) -> optuna.Study:
    ok(invoke("start", "--spec", spec, "--data-dir", data_dir, "--storage", storage_url, "--trials", trials,
              "--seed", 0, "--device", "cpu"))
    return optuna.load_study(study_name="tiny", storage=storage_url)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, data_dir) -> str:
    """The storage URL of study `tiny`: 3 trials of the tiny spec on synthetic data, weights kept."""
    folder = tmp_path_factory.mktemp("searched")
    (folder / "tiny.yaml").write_text(TINY_SPEC)
    url = f"sqlite:///{folder / 'studies.db'}"
    search(folder / "tiny.yaml", data_dir, url)
    return url


def fake_study(storage_url: str, **user_attrs) -> optuna.Study:
    """Study `fake`: trial 0 completed with `user_attrs`, never trained (no weights kept)."""
    study = optuna.create_study(study_name="fake", storage=storage_url, direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs=user_attrs))
    return study


def round_trip(storage_url: str, data_dir: Path, workdir: Path, monkeypatch) -> optuna.trial.FrozenTrial:
    """Export the best trial, train the file: the test accuracy is the trial's."""
    monkeypatch.chdir(workdir)
    best = optuna.load_study(study_name="tiny", storage=storage_url).best_trial
    ok(invoke("export", "tiny", "--storage", storage_url, "-o", "best.yaml"))
    result = ok(invoke("train", "best.yaml", "--out", "run", "--device", "cpu", "--data-dir", data_dir))

    metrics = json.loads(Path("run/metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(best.user_attrs["test_accuracy"], abs=1e-6)
    assert metrics["trial_test_accuracy"] == best.user_attrs["test_accuracy"]
    assert [e["val_accuracy"] for e in metrics["history"]] == pytest.approx(list(best.intermediate_values.values()),
                                                                           abs=1e-6)
    assert metrics["device"] == "cpu" and metrics["full_train"] is False and metrics["wall_seconds"] > 0
    assert result.stdout.startswith(f"Test accuracy {metrics['test_accuracy']:.4f} (trial: ")
    return best


def test_round_trip_on_synthetic_data(searched, data_dir, tmp_path, monkeypatch):
    best = round_trip(searched, data_dir, tmp_path, monkeypatch)
    config = RunConfig.from_dict(best.user_attrs["config"])
    with safe_open("run/model.safetensors", framework="pt") as f:
        metadata = f.metadata()
    assert RunConfig.from_dict(json.loads(metadata["config"])) == config
    assert json.loads(metadata["input_shape"]) == [1, 28, 28] and metadata["num_classes"] == "10"
    assert json.loads(metadata["classes"])[:2] == ["T-shirt/top", "Trouser"]
    assert json.loads(metadata["preprocess"]) == with_steps(preprocess_record(1, (28, 28)))  # steps for clients
    assert read_export("run/config.yaml").config == config  # the config as trained trains again
    model = load_model("run")  # the run folder, or its weights file
    assert model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 10)
    assert model.classes == tuple(json.loads(metadata["classes"]))
    metrics = json.loads(Path("run/metrics.json").read_text())
    assert sum(map(sum, metrics["confusion"])) == 200 and len(metrics["per_class_accuracy"]) == 10
    assert "## How it scores" in Path("run/README.md").read_text()


def test_round_trip_on_real_mini_fashion_mnist(tiny_spec, mini_data_dir, storage_url, tmp_path, monkeypatch):
    search(tiny_spec, mini_data_dir, storage_url, trials=2)
    round_trip(storage_url, mini_data_dir, tmp_path, monkeypatch)


# --- tune export

def test_export_file_is_the_trials_config_with_provenance(searched, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage_url = searched
    study = optuna.load_study(study_name="tiny", storage=storage_url)
    trial = study.trials[0]
    result = ok(invoke("export", "tiny", "--storage", storage_url, "--trial", 0))
    assert result.stdout == "Wrote trial 0 of 'tiny' to tiny-trial0.yaml\n"  # the default path
    text = Path("tiny-trial0.yaml").read_text()
    assert text.startswith("# Run config of trial 0 of study 'tiny'")
    assert "  lr: " in text and "# initial learning rate" in text
    document = yaml.safe_load(text)
    assert list(document) == ["config", "input", "ensemble", "provenance"]  # ensemble: the runners-up
    assert document["config"] == trial.user_attrs["config"]  # replayed, every field
    preprocess = with_steps(preprocess_record(1, (28, 28)))
    classes = trial.user_attrs["input"]["classes"]
    assert document["input"] == {"shape": [1, 28, 28], "num_classes": 10, "classes": classes, "preprocess": preprocess}
    provenance = document["provenance"]
    assert (provenance["study"], provenance["trial"], provenance["value"]) == ("tiny", 0, trial.value)
    assert provenance["test_accuracy"] == trial.user_attrs["test_accuracy"]
    assert provenance["storage"] == storage_url
    assert provenance["search"] == {"trials": 3, "complete": 3, "pruned": 0, "failed": 0, "epochs": 6}
    assert set(provenance["versions"]) == {"tune", "optuna", "torch"} and "exported" in provenance

    stdout = ok(invoke("export", "tiny", "--storage", storage_url, "-o", "-")).stdout
    assert yaml.safe_load(stdout)["provenance"]["trial"] == study.best_trial.number


def test_export_records_itself_in_the_study_note(storage_url, tmp_path, monkeypatch):
    import tuner.record

    calls = []
    monkeypatch.setattr(tuner.record, "record_export", lambda study, path, number: calls.append((path, number)))
    fake_study(storage_url, config=RunConfig(model="mlp").to_dict())
    ok(invoke("export", "fake", "--storage", storage_url, "-o", tmp_path / "x.yaml"))
    assert calls == [(tmp_path / "x.yaml", 0)]


def test_export_with_weights_copies_the_kept_weights(searched, tmp_path):
    study = optuna.load_study(study_name="tiny", storage=searched)
    ok(invoke("export", "tiny", "--storage", searched, "-o", tmp_path / "prod" / "best.yaml", "--with-weights"))
    with safe_open(str(tmp_path / "prod" / "best.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["config"]) == study.best_trial.user_attrs["config"]
    model = load_model(tmp_path / "prod" / "best.safetensors")  # tune's own loader reads the exported weights
    assert model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 10)


def test_kept_weights_load_as_the_trained_model(searched, data_dir, tmp_path):
    from tuner.datasets import load_splits
    from tuner.ship.artifacts import copy_weights, kept_weights
    from tuner.train import evaluate

    study = optuna.load_study(study_name="tiny", storage=searched)
    kept = {k.trial_id for k in kept_weights(study)}
    trials = [t for t in study.trials if t._trial_id in kept]
    assert trials
    for trial in trials:
        model = load_model(copy_weights(study, trial, tmp_path / str(trial.number)))
        config = RunConfig.from_dict(trial.user_attrs["config"])
        splits = load_splits(config.dataset, str(data_dir), config.validation, config.split_seed, "cpu")
        with torch.no_grad():  # the same predictions as the model the trial trained: its accuracies, exactly
            assert evaluate(model, splits.val)[0] == pytest.approx(trial.value, abs=1e-9)
            assert evaluate(model, splits.test)[0] == pytest.approx(trial.user_attrs["test_accuracy"], abs=1e-9)


def test_export_with_weights_of_a_trial_without_them_is_one_line(storage_url, tmp_path):
    fake_study(storage_url, config=RunConfig(model="mlp").to_dict())
    result = invoke("export", "fake", "--storage", storage_url, "-o", tmp_path / "x.yaml", "--with-weights")
    assert_one_line_error(result, "trial 0 of study 'fake' has no kept weights (only the best --keep-top trials keep "
                                  "theirs): export without --with-weights and run `tune train` on the file")
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "x.safetensors").exists()


def test_export_of_unknown_trial_or_trial_without_config_is_one_line(storage_url):
    study = fake_study(storage_url)
    assert_one_line_error(invoke("export", "fake", "--storage", storage_url, "--trial", 7),
                          "study 'fake' has no trial 7 (trials 0-0): see `tune trials fake`")
    assert_one_line_error(invoke("export", "fake", "--storage", storage_url, "-o", "-"),
                          "trial 0 of study 'fake' has no stored run config (user attr `config`): only trials run "
                          "by `tune start` can be exported")
    study.add_trial(create_trial(state=TrialState.FAIL))  # no note about its epochs before the error: just the error
    assert_one_line_error(invoke("export", "fake", "--storage", storage_url, "--trial", 1, "-o", "-"),
                          "trial 1 of study 'fake' has no stored run config (user attr `config`): only trials run "
                          "by `tune start` can be exported")


def test_export_of_a_trial_from_before_inputs_were_recorded_guesses_them(storage_url):
    fake_study(storage_url, config=RunConfig(model="mlp").to_dict())  # no user attr `input`
    document = yaml.safe_load(ok(invoke("export", "fake", "--storage", storage_url, "-o", "-")).stdout)
    assert document["input"] == {"shape": [1, 28, 28], "num_classes": 10}


def test_export_of_an_unfinished_trial_notes_it(storage_url):
    study = fake_study(storage_url)
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"config": RunConfig(model="mlp").to_dict()}))
    result = ok(invoke("export", "fake", "--storage", storage_url, "--trial", 1, "-o", "-"))
    assert result.stderr == "note: trial 1 is FAIL after 0 epoch(s); its config trains all its epochs\n"
    assert yaml.safe_load(result.stdout)["provenance"]["state"] == "FAIL"


# --- tune train: options and broken files

def write_config(path: Path, provenance: dict | None = None, **fields) -> Path:
    """A hand-written export file: `config` with the fields given (the rest default), and `provenance` if given."""
    config = {"dataset": "fashion-mnist", "model": "mlp", "epochs": 2, "validation": 0.2, **fields}
    path.write_text(yaml.safe_dump({"config": config, **({"provenance": provenance} if provenance else {})}))
    return path


def test_train_epochs_full_train_and_overwrite(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    write_config(tmp_path / "hand.yaml", provenance={"threads": 1}, batch_size=128)
    result = ok(invoke("train", "hand.yaml", "--data-dir", data_dir, "--device", "cpu", "--epochs", 1,
                       "--full-train"))
    assert result.stdout.endswith("Wrote runs/hand/model.safetensors, config.yaml, metrics.json and README.md\n")
    assert re.match(r"Test accuracy \d\.\d{4} after 1 epoch in ", result.stdout), result.stdout  # not "1 epochs"
    metrics = json.loads(Path("runs/hand/metrics.json").read_text())
    assert metrics["epochs"] == 1 and len(metrics["history"]) == 1 and metrics["full_train"] is True
    assert metrics["threads"] == 1 and torch.get_num_threads() == threads  # the trial's CPU threads, then back
    assert read_export("runs/hand/config.yaml").config == RunConfig(
        dataset="fashion-mnist", model="mlp", epochs=1, validation=0.2, batch_size=128)
    assert "epoch 1/1 train loss" in result.stderr  # a line per epoch when stderr is not a terminal
    # trained on train + validation: the epoch's score is the test split's, and one line says so
    assert re.search(r"^epoch 1/1 train loss \d\.\d{4} test acc \d\.\d{4} \(\d+\.\d s\)$", result.stderr, re.M)
    assert "val acc" not in result.stderr
    assert ("Training on train + validation (600 images, --full-train); each epoch is scored on the 200 test "
            "images, which chose nothing") in result.stderr.splitlines()

    assert_one_line_error(invoke("train", "hand.yaml", "--data-dir", data_dir, "--device", "cpu"),
                          "runs/hand/model.safetensors exists already: pass --out NEW_DIR, or --overwrite to "
                          "replace it")
    ok(invoke("train", "hand.yaml", "--data-dir", data_dir, "--device", "cpu", "--epochs", 1, "--overwrite"))


@pytest.mark.parametrize(("text", "message"), [
    ("config: {lr: 0.1\n", "cannot parse {path}: while parsing a flow mapping"),
    ("config: {lr: 0.1, learning_rate: 0.2}\n", "{path}: config: unknown run config field(s) learning_rate: use "),
    ("config: {lr: -0.1}\n", "{path}: config: lr must be > 0, got -0.1"),
    ("config: {optimizer: adamm}\n", "{path}: config: unknown optimizer 'adamm': choose one of sgd, adam, adamw, "),
    ("provenance: {study: x}\n", "{path} has no `config` section: export a trial with `tune export STUDY -o {path}`"),
    ("config: {}\nweights: x\n", "{path}: unknown section(s) weights: an export file holds config, input, "
                                 "ensemble, provenance"),
    ("- config\n", "{path} has no `config` section"),
    ("", "{path} has no `config` section"),
])
def test_broken_or_hand_edited_file_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "best.yaml"
    path.write_text(text)
    result = invoke("train", path, "--out", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: " + message.format(path=path))
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_missing_file_is_one_line(tmp_path):
    assert_one_line_error(invoke("train", tmp_path / "nope.yaml"), f"no such file: {tmp_path / 'nope.yaml'}")


def test_every_dataset_has_an_input_shape():
    """A trial that predates the `input` attr still exports the image shape and class count of its dataset."""
    from types import SimpleNamespace

    from tuner.ship.export import input_section
    from tuner.spec.refs import DATASETS

    for dataset in DATASETS:
        section = input_section(SimpleNamespace(user_attrs={}), RunConfig(dataset=dataset))
        assert len(section["shape"]) == 3 and section["num_classes"] == 10


def test_delete_takes_the_kept_weights_along(tiny_spec, data_dir, storage_url):
    from tuner.ship.artifacts import artifact_dir_for

    search(tiny_spec, data_dir, storage_url, trials=1)
    artifacts = artifact_dir_for(storage_url)
    assert len([p for p in artifacts.rglob("*") if p.is_file()]) == 1
    result = ok(invoke("delete", "tiny", "--storage", storage_url, "--yes"))
    assert result.stdout == "Deleted study 'tiny': 1 trial(s) and 1 kept weight file(s).\n"
    assert [p for p in artifacts.rglob("*") if p.is_file()] == []


def test_show_says_what_kept_weights_take_and_delete_weights_only_frees_it(tiny_spec, data_dir, storage_url):
    from tuner.ship.artifacts import artifact_dir_for

    search(tiny_spec, data_dir, storage_url, trials=2)
    artifacts = artifact_dir_for(storage_url)
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert len(files) == 2
    shown = ok(invoke("show", "tiny", "--storage", storage_url)).stdout
    assert (f"Kept weights: 2 files, {size / 1e6:.1f} MB (the artifact store {artifacts} holds {size / 1e6:.1f} MB "
            "in all); free them, keeping the trials: tune delete tiny --weights-only") in shown.splitlines()

    asked = invoke("delete", "tiny", "--storage", storage_url, "--weights-only", input="n\n")
    assert asked.exit_code == 1 and f"Delete the 2 kept weight files of study 'tiny' ({size / 1e6:.1f} MB)? Its " \
                                    "trials stay. [y/N]" in asked.output
    result = ok(invoke("delete", "tiny", "--storage", storage_url, "--weights-only", "--yes"))
    assert result.stdout == (f"Deleted 2 kept weight files of study 'tiny' ({size / 1e6:.1f} MB freed); its 2 "
                             "trials stay.\n")
    assert [p for p in artifacts.rglob("*") if p.is_file()] == []
    assert len(optuna.load_study(study_name="tiny", storage=storage_url).trials) == 2
    assert "Kept weights" not in ok(invoke("show", "tiny", "--storage", storage_url)).stdout
    again = ok(invoke("delete", "tiny", "--storage", storage_url, "--weights-only", "--yes"))
    assert again.stdout == "Study 'tiny' keeps no weights: nothing to delete.\n"


def test_weights_that_cannot_be_kept_do_not_stop_the_search(tiny_spec, data_dir, storage_url, tmp_path, monkeypatch):
    (tmp_path / "artifacts").write_text("a file, not a directory")
    monkeypatch.setenv("TUNE_ARTIFACTS", str(tmp_path / "artifacts"))
    study = search(tiny_spec, data_dir, storage_url, trials=1)  # exits 0
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and "test_accuracy" in trial.user_attrs
    assert trial.user_attrs["weights_error"].startswith(f"cannot write weights to {tmp_path / 'artifacts'}: ")


@pytest.mark.parametrize("ensemble", [1, 2])
def test_a_production_run_that_diverges_is_one_line_and_writes_no_weights(data_dir, tmp_path, ensemble):
    config = {"dataset": "fashion-mnist", "model": "mlp", "epochs": 2, "optimizer": "sgd", "lr": 1e6, "seed": 1}
    second = {**config, "lr": 1e5}
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"config": config, "ensemble": [{"trial": 7, "config": second}]}))
    out = tmp_path / "run"
    result = invoke("train", path, "--data-dir", data_dir, "--device", "cpu", "--out", out, "--ensemble", ensemble)
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("member 1 of 2: ")]
    member = "member 1 of " if ensemble == 2 else ""
    assert line.startswith(f"Error: {member}{path}: training loss became nan in epoch 1; nothing was written.")
    assert "Traceback" not in result.output and not (out / "model.safetensors").exists()
    assert not (out / "checkpoint").exists()

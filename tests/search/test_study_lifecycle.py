"""What a user sees when a study starts, resumes or stops: created or resumed (and where), flags that would change
a study's trials refused, harmless ones applied and said, nothing left behind by a failed start, the data directory
remembered, and a resume hint that runs what was left."""

from __future__ import annotations

import urllib.error
import urllib.request

import optuna
import pytest

import tuner.search.objective
from tuner.record import REASON
from tuner.storage import open_storage
from tuner.train import fit as real_fit

TrialState = optuna.trial.TrialState


def study_of(storage_url: str, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage_url))


def offline(monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


@pytest.fixture
def started(cli, tiny_spec, data_dir, storage_url) -> tuple:
    """Study `tiny` with 2 trials, started with --data-dir; the arguments that resume it (no data dir)."""
    result = cli("start", "--trials", 2, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu", "--seed", 0)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == f"New study tiny in {storage_url} (a new database file)"
    return ("--study", "tiny", "--storage", storage_url, "--device", "cpu")


@pytest.mark.parametrize("flag, value, field, stored", [
    ("--model", "cnn", "model", "'mlp'"),
    ("--epochs", "10", "epochs", "2"),
    ("--dataset", "mnist", "dataset", "'fashion-mnist'"),
])
def test_a_flag_that_would_make_trials_incomparable_is_refused(cli, started, storage_url, flag, value, field,
                                                               stored):
    before = study_of(storage_url).user_attrs["spec"]
    result = cli("start", "--trials", 1, flag, value, *started)
    assert result.exit_code == 2
    assert result.output == (f"Error: {flag} {value}: study 'tiny' was created with {field} {stored}: its trials "
                             f"would not be comparable; resume without {flag}, or use a new --study NAME\n")
    study = study_of(storage_url)
    assert len(study.trials) == 2 and study.user_attrs["spec"] == before


def test_a_spec_file_that_changes_the_epochs_is_refused_too(cli, started, tiny_spec, tmp_path, storage_url):
    longer = tmp_path / "longer.yaml"
    longer.write_text(tiny_spec.read_text().replace("epochs: 2", "epochs: 10"))
    result = cli("start", "--trials", 1, "--spec", longer, *started)
    assert result.exit_code == 2
    assert "study 'tiny' was created with epochs 2, not 10: its trials would not be comparable" in result.output
    assert len(study_of(storage_url).trials) == 2


def test_harmless_flags_on_resume_are_applied_and_said_in_one_line(cli, started, storage_url):
    result = cli("start", "--trials", 1, "--sampler", "tpe", "--pruner", "none", "--epochs", 2, *started)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Resuming tiny: 2 trials (2 complete), best 0.")
    assert lines[1] == "Changed for tiny from now on: sampler random -> tpe; pruner median -> none"
    spec = study_of(storage_url).user_attrs["spec"]
    assert (spec["sampler"], spec["pruner"], spec["epochs"]) == ("tpe", "none", 2)

    again = cli("start", "--trials", 1, *started)  # the stored spec now: nothing changes, nothing said
    assert again.exit_code == 0, again.output
    assert not any(line.startswith("Changed") for line in again.stderr.splitlines())


def test_the_first_line_says_new_or_resumed_with_the_trials_so_far(cli, started, tiny_spec, data_dir, storage_url):
    typo = cli("start", "--trials", 1, "--spec", tiny_spec, "--study", "tinny", "--data-dir", data_dir,
               "--storage", storage_url, "--device", "cpu")
    assert typo.exit_code == 0, typo.output
    said = typo.stderr.splitlines()
    assert said[0] == (f"no study named 'tinny' in {storage_url} (studies: tiny): starting a new one; did you mean "
                       "--study tiny?")
    assert f"New study tinny in {storage_url}" in said  # same file: not a new one

    best = study_of(storage_url).best_value
    resumed = cli("start", "--trials", 1, *started)
    assert resumed.stderr.splitlines()[0] == f"Resuming tiny: 2 trials (2 complete), best {best:.4f}"


def test_a_failed_start_leaves_no_database_and_no_data_folders(cli, tiny_spec, tmp_path, monkeypatch):
    offline(monkeypatch)
    cache = tmp_path / "home" / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # the default data directory, ~/.cache/tune/data, is here
    database = tmp_path / "new-folder" / "studies.db"
    result = cli("start", "--trials", 1, "--spec", tiny_spec, "--storage", f"sqlite:///{database}")
    assert result.exit_code == 2
    assert f"fashion-mnist is not in {cache / 'tune' / 'data'} and could not be downloaded" in result.output
    assert not cache.exists() and not database.parent.exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {lr: {low: 0.1, hihg: 0.2}}\n")
    result = cli("start", "--spec", bad, "--storage", f"sqlite:///{database}")
    assert result.exit_code == 2
    assert result.output == (f"Error: {bad}: search.lr: unknown key 'hihg' in a range (did you mean 'high'? a "
                             "range is {low, high, log, step})\n")
    assert not database.parent.exists()


def test_the_data_directory_is_remembered_by_resume_worker_export_and_train(cli, started, data_dir, storage_url,
                                                                          tmp_path, monkeypatch):
    offline(monkeypatch)
    assert study_of(storage_url).user_attrs["data_dir"] == str(data_dir.resolve())
    # Without --data-dir the default folder is empty and offline: each command finds the data where the study did.
    resumed = cli("start", "--trials", 1, *started)
    assert resumed.exit_code == 0, resumed.output
    worker = cli("worker", "tiny", "--trials", 1, "--storage", storage_url, "--device", "cpu")
    assert worker.exit_code == 0, worker.output
    monkeypatch.chdir(tmp_path)
    exported = cli("export", "tiny", "--storage", storage_url, "-o", "best.yaml")
    assert exported.exit_code == 0 and "Train it: tune train best.yaml" in exported.output
    assert f"data_dir: {data_dir.resolve()}" in (tmp_path / "best.yaml").read_text()
    trained = cli("train", "best.yaml", "--out", "run", "--device", "cpu")
    assert trained.exit_code == 0, trained.output

    elsewhere = cli("train", "best.yaml", "--out", "run2", "--device", "cpu", "--data-dir", tmp_path / "none")
    assert elsewhere.exit_code == 2 and f"is not in {tmp_path / 'none'}" in elsewhere.output  # a flag overrides


def test_after_ctrl_c_the_hint_runs_the_trials_left_and_the_trial_says_why_it_failed(cli, tiny_spec, data_dir,
                                                                                   storage_url, monkeypatch):
    calls = []

    def interrupted_in_third_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", interrupted_in_third_trial)
    result = cli("start", "--trials", 30, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu")
    assert result.exit_code == 130
    assert (f"Resume with: tune start --study tiny --storage {storage_url} --data-dir {data_dir} --trials 28"
            in result.stderr)
    (failed,) = [t for t in study_of(storage_url).trials if t.state == TrialState.FAIL]
    assert failed.number == 2 and failed.user_attrs[REASON] == "interrupted (Ctrl-C or SIGTERM)"
    shown = cli("trials", "tiny", "--storage", storage_url, "--state", "fail", "--format", "json")
    assert "interrupted (Ctrl-C or SIGTERM)" in shown.stdout


def test_a_validation_split_too_small_to_rank_trials_is_a_warning(cli, tiny_spec, tmp_path, storage_url):
    from tuner.testing import write_idx_dataset

    small = write_idx_dataset(tmp_path / "small", n_train=185, n_test=50)  # validation 0.2: 37 images
    result = cli("start", "--trials", 1, "--spec", tiny_spec, "--data-dir", small, "--storage", storage_url,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert ("warning: the validation split has only 37 images, so validation accuracy moves in steps of 2.7% and "
            "many trials will tie; hold out more (the spec's `validation:`, or a val/ folder with more images), or "
            "select on metric: loss") in result.stderr.splitlines()


def test_a_new_database_whose_tables_another_process_is_creating_still_opens(storage_url, monkeypatch):
    """Two `tune start`s (or a start and a reader) on a new SQLite file at the same moment: one of them finds the
    tables half made ("table ... already exists") and tries again instead of stopping."""
    import sqlalchemy.exc

    import tuner.storage

    real, calls = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tuner.storage.optuna.storages, "RDBStorage", racing)
    storage = open_storage(storage_url)
    assert len(calls) == 2 and storage.get_all_studies() == []

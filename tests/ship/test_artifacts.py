"""Trial weights kept as artifacts: where they live, only the best K kept, copied out for export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import optuna
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_model

from tuner.ship.artifacts import (
    ARTIFACTS_ENV,
    artifact_dir_for,
    artifact_store_for,
    copy_weights,
    drop_weights,
    keep_weights,
    kept_weights,
)
from tuner.ship.checkpoint import WEIGHTS_FILE
from tuner.spec import RunConfig
from tuner.storage import open_storage


@pytest.fixture(autouse=True)
def _no_artifacts_override(monkeypatch):
    monkeypatch.delenv(ARTIFACTS_ENV, raising=False)


def fake_search(storage_url: str | None, values: list[float], keep_top: int, *,
                direction: Literal["maximize", "minimize"] = "maximize",
                fail_after_keeping: tuple[int, ...] = (), n_jobs: int = 1) -> optuna.Study:
    """Trials whose 'training' returns values[trial.number], each with a tiny model whose bias holds that value."""
    storage = open_storage(storage_url) if storage_url else None
    study = optuna.create_study(study_name="fake", storage=storage, direction=direction)

    def objective(trial: optuna.Trial) -> float:
        value = values[trial.number]
        config = RunConfig(lr=value)
        trial.set_user_attr("config", config.to_dict())
        model = torch.nn.Linear(2, 1)
        torch.nn.init.constant_(model.bias, value)
        keep_weights(trial, model, value, keep_top, config, {"shape": [2], "classes": ["x"]})
        if trial.number in fail_after_keeping:
            raise RuntimeError("failed after its weights were kept")
        return value

    study.optimize(objective, n_trials=len(values), n_jobs=n_jobs, catch=(RuntimeError,))
    return study


def kept_numbers(study: optuna.Study) -> set[int]:
    numbers = {t._trial_id: t.number for t in study.trials}
    return {numbers[k.trial_id] for k in kept_weights(study)}


def stored_files(storage_url: str) -> list[Path]:
    return sorted(artifact_dir_for(storage_url).iterdir())


def test_artifacts_live_beside_the_sqlite_file(tmp_path):
    assert artifact_dir_for(f"sqlite:///{tmp_path}/runs/tune.db") == tmp_path / "runs" / "tune-artifacts"


def test_postgres_artifacts_default_to_the_data_dir_and_env_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert artifact_dir_for("postgresql://me:secret@db:5432/studies") == tmp_path / "data/tune/artifacts/studies"
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "shared"))
    assert artifact_dir_for("postgresql://me@db/studies") == tmp_path / "shared"
    assert artifact_dir_for(f"sqlite:///{tmp_path}/tune.db") == tmp_path / "shared"


def test_only_the_best_k_trials_keep_weights(storage_url):
    study = fake_search(storage_url, [0.2, 0.5, 0.1, 0.9, 0.3, 0.7], keep_top=2)
    assert kept_numbers(study) == {3, 5}
    assert len(stored_files(storage_url)) == 2


def test_a_minimized_metric_keeps_the_lowest(storage_url):
    study = fake_search(storage_url, [0.4, 0.2, 0.6, 0.1], keep_top=2, direction="minimize")
    assert kept_numbers(study) == {1, 3}


def test_keep_top_zero_keeps_nothing(storage_url):
    study = fake_search(storage_url, [0.4, 0.2], keep_top=0)
    assert kept_weights(study) == []


def test_an_in_memory_study_keeps_no_weights():
    study = fake_search(None, [0.4, 0.2], keep_top=2)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"] and kept_weights(study) == []


def test_weights_of_a_trial_that_failed_afterwards_are_dropped(storage_url):
    study = fake_search(storage_url, [0.9, 0.5, 0.4], keep_top=2, fail_after_keeping=(0,))
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert kept_numbers(study) == {1, 2}
    assert len(stored_files(storage_url)) == 2


def test_concurrent_workers_end_with_exactly_the_best_k(storage_url):
    values = [0.31, 0.72, 0.15, 0.93, 0.48, 0.66, 0.05, 0.81, 0.27, 0.59]
    study = fake_search(storage_url, values, keep_top=3, n_jobs=4)
    best3 = {t.number for t in sorted(study.trials, key=lambda t: -t.value)[:3]}
    assert kept_numbers(study) == best3
    assert len(stored_files(storage_url)) == 3


def test_dropping_weights_another_worker_already_deleted_is_harmless(storage_url):
    study = fake_search(storage_url, [0.5, 0.6], keep_top=2)
    for path in stored_files(storage_url):
        path.unlink()  # as if another worker had dropped them
    store = artifact_store_for(storage_url)
    for kept in kept_weights(study):
        drop_weights(study, kept, store)
        drop_weights(study, kept, store)
    assert kept_weights(study) == []


def test_copy_weights_gives_the_trials_model_with_its_config(storage_url, tmp_path):
    study = fake_search(storage_url, [0.25, 0.75], keep_top=1)
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / WEIGHTS_FILE).write_text("an older export")
    path = copy_weights(study, study.trials[1], dest)
    assert path == dest / WEIGHTS_FILE
    model = torch.nn.Linear(2, 1)
    load_model(model, str(path))
    assert model.bias.item() == pytest.approx(0.75)
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["config"]) == RunConfig(lr=0.75).to_dict()
    assert metadata["trial"] == "1" and metadata["value"] == "0.75"
    assert json.loads(metadata["input_shape"]) == [2] and metadata["num_classes"] == "1"  # what load_model reads
    assert json.loads(metadata["classes"]) == ["x"]


def test_copy_weights_of_a_trial_without_weights_is_none(storage_url, tmp_path):
    study = fake_search(storage_url, [0.25, 0.75], keep_top=1)
    assert copy_weights(study, study.trials[0], tmp_path) is None
    for path in stored_files(storage_url):
        path.unlink()
    assert copy_weights(study, study.trials[1], tmp_path) is None



def test_weights_that_cannot_be_written_leave_the_trial_complete(storage_url, tmp_path, monkeypatch):
    (tmp_path / "not-a-dir").write_text("a file where the artifact directory should be")
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "not-a-dir"))
    study = fake_search(storage_url, [0.4, 0.6], keep_top=2)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"] and kept_weights(study) == []
    error = study.trials[0].user_attrs["weights_error"]
    assert error.startswith(f"cannot write weights to {tmp_path / 'not-a-dir'}: [Errno 17] File exists")
    assert "\n" not in error

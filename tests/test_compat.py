"""Studies and export files written by tune 0.1 (before the restructuring into packages) still load, resume,
export and train: stored data outlives the code that wrote it."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest

import tuner
from tuner.ship.export import read_export

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1"


@pytest.fixture
def old_storage(tmp_path) -> str:
    """A copy of a study database written by tune 0.1: `tune start --spec tiny.yaml --trials 3 --seed 0`, then
    `tune export v01` (which noted the export in the study)."""
    shutil.copy(FIXTURES / "study.db", tmp_path / "study.db")
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_an_old_study_shows_resumes_and_exports(cli, old_storage, data_dir, tmp_path):
    shown = cli("show", "v01", "--storage", old_storage)
    assert shown.exit_code == 0, shown.output
    assert "Study v01: maximize accuracy; 3 trials (COMPLETE 3)" in shown.stdout

    resumed = cli("start", "--study", "v01", "--trials", 1, "--storage", old_storage, "--data-dir", data_dir,
                  "--keep-top", 0)
    assert resumed.exit_code == 0, resumed.output
    trials = optuna.load_study(study_name="v01", storage=old_storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert trials[-1].user_attrs["config"]["model"] == "mlp" and trials[-1].user_attrs["config"]["epochs"] == 2

    exported = cli("export", "v01", "--storage", old_storage, "--trial", 0, "-o", tmp_path / "again.yaml")
    assert exported.exit_code == 0, exported.output
    assert read_export(tmp_path / "again.yaml").config == read_export(FIXTURES / "export.yaml").config


def test_an_old_export_file_reads_and_trains(cli, data_dir, tmp_path):
    export = read_export(FIXTURES / "export.yaml")
    assert (export.config.model, export.config.optimizer, export.config.batch_size) == ("mlp", "sgd", 32)
    assert export.input["classes"][0] == "T-shirt/top" and export.provenance["trial"] == 0
    trained = cli("train", FIXTURES / "export.yaml", "--data-dir", data_dir, "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    # tune 0.2 trains convolutions channels-last on CPUs: a replay of an older export says it may differ slightly
    assert f"note: exported with tune 0.1.0, training with {tuner.__version__}: results may differ" in trained.output
    assert (tmp_path / "run" / "model.safetensors").is_file()

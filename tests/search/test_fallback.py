"""The first `tune start` on a fresh machine without network: the default study searches the bundled sample,
says so, and names the study after it; anything the user named keeps the one-line error."""

from __future__ import annotations

import shutil

import optuna
import pytest

from tuner.datasets import load_splits
from tuner.storage import default_storage_url, open_storage

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
FALLBACK = ("); searching the 2,222-image sample bundled with tune instead. Pass --data-dir DIR or connect to search "
            "the full 70,000.")


def study_names() -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(open_storage(default_storage_url()))]


def test_the_default_study_searches_the_bundled_sample_and_says_so(cli, fresh_machine):
    result = cli("start", "--trials", 2, "--epochs", 1)
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("Fashion-MNIST could not be downloaded (") and first.endswith(FALLBACK)
    assert "network is unreachable" in first
    assert result.stderr.count("could not be downloaded") == 1
    assert study_names() == ["fashion-mnist-sample"]
    study = optuna.load_study(study_name="fashion-mnist-sample", storage=open_storage(default_storage_url()))
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert study.user_attrs["input"]["classes"] == FASHION_MNIST_CLASSES
    assert study.user_attrs["input"]["dataset"] == "fashion-mnist-sample"
    assert all(t.user_attrs["config"]["dataset"] == "fashion-mnist-sample" for t in study.trials)
    assert "Resume:  tune start --study fashion-mnist-sample" in result.stdout

    again = cli("start", "--trials", 1, "--epochs", 1)  # still offline: the same sample study goes on
    assert again.exit_code == 0, again.output
    assert study_names() == ["fashion-mnist-sample"]
    assert len(optuna.load_study(study_name="fashion-mnist-sample", storage=default_storage_url()).trials) == 3


@pytest.mark.parametrize("args", [
    ["--dataset", "fashion-mnist"],
    ["--study", "mine"],
    ["--spec", "fashion-mnist"],
    ["--data-dir", "{tmp}/empty"],
])
def test_a_dataset_the_user_named_is_still_the_one_line_error(cli, fresh_machine, args):
    args = [a.replace("{tmp}", str(fresh_machine)) for a in args]
    result = cli("start", "--trials", 2, "--epochs", 1, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: fashion-mnist is not in "), result.output
    assert "could not be downloaded (" in lines[0] and "network is unreachable" in lines[0]
    assert lines[0].endswith("; or search the sample bundled with tune: --dataset fashion-mnist-sample")
    assert study_names() == []


def test_a_study_name_with_a_typo_is_said_with_the_closest_name_before_the_offline_error(cli, fresh_machine,
                                                                                          storage_url):
    for name in ("wind", "weather", "fashion-mnist-sample"):
        optuna.create_study(study_name=name, storage=open_storage(storage_url))
    result = cli("start", "--study", "weathr", "--storage", storage_url, "--trials", 1)
    assert result.exit_code == 2
    said, error = result.stderr.splitlines()
    assert said == (f"no study named 'weathr' in {storage_url} (studies: weather, fashion-mnist-sample, wind): "
                    "starting a new one; did you mean --study weather?")
    assert error.startswith(f"Error: fashion-mnist is not in {fresh_machine / 'data'} and could not be downloaded (")
    assert error.endswith("or pass --data-dir DIR that holds them; or search the sample bundled with tune: "
                          "--dataset fashion-mnist-sample")
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(storage_url)) == [
        "fashion-mnist-sample", "weather", "wind"]  # nothing was created


def test_a_new_name_with_nothing_close_lists_the_studies_without_a_guess(cli, fresh_machine, storage_url):
    optuna.create_study(study_name="weather", storage=open_storage(storage_url))
    result = cli("start", "--study", "photos", "--storage", storage_url, "--dataset", "fashion-mnist-sample",
                 "--trials", 1, "--epochs", 1, "--keep-top", 0)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (f"no study named 'photos' in {storage_url} (studies: weather): starting "
                                             "a new one")


def test_the_sample_needs_no_network_for_start_or_a_worker_joining_it(cli, fresh_machine):
    started = cli("start", "--dataset", "fashion-mnist-sample", "--trials", 1, "--epochs", 1)
    assert started.exit_code == 0, started.output
    assert "could not be downloaded" not in started.output  # named, it is never a fallback
    joined = cli("worker", "fashion-mnist-sample", "--trials", 1)
    assert joined.exit_code == 0, joined.output
    assert "could not be downloaded" not in joined.output
    assert study_names() == ["fashion-mnist-sample"]
    trials = optuna.load_study(study_name="fashion-mnist-sample", storage=default_storage_url()).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]


def test_a_study_whose_data_directory_lost_its_files_is_the_one_line_error(cli, fresh_machine, mini_data_dir):
    """The default study, once run on --data-dir DIR, reads DIR again: when DIR's files are gone, that is the
    user's data missing, not a first run, and no sample study is started."""
    copy = shutil.copytree(mini_data_dir, fresh_machine / "fmnist")
    assert cli("start", "--trials", 1, "--epochs", 1, "--data-dir", copy).exit_code == 0
    shutil.rmtree(copy / "FashionMNIST")
    load_splits.cache_clear()  # as a new process would, read the folder again
    result = cli("start", "--trials", 1, "--epochs", 1)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: fashion-mnist is not in {copy} and could not be downloaded (")
    assert study_names() == ["fashion-mnist"]


def test_the_help_names_the_study_an_offline_first_run_creates(cli):
    text = cli("--help").output
    assert "(offline: the bundled sample, study fashion-mnist-sample)" in text
    assert "tune show NAME   (NAME: the study tune start named)" in text
    assert "tune show fashion-mnist" not in text

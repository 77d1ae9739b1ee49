"""`tune start` end to end: trials stored with their params, resumes, pruning, failures, and bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import optuna
import pytest
import torch

import tuner.search.objective
from tuner.storage import open_storage
from tuner.train import fit as real_fit

TrialState = optuna.trial.TrialState


def trials_of(storage_url: str, study: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=open_storage(storage_url)).trials


def stored_trial_count(storage_url: str) -> int:
    path = storage_url.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return 0
    storage = open_storage(storage_url)
    return sum(len(storage.get_all_trials(s._study_id)) for s in storage.get_all_studies())


def test_start_stores_trials_with_params_and_attrs(cli, tiny_spec, data_dir, storage_url):
    result = cli("start", "--trials", 3, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--seed", 1, "--device", "cpu")
    assert result.exit_code == 0, result.output
    trials = trials_of(storage_url)
    assert len(trials) == 3
    for trial in trials:
        assert {"optimizer", "lr", "batch_size", "gamma"} <= set(trial.params)
        assert {"test_accuracy", "config", "seed"} <= set(trial.user_attrs)
        assert trial.user_attrs["config"]["lr"] == trial.params["lr"]
    assert "Trials: 3" in result.stdout
    assert "tune show tiny --storage" in result.stdout
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"Best: trial {best.number}, validation accuracy {best.value:.4f}" in result.stdout


def test_second_start_resumes_with_the_studys_own_spec(cli, tiny_spec, data_dir, storage_url):
    common = ("--data-dir", data_dir, "--storage", storage_url, "--device", "cpu")
    assert cli("start", "--trials", 2, "--spec", tiny_spec, *common).exit_code == 0
    resumed = cli("start", "--trials", 2, "--study", "tiny", *common)
    assert resumed.exit_code == 0, resumed.output
    trials = trials_of(storage_url)
    assert len(trials) == 4
    assert all(t.user_attrs["config"]["epochs"] == 2 for t in trials)  # the tiny spec, not the default


def test_same_seed_gives_the_same_search(cli, tiny_spec, data_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        result = cli("start", "--trials", 3, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", url,
                     "--seed", 5, "--device", "cpu")
        assert result.exit_code == 0, result.output
        runs.append([(t.params, t.value) for t in trials_of(url)])
    assert runs[0] == runs[1]


def test_poor_trials_are_pruned(cli, tmp_path, data_dir, storage_url):
    spec = tmp_path / "prune.yaml"
    spec.write_text("name: tiny\nmodel: mlp\nepochs: 4\nsampler: random\n"
                    "pruner: {name: percentile, percentile: 50.0, n_startup_trials: 2}\n"
                    "search: {optimizer: adam, lr: [1.0e-6, 1.0e-3], batch_size: 64, gamma: 0.9}\n")
    result = cli("start", "--trials", 8, "--spec", spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--seed", 3, "--device", "cpu")
    assert result.exit_code == 0, result.output
    pruned = [t for t in trials_of(storage_url) if t.state == TrialState.PRUNED]
    assert pruned, "no trial was pruned"
    assert all(len(t.intermediate_values) < 4 for t in pruned)
    assert all(t.params["lr"] == 1e-6 for t in pruned)


def test_diverging_trials_are_pruned_with_a_reason_and_the_study_goes_on(cli, tmp_path, data_dir, storage_url):
    spec = tmp_path / "nan.yaml"
    spec.write_text("name: tiny\nmodel: mlp\nepochs: 2\n"
                    "search: {optimizer: sgd, lr: 1.0e6, momentum: 0.9, batch_size: 64, gamma: 0.9}\n")
    result = cli("start", "--trials", 2, "--spec", spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    trials = trials_of(storage_url)
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all("training loss became" in t.user_attrs["reason"] for t in trials)


def test_out_of_memory_fails_only_that_trial(cli, tiny_spec, data_dir, storage_url, monkeypatch):
    calls = []

    def fit_that_runs_out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", fit_that_runs_out_of_memory_once)
    result = cli("start", "--trials", 2, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    first, second = trials_of(storage_url)
    assert first.state == TrialState.FAIL and "out of memory" in first.user_attrs["reason"]
    assert second.state == TrialState.COMPLETE


def test_ctrl_c_fails_the_running_trial_and_the_study_resumes(cli, tiny_spec, data_dir, storage_url, monkeypatch):
    calls = []

    def fit_interrupted_in_second_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", fit_interrupted_in_second_trial)
    common = ("--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url, "--device", "cpu")
    result = cli("start", "--trials", 5, *common)
    assert result.exit_code == 130
    assert ("Interrupted: the running trial is marked FAIL and queued again, to go on from the last epoch saved. "
            "Resume with: tune start --study tiny") in result.output
    assert "Stopped: interrupted (Ctrl-C or SIGTERM) after 1 of 5 trials" in result.output.splitlines()
    states = [t.state for t in trials_of(storage_url)]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]  # the interrupted one, queued again
    monkeypatch.setattr(tuner.search.objective, "fit", real_fit)
    assert cli("start", "--trials", 1, *common).exit_code == 0
    trials = trials_of(storage_url)
    assert trials[-1].state == TrialState.COMPLETE and trials[-1].params == trials[1].params


def test_sigint_to_a_real_process_leaves_no_trial_running(tiny_spec, data_dir, storage_url):
    # Long trials, so that the signal lands inside one (mid-training) rather than between two on a busy machine.
    command = [sys.executable, "-m", "tuner", "start", "--trials", "200", "--spec", str(tiny_spec), "--epochs", "200",
               "--data-dir", str(data_dir), "--storage", storage_url, "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while stored_trial_count(storage_url) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    states = {t.state for t in trials_of(storage_url)}
    assert TrialState.RUNNING not in states and TrialState.FAIL in states


def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


BAD_SPECS = {
    "unparsable.yaml": "search: {lr: [0.1\n",
    "lr-range.yaml": "search: {lr: {low: 0.1, high: 0.001}}\n",
    "optimizer.yaml": "search: {optimizer: [adam, lbfgs]}\n",
    "sampler.yaml": "sampler: bayes\n",
}


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "Invalid value for '--trials': 0 is not in the range x>=1. (see 'tune start --help')"),
    (["--trials", "abc"], "Invalid value for '--trials': 'abc' is not a valid integer range."),
    (["--spec", "missing.yaml"], "no such spec file: missing.yaml"),
    (["--spec", "{tmp}/unparsable.yaml"], "cannot parse"),
    (["--spec", "{tmp}/lr-range.yaml"], "search.lr: low (0.1) is greater than high (0.001): swap them"),
    (["--spec", "{tmp}/optimizer.yaml"], "unknown optimizer 'lbfgs': choose one of"),
    (["--spec", "{tmp}/sampler.yaml"], "unknown sampler 'bayes': choose one of tpe, random, cmaes, gp, qmc"),
    (["--sampler", "bayes"], "Invalid value for '--sampler': 'bayes' is not one of"),
    (["--pruner", "early"], "Invalid value for '--pruner': 'early' is not one of"),
    (["--storage", "mongodb://localhost/x"], "unknown storage scheme 'mongodb': use sqlite:///PATH or postgresql://"),
    (["--storage", "postgresql://postgres@127.0.0.1:9/nothing"], "cannot open storage postgresql://postgres@127.0.0.1:9"),
    (["--data-dir", "{tmp}/empty"], "fashion-mnist is not in {tmp}/empty and could not be downloaded"),
    (["--device", "cuda"], "--device cuda: no CUDA GPU is visible to torch; use --device cpu"),
    (["--device", "tpu"], "Invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'."),
])
def test_bad_input_is_one_line_exit_2_and_no_trial(cli, tmp_path, data_dir, storage_url, monkeypatch, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    offline(monkeypatch)
    for name, text in BAD_SPECS.items():
        (tmp_path / name).write_text(text)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    defaults = {"--data-dir": str(data_dir), "--storage": storage_url}
    for flag, value in defaults.items():
        if flag not in args:
            args += [flag, value]
    result = cli("start", "--trials", "2", *args) if "--trials" not in args else cli("start", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]
    assert stored_trial_count(storage_url) == 0


def test_done_when_real_images(cli, mini_data_dir, storage_url):
    """The issue's acceptance run: 12 trials, 4 epochs, seed 1 on the real mini Fashion-MNIST."""
    result = cli("start", "--trials", 12, "--epochs", 4, "--seed", 1, "--device", "cpu",
                 "--data-dir", mini_data_dir, "--storage", storage_url)
    assert result.exit_code == 0, result.output
    trials = trials_of(storage_url, "fashion-mnist")
    assert len(trials) == 12
    assert any(t.state == TrialState.PRUNED for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert max(t.value for t in complete) >= 0.75
    for trial in trials:  # the four values of the product's definition, in every trial, pruned ones included
        assert {"optimizer", "lr", "batch_size", "gamma", "model.width"} <= set(trial.params)
    for trial in complete:
        assert 0 < trial.user_attrs["test_accuracy"] <= 1


def test_compile_flag_trains_through_torch_compile_and_is_recorded(cli, tiny_spec, data_dir, storage_url,
                                                                   monkeypatch):
    import tuner.train

    monkeypatch.setattr(tuner.train, "COMPILE_BACKEND", "eager")  # graph capture without minutes of C++ builds
    result = cli("start", "--trials", 1, "--compile", "--spec", tiny_spec, "--data-dir", data_dir,
                 "--storage", storage_url, "--device", "cpu")
    assert result.exit_code == 0, result.output
    (trial,) = trials_of(storage_url)
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["config"]["compile"] is True


def test_resume_refuses_a_spec_that_changes_a_categorical_and_writes_no_trial(cli, tiny_spec, tmp_path, data_dir,
                                                                             storage_url):
    common = ("--data-dir", data_dir, "--storage", storage_url, "--device", "cpu")
    assert cli("start", "--trials", 1, "--spec", tiny_spec, *common).exit_code == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(tiny_spec.read_text().replace("batch_size: [32, 64]", "batch_size: [16, 128]"))
    result = cli("start", "--trials", 1, "--spec", changed, *common)
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: study 'tiny' searches batch_size over [32, 64], not [16, 128]: Optuna "
                                     "cannot change the choices of a study's categorical hyperparameter; use a new "
                                     "--study NAME")
    other_data = tmp_path / "mnist.yaml"
    other_data.write_text(tiny_spec.read_text().replace("dataset: fashion-mnist", "dataset: mnist"))
    result = cli("start", "--trials", 1, "--spec", other_data, *common)
    assert result.exit_code == 2 and "created with dataset 'fashion-mnist', not 'mnist'" in result.output
    assert len(trials_of(storage_url)) == 1


def test_resume_with_a_changed_range_stores_the_new_spec(cli, tiny_spec, tmp_path, data_dir, storage_url):
    common = ("--data-dir", data_dir, "--storage", storage_url, "--device", "cpu")
    assert cli("start", "--trials", 1, "--spec", tiny_spec, *common).exit_code == 0
    narrower = tmp_path / "narrower.yaml"
    narrower.write_text(tiny_spec.read_text().replace("high: 1.0e-2", "high: 2.0e-3"))
    assert cli("start", "--trials", 1, "--spec", narrower, *common).exit_code == 0
    assert cli("start", "--trials", 2, "--study", "tiny", *common).exit_code == 0  # resumes with the stored spec
    assert all(t.params["lr"] <= 2e-3 for t in trials_of(storage_url)[1:])


def test_printed_resume_command_names_the_data_dir_and_storage(cli, tiny_spec, data_dir, storage_url, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner.search.objective, "fit", interrupted)
    result = cli("start", "--trials", 1, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url)
    assert result.exit_code == 130
    assert f"Resume with: tune start --study tiny --storage {storage_url} --data-dir {data_dir}" in result.output


def test_unwritable_output_path_is_one_line(cli, tiny_spec, data_dir, storage_url):
    assert cli("start", "--trials", 1, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
               "--device", "cpu").exit_code == 0
    result = cli("export", "tiny", "--storage", storage_url, "-o", "/proc/no-such-dir/best.yaml")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: /proc/no-such-dir"), result.output

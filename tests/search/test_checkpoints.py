"""Trial checkpoints: a trial whose worker is killed (or that Ctrl-C stops) goes on from its last epoch in its
retry, bit for bit as if never stopped; a torn or missing checkpoint starts over with one line; a study leaves no
checkpoint behind once its trials end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import optuna
import pytest
import torch

import tuner.search.objective
from tuner.look.status import heartbeat_ages
from tuner.record import CHECKPOINT_ATTR, REASON, RESUMED_ATTR, RETRY_HISTORY, RETRY_OF, WORKER_ATTR
from tuner.search import checkpoints
from tuner.ship.artifacts import artifact_dir_for, artifact_store_for
from tuner.ship.resume import latest_state
from tuner.spec import RunConfig
from tuner.storage import open_storage
from tuner.train import fit as real_fit

TrialState = optuna.trial.TrialState
EPOCHS = 30  # long enough for a kill to land mid-trial; an MLP epoch on the synthetic data takes milliseconds


def trials_of(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=open_storage(url)).trials


def tune(*args: object) -> subprocess.Popen[str]:
    """`tune ARGS` in a process of its own, on one CPU thread as the tests in this process train."""
    command = [sys.executable, "-m", "tuner", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def finished(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    return out + err


def wait_for_epochs(url: str, epochs: int, process: subprocess.Popen[str]) -> optuna.trial.FrozenTrial:
    """The first RUNNING trial once it has reported `epochs` epochs (polled fast: epochs are quick)."""
    deadline, storage = time.monotonic() + 120, open_storage(url)
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            trials = storage.get_all_trials(storage.get_study_id_from_name("tiny"), deepcopy=False)
            running = [t for t in trials if t.state == TrialState.RUNNING]
        except Exception:  # the study is not created yet
            running = []
        if running and len(running[0].intermediate_values) >= epochs:
            return running[0]
        time.sleep(0.02)
    raise AssertionError(f"no trial reported {epochs} epochs")


def checkpoint_files(url: str) -> list[str]:
    directory = artifact_dir_for(url)
    return sorted(p.name for p in directory.glob("checkpoint-*")) if directory.exists() else []


def saved_epoch(url: str, trial: optuna.trial.FrozenTrial) -> int:
    """The epoch of the newest whole state in `trial`'s checkpoint, read as a retry reads it."""
    config = RunConfig.from_dict(trial.user_attrs["config"])
    state = latest_state(artifact_store_for(url), trial.system_attrs[CHECKPOINT_ATTR], config,
                         {"device": "cpu"}).state
    return state.epoch if state is not None else 0


def same_run(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> None:
    assert a.params == b.params and a.user_attrs["seed"] == b.user_attrs["seed"]
    assert a.intermediate_values == b.intermediate_values  # every epoch's validation accuracy, exactly
    assert a.value == b.value and a.user_attrs["test_accuracy"] == b.user_attrs["test_accuracy"]


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread, here and in the processes the tests start (CPU sums depend on the thread count, and threads
    that wait on each other on a busy machine are slower than one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def common(tiny_spec, data_dir) -> tuple[object, ...]:
    return ("--spec", tiny_spec, "--data-dir", data_dir, "--device", "cpu", "--seed", 3, "--epochs", EPOCHS,
            "--keep-top", 0, "--pruner", "none")  # on random images a trial is stuck at chance: it must run on


def test_a_trial_whose_process_is_killed_goes_on_from_its_checkpoint_bit_exact(common, tmp_path):
    killed, reference = f"sqlite:///{tmp_path / 'killed.db'}", f"sqlite:///{tmp_path / 'reference.db'}"
    beat = ("--heartbeat-interval", 1, "--grace-period", 2)
    process = tune("start", "--trials", 1, "--storage", killed, *common, *beat)
    victim = wait_for_epochs(killed, 3, process)
    process.kill()
    process.wait()
    victim = trials_of(killed)[0]
    epoch = saved_epoch(killed, victim)
    assert 1 <= epoch <= len(victim.intermediate_values)
    storage = open_storage(killed)
    deadline = time.monotonic() + 30
    while heartbeat_ages(storage, "tiny", [victim.number]).get(victim.number, 0) <= 2.5:
        assert time.monotonic() < deadline, "the heartbeat never went stale"
        time.sleep(0.2)

    output = finished(tune("start", "--trials", 1, "--storage", killed, *common, *beat))
    assert f"trial 1 continues trial 0 after epoch {epoch} of {EPOCHS}, from its checkpoint" in output
    failed, retry = trials_of(killed)
    assert failed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs[RETRY_OF] == 0 and retry.user_attrs[RESUMED_ATTR] == epoch

    finished(tune("start", "--trials", 1, "--storage", reference, *common))
    (uninterrupted,) = trials_of(reference)
    same_run(retry, uninterrupted)
    assert checkpoint_files(killed) == [] and checkpoint_files(reference) == []


def test_a_killed_pool_worker_is_replaced_and_its_trial_resumed(common, tmp_path):
    url = f"sqlite:///{tmp_path / 'pool.db'}"
    process = tune("start", "--workers", 2, "--trials", 2, "--storage", url, *common)
    victim = wait_for_epochs(url, 3, process)
    os.kill(int(victim.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]), signal.SIGKILL)
    output = finished(process)
    assert "was killed by SIGKILL" in output and "started a new worker in its place" in output
    trials = trials_of(url)
    (retry,) = [t for t in trials if t.system_attrs.get(RETRY_OF) == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[RESUMED_ATTR] >= 1
    assert len(retry.intermediate_values) == EPOCHS  # one whole curve: the epochs before the kill, then the rest

    # the same config trained without a kill, on as many threads as the worker had, gives the same trial
    config = RunConfig.from_dict(retry.user_attrs["config"])
    from tuner.datasets import splits_for
    from tuner.ship.production import cpu_threads

    with cpu_threads(retry.user_attrs["threads"]):
        result = real_fit(config, splits_for(config, common[3], "cpu"))
    assert {e.epoch: e.val_accuracy for e in result.history} == retry.intermediate_values
    assert result.test_accuracy == retry.user_attrs["test_accuracy"]
    assert checkpoint_files(url) == []


def interrupt_after_epoch(monkeypatch, epoch: int) -> None:
    """Ctrl-C in the first trial, just after its checkpoint of `epoch` was handed to the writer."""
    def fit(*args, on_state=None, **kwargs):
        def save_then_stop(state):
            on_state(state)
            if state.epoch == epoch:
                raise KeyboardInterrupt
        return real_fit(*args, on_state=save_then_stop if on_state is not None else None, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", fit)


def test_ctrl_c_keeps_the_checkpoint_and_the_next_start_goes_on_from_it(cli, common, storage_url, tmp_path,
                                                                         monkeypatch):
    interrupt_after_epoch(monkeypatch, 4)
    result = cli("start", "--trials", 3, "--storage", storage_url, *common)
    assert result.exit_code == 130
    interrupted, queued = trials_of(storage_url)
    assert interrupted.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert queued.system_attrs[RETRY_OF] == interrupted.number and queued.params == interrupted.params
    assert not queued.system_attrs.get(RETRY_HISTORY)  # an interrupt is not counted against Optuna's retry limit
    assert REASON in interrupted.user_attrs and REASON not in queued.user_attrs
    assert len(checkpoint_files(storage_url)) == 1  # only the newest state, after epoch 4, kept
    assert "Stopped: interrupted (Ctrl-C or SIGTERM) after 0 of 3 trials" in result.output  # why, every time
    assert result.output.count("--trials 3") == 1  # one way on: the interrupt's resume line

    monkeypatch.setattr(tuner.search.objective, "fit", real_fit)
    resumed = cli("start", "--study", "tiny", "--trials", 1, "--storage", storage_url, *common)
    assert resumed.exit_code == 0, resumed.output
    assert f"trial 1 continues trial 0 after epoch 4 of {EPOCHS}, from its checkpoint" in resumed.output
    retry = trials_of(storage_url)[1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[RESUMED_ATTR] == 4

    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    assert cli("start", "--trials", 1, "--storage", reference, *common).exit_code == 0
    same_run(retry, trials_of(reference)[0])
    assert checkpoint_files(storage_url) == []


@pytest.mark.parametrize("damage", ["torn", "missing"])
def test_a_torn_or_missing_checkpoint_starts_over_with_one_line(cli, common, storage_url, tmp_path, monkeypatch,
                                                                damage):
    interrupt_after_epoch(monkeypatch, 2)
    assert cli("start", "--trials", 1, "--storage", storage_url, *common).exit_code == 130
    for path in Path(artifact_dir_for(storage_url)).glob("checkpoint-*"):
        if damage == "torn":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # as a kill mid-write leaves it
        else:
            path.unlink()

    monkeypatch.setattr(tuner.search.objective, "fit", real_fit)
    result = cli("start", "--trials", 1, "--storage", storage_url, *common)
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "retries trial 0 from epoch 1" in line]
    assert len(said) == 1
    if damage == "torn":
        assert said[0].startswith("warning: trial 1 retries trial 0 from epoch 1: its checkpoint cannot be used")
    else:
        assert said[0].startswith("warning: trial 1 retries trial 0 from epoch 1: its checkpoint is missing")
    retry = trials_of(storage_url)[1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[RESUMED_ATTR] == 0
    assert len(retry.intermediate_values) == EPOCHS
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    assert cli("start", "--trials", 1, "--storage", reference, *common).exit_code == 0
    same_run(retry, trials_of(reference)[0])
    assert checkpoint_files(storage_url) == []


def test_a_finished_study_leaves_no_checkpoint_pruned_trials_included(cli, tiny_spec, data_dir, storage_url):
    spec = tiny_spec.read_text().replace("pruner: median", "pruner: {name: median, n_startup_trials: 1}")
    tiny_spec.write_text(spec)
    result = cli("start", "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url, "--trials", 6,
                 "--epochs", 4, "--seed", 0, "--device", "cpu")
    assert result.exit_code == 0, result.output
    states = {t.state for t in trials_of(storage_url)}
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    assert all(CHECKPOINT_ATTR in t.system_attrs for t in trials_of(storage_url))
    assert artifact_dir_for(storage_url).is_dir() and checkpoint_files(storage_url) == []


def test_the_checkpoint_of_a_trial_failed_for_good_is_swept(cli, common, storage_url, monkeypatch):
    interrupt_after_epoch(monkeypatch, 2)
    assert cli("start", "--trials", 1, "--storage", storage_url, *common).exit_code == 130
    study = optuna.load_study(study_name="tiny", storage=open_storage(storage_url))
    queued = trials_of(storage_url)[1]
    assert checkpoints.sweep(study) == 0 and len(checkpoint_files(storage_url)) == 1  # its retry waits for it

    # the retry's worker dies once more than Optuna retries: it is failed and nothing will resume the checkpoint
    study._storage.set_trial_state_values(queued._trial_id, state=TrialState.RUNNING)
    study._storage.set_trial_state_values(queued._trial_id, state=TrialState.FAIL)
    assert checkpoints.sweep(study) == 0  # it may be about to be retried: a few seconds' grace
    monkeypatch.setattr(checkpoints, "SWEEP_AFTER", timedelta(0))
    assert checkpoints.sweep(study) == 1 and checkpoint_files(storage_url) == []

"""Many worker processes on one study: exact budgets, GPU pinning, crash recovery, signals, `tune worker` and
`tune status`, against the embedded SQLite default and a real PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import optuna
import pytest
from rich.console import Console
from sqlalchemy import create_engine

from tuner.cli.workers import local_weights_warning
from tuner.errors import TuneError
from tuner.look.status import heartbeat_ages
from tuner.record import record_spec
from tuner.search import session as sessions
from tuner.search.gpus import plan_workers
from tuner.search.pool import Pool, run_pool
from tuner.search.runner import worker_job
from tuner.search.trial_loop import Budget, DatabaseLost, wait_for_database, worker_name
from tuner.search.worker import EXIT_USER_ERROR, WorkerJob
from tuner.spec import StudySpec, load_spec
from tuner.storage import create_study, default_storage_url, engine_url, open_storage
from tuner.testing import QuickObjective

TrialState = optuna.trial.TrialState
T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_storage(request, storage_url) -> str:
    """The embedded SQLite storage, then a fresh PostgreSQL database (skipped where none is reachable)."""
    return storage_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def trials_of(url: str, study: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=open_storage(url)).trials


def wait_for(find: Callable[[], T | None], seconds: float = 90, what: str = "the condition") -> T:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def running_trial_with_an_epoch(url: str) -> Callable[[], optuna.trial.FrozenTrial | None]:
    def find():
        try:
            trials = trials_of(url)
        except Exception:  # the study is not created yet
            return None
        return next((t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values), None)
    return find


def quick_session(url: str, tiny_spec, data_dir, **heartbeat) -> sessions.Session:
    return sessions.prepare(study_name=None, spec_file=str(tiny_spec), storage_url=url, data_dir=str(data_dir),
                            device="cpu", seed=None, in_process=False, **heartbeat)


def tune_process(*args: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "tuner", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- placement -------------------------------------------------------------------------------------------------

def test_workers_are_spread_over_the_gpus():
    assert plan_workers(None, None, None) == [None]
    assert plan_workers(3, None, None) == [None] * 3
    assert plan_workers(None, "0,1", None) == ["0", "1"]
    assert plan_workers(None, "0,1,2,3", 2) == ["0", "1", "2", "3", "0", "1", "2", "3"]
    assert plan_workers(3, "0,1", 2) == ["0", "1", "0"]


def test_gpu_indices_count_among_the_gpus_a_scheduler_allocated(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    assert plan_workers(None, "0,1", 2) == ["2", "3", "2", "3"]
    with pytest.raises(TuneError, match=r"--gpus names GPU 4 but only 4 are visible \(CUDA_VISIBLE_DEVICES=2,3,5,7\)"):
        plan_workers(None, "4", None)


@pytest.mark.parametrize("args, message", [
    (["--per-gpu", "2"], "--per-gpu needs --gpus: name the GPUs, like --gpus 0,1 --per-gpu 2"),
    (["--gpus", "0,,1"], "--gpus '0,,1' has an empty entry"),
    (["--gpus", "0,0"], "--gpus '0,0' names a GPU twice: use --per-gpu K"),
    (["--gpus", "0,1", "--per-gpu", "2", "--workers", "5"], "--workers 5 is more than --per-gpu 2 x 2 GPU(s) = 4"),
    (["--heartbeat-interval", "5", "--grace-period", "6"], "--grace-period 6 is shorter than two heartbeats"),
    (["--workers", "0"], "Invalid value for '--workers': 0 is not in the range x>=1."),
])
def test_bad_worker_options_are_one_line_exit_2_and_no_study(cli, tiny_spec, data_dir, storage_url, args, message):
    result = cli("start", "--trials", 2, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
                 *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not os.path.exists(storage_url.removeprefix("sqlite:///")) or not open_storage(storage_url).get_all_studies()


# --- many workers, one budget ----------------------------------------------------------------------------------

def test_eight_workers_run_exactly_the_budget_once_each(any_storage, tiny_spec, data_dir, monkeypatch):
    """The issue's 8 workers x 20 trials, with a stand-in objective: 160 trials, each run once, none lost."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # GPU ids as named; the stand-in never uses them
    session = quick_session(any_storage, tiny_spec, data_dir)
    slots = plan_workers(None, "0,1,2,3", 2)
    job = worker_job(session, slots, n_trials=160, timeout=None, seed=None, keep_top=0, objective=QuickObjective())
    run_pool(session.study, job, slots, Console(file=io.StringIO()))
    trials = trials_of(any_storage)
    assert sorted(t.number for t in trials) == list(range(160))
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({t.params["x"] for t in trials}) == 160
    assert len({t.user_attrs["worker"] for t in trials}) > 1
    assert all(t.user_attrs["cuda_visible_devices"] == t.user_attrs["gpu"] for t in trials)
    assert {t.user_attrs["gpu"] for t in trials} <= {"0", "1", "2", "3"}


def test_start_with_two_workers_stores_exactly_the_trials(cli, any_storage, tiny_spec, data_dir):
    """Real training in two worker processes: on the embedded default (no --storage), then on PostgreSQL."""
    storage_args = () if any_storage.startswith("sqlite") else ("--storage", any_storage)
    result = cli("start", "--workers", 2, "--trials", 4, "--spec", tiny_spec, "--data-dir", data_dir,
                 "--device", "cpu", *storage_args)
    assert result.exit_code == 0, result.output
    trials = trials_of(any_storage if storage_args else default_storage_url())
    assert len(trials) == 4
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(t.user_attrs["worker"].rsplit(":", 1)[1] != str(os.getpid()) for t in trials)
    assert "Trials: 4" in result.stdout


# --- crashes and signals ---------------------------------------------------------------------------------------

def trials_train_one_epoch(monkeypatch) -> None:
    """Trials run in this process train one epoch of their 500 (a study's epochs cannot change on resume): the
    500 only keep a trial of the first process running until the test stops it."""
    import tuner.search.objective
    from tuner.train import fit

    def one_epoch(config, *args, resume=None, **kwargs):
        return fit(config.replace(epochs=1), *args, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", one_epoch)


@pytest.mark.filterwarnings("ignore:The reported value is ignored")  # the retry's replayed epoch 1
def test_sigkill_leaves_the_trial_fail_and_the_next_start_retries_its_params(cli, tiny_spec, data_dir, storage_url,
                                                                             monkeypatch):
    common = ("--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url, "--device", "cpu",
              "--heartbeat-interval", 1, "--grace-period", 3, "--pruner", "none")  # random images: stuck at chance
    process = tune_process("start", "--trials", 1, "--epochs", 500, *common)
    victim = wait_for(running_trial_with_an_epoch(storage_url), what="a trial to report an epoch")
    process.kill()
    process.wait()
    storage = open_storage(storage_url)
    wait_for(lambda: heartbeat_ages(storage, "tiny", [victim.number]).get(victim.number, 0) > 3.5,
             what="the heartbeat to go stale")

    trials_train_one_epoch(monkeypatch)
    result = cli("start", "--trials", 1, "--epochs", 500, *common)
    assert result.exit_code == 0, result.output
    failed, retry = trials_of(storage_url)
    assert failed.number == victim.number and failed.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE
    assert retry.params == victim.params
    assert retry.system_attrs["failed_trial"] == victim.number
    assert retry.user_attrs["seed"] == victim.user_attrs["seed"]


def test_a_killed_worker_is_replaced_and_its_trial_retried_in_the_same_run(tiny_spec, data_dir, storage_url):
    session = quick_session(storage_url, tiny_spec, data_dir)
    output, errors = io.StringIO(), []

    def run() -> None:
        try:
            job = worker_job(session, [None, None], n_trials=6, timeout=None, seed=None, keep_top=0,
                             objective=QuickObjective(steps=4, seconds=0.3))
            run_pool(session.study, job, [None, None], Console(file=output))
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    victim = wait_for(running_trial_with_an_epoch(storage_url), what="a trial to report a step")
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    thread.join(90)
    assert not thread.is_alive() and not errors, errors

    trials = trials_of(storage_url)
    assert len(trials) == 7  # 6 outcomes, plus the trial that died with its worker
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim.number]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.params == victim.params and retry.state == TrialState.COMPLETE
    assert "was killed by SIGKILL" in output.getvalue() and "started a new worker" in output.getvalue()


@pytest.mark.filterwarnings("ignore:The reported value is ignored")  # the retry's replayed epoch 1
def test_sigterm_fails_the_running_trials_and_the_study_resumes(cli, tiny_spec, data_dir, storage_url, monkeypatch):
    common = ("--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url, "--device", "cpu",
              "--pruner", "none")  # on random images a trial is stuck at chance: these must run on
    process = tune_process("start", "--workers", 2, "--trials", 4, "--epochs", 500, *common)
    wait_for(running_trial_with_an_epoch(storage_url), what="a trial to report an epoch")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 130, stderr
    assert f"Resume with: tune start --study tiny --storage {storage_url}" in stderr
    assert "Traceback" not in stderr
    states = [t.state for t in trials_of(storage_url)]
    assert TrialState.RUNNING not in states and TrialState.FAIL in states

    trials_train_one_epoch(monkeypatch)
    resumed = cli("start", "--study", "tiny", "--trials", 1, "--epochs", 500, *common)
    assert resumed.exit_code == 0, resumed.output
    assert [t.state for t in trials_of(storage_url)].count(TrialState.COMPLETE) == 1  # none before the resume


def test_a_worker_gives_up_on_a_lost_database_with_one_line(storage_url):
    storage = open_storage(storage_url)
    storage.engine = create_engine("postgresql://postgres@127.0.0.1:9/gone", connect_args={"connect_timeout": 1})
    with pytest.raises(DatabaseLost, match=r"the database postgresql://postgres@127.0.0.1:9/gone did not answer "
                                           r"for 2 s \(connection refused\)"):
        wait_for_database(storage, ConnectionError("connection refused"), patience=2)


def worker_died(storage_url: str, system_attrs: dict | None = None):
    """A pool whose worker exited with code 2 while running trial 0 (with `system_attrs`), budget 3 with one taken:
    (study, the dead process, budget, pool, what the pool printed)."""
    study = optuna.create_study(study_name="tiny", storage=open_storage(storage_url))
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    for key, value in (system_attrs or {}).items():
        study._storage.set_trial_system_attr(trial._trial_id, key, value)
    dead: Any = SimpleNamespace(pid=424242, exitcode=EXIT_USER_ERROR)  # stands in for the worker's process
    trial.set_user_attr("worker", worker_name(dead.pid))
    budget = Budget(3)
    assert budget.take()
    output = io.StringIO()
    pool = Pool(study, WorkerJob("tiny", storage_url, StudySpec(), ""), [None], budget, Console(file=output))
    pool._exited(0, dead)
    return study, dead, budget, pool, output


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_worker_that_exits_with_an_error_has_its_trial_retried(storage_url):
    """Exit 2 (it lost the database): its RUNNING trial is failed and queued again with the same params at once,
    its ticket goes back into the budget, and the run ends with an error; the other workers go on."""
    study, dead, budget, pool, output = worker_died(storage_url)

    failed, retry = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.params == failed.params and retry.system_attrs["failed_trial"] == failed.number
    assert budget.left == 3 and pool.reaped == {failed.number} and not pool.processes
    assert pool.failures == ["worker " + worker_name(dead.pid) + " exited with code 2"]
    assert output.getvalue().strip() == (f"worker {worker_name(dead.pid)} exited with code 2; its trial 0 is marked "
                                         "FAIL and queued again with the same params")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_past_optunas_retry_limit_is_not_said_to_be_queued(storage_url):
    from tuner.storage import MAX_RETRY

    study, dead, budget, pool, output = worker_died(storage_url, {"retry_history": list(range(100, 100 + MAX_RETRY))})
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL]  # nothing queued
    assert budget.left == 2  # its place in the budget stays spent
    assert output.getvalue().strip() == (f"worker {worker_name(dead.pid)} exited with code 2; its trial 0 is marked "
                                         f"FAIL; 1 not queued again: retried {MAX_RETRY} times already")


def test_a_single_process_budget_starts_no_resource_tracker():
    """An in-process search counts its trials in a plain counter: no multiprocessing helper process starts."""
    code = ("from multiprocessing import resource_tracker\n"
            "from tuner.search.trial_loop import Budget\n"
            "budget = Budget(2)\n"
            "print(budget.take(), budget.take(), budget.take(), budget.left, end=' ')\n"
            "budget.give_back()\n"
            "print(budget.left, resource_tracker._resource_tracker._fd)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout == "True True False 0 1 None\n", out.stderr


# --- storages ------------------------------------------------------------------------------------------------------

def test_status_on_a_missing_sqlite_file_is_one_line_and_creates_nothing(cli, tmp_path):
    db = tmp_path / "x" / "nonexist.db"
    result = cli("status", "tiny", "--storage", f"sqlite:///{db}")
    assert result.exit_code == 2
    assert result.output == (f"Error: no study database at {db}: run `tune start` first, or point --storage (or "
                             "TUNE_STORAGE) at the database your studies are in\n")
    listing = cli("ls", "--storage", f"sqlite:///{db}")  # a listing shows no studies rather than an error
    assert listing.exit_code == 0 and "No studies in" in listing.output
    assert not db.exists() and not db.parent.exists()


def test_a_home_relative_sqlite_url_is_one_file_for_start_ls_and_status(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a `~` taken literally would be a folder here
    url = "sqlite:///~/studies/tune.db"
    optuna.create_study(study_name="home", storage=open_storage(url))  # what `tune start` opens
    assert (tmp_path / "studies" / "tune.db").is_file() and not (work / "~").exists()
    assert json.loads(cli("status", "home", "--storage", url, "--format", "json").stdout)["study"] == "home"
    assert [row["name"] for row in json.loads(cli("ls", "--storage", url, "--format", "json").stdout)] == ["home"]


def test_postgresql_urls_open_with_the_psycopg_driver(postgres_url):
    assert engine_url("postgresql://tune@db:5432/tune") == "postgresql+psycopg://tune@db:5432/tune"
    assert engine_url("postgresql+psycopg://tune@db/tune") == "postgresql+psycopg://tune@db/tune"
    storage = open_storage(postgres_url)
    assert storage.engine.dialect.driver == "psycopg"
    with pytest.raises(TuneError, match=r"^cannot open storage postgresql://tune:\*\*\*@127.0.0.1:9/gone: "):
        open_storage("postgresql://tune:secret@127.0.0.1:9/gone")


# --- joining and watching ----------------------------------------------------------------------------------------

def test_tune_worker_joins_a_study_with_its_stored_spec(cli, tiny_spec, data_dir, storage_url):
    assert cli("start", "--trials", 1, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
               "--device", "cpu").exit_code == 0
    result = cli("worker", "tiny", "--trials", 1, "--data-dir", data_dir, "--storage", storage_url, "--device", "cpu")
    assert result.exit_code == 0, result.output
    first, joined = trials_of(storage_url)
    assert joined.user_attrs["config"]["epochs"] == 2 and joined.user_attrs["config"]["model"] == "mlp"
    assert "Trials: 2" in result.stdout

    missing = cli("worker", "nope", "--storage", storage_url)
    assert missing.exit_code == 2
    assert missing.output.strip() == ("Error: no study named 'nope' in this storage (studies: tiny); "
                                      "check --storage / TUNE_STORAGE or run `tune ls`")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_status_shows_running_trials_with_worker_epoch_and_heartbeat(cli, any_storage):
    storage = open_storage(any_storage, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="watched", storage=storage, direction="maximize")
    run = {"run": {"id": "r1", "trials": 6}}
    for value in (0.5, 0.7, 0.6):
        trial = study.ask()
        for key, attr in run.items():
            trial.set_user_attr(key, attr)
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        study.tell(trial, value)
    running = study.ask()
    for key, attr in {"worker": "gpu-node-3:4242", "gpu": "1", "config": {"epochs": 5}, **run}.items():
        running.set_user_attr(key, attr)
    running.report(0.4, 1)
    running.report(0.55, 2)
    storage.record_heartbeat(running._trial_id)

    shot = json.loads(cli("status", "watched", "--storage", any_storage, "--format", "json").stdout)
    assert shot["counts"] == {"COMPLETE": 3, "RUNNING": 1}
    assert shot["best"]["number"] == 1 and shot["best"]["value"] == 0.7
    (row,) = shot["running"]
    assert (row["number"], row["worker"], row["gpu"], row["epoch"], row["epochs"]) == (3, "gpu-node-3:4242", "1", 2, 5)
    assert 0 <= row["heartbeat_age"] < 60
    assert shot["remaining"] == 2 and shot["eta_seconds"] is not None and shot["trials_per_hour"] > 0

    text = cli("status", "watched", "--storage", any_storage, "--once")
    assert text.exit_code == 0, text.output
    assert "4 trials (COMPLETE 3, RUNNING 1)" in text.output
    assert "gpu-node-3:4242" in text.output and "2/5" in text.output and "ago" in text.output
    assert "2 trial(s) left in the running budgets, ETA" in text.output


def test_study_names_complete_in_the_shell_for_worker_and_status(storage_url):
    from click.shell_completion import ShellComplete

    from tuner.cli import main

    for name in ("watched", "other"):
        optuna.create_study(study_name=name, storage=open_storage(storage_url))
    for command in ("worker", "status"):
        complete = ShellComplete(main, {}, "tune", "_TUNE_COMPLETE")
        found = complete.get_completions([command, "--storage", storage_url], "wa")
        assert [item.value for item in found] == ["watched"]


def test_a_worker_on_postgresql_warns_once_that_kept_weights_stay_local(cli, postgres_url, tiny_spec, data_dir,
                                                                         monkeypatch):
    spec = load_spec(tiny_spec)
    study = create_study("tiny", spec, open_storage(postgres_url), optuna.samplers.RandomSampler(),
                         optuna.pruners.NopPruner())
    record_spec(study, spec)
    monkeypatch.setattr("tuner.cli.workers.run_and_report", lambda *args, **kwargs: None)
    result = cli("worker", "tiny", "--storage", postgres_url, "--data-dir", data_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Warning: kept weights stay on this machine, in ") and "set TUNE_ARTIFACTS" in line

    assert local_weights_warning(postgres_url, keep_top=0) is None
    assert local_weights_warning("sqlite:///studies.db", keep_top=3) is None
    monkeypatch.setenv("TUNE_ARTIFACTS", "/shared/tune-artifacts")
    assert cli("worker", "tiny", "--storage", postgres_url, "--data-dir", data_dir, "--device", "cpu").stderr == ""


def test_worker_on_a_missing_database_says_so_and_creates_nothing(cli, tmp_path, data_dir):
    missing = tmp_path / "nowhere" / "studies.db"
    result = cli("worker", "tiny", "--storage", f"sqlite:///{missing}", "--data-dir", data_dir, "--device", "cpu")
    assert result.exit_code == 2
    assert result.output.strip() == (f"Error: no study database at {missing}: run `tune start` first, or point "
                                     "--storage (or TUNE_STORAGE) at the database your studies are in")
    assert not missing.parent.exists()

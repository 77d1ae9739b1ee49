"""`--stop-when-flat`: a search ends once no trial has beaten the best by more than the validation noise for as
many trials as it took to find it; the summary, the live bar and `tune status` say how long it has been flat."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timedelta

import optuna
import pytest

from tuner.record import STOPPED_ATTR, WARM_FROM_ATTR
from tuner.search.stopping import MIN_TRIALS, FlatStop, accuracy_noise, plateau, stagnation
from tuner.storage import open_storage
from tuner.testing import write_idx_dataset

TrialState = optuna.trial.TrialState


def study_of(values: list[float | None]) -> optuna.Study:
    """A maximized study whose trials end with `values` in turn (None: pruned), a minute apart."""
    study = optuna.create_study(direction="maximize")
    start = datetime(2026, 1, 1)
    for i, value in enumerate(values):
        state = TrialState.PRUNED if value is None else TrialState.COMPLETE
        trial = optuna.trial.create_trial(state=state, value=value)
        trial.datetime_start, trial.datetime_complete = start + timedelta(minutes=i), start + timedelta(minutes=i + 1)
        study.add_trial(trial)
    return study


def trials_in(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=open_storage(url)).trials


def test_the_noise_is_the_standard_error_of_accuracy_on_the_validation_images():
    assert accuracy_noise(0.84, 258) == pytest.approx((0.84 * 0.16 / 258) ** 0.5)
    assert accuracy_noise(1.0, 40) == pytest.approx(1 / 40)  # never zero: one image's worth


def test_gains_within_the_noise_do_not_reset_the_plateau():
    noise = accuracy_noise(0.80, 258)  # 0.0249
    values = [0.5, 0.80] + [0.79] * 10 + [0.81, 0.82] + [None] * 10 + [0.80 + 1.5 * noise] + [0.7] * 3
    shape = plateau(study_of(values).trials, optuna.study.StudyDirection.MAXIMIZE,
                    lambda v: accuracy_noise(v, 258))
    assert shape is not None
    assert (shape.trial, shape.tries, shape.since) == (24, 25, 3)  # 0.81 and 0.82 were luck, pruned trials count
    assert shape.patience == max(MIN_TRIALS, 25)


def test_a_best_found_early_is_given_as_many_trials_again_and_at_least_twenty():
    stop = FlatStop("accuracy", 258)
    late = study_of([0.5] * 29 + [0.8])  # the best at the 30th try
    assert stop.check(late) is None
    for _ in range(30):
        late.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.6))
        assert stop.check(late) is None
    late.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.6))
    reason = stop.check(late)
    assert reason is not None and reason.startswith("flat: no trial beat the best, trial 29 (0.8000), by more than "
                                                    "0.0249")
    assert "in the 31 trials since; it took 30 to get there" in reason

    early = FlatStop("accuracy", 258)
    assert early.check(study_of([0.8] + [0.6] * 20)) is None  # 20 since the best: not yet more than 20
    assert early.check(study_of([0.8] + [0.6] * 21)) is not None


def test_trials_a_warm_start_copied_in_set_the_bar_but_are_not_tries():
    stop = FlatStop("accuracy", 258)
    study = study_of([])
    for number in range(60):  # another study's 60 trials, its best the 25th: prior knowledge, run elsewhere
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.85 if number == 24 else 0.6,
                                                  user_attrs={WARM_FROM_ATTR: {"study": "old", "trial": number,
                                                                               "prior": True}}))
    assert stop.check(study) is None  # no try of its own yet: nothing to judge
    for _ in range(MIN_TRIALS):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.86))  # within the noise
    assert stop.check(study) is None
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.86))
    reason = stop.check(study)
    # the best is the first 0.86, within the noise of the warm start's 0.85: the line starts from it
    assert reason is not None and reason.startswith("flat: the best, trial 60 (0.8600), is within 0.0222 of trial "
                                                    "24 (0.8500)")
    assert reason.endswith("no trial beat trial 24 by more in the 21 trials since; it came with the warm start (the "
                           "search stops after 20 more)")


def test_stagnation_counts_trials_and_search_time_since_the_best():
    study = study_of([0.5, 0.9, 0.6, None, 0.7])
    flat = stagnation(study.trials, study.best_trial)
    assert flat is not None and (flat.trials, flat.seconds) == (3, 180.0)
    assert flat.text() == "no improvement for 3 trials / 3 min"
    assert stagnation(study.trials[:2], study.best_trial) is None


def test_stagnation_counts_only_the_time_trials_ran_not_the_idle_time_between_searches():
    study = study_of([0.5, 0.9, 0.6])
    late = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.7)  # a search resumed a day later
    late.datetime_start = study.trials[-1].datetime_complete + timedelta(days=1)
    late.datetime_complete = late.datetime_start + timedelta(minutes=2)
    study.add_trial(late)
    flat = stagnation(study.trials, study.best_trial)
    assert flat is not None and flat.text() == "no improvement for 2 trials / 3 min"  # 1 + 2 minutes, not a day


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory):
    """A small synthetic set: a one-epoch MLP trial takes a fraction of a second."""
    return write_idx_dataset(tmp_path_factory.mktemp("quick"), n_train=200, n_test=100)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_stop_when_flat_ends_the_search_says_why_and_a_resume_respects_it(cli, tiny_spec, quick_data, storage_url):
    common = ("--data-dir", quick_data, "--storage", storage_url, "--device", "cpu", "--keep-top", 0)
    result = cli("start", "--spec", tiny_spec, "--trials", 200, "--epochs", 1, "--seed", 0, "--stop-when-flat",
                 *common)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=open_storage(storage_url))
    ran = len(study.trials)
    assert MIN_TRIALS < ran < 200
    (stopped,) = [line for line in result.output.splitlines() if line.startswith("Stopped: ")]
    best = study.best_trial.number  # the line speaks of the best trial, the one the summary names
    assert re.match(rf"Stopped: flat: (no trial beat the best|the best), trial {best} ", stopped), stopped
    assert stopped.endswith("--no-stop-when-flat")
    assert "the validation noise (the standard error of accuracy on 40 images)" in stopped
    assert study.user_attrs[STOPPED_ATTR]["trials"] == ran
    shape = plateau(study.trials, study.direction, lambda v: accuracy_noise(v, 40))
    assert shape is not None and shape.since == shape.patience + 1  # it stopped as soon as the rule said so

    status = json.loads(cli("status", "tiny", "--storage", storage_url, "--format", "json").output)
    assert status["stopped"] == study.user_attrs[STOPPED_ATTR]["reason"]
    assert status["since_best"]["trials"] >= 1
    text = cli("status", "tiny", "--storage", storage_url, "--once").output
    assert "Since the best: no improvement for " in text and "Stopped: flat: " in text

    # the study's spec keeps the choice: resumed, it stops before a trial; --no-stop-when-flat goes on
    again = cli("start", "--study", "tiny", "--trials", 5, *common)
    assert again.exit_code == 0, again.output
    assert "Stopped: flat: " in again.output and len(trials_in(storage_url)) == ran
    more = cli("start", "--study", "tiny", "--trials", 2, "--no-stop-when-flat", *common)
    assert more.exit_code == 0, more.output
    assert "Stopped: flat" not in more.output and len(trials_in(storage_url)) == ran + 2
    assert "Stopped: trials done: 2 of 2 trials ran" in more.output.splitlines()
    study = optuna.load_study(study_name="tiny", storage=open_storage(storage_url))
    assert not study.user_attrs[STOPPED_ATTR]  # the search went on: the old stop no longer describes it
    assert "Stopped:" not in cli("status", "tiny", "--storage", storage_url, "--once").output


def test_stop_when_flat_as_a_spec_key_and_a_bad_value(cli, tiny_spec, quick_data, storage_url):
    tiny_spec.write_text(tiny_spec.read_text() + "stop_when_flat: maybe\n")
    result = cli("start", "--spec", tiny_spec, "--data-dir", quick_data, "--storage", storage_url, "--trials", 2)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {tiny_spec}: stop_when_flat must be true or false, got 'maybe'"]
    tiny_spec.write_text(tiny_spec.read_text().replace("stop_when_flat: maybe", "stop_when_flat: true"))
    result = cli("start", "--spec", tiny_spec, "--data-dir", quick_data, "--storage", storage_url, "--trials", 200,
                 "--epochs", 1, "--seed", 1, "--device", "cpu", "--keep-top", 0)
    assert result.exit_code == 0, result.output
    assert "Stopped: flat: " in result.output


def test_a_pool_stops_asking_for_trials_once_flat(tiny_spec, data_dir, storage_url):
    """Workers share the budget: the parent closes it when the search is flat, and running trials finish."""
    import io

    from rich.console import Console

    from tuner.search import session as sessions
    from tuner.search.pool import run_pool
    from tuner.search.runner import worker_job
    from tuner.testing import QuickObjective

    session = sessions.prepare(study_name=None, spec_file=str(tiny_spec), storage_url=storage_url,
                               data_dir=str(data_dir), device="cpu", seed=None, in_process=False)
    job = worker_job(session, [None, None], n_trials=300, timeout=None, seed=0, keep_top=0,
                     objective=QuickObjective(steps=1, seconds=0.2))
    stop = FlatStop("accuracy", 50)
    run_pool(session.study, job, [None, None], Console(file=io.StringIO()), stop)
    trials = trials_in(storage_url)
    assert stop.reason is not None and stop.reason.startswith("flat: ")
    assert len(trials) < 300 and all(t.state.is_finished() for t in trials)
    shape = plateau(trials, session.study.direction, lambda v: accuracy_noise(v, 50))
    assert shape is not None and shape.since > shape.patience


def test_status_shows_no_flat_stop_while_a_search_runs_again(storage_url):
    from rich.console import Console

    from tuner.look.status import render, snapshot

    study = optuna.create_study(study_name="tiny", storage=open_storage(storage_url), direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.8))
    study.set_user_attr(STOPPED_ATTR, {"reason": "flat: no trial beat the best", "trials": 1, "at": "2026-12-01"})
    assert snapshot(study).stopped == "flat: no trial beat the best"  # idle: the last search's stop stands
    study.ask()  # a search running again (with stop_when_flat false, say)
    shot = snapshot(study)
    assert shot.stopped is None
    console = Console(record=True, file=io.StringIO(), width=200)
    console.print(render(shot))
    text = console.export_text()
    assert "Study 'tiny'" in text and "Stopped:" not in text

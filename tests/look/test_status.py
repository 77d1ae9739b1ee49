"""`tune status` in a log: a line per interval (a live view alone would print nothing without a terminal), and a
pace that counts the time trials ran, not the time the study sat idle."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from tuner.look.status import snapshot
from tuner.storage import open_storage


def finished(number: int, start: datetime, seconds: float, value: float) -> FrozenTrial:
    return FrozenTrial(number=number, state=TrialState.COMPLETE, value=value, datetime_start=start,
                       datetime_complete=start + timedelta(seconds=seconds), params={}, distributions={},
                       user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=number)


def test_the_pace_counts_the_time_trials_ran_not_the_idle_time(storage_url):
    study = optuna.create_study(study_name="paused", storage=open_storage(storage_url), direction="maximize")
    started = datetime.now() - timedelta(minutes=50)  # two 60 s trials, then the study sat idle for 48 minutes
    study.add_trial(finished(0, started, 60, 0.5))
    study.add_trial(finished(1, started + timedelta(seconds=60), 60, 0.6))
    assert snapshot(study).trials_per_hour == pytest.approx(60, rel=0.01)  # not 2 in 50 minutes (2.4 an hour)

    study.add_trial(finished(2, started + timedelta(seconds=60), 60, 0.7))  # in parallel with trial 1
    assert snapshot(study).trials_per_hour == pytest.approx(90, rel=0.01)


def test_without_a_terminal_status_prints_a_line_per_interval(storage_url):
    study = optuna.create_study(study_name="logged", storage=open_storage(storage_url), direction="maximize")
    study.add_trial(finished(0, datetime.now() - timedelta(minutes=2), 60, 0.75))
    process = subprocess.Popen([sys.executable, "-m", "tuner", "status", "logged", "--storage", storage_url,
                                "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    for text in lines:
        assert text.endswith(" logged: 1 trials (COMPLETE 1); best 0.7500 (trial 0); 60.0 trials/hour\n"), lines

"""The summary of `tune start` says why the search stopped, every time: its trials done, flat
(tests/search/test_stopping.py), interrupted (tests/search/test_start.py), or --timeout, with how far the last
trial outlasted it and the command that runs the trials that never started."""

from __future__ import annotations

import re
import time

import pytest

import tuner.search.objective
from tuner.train import fit as real_fit


@pytest.mark.usefixtures("one_thread")
def test_a_timeout_stop_says_so_with_the_trials_that_never_ran(cli, tiny_spec, data_dir, storage_url, monkeypatch):
    def slow_fit(*args, **kwargs):
        time.sleep(2.0)  # each trial outlasts the 1 s timeout
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(tuner.search.objective, "fit", slow_fit)
    result = cli("start", "--trials", 4, "--timeout", 1, "--spec", tiny_spec, "--data-dir", data_dir, "--storage",
                 storage_url, "--device", "cpu", "--keep-top", 0, "--epochs", 1)
    assert result.exit_code == 0, result.output
    (stopped,) = [line for line in result.stdout.splitlines() if line.startswith("Stopped: ")]
    assert re.fullmatch(
        r"Stopped: timeout: --timeout 1 s passed after 1 of 4 trials, the last one running on 0:00:0\d past it to "
        r"its end \(the search took 0:00:\d\d\); 3 never started\. Run them: tune start --study tiny --storage "
        + re.escape(storage_url) + r" --data-dir \S+ --trials 3", stopped), stopped
    assert result.stdout.index("Trials: 1 (COMPLETE 1)") < result.stdout.index(stopped)


@pytest.mark.usefixtures("one_thread")
def test_a_search_that_ran_all_its_trials_says_so(cli, tiny_spec, data_dir, storage_url):
    result = cli("start", "--trials", 1, "--timeout", 3600, "--spec", tiny_spec, "--data-dir", data_dir,
                 "--storage", storage_url, "--device", "cpu", "--keep-top", 0, "--epochs", 1)
    assert result.exit_code == 0, result.output
    assert "Stopped: trials done: 1 of 1 trials ran" in result.stdout.splitlines()

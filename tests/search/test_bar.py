"""The live bar of `tune start` on a real terminal of 80 columns (a pty): the counts, elapsed time and ETA come
first and are never cut while a trial runs; the params and the best so far shorten instead. Past --timeout, the bar
says the running trial goes on, and a log says so once it is far over."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest
from rich.console import Console

from tuner.search.bar import fitted
from tuner.search.progress import Overtime

DRIVER = """
import time
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from rich.console import Console
from tuner.search.progress import SearchProgress

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize")
for value in (0.8123, 0.9012):
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=value))
deadline = time.time() + {timeout}
with SearchProgress(study, 20, 8, Console(stderr=True), deadline) as progress:
    trial = study.ask({{"model": CategoricalDistribution(["bncnn"]), "optimizer": CategoricalDistribution(["adamw"]),
                        "lr": FloatDistribution(0.0123, 0.0124), "batch_size": CategoricalDistribution([128])}})
    progress.done = 3
    for done in range(0, 400, 40):
        progress.on_batch(trial, 2, done, 400)
        time.sleep(0.15)
"""


def bar_on_a_terminal(columns: int, timeout: float = 3600) -> str:
    """The last frame the bar drew on a pty `columns` wide, its escape codes removed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen([sys.executable, "-c", DRIVER.format(timeout=timeout)], stdin=follower,
                               stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the driver exited and closed the pty
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    frames = [line.rstrip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return frames[-1]


def test_at_80_columns_the_counts_elapsed_time_and_eta_are_never_cut():
    frame = bar_on_a_terminal(80)
    assert len(frame) <= 80
    assert re.match(r"trials +3/20 \d:\d\d:\d\d ETA [\d:-]+ .*trial 2 epoch 2/8", frame), frame
    assert "…" not in frame.split("trial 2 epoch 2/8")[0]  # nothing before the trial's own text is shortened


def test_wider_terminals_show_more_of_the_params_and_the_best():
    narrow, wide = bar_on_a_terminal(100), bar_on_a_terminal(160)
    assert re.match(r"trials +3/20 \d:\d\d:\d\d ETA", narrow) and re.match(r"trials +3/20 \d:\d\d:\d\d ETA", wide)
    assert "best 0.9012" in narrow
    assert "model=bncnn optimizer=adamw lr=0.012 batch_size=128" in wide and "best 0.9012 (trial 1)" in wide


def test_past_the_timeout_the_bar_says_the_running_trial_goes_on():
    frame = bar_on_a_terminal(120, timeout=-90)
    assert re.match(r"trials +3/20 \d:\d\d:\d\d ETA", frame), frame
    assert "--timeout passed 0:01:3" in frame


def test_the_text_gives_way_params_first_then_the_best_then_the_trials_own():
    pieces = {"status": ("trial 4 epoch 1/8 batch 10/400 val 0.8000", "trial 4 epoch 1/8 val 0.8000",
                         "trial 4 epoch 1/8"),
              "params": ("optimizer=adam lr=0.01", "optimizer=adam …", ""),
              "best": ("best 0.9 (trial 2), no improvement for 3 trials / 2 min", "best 0.9 (trial 2)", "best 0.9", "")}
    full = fitted(pieces, 500)
    assert full == ("trial 4 epoch 1/8 batch 10/400 val 0.8000 | optimizer=adam lr=0.01 | best 0.9 (trial 2), no "
                    "improvement for 3 trials / 2 min")
    assert fitted(pieces, 70) == "trial 4 epoch 1/8 batch 10/400 val 0.8000 | best 0.9 (trial 2)"
    assert fitted(pieces, 30) == "trial 4 epoch 1/8 val 0.8000"
    assert fitted(pieces, 10) == "trial 4 epoch 1/8"  # the caller's ellipsis cuts the rest


@pytest.mark.parametrize("timeout", [240.0, 20.0])
def test_a_log_says_once_that_the_running_trial_is_far_past_the_timeout(timeout):
    log = io.StringIO()
    console = Console(file=log, width=200)
    overtime = Overtime(time.time() + timeout, console)
    assert overtime.check("trial 14 (epoch 3/8)") is None
    overtime.deadline = time.time() - 30  # a little over: the log waits, the bar would say it
    assert overtime.check("trial 14 (epoch 3/8)") is not None and log.getvalue() == ""
    overtime.deadline = time.time() - max(60.0, timeout / 4) - 1
    overtime.check("trial 14 (epoch 3/8)")
    overtime.check("trial 14 (epoch 4/8)")
    (line,) = log.getvalue().splitlines()
    assert re.fullmatch(rf"trial 14 \(epoch 3/8\) runs on 0:0\d:\d\d past --timeout {timeout:.0f} s: no new trial "
                        r"starts, it stops when its epochs are done \(Ctrl-C stops it now; the study resumes\)", line)

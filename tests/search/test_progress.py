"""The live bar of `tune start`: trials done with the share of the running one, an ETA, the epoch and the batch
within it (long epochs no longer sit at 0), the running trial's main params; and the same pace in a log."""

from __future__ import annotations

import io
import re
import time

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from rich.console import Console

import tuner.train
from tuner.datasets import load_splits
from tuner.search.progress import SearchProgress
from tuner.spec import RunConfig
from tuner.train import Epoch, fit


def rendered(progress: SearchProgress) -> str:
    console = Console(record=True, width=240, file=io.StringIO())
    console.print(progress.bar.get_renderable())
    return console.export_text()


def test_the_bar_shows_the_batch_the_running_trials_params_and_an_eta():
    study = optuna.create_study(direction="maximize")
    progress = SearchProgress(study, total=4, epochs=2, console=Console(file=io.StringIO(), force_terminal=True))
    trial = study.ask({"optimizer": CategoricalDistribution(["adam", "sgd"]),
                       "lr": FloatDistribution(1e-4, 1e-1, log=True), "batch_size": CategoricalDistribution([64]),
                       "gamma": FloatDistribution(0.5, 0.99)})
    for done in (0, 100, 200):
        progress.on_batch(trial, 1, done, 400)
        time.sleep(0.05)
    text = rendered(progress)
    lr = f"{trial.params['lr']:.2g}"
    assert f"trial 0 epoch 1/2 batch 200/400 | optimizer={trial.params['optimizer']} lr={lr} batch_size=64 | no " \
           "completed trial yet" in text
    assert "gamma" not in text  # the main params only
    assert re.search(r"ETA \d+:\d\d", text), text
    assert progress.bar.tasks[0].completed == 0.25  # a quarter of the first trial of four: half its first epoch

    progress.on_epoch(trial, Epoch(1, 0.5, 0.8123, 0.4, 1.0))
    assert "trial 0 epoch 1/2 val 0.8123 |" in rendered(progress)
    progress.on_batch(trial, 2, 100, 400)
    assert "trial 0 epoch 2/2 batch 100/400 val 0.8123 |" in rendered(progress)


def test_training_reports_its_batches_about_once_a_second(data_dir, monkeypatch):
    splits = load_splits("fashion-mnist", str(data_dir), 0.2, 0, "cpu")
    config = RunConfig(model="mlp", epochs=2, batch_size=32, validation=0.2)
    heard: list[tuple[int, int, int]] = []
    fit(config, splits, on_batch=lambda *progress: heard.append(progress), test=False)
    batches = -(-len(splits.train) // 32)
    assert heard[0] == (1, 0, batches) and (2, 0, batches) in heard  # as each epoch starts; short epochs: no more
    assert len(heard) <= 4

    monkeypatch.setattr(tuner.train, "BATCH_REPORT_SECONDS", 0.0)
    heard.clear()
    fit(config, splits, on_batch=lambda *progress: heard.append(progress), test=False)
    assert heard == [(epoch, done, batches) for epoch in (1, 2) for done in range(batches)]


def test_a_log_says_how_many_trials_are_done_and_when_the_rest_will_be(cli, tiny_spec, data_dir, storage_url):
    result = cli("start", "--trials", 2, "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("trial ")]
    assert re.search(r"; 1/2 done, ETA \d+:\d\d:\d\d$", lines[0]), lines
    assert lines[1].endswith("; 2/2 done, ETA 0:00:00")

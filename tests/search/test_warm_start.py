"""`tune start --warm-start OTHER`: a new study begins with another study's best trials, fitted to its space, and
takes its completed trials as they are where both train alike; anything that cannot be used is one line and no
study is written."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from torchvision.datasets import FashionMNIST

from tuner.record import INPUT_ATTR, WARM_FROM_ATTR, WARM_START_ATTR, record_spec
from tuner.search.warm_start import WARM_TOP
from tuner.spec import StudySpec
from tuner.storage import open_storage

TrialState = optuna.trial.TrialState


pytestmark = pytest.mark.usefixtures("one_thread")


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).trials


def study_names(url: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage=open_storage(url))]


@pytest.fixture
def source(cli, tiny_spec, data_dir, tmp_path) -> str:
    """Study `tiny` (adam or sgd, lr 1e-4 to 1e-2, batch 32 or 64): 8 one-epoch trials, in a storage of its own."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    result = cli("start", "--spec", tiny_spec, "--data-dir", data_dir, "--storage", url, "--trials", 8,
                 "--epochs", 1, "--seed", 0, "--device", "cpu", "--keep-top", 0)
    assert result.exit_code == 0, result.output
    return url


def changed_spec(tiny_spec, tmp_path, **replace: str):
    text = tiny_spec.read_text().replace("name: tiny", "name: wide")
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "wide.yaml"
    path.write_text(text)
    return path


def warm_started(cli, spec, data_dir, storage_url: str, source: str, trials: int):
    """(the result of `tune start --spec SPEC --warm-start tiny` from `source`, tiny's best trials it queued)."""
    result = cli("start", "--spec", spec, "--data-dir", data_dir, "--storage", storage_url, "--trials", trials,
                 "--epochs", 1, "--seed", 0, "--device", "cpu", "--keep-top", 0, "--warm-start", "tiny",
                 "--warm-start-storage", source)
    assert result.exit_code == 0, result.output
    old = sorted((t for t in trials_of(source, "tiny") if t.state == TrialState.COMPLETE),
                 key=lambda t: (-float(t.value or 0.0), t.number))[:WARM_TOP]
    return result, old


def test_warm_start_queues_the_best_trials_fitted_to_the_new_space(cli, source, tiny_spec, data_dir, storage_url,
                                                                   tmp_path):
    """One choice changed (sgd -> adamw) and a narrower lr range: the best trials run first, sgd left to the
    sampler and a small lr clipped, each said in one line."""
    spec = changed_spec(tiny_spec, tmp_path, **{"[adam, sgd]": "[adam, adamw]",
                                                "low: 1.0e-4": "low: 1.0e-3"})
    result, old = warm_started(cli, spec, data_dir, storage_url, source, 6)
    new = trials_of(storage_url, "wide")
    queued = [t for t in new if WARM_FROM_ATTR in t.user_attrs]
    assert [t.user_attrs[WARM_FROM_ATTR] for t in queued] == [{"study": "tiny", "trial": t.number} for t in old]
    assert [t.number for t in queued] == list(range(len(old)))  # they ran first
    for was, now in zip(old, queued, strict=True):
        assert now.params["lr"] == max(was.params["lr"], 1e-3)
        assert now.params["batch_size"] == was.params["batch_size"] and now.params["gamma"] == was.params["gamma"]
        if was.params["optimizer"] == "adam":
            assert now.params["optimizer"] == "adam"
    sgd = [str(t.number) for t in old if t.params["optimizer"] == "sgd"]
    if sgd:  # one line for all the trials it concerns
        assert (f"warm start: trial{'s' if len(sgd) > 1 else ''} {', '.join(sgd)} of tiny: optimizer='sgd' is not "
                "among this study's choices ['adam', 'adamw']: the sampler picks it") in result.output.splitlines()
        if was.params["lr"] < 1e-3:
            assert (f"warm start: trial {was.number} of tiny: lr={was.params['lr']!r} clipped to 0.001, into "
                    "[0.001, 0.01]") in result.output
    assert f"Warm start from study tiny: its best {len(old)} trial(s) queued to run first" in result.output
    study = optuna.load_study(study_name="wide", storage=open_storage(storage_url))
    assert study.user_attrs[WARM_START_ATTR] == {"study": "tiny", "storage": source, "queued": len(old),
                                                 "added": 0}
    rerun = cli("start", "--study", "wide", "--data-dir", data_dir, "--storage", storage_url, "--trials", 1,
                "--device", "cpu", "--keep-top", 0, "--warm-start", "tiny", "--warm-start-storage", source)
    assert rerun.exit_code == 0, rerun.output  # the same command again resumes: nothing is queued twice
    assert "Warm start from" not in rerun.output and len(trials_of(storage_url, "wide")) == 7


def test_a_parameter_the_new_space_lacks_is_said_once_not_once_per_trial(cli, source, tiny_spec, data_dir,
                                                                        storage_url, tmp_path):
    spec = changed_spec(tiny_spec, tmp_path, **{"  gamma: {low: 0.8, high: 0.99}\n": ""})
    result, old = warm_started(cli, spec, data_dir, storage_url, source, 1)
    lines = [line for line in result.output.splitlines() if "left out" in line]
    assert lines == [f"warm start: trials {', '.join(str(t.number) for t in old)} of tiny: gamma is not searched by "
                     "this study: left out"]


def test_a_study_that_trains_alike_takes_the_trials_themselves_as_prior_knowledge(cli, source, tiny_spec, data_dir,
                                                                                  tmp_path):
    spec = changed_spec(tiny_spec, tmp_path, **{"sampler: random": "sampler: tpe"})
    result = cli("start", "--spec", spec, "--data-dir", data_dir, "--storage", source, "--trials", 2, "--epochs", 1,
                 "--seed", 0, "--device", "cpu", "--keep-top", 0, "--warm-start", "tiny")
    assert result.exit_code == 0, result.output
    old = trials_of(source, "tiny")
    new = trials_of(source, "wide")
    added = [t for t in new if WARM_FROM_ATTR in t.user_attrs]
    assert [(t.params, t.value, t.intermediate_values) for t in added] == [
        (t.params, t.value, t.intermediate_values) for t in old if t.state == TrialState.COMPLETE]
    assert len(new) == len(added) + 2  # nothing rerun: the two trials of this run are new ones
    assert f"and {len(added)} completed trials added as prior knowledge" in result.output


def fake_source(url: str, name: str = "other", trials: int = 1, **spec: Any) -> optuna.Study:
    """A tune study `name` recorded with a spec and inputs, without training."""
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    record_spec(study, StudySpec(name=name, **spec))
    study.set_user_attr(INPUT_ATTR, {"classes": list(FashionMNIST.classes)})
    for _ in range(trials):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=0.5, params={"optimizer": "rmsprop"},
            distributions={"optimizer": optuna.distributions.CategoricalDistribution(["rmsprop"])}))
    return study


@pytest.mark.parametrize(("prepare", "args", "message"), [
    ({}, ["--warm-start", "nope"], "--warm-start nope: no study named 'nope' in this storage (studies: other)"),
    (None, ["--warm-start-storage", "sqlite:///x.db"],
     "--warm-start-storage names where --warm-start's study is: give --warm-start STUDY"),
    ({"dataset": "mnist"}, ["--warm-start", "other"],
     "--warm-start other: it searched mnist, this study trains on fashion-mnist: its best params need not suit "
     "other data; warm-start from a study on the same dataset"),
    ({"classes": True}, ["--warm-start", "other"],
     "--warm-start other: it was trained on other classes (T-shirt/top, "),
    ({"metric": "loss"}, ["--warm-start", "other"],
     "--warm-start other: it selected on validation loss, this study on accuracy: its best trials are not the "
     "best by this study's measure"),
    ({"trials": 0}, ["--warm-start", "other"],
     "--warm-start other: nothing to enqueue: that study has no completed trial yet"),
    ({}, ["--warm-start", "other"],
     "--warm-start other: nothing to enqueue: none of its best 5 trials has a value this study can use "
     "(optimizer='rmsprop' is not among this study's choices ['adam', 'sgd']: the sampler picks it)"),
    ({}, ["--warm-start", "tiny"], "--warm-start tiny: a study cannot warm-start itself; name another study"),
])
def test_bad_warm_starts_are_one_line_and_write_no_study(cli, tiny_spec, data_dir, storage_url, prepare, args,
                                                         message):
    if prepare is not None:
        settings = dict(prepare)
        trials = settings.pop("trials", 1)
        other_classes = settings.pop("classes", False)
        study = fake_source(storage_url, trials=trials, **settings)
        if other_classes:
            study.set_user_attr(INPUT_ATTR, {"classes": ["T-shirt/top", "Trouser"]})
    before = study_names(storage_url) if prepare is not None else []
    result = cli("start", "--spec", tiny_spec, "--data-dir", data_dir, "--storage", storage_url, "--trials", 1,
                 "--device", "cpu", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    after = study_names(storage_url) if prepare is not None else []
    assert after == before  # the new study was not created


def test_warm_start_into_a_study_with_trials_of_its_own_is_refused(cli, source, tiny_spec, data_dir):
    spec = changed_spec(tiny_spec, tiny_spec.parent)
    assert cli("start", "--spec", spec, "--data-dir", data_dir, "--storage", source, "--trials", 1, "--epochs", 1,
               "--device", "cpu", "--keep-top", 0).exit_code == 0
    result = cli("start", "--study", "wide", "--data-dir", data_dir, "--storage", source, "--trials", 1,
                 "--device", "cpu", "--warm-start", "tiny")
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: --warm-start tiny: study 'wide' exists already with 1 trials; a warm "
                                     "start begins a new study: use a new --study NAME")
    assert len(trials_of(source, "wide")) == 1


def test_a_clipped_value_lands_on_the_new_ranges_grid():
    from tuner.search.warm_start import _fitted
    from tuner.spec import Range

    assert _fitted("batch_size", 100, Range(16, 100, step=32)) == (80, "batch_size=100 clipped to 80, into [16, 100]")
    assert _fitted("batch_size", 60, Range(16, 100, step=32))[0] == 48  # the nearest point of 16, 48, 80
    assert _fitted("batch_size", 80, Range(16, 100, step=32)) == (80, None)


def test_a_warm_start_interrupted_while_written_writes_the_rest_when_run_again(cli, source, tiny_spec, data_dir,
                                                                               storage_url, tmp_path, monkeypatch):
    spec = changed_spec(tiny_spec, tmp_path)
    args = ("start", "--spec", spec, "--data-dir", data_dir, "--storage", storage_url, "--trials", 1, "--device",
            "cpu", "--keep-top", 0, "--warm-start", "tiny", "--warm-start-storage", source)
    real_enqueue, calls = optuna.Study.enqueue_trial, []

    def enqueue_then_die(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_enqueue(self, *a, **k)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue_then_die)
    assert cli(*args).exit_code != 0
    assert len(trials_of(storage_url, "wide")) == 2  # two of the five queued when it stopped
    monkeypatch.setattr(optuna.Study, "enqueue_trial", real_enqueue)
    again = cli(*args)
    assert again.exit_code == 0, again.output
    queued = [t.user_attrs[WARM_FROM_ATTR]["trial"] for t in trials_of(storage_url, "wide")]
    assert len(queued) == WARM_TOP and len(set(queued)) == WARM_TOP  # the rest, none twice; one of them ran
    study = optuna.load_study(study_name="wide", storage=open_storage(storage_url))
    assert study.user_attrs[WARM_START_ATTR] == {"study": "tiny", "storage": source, "queued": WARM_TOP, "added": 0}

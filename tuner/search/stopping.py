"""When a search has stopped improving: `--stop-when-flat` ends it, and the live bar and `tune status` say how long
it has gone without a new best.

The rule: a trial improves on the search only when it beats the value of the last improvement by more than the
noise of the measurement. For validation accuracy that noise is known: the standard error of an accuracy p measured
on n validation images, sqrt(p (1 - p) / n); a trial that beats the best by less cannot be told from luck. (For a
loss no such formula exists: any gain counts.) The search ends when the finished trials since the last improvement
outnumber those it took to reach it, and MIN_TRIALS: a best found at trial 90 gets 90 more trials to be beaten,
one found at trial 5 gets 20. Pruned trials count as tries. It is Optuna's BestValueStagnationEvaluator made aware
of the noise, with a patience that grows with the search; it costs a pass over the trials when one finishes.

Optuna's own terminator was measured and not taken: `optuna.terminator` is deprecated since Optuna 4.9 (to be
removed in 6.0), and its regret bound (RegretBoundEvaluator, to compare with the same noise) fits a Gaussian
process at each check (0.3 to 0.8 s on this CPU, the first 3 to 5 s) and stays far above the noise: 0.14 to 0.21
through 150 one-epoch trials of a small synthetic search (noise 0.025), 0.074 after 20 completed trials on the mini
set (noise 0.023). It would not have stopped those searches (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.record import is_prior
from tuner.storage import first_value, is_multi_objective, maximizes

MIN_TRIALS = 20  # the least patience: a search is never judged flat before 21 trials failed to improve it
NoiseOf = Callable[[float], float]  # the noise of a measured value


@dataclass(frozen=True)
class Stagnation:
    """How long a study has gone without a new best: trials finished since the best one, and the search time
    between the best trial's end and the last trial's end."""

    trials: int
    seconds: float

    def text(self) -> str:
        minutes = self.seconds / 60
        span = f"{minutes:.0f} min" if minutes >= 1 else f"{self.seconds:.0f} s"
        return f"no improvement for {self.trials} trial{'s' if self.trials != 1 else ''} / {span}"


def stagnation(trials: Sequence[FrozenTrial], best: FrozenTrial | None) -> Stagnation | None:
    """Since `best` (the study's best trial) completed; None before one did, or when no trial finished since."""
    if best is None or best.datetime_complete is None:
        return None
    since = best.datetime_complete
    after = [t for t in trials if t.datetime_complete is not None and not is_prior(t)
             and t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.datetime_complete > since]
    if not after:
        return None
    spans = [(max(since, t.datetime_start or since), t.datetime_complete) for t in after
             if t.datetime_complete is not None]
    return Stagnation(len(after), busy_seconds(spans, since))


def busy_seconds(spans: Sequence[tuple[datetime, datetime]], start: datetime) -> float:
    """Seconds after `start` during which at least one of the (start, end) spans ran: trials running side by side
    count once, and the time the study sat idle (between two searches) not at all."""
    busy, end = 0.0, start
    for first, last in sorted(spans):
        if last > end:
            busy += (last - max(first, end)).total_seconds()
            end = last
    return busy


def best_of(study: optuna.Study) -> FrozenTrial | None:
    """The study's best trial (of those that met its constraints); in a multi-objective study, the trial of its
    Pareto front with the best metric (the first objective). None before one completed."""
    if is_multi_objective(study):
        sign = 1.0 if maximizes(study) else -1.0
        return max(study.best_trials, key=lambda t: (sign * (first_value(t) or 0.0), -t.number), default=None)
    try:
        return study.best_trial
    except ValueError:
        return None


def accuracy_noise(accuracy: float, images: int) -> float:
    """The standard error of an accuracy measured on `images` images."""
    p = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(max(p * (1 - p), 1.0 / images) / images)


@dataclass(frozen=True)
class Plateau:
    """Where a search stands by the rule: the last improvement (its value, its trial, after how many tries), the
    tries since, the noise an improvement must beat."""

    value: float
    trial: int
    tries: int  # finished trials up to and including the last improvement
    since: int  # finished trials after it
    noise: float

    @property
    def patience(self) -> int:
        return max(MIN_TRIALS, self.tries)


def plateau(trials: Sequence[FrozenTrial], direction: StudyDirection, noise: NoiseOf) -> Plateau | None:
    """The plateau of `trials` (in the order they were numbered); None before any completed. Trials a warm start
    copied in set the value to beat, after no tries: the study's own trials are the tries."""
    sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
    finished = [t for t in sorted(trials, key=lambda t: t.number)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    priors = [t for t in finished if is_prior(t) and t.value is not None]
    tries = [t for t in finished if not is_prior(t)]
    last: tuple[float, int, int] | None = None  # (value, trial number, tries until then)
    if priors:
        best = max(priors, key=lambda t: sign * float(t.value or 0.0))
        last = (float(best.value or 0.0), best.number, 0)
    for count, trial in enumerate(tries, start=1):
        if trial.state != TrialState.COMPLETE or trial.value is None:
            continue
        if last is None or sign * (trial.value - last[0]) > noise(last[0]):
            last = (trial.value, trial.number, count)
    if last is None:
        return None
    return Plateau(last[0], last[1], last[2], len(tries) - last[2], noise(last[0]))


class FlatStop:
    """`check(study)` says why the search should end (None: go on), judged again only once a trial finished."""

    def __init__(self, metric: str, validation_images: int | None) -> None:
        images = validation_images if metric == "accuracy" else None
        self.noise: NoiseOf = (lambda value: accuracy_noise(value, images)) if images else (lambda value: 0.0)
        self.noise_text = (f"the validation noise (the standard error of accuracy on {images} images)" if images
                           else "nothing (a loss has no formula for its noise: any gain counts)")
        self.reason: str | None = None
        self._seen = -1

    def check(self, study: optuna.Study) -> str | None:
        if self.reason is not None:
            return self.reason
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state.is_finished() for t in trials)
        if finished == self._seen:
            return None
        self._seen = finished
        at = plateau(trials, study.direction, self.noise)
        if at is not None and at.since > at.patience:
            self.reason = flat_reason(at, best_of(study), self.noise_text)
        return self.reason


def flat_reason(at: Plateau, best: FrozenTrial | None, noise_text: str) -> str:
    """Why a search is flat, said from its best trial (which may have beaten the last improvement by less than the
    noise, and so not count as one)."""
    if best is None or best.number == at.trial or best.value is None:
        what = (f"no trial beat the best, trial {at.trial} ({at.value:.4f}), by more than {at.noise:.4f}, "
                f"{noise_text}, in the {at.since} trials since")
    else:
        what = (f"the best, trial {best.number} ({best.value:.4f}), is within {at.noise:.4f} of trial {at.trial} "
                f"({at.value:.4f}), {noise_text}, and no trial beat trial {at.trial} by more in the {at.since} "
                "trials since")
    return f"flat: {what}; " + (
        f"it took {at.tries} to get there (the search stops after as many more, and at least {MIN_TRIALS})"
        if at.tries else f"it came with the warm start (the search stops after {MIN_TRIALS} more)")


def stopped_record(reason: str, study: optuna.Study) -> dict[str, Any]:
    """The STOPPED_ATTR of a search `reason` ended."""
    return {"reason": reason, "trials": len(study.get_trials(deepcopy=False)),
            "at": datetime.now().astimezone().isoformat(timespec="seconds")}

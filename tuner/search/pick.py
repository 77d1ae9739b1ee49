"""`tune export --pick`: which trial of a study to ship, by accuracy and measured latency, then proven again.

Rules (over the completed trials that met the study's constraints):
- `best-feasible`: the best value; values within the validation noise of it (the standard error of an accuracy on
  the validation images) are ties, and a tie goes to the fastest.
- `fastest-within:0.5pp`: the fastest trial whose value is within 0.5 points (0.005 of accuracy; a bare number is in
  the metric's units) of the best, or within the validation noise when that is wider.
- `knee`: on the front of value against latency (no other trial is both better and faster), the trial closest to the
  ideal corner (the best value at the lowest latency) once both axes are scaled to [0, 1].
- `trial:N`: trial N, whatever its state (as `--trial N`).
Latency is the search-time figure each trial recorded (tuner.search.constraints) at the study's `latency_stat`.
In a multi-objective study the candidates are its Pareto front (Optuna's `best_trials`), the value is the metric (the
first objective), and `tune export` without --trial or --pick picks by `best-feasible` (DEFAULT_RULE).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner.errors import TuneError
from tuner.record import stored_spec
from tuner.search.constraints import deployment, is_feasible
from tuner.search.stopping import accuracy_noise
from tuner.ship.deploy import prove_config
from tuner.ship.export import input_section, trial_config
from tuner.ship.latency import Measurement
from tuner.storage import first_value, is_multi_objective, maximizes

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

RULES = ("best-feasible", "knee", "fastest-within:0.5pp", "trial:N")
DEFAULT_RULE = "best-feasible"  # how `tune export` picks from a multi-objective study's front without --pick
_WITHIN = re.compile(r"^fastest-within:([0-9]*\.?[0-9]+)(pp)?$")


@dataclass(frozen=True)
class Pick:
    trial: FrozenTrial
    why: str  # one line: the rule, the trial, and what it was chosen over


def _latency(trial: FrozenTrial, stat: str) -> float | None:
    record = deployment(trial)
    return None if record is None else float(record["measured"]["latency_ms"][stat])


def _noise(trial: FrozenTrial, metric: str) -> float:
    record = deployment(trial) or {}
    images = record.get("validation_images")
    value = first_value(trial)
    if metric != "accuracy" or not isinstance(images, int) or images <= 0 or value is None:
        return 0.0
    return accuracy_noise(value, images)


def _candidates(study: optuna.Study, rule: str, stat: str) -> list[FrozenTrial]:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if is_multi_objective(study):
        done = study.best_trials  # its Pareto front: every trial another is no better than on all objectives
    feasible = [t for t in done if is_feasible(t)]
    if not feasible:
        raise TuneError(f"--pick {rule}: study {study.study_name!r} has no completed trial that meets its "
                        "constraints: run more trials, loosen the constraints, or pick one with --pick trial:N")
    if rule != "best-feasible" and any(_latency(t, stat) is None for t in feasible):
        raise TuneError(f"--pick {rule}: trials of study {study.study_name!r} have no measured latency (the study "
                        "was started without constraints): start one with --max-latency (or --max-params, "
                        "--max-size), or use --pick best-feasible or trial:N")
    return feasible


def _fastest(trials: list[FrozenTrial], stat: str, sign: float) -> FrozenTrial:
    """The fastest; among equally fast ones (the same architecture), the best value."""
    return min(trials, key=lambda t: (_latency(t, stat) or 0.0, -sign * (first_value(t) or 0.0), t.number))


def _describe(trial: FrozenTrial, stat: str) -> str:
    latency = _latency(trial, stat)
    speed = f", {stat} {latency:.3g} ms" if latency is not None else ""
    return f"trial {trial.number} (value {first_value(trial) or 0.0:.4f}{speed})"


def _knee(trials: list[FrozenTrial], sign: float, stat: str) -> FrozenTrial:
    points = [(sign * (first_value(t) or 0.0), _latency(t, stat) or 0.0, t) for t in trials]
    front = [p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q[:2] != p[:2] for q in points)]
    goods, lats = [p[0] for p in front], [p[1] for p in front]
    good_span, lat_span = (max(goods) - min(goods)) or 1.0, (max(lats) - min(lats)) or 1.0

    def distance(point: tuple[float, float, FrozenTrial]) -> tuple[float, int]:
        shortfall = (max(goods) - point[0]) / good_span
        slowness = (point[1] - min(lats)) / lat_span
        return math.hypot(shortfall, slowness), point[2].number

    return min(front, key=distance)[2]


def requested_trial(rule: str | None) -> int | None:
    """N of `trial:N` (the caller looks it up as for --trial N), else None."""
    if rule is not None and rule.startswith("trial:") and rule[6:].isdigit():
        return int(rule[6:])
    return None


def default_rule(study: optuna.Study) -> str | None:
    """The rule `tune export` picks by without --trial or --pick: DEFAULT_RULE for a multi-objective study (which
    has no single best trial), else None (the best trial)."""
    return DEFAULT_RULE if is_multi_objective(study) else None


def pick_trial(study: optuna.Study, rule: str) -> Pick:
    """The trial `rule` picks (see the module's docstring; `trial:N` is `requested_trial`'s), with why; TuneError
    for an unknown rule."""
    within = _WITHIN.match(rule)
    if rule not in ("best-feasible", "knee") and within is None:
        raise TuneError(f"unknown --pick {rule!r}: use one of {', '.join(RULES)}")
    spec = stored_spec(study)
    stat = spec.constraints.latency_stat if spec is not None else "p95"
    metric = spec.metric if spec is not None else "accuracy"
    sign = 1.0 if maximizes(study) else -1.0
    trials = _candidates(study, rule, stat)
    best = max(trials, key=lambda t: (sign * (first_value(t) or 0.0), -t.number))
    if rule == "knee":
        knee = _knee(trials, sign, stat)
        return Pick(knee, f"knee: {_describe(knee, stat)}, of the front of value against {stat} latency the "
                          "closest to the best value at the lowest latency")
    margin = 0.0
    if within is not None:
        margin = float(within.group(1)) / (100 if within.group(2) else 1)
    tolerance = max(margin, _noise(best, metric))
    top = sign * (first_value(best) or 0.0)
    tied = [t for t in trials if top - sign * (first_value(t) or 0.0) <= tolerance + 1e-12]
    chosen = _fastest(tied, stat, sign) if all(_latency(t, stat) is not None for t in tied) else best
    how = f"within {tolerance:.4f} of the best" + (" (the validation noise)" if tolerance > margin else "")
    others = f"; the best value is {_describe(best, stat)}" if chosen is not best else ""
    return Pick(chosen, f"{rule}: {_describe(chosen, stat)}, the fastest of {len(tied)} trial(s) {how}{others}")


def prove_pick(study: optuna.Study, trial: FrozenTrial) -> tuple[dict[str, Any] | None, list[str]]:
    """The chosen trial's model measured again with more runs against the study's constraints: (the export's
    deployment section, lines to say); (None, []) for a study without constraints."""
    spec = stored_spec(study)
    if spec is None or not spec.constraints.active:
        return None, []
    config = trial_config(study.study_name, trial)
    shape = input_section(trial, config)
    if "shape" not in shape or "num_classes" not in shape:
        return None, [f"note: trial {trial.number} recorded no input shape: its latency was not measured again"]
    record = deployment(trial)
    search = Measurement.from_dict(record["measured"]) if record is not None else None
    return prove_config(config, shape["shape"], int(shape["num_classes"]), spec.constraints, search,
                        what=f"trial {trial.number}")

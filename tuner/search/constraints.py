"""Deployment constraints in a search: measure a trial's model before it trains, record its constraint values for
the sampler, and prune an infeasible trial before its first epoch.

Latency depends on the graph and the input shape, not on the weights, so the untrained model is measured, once per
architecture (model, its arguments, input shape, classes, batch, runtime, threads) and environment per study: the
measurement is cached in the study's user attrs, which every worker reads. Constraint values are relative, (measured
- limit) / limit, so that TPE ranks infeasible trials by how far they miss; they go to Optuna as
`trial.set_constraint` (Optuna >= 5) and to the trial's user attr `deployment` (read by the sampler's
`constraints_func` on Optuna 4, and by `tune export --pick`).

A multi-objective study (the spec's `objectives`) measures every trial the same way, constraints or not, and the
trial's latency (at `latency_stat`, in ms) and ONNX size (in MB) are its objective values beside its metric.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from tuner.errors import TrialFailed, TuneError
from tuner.record import DEPLOY_ATTR, LATENCY_CACHE, REASON
from tuner.search.space import fixed_configs
from tuner.search.stopping import best_of
from tuner.ship.deploy import infeasibility, measure_network, untrained, violations
from tuner.ship.latency import SEARCH_RUNS, Measurement, environment, fingerprint
from tuner.spec import Choices, Fixed
from tuner.spec.constraints import Constraints
from tuner.spec.refs import MODEL_ARG

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from tuner.datasets import Splits
    from tuner.spec import RunConfig, StudySpec

NAMES = ("latency", "params", "size")  # the constraints a trial records, in this order
RECHECK_MARGIN = 0.5  # latency up to 50 % over its limit: measured three times (see _measured)
SCREEN_LIMIT = 16  # architectures a new constrained study measures up front (1-4 s each, mostly the ONNX export)


def architecture_key(config: RunConfig, shape: Sequence[int], num_classes: int, constraints: Constraints,
                     with_size: bool = False) -> str:
    """What a measurement depends on: the graph (model, its arguments, input shape, classes), how it is timed
    (batch, runtime, threads), where (the environment's fingerprint) and whether the ONNX file was weighed."""
    env = fingerprint(environment(constraints.latency_on, constraints.latency_threads))
    graph = {"model": config.model, "model_args": config.model_args, "model_dir": config.model_dir,
             "shape": list(shape), "classes": num_classes, "batch": constraints.latency_batch,
             "runtime": constraints.latency_on, "threads": constraints.latency_threads, "environment": env,
             "size": with_size or constraints.max_size is not None}  # on torch, exported only to be weighed
    return hashlib.sha256(json.dumps(graph, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_measurement(study: optuna.Study, config: RunConfig, splits: Splits, constraints: Constraints,
                      with_size: bool = False) -> Measurement:
    """The measurement of `config`'s architecture: from the study's cache, else measured on an untrained model and
    cached for every worker."""
    key = LATENCY_CACHE + architecture_key(config, splits.shape, splits.num_classes, constraints, with_size)
    cached = study.user_attrs.get(key)
    if isinstance(cached, dict):
        return Measurement.from_dict(cached)
    key, measured = _measured(config, splits, constraints, with_size)
    study.set_user_attr(key, measured.to_dict())
    return measured


def _measured(config: RunConfig, splits: Splits, constraints: Constraints, with_size: bool) -> tuple[str, Measurement]:
    """(cache key, measurement) of `config`'s architecture. One that breaks only the latency limit, by at most
    RECHECK_MARGIN, is measured twice more and judged by the middle of the three: the verdict stands for the whole
    study, and a sub-millisecond model's p95 of 200 calls can jump by a quarter in one measurement on a quiet
    machine (docs/benchmarks.md: 0.030 ms once, 0.0237-0.0240 ms in five others)."""
    key = LATENCY_CACHE + architecture_key(config, splits.shape, splits.num_classes, constraints, with_size)
    network = untrained(config, splits.shape, splits.num_classes)
    measured = measure_network(network, splits.shape, constraints, SEARCH_RUNS, config.model, with_size)
    relative = violations(measured, constraints)
    if 0 < relative.get("latency", 0) <= RECHECK_MARGIN and all(v <= 0 for k, v in relative.items() if k != "latency"):
        more = [measure_network(network, splits.shape, constraints, SEARCH_RUNS, config.model, with_size)
                for _ in range(2)]
        measured = sorted([measured, *more], key=lambda m: m.latency(constraints.latency_stat))[1]
    return key, measured


@dataclass(frozen=True)
class Screen:
    """What a new constrained study learnt before its first trial: the spec (with the default study's architecture
    choice narrowed to the values that meet the limits), the measurements to cache in the study, the line to say."""

    spec: StudySpec
    cache: dict[str, dict[str, Any]]
    line: str | None


def screen_architectures(spec: StudySpec, splits: Splits, narrow: bool) -> Screen:
    """Measure each architecture of a new constrained study before it starts, when one searched choice decides them
    (`model.width: [8, 16, 32]`, the others fixed); TuneError, before any study exists, when none meets the limits.
    With `narrow` (the default study, whose space is tune's) the values that break a limit leave the space, so that
    no trial is spent on them and the sampler explores what can be served; a spec file's space stays as written
    (rerunning the same command resumes it), and its trials that draw such a value are pruned before training.
    Other spaces (a range of widths, several choices, more than SCREEN_LIMIT values) and models that cannot be
    measured here are measured trial by trial, where a failure is that trial's."""
    choice = _architecture_choice(spec)
    if choice is None:
        return Screen(spec, {}, None)
    name, values = choice
    constraints = spec.constraints
    with_size = "size" in spec.objectives
    cache: dict[str, dict[str, Any]] = {}
    broken: dict[Any, str] = {}
    measured: dict[Any, Measurement] = {}
    excess: dict[Any, float] = {}  # how far each value misses its worst limit, relative
    for value, config in zip(values, fixed_configs(spec, [{name: v} for v in values]), strict=True):
        try:
            key, measured[value] = _measured(config, splits, constraints, with_size)
            relative = violations(measured[value], constraints)
        except Exception:  # an exporter that refuses a graph, a user's builder that fails: each trial says why
            return Screen(spec, {}, None)
        cache[key] = measured[value].to_dict()
        excess[value] = max(relative.values(), default=0.0)
        why = infeasibility(measured[value], constraints, relative)
        if why is not None:
            broken[value] = why
    feasible = tuple(v for v in values if v not in broken)
    if not feasible:
        closest = min(values, key=lambda v: excess[v])
        raise TuneError(f"no {name} of the search space meets the constraints ({constraints}): the closest, "
                        f"{name} {closest}, measures {measured[closest].text(constraints.latency_stat)}: loosen the "
                        "limits, or search smaller models (model.width, model.depth, --model)")
    if not broken:
        return Screen(spec, cache, None)
    first = next(iter(broken))
    verb = "breaks" if len(broken) == 1 else "break"
    line = (f"measured the {len(values)} architectures before the search: {name} {', '.join(map(str, broken))} "
            f"{verb} the constraints ({name} {first}: {broken[first]})")
    if not narrow:
        them = "it" if len(broken) == 1 else "them"
        return Screen(spec, cache, line + f": trials that draw {them} are pruned before training")
    kept = Choices(feasible) if len(feasible) > 1 else Fixed(feasible[0])
    return Screen(spec.replace(search={**spec.search, name: kept}), cache,
                  line + f" and leave the space; it searches {name} {', '.join(map(str, feasible))}")


def _architecture_choice(spec: StudySpec) -> tuple[str, tuple[Any, ...]] | None:
    """(name, values) of the one searched choice that decides a study's architectures, when there is exactly one
    and every other architecture entry is fixed; None otherwise."""
    entries = {name: domain for name, domain in spec.search.items() if name == "model" or name.startswith(MODEL_ARG)}
    searched = {name: domain for name, domain in entries.items() if not isinstance(domain, Fixed)}
    if len(searched) != 1:
        return None
    name, domain = next(iter(searched.items()))
    if not isinstance(domain, Choices) or not 2 <= len(domain.values) <= SCREEN_LIMIT:
        return None
    return name, tuple(domain.values)


def record_constraints(trial: optuna.Trial, values: dict[str, float]) -> None:
    """Optuna's constraint values of the trial (Optuna >= 5; a retry keeps those its original set)."""
    if not hasattr(trial, "set_constraint"):
        return  # Optuna 4: the sampler's constraints_func reads them from the user attr (tuner.search.samplers)
    with warnings.catch_warnings():  # a retry inherits its original's values, and Optuna warns that it keeps them
        warnings.simplefilter("ignore")
        for name, value in values.items():
            trial.set_constraint(name, value)


def check_deployment(trial: optuna.Trial, spec: StudySpec, config: RunConfig, splits: Splits) -> Measurement | None:
    """Measure the trial's model against the spec's constraints (and for its objectives) before it trains; record
    the measurement and the constraint values, and prune the trial (no epoch trained) when it breaks one. Returns
    the measurement (None when neither constraints nor objectives ask for one)."""
    constraints = spec.constraints
    if not constraints.active and not spec.objectives:
        return None
    try:
        measured = model_measurement(trial.study, config, splits, constraints, "size" in spec.objectives)
        values = violations(measured, constraints)
        if "size" in spec.objectives and measured.size_bytes is None:
            raise TuneError("the size objective is the ONNX file's: install the onnx extra (pip install -e "
                            "\".[onnx]\" in tune's folder)")
    except TuneError as e:  # no ONNX Runtime, a graph the exporter cannot take: this trial fails, the search goes on
        what = "the constraints" if constraints.active else "its objectives"
        reason = f"cannot measure {config.model} for {what}: {e}"
        trial.set_user_attr(REASON, reason)
        raise TrialFailed(reason) from None
    trial.set_user_attr(DEPLOY_ATTR, {"measured": measured.to_dict(), "constraints": values,
                                      "validation_images": len(splits.val)})
    record_constraints(trial, values)
    broken = infeasibility(measured, constraints, values)
    if broken is not None:
        reason = f"infeasible, pruned before training: {broken}"
        trial.set_user_attr(REASON, reason)
        raise optuna.TrialPruned(reason)
    return measured


def objective_values(spec: StudySpec, value: float, measured: Measurement | None) -> float | tuple[float, ...]:
    """What the objective returns: the metric's value alone, or with `objectives` the metric's value, then the
    latency in ms at `latency_stat` and/or the ONNX file in MB, in the spec's order."""
    if not spec.objectives:
        return value
    assert measured is not None, "check_deployment measures every trial of a multi-objective study"
    extra = {"latency": measured.latency(spec.constraints.latency_stat), "size": (measured.size_bytes or 0) / 1e6}
    return (value, *(extra[name] for name in spec.objectives[1:]))


def deployment(trial: FrozenTrial) -> dict[str, Any] | None:
    """The trial's deployment record (measurement, constraint values), if it measured one."""
    raw = trial.user_attrs.get(DEPLOY_ATTR)
    return raw if isinstance(raw, dict) and isinstance(raw.get("measured"), dict) else None


def constraint_values(trial: FrozenTrial) -> list[float]:
    """The trial's constraint values in NAMES order (0 for those it has none of): Optuna 4's constraints_func."""
    record = deployment(trial)
    values = record.get("constraints", {}) if record is not None else {}
    return [float(values.get(name, 0.0)) for name in NAMES]


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether the trial met every constraint it was measured against (a trial never measured counts as met)."""
    return all(value <= 0 for value in constraint_values(trial))


def constraints_line(study: optuna.Study, constraints: Constraints) -> str | None:
    """The summary's line about the constraints: the limits, the trials pruned before training, the best's figure."""
    if not constraints.active:
        return None
    trials = study.get_trials(deepcopy=False)
    before = sum(1 for t in trials if str(t.user_attrs.get(REASON, "")).startswith("infeasible"))
    line = f"Constraints: {constraints}; {before} of {len(trials)} trials pruned before training"
    best = best_of(study)
    record = deployment(best) if best is not None else None
    if record is not None:
        return line + f"; the best: {Measurement.from_dict(record['measured']).text(constraints.latency_stat)}"
    if trials and before == len(trials):  # nothing could train: say how far off the smallest model was
        measured = [(t, Measurement.from_dict(r["measured"])) for t in trials if (r := deployment(t)) is not None]
        if measured:
            trial, fastest = min(measured, key=lambda pair: (pair[1].latency(constraints.latency_stat),
                                                             pair[1].params))
            line += (f". None met them; the fastest, trial {trial.number}: {fastest.text(constraints.latency_stat)}: "
                     "loosen the limits, or search smaller models (model.width, model.depth, --model)")
    return line

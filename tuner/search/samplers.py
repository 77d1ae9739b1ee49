"""Optuna samplers and pruners by the names a study spec uses, with the spec's options passed through."""

from __future__ import annotations

from typing import Any, TypeVar

import optuna

from tuner.search.constraints import constraint_values
from tuner.spec import SpecError, StudySpec

T = TypeVar("T")


def _construct(kind: str, name: str, cls: type[T], options: dict[str, Any]) -> T:
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{kind} {name}: {e}; see the options of optuna's {cls.__name__}") from None


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded with `seed` unless the spec's options set one."""
    samplers = optuna.samplers
    defaults: dict[str, tuple[type[optuna.samplers.BaseSampler], dict[str, Any]]] = {
        # multivariate + group: TPE models the conditional space (momentum only for sgd, say) jointly;
        # constant_liar: parallel workers do not all sample next to the same promising point.
        "tpe": (samplers.TPESampler, {"multivariate": True, "group": True, "constant_liar": True}),
        "random": (samplers.RandomSampler, {}),
        "cmaes": (samplers.CmaEsSampler, {"warn_independent_sampling": False}),
        "gp": (samplers.GPSampler, {"warn_independent_sampling": False}),
        "qmc": (samplers.QMCSampler, {"warn_independent_sampling": False, "warn_asynchronous_seeding": False}),
    }
    cls, options = defaults[spec.sampler]
    if spec.sampler == "tpe" and spec.constraints.active and not hasattr(optuna.trial.Trial, "set_constraint"):
        options = {**options, "constraints_func": constraint_values}  # Optuna 4: constraints through the sampler
    return _construct("sampler", spec.sampler, cls, {"seed": seed, **options, **spec.sampler_options})


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; epochs are its steps, so resource-based pruners get `max_resource = epochs`."""
    pruners = optuna.pruners
    defaults: dict[str, tuple[type[optuna.pruners.BasePruner], dict[str, Any]]] = {
        "median": (pruners.MedianPruner, {}),
        "percentile": (pruners.PercentilePruner, {"percentile": 25.0}),
        "successive-halving": (pruners.SuccessiveHalvingPruner, {}),
        "hyperband": (pruners.HyperbandPruner, {"min_resource": 1, "max_resource": spec.epochs}),
        "none": (pruners.NopPruner, {}),
    }
    cls, options = defaults[spec.pruner]
    return _construct("pruner", spec.pruner, cls, {**options, **spec.pruner_options})

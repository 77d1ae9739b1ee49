"""A study spec's search space + an Optuna trial -> one fully specified RunConfig."""

from __future__ import annotations

from typing import Any

import optuna

from tuner.spec import Choices, Domain, Fixed, Range, RunConfig, StudySpec
from tuner.spec.params import PARAMS, applies, is_integer_range
from tuner.spec.refs import BUILTIN_ARGS, HUBS, MODEL_ARG, model_source


def suggest(trial: optuna.Trial, name: str, domain: Domain) -> Any:
    if isinstance(domain, Fixed):
        return domain.value
    if isinstance(domain, Choices):
        return trial.suggest_categorical(name, list(domain.values))
    if is_integer_range(name, domain):
        return trial.suggest_int(name, int(domain.low), int(domain.high), step=int(domain.step or 1), log=domain.log)
    return trial.suggest_float(name, domain.low, domain.high, step=domain.step, log=domain.log)


def sample_config(trial: optuna.Trial, spec: StudySpec, seed: int) -> RunConfig:
    """The run config a trial trains: each hyperparameter of `spec.search` sampled (or fixed) in turn, then the
    model builder's arguments (`model.NAME`; a built-in family takes model.width and model.depth only)."""
    values: dict[str, Any] = {"model": spec.model, "pretrained": spec.pretrained}
    model_args: dict[str, Any] = {}
    for name in PARAMS:
        if name in spec.search and applies(name, values):
            values[name] = suggest(trial, name, spec.search[name])
        if name == "pretrained":
            if model_source(values["model"])[0] not in HUBS:
                values["pretrained"] = False
            builtin = model_source(values["model"])[0] == "builtin"
            model_args = {key[len(MODEL_ARG):]: suggest(trial, key, domain)
                          for key, domain in spec.search.items() if key.startswith(MODEL_ARG)
                          and (not builtin or key[len(MODEL_ARG):] in BUILTIN_ARGS)}
    module = values["model"].partition(":")[0] if model_source(values["model"])[0] == "module" else None
    return RunConfig(dataset=spec.dataset, image_size=spec.image_size, epochs=spec.epochs, validation=spec.validation,
                     split_seed=spec.split_seed, metric=spec.metric, compile=spec.compile, seed=seed,
                     model_args=model_args, model_dir=spec.model_dirs.get(module) if module is not None else None,
                     **values)


def probe_configs(spec: StudySpec) -> list[RunConfig]:
    """One sampled run config per model the spec may train (the other hyperparameters drawn at random), to try
    building before a study exists."""
    deepest = _largest(spec.search.get(MODEL_ARG + "depth"))  # the depth most likely to shrink images to nothing
    fixed = []
    for ref in spec.models():
        values: dict[str, Any] = {"model": ref} if isinstance(spec.search.get("model"), Choices) else {}
        if deepest is not None:
            values[MODEL_ARG + "depth"] = deepest
        fixed.append(values)
    return fixed_configs(spec, fixed)


def fixed_configs(spec: StudySpec, fixed: list[dict[str, Any]]) -> list[RunConfig]:
    """One run config per entry of `fixed` (those values set, the other hyperparameters drawn at random)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for params in fixed:
        if params:
            study.enqueue_trial(params)
        configs.append(sample_config(study.ask(), spec, seed=0))
    return configs


def _largest(domain: Domain | None) -> Any:
    """The largest value of a numeric domain (of a range, the largest on its step grid); None for others."""
    if isinstance(domain, Range) and isinstance(domain.low, int) and isinstance(domain.high, int):
        step = int(domain.step or 1)
        return domain.low + (domain.high - domain.low) // step * step
    if isinstance(domain, Choices) and all(isinstance(v, int) and not isinstance(v, bool) for v in domain.values):
        return max(domain.values)
    return None

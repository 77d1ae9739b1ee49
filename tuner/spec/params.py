"""The hyperparameters, one row each: how a value is checked, whether it takes a range, when it applies, its
default, its note, and what the default study searches. Spec checks, sampling (tuner.search.space), RunConfig's
defaults and the export file's notes all read this table.

A search entry is a `Domain`: a fixed value, a list of choices, or a range. `model.NAME` keys are the keyword
arguments of the model builder (torchvision, timm and user models).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tuner.errors import SpecError
from tuner.spec.checks import boolean, choice, number
from tuner.spec.refs import BUILTIN_ARGS, HUBS, MODEL_ARG, check_model, model_source

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")
SCHEDULERS = ("onecycle-gamma", "exp-warmup", "exponential", "step", "cosine", "onecycle", "none")
EPOCH_SCHEDULERS = ("exponential", "step")  # stepped after each epoch
# stepped after each batch, with a warm-up (`warmup`)
BATCH_SCHEDULERS = ("onecycle-gamma", "exp-warmup", "cosine", "onecycle")
GAMMA_SCHEDULERS = ("onecycle-gamma", "exp-warmup", "exponential", "step")  # decay by `gamma`


@dataclass(frozen=True)
class Fixed:
    """A hyperparameter held at one value: not an Optuna param, but part of every run config."""

    value: Any


@dataclass(frozen=True)
class Choices:
    """A categorical hyperparameter: the trial picks one of `values`."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    """A numeric hyperparameter drawn from [low, high]; `log` samples log-uniformly, `step` quantizes."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


Domain = Fixed | Choices | Range


def _always(values: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class Param:
    """One hyperparameter. `applies` sees the values of those before it in the table (and the defaults of the
    rest): a trial samples the parameter only where it means something."""

    name: str
    check: Callable[[Any], Any]  # one value, checked: returns it, or raises SpecError naming the fix
    kind: str  # "choice", "bool", "float" or "int": float and int take ranges
    default: Any  # a run config's value when the study does not search it
    note: str = ""  # one line for the export file
    search: Domain | None = None  # what the default study searches (None: not searched)
    applies: Callable[[Mapping[str, Any]], bool] = _always

    @property
    def takes_range(self) -> bool:
        return self.kind in ("float", "int")


def _source(values: Mapping[str, Any]) -> str:
    return model_source(values["model"])[0]


PARAMS: dict[str, Param] = {p.name: p for p in (
    Param("model", check_model, "choice", "bncnn", "built-in, torchvision:NAME, timm:NAME or MODULE:FUNCTION"),
    Param("pretrained", lambda v: boolean("pretrained", v), "bool", False,
          "torchvision/timm: from the default weights, with their mean and std",
          applies=lambda v: _source(v) in HUBS),
    Param("backbone_lr", lambda v: number("backbone_lr", v, low=0, high=1, low_open=True), "float", 1.0,
          "pretrained models: the backbone's learning rate as a share of `lr` (the new head's)",
          applies=lambda v: _source(v) in HUBS and bool(v["pretrained"])),
    Param("optimizer", lambda v: choice("optimizer", v, OPTIMIZERS), "choice", "adam",
          search=Choices(OPTIMIZERS)),
    Param("lr", lambda v: number("lr", v, low=0, low_open=True), "float", 1e-3, "initial learning rate",
          search=Range(1e-4, 0.1, log=True)),
    Param("batch_size", lambda v: number("batch_size", v, low=1, integer=True), "int", 64,
          search=Choices((32, 64, 128, 256))),
    Param("scheduler", lambda v: choice("scheduler", v, SCHEDULERS), "choice", "exponential",
          "lr schedule: onecycle-gamma, exp-warmup, cosine, onecycle (per batch, warm-up first); exponential, step",
          search=Fixed("onecycle-gamma")),  # gamma searched, and as good as onecycle: docs/benchmarks.md
    Param("gamma", lambda v: number("gamma", v, low=0, high=1, low_open=True), "float", 0.9,
          "lr decay per epoch: onecycle-gamma ends at lr * gamma ** epochs; exp-warmup, exponential: x gamma per epoch",
          search=Range(0.3, 0.9), applies=lambda v: v["scheduler"] in GAMMA_SCHEDULERS),
    Param("step_size", lambda v: number("step_size", v, low=1, integer=True), "int", 1,
          "epochs between steps of the step scheduler", applies=lambda v: v["scheduler"] == "step"),
    Param("warmup", lambda v: number("warmup", v, low=0, high=0.5), "float", 0.1,
          "exp-warmup, cosine, onecycle: share of the run's batches that raise the lr to `lr`",
          applies=lambda v: v["scheduler"] in BATCH_SCHEDULERS),
    Param("momentum", lambda v: number("momentum", v, low=0, high=1), "float", 0.0, "sgd and rmsprop only",
          search=Range(0.0, 0.99), applies=lambda v: v["optimizer"] in ("sgd", "rmsprop")),
    Param("nesterov", lambda v: boolean("nesterov", v), "bool", False, "sgd only",
          search=Choices((True, False)), applies=lambda v: v["optimizer"] == "sgd" and bool(v["momentum"])),
    Param("weight_decay", lambda v: number("weight_decay", v, low=0), "float", 0.0,
          search=Range(1e-6, 1e-3, log=True)),
    Param("dropout", lambda v: number("dropout", v, low=0, high=0.95), "float", 0.2,
          "built-in families: after each hidden fully connected layer", search=Range(0.0, 0.5),
          applies=lambda v: _source(v) == "builtin"),  # other models take their own dropout argument: model.NAME
    Param("label_smoothing", lambda v: number("label_smoothing", v, low=0, high=0.5), "float", 0.0,
          "of the training loss", search=Range(0.0, 0.2)),
    Param("class_weights", lambda v: boolean("class_weights", v), "bool", False,
          "training loss: each class weighted inversely to its training images (imbalanced classes)"),
    Param("flip", lambda v: boolean("flip", v), "bool", False, "training batches: random left-right flips"),
    Param("translate", lambda v: number("translate", v, low=0, high=64, integer=True), "int", 0,
          "training batches: random shifts of up to N pixels"),
    Param("crop", lambda v: number("crop", v, low=0, high=1, low_open=True), "float", 1.0,
          "training batches: random-resized crops of at least this share of the area (1: none)"),
    Param("jitter", lambda v: number("jitter", v, low=0, high=0.9), "float", 0.0,
          "training batches: brightness, contrast and saturation scaled by up to 1 +/- this (0: none)"),
    Param("trivial_augment", lambda v: boolean("trivial_augment", v), "bool", False,
          "training batches: TrivialAugment, one random op (shear, shift, rotation, colour, ...) per image"),
    Param("mixup", lambda v: number("mixup", v, low=0, high=1), "float", 0.0,
          "training batches: Mixup of image pairs, Beta(alpha, alpha) shares; this alpha (0: none)"),
    Param("cutmix", lambda v: number("cutmix", v, low=0, high=1), "float", 0.0,
          "training batches: CutMix, a rectangle pasted from another image, Beta(alpha, alpha); this alpha (0: none)"),
)}
DEFAULTS = {name: p.default for name, p in PARAMS.items()}


# The built-in family's arguments the default study searches (model.NAME keys are not rows of the table above):
# 1.5 and 2 times the default width paid off at 1.6 and 2.3 times its cost on the mini set (docs/benchmarks.md).
DEFAULT_MODEL_SEARCH: dict[str, Domain] = {MODEL_ARG + "width": Choices((16, 24, 32))}


def default_search() -> dict[str, Domain]:
    """The search space of the default study."""
    return {**{name: p.search for name, p in PARAMS.items() if p.search is not None}, **DEFAULT_MODEL_SEARCH}


def applies(name: str, values: Mapping[str, Any]) -> bool:
    """Whether hyperparameter `name` means anything given `values` (the others' defaults fill the gaps)."""
    return PARAMS[name].applies({**DEFAULTS, **values})


def may_be_true(domain: Domain | None) -> bool:
    """Whether a boolean hyperparameter's domain can give True."""
    return domain == Fixed(True) or (isinstance(domain, Choices) and True in domain.values)


def check_model_arg(name: str, value: Any) -> Any:
    """One value of a model builder's keyword argument: a plain scalar (what Optuna can store as a choice)."""
    if value is not None and not isinstance(value, bool | int | float | str):
        raise SpecError(f"{name} must be a number, a string, true/false or null, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{name} must be finite, got {value!r}")
    return value


def check_model_args(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"model_args must be a mapping of keyword argument -> value, got {value!r}")
    for key, arg in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise SpecError(f"model_args: {key!r} is not a keyword argument name")
        check_model_arg(f"model.{key}", arg)
    return value


def check_builtin_args(model: str, args: Mapping[str, Any], where: str = "model_args") -> None:
    """The arguments of a built-in family: model.width and model.depth, positive integers."""
    for key, value in args.items():
        if key not in BUILTIN_ARGS:
            raise SpecError(f"{where}: model {model} takes model.{' and model.'.join(BUILTIN_ARGS)}, not model.{key}"
                            "; other model.NAME arguments apply to torchvision, timm and your own models")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{where}: model.{key} of {model} must be a whole number >= 1, got {value!r}")


def _param_check(name: str) -> Callable[[Any], Any]:
    if name.startswith(MODEL_ARG):
        if not name[len(MODEL_ARG):].isidentifier():
            raise SpecError(f"search.{name}: {name[len(MODEL_ARG):]!r} is not a keyword argument name")
        return lambda v: check_model_arg(name, v)
    if name not in PARAMS:
        raise SpecError(f"unknown hyperparameter {name!r} in search: use {', '.join(PARAMS)}, or model.NAME for "
                        "an argument of the model builder")
    return PARAMS[name].check


def is_integer_range(name: str, domain: Range) -> bool:
    """Integer-valued: the integer hyperparameters, and model arguments whose bounds (and step) are integers."""
    if name in PARAMS:
        return PARAMS[name].kind == "int"
    bounds = (domain.low, domain.high) + ((domain.step,) if domain.step is not None else ())
    return name.startswith(MODEL_ARG) and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)


def parse_domain(name: str, raw: Any) -> Domain:
    """Read one entry of `search:`: a scalar is fixed, a list is choices, a mapping with low/high is a range."""
    check = _param_check(name)
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"search.{name} is an empty list: give at least one value")
        return Choices(tuple(check(v) for v in raw))
    if isinstance(raw, dict):
        return _parse_range(name, raw, check)
    return Fixed(check(raw))


def _parse_range(name: str, raw: dict[str, Any], check: Callable[[Any], Any]) -> Range:
    keys = ("low", "high", "log", "step")
    for key in raw:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpecError(f"search.{name}: unknown key {key!r} in a range ({hint}a range is {{low, high, log, "
                            "step})")
    missing = [key for key in ("low", "high") if key not in raw]
    if missing:
        raise SpecError(f"search.{name}: the range lacks {' and '.join(missing)}: a range is {{low, high, log, "
                        "step}")
    model_arg = name.startswith(MODEL_ARG)
    if not model_arg and not PARAMS[name].takes_range:
        raise SpecError(f"search.{name} takes a value or a list of choices, not a range")
    low, high = check(raw["low"]), check(raw["high"])
    if model_arg and not all(isinstance(b, int | float) and not isinstance(b, bool) for b in (low, high)):
        raise SpecError(f"search.{name}: a range needs numbers for low and high, got {raw!r}")
    if low > high:
        raise SpecError(f"search.{name}: low ({raw['low']}) is greater than high ({raw['high']}): swap them")
    log = boolean(f"search.{name}.log", raw.get("log", False))
    if log and low <= 0:
        raise SpecError(f"search.{name}: a log range needs low > 0, got {raw['low']}")
    step = raw.get("step")
    if step is not None:
        integer = not model_arg and PARAMS[name].kind == "int"
        step = number(f"search.{name}.step", step, low=0, low_open=True, integer=integer)
        if isinstance(raw["step"], int) and not isinstance(raw["step"], bool):
            step = int(step)
        if log:
            raise SpecError(f"search.{name}: use either log or step, not both")
    return Range(low, high, log, step)


def domain_to_data(domain: Domain) -> Any:
    """A domain as a spec file writes it."""
    if isinstance(domain, Fixed):
        return domain.value
    if isinstance(domain, Choices):
        return list(domain.values)
    out: dict[str, Any] = {"low": domain.low, "high": domain.high}
    if domain.log:
        out["log"] = True
    if domain.step is not None:
        out["step"] = domain.step
    return out


def domain_text(domain: Domain) -> str:
    """A domain in an error line."""
    if isinstance(domain, Fixed):
        return repr(domain.value)
    return str(list(domain.values)) if isinstance(domain, Choices) else f"[{domain.low}, {domain.high}]"

"""Study specs (what a study searches) and run configs (one fully specified training run).

A `StudySpec` is read from YAML or TOML under `studies/`; its `search` maps each hyperparameter to a fixed value,
a list of choices, or a range. A trial turns the spec into a `RunConfig` (see `space.py`), which training consumes
and `tune export` writes out; every field of both is validated on construction with an error that names the fix.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TuneError, one_line

DATASETS = ("fashion-mnist", "mnist", "kmnist", "cifar10")  # torchvision's; any other dataset is a folder path
MODELS = ("mlp", "cnn", "convnet", "bncnn")  # the built-in families; see `model_source` for the other references
HUBS = ("torchvision", "timm")  # `HUB:NAME` model references; any other `MODULE:FUNCTION` is the user's own code
MODEL_ARG = "model."  # a search key `model.NAME` is the keyword argument NAME of the model builder
TIMM_INSTALL = "pip install -e '.[timm]' (or pip install timm)"
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")
SCHEDULERS = ("exponential", "step", "none")
SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
PRUNERS = ("median", "percentile", "successive-halving", "hyperband", "none")
METRICS = {"accuracy": "maximize", "loss": "minimize"}

# Where the shipped specs live: inside the installed package, or beside it in a source checkout.
_PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_SPEC_DIRS = (_PACKAGE_DIR / "studies", _PACKAGE_DIR.parent / "studies")


class SpecError(TuneError):
    pass


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
    return value


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
            integer: bool = False, low_open: bool = False) -> float:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not float(value).is_integer()):
        raise SpecError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(f"{name} must be finite, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        bound = f"{'>' if low_open else '>='} {low}" if too_low else f"<= {high}"
        raise SpecError(f"{name} must be {bound}, got {value!r}")
    return int(value) if integer else float(value)


def check_dataset(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"dataset must be {', '.join(DATASETS)} or the path of a folder of images, got {value!r}")
    return value


def dataset_ref(value: Any, base: Path | None = None) -> Any:
    """A dataset as stored in specs and configs: a shipped name as it is, a folder as an absolute path (`~`
    expanded, a relative one taken from `base`, the spec file's folder, or the current directory)."""
    if not isinstance(value, str) or value in DATASETS or not value.strip():
        return value
    path = Path(value).expanduser()
    return str(((base or Path.cwd()) / path).resolve())


def check_image_size(value: Any) -> int | None:
    if value is None:
        return None
    return int(_number("image_size", value, low=1, integer=True))


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{name} must be true or false, got {value!r}")
    return value


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def model_source(ref: str) -> tuple[str, str]:
    """(source, name) of a model reference: ("builtin", "bncnn"), ("torchvision", "resnet18"), ("timm", "resnet18"),
    or ("module", "pkg.module:function") for the user's own code."""
    if ref in MODELS:
        return "builtin", ref
    hub, _, name = ref.partition(":")
    return (hub, name) if hub in HUBS else ("module", ref)


def check_model(value: Any) -> str:
    """A model reference as written: its form only (whether it imports is checked by `locate_models`)."""
    fix = f"use {', '.join(MODELS)}, torchvision:NAME, timm:NAME or MODULE:FUNCTION (your own code)"
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"model must be a name, got {value!r}: {fix}")
    source, name = model_source(value)
    if source == "builtin":
        return value
    if source in HUBS:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise SpecError(f"model {value!r} names no {source} model: write {source}:NAME, like {source}:resnet18")
        return value
    module, _, function = value.partition(":")
    if not function or not _DOTTED.match(module) or not function.isidentifier():
        raise SpecError(f"unknown model {value!r}: {fix}")
    return value


def module_dir(module: str, base: Path | None = None) -> str | None:
    """The folder that `module` (of a MODULE:FUNCTION model) imports from when that folder is the current directory
    or `base` (the spec file's folder), as an absolute path; None when it imports from sys.path as it is."""
    top = module.split(".")[0]
    for folder in dict.fromkeys([Path.cwd(), *([base] if base else [])]):
        if importlib.machinery.PathFinder.find_spec(top, [str(folder)]) is not None:
            return str(Path(folder).resolve())
    if importlib.util.find_spec(top) is not None:
        return None
    where = f"the current directory, {base}" if base else "the current directory"
    raise SpecError(f"cannot find module {module!r}: put {top}.py (or the package {top}/) in {where} or a folder "
                    f"on PYTHONPATH, or pip install it")


def locate_models(refs: list[str], base: Path | None = None) -> dict[str, str]:
    """Check that each model reference can be built here (a torchvision name that exists, timm installed, the
    user's module found) and return {module: folder} for the user modules found outside sys.path."""
    dirs: dict[str, str] = {}
    for ref in refs:
        source, name = model_source(check_model(ref))
        if source == "torchvision":
            import torchvision.models

            known = torchvision.models.list_models(module=torchvision.models)
            if name not in known:
                raise SpecError(f"model {ref!r}: torchvision has no classification model {name!r}: use one of "
                                f"{', '.join(known[:8])}, ... (torchvision.models.list_models())")
        elif source == "timm" and importlib.util.find_spec("timm") is None:
            raise SpecError(f"model {ref!r} needs timm, which is not installed: {TIMM_INSTALL}")
        elif source == "module":
            module = name.partition(":")[0]
            found = module_dir(module, base)
            if found is not None:
                dirs[module] = found
    return dirs


# Each searchable hyperparameter: a validator of one value. The order is the order a trial samples them in
# (`model.NAME` arguments of the model builder come right after model and pretrained).
PARAMS: dict[str, Any] = {
    "model": check_model,
    "pretrained": lambda v: _boolean("pretrained", v),
    "optimizer": lambda v: _choice("optimizer", v, OPTIMIZERS),
    "lr": lambda v: _number("lr", v, low=0, low_open=True),
    "batch_size": lambda v: _number("batch_size", v, low=1, integer=True),
    "scheduler": lambda v: _choice("scheduler", v, SCHEDULERS),
    "gamma": lambda v: _number("gamma", v, low=0, high=1, low_open=True),
    "step_size": lambda v: _number("step_size", v, low=1, integer=True),
    "momentum": lambda v: _number("momentum", v, low=0, high=1),
    "nesterov": lambda v: _boolean("nesterov", v),
    "weight_decay": lambda v: _number("weight_decay", v, low=0),
    "dropout": lambda v: _number("dropout", v, low=0, high=0.95),
    "label_smoothing": lambda v: _number("label_smoothing", v, low=0, high=0.5),
    "flip": lambda v: _boolean("flip", v),
    "translate": lambda v: _number("translate", v, low=0, high=64, integer=True),
}
INTEGER_PARAMS = ("batch_size", "step_size", "translate")
RANGE_PARAMS = ("lr", "gamma", "momentum", "weight_decay", "dropout", "batch_size", "step_size", "label_smoothing",
                "translate")
# Hyperparameters that only mean something for some optimizers; a trial samples them only there.
PARAM_OPTIMIZERS = {"momentum": ("sgd", "rmsprop"), "nesterov": ("sgd",)}


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


def _param_check(name: str) -> Any:
    if name.startswith(MODEL_ARG):
        if not name[len(MODEL_ARG):].isidentifier():
            raise SpecError(f"search.{name}: {name[len(MODEL_ARG):]!r} is not a keyword argument name")
        return lambda v: check_model_arg(name, v)
    if name not in PARAMS:
        raise SpecError(f"unknown hyperparameter {name!r} in search: use {', '.join(PARAMS)}, or model.NAME for "
                        "an argument of the model builder")
    return PARAMS[name]


def is_integer_range(name: str, domain: Range) -> bool:
    """Integer-valued: the integer hyperparameters, and model arguments whose bounds (and step) are integers."""
    if name in INTEGER_PARAMS:
        return True
    bounds = (domain.low, domain.high) + ((domain.step,) if domain.step is not None else ())
    return name.startswith(MODEL_ARG) and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)


@dataclass(frozen=True)
class Fixed:
    """A hyperparameter held at one value: not an Optuna param, but part of every run config."""

    value: Any


@dataclass(frozen=True)
class Choices:
    """A categorical hyperparameter: the trial picks one of `values`."""

    values: tuple


@dataclass(frozen=True)
class Range:
    """A numeric hyperparameter drawn from [low, high]; `log` samples log-uniformly, `step` quantizes."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


Domain = Fixed | Choices | Range


def parse_domain(name: str, raw: Any) -> Domain:
    """Read one entry of `search:`: a scalar is fixed, a list is choices, a mapping with low/high is a range."""
    check = _param_check(name)
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"search.{name} is an empty list: give at least one value")
        return Choices(tuple(check(v) for v in raw))
    if isinstance(raw, dict):
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown or not {"low", "high"} <= set(raw):
            raise SpecError(f"search.{name} must be a value, a list, or {{low, high, log, step}}, got {raw!r}")
        if name not in RANGE_PARAMS and not name.startswith(MODEL_ARG):
            raise SpecError(f"search.{name} takes a value or a list of choices, not a range")
        low, high = check(raw["low"]), check(raw["high"])
        if name.startswith(MODEL_ARG) and not all(isinstance(b, int | float) and not isinstance(b, bool)
                                                   for b in (low, high)):
            raise SpecError(f"search.{name}: a range needs numbers for low and high, got {raw!r}")
        if low > high:
            raise SpecError(f"search.{name}: low ({raw['low']}) is greater than high ({raw['high']}): swap them")
        log = _boolean(f"search.{name}.log", raw.get("log", False))
        if log and low <= 0:
            raise SpecError(f"search.{name}: a log range needs low > 0, got {raw['low']}")
        step = raw.get("step")
        if step is not None:
            step = _number(f"search.{name}.step", step, low=0, low_open=True, integer=name in INTEGER_PARAMS)
            if isinstance(raw["step"], int) and not isinstance(raw["step"], bool):
                step = int(step)
            if log:
                raise SpecError(f"search.{name}: use either log or step, not both")
        return Range(low, high, log, step)
    return Fixed(check(raw))


def _default_search() -> dict[str, Domain]:
    return {
        "optimizer": Choices(("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")),
        "lr": Range(1e-4, 0.1, log=True),
        "batch_size": Choices((32, 64, 128, 256)),
        "scheduler": Choices(("exponential", "step")),
        "gamma": Range(0.5, 0.99),
        "momentum": Range(0.0, 0.99),
        "nesterov": Choices((True, False)),
        "weight_decay": Range(1e-6, 1e-3, log=True),
        "dropout": Range(0.0, 0.5),
        "label_smoothing": Range(0.0, 0.2),
    }


def _named(kind: str, raw: Any, allowed: tuple[str, ...]) -> tuple[str, dict]:
    """Sampler or pruner: either a name, or {name: ..., other keyword arguments for the Optuna class}."""
    if isinstance(raw, str):
        return _choice(kind, raw, allowed), {}
    if isinstance(raw, dict) and "name" in raw:
        options = {k: v for k, v in raw.items() if k != "name"}
        return _choice(kind, raw["name"], allowed), options
    raise SpecError(f"{kind} must be a name ({', '.join(allowed)}) or {{name: ..., options}}, got {raw!r}")


@dataclass(frozen=True)
class StudySpec:
    """What one study searches and how. The defaults are the shipped Fashion-MNIST study."""

    name: str = "fashion-mnist"  # study name in the storage, unless --study gives another
    dataset: str = "fashion-mnist"  # torchvision's fashion-mnist, mnist, kmnist or cifar10, or a folder of images
    image_size: int | None = None  # folders: images resized to this (shorter side, center crop); None: median side
    model: str = "bncnn"  # built-in family, torchvision:NAME, timm:NAME or MODULE:FUNCTION, unless search.model picks
    pretrained: bool = False  # torchvision and timm models start from their default weights (search.pretrained too)
    model_dirs: dict[str, str] = field(default_factory=dict)  # module -> folder it was found in (filled in by tune)
    epochs: int = 8  # training epochs per trial; pruning can stop a trial after any of them
    metric: str = "accuracy"  # validation metric reported each epoch: accuracy (maximized) or loss (minimized)
    validation: float | str = 0.15  # fraction of the training set held out to select on, or "test"
    split_seed: int = 0  # seed of the train/validation split, fixed so that every trial sees the same split
    sampler: str = "tpe"
    sampler_options: dict = field(default_factory=dict)  # keyword arguments of the Optuna sampler class
    pruner: str = "median"
    pruner_options: dict = field(default_factory=dict)  # keyword arguments of the Optuna pruner class
    search: dict[str, Domain] = field(default_factory=_default_search)
    compile: bool = False  # train every trial through torch.compile (worth it for long trials on a GPU)

    def __post_init__(self) -> None:
        _boolean("compile", self.compile)
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError(f"name must be a non-empty string, got {self.name!r}")
        check_dataset(self.dataset)
        check_image_size(self.image_size)
        check_model(self.model)
        _boolean("pretrained", self.pretrained)
        _check_model_dirs(self.model_dirs)
        self._check_pretrained()
        self._check_model_args()
        _number("epochs", self.epochs, low=1, integer=True)
        _choice("metric", self.metric, tuple(METRICS))
        check_validation(self.validation)
        _number("split_seed", self.split_seed, low=0, integer=True)
        _choice("sampler", self.sampler, SAMPLERS)
        _choice("pruner", self.pruner, PRUNERS)
        nesterov = self.search.get("nesterov")
        wants_nesterov = nesterov == Fixed(True) or (isinstance(nesterov, Choices) and True in nesterov.values)
        if wants_nesterov and "momentum" not in self.search:
            raise SpecError("search.nesterov needs momentum: add search.momentum (a value > 0 or a range)")

    def _check_pretrained(self) -> None:
        wanted = self.search.get("pretrained", Fixed(self.pretrained))
        if not (wanted == Fixed(True) or (isinstance(wanted, Choices) and True in wanted.values)):
            return
        models = self.search.get("model", Fixed(self.model))
        refs = models.values if isinstance(models, Choices) else (models.value,)
        if not any(model_source(ref)[0] in HUBS for ref in refs):
            raise SpecError(f"pretrained: {', '.join(refs)} has no pretrained weights: pretrained applies to "
                            "torchvision:NAME and timm:NAME models")

    def _check_model_args(self) -> None:
        args = [key for key in self.search if key.startswith(MODEL_ARG)]
        if args and all(model_source(ref)[0] == "builtin" for ref in self.models()):
            raise SpecError(f"search.{args[0]}: the built-in families ({', '.join(self.models())}) take no arguments "
                            "but dropout; model.NAME applies to torchvision, timm and your own models")

    def models(self) -> list[str]:
        """Every model reference a trial of this spec may build."""
        domain = self.search.get("model", Fixed(self.model))
        return list(domain.values) if isinstance(domain, Choices) else [domain.value]

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    @classmethod
    def from_dict(cls, raw: Any) -> StudySpec:
        if not isinstance(raw, dict):
            raise SpecError(f"a study spec must be a mapping of fields, got {type(raw).__name__}")
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)} - {"sampler_options", "pruner_options"}
        unknown = set(raw) - known - {"direction"}
        if unknown:
            raise SpecError(f"unknown field(s) {', '.join(sorted(unknown))} in spec: use {', '.join(sorted(known))}")
        metric = raw.get("metric", "accuracy")
        direction = raw.pop("direction", None)
        if direction is not None and direction != METRICS.get(metric):
            raise SpecError(f"direction {direction!r} contradicts metric {metric!r}: omit direction, "
                            f"or use {METRICS.get(metric, 'maximize')}")
        if "sampler" in raw:
            raw["sampler"], raw["sampler_options"] = _named("sampler", raw["sampler"], SAMPLERS)
            if "seed" in raw["sampler_options"]:
                raise SpecError("sampler seed: set the seed with `tune start --seed N` instead (it seeds the "
                                "sampler of each worker and every trial's training)")
        if "pruner" in raw:
            raw["pruner"], raw["pruner_options"] = _named("pruner", raw["pruner"], PRUNERS)
        if "search" in raw:
            if not isinstance(raw["search"], dict):
                raise SpecError("search must be a mapping of hyperparameter -> value, list or {low, high}")
            raw["search"] = {name: parse_domain(name, value) for name, value in raw["search"].items()}
        return cls(**raw)

    def to_dict(self) -> dict:
        """The spec as plain data, in the shape `from_dict` reads (stored in the study for resumes)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("sampler_options", "pruner_options", "search"):
                continue
            out[f.name] = getattr(self, f.name)
        out["sampler"] = {"name": self.sampler, **self.sampler_options} if self.sampler_options else self.sampler
        out["pruner"] = {"name": self.pruner, **self.pruner_options} if self.pruner_options else self.pruner
        out["search"] = {name: _domain_to_data(d) for name, d in self.search.items()}
        return out

    def replace(self, **changes: Any) -> StudySpec:
        """A copy with some fields changed and validated again (CLI overrides go through here). A new `model`
        replaces search.model too; `model_dirs` adds to the folders already known."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "model" in changes and "search" not in changes:
            changes["search"] = {k: v for k, v in self.search.items() if k != "model"}
        if "model_dirs" in changes:
            changes["model_dirs"] = {**self.model_dirs, **changes["model_dirs"]}
        return dataclasses.replace(self, **changes)


def _check_model_dirs(value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError(f"model_dirs must map module names to folders, got {value!r}")


def _domain_to_data(domain: Domain) -> Any:
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


def check_validation(value: Any) -> float | str:
    if value == "test":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise SpecError(f"validation must be a fraction between 0 and 1 (exclusive) or 'test', got {value!r}")
    return value


class _Loader(yaml.SafeLoader):
    """YAML with 1.2's floats: PyYAML reads `1e-3` and `1.0e6` as strings, which no user means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$"
               r"|^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def read_mapping(path: Path) -> Any:
    """Parse a YAML, JSON or TOML file into plain data, with one-line errors for missing or broken files."""
    if not path.is_file():
        raise SpecError(f"no such file: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.load(text, Loader=_Loader)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        reason = one_line(e, None)
        raise SpecError(f"cannot parse {path}: {reason}") from None


def shipped_specs() -> dict[str, Path]:
    """The specs that ship with tune, by name (file name without extension)."""
    found: dict[str, Path] = {}
    for directory in SHIPPED_SPEC_DIRS:
        for path in sorted(directory.glob("*.*")):
            if path.suffix in (".yaml", ".yml", ".toml", ".json"):
                found.setdefault(path.stem, path)
    return found


def load_spec(path_or_name: str | Path | None) -> StudySpec:
    """A spec from a file path or the name of a shipped spec; None gives the embedded default."""
    if path_or_name is None:
        return StudySpec()
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in shipped_specs():
        path = shipped_specs()[str(path_or_name)]
    if not path.exists():
        names = ", ".join(shipped_specs()) or "none"
        raise SpecError(f"no such spec file: {path_or_name} (shipped specs: {names})")
    try:
        raw = read_mapping(path)
        if isinstance(raw, dict) and "dataset" in raw:
            raw["dataset"] = dataset_ref(raw["dataset"], path.resolve().parent)
        spec = StudySpec.from_dict(raw)
        return spec.replace(model_dirs=locate_models(spec.models(), path.resolve().parent))
    except SpecError as e:
        if str(path) in str(e):
            raise
        raise SpecError(f"{path}: {e}") from None
    except TypeError as e:  # wrong field types that dataclass construction rejects
        raise SpecError(f"{path}: {e}") from None


@dataclass(frozen=True)
class RunConfig:
    """One fully specified training run: what a trial trains, what `tune export` writes, what `tune train` reads."""

    dataset: str = "fashion-mnist"  # a torchvision benchmark's name, or the absolute path of a folder of images
    image_size: int | None = None  # folders: the side images are resized to; None: the folder's default
    model: str = "bncnn"  # as the user wrote it: bncnn, torchvision:resnet18, timm:NAME, MODULE:FUNCTION
    model_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model builder (model.NAME)
    model_dir: str | None = None  # folder a MODULE:FUNCTION model imports from (None: from sys.path)
    pretrained: bool = False  # torchvision/timm: start from the default weights, normalize with their mean and std
    optimizer: str = "adam"
    lr: float = 1e-3  # initial learning rate
    batch_size: int = 64
    scheduler: str = "exponential"  # lr schedule stepped after each epoch
    gamma: float = 0.9  # lr multiplier of each scheduler step
    step_size: int = 1  # epochs between steps of the step scheduler
    momentum: float = 0.0  # sgd and rmsprop only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0
    dropout: float = 0.2  # built-in families: dropout after each hidden fully connected layer
    label_smoothing: float = 0.0  # of the training loss (validation and test losses are plain cross-entropy)
    flip: bool = False  # training batches: each image mirrored left-right with probability 1/2
    translate: int = 0  # training batches: each image shifted by up to this many pixels (zero pad, random crop)
    epochs: int = 8
    seed: int = 0  # seeds weight init, batch order and dropout
    validation: float | str = 0.15  # held-out fraction of the training set, or "test"
    split_seed: int = 0  # seed of the train/validation split
    metric: str = "accuracy"
    compile: bool = False  # through torch.compile: part of the config because fused kernels round differently

    def __post_init__(self) -> None:
        _boolean("compile", self.compile)
        for name, check in PARAMS.items():
            check(getattr(self, name))
        check_dataset(self.dataset)
        check_image_size(self.image_size)
        check_model_args(self.model_args)
        if self.model_dir is not None and not isinstance(self.model_dir, str):
            raise SpecError(f"model_dir must be a folder or null, got {self.model_dir!r}")
        if self.pretrained and model_source(self.model)[0] not in HUBS:
            raise SpecError(f"pretrained: model {self.model} has no pretrained weights: pretrained applies to "
                            "torchvision:NAME and timm:NAME models")
        _number("epochs", self.epochs, low=1, integer=True)
        _number("seed", self.seed, low=0, integer=True)
        _number("split_seed", self.split_seed, low=0, integer=True)
        check_validation(self.validation)
        _choice("metric", self.metric, tuple(METRICS))
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise SpecError("nesterov needs optimizer sgd with momentum > 0")

    @classmethod
    def from_dict(cls, raw: Any) -> RunConfig:
        if not isinstance(raw, dict):
            raise SpecError(f"a run config must be a mapping of fields, got {type(raw).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise SpecError(f"unknown run config field(s) {', '.join(sorted(unknown))}: "
                            f"use {', '.join(sorted(known))}")
        values = {k: v for k, v in raw.items() if k in known}
        for name in INTEGER_PARAMS + ("epochs", "seed", "split_seed", "image_size"):
            if isinstance(values.get(name), float) and values[name].is_integer():
                values[name] = int(values[name])
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

"""Study specs: what a study searches and how, read from YAML, TOML or JSON under `studies/` (or the embedded
default), and the one rule of precedence when a study is started: flags > spec file > the study's stored spec >
the default. A trial turns a spec into a RunConfig (tuner.search.space)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import SpecError, TuneError
from tuner.fileio import read_mapping
from tuner.spec import checks
from tuner.spec.constraints import Constraints, check_objectives
from tuner.spec.defaults import default_model, default_search_for
from tuner.spec.params import (
    Choices,
    Domain,
    Fixed,
    Range,
    check_builtin_args,
    default_search,
    domain_to_data,
    may_be_true,
    parse_domain,
)
from tuner.spec.refs import HUBS, MODEL_ARG, check_dataset, check_model, dataset_ref, locate_models, model_source
from tuner.spec.run import METRICS, Direction

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
PRUNERS = ("median", "percentile", "successive-halving", "hyperband", "none")

# Where the shipped specs live: inside the installed package, or beside it in a source checkout.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
SHIPPED_SPEC_DIRS = (_PACKAGE_DIR / "studies", _PACKAGE_DIR.parent / "studies")


def _named(kind: str, raw: Any, allowed: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Sampler or pruner: either a name, or {name: ..., other keyword arguments for the Optuna class}."""
    if isinstance(raw, str):
        return checks.choice(kind, raw, allowed), {}
    if isinstance(raw, dict) and "name" in raw:
        options = {k: v for k, v in raw.items() if k != "name"}
        return checks.choice(kind, raw["name"], allowed), options
    raise SpecError(f"{kind} must be a name ({', '.join(allowed)}) or {{name: ..., options}}, got {raw!r}")


@dataclass(frozen=True)
class StudySpec:
    """What one study searches and how. The defaults are the shipped Fashion-MNIST study."""

    name: str = "fashion-mnist"  # study name in the storage, unless --study gives another
    dataset: str = "fashion-mnist"  # a name of tuner.spec.refs.BENCHMARKS (torchvision's, a bundled sample) or a folder
    image_size: int | None = None  # folders: images resized to this (shorter side, center crop); None: median side
    model: str = "bncnn"  # built-in family, torchvision:NAME, timm:NAME or MODULE:FUNCTION, unless search.model picks
    pretrained: bool = False  # torchvision and timm models start from their default weights (search.pretrained too)
    model_dirs: dict[str, str] = field(default_factory=dict)  # module -> folder it was found in (filled in by tune)
    epochs: int = 8  # training epochs per trial; pruning can stop a trial after any of them
    production_epochs: int | None = None  # what `tune train --full-train` trains the winner for; None: `epochs`
    metric: str = "accuracy"  # validation metric of each epoch: accuracy, balanced_accuracy, macro_f1 (maximized), loss
    validation: float | str = 0.15  # fraction of the training set held out to select on, or "test"
    split_seed: int = 0  # seed of the train/validation split, fixed so that every trial sees the same split
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the Optuna sampler class
    pruner: str = "median"
    pruner_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the Optuna pruner class
    search: dict[str, Domain] = field(default_factory=default_search)
    compile: bool = False  # train every trial through torch.compile (worth it for long trials on a GPU)
    stop_when_flat: bool = False  # end the search once more trials are unlikely to help (tuner.search.stopping)
    constraints: Constraints = field(default_factory=Constraints)  # latency, size a served model must meet
    objectives: tuple[str, ...] = ()  # (metric, latency and/or size): a multi-objective study; (): the metric alone

    def __post_init__(self) -> None:
        checks.boolean("compile", self.compile)
        checks.boolean("stop_when_flat", self.stop_when_flat)
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError(f"name must be a non-empty string, got {self.name!r}")
        check_dataset(self.dataset)
        checks.image_size(self.image_size)
        check_model(self.model)
        checks.boolean("pretrained", self.pretrained)
        _check_model_dirs(self.model_dirs)
        self._check_pretrained()
        self._check_model_args()
        checks.number("epochs", self.epochs, low=1, integer=True)
        if self.production_epochs is not None:
            checks.number("production_epochs", self.production_epochs, low=1, integer=True)
        checks.choice("metric", self.metric, tuple(METRICS))
        object.__setattr__(self, "objectives", check_objectives(self.objectives, self.metric))
        checks.validation(self.validation)
        checks.number("split_seed", self.split_seed, low=0, integer=True)
        checks.choice("sampler", self.sampler, SAMPLERS)
        checks.choice("pruner", self.pruner, PRUNERS)
        if not isinstance(self.constraints, Constraints):
            raise SpecError(f"constraints must be a mapping like {{max_latency: 5ms}}, got {self.constraints!r}")
        self._check_objectives()
        if may_be_true(self.search.get("nesterov")) and "momentum" not in self.search:
            raise SpecError("search.nesterov needs momentum: add search.momentum (a value > 0 or a range)")

    def _check_objectives(self) -> None:
        """Several objectives: no single value to judge flat, and a sampler that takes them (CMA-ES does not)."""
        if not self.objectives:
            return
        if self.stop_when_flat:
            raise SpecError(f"stop_when_flat judges one value: a study with objectives {','.join(self.objectives)} "
                            "cannot use it; drop stop_when_flat (or --stop-when-flat)")
        if self.sampler == "cmaes":
            raise SpecError(f"sampler cmaes takes one objective, not {','.join(self.objectives)}: use tpe, random, "
                            "gp or qmc")

    def _check_pretrained(self) -> None:
        if not may_be_true(self.search.get("pretrained", Fixed(self.pretrained))):
            return
        models = self.search.get("model", Fixed(self.model))
        assert not isinstance(models, Range)  # parse_domain refuses a range for model
        refs = models.values if isinstance(models, Choices) else (models.value,)
        if not any(model_source(ref)[0] in HUBS for ref in refs):
            raise SpecError(f"pretrained: {', '.join(refs)} has no pretrained weights: pretrained applies to "
                            "torchvision:NAME and timm:NAME models")

    def _check_model_args(self) -> None:
        """A study of built-in families only searches their arguments (model.width, model.depth), in whole numbers."""
        if not all(model_source(ref)[0] == "builtin" for ref in self.models()):
            return  # a trial of a built-in family samples only the arguments it takes
        models = ", ".join(self.models())
        for key, domain in self.search.items():
            if not key.startswith(MODEL_ARG):
                continue
            name = key[len(MODEL_ARG):]
            values = (domain.low, domain.high, *((domain.step,) if domain.step is not None else ())) \
                if isinstance(domain, Range) else domain.values if isinstance(domain, Choices) else (domain.value,)
            for value in values:
                check_builtin_args(models, {name: value}, f"search.{key}")

    def models(self) -> list[str]:
        """Every model reference a trial of this spec may build."""
        domain = self.search.get("model", Fixed(self.model))
        assert not isinstance(domain, Range)  # parse_domain refuses a range for model
        return list(domain.values) if isinstance(domain, Choices) else [domain.value]

    @property
    def direction(self) -> Direction:
        return METRICS[self.metric]

    @property
    def directions(self) -> list[Direction]:
        """Optuna's direction of each objective: the metric's, then latency and size minimized."""
        minimize: Direction = "minimize"
        return [self.direction, *(minimize for _ in self.objectives[1:])]

    @property
    def metric_names(self) -> list[str]:
        """What each objective is called in the study (optuna-dashboard's axes): val_accuracy, p95_latency_ms,
        onnx_mb."""
        names = {"latency": f"{self.constraints.latency_stat}_latency_ms", "size": "onnx_mb"}
        return [f"val_{self.metric}", *(names[name] for name in self.objectives[1:])]

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
        if "constraints" in raw:
            raw["constraints"] = Constraints.from_dict(raw["constraints"])
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, in the shape `from_dict` reads (stored in the study for resumes)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("sampler_options", "pruner_options", "search", "constraints", "objectives"):
                continue
            out[f.name] = getattr(self, f.name)
        out["sampler"] = {"name": self.sampler, **self.sampler_options} if self.sampler_options else self.sampler
        out["pruner"] = {"name": self.pruner, **self.pruner_options} if self.pruner_options else self.pruner
        out["search"] = {name: domain_to_data(d) for name, d in self.search.items()}
        out["constraints"] = self.constraints.to_dict()
        if not out["constraints"]:
            del out["constraints"]  # a spec without constraints reads as it did before they existed
        if self.production_epochs is None:
            del out["production_epochs"]  # likewise
        if self.objectives:
            out["objectives"] = list(self.objectives)
        return out

    def replace(self, **changes: Any) -> StudySpec:
        """A copy with some fields changed and validated again (CLI overrides go through here). A new `model`
        replaces search.model too, and the model.NAME arguments of the models it replaces; `model_dirs` adds to the
        folders already known."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "model" in changes and "search" not in changes:
            # model.NAME arguments belong to the model they were written for (the default study's model.width to
            # bncnn): another model starts without them
            drop = changes["model"] not in self.models()
            changes["search"] = {k: v for k, v in self.search.items()
                                 if k != "model" and not (drop and k.startswith(MODEL_ARG))}
        if "model_dirs" in changes:
            changes["model_dirs"] = {**self.model_dirs, **changes["model_dirs"]}
        if isinstance(changes.get("constraints"), dict):  # flags: some keys over the spec's constraints
            changes["constraints"] = self.constraints.merged(changes["constraints"])
        return dataclasses.replace(self, **changes)


def _check_model_dirs(value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError(f"model_dirs must map module names to folders, got {value!r}")


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
        raw = read_mapping(path)  # its errors name the file
    except TuneError as e:
        raise SpecError(str(e)) from None
    try:
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


def default_spec(dataset: str | None) -> StudySpec:
    """The default study for `dataset` (None: the default dataset): a folder of photos searches the photo space
    (tuner.spec.defaults), a benchmark the shared default space."""
    if dataset is None or default_model(dataset) is None:
        return StudySpec()
    return StudySpec(dataset=dataset, model=default_model(dataset) or "", search=default_search_for(dataset))


def resolve_spec(name: str, spec_file: StudySpec | None, stored: StudySpec | None, **flags: Any) -> StudySpec:
    """The spec a study runs, by the one rule of precedence: flags (None: not given) > the spec file > the study's
    stored spec > the default. A flag that names another sampler or pruner drops the options of the old one."""
    spec = spec_file or stored or default_spec(flags.get("dataset"))
    if flags.get("sampler") not in (None, spec.sampler):
        spec = spec.replace(sampler_options={})
    if flags.get("pruner") not in (None, spec.pruner):
        spec = spec.replace(pruner_options={})
    return spec.replace(name=name, **flags)

"""A `RunConfig`: one fully specified training run. A trial samples one, training consumes it, `tune export`
writes it and `tune train` reads it back; every field is checked on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from tuner.errors import SpecError
from tuner.spec import checks
from tuner.spec.params import BATCH_SCHEDULERS, DEFAULTS, PARAMS, check_builtin_args, check_model_args
from tuner.spec.refs import HUBS, check_dataset, model_source

Direction = Literal["maximize", "minimize"]
# balanced_accuracy, macro_f1: for imbalanced classes (each class counts the same, whatever its size)
METRICS: dict[str, Direction] = {"accuracy": "maximize", "loss": "minimize", "balanced_accuracy": "maximize",
                                 "macro_f1": "maximize"}

# Notes of the fields that are not hyperparameters (those have theirs in tuner.spec.params), for export files.
FIELD_NOTES = {
    "dataset": "torchvision benchmark, or a folder of images",
    "image_size": "folders: shorter side resized to it, center crop",
    "model_args": "keyword arguments of the model builder",
    "model_dir": "where the user's module was found",
    "validation": 'held-out fraction of the training set, or "test"',
    "split_seed": "seed of the train/validation split",
    "seed": "seeds weight init, batch order and dropout",
    "metric": "validation metric the study selected on",
}


def field_notes() -> dict[str, str]:
    """Every RunConfig field's note, by field name."""
    return {**FIELD_NOTES, **{name: p.note for name, p in PARAMS.items() if p.note}}


@dataclass(frozen=True)
class RunConfig:
    """One fully specified training run. The hyperparameters' defaults and meanings are in tuner.spec.params."""

    dataset: str = "fashion-mnist"  # a torchvision benchmark's name, or the absolute path of a folder of images
    image_size: int | None = None  # folders: the side images are resized to; None: the folder's default
    model: str = DEFAULTS["model"]  # as the user wrote it: bncnn, torchvision:resnet18, timm:NAME, MODULE:FUNCTION
    model_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model builder (model.NAME)
    model_dir: str | None = None  # folder a MODULE:FUNCTION model imports from (None: from sys.path)
    pretrained: bool = DEFAULTS["pretrained"]
    backbone_lr: float = DEFAULTS["backbone_lr"]
    optimizer: str = DEFAULTS["optimizer"]
    lr: float = DEFAULTS["lr"]
    batch_size: int = DEFAULTS["batch_size"]
    scheduler: str = DEFAULTS["scheduler"]
    gamma: float = DEFAULTS["gamma"]
    step_size: int = DEFAULTS["step_size"]
    warmup: float = DEFAULTS["warmup"]
    momentum: float = DEFAULTS["momentum"]
    nesterov: bool = DEFAULTS["nesterov"]
    weight_decay: float = DEFAULTS["weight_decay"]
    dropout: float = DEFAULTS["dropout"]
    label_smoothing: float = DEFAULTS["label_smoothing"]
    class_weights: bool = DEFAULTS["class_weights"]
    flip: bool = DEFAULTS["flip"]
    translate: int = DEFAULTS["translate"]
    crop: float = DEFAULTS["crop"]
    jitter: float = DEFAULTS["jitter"]
    trivial_augment: bool = DEFAULTS["trivial_augment"]
    mixup: float = DEFAULTS["mixup"]
    cutmix: float = DEFAULTS["cutmix"]
    epochs: int = 8
    seed: int = 0  # seeds weight init, batch order and dropout
    validation: float | str = 0.15  # held-out fraction of the training set, or "test"
    split_seed: int = 0  # seed of the train/validation split
    metric: str = "accuracy"
    compile: bool = False  # through torch.compile: part of the config because fused kernels round differently

    def __post_init__(self) -> None:
        checks.boolean("compile", self.compile)
        for name, param in PARAMS.items():
            param.check(getattr(self, name))
        check_dataset(self.dataset)
        checks.image_size(self.image_size)
        check_model_args(self.model_args)
        if model_source(self.model)[0] == "builtin":
            check_builtin_args(self.model, self.model_args)
        if self.model_dir is not None and not isinstance(self.model_dir, str):
            raise SpecError(f"model_dir must be a folder or null, got {self.model_dir!r}")
        if self.pretrained and model_source(self.model)[0] not in HUBS:
            raise SpecError(f"pretrained: model {self.model} has no pretrained weights: pretrained applies to "
                            "torchvision:NAME and timm:NAME models")
        checks.number("epochs", self.epochs, low=1, integer=True)
        checks.number("seed", self.seed, low=0, integer=True)
        checks.number("split_seed", self.split_seed, low=0, integer=True)
        checks.validation(self.validation)
        checks.choice("metric", self.metric, tuple(METRICS))
        if self.nesterov and not PARAMS["nesterov"].applies(self.to_dict()):
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
        values = dict(raw)
        integers = [name for name, p in PARAMS.items() if p.kind == "int"] + ["epochs", "seed", "split_seed",
                                                                              "image_size"]
        for name in integers:
            if isinstance(values.get(name), float) and values[name].is_integer():
                values[name] = int(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def same_as(self, saved: Any) -> bool:
        """Whether `saved` (a to_dict() of an earlier version, say a checkpoint's) is this run: fields added since
        count as their defaults, so an upgrade does not throw a half-trained run away."""
        try:
            return RunConfig.from_dict(saved).to_dict() == self.to_dict()
        except (SpecError, TypeError):
            return False

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def stretched(self, epochs: int) -> tuple[RunConfig, str | None]:
        """This run over `epochs` epochs with its schedule's shape kept, and a line saying what changed (None when
        `epochs` is the run's). exponential: gamma rescaled so that the last epoch trains at the same learning rate;
        exp-warmup, onecycle-gamma: gamma rescaled so that the run ends at the same learning rate;
        step: the steps spread out in proportion, same gamma; cosine and onecycle span any run already, warm-up the
        same share of it."""
        checks.number("epochs", epochs, low=1, integer=True)
        if epochs == self.epochs:
            return self, None
        head = f"{epochs} epochs instead of {self.epochs}"
        if self.scheduler == "exponential" and min(epochs, self.epochs) > 1:
            gamma = self.gamma ** ((self.epochs - 1) / (epochs - 1))
            last = self.lr * self.gamma ** (self.epochs - 1)
            return self.replace(epochs=epochs, gamma=gamma), (
                f"{head}: exponential gamma {self.gamma:.4g} -> {gamma:.4g} per epoch, so that the last epoch trains "
                f"at the same learning rate ({last:.3g}) as in the original run")
        if self.scheduler in ("exp-warmup", "onecycle-gamma"):
            gamma = self.gamma ** (self.epochs / epochs)
            decaying = self.epochs * (1 - self.warmup) if self.scheduler == "exp-warmup" else self.epochs
            return self.replace(epochs=epochs, gamma=gamma), (
                f"{head}: {self.scheduler} gamma {self.gamma:.4g} -> {gamma:.4g} per epoch, so that the run ends at "
                f"the same learning rate ({self.lr * self.gamma ** decaying:.3g}) as the original run; the warm-up is "
                f"the first {self.warmup:.0%} of the batches as before")
        if self.scheduler == "step":
            step_size = max(1, round(self.step_size * epochs / self.epochs))
            last, now = (self.lr * self.gamma ** ((n - 1) // s) for n, s in ((self.epochs, self.step_size),
                                                                              (epochs, step_size)))
            return self.replace(epochs=epochs, step_size=step_size), (
                f"{head}: the step schedule multiplies the learning rate by {self.gamma:.4g} every {step_size} "
                f"epochs instead of {self.step_size}; the last epoch trains at {now:.3g} ({last:.3g} in the "
                "original run)")
        if self.scheduler in BATCH_SCHEDULERS:
            return self.replace(epochs=epochs), (
                f"{head}: the {self.scheduler} schedule spans all {epochs}, its warm-up the first {self.warmup:.0%} "
                "of the batches as before")
        return self.replace(epochs=epochs), f"{head}, same schedule ({self.scheduler})"

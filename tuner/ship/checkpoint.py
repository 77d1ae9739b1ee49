"""Saved models: weights with what they are (run config, input shape, class names, preprocessing) in one
safetensors file, written by `tune train` and for kept trial weights, read back by `tune predict`, `tune convert`
and `tuner.load_model`.

The metadata (safetensors keeps strings only; lists and mappings as JSON):
- `config`: the RunConfig the weights were trained with; the model is rebuilt from it
- `input_shape`: [C, H, W] of the uint8 images the model takes; `num_classes`
- `classes`: the class names, in output order
- `preprocess`: `{"channels", "size": [H, W], "resize", "decode", "steps"}`: how an image file becomes an input
  (`tuner.datasets.images.decode_for`); `steps` spells it out, step by step with parameters, for code without
  tune (`tuner.datasets.images.preprocess_steps`; older weights get them when read)
- `members`: an ensemble's member configs, in the order of its networks (keys `members.I.`; tuner.models.ensemble)
- anything else: where the weights came from (study, trial, value; or the `tune train` run)

Weights saved before class names and preprocessing were recorded load with classes "0", "1", ... and the
preprocessing their input shape implies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from tuner.errors import TuneError, one_line
from tuner.fileio import as_new_files_are
from tuner.record import WEIGHTS_FILE as WEIGHTS_FILE  # of `tune train` runs and of kept trial weights
from tuner.spec import RunConfig, SpecError

if TYPE_CHECKING:
    import torch

INPUT_KEYS = ("config", "input_shape", "num_classes", "classes", "preprocess")
MEMBERS_KEY = "members"  # an ensemble's: [{"config": run config, "trial": N, ...}, ...], in the order of its networks
RUN_HINT = "give a run folder from `tune train` or a .safetensors file (tune export --with-weights)"


@dataclass(frozen=True)
class ModelInfo:
    """What a saved model is, as its metadata says."""

    config: dict[str, Any]  # the run config as stored (RunConfig.to_dict()); `run_config()` parses it
    shape: tuple[int, ...]  # (C, H, W) of the uint8 images it takes
    classes: tuple[str, ...]  # class names, in the order of the model's outputs
    preprocess: dict[str, Any]  # how a file becomes an input: channels, size [H, W], resize rule
    extra: dict[str, str] = field(default_factory=dict)  # the other metadata: where the weights came from

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def run_config(self) -> RunConfig:
        try:
            return RunConfig.from_dict(self.config)
        except (SpecError, TypeError) as e:
            raise TuneError(f"the saved model's config is not a run config this tune can build: {e}") from None

    def members(self) -> list[RunConfig]:
        """An ensemble's member run configs (metadata `members`, tuner.models.ensemble); [] for one network."""
        if MEMBERS_KEY not in self.extra:
            return []
        try:
            return [RunConfig.from_dict(member["config"]) for member in json.loads(self.extra[MEMBERS_KEY])]
        except (SpecError, TypeError, ValueError, KeyError) as e:
            raise TuneError(f"the saved ensemble's member configs are not run configs this tune can build: {e}"
                            ) from None

    def prepare(self, file: str | Path) -> torch.Tensor:
        """The image file as the model's input, uint8 (C, H, W), made exactly as the training images were
        (`tuner.datasets.images.decode_for`); raises `UnreadableImage` for a file Pillow cannot decode."""
        from tuner.datasets.images import decode_for

        return decode_for(file, self.preprocess)


class Classifier(nn.Module):
    """A saved model rebuilt: `network` maps uint8 images (N, C, H, W) to logits, and `info` says what it is.

    Calling it calls the network; `tuner.predict` takes it with files, folders or image tensors.
    """

    def __init__(self, network: nn.Module, info: ModelInfo) -> None:
        super().__init__()
        self.network = network
        self.info = info

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.info.shape

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return cast("torch.Tensor", self.network(images))


# --- write

def metadata(config: Mapping[str, Any], input_info: Mapping[str, Any],
             extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The metadata strings of a saved model trained with `config` on data described by `input_info`
    (`Splits.input_info()`: shape, classes, preprocess, and the data's fingerprint where it has one)."""
    classes = list(input_info["classes"])
    values: dict[str, Any] = {"config": dict(config), "input_shape": list(input_info["shape"]),
                              "num_classes": len(classes), "classes": classes}
    if input_info.get("preprocess"):
        from tuner.datasets.images import with_steps

        values["preprocess"] = with_steps(input_info["preprocess"])
    if input_info.get("fingerprint"):
        values["fingerprint"] = input_info["fingerprint"]
    values.update(extra or {})
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}


def save(model: nn.Module, path: str | Path, config: Mapping[str, Any], input_info: Mapping[str, Any],
         extra: Mapping[str, Any] | None = None) -> Path:
    """Write `model`'s weights with their metadata to `path`, whole or not at all; returns the path."""
    from safetensors.torch import save_model

    path = Path(path)
    network = model.network if isinstance(model, Classifier) else model
    partial = path.with_name(path.name + ".partial")
    save_model(network, str(partial), metadata=metadata(config, input_info, extra))
    as_new_files_are(partial)  # safetensors writes 0600; the run folder's other files are 0644
    partial.replace(path)
    return path


# --- read

def weights_path(source: str | Path) -> Path:
    """The weights file `source` names: a .safetensors file, or a run folder holding model.safetensors."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise TuneError(f"{path} has no {WEIGHTS_FILE}: {RUN_HINT}")
        return path / WEIGHTS_FILE
    if not path.exists():
        raise TuneError(f"no such run folder or weights file: {path} ({RUN_HINT})")
    return path


def _json(raw: dict[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(raw[key])
    except (KeyError, ValueError):
        raise TuneError(f"{path}: the metadata lacks a valid {key!r}: these weights were not saved by tune "
                        f"({RUN_HINT})") from None


def read_info(source: str | Path) -> ModelInfo:
    """The metadata of the saved model at `source` (run folder or weights file), without loading the weights."""
    from safetensors import SafetensorError, safe_open

    path = weights_path(source)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        reason = one_line(e, 120)
        raise TuneError(f"{path} is not a safetensors weights file ({reason}): {RUN_HINT}") from None
    config = _json(raw, "config", path)
    shape = tuple(int(n) for n in _json(raw, "input_shape", path))
    num_classes = int(_json(raw, "num_classes", path))
    classes = tuple(_json(raw, "classes", path)) if "classes" in raw else tuple(str(i) for i in range(num_classes))
    from tuner.datasets.images import with_steps

    preprocess = with_steps(_json(raw, "preprocess", path) if "preprocess" in raw else implied_preprocess(shape))
    extra = {key: value for key, value in raw.items() if key not in INPUT_KEYS}
    return ModelInfo(config, shape, classes, preprocess, extra)


def implied_preprocess(shape: tuple[int, ...]) -> dict[str, Any]:
    """What weights saved without a preprocessing record were trained on: images of their input shape."""
    from tuner.datasets.images import preprocess_record

    return preprocess_record(shape[0], shape[1:]) if len(shape) == 3 else {}


def rebuild(info: ModelInfo) -> nn.Module:
    """A fresh network of the saved model's architecture (random weights; normalization placeholders)."""
    from tuner.models import build_model

    channels = (0.0,) * info.shape[0]
    # The saved weights replace any pretrained ones (and their mean and std): nothing to download.
    shape = cast(tuple[int, int, int], info.shape)  # an image model's: (C, H, W)
    members = info.members()
    if members:
        from tuner.models.ensemble import Ensemble

        return Ensemble([build_model(config, shape, info.num_classes, channels, channels, load_pretrained=False)
                         for config in members])
    return build_model(info.run_config(), shape, info.num_classes, channels, channels, load_pretrained=False)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """The saved model at `path` (a run folder from `tune train`, or a .safetensors file: kept trial weights,
    `tune export --with-weights`), rebuilt from its metadata, in eval mode on `device`.

    >>> model = tuner.load_model("runs/best")
    >>> model.classes, model.input_shape
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_into

    info = read_info(path)
    network = rebuild(info)
    try:
        load_into(network, str(weights_path(path)))  # the normalization buffers come with the weights
    except (SafetensorError, RuntimeError) as e:
        reason = one_line(e, 160)
        raise TuneError(f"{weights_path(path)}: the weights do not fit the model their config builds ({reason})"
                        ) from None
    return Classifier(network, info).eval().to(device)

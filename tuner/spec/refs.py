"""What a spec's references name: datasets (a torchvision benchmark or a folder) and models (a built-in family,
a torchvision or timm model, or the user's own MODULE:FUNCTION)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import SpecError


@dataclass(frozen=True)
class Benchmark:
    """A dataset tune knows by name: one of torchvision's, which torchvision reads (or downloads) in the data
    directory, or a sample of one shipped inside the package (`sample_of`), read from tuner/data without network
    or data directory. A sample is a dataset of its own: its own name, splits and studies."""

    torchvision_class: str  # its class in torchvision.datasets (a sample's: the full set's, for the class names)
    files: str  # where torchvision keeps its files under the data directory; a sample's folder in tuner/data
    shape: tuple[int, int, int]  # (C, H, W) of its images
    num_classes: int
    title: str  # its name in sentences
    images: int  # train + test
    sample_of: str | None = None  # the benchmark a bundled sample's images come from


BENCHMARKS = {
    "fashion-mnist": Benchmark("FashionMNIST", "FashionMNIST/raw", (1, 28, 28), 10, "Fashion-MNIST", 70_000),
    "mnist": Benchmark("MNIST", "MNIST/raw", (1, 28, 28), 10, "MNIST", 70_000),
    "kmnist": Benchmark("KMNIST", "KMNIST/raw", (1, 28, 28), 10, "KMNIST", 70_000),
    "cifar10": Benchmark("CIFAR10", "cifar-10-batches-py", (3, 32, 32), 10, "CIFAR-10", 60_000),
    "fashion-mnist-sample": Benchmark("FashionMNIST", "fashion-mnist-sample", (1, 28, 28), 10,
                                      "the Fashion-MNIST sample", 2_222, sample_of="fashion-mnist"),
}
DATASETS = tuple(BENCHMARKS)  # any other dataset is a folder path
MODELS = ("mlp", "cnn", "convnet", "bncnn", "rescnn")  # built-in families (rescnn: photos); see `model_source`
HUBS = ("torchvision", "timm")  # `HUB:NAME` model references; any other `MODULE:FUNCTION` is the user's own code
MODEL_ARG = "model."  # a search key `model.NAME` is the keyword argument NAME of the model builder
BUILTIN_ARGS = ("width", "depth")  # the model.NAME arguments the built-in families take (tuner.models.zoo)
TIMM_INSTALL = "pip install -e '.[timm]' (or pip install timm)"

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def is_folder(dataset: str) -> bool:
    """Whether a dataset reference names a folder of images rather than a dataset tune knows by name."""
    return dataset not in BENCHMARKS


def is_sample(dataset: str) -> bool:
    """Whether a dataset reference names a sample bundled with tune (read from the package, never downloaded)."""
    return dataset in BENCHMARKS and BENCHMARKS[dataset].sample_of is not None


def sample_for(dataset: str) -> str | None:
    """The bundled sample of benchmark `dataset`, if tune ships one."""
    return next((name for name, b in BENCHMARKS.items() if b.sample_of == dataset), None)


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

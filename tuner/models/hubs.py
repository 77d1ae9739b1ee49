"""Models from elsewhere: torchvision's and timm's classifiers, and the user's own `MODULE:FUNCTION`.

Each builder returns the network (normalized float images in, logits out) and, for pretrained weights, the mean
and std those weights were trained with. Heads are sized to the dataset's classes; a stem takes the dataset's
channels, except that pretrained weights keep their three and grayscale images are repeated to fit them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tuner.errors import TuneError, one_line
from tuner.spec.refs import TIMM_INSTALL

# Builder arguments that make a torchvision model a plain classifier (one output in training too).
DOWNLOAD_TIMEOUT = 10.0  # seconds a pretrained-weights check waits for the network before training from scratch
TORCHVISION_DEFAULTS = {"googlenet": {"aux_logits": False, "init_weights": True},
                        "inception_v3": {"aux_logits": False, "init_weights": True}}


@dataclass
class Built:
    net: nn.Module
    mean: tuple[float, ...] | None = None  # the pretrained weights' normalization; None: the dataset's
    std: tuple[float, ...] | None = None


def _rgb_only(ref: str, channels: int) -> None:
    if channels not in (1, 3):
        raise TuneError(f"model {ref}: pretrained weights take 3 channels (grayscale is repeated), this dataset has "
                        f"{channels}: set pretrained: false")


def adapt_stem(net: nn.Module, channels: int, ref: str) -> nn.Module:
    """`net` with its first 3-channel convolution replaced by one that takes `channels`."""
    if channels == 3:
        return net
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                # torch types a Conv2d's kernel_size, stride, padding and dilation as tuple[int, ...]: they are pairs
                setattr(parent, name, nn.Conv2d(channels, child.out_channels, child.kernel_size, child.stride,  # type: ignore[arg-type]
                                                child.padding, child.dilation, child.groups, child.bias is not None,  # type: ignore[arg-type]
                                                child.padding_mode))
                return net
    raise TuneError(f"model {ref} has no 3-channel convolution to adapt to {channels}-channel images: use "
                    "pretrained: true (grayscale) or another model")


def _bind(ref: str, builder: Any, *args: Any, **kwargs: Any) -> None:
    """One line when the builder cannot take these arguments (a misspelled model.NAME, usually)."""
    try:
        inspect.signature(builder).bind(*args, **kwargs)
    except TypeError as e:
        raise TuneError(f"model {ref}: {e}: check the search's model.NAME keys") from None


def torchvision_model(name: str, shape: tuple[int, int, int], num_classes: int, kwargs: dict[str, Any],
                      pretrained: bool, load_weights: bool) -> Built:
    import torchvision.models

    ref = f"torchvision:{name}"
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise TuneError(f"model {ref}: torchvision has no model {name!r} (torchvision.models.list_models())") from None
    kwargs = {**TORCHVISION_DEFAULTS.get(name, {}), **kwargs}
    if pretrained and name in TORCHVISION_DEFAULTS:
        kwargs.setdefault("transform_input", True)  # as torchvision builds them for their pretrained weights
    try:
        net = builder(weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise TuneError(f"model {ref}: {e}: check the search's model.NAME keys") from None
    if not pretrained:
        return Built(adapt_stem(net, shape[0], ref))
    _rgb_only(ref, shape[0])
    weights = torchvision.models.get_model_weights(name).DEFAULT
    if load_weights:
        load_matching(net, torchvision_state(ref, weights.url), ref)
    preprocess = weights.transforms()
    return Built(net, tuple(preprocess.mean), tuple(preprocess.std))


@functools.lru_cache(maxsize=2)
def torchvision_state(ref: str, url: str) -> dict[str, torch.Tensor]:
    """The weights at `url` from torch's hub cache ($TORCH_HOME/hub/checkpoints), downloaded there if missing."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    except Exception as e:  # urllib's, socket's and ssl's errors: no network, or a proxy refusing
        if cached.exists():
            raise
        reason = one_line(e, 120)
        raise TuneError(f"pretrained weights of {ref} are not cached and cannot be downloaded ({reason}): put "
                        f"{cached.name} (from {url}) in {cached.parent}") from None


def torchvision_weights_file(name: str) -> Path:
    """Where torch keeps the default weights of torchvision model `name` once downloaded."""
    import torchvision.models

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def pretrained_at_hand(name: str) -> str | None:
    """None when the default weights of torchvision model `name` are cached or can be downloaded now (they are
    then cached); else why not, in a few words."""
    import torchvision.models

    if torchvision_weights_file(name).exists():
        return None
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # a network that drops packets must not freeze a new study
    try:
        torchvision_state(f"torchvision:{name}", torchvision.models.get_model_weights(name).DEFAULT.url)
    except TuneError as e:
        return str(e)
    finally:
        socket.setdefaulttimeout(timeout)
    return None


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the model's classification head: timm's `get_classifier()`, else the last linear layer
    (torchvision's fc / classifier[-1])."""
    for module in model.modules():
        get_classifier = getattr(module, "get_classifier", None)
        if callable(get_classifier) and isinstance(get_classifier(), nn.Module):
            return list(get_classifier().parameters())
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return list(linear[-1].parameters()) if linear else []


def parameter_groups(model: nn.Module, lr: float, backbone_lr: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the head at `lr`, the rest (a pretrained backbone) at `lr * backbone_lr`."""
    head = {id(p) for p in head_parameters(model)}
    if backbone_lr == 1 or not head:
        return [{"params": list(model.parameters()), "lr": lr}]
    params = list(model.parameters())
    return [{"params": [p for p in params if id(p) not in head], "lr": lr * backbone_lr},
            {"params": [p for p in params if id(p) in head], "lr": lr}]


def load_matching(net: nn.Module, state: dict[str, torch.Tensor], ref: str) -> None:
    """Load the tensors of `state` that fit `net` (all but the resized head, normally)."""
    own = net.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) / 2:
        raise TuneError(f"model {ref}: its pretrained weights fit only {len(fitting)} of {len(own)} tensors")
    net.load_state_dict(fitting, strict=False)


def timm_model(name: str, shape: tuple[int, int, int], num_classes: int, kwargs: dict[str, Any], pretrained: bool,
               load_weights: bool) -> Built:
    ref = f"timm:{name}"
    try:
        import timm
    except ImportError:
        raise TuneError(f"model {ref} needs timm, which is not installed: {TIMM_INSTALL}") from None
    if pretrained:
        _rgb_only(ref, shape[0])
    load = pretrained and load_weights
    try:
        net = timm.create_model(name, pretrained=load, num_classes=num_classes,
                                in_chans=3 if pretrained else shape[0], **kwargs)
    except TypeError as e:
        raise TuneError(f"model {ref}: {e}: check the search's model.NAME keys") from None
    except RuntimeError as e:
        if "Unknown model" not in str(e):
            raise
        raise TuneError(f"model {ref}: timm has no model {name!r} (timm.list_models())") from None
    except OSError as e:  # huggingface_hub's LocalEntryNotFoundError and the network's errors
        raise TuneError(_timm_offline(ref, name, e)) from None
    if not pretrained:
        return Built(net)
    cfg = cast(dict[str, Any], net.pretrained_cfg)  # timm sets it on every model it creates
    return Built(net, tuple(cfg["mean"]), tuple(cfg["std"]))


def _timm_offline(ref: str, name: str, error: Exception) -> str:
    import timm
    from huggingface_hub import constants

    cfg = timm.models.get_pretrained_cfg(name)
    repo = (cfg.hf_hub_id if cfg is not None else None) or name
    reason = one_line(error, 120)
    return (f"pretrained weights of {ref} are not cached and cannot be downloaded ({reason}): download "
            f"{repo} (model.safetensors) where there is a network, `huggingface-cli download {repo}`, and copy that "
            f"hub cache to {constants.HF_HUB_CACHE}")


def import_user_module(name: str, model_dir: str | None, ref: str) -> Any:
    """Module `name` from `model_dir` (where the spec found it), else sys.path, else the current directory."""
    for folder in (model_dir, str(Path.cwd())):
        if folder and folder not in sys.path and Path(folder).is_dir():
            sys.path.insert(0, folder)
        importlib.invalidate_caches()  # a module written since the last import (tests, notebooks)
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise  # the user's module imports something missing: their traceback says what
    top = name.split(".")[0]
    where = f"{model_dir}, " if model_dir else ""
    raise TuneError(f"model {ref}: cannot import {name} (looked in {where}sys.path and the current directory): run "
                    f"from the folder that holds {top}.py, or add that folder to PYTHONPATH")


def user_model(ref: str, shape: tuple[int, int, int], num_classes: int, kwargs: dict[str, Any],
               model_dir: str | None) -> Built:
    """FUNCTION(input_shape, num_classes, **kwargs) of the user's MODULE: an nn.Module of normalized images."""
    module_name, _, function_name = ref.partition(":")
    module = import_user_module(module_name, model_dir, ref)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise TuneError(f"model {ref}: {module.__file__} has no function {function_name}")
    _bind(ref, function, shape, num_classes, **kwargs)
    net = function(tuple(shape), num_classes, **kwargs)
    if not isinstance(net, nn.Module):
        raise TuneError(f"model {ref}: {function_name}(input_shape, num_classes, **kwargs) must return a "
                        f"torch.nn.Module, returned {type(net).__name__}")
    return Built(net)

"""Models: a reference (`bncnn`, `torchvision:resnet18`, `timm:NAME`, `MODULE:FUNCTION`) and keyword arguments
-> an `nn.Module` that takes the dataset's uint8 images and normalizes them itself.

Trials, `tune train` and saved weights all build through `build_model`, so saved weights carry their own
preprocessing and production code feeds raw images. The built-in families live in `zoo`, the others in `hubs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from tuner.errors import TuneError
from tuner.spec.refs import model_source

if TYPE_CHECKING:
    from tuner.spec import RunConfig

__all__ = ["Standardize", "build_model"]


class Standardize(nn.Module):
    """uint8 (or [0, 1] float) images -> per-channel standardized floats. With three-channel statistics (pretrained
    weights) a grayscale image comes out repeated to three channels, by broadcasting."""

    mean: torch.Tensor  # buffers, (1, C, 1, 1)
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std


def build_model(config: RunConfig, shape: tuple[int, int, int], num_classes: int, mean: tuple[float, ...],
                std: tuple[float, ...], load_pretrained: bool = True) -> nn.Module:
    """A model of `config.model` for uint8 images of `shape` (C, H, W) and `num_classes` classes: Standardize,
    then the network. Pretrained weights are loaded unless `load_pretrained` is off (the architecture only, never
    a download: the caller loads saved weights, normalization included); they replace `mean` and `std` by theirs."""
    from tuner.models import hubs, zoo

    source, name = model_source(config.model)
    shape = cast(tuple[int, int, int], tuple(shape))
    if source == "builtin":
        family = zoo.FAMILIES[name]
        try:  # RunConfig checked the arguments (width and depth, positive integers)
            network = family(shape, num_classes, config.dropout, **config.model_args)
            return nn.Sequential(Standardize(mean, std), network)
        except (RuntimeError, ValueError) as e:  # the features shrink the images to nothing (or to 1x1: batch norm)
            depth = f" with depth {config.model_args['depth']}" if "depth" in config.model_args else ""
            fix = ", a smaller model.depth" if depth else ""
            raise TuneError(f"model {name}{depth} cannot take {'x'.join(map(str, shape))} images "
                            f"({str(e).strip().splitlines()[0][:160]}): use larger images (image_size, for folders)"
                            f"{fix} or another model") from None
    if source == "torchvision":
        built = hubs.torchvision_model(name, shape, num_classes, config.model_args, config.pretrained, load_pretrained)
    elif source == "timm":
        built = hubs.timm_model(name, shape, num_classes, config.model_args, config.pretrained, load_pretrained)
    else:
        built = hubs.user_model(config.model, shape, num_classes, config.model_args, config.model_dir)
    if built.mean is not None and built.std is not None:
        mean, std = built.mean, built.std
    model = nn.Sequential(Standardize(mean, std), built.net)
    check_output(model, shape, num_classes, config.model)
    return model


def check_output(model: nn.Module, shape: tuple[int, int, int], num_classes: int, ref: str) -> None:
    """One line, before any training, when the model cannot take these images or gives the wrong output."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape, dtype=torch.uint8))
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[0][:200]
        raise TuneError(f"model {ref} cannot take {'x'.join(map(str, shape))} images ({reason}): use larger "
                        "images (image_size, for folders) or another model") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TuneError(f"model {ref} returns {got} for 2 images, not (2, {num_classes}) logits")

"""Training-time augmentation of whole uint8 batches on the device: per-image random flips and translations, and
for photos random-resized crops and colour jitter.

Each image of a batch gets its own flip and shift, drawn from the training generator, so a trial replays exactly.
It runs after `Images.take`, in `train_epoch` only (never at evaluation), on uint8 before the model normalizes.
kornia.augmentation does the same per image but on floats through affine warps, and torchvision's v2 transforms
draw one set of parameters per call (the same flip for the whole batch); docs/benchmarks.md compares their cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Augment:
    """Random left-right flips (probability 1/2) and shifts of up to `translate` pixels each way (zero padding,
    then a random crop of the original size); random-resized crops of at least `crop` of the image's area (1: none)
    and colour jitter of strength `jitter` (0: none). Crops and jitter give [0, 1] floats, which the model's
    Standardize takes as well as uint8."""

    flip: bool = False
    translate: int = 0
    crop: float = 1.0
    jitter: float = 0.0

    def __bool__(self) -> bool:
        return self.flip or self.translate > 0 or self.crop < 1 or self.jitter > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop < 1:
            x = resized_crop(x, self.crop, self.flip, generator)
        elif self.flip:
            x = flip(x, generator)
        if self.translate:
            x = translate(x, self.translate, generator)
        if self.jitter > 0:
            x = colour_jitter(x, self.jitter, generator)
        return x


def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of `x` (N, C, H, W) mirrored left-right with probability 1/2."""
    mirrored = torch.rand(len(x), device=x.device, generator=generator) < 0.5
    return torch.where(mirrored.view(-1, 1, 1, 1), x.flip(3), x)


def translate(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of `x` (N, C, H, W) shifted by its own random (dy, dx) in [-pixels, pixels], zeros shifted in."""
    n, _, height, width = x.shape
    padded = nn.functional.pad(x, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n, 1), device=x.device, generator=generator)
    rows = dy + torch.arange(height, device=x.device)  # (N, H): the rows of the padded image each crop takes
    cols = dx + torch.arange(width, device=x.device)
    images = torch.arange(n, device=x.device).view(n, 1, 1)
    # Advanced indices around a slice put their dimensions first: (N, H, W, C), viewed back as (N, C, H, W).
    return padded[images, :, rows.view(n, height, 1), cols.view(n, 1, width)].permute(0, 3, 1, 2)


def _uniform(n: int, low: float, high: float, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=x.device, generator=generator)


def _floats(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def resized_crop(x: torch.Tensor, smallest: float, mirror: bool, generator: torch.Generator) -> torch.Tensor:
    """Each image of `x` (N, C, H, W) cropped to its own random rectangle (a share in [smallest, 1] of the area,
    aspect ratio in [3/4, 4/3]) and resized back to H x W (bilinear), mirrored with probability 1/2 when `mirror`
    is on: torchvision's RandomResizedCrop, per image and in one sampling of the whole batch. [0, 1] floats out."""
    n = len(x)
    area = _uniform(n, smallest, 1.0, x, generator)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), x, generator))
    width, height = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # shares of the sides
    cx, cy = (_uniform(n, -1, 1, x, generator) * (1 - width)), (_uniform(n, -1, 1, x, generator) * (1 - height))
    sign = torch.where(torch.rand(n, device=x.device, generator=generator) < 0.5, -1.0, 1.0) if mirror else 1.0
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width * sign, cx, height, cy
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(_floats(x), grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Each image's brightness, contrast and (colour images) saturation scaled by its own factors in
    [1 - strength, 1 + strength], as torchvision's ColorJitter does; [0, 1] floats out."""
    n, channels = len(x), x.shape[1]
    x = _floats(x)
    factors = [_uniform(n, 1 - strength, 1 + strength, x, generator).view(n, 1, 1, 1) for _ in range(3)]
    x = x * factors[0]
    gray = x.mean(1, keepdim=True) if channels == 1 else (x * _LUMA.to(x.device)).sum(1, keepdim=True)
    x = (x - gray.mean((2, 3), keepdim=True)) * factors[1] + gray.mean((2, 3), keepdim=True)
    if channels == 3:
        gray = (x * _LUMA.to(x.device)).sum(1, keepdim=True)
        x = (x - gray) * factors[2] + gray
    return x.clamp_(0, 1)


_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601, as torchvision's rgb_to_grayscale

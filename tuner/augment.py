"""Training-time augmentation of whole uint8 batches on the device: per-image random flips and translations.

Each image of a batch gets its own flip and shift, drawn from the training generator, so a trial replays exactly.
It runs after `Images.take`, in `train_epoch` only (never at evaluation), on uint8 before the model normalizes.
kornia.augmentation does the same per image but on floats through affine warps, and torchvision's v2 transforms
draw one set of parameters per call (the same flip for the whole batch); docs/benchmarks.md compares their cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Augment:
    """Random left-right flips (probability 1/2) and shifts of up to `translate` pixels each way (zero padding,
    then a random crop of the original size)."""

    flip: bool = False
    translate: int = 0

    def __bool__(self) -> bool:
        return self.flip or self.translate > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.flip:
            x = flip(x, generator)
        if self.translate:
            x = translate(x, self.translate, generator)
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

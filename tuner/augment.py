"""Training-time augmentation of whole uint8 batches on the device: per-image random flips and translations, and
for photos random-resized crops, colour jitter, TrivialAugment, and Mixup / CutMix of each batch with itself.

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
from torchvision.transforms.v2.functional import equalize

from tuner.spec import RunConfig


@dataclass(frozen=True)
class Augment:
    """Random left-right flips (probability 1/2) and shifts of up to `translate` pixels each way (zero padding,
    then a random crop of the original size); random-resized crops of at least `crop` of the image's area (1: none),
    colour jitter of strength `jitter` (0: none) and TrivialAugment (`trivial`). Crops, jitter and TrivialAugment
    give [0, 1] floats, which the model's Standardize takes as well as uint8. `mixup` and `cutmix` (Beta alphas,
    0: off) are for `mix`, which also mixes the labels."""

    flip: bool = False
    translate: int = 0
    crop: float = 1.0
    jitter: float = 0.0
    trivial: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0

    @classmethod
    def of(cls, config: RunConfig) -> Augment:
        return cls(config.flip, config.translate, config.crop, config.jitter, config.trivial_augment, config.mixup,
                   config.cutmix)

    def __bool__(self) -> bool:
        return self.flip or self.translate > 0 or self.crop < 1 or self.jitter > 0 or self.trivial

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop < 1:
            x = resized_crop(x, self.crop, self.flip, generator)
        elif self.flip:
            x = flip(x, generator)
        if self.translate:
            x = translate(x, self.translate, generator)
        if self.trivial:
            x = trivial_augment(x, generator)
        if self.jitter > 0:
            x = colour_jitter(x, self.jitter, generator)
        return x

    def mix(self, x: torch.Tensor, y: torch.Tensor,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, partner labels, share): `x` mixed with itself in a random order, by Mixup (a weighted mean of
        two images) or CutMix (a rectangle of the partner pasted in), one of them per batch when both are on. Each
        image is `share` (a 0-d tensor, Beta-distributed) its own label's and 1 - share its partner's."""
        n, _, height, width = x.shape
        partner = torch.randperm(n, device=x.device, generator=generator)
        x = _floats(x)
        mixed, shares = [], []
        if self.mixup > 0:
            share = beta(self.mixup, generator)
            mixed.append(torch.lerp(x[partner], x, share))
            shares.append(share)
        if self.cutmix > 0:
            # torchvision's CutMix: a box of 1 - share of the area around a uniform centre, clipped to the image
            side = (1 - beta(self.cutmix, generator)).sqrt()
            cy, cx = torch.rand(2, device=x.device, generator=generator)
            rows = ((torch.arange(height, device=x.device) + 0.5) / height - cy).abs() < side / 2
            cols = ((torch.arange(width, device=x.device) + 0.5) / width - cx).abs() < side / 2
            inside = rows.view(-1, 1) & cols.view(1, -1)
            mixed.append(torch.where(inside, x[partner], x))
            shares.append(1 - inside.float().mean())
        if len(mixed) == 1:
            return mixed[0], y[partner], shares[0]
        pick = torch.rand((), device=x.device, generator=generator) < 0.5
        return torch.where(pick, mixed[0], mixed[1]), y[partner], torch.where(pick, shares[0], shares[1])


NO_AUGMENT = Augment()


def beta(alpha: float, generator: torch.Generator) -> torch.Tensor:
    """One draw of Beta(alpha, alpha), 0 < alpha <= 1, from `generator`, as a 0-d tensor on its device: Johnk's
    method (U ** (1 / alpha), V ** (1 / alpha), accepted when they sum to at most 1), in logs, with 32 candidates at
    once so that nothing waits on the device. All 32 rejected (1 in 4e9 at alpha 1): 0.5."""
    logs = torch.rand(2, 32, device=generator.device, generator=generator).log() / alpha
    accepted = logs.logsumexp(0) <= 0
    first = accepted.int().argmax()
    return torch.where(accepted.any(), torch.sigmoid(logs[0, first] - logs[1, first]), 0.5)


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


TRIVIAL_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
               "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")


def trivial_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TrivialAugment (torchvision's TrivialAugmentWide) per image: each image of `x` (N, C, H, W) gets one of
    TRIVIAL_OPS at one of 31 magnitudes, both uniform, signed ops mirrored with probability 1/2: shears up to 0.99
    (about the centre), shifts up to 32 pixels, rotations up to 135 degrees (bilinear, zeros shifted in),
    brightness, saturation, contrast and sharpness factors in [0.01, 1.99], posterizing to 8-2 bits, solarizing
    above 1-0. Every op runs over the whole batch, the unchosen ones as identities: no per-group indexing, so
    nothing waits on the device. [0, 1] floats out."""
    n, channels, height, width = x.shape
    device, x = x.device, _floats(x)
    op = torch.randint(0, len(TRIVIAL_OPS), (n,), device=device, generator=generator)
    level = torch.randint(0, 31, (n,), device=device, generator=generator) / 30
    signed = torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -level, level)

    def chosen(name: str) -> torch.Tensor:  # (N, 1, 1, 1): whether each image's op is `name`
        return (op == TRIVIAL_OPS.index(name)).view(n, 1, 1, 1)

    def amount(name: str, top: float) -> torch.Tensor:  # (N,): the signed magnitude, 0 for the other images
        return torch.where(chosen(name).view(n), signed * top, 0.0)

    angle = amount("rotate", math.radians(135))
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 1, 1] = angle.cos(), angle.cos()
    theta[:, 0, 1] = (amount("shear_x", 0.99) - angle.sin()) * height / width
    theta[:, 1, 0] = (amount("shear_y", 0.99) + angle.sin()) * width / height
    theta[:, 0, 2], theta[:, 1, 2] = -amount("translate_x", 64 / width), -amount("translate_y", 64 / height)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    warped = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    geometric = (op >= TRIVIAL_OPS.index("shear_x")) & (op <= TRIVIAL_OPS.index("rotate"))
    x = torch.where(geometric.view(n, 1, 1, 1), warped, x)

    def blend(name: str, degenerate: torch.Tensor) -> torch.Tensor:  # as PIL's ImageEnhance; factor 1: as it was
        return torch.lerp(degenerate, x, 1 + amount(name, 0.99).view(n, 1, 1, 1)).clamp_(0, 1)

    x = blend("brightness", torch.zeros_like(x))
    gray = x.mean(1, keepdim=True) if channels == 1 else (x * _LUMA.to(device)).sum(1, keepdim=True)
    x = blend("color", gray) if channels == 3 else x
    x = blend("contrast", gray.mean((1, 2, 3), keepdim=True))
    smooth = x.clone()  # PIL's Sharpness smoothing: 3x3 weights 1, 5 in the centre, over 13; the border kept
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    smooth[..., 1:-1, 1:-1] = (rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * x[..., 1:-1, 1:-1]) / 13
    x = blend("sharpness", smooth)
    step = 2 ** (level * 6).round().view(n, 1, 1, 1)  # posterize: the low log2(step) of 8 bits zeroed
    x = torch.where(chosen("posterize"), x.mul(255).round_().div_(step).floor_().mul_(step / 255), x)
    x = torch.where(x >= torch.where(chosen("solarize"), 1 - level.view(n, 1, 1, 1), 2.0), 1 - x, x)
    low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    stretched = (x - low) / (high - low).clamp(min=1e-6)
    x = torch.where(chosen("autocontrast") & (high > low), stretched, x)
    return torch.where(chosen("equalize"), equalize(x), x)

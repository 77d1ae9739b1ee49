"""The photo family (`rescnn`) and the photo augmentations: what a user training on a folder of photos relies on."""

from __future__ import annotations

import torch
from torch import nn

from tuner.augment import Augment, colour_jitter, resized_crop
from tuner.models import build_model
from tuner.spec import RunConfig


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(shape: tuple[int, int, int], **args: int) -> nn.Module:
    return build_model(RunConfig(model="rescnn", model_args=args), shape, 5, (0.5,) * shape[0], (0.25,) * shape[0])


def test_rescnn_has_the_same_parameters_at_any_image_size_and_takes_each():
    sizes = [32, 64, 128, 224]
    models = [build((3, s, s)) for s in sizes]
    assert len({parameters(m) for m in models}) == 1  # bncnn grows with the square of the side
    for size, model in zip(sizes, models, strict=True):
        assert model.eval()(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)).shape == (2, 5)
    bncnn = [build_model(RunConfig(model="bncnn"), (3, s, s), 5, (0.5,) * 3, (0.25,) * 3) for s in (64, 224)]
    assert parameters(bncnn[1]) > 10 * parameters(bncnn[0])


def test_rescnn_width_and_depth_shape_it():
    convs = [m.out_channels for m in build((3, 64, 64), width=8, depth=4).modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs == [8, 8, 8, 16, 16, 32, 32, 64, 64]
    assert parameters(build((3, 64, 64), width=16)) < parameters(build((3, 64, 64), width=32)) / 3
    assert build((1, 28, 28), depth=2)(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 5)


def batch(n: int = 16, channels: int = 3, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)


def test_resized_crops_differ_per_image_replay_with_the_seed_and_stay_images():
    x = batch()
    first = resized_crop(x, 0.25, True, torch.Generator().manual_seed(0))
    again = resized_crop(x, 0.25, True, torch.Generator().manual_seed(0))
    assert torch.equal(first, again) and first.shape == x.shape and first.dtype == torch.float32
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    same = x[:1].repeat(16, 1, 1, 1)
    crops = resized_crop(same, 0.25, False, torch.Generator().manual_seed(0))
    assert len({tuple(c.flatten()[:50].tolist()) for c in crops}) == 16  # each image its own crop


def test_a_full_crop_without_jitter_is_the_image_or_its_mirror():
    x = batch(n=64)
    out = Augment(flip=True, crop=1.0 - 1e-9)(x, torch.Generator().manual_seed(0))  # the whole area, aspect 3/4-4/3
    assert out.shape == x.shape
    plain = Augment(flip=True)(x, torch.Generator().manual_seed(0))
    assert plain.dtype == torch.uint8  # flips alone keep uint8, as before
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(plain, x, strict=True)]
    assert 10 < sum(mirrored) < 54


def test_colour_jitter_changes_colours_of_colour_and_gray_images_and_zero_is_off():
    x = batch()
    out = colour_jitter(x, 0.4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x.float() / 255)
    gray = batch(channels=1)
    jittered = colour_jitter(gray, 0.4, torch.Generator().manual_seed(0))
    assert jittered.shape == gray.shape and not torch.allclose(jittered, gray.float() / 255)
    assert torch.allclose(colour_jitter(x, 0.0, torch.Generator().manual_seed(0)), x.float() / 255, atol=1e-6)


def test_no_augmentation_is_off_and_photo_augmentations_are_on():
    assert not Augment()
    assert Augment(crop=0.5) and Augment(jitter=0.1)

"""The photo family (`rescnn`) and the photo augmentations: what a user training on a folder of photos relies on."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F
from torch import nn

from tuner.augment import TRIVIAL_OPS, Augment, beta, colour_jitter, resized_crop, trivial_augment
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


def test_trivial_augment_replays_with_the_seed_gives_each_image_its_own_op_and_stays_images():
    for x in (batch(n=64), batch(n=64, channels=1, size=28)):
        first = trivial_augment(x, torch.Generator().manual_seed(0))
        assert torch.equal(first, trivial_augment(x, torch.Generator().manual_seed(0)))
        assert first.shape == x.shape and first.dtype == torch.float32
        assert float(first.min()) >= 0 and float(first.max()) <= 1
    same = trivial_augment(batch(n=1).repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    assert len({tuple(image.flatten()[:200].tolist()) for image in same}) > 40  # ~14 ops x 31 magnitudes
    assert Augment(trivial=True) and Augment(trivial=True)(batch(), torch.Generator()).shape == batch().shape


def test_trivial_augment_ops_are_torchvisions():
    """Each image's op, redrawn from the same seed, applied by torchvision to the uint8 image: within 2/255."""
    x = batch(n=128)
    out = trivial_augment(x, torch.Generator().manual_seed(3)) * 255
    generator = torch.Generator().manual_seed(3)
    ops = torch.randint(0, len(TRIVIAL_OPS), (128,), generator=generator)
    levels = torch.randint(0, 31, (128,), generator=generator) / 30
    signs = torch.where(torch.rand(128, generator=generator) < 0.5, -1.0, 1.0)
    factor = 1 + 0.99 * levels * signs
    reference = {
        "identity": lambda i: x[i], "brightness": lambda i: F.adjust_brightness(x[i], float(factor[i])),
        "color": lambda i: F.adjust_saturation(x[i], float(factor[i])),
        "contrast": lambda i: F.adjust_contrast(x[i], float(factor[i])),
        "sharpness": lambda i: F.adjust_sharpness(x[i], float(factor[i])),
        "posterize": lambda i: F.posterize(x[i], 8 - round(float(levels[i]) * 6)),
        "solarize": lambda i: F.solarize(x[i], (1 - float(levels[i])) * 255),
        "autocontrast": lambda i: F.autocontrast(x[i]), "equalize": lambda i: F.equalize(x[i]),
        "rotate": lambda i: F.rotate(x[i], 135 * float(levels[i] * signs[i]), F.InterpolationMode.BILINEAR),
        "translate_x": lambda i: F.affine(x[i], 0, [32 * float(levels[i] * signs[i]), 0], 1, [0.0, 0.0],
                                          F.InterpolationMode.BILINEAR),
    }
    checked = set()
    for i, op in enumerate(ops.tolist()):
        if TRIVIAL_OPS[op] in reference:
            difference = (out[i] - reference[TRIVIAL_OPS[op]](i).float()).abs()
            assert float(difference.mean()) < 2 and float(difference.max()) <= 3, TRIVIAL_OPS[op]
            checked.add(TRIVIAL_OPS[op])
    assert len(checked) >= 9


def constant_images(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i all of value i / 255, labelled i: a mixed image shows which two it came from and how much."""
    labels = torch.arange(n)
    return labels.to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous(), labels


def test_mixup_blends_each_image_with_its_partner_by_the_share_of_its_label():
    x, y = constant_images()
    mixed, partner, share = Augment(mixup=0.4).mix(x, y, torch.Generator().manual_seed(0))
    assert 0 <= float(share) <= 1 and not torch.equal(partner, y)
    assert torch.allclose(mixed, (share * y + (1 - share) * partner).view(-1, 1, 1, 1).expand_as(mixed) / 255)
    again = Augment(mixup=0.4).mix(x, y, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((mixed, partner, share), again, strict=True))


def test_cutmix_pastes_a_rectangle_of_the_partner_covering_1_minus_share():
    x, y = constant_images()
    for seed in range(5):
        mixed, partner, share = Augment(cutmix=1.0).mix(x, y, torch.Generator().manual_seed(seed))
        own = (mixed * 255).round() == y.view(-1, 1, 1, 1)
        from_partner = (mixed * 255).round() == partner.view(-1, 1, 1, 1)
        assert bool((own | from_partner).all())
        kept = own[partner != y].float().mean()
        assert abs(float(kept) - float(share)) < 1e-6


def test_beta_draws_follow_their_alpha_from_the_generator():
    draws = torch.stack([beta(0.2, torch.Generator().manual_seed(s)) for s in range(400)])
    assert float(draws.min()) >= 0 and float(draws.max()) <= 1
    assert float(((draws < 0.1) | (draws > 0.9)).float().mean()) > 0.5  # alpha 0.2: mostly near one image
    uniform = torch.stack([beta(1.0, torch.Generator().manual_seed(s)) for s in range(400)])
    assert 0.45 < float(uniform.mean()) < 0.55 and 0.07 < float(uniform.var()) < 0.1  # Beta(1, 1): 1/12
    assert torch.equal(beta(0.3, torch.Generator().manual_seed(1)), beta(0.3, torch.Generator().manual_seed(1)))


def test_mixing_is_off_at_alpha_0_and_apart_from_the_image_augmentations():
    assert not Augment().mixes and Augment(mixup=0.2).mixes and Augment(cutmix=1.0).mixes
    assert not Augment(mixup=0.2)  # nothing to do per image: train_epoch still mixes

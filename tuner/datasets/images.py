"""One image file -> one uint8 tensor (C, H, W): the preprocessing of folder datasets, and of every image that
`tune predict` labels, so that a served model sees its inputs exactly as it saw them in training.

The rule: decode with Pillow (any format it reads), apply the EXIF orientation, flatten transparency onto white,
bring 16-bit and float images to 8 bits, convert to grayscale (1 channel) or RGB (3), then resize the shorter side
to the image size and crop the center square (antialiased bilinear: Pillow's `ImageOps.fit`). JPEGs are decoded
at the smallest scale that is still at least the image size (Pillow's `draft`), which is several times faster for
camera-sized photos.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps

from tuner.errors import one_line

T = TypeVar("T")

RESIZE_RULE = "shorter-side-center-crop"  # the only rule today; recorded so that readers can check it
# The whole rule, recorded with datasets and saved models for code that prepares images without tune.
DECODE_RULE = ("tuner.datasets.images v1: Pillow; EXIF orientation; transparency onto white; 16-bit / 257; "
               "JPEG draft (DCT scaling) to >= the size; ImageOps.fit bilinear to the size (shorter side, center)")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
Image.MAX_IMAGE_PIXELS = 2**30  # a 1-gigapixel scan is a big image, not a decompression bomb


class UnreadableImage(Exception):
    """A file that should be an image but that Pillow cannot decode."""


def preprocess_record(channels: int, size: tuple[int, int] | list[int]) -> dict[str, Any]:
    """How files become a model's input: stored with datasets, exports and weights."""
    return {"channels": int(channels), "size": [int(size[0]), int(size[1])], "resize": RESIZE_RULE,
            "decode": DECODE_RULE}


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")  # flattened onto white, as is mode P with a transparent color


def preprocess_steps(channels: int, size: tuple[int, int] | list[int]) -> list[dict[str, Any]]:
    """The rule of this module as steps, in order, each with its parameters: what a client without tune repeats
    with Pillow and NumPy to give a model exactly its training inputs (docs/onnx_client.py follows them)."""
    height, width = int(size[0]), int(size[1])
    mode = "L" if channels == 1 else "RGB"
    return [
        {"op": "open", "call": "PIL.Image.open(file)"},
        {"op": "draft", "call": "image.draft(mode, size)", "mode": mode, "size": [max(height, width)] * 2,
         "note": "JPEG only (a no-op for other formats): decode at the smallest DCT scale still >= size"},
        {"op": "exif_transpose", "call": "PIL.ImageOps.exif_transpose(image)"},
        {"op": "to_8bit", "modes": [m for m in GRAYSCALE_MODES if m[0] in "IF"],
         "rule": "I;16* (or any I above 255): / 257; F with max <= 1: * 255; round, clip to 0..255, mode L"},
        {"op": "flatten_alpha", "modes": list(ALPHA_MODES), "also": "mode P with info['transparency']",
         "call": "Image.alpha_composite(Image.new('RGBA', image.size, background), image.convert('RGBA'))",
         "background": [255, 255, 255, 255]},
        {"op": "convert", "call": "image.convert(mode)", "mode": mode},
        {"op": "fit", "call": "PIL.ImageOps.fit(image, size, method, centering=centering)", "size": [width, height],
         "method": "bilinear", "centering": [0.5, 0.5], "when": "image.size != size"},
        {"op": "to_array", "dtype": "uint8", "layout": "CHW", "note": "(H, W) -> (1, H, W); (H, W, 3) -> (3, H, W)"},
    ]


def with_steps(preprocess: dict[str, Any]) -> dict[str, Any]:
    """A preprocessing record with its `steps` (`preprocess_steps`), for metadata that code outside tune reads."""
    if "steps" in preprocess or not {"channels", "size"} <= set(preprocess):
        return preprocess
    return {**preprocess, "steps": preprocess_steps(preprocess["channels"], preprocess["size"])}


def image_suffixes() -> frozenset[str]:
    """File name endings Pillow can open (.jpg, .png, .webp, .tif, .bmp, .gif, ...): other files are not images."""
    return frozenset(Image.registered_extensions())


def is_grayscale(image: Image.Image) -> bool:
    """Whether an opened (not yet decoded) image has one channel of content, palettes of grays included."""
    if image.mode in GRAYSCALE_MODES:
        return True
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return False


def open_image(path: str | Path) -> Image.Image:
    """The image at `path`, opened lazily (header read); UnreadableImage if Pillow cannot open it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF and palette transparency: not errors
            return Image.open(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{path}: {one_line(e, 160)}") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images scaled to 0..255 (Pillow's own convert clips them), floats from 0..1."""
    array = np.asarray(image)
    if image.mode == "F":
        scaled = array * 255 if array.max(initial=0) <= 1 else array
    else:
        scaled = array / 257 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else array
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _flatten(image: Image.Image, channels: int) -> Image.Image:
    """Any mode -> "L" (channels 1) or "RGB" (3); transparent parts become white."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("L" if channels == 1 else "RGB")


def to_tensor(image: Image.Image, channels: int, size: int | tuple[int, int]) -> torch.Tensor:
    """An opened image as uint8 (channels, H, W) by the rule of this module's docstring."""
    height, width = (size, size) if isinstance(size, int) else size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image.draft("L" if channels == 1 else "RGB", (max(height, width), max(height, width)))
        image = ImageOps.exif_transpose(image)
        image = _flatten(image, channels)
        if image.size != (width, height):
            image = ImageOps.fit(image, (width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def _with_image(path: str | Path, use: Callable[[Image.Image], T]) -> T:
    """`use(image)` on the opened file; UnreadableImage if Pillow cannot open or decode it."""
    image = open_image(path)
    try:
        with image:
            return use(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{path}: {one_line(e, 160)}") from None


def decode(path: str | Path, channels: int, size: int | tuple[int, int]) -> torch.Tensor:
    """The file at `path` as uint8 (channels, H, W); UnreadableImage if it cannot be decoded."""
    return _with_image(path, lambda image: to_tensor(image, channels, size))


def decode_as_stored(path: str | Path, size: int) -> tuple[tuple[int, int], str, bool, torch.Tensor]:
    """With one opening of the file: its stored (width, height), mode and whether it is grayscale, and the image
    decoded in its own channel count (1 if grayscale, else 3)."""
    def use(image: Image.Image) -> tuple[tuple[int, int], str, bool, torch.Tensor]:
        gray = is_grayscale(image)
        stored = (image.size, image.mode, gray)
        return (*stored, to_tensor(image, 1 if gray else 3, size))
    return _with_image(path, use)


def decode_for(path: str | Path, preprocess: dict[str, Any]) -> torch.Tensor:
    """The file at `path` prepared by a recorded preprocessing (`preprocess_record`)."""
    return decode(path, int(preprocess["channels"]), tuple(preprocess["size"]))

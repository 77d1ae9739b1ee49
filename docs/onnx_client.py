"""Label images with a model from `tune convert --to onnx`, without tune: ONNX Runtime, Pillow and NumPy only.
Usage: python onnx_client.py model.onnx IMAGE... (prints: path, class, probability). It follows the `steps` of the
model's `preprocess` metadata, so its probabilities are `tune predict`'s (within 1e-4)."""
import json
import sys

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
classes, steps = json.loads(meta["classes"]), {s["op"]: s for s in json.loads(meta["preprocess"])["steps"]}


def prepare(path: str) -> np.ndarray:
    image = Image.open(path)
    image.draft(steps["draft"]["mode"], tuple(steps["draft"]["size"]))  # JPEG: decode at a reduced scale
    image = ImageOps.exif_transpose(image)
    if image.mode in steps["to_8bit"]["modes"]:  # 16-bit and float images
        a = np.asarray(image)
        if image.mode == "F":
            a = a * 255 if a.max(initial=0) <= 1 else a
        elif image.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257
        image = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if image.mode in steps["flatten_alpha"]["modes"] or (image.mode == "P" and "transparency" in image.info):
        white = Image.new("RGBA", image.size, tuple(steps["flatten_alpha"]["background"]))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    image = image.convert(steps["convert"]["mode"])
    fit = steps["fit"]
    if image.size != tuple(fit["size"]):
        method = Image.Resampling[fit["method"].upper()]
        image = ImageOps.fit(image, tuple(fit["size"]), method, centering=tuple(fit["centering"]))
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


logits = session.run(None, {session.get_inputs()[0].name: np.stack([prepare(p) for p in sys.argv[2:]])})[0]
probabilities = np.exp(logits - logits.max(1, keepdims=True))
probabilities /= probabilities.sum(1, keepdims=True)
for path, p in zip(sys.argv[2:], probabilities, strict=True):
    print(f"{path}\t{classes[int(p.argmax())]}\t{p.max():.6f}")

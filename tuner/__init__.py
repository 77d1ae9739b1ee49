"""tune: hyperparameter search for PyTorch image classifiers on Optuna.

For code that uses a trained model (torch is imported on first use, so `import tuner` stays quick):

    import tuner
    model = tuner.load_model("runs/best")                 # a `tune train` run folder, or a .safetensors file
    for p in tuner.predict(model, ["photos/"], top_k=3):  # files, folders, or a uint8 tensor (N, C, H, W)
        print(p.path, p.class_name, p.probability)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from tuner.ship.checkpoint import Classifier
    from tuner.ship.inference import Predictions

try:
    __version__ = version("tune")
except PackageNotFoundError:  # run from a source tree that pip has not installed
    __version__ = "0+unknown"
__all__ = ["__version__", "load_model", "predict"]


def load_model(path: str | Path, device: str = "cpu") -> Classifier:
    """The model saved at `path` (a run folder from `tune train`, or a .safetensors file), rebuilt from its
    metadata, in eval mode on `device`: an `nn.Module` from uint8 images (N, C, H, W) to logits, with `.classes`,
    `.input_shape` and `.info` (config, preprocessing)."""
    from tuner.ship.checkpoint import load_model as load

    return load(path, device)


def predict(model: Classifier | str | Path, images: Any, *, top_k: int = 1, device: str | None = None,
            batch_size: int = 256, tta: str = "none") -> Predictions:
    """Label `images` (image files, folders walked recursively, or a uint8 tensor (N, C, H, W) at the model's input
    shape) with `model`; files are prepared exactly as the training images were. Returns the predictions in input
    order (`.path`, `.class_name`, `.probability`, `.top`); unreadable files are listed in `.skipped`.
    `tta="flip"` averages each image's probabilities with its left-right mirror's."""
    from tuner.ship.inference import predict as run

    return run(model, images, top_k=top_k, device=device, batch_size=batch_size, tta=tta)

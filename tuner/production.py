"""`tune train`: an export file -> weights, through the very code that trains trials (`load_splits`, then `fit`).

By default it replays the trial: same split, seed and epochs, so on the same machine and device the test accuracy
is the trial's. `full_train` trains on train + validation; `epochs` trains longer or shorter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import TuneError
from tuner.export import Export, render, versions, write_text
from tuner.spec import RunConfig

if TYPE_CHECKING:
    from torch import nn

    from tuner.datasets import Splits
    from tuner.train import Epoch, FitResult

WEIGHTS_FILE = "model.safetensors"  # the weights of `tune train` runs, and of the trials `tune start` keeps
CONFIG = "config.yaml"
METRICS = "metrics.json"


@dataclass(frozen=True)
class TrainedRun:
    out_dir: Path
    metrics: dict[str, Any]


def default_out_dir(path: str | Path) -> Path:
    return Path("runs") / Path(path).stem


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace earlier weights by accident, before any training time is spent."""
    if (out_dir / WEIGHTS_FILE).exists() and not overwrite:
        raise TuneError(f"{out_dir / WEIGHTS_FILE} exists already: pass --out NEW_DIR, or --overwrite to replace it")


def replay_notes(export: Export) -> list[str]:
    """Reasons the run may not reproduce the trial exactly: another torch than the trial's."""
    exported = export.provenance.get("versions")
    then = exported.get("torch") if isinstance(exported, dict) else None
    now = versions()["torch"]
    if then is None or then == now:
        return []
    return [f"note: exported with torch {then}, training with {now}: results may differ slightly"]


def save_weights(model: nn.Module, path: Path, config: dict[str, Any], shape: Sequence[int], num_classes: int,
                 extra: dict[str, Any] | None = None) -> None:
    """safetensors weights that `load_model` rebuilds: their metadata (strings only) carries the config JSON, the
    input shape and the class count, then `extra` (where the weights came from). Written whole or not at all."""
    from safetensors.torch import save_model

    metadata = {"config": config, "input_shape": list(shape), "num_classes": num_classes, **(extra or {})}
    text = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    partial = path.with_name(path.name + ".partial")
    save_model(model, str(partial), metadata=text)
    partial.replace(path)


def load_model(path: str | Path) -> nn.Module:
    """The model saved by `save_weights` at `path` (by `tune train`, or kept by `tune start`), rebuilt from its
    metadata, in eval mode on the CPU."""
    from safetensors import safe_open
    from safetensors.torch import load_model as load_into

    from tuner.models import build_model

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    config = RunConfig.from_dict(json.loads(metadata["config"]))
    shape = tuple(json.loads(metadata["input_shape"]))
    channels = (0.0,) * shape[0]
    model = build_model(config, shape, int(metadata["num_classes"]), channels, channels)
    load_into(model, str(path))  # the normalization buffers come with the weights
    return model.eval()


@contextlib.contextmanager
def cpu_threads(count: Any) -> Iterator[int]:
    """Torch's intra-op threads set to `count` (when it is a positive int) for the block; yields the count used."""
    import torch

    previous = torch.get_num_threads()
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def train_export(export: Export, path: str | Path, *, out_dir: Path | None = None, data_dir: str | Path | None = None,
                 epochs: int | None = None, device: str = "auto", full_train: bool = False, overwrite: bool = False,
                 on_epoch: Callable[[Epoch], None] | None = None) -> TrainedRun:
    """Train `export` (read from `path`) and write weights, config.yaml and metrics.json to `out_dir`."""
    from tuner.datasets import default_data_dir, load_splits
    from tuner.train import fit, resolve_device

    # --- setup: read and check everything before spending training time
    config = export.config.replace(epochs=epochs)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(path)
    check_out_dir(out_dir, overwrite)
    torch_device = resolve_device(device)
    splits = load_splits(config.dataset, str(data_dir or default_data_dir()), config.validation, config.split_seed,
                         str(torch_device), with_validation=not full_train, image_size=config.image_size)

    # --- train and test, on as many CPU threads as the trial if it says (CPU sums depend on the thread count)
    with cpu_threads(export.provenance.get("threads") if torch_device.type == "cpu" else None) as threads:
        result = fit(config, splits, on_epoch)

    # --- write weights, the config as trained, metrics
    trained = {"source": str(path), "full_train": full_train, "device": str(torch_device), "threads": threads,
               "trained": datetime.now(UTC).isoformat(timespec="seconds")}
    return write_run(out_dir, export, config, result, splits, trained)


def write_run(out_dir: Path, export: Export, config: RunConfig, result: FitResult, splits: Splits,
              trained: dict[str, Any]) -> TrainedRun:
    """model.safetensors, config.yaml (the config as trained, trainable again) and metrics.json in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = {"input_shape": list(splits.shape), "num_classes": splits.num_classes}
    save_weights(result.model, out_dir / WEIGHTS_FILE, config.to_dict(), splits.shape, splits.num_classes, trained)
    full = " (train + validation)" if trained["full_train"] else ""
    header = [f"Run config as trained by `tune train {trained['source']}`{full}.",
              f"Train it again:  tune train {out_dir / CONFIG}"]
    write_text(out_dir / CONFIG, render(config, export.provenance, header))
    metrics = {
        "test_accuracy": result.test_accuracy,
        "trial_test_accuracy": export.provenance.get("test_accuracy"),
        "epochs": config.epochs,
        "history": [dataclasses.asdict(epoch) for epoch in result.history],
        "wall_seconds": round(result.seconds, 3),
        **shape,
        **trained,
        "versions": versions(),
    }
    write_text(out_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    return TrainedRun(out_dir, metrics)

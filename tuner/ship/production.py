"""`tune train`: an export file -> a run folder, through the very code that trains trials (`load_splits`, then `fit`).

By default it replays the trial: same split, seed and epochs, so on the same machine and device the test accuracy
is the trial's. `full_train` trains on train + validation; `epochs` trains longer or shorter. The run folder holds
model.safetensors (weights with config, input shape, classes and preprocessing: `tuner.ship.checkpoint`), config.yaml
(trainable again), metrics.json and README.md (the model card).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import TuneError
from tuner.fileio import write_text
from tuner.record import per_class
from tuner.ship.checkpoint import WEIGHTS_FILE, save
from tuner.ship.export import Export, input_of, render, versions
from tuner.spec import RunConfig

if TYPE_CHECKING:
    import torch

    from tuner.datasets import Splits
    from tuner.train import Epoch, FitResult

CONFIG = "config.yaml"
METRICS = "metrics.json"
CARD = "README.md"


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
    """Reasons the run may not reproduce the trial exactly: another tune or torch than the trial's (tune 0.2
    trains convolutions channels-last on CPUs, which changes the last digits)."""
    exported = export.provenance.get("versions")
    now = versions()
    notes = []
    for package in ("tune", "torch"):
        then = exported.get(package) if isinstance(exported, dict) else None
        if then is not None and then != now[package]:
            notes.append(f"note: exported with {package} {then}, training with {now[package]}: results may differ "
                         "slightly")
    return notes


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


def data_notes(export: Export, splits: Splits) -> list[str]:
    """Warnings about the data loaded for a replay: a folder whose files changed since the trial, skipped files."""
    from tuner.datasets import data_warnings

    trial = export.provenance.get("trial")
    since = f"trial {trial} was trained" if trial is not None else "the export"
    consequence = "the test accuracy will differ from the trial's"
    return data_warnings(splits, export.input.get("fingerprint"), since, consequence)


def full_train_line(splits: Splits) -> str:
    """What a --full-train run trains on, and what its epochs' scores measure then."""
    return (f"Training on train + validation ({len(splits.train):,} images, --full-train); each epoch is scored on "
            f"the {len(splits.val):,} test images, which chose nothing")


def diverged(path: str | Path, error: Exception, member: int | None = None) -> TuneError:
    """The one line for a production run whose loss became NaN or infinite."""
    which = f"member {member} of " if member is not None else ""
    return TuneError(f"{which}{path}: {error}; nothing was written. The config diverges in this run (its trial may "
                     "have been lucky): lower its lr, or train another trial of the study (tune export NAME --trial "
                     "N)")


def train_export(export: Export, path: str | Path, *, out_dir: Path | None = None, data_dir: str | Path | None = None,
                 epochs: int | None = None, device: str = "auto", full_train: bool = False, overwrite: bool = False,
                 on_epoch: Callable[[Epoch], None] | None = None,
                 on_note: Callable[[str], None] | None = None, resume: bool = False,
                 on_restored: Callable[[Epoch], None] | None = None) -> TrainedRun:
    """Train `export` (read from `path`) and write the run folder `out_dir`; `on_note` hears warnings about the
    data (see `data_notes`) before training starts. The data is read from `data_dir`, else from the folder the
    study recorded (`Export.data_dir`), else from the default.

    After every epoch the run's state is saved in `out_dir/checkpoint/` (tuner.ship.resume); the same command run
    again after a kill goes on from there (`resume` only says that one is expected), to the same weights as an
    uninterrupted run. The checkpoint is deleted once the run folder is written; the epochs it holds are told to
    `on_restored` (else to `on_epoch`) before training goes on.
    """
    from tuner.datasets import splits_for
    from tuner.ship.resume import drop_run_checkpoint, open_run_checkpoint
    from tuner.train import Diverged, fit, resolve_device

    # --- setup: read and check everything before spending training time
    config, stretch = export.config.stretched(epochs) if epochs is not None else (export.config, None)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(path)
    check_out_dir(out_dir, overwrite)
    torch_device = resolve_device(device)
    splits = splits_for(config, data_dir or export.data_dir, str(torch_device), with_validation=not full_train)
    for note in [*([stretch] if stretch else []), *data_notes(export, splits),
                 *([full_train_line(splits)] if full_train else [])]:
        if on_note is not None:
            on_note(note)

    stamp = {"full_train": full_train, "data": splits.info.get("fingerprint"),
             "device": splits.train.compute_device.type}
    state, checkpoint = open_run_checkpoint(out_dir, config, stamp, resume=resume, note=on_note or (lambda _: None))
    restored = on_restored or on_epoch
    if state is not None and restored is not None:
        for done in state.history:
            restored(done)  # the epochs the killed run trained: the progress shows the whole run

    # --- train and test, on as many CPU threads as the trial if it says (CPU sums depend on the thread count)
    try:
        with cpu_threads(export.provenance.get("threads") if torch_device.type == "cpu" else None) as threads:
            result = fit(config, splits, on_epoch, resume=state, on_state=checkpoint)

        # --- write weights, the config as trained, metrics
        trained = {"source": str(path), "full_train": full_train, "device": str(torch_device), "threads": threads,
                   "trained": datetime.now(UTC).isoformat(timespec="seconds")}
        if stretch:
            trained["schedule"] = stretch
        run = write_run(out_dir, export, config, result, splits, trained)
    except BaseException as e:  # killed, Ctrl-C, a full disk: the next run goes on from the checkpoint
        checkpoint.close(keep=not isinstance(e, Diverged))
        if isinstance(e, Diverged):
            drop_run_checkpoint(out_dir)  # it would diverge again
            raise diverged(path, e) from None
        raise
    checkpoint.close(keep=False)
    drop_run_checkpoint(out_dir)
    for line in run.metrics["deployment"]["notes"]:  # loud when the model breaks its study's constraints
        if on_note is not None:
            on_note(line)
    return run


def write_run(out_dir: Path, export: Export, config: RunConfig, result: FitResult, splits: Splits,
              trained: dict[str, Any], ensemble: list[dict[str, Any]] | None = None) -> TrainedRun:
    """model.safetensors, config.yaml (the config as trained, trainable again; an ensemble's other members in its
    `ensemble` section), metrics.json and README.md."""
    from tuner.ship.card import model_card
    from tuner.ship.deploy import production_proof

    out_dir.mkdir(parents=True, exist_ok=True)
    input_info = splits.input_info()
    save(result.model, out_dir / WEIGHTS_FILE, config.to_dict(), input_info, trained)
    full = " (train + validation)" if trained["full_train"] else ""
    again = " --full-train" if trained["full_train"] else ""
    again += f" --ensemble {len(ensemble) + 1}" if ensemble else ""
    header = [f"Run config as trained by `tune train {trained['source']}`{full}.",
              f"Train it again:  tune train {out_dir / CONFIG}{again}"]
    write_text(out_dir / CONFIG, render(config, export.provenance, header, input_of(input_info), ensemble))
    assert result.test_predicted is not None  # fit tests unless told not to
    confusion = confusion_matrix(splits.test.y, result.test_predicted, splits.num_classes)
    metrics = {
        "test_accuracy": result.test_accuracy,
        "test_accuracy_tta_flip": flip_tta_accuracy(result.model, splits, config, ensemble),
        "trial_test_accuracy": export.provenance.get("test_accuracy"),
        "epochs": config.epochs,
        "history": [dataclasses.asdict(epoch) for epoch in result.history],
        "wall_seconds": round(result.seconds, 3),
        "input_shape": list(splits.shape),
        "num_classes": splits.num_classes,
        "classes": list(splits.classes),
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "per_class_accuracy": per_class_accuracy(confusion, splits.classes),
        "confusion": confusion,
        **trained,
        "versions": versions(),
        # latency and size as served, against the study's constraints if it had any (last: it moves it to the CPU)
        "deployment": production_proof(result.model, splits.shape, export.provenance),
    }
    write_text(out_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    write_text(out_dir / CARD, model_card(out_dir, config, export.provenance, metrics, input_info))
    return TrainedRun(out_dir, metrics)


def flip_tta_accuracy(model: torch.nn.Module, splits: Splits, config: RunConfig,
                      ensemble: list[dict[str, Any]] | None) -> float | None:
    """The test accuracy with flip test-time augmentation (`tune predict --tta flip`), for a model whose networks
    were all trained with flips; None for one that was not (its members differ from `config` as `ensemble` says)."""
    from tuner.ship.inference import accuracy_on
    from tuner.train import EVAL_BATCH

    flips = [config.flip, *(member["config"].get("flip", config.flip) for member in ensemble or [])]
    if not all(flips):
        return None
    return accuracy_on(model, splits.test.batches(EVAL_BATCH), tta="flip")


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> list[list[int]]:
    """counts[true][predicted] of `labels` and the classes a model `predicted` for them (`FitResult.test_predicted`:
    in full precision, as `tune predict` serves the model, so that its diagonal sums to the test accuracy)."""
    import torch

    pairs = labels.cpu() * num_classes + predicted.cpu()
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes).tolist()


def per_class_accuracy(confusion: list[list[int]], classes: tuple[str, ...]) -> dict[str, float | None]:
    """Each class's share of its test images predicted right; None for a class without test images."""
    return {name: scores["accuracy"] for name, scores in per_class(confusion, classes).items()}

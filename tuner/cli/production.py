"""Shipping the winner: `tune export` (trial -> config file), `tune train` (config -> run folder), `tune predict`
(labels for new images) and `tune convert` (ONNX or TorchScript for serving stacks)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tuner.cli.common import data_dir_option, device_option, storage_option
from tuner.cli.output import FORMATS, emit, study_argument
from tuner.errors import counted

if TYPE_CHECKING:
    from tuner.ship.export import Export
    from tuner.ship.inference import Predictions
    from tuner.spec import RunConfig
    from tuner.train import Epoch


@click.command()
@study_argument
@storage_option
@click.option("-o", "--output", metavar="FILE",
              help="Where to write the run config; - for stdout [default: NAME-trialN.yaml in the current "
                   "directory].")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), metavar="N",
              help="Export trial N instead of the best one.")
@click.option("--pick", metavar="RULE",
              help="How to choose the trial of a study with constraints or objectives: best-feasible (ties within "
                   "the validation noise go to the faster model; a multi-objective study's default), knee, "
                   "fastest-within:0.5pp, or trial:N. Its latency is measured again, with more runs.")
@click.option("--with-weights", is_flag=True,
              help="Also copy the trial's kept weights (tune start --keep-top) next to FILE, as FILE's stem "
                   "+ .safetensors.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, metavar="K",
              help="List the K best distinct configs (the trial's and its runners-up) for `tune train FILE "
                   "--ensemble K`.")
def export(name: str, storage: str | None, output: str | None, trial_number: int | None,
           with_weights: bool, top: int, pick: str | None) -> None:
    """Write the best trial of study NAME (or trial N) as one self-contained run config file.

    The file holds everything `tune train` needs to rerun the trial (dataset, model, optimizer and its
    arguments, learning rate, batch size, scheduler, epochs, seed, validation split), what the model takes and
    gives (input shape, class names, preprocessing), and where it came from (study, trial, value, test accuracy,
    search budget, storage, versions, date).

    \b
    Examples:
      tune export fashion-mnist -o best.yaml && tune train best.yaml
      tune export fashion-mnist --trial 12 --with-weights -o prod/fmnist.yaml
      tune export fashion-mnist -o - | less
      tune export fm-fast --pick fastest-within:0.5pp -o fast.yaml
    """
    from tuner.look.inspect import best_trial, get_trial, open_study
    from tuner.search.pick import default_rule, pick_trial, prove_pick, requested_trial
    from tuner.ship import export as exports
    from tuner.storage import default_storage_url

    if trial_number is not None and pick is not None:
        raise click.UsageError("--trial N and --pick RULE both choose the trial: give one (--pick trial:N is "
                               "--trial N)")
    study = open_study(name, storage)
    if trial_number is None and pick is None and (pick := default_rule(study)) is not None:
        click.echo(f"Study {name!r} has several objectives: picking from its Pareto front by --pick {pick}", err=True)
    number = trial_number if trial_number is not None else requested_trial(pick)
    if number is None and pick is not None:
        picked = pick_trial(study, pick)
        trial = picked.trial
        click.echo(picked.why, err=True)
    else:
        trial = get_trial(study, number) if number is not None else best_trial(study)
    exports.trial_config(name, trial)  # a trial without a stored config fails here, before any note
    deployment, lines = prove_pick(study, trial)  # measured again against the study's constraints, if it has any
    for line in lines:
        click.echo(line, err=True)
    if trial.state.name != "COMPLETE":
        click.echo(f"note: trial {trial.number} is {trial.state.name} after {len(trial.intermediate_values)} "
                   "epoch(s); its config trains all its epochs", err=True)
    if output == "-":
        if with_weights:
            raise click.UsageError("--with-weights writes a file beside the config: give -o FILE, not -o -")
        click.echo(exports.export_text(study, trial, storage or default_storage_url(), "FILE", top, deployment),
                   nl=False)
        return
    path = Path(output) if output else exports.default_path(name, trial.number)
    weights = exports.export_trial(study, trial, storage or default_storage_url(), path, with_weights, top,
                                   deployment)
    click.echo(f"Wrote trial {trial.number} of {name!r} to {path}" + (f" and {weights}" if weights else ""))
    click.echo(f"Train it: tune train {path}", err=True)
    problem = exports.record_in_note(study, path, trial.number)
    if problem:
        click.echo(f"note: the export is not listed in the study's note ({problem})", err=True)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where to write model.safetensors, config.yaml, metrics.json and README.md (the model card) "
                   "[default: runs/<FILE stem>].")
@data_dir_option
@click.option("--epochs", type=click.IntRange(min=1), metavar="N", help="Train N epochs instead of the trial's.")
@device_option
@click.option("--full-train", is_flag=True,
              help="Train on train + validation (the whole training set); validation metrics are then the test's.")
@click.option("--overwrite", is_flag=True, help="Replace the weights already in DIR.")
@click.option("--resume", is_flag=True,
              help="Go on from the checkpoint a killed run of the same command left in DIR (the same --out goes "
                   "on by itself; --resume says one is expected).")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Train the K best distinct configs FILE lists (tune export --top) and save them as one model "
                   "that averages their probabilities.")
def train(file: str, out_dir: str | None, data_dir: str | None, epochs: int | None, device: str, full_train: bool,
          overwrite: bool, resume: bool, ensemble: int) -> None:
    """Train the run config in FILE (from `tune export`) for production.

    By default it replays the trial exactly (same split, seed and epochs), through the code that trained it:
    on the same machine and device the test accuracy is the trial's. --epochs N keeps the schedule's shape (an
    exponential gamma is rescaled so that the last epoch's learning rate is the trial's; a step schedule's steps
    spread out; cosine and onecycle span the N epochs) and says what it changed. The run folder holds the weights
    (with their config, classes and preprocessing), config.yaml, metrics.json and a model card, README.md.

    \b
    Examples:
      tune export fashion-mnist -o best.yaml && tune train best.yaml
      tune train best.yaml --full-train --epochs 20 --out runs/fmnist-prod --device cuda
      tune train best.yaml --full-train --epochs 20 --out runs/fmnist-prod --device cuda --resume   (after a kill)
      tune train best.yaml --full-train --ensemble 3
    """
    from tuner.ship import production
    from tuner.ship.checkpoint import WEIGHTS_FILE
    from tuner.ship.export import read_export

    exported = read_export(file)
    for note in production.replay_notes(exported):
        click.echo(note, err=True)
    if ensemble > 1:
        if resume:
            raise click.UsageError("--resume goes on with one config; an --ensemble run starts over")
        _train_ensemble(exported, file, ensemble, out_dir, data_dir, epochs, device, full_train, overwrite)
        return
    with EpochProgress(epochs or exported.config.epochs, full_train) as progress:
        run = production.train_export(exported, file, out_dir=Path(out_dir) if out_dir else None, data_dir=data_dir,
                                      epochs=epochs, device=device, full_train=full_train, overwrite=overwrite,
                                      on_epoch=progress.on_epoch, on_note=progress.console.print, resume=resume,
                                      on_restored=progress.on_restored)
    metrics = run.metrics
    trial = metrics["trial_test_accuracy"]
    versus = f" (trial: {trial:.4f})" if trial is not None and not full_train and epochs is None else ""
    click.echo(f"Test accuracy {metrics['test_accuracy']:.4f}{versus} after {counted(metrics['epochs'], 'epoch')} in "
               f"{metrics['wall_seconds']:.1f} s on {metrics['device']}")
    click.echo(f"Wrote {run.out_dir / WEIGHTS_FILE}, {production.CONFIG}, {production.METRICS} and "
               f"{production.CARD}")
    click.echo(f"Use it: tune predict {run.out_dir} IMAGES...", err=True)


def _train_ensemble(exported: Export, file: str, count: int, out_dir: str | None, data_dir: str | None,
                    epochs: int | None, device: str, full_train: bool, overwrite: bool) -> None:
    from tuner.ship import production
    from tuner.ship.checkpoint import WEIGHTS_FILE
    from tuner.ship.ensemble import members_of, train_ensemble

    total = sum(epochs or config.epochs for config, _ in members_of(exported, count, file))
    with EpochProgress(total, full_train) as progress:
        def on_member(number: int, config: RunConfig) -> None:
            progress.epochs = config.epochs
            progress.console.print(f"member {number} of {count}: {config.model} {config.optimizer} lr {config.lr:.3g} "
                                   f"batch {config.batch_size} {config.scheduler}, {counted(config.epochs, 'epoch')}")

        run = train_ensemble(exported, file, count, out_dir=Path(out_dir) if out_dir else None, data_dir=data_dir,
                             epochs=epochs, device=device, full_train=full_train, overwrite=overwrite,
                             on_member=on_member, on_epoch=progress.on_epoch, on_note=progress.console.print)
    metrics = run.metrics
    alone = ", ".join(f"{member['test_accuracy']:.4f}" for member in metrics["members"])
    click.echo(f"Test accuracy {metrics['test_accuracy']:.4f} of the ensemble of {count} (each alone: {alone}) in "
               f"{metrics['wall_seconds']:.1f} s on {metrics['device']}")
    click.echo(f"Wrote {run.out_dir / WEIGHTS_FILE}, {production.CONFIG}, {production.METRICS} and "
               f"{production.CARD}")
    click.echo(f"Use it: tune predict {run.out_dir} IMAGES...", err=True)


class EpochProgress:
    """A rich bar of epochs on a terminal (stderr), else a line per epoch for logs. Each epoch's score is named for
    what it measures: validation, or the test split when --full-train trained on validation too."""

    def __init__(self, epochs: int, full_train: bool = False) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.epochs = epochs
        self.score = "test acc" if full_train else "val acc"
        self.bar = Progress(TextColumn("epochs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), console=self.console,
                            disable=not self.console.is_terminal)
        self.task = self.bar.add_task("", total=epochs)

    def __enter__(self) -> EpochProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def on_epoch(self, epoch: Epoch, restored: bool = False) -> None:
        when = "from checkpoint" if restored else f"{epoch.seconds:.1f} s"
        status = (f"epoch {epoch.epoch}/{self.epochs} train loss {epoch.train_loss:.4f} "
                  f"{self.score} {epoch.val_accuracy:.4f} ({when})")
        self.bar.update(self.task, advance=1, description=status)
        if not self.console.is_terminal:
            self.console.print(status)

    def on_restored(self, epoch: Epoch) -> None:
        """An epoch the checkpoint holds, trained by the run that was killed."""
        self.on_epoch(epoch, restored=True)


# --- predict

source_argument = click.argument("source", metavar="SOURCE")


@click.command()
@source_argument
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Also give the 2nd to K-th most probable classes (class_2, probability_2, ...).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table for people; json or csv for scripts (on stdout, messages on stderr).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
              help="Where to run the model: auto picks CUDA, then MPS, then the CPU.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
              help="Images per forward pass.")
@click.option("--confusion", is_flag=True,
              help="Print the confusion matrix (on stderr) when the input folders are named after classes.")
def predict(source: str, inputs: tuple[str, ...], top_k: int, fmt: str, device: str, batch_size: int,
            confusion: bool) -> None:
    """Label images with a trained model: a row per image with path, class and probability.

    SOURCE is a run folder from `tune train` or a .safetensors file (tune export --with-weights); each INPUT is
    an image file or a folder, walked recursively. Every image is prepared exactly as the training images were
    (decoded, converted to the model's channels, resized to its size). Where the folders are named after the
    classes (DIR/cat/1.jpg), a summary gives the accuracy. Unreadable files are listed on stderr and skipped.

    \b
    Examples:
      tune predict runs/best photos/ --top-k 3
      tune predict runs/best data/test --confusion --format csv > predictions.csv
      tune predict best.safetensors cat.jpg dog.png --format json
    """
    from tuner.errors import TuneError
    from tuner.ship.inference import predict as label

    result = label(source, list(inputs), top_k=top_k, device=device, batch_size=batch_size)
    if not result.items and len(result.skipped) == 1:
        raise TuneError(f"not a readable image: {result.skipped[0]}")
    if not result.items and result.skipped:
        raise TuneError(f"no readable image among {len(result.skipped)} files (first: {result.skipped[0]}): check "
                        "that they are images")
    if not result.items:
        raise TuneError(f"no image files in {', '.join(inputs)}: give image files or folders of them")
    for line in result.skipped:
        click.echo(f"skipped unreadable image {line}", err=True)
    rows = [p.row(top_k) for p in result]
    emit(fmt, rows, lambda: _predictions_table(rows), rows=True)
    _summary(result, confusion)


def _predictions_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from tuner.cli.output import stdout_console

    table = Table()
    for key in rows[0]:
        table.add_column(key, justify="right" if key.startswith("probability") else "left")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    stdout_console().print(table)


def _summary(result: Predictions, confusion: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    labelled = result.labelled()
    skipped = f"; {len(result.skipped)} unreadable file(s) skipped" if result.skipped else ""
    if not labelled:
        click.echo(f"Labelled {counted(len(result), 'image')}{skipped}", err=True)
        if confusion:
            click.echo("no confusion matrix: no input folder is named after a class (" +
                       ", ".join(result.classes[:10]) + (", ..." if len(result.classes) > 10 else "") + ")", err=True)
        return
    right = sum(p.class_name == p.folder_class for p in labelled)
    click.echo(f"Accuracy {result.accuracy():.4f}: {right} of {counted(len(labelled), 'image')} in class-named "
               f"folders labelled as their folder's class ({counted(len(result), 'image')} in all{skipped})", err=True)
    if confusion:
        click.echo("Confusion matrix (rows: folder class, columns: predicted class):", err=True)
        table = Table()
        table.add_column("")
        for name in result.classes:
            table.add_column(name, justify="right")
        for name, row in zip(result.classes, result.confusion(), strict=True):
            table.add_row(name, *map(str, row))
        console = Console(stderr=True, highlight=False)
        (console if console.is_terminal else Console(stderr=True, highlight=False, width=200)).print(table)


# --- convert

@click.command()
@source_argument
@click.option("--to", "to", type=click.Choice(["onnx", "torchscript"]), required=True,
              help="onnx (ONNX Runtime, TensorRT, ...) or torchscript (torch.jit.load, LibTorch).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write it [default: beside the weights: model.onnx or model.pt].")
@click.option("--data-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where a torchvision dataset's files are, to check on its test images (never downloaded) "
                   "[env TUNE_DATA_DIR; default: ~/.cache/tune/data].")
@click.option("--images", multiple=True, metavar="PATH",
              help="Image files or folders to check the file on (repeatable) [default: the training data].")
def convert(source: str, to: str, output: str | None, data_dir: str | None, images: tuple[str, ...]) -> None:
    """Convert a trained model to ONNX or TorchScript for serving without tune.

    The file takes uint8 images (N, C, H, W) at the trained size, any N, and outputs logits: normalization is
    inside. Its metadata names the classes, the input shape and the preprocessing of image files. The file is
    checked before it is written: loaded back (ONNX Runtime; torch.jit.load), it must give torch's logits within
    1e-4 on real images.

    \b
    Examples:
      tune convert runs/best --to onnx
      tune convert runs/best --to torchscript -o serve/model.pt --images data/test
    """
    from tuner.ship.convert import convert as run_convert

    converted = run_convert(source, to, output, data_dir=data_dir, images=list(images) or None)
    engine = "ONNX Runtime" if to == "onnx" else "torch.jit.load"
    click.echo(f"Wrote {converted.path}")
    click.echo(f"Checked with {engine} on {converted.checked} {converted.inputs}: largest logit difference "
               f"{converted.max_difference:.1e}", err=True)
    if converted.measured is not None:
        size = "" if converted.measured.size_bytes else f"; file {converted.path.stat().st_size / 1e6:.3g} MB"
        click.echo(f"Latency {converted.measured.text()}{size}", err=True)


COMMANDS = (export, train, predict, convert)

"""Shipping the winner: `tune export` (trial -> config file) and `tune train` (config -> run folder); using it is
tuner.cli.serve."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tuner.cli.common import data_dir_option, device_option, storage_option
from tuner.cli.output import study_argument
from tuner.errors import counted

if TYPE_CHECKING:
    from tuner.ship.export import Export
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
              help="Train on train + validation (the whole training set); validation metrics are then the test's. "
                   "Trains the study's production_epochs when its spec sets them (a folder's default study: 6x a "
                   "trial's).")
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
    if ensemble > 1:  # a request that cannot run is its one line, before any note
        from tuner.ship.ensemble import members_of

        if resume:
            raise click.UsageError("--resume goes on with one config; an --ensemble run starts over")
        members_of(exported, ensemble, file)
    for note in production.replay_notes(exported):
        click.echo(note, err=True)
    longer = exported.production_epochs if full_train and epochs is None else None
    if longer is not None and longer > exported.config.epochs:  # a study resumed with more epochs: those
        epochs = longer
        click.echo(f"training {counted(longer, 'epoch')}, the study's production_epochs (its trials trained "
                   f"{exported.config.epochs}): --epochs N to change it", err=True)
    if ensemble > 1:
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
    click.echo(f"Test accuracy {metrics['test_accuracy']:.4f}{versus}{_with_tta(metrics)} after "
               f"{counted(metrics['epochs'], 'epoch')} in {metrics['wall_seconds']:.1f} s on {metrics['device']}")
    click.echo(f"Wrote {run.out_dir / WEIGHTS_FILE}, {production.CONFIG}, {production.METRICS} and "
               f"{production.CARD}")
    click.echo(f"Use it: tune predict {run.out_dir} IMAGES...", err=True)


def _with_tta(metrics: dict[str, Any]) -> str:
    """", 0.9130 with --tta flip" for a model trained with flips: whether test-time flips pay on this data."""
    tta = metrics.get("test_accuracy_tta_flip")
    return f", {tta:.4f} with --tta flip" if tta is not None else ""


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
    click.echo(f"Test accuracy {metrics['test_accuracy']:.4f} of the ensemble of {count} (each alone: {alone})"
               f"{_with_tta(metrics)} in {metrics['wall_seconds']:.1f} s on {metrics['device']}")
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


COMMANDS = (export, train)

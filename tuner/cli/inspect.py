"""From the terminal to production: `tune ls`, `show`, `trials`, `best`, `export`, `train`, `plot`, `delete`.

The four commands that read take `--format table|json|csv`: tables for people, JSON or CSV on stdout for scripts,
with every message on stderr. The data they print comes from `tuner.inspect`; this module only lays it out.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from tuner.cli.common import data_dir_option, device_option, storage_option

FORMATS = ("table", "json", "csv")


def complete_study_name(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Study names in the storage (from --storage or TUNE_STORAGE if given before NAME) for shell completion."""
    try:
        from tuner.inspect import read_storage
        from tuner.storage import study_names

        names = study_names(read_storage(ctx.params.get("storage")))
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


study_argument = click.argument("name", metavar="NAME", shell_complete=complete_study_name)
format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                             help="table for people; json or csv for scripts (on stdout, messages on stderr).")


# --- machine formats

def _jsonable(value: Any) -> Any:
    """NaN and infinities (which JSON lacks) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _cell(value: Any) -> Any:
    return json.dumps(_jsonable(value)) if isinstance(value, dict | list) else _jsonable(value)


def flat_record(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: nested mappings spread one level as `params_lr`, `user_attrs_test_accuracy` (Optuna's
    trials_dataframe names); anything deeper stays JSON text."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": _cell(v) for k, v in value.items()})
        else:
            out[key] = _cell(value)
    return out


def flat_pairs(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested document as (dotted key, value) pairs: `best.params.lr`, `top.0.number`."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else None
    if items is None:
        return [(prefix, _jsonable(data))]
    pairs: list[tuple[str, Any]] = []
    for key, value in items:
        pairs += flat_pairs(value, f"{prefix}.{key}" if prefix else str(key))
    return pairs


def csv_text(records: list[dict[str, Any]]) -> str:
    fields = list(dict.fromkeys(key for record in records for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def emit(fmt: str, data: Any, table, *, rows: bool) -> None:
    """Print `data` as JSON, as CSV (a row per record when `rows`, else key,value pairs), or via `table()`."""
    if fmt == "json":
        click.echo(json.dumps(_jsonable(data), indent=2))
    elif fmt == "csv" and rows:
        click.echo(csv_text([flat_record(r) for r in data]) if data else "", nl=False)
    elif fmt == "csv":
        click.echo(csv_text([{"key": k, "value": v} for k, v in flat_pairs(data)]), nl=False)
    else:
        table()


# --- tables

def _console():
    """stdout; wide when it is not a terminal, so tables written to files or pipes keep whole values."""
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def trials_table(rows: list[dict[str, Any]], title: str | None = None):
    from rich.table import Table

    params = list(dict.fromkeys(name for row in rows for name in row["params"]))
    table = Table(title=title, title_justify="left")
    for header in ("#", "state", "value", "test acc", "epochs", "duration", *params):
        table.add_column(header, justify="left" if header in ("state", *params) else "right")
    for row in rows:
        table.add_row(str(row["number"]), row["state"], _text(row["value"]),
                      _text(row["user_attrs"].get("test_accuracy")), str(row["epochs"]), _seconds(row["duration"]),
                      *(_text(row["params"].get(name)) for name in params))
    return table


def _states_text(states: dict[str, int]) -> str:
    return ", ".join(f"{state} {count}" for state, count in states.items() if count) or "no trials"


def _storage_url(storage: str | None) -> str:
    from tuner.export import public_url
    from tuner.storage import default_storage_url

    return public_url(storage or default_storage_url())


# --- reading commands

@click.command("ls")
@storage_option
@format_option
def ls(storage: str | None, fmt: str) -> None:
    """List the studies in the storage: trials by state, best value and trial, last activity.

    \b
    Examples:
      tune ls
      tune ls --format json | jq -r '.[].name'
      tune ls --storage postgresql://postgres@db:5432/tune --format csv > studies.csv
    """
    from tuner.inspect import read_storage, study_rows

    rows = study_rows(read_storage(storage))
    if not rows:
        click.echo(f"No studies in {_storage_url(storage)}: create one with `tune start`.", err=True)

    def table() -> None:
        from rich.table import Table

        out = Table(title=f"Studies in {_storage_url(storage)}", title_justify="left")
        for header in ("name", "direction", "trials", "complete", "pruned", "fail", "running", "best value",
                       "best trial", "last activity"):
            out.add_column(header, justify="left" if header in ("name", "direction", "last activity") else "right")
        for r in rows:
            s = r["states"]
            out.add_row(r["name"], r["direction"], str(r["trials"]), str(s["COMPLETE"]), str(s["PRUNED"]),
                        str(s["FAIL"]), str(s["RUNNING"] + s["WAITING"]), _text(r["best_value"]),
                        _text(r["best_trial"]), _text(r["last_activity"]))
        if rows:
            _console().print(out)

    emit(fmt, rows, table, rows=True)


@click.command()
@study_argument
@storage_option
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, metavar="K",
              help="How many of the best completed trials to list.")
@format_option
def show(name: str, storage: str | None, top: int, fmt: str) -> None:
    """Show study NAME: its best trial, the top trials, what pruning saved, and parameter importances.

    \b
    Examples:
      tune show fashion-mnist
      tune show fashion-mnist --top 10 --format json | jq .importances
    """
    from tuner.inspect import open_study, study_detail

    detail = study_detail(open_study(name, storage), top)
    emit(fmt, detail, lambda: print_detail(detail), rows=False)


def print_detail(detail: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    metric = f" {detail['metric']}" if detail["metric"] else ""
    console.print(f"Study {detail['name']}: {detail['direction']}{metric}; {detail['trials']} trials "
                  f"({_states_text(detail['states'])}); last activity {_text(detail['last_activity'])}")
    best = detail["best"]
    if best is None:
        console.print("Best: no completed trial yet")
    else:
        console.print(f"Best: trial {best['number']}, value {_text(best['value'])}, test accuracy "
                      f"{_text(best['user_attrs'].get('test_accuracy'))}, {best['epochs']} epochs in "
                      f"{_seconds(best['duration'])}")
        console.print("  " + " ".join(f"{k}={_text(v)}" for k, v in best["params"].items()))
        console.print(trials_table(detail["top"], f"Top {len(detail['top'])} completed trials"))
    console.print(pruning_line(detail["pruning"]))
    if not detail["importances"]:
        console.print(f"Parameter importances: {detail['importances_note']}")
        return
    table = Table(title="Parameter importances", title_justify="left")
    table.add_column("param")
    table.add_column("importance", justify="right")
    for param, value in detail["importances"].items():
        table.add_row(param, f"{value:.3f}")
    console.print(table)
    if detail["importances_note"]:
        console.print(f"  ({detail['importances_note']})")


def pruning_line(pruning: dict[str, Any]) -> str:
    where = ", ".join(f"after epoch {epoch}: {n}" for epoch, n in pruning["pruned_at_epoch"].items())
    pruned = f"{pruning['pruned']} of {pruning['finished']} finished trials pruned"
    return (f"Pruning: {pruned}{f' ({where})' if where else ''}; {pruning['epochs_run']} epochs run against "
            f"{pruning['epochs_without_pruning']} without pruning ({pruning['epochs_saved_fraction']:.0%} saved)")


@click.command()
@study_argument
@storage_option
@click.option("--state", "states", metavar="STATES",
              help="Only trials in these states, comma-separated: complete, pruned, fail, running, waiting.")
@click.option("--sort", type=click.Choice(["number", "value", "duration"]), default="number", show_default=True,
              help="number ascending; value best first (descending in maximize studies); duration longest first.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Show the first N trials only.")
@format_option
def trials(name: str, storage: str | None, states: str | None, sort: str, limit: int | None, fmt: str) -> None:
    """List the trials of study NAME: state, value, test accuracy, params, duration.

    \b
    Examples:
      tune trials fashion-mnist --sort value --limit 10
      tune trials fashion-mnist --state complete,pruned --format csv > trials.csv
    """
    from tuner.inspect import open_study, parse_states, trial_rows

    wanted = parse_states(states)
    rows = trial_rows(open_study(name, storage), wanted, sort, limit)
    if not rows:
        click.echo(f"No trials in study {name!r}{' in state ' + states if states else ''}.", err=True)
    emit(fmt, rows, lambda: _console().print(trials_table(rows)) if rows else None, rows=True)


@click.command()
@study_argument
@storage_option
@format_option
def best(name: str, storage: str | None, fmt: str) -> None:
    """Show the best completed trial of study NAME.

    \b
    Examples:
      tune best fashion-mnist
      tune best fashion-mnist --format json | jq .params
    """
    from tuner.inspect import best_trial, open_study, trial_row

    row = trial_row(best_trial(open_study(name, storage)))

    def table() -> None:
        from rich.table import Table

        out = Table(title=f"Best trial of {name}", title_justify="left", show_header=False)
        out.add_column("field")
        out.add_column("value")
        test = row["user_attrs"].get("test_accuracy")
        for field, value in (("trial", row["number"]), ("value", row["value"]), ("test accuracy", test),
                             ("epochs", row["epochs"]), ("duration", _seconds(row["duration"])),
                             *row["params"].items()):
            out.add_row(field, _text(value))
        _console().print(out)

    emit(fmt, row if fmt != "csv" else [row], table, rows=True)


# --- to production

@click.command()
@study_argument
@storage_option
@click.option("-o", "--output", metavar="FILE",
              help="Where to write the run config; - for stdout [default: NAME-trialN.yaml in the current "
                   "directory].")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), metavar="N",
              help="Export trial N instead of the best one.")
@click.option("--with-weights", is_flag=True,
              help="Also copy the trial's kept weights (tune start --keep-top) next to FILE, as FILE's stem "
                   "+ .safetensors.")
def export(name: str, storage: str | None, output: str | None, trial_number: int | None,
           with_weights: bool) -> None:
    """Write the best trial of study NAME (or trial N) as one self-contained run config file.

    The file holds everything `tune train` needs to rerun the trial (dataset, model, optimizer and its
    arguments, learning rate, batch size, scheduler, epochs, seed, validation split), the model's input shape,
    and where it came from (study, trial, value, test accuracy, storage, versions, date).

    \b
    Examples:
      tune export fashion-mnist -o best.yaml && tune train best.yaml
      tune export fashion-mnist --trial 12 --with-weights -o prod/fmnist.yaml
      tune export fashion-mnist -o - | less
    """
    from tuner import export as exports
    from tuner.inspect import best_trial, get_trial, open_study
    from tuner.storage import default_storage_url

    study = open_study(name, storage)
    trial = get_trial(study, trial_number) if trial_number is not None else best_trial(study)
    exports.trial_config(name, trial)  # a trial without a stored config fails here, before any note
    if trial.state.name != "COMPLETE":
        click.echo(f"note: trial {trial.number} is {trial.state.name} after {len(trial.intermediate_values)} "
                   "epoch(s); its config trains all its epochs", err=True)
    if output == "-":
        if with_weights:
            raise click.UsageError("--with-weights writes a file beside the config: give -o FILE, not -o -")
        click.echo(exports.export_text(name, trial, storage or default_storage_url(), "FILE"), nl=False)
        return
    path = Path(output) if output else exports.default_path(name, trial.number)
    weights = exports.export_trial(study, trial, storage or default_storage_url(), path, with_weights)
    click.echo(f"Wrote trial {trial.number} of {name!r} to {path}" + (f" and {weights}" if weights else ""))
    click.echo(f"Train it: tune train {path}", err=True)
    problem = exports.record_in_note(study, path, trial.number)
    if problem:
        click.echo(f"note: the export is not listed in the study's note ({problem})", err=True)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where to write model.safetensors, config.yaml and metrics.json [default: runs/<FILE stem>].")
@data_dir_option
@click.option("--epochs", type=click.IntRange(min=1), metavar="N", help="Train N epochs instead of the trial's.")
@device_option
@click.option("--full-train", is_flag=True,
              help="Train on train + validation (the whole training set); validation metrics are then the test's.")
@click.option("--overwrite", is_flag=True, help="Replace the weights already in DIR.")
def train(file: str, out_dir: str | None, data_dir: str | None, epochs: int | None, device: str, full_train: bool,
          overwrite: bool) -> None:
    """Train the run config in FILE (from `tune export`) for production.

    By default it replays the trial exactly (same split, seed and epochs), through the code that trained it:
    on the same machine and device the test accuracy is the trial's.

    \b
    Examples:
      tune export fashion-mnist -o best.yaml && tune train best.yaml
      tune train best.yaml --full-train --epochs 20 --out runs/fmnist-prod --device cuda
    """
    from tuner import production
    from tuner.export import read_export

    exported = read_export(file)
    for note in production.replay_notes(exported):
        click.echo(note, err=True)
    with EpochProgress(epochs or exported.config.epochs) as progress:
        run = production.train_export(exported, file, out_dir=Path(out_dir) if out_dir else None, data_dir=data_dir,
                                      epochs=epochs, device=device, full_train=full_train, overwrite=overwrite,
                                      on_epoch=progress.on_epoch)
    metrics = run.metrics
    trial = metrics["trial_test_accuracy"]
    versus = f" (trial: {trial:.4f})" if trial is not None and not full_train and epochs is None else ""
    click.echo(f"Test accuracy {metrics['test_accuracy']:.4f}{versus} after {metrics['epochs']} epochs in "
               f"{metrics['wall_seconds']:.1f} s on {metrics['device']}")
    click.echo(f"Wrote {run.out_dir / production.WEIGHTS_FILE}, {production.CONFIG} and {production.METRICS}")


class EpochProgress:
    """A rich bar of epochs on a terminal (stderr), else a line per epoch for logs."""

    def __init__(self, epochs: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False)
        self.epochs = epochs
        self.bar = Progress(TextColumn("epochs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), console=self.console,
                            disable=not self.console.is_terminal)
        self.task = self.bar.add_task("", total=epochs)

    def __enter__(self) -> EpochProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def on_epoch(self, epoch) -> None:
        status = (f"epoch {epoch.epoch}/{self.epochs} train loss {epoch.train_loss:.4f} "
                  f"val acc {epoch.val_accuracy:.4f} ({epoch.seconds:.1f} s)")
        self.bar.update(self.task, advance=1, description=status)
        if not self.console.is_terminal:
            self.console.print(status)


@click.command()
@study_argument
@storage_option
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where to write index.html (and PNGs) [default: NAME-plots in the current directory].")
def plot(name: str, storage: str | None, out_dir: str | None) -> None:
    """Plot study NAME: optimization history, per-epoch values, importances, parallel coordinates, slices.

    Writes one HTML file that opens offline (plotly.js inside), and a PNG per plot where the optional
    kaleido package is installed.

    \b
    Examples:
      tune plot fashion-mnist
      tune plot fashion-mnist -o report/ && xdg-open report/index.html
    """
    from tuner.inspect import open_study
    from tuner.plots import default_plot_dir, write_plots

    files = write_plots(open_study(name, storage), Path(out_dir) if out_dir else default_plot_dir(name))
    for note in files.notes:
        click.echo(note, err=True)
    click.echo(f"Wrote {files.html}" + "".join(f", {p.name}" for p in files.png))


@click.command()
@study_argument
@storage_option
@click.option("-y", "--yes", is_flag=True, help="Delete without asking.")
def delete(name: str, storage: str | None, yes: bool) -> None:
    """Delete study NAME, its trials and their kept weights. Asks first unless --yes.

    \b
    Examples:
      tune delete old-study
      tune delete old-study --yes --storage sqlite:///studies.db
    """
    from tuner.inspect import delete_study, read_storage
    from tuner.storage import load_study

    storage_obj = read_storage(storage)
    study = load_study(name, storage_obj)
    count = len(study.get_trials(deepcopy=False))
    if not yes:
        click.confirm(f"Delete study {name!r} and its {count} trial(s) from {_storage_url(storage)}?", abort=True)
    weights = delete_study(study, storage_obj)
    kept = f" and {weights} kept weight file(s)" if weights else ""
    click.echo(f"Deleted study {name!r}: {count} trial(s){kept}.")


COMMANDS = (ls, show, trials, best, export, train, plot, delete)

"""Looking at studies from the terminal: `tune ls`, `show`, `trials`, `best`, `plot`, `delete`.

The four commands that read take `--format table|json|csv`: tables for people, JSON or CSV on stdout for scripts,
with every message on stderr. The data they print comes from `tuner.look.inspect`; this module only lays it out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tuner.cli import output
from tuner.cli.common import storage_option
from tuner.cli.output import emit, format_option, study_argument
from tuner.errors import counted
from tuner.record import TEST_ATTR

if TYPE_CHECKING:
    from rich.table import Table

WORST_CLASSES = 10  # the classes `tune show` lists of the best trial; --format json has them all


def trials_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    from rich.table import Table

    params = list(dict.fromkeys(name for row in rows for name in row["params"]))
    # a multi-objective study's other objectives (latency, size), after its metric's value
    others = list(dict.fromkeys(name for row in rows for name in list(row.get("values", {}))[1:]))
    table = Table(title=title, title_justify="left")
    for header in ("#", "state", "value", *others, "test acc", "epochs", "duration", *params):
        table.add_column(header, justify="left" if header in ("state", *params) else "right")
    for row in rows:
        table.add_row(str(row["number"]), row["state"], output.text(row["value"]),
                      *(output.text(row.get("values", {}).get(name)) for name in others),
                      output.text(row["user_attrs"].get(TEST_ATTR)), str(row["epochs"]),
                      output.seconds(row["duration"]),
                      *(output.text(row["params"].get(name)) for name in params))
    return table


def _states_text(states: dict[str, int]) -> str:
    return ", ".join(f"{state} {count}" for state, count in states.items() if count) or "no trials"


def _storage_url(storage: str | None) -> str:
    from tuner.storage import default_storage_url, public_url

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
    from tuner.look.inspect import read_storage, study_rows

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
                        str(s["FAIL"]), str(s["RUNNING"] + s["WAITING"]), output.text(r["best_value"]),
                        output.text(r["best_trial"]), output.text(r["last_activity"]))
        if rows:
            output.stdout_console().print(out)

    emit(fmt, rows, table, rows=True)


@click.command()
@click.argument("name", metavar="[NAME]", required=False, shell_complete=output.complete_study_name)
@storage_option
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, metavar="K",
              help="How many of the best completed trials to list.")
@format_option
def show(name: str | None, storage: str | None, top: int, fmt: str) -> None:
    """Show study NAME (or the storage's only study): its best trial and its worst classes on validation, the top
    trials, what pruning saved, and parameter importances.

    \b
    Examples:
      tune show
      tune show fashion-mnist --top 10 --format json | jq .importances
    """
    from tuner.look.inspect import only_study, open_study, study_detail

    detail = study_detail(open_study(name or only_study(storage), storage), top)
    emit(fmt, detail, lambda: print_detail(detail), rows=False)


def print_detail(detail: dict[str, Any]) -> None:
    from rich.table import Table

    console = output.stdout_console()
    metric = f" {detail['metric']}" if detail["metric"] else ""
    console.print(f"Study {detail['name']}: {detail['direction']}{metric}; {counted(detail['trials'], 'trial')} "
                  f"({_states_text(detail['states'])}); last activity {output.text(detail['last_activity'])}")
    if detail.get("input"):
        console.print(data_line(detail["input"]))
    best = detail["best"]
    if best is None:
        console.print("Best: no completed trial yet")
    else:
        console.print(f"Best: trial {best['number']}, value {output.text(best['value'])}, test accuracy "
                      f"{output.text(best['user_attrs'].get(TEST_ATTR))}, {counted(best['epochs'], 'epoch')} in "
                      f"{output.seconds(best['duration'])}")
        console.print("  " + " ".join(f"{k}={output.text(v)}" for k, v in best["params"].items()))
        if detail.get("model"):
            console.print(f"  model {detail['model']}", highlight=False)
        for model_ref, row in (detail.get("best_per_model") or {}).items():
            console.print(f"Best {model_ref}: trial {row['number']}, value {output.text(row['value'])}, test accuracy "
                          f"{output.text(row['user_attrs'].get(TEST_ATTR))}", highlight=False)
        if detail.get("per_class"):  # the title on a line of its own: a table's title wraps at its width
            console.print(f"Validation accuracy per class, trial {best['number']}, worst first:")
            console.print(per_class_table(detail["per_class"]))
            if len(detail["per_class"]) > WORST_CLASSES:
                console.print(f"  ... {len(detail['per_class']) - WORST_CLASSES} more (--format json lists all)")
        console.print(trials_table(detail["top"], f"Top {len(detail['top'])} completed trials"))
    if "front" in detail:  # a multi-objective study
        console.print(front_title(detail["objectives"], len(detail["front"])), highlight=False)
        if detail["front"]:
            console.print(trials_table(detail["front"]))
    console.print(pruning_line(detail["pruning"]))
    from tuner.look.weights import weights_line

    weights = weights_line(detail["name"], detail.get("weights"))
    if weights:
        console.print(weights, highlight=False, soft_wrap=True)
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


def per_class_table(rows: list[dict[str, Any]]) -> Table:
    """The first WORST_CLASSES of a trial's classes, worst first: class, validation images, accuracy (recall)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    table.add_column("class")
    table.add_column("val images", justify="right")
    table.add_column("accuracy", justify="right")
    for row in rows[:WORST_CLASSES]:
        table.add_row(escape(str(row["class"])), output.text(row["images"]), output.text(row["accuracy"]))
    return table


def front_title(objectives: dict[str, str], size: int) -> str:
    """"Pareto front: 3 trials (val_accuracy maximized, p95_latency_ms minimized)"."""
    what = ", ".join(f"{name} {direction[:-1]}ed" for name, direction in objectives.items())
    return f"Pareto front: {counted(size, 'trial')} ({what})"


def data_line(info: dict[str, Any]) -> str:
    """Data: the dataset, its input shape and its classes (the first ten), as a study records them."""
    classes = info.get("classes") or []
    shown = ", ".join(classes[:10]) + (f", ... ({len(classes) - 10} more)" if len(classes) > 10 else "")
    shape = "x".join(str(n) for n in info.get("shape", []))
    classes_text = counted(len(classes), "class", "classes")
    return f"Data: {info.get('dataset', '?')}, {shape} images, {classes_text}: {shown}"


def pruning_line(pruning: dict[str, Any]) -> str:
    where = ", ".join(f"after epoch {epoch}: {n}" for epoch, n in pruning["pruned_at_epoch"].items())
    pruned = f"{pruning['pruned']} of {pruning['finished']} finished trials pruned"
    run = counted(pruning["epochs_run"], "epoch")
    return (f"Pruning: {pruned}{f' ({where})' if where else ''}; {run} run against "
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
    from tuner.look.inspect import open_study, parse_states, trial_rows

    wanted = parse_states(states)
    rows = trial_rows(open_study(name, storage), wanted, sort, limit)
    if not rows:
        click.echo(f"No trials in study {name!r}{' in state ' + states if states else ''}.", err=True)
    emit(fmt, rows, lambda: output.stdout_console().print(trials_table(rows)) if rows else None, rows=True)


@click.command()
@study_argument
@storage_option
@format_option
def best(name: str, storage: str | None, fmt: str) -> None:
    """Show the best completed trial of study NAME (of a multi-objective study: its Pareto front).

    \b
    Examples:
      tune best fashion-mnist
      tune best fashion-mnist --format json | jq .params
    """
    from tuner.look.inspect import best_trial, front_rows, objectives_of, open_study, trial_row

    study = open_study(name, storage)
    if len(study.directions) > 1:  # no single best: the front, best metric first (tune export picks one of it)
        rows = front_rows(study)
        if not rows:
            click.echo(f"Study {name!r} has no completed trial yet.", err=True)

        def front() -> None:
            console = output.stdout_console()
            console.print(f"{front_title(objectives_of(study), len(rows))} of {name}", highlight=False)
            console.print(trials_table(rows))

        emit(fmt, rows, front, rows=True)
        return
    row = trial_row(best_trial(study))

    def table() -> None:
        from rich.table import Table

        out = Table(show_header=False)  # the title on a line of its own: a table's title wraps at its width
        out.add_column("field")
        out.add_column("value")
        test = row["user_attrs"].get(TEST_ATTR)
        for field, value in (("trial", row["number"]), ("value", row["value"]), ("test accuracy", test),
                             ("epochs", row["epochs"]), ("duration", output.seconds(row["duration"])),
                             *row["params"].items()):
            out.add_row(field, output.text(value))
        console = output.stdout_console()
        console.print(f"Best trial of {name}")
        console.print(out)

    emit(fmt, row if fmt != "csv" else [row], table, rows=True)


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
    from tuner.look.inspect import open_study
    from tuner.look.plots import default_plot_dir, write_plots

    files = write_plots(open_study(name, storage), Path(out_dir) if out_dir else default_plot_dir(name))
    for note in files.notes:
        click.echo(note, err=True)
    click.echo(f"Wrote {files.html}" + "".join(f", {p.name}" for p in files.png))


@click.command()
@study_argument
@storage_option
@click.option("-y", "--yes", is_flag=True, help="Delete without asking.")
@click.option("--weights-only", is_flag=True,
              help="Delete only the study's kept weights (tune start --keep-top), to free disk; the study and its "
                   "trials stay.")
def delete(name: str, storage: str | None, yes: bool, weights_only: bool) -> None:
    """Delete study NAME, its trials and their kept weights. Asks first unless --yes.

    \b
    Examples:
      tune delete old-study
      tune delete old-study --yes --storage sqlite:///studies.db
      tune delete big-photos --weights-only   (tune show says their size)
    """
    from tuner.look.inspect import delete_study, drop_kept_weights, read_storage
    from tuner.look.weights import megabytes, weights_summary
    from tuner.storage import load_study

    storage_obj = read_storage(storage)
    study = load_study(name, storage_obj)
    count = len(study.get_trials(deepcopy=False))
    if weights_only:
        summary = weights_summary(study) or {"files": 0, "bytes": 0}
        if not summary["files"]:
            click.echo(f"Study {name!r} keeps no weights: nothing to delete.")
            return
        size = megabytes(summary["bytes"])
        if not yes:
            click.confirm(f"Delete the {counted(summary['files'], 'kept weight file')} of study {name!r} "
                          f"({size})? Its trials stay.", abort=True)
        dropped = drop_kept_weights(study, storage_obj)
        click.echo(f"Deleted {counted(dropped, 'kept weight file')} of study {name!r} ({size} freed); its "
                   f"{counted(count, 'trial')} stay.")
        return
    if not yes:
        click.confirm(f"Delete study {name!r} and its {count} trial(s) from {_storage_url(storage)}?", abort=True)
    weights = delete_study(study, storage_obj)
    kept = f" and {weights} kept weight file(s)" if weights else ""
    click.echo(f"Deleted study {name!r}: {count} trial(s){kept}.")


COMMANDS = (ls, show, trials, best, plot, delete)

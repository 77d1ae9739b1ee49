"""What the commands print: the --format option (table for people; JSON or CSV on stdout for scripts), study
names with shell completion, and the small formatting helpers the tables share."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from rich.console import Console

FORMATS = ("table", "json", "csv")


def complete_study_name(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Study names in the storage (from --storage or TUNE_STORAGE if given before NAME) for shell completion."""
    try:
        from tuner.look.inspect import read_storage
        from tuner.storage import quiet_optuna, study_names

        quiet_optuna()  # no warning lines in the user's shell either
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


def emit(fmt: str, data: Any, table: Callable[[], None], *, rows: bool) -> None:
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

def stdout_console() -> Console:
    """stdout; wide when it is not a terminal, so tables written to files or pipes keep whole values."""
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


def text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"

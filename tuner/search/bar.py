"""The text of the live bar, fitted to the terminal: the counts, elapsed time and ETA are columns of their own that
never shorten; the text beside them is made of pieces, each with shorter forms, shortened least needed first (the
running trial's params, then the best so far, then the timeout note, then the trial's own status)."""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.progress import ProgressColumn, Task
from rich.table import Column
from rich.text import Text

Forms = tuple[str, ...]  # one piece of the text, longest form first; "" leaves it out
SEPARATOR = " | "

# The pieces of the text, in the order they are shown, and the order in which they give way.
SHOWN = ("status", "overrun", "params", "best")
GIVES_WAY = ("params", "best", "overrun", "status")


def fitted(pieces: dict[str, Forms], width: int) -> str:
    """The pieces joined, each in its longest form that lets the whole fit in `width` columns (shortening the
    pieces in GIVES_WAY order); what still does not fit is cut by the caller's ellipsis."""
    chosen = {name: 0 for name in pieces}

    def text() -> str:
        return SEPARATOR.join(form for name in SHOWN if name in pieces
                              for form in (pieces[name][chosen[name]],) if form)

    for name in GIVES_WAY:
        while name in pieces and len(text()) > width and chosen[name] < len(pieces[name]) - 1:
            chosen[name] += 1
    return text()


class Fitted:
    """A renderable of pieces that fits the width the table gives it, on one line."""

    def __init__(self, pieces: dict[str, Forms]) -> None:
        self.pieces = pieces

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, len(fitted(self.pieces, options.max_width * 10)))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(fitted(self.pieces, options.max_width), no_wrap=True, overflow="ellipsis")


class FittedColumn(ProgressColumn):
    """The bar's last column: the task's `pieces` field, fitted to what the other columns leave."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=False, overflow="ellipsis"))

    def render(self, task: Task) -> Fitted:
        return Fitted(task.fields.get("pieces", {}))


def words_forms(text: str) -> Forms:
    """`text`, then with its last words left out (marked "…"), then nothing."""
    words = text.split()
    return (text, *(" ".join(words[:n]) + " …" for n in range(len(words) - 1, 0, -1)), "")


def status_forms(trial: int, epoch: str, batch: str, val: str) -> Forms:
    """Where the running trial is: its number and epoch always, its batch and last validation score if room."""
    head = f"trial {trial} epoch {epoch}"
    forms = [f"{head} batch {batch}{val}" if batch else f"{head}{val}", f"{head}{val}", head]
    return tuple(dict.fromkeys(forms))


def best_forms(best: str) -> Forms:
    """The best so far ("best 0.9012 (trial 7), no improvement for ..."), then its value and trial, then none."""
    short = best.split(", ", 1)[0]
    return tuple(dict.fromkeys((best, short, short.split(" (", 1)[0], "")))


def params_forms(params: str) -> Forms:
    return words_forms(params) if params else ("",)

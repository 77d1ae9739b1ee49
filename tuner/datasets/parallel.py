"""A map over many files, on a thread pool when asked, with a progress bar on a terminal for long runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

A = TypeVar("A")
R = TypeVar("R")


def _progress(total: int, description: str) -> Progress:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, disable=not console.is_terminal or total < 200, transient=True)


def parallel_map(function: Callable[[A], R], items: Sequence[A], description: str, threads: int = 1) -> list[R]:
    """`function` over `items`, with a progress bar; on `threads` threads when more than one."""
    results: list[R] = []
    with _progress(len(items), description) as progress, ThreadPoolExecutor(threads) as pool:
        task = progress.add_task(description, total=len(items))
        mapped = pool.map(function, items, chunksize=16) if threads > 1 else map(function, items)
        for result in mapped:
            results.append(result)
            progress.advance(task)
    return results

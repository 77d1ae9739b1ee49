"""`tune start`'s deployment constraints: --max-latency, --max-params, --max-size and how latency is measured; and
--objectives, the multi-objective mode (accuracy against latency and/or size)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tuner.errors import SpecError
from tuner.spec.constraints import RUNTIMES, STATS, Constraints, check_objectives
from tuner.spec.run import METRICS

F = TypeVar("F", bound=Callable[..., Any])
FLAGS = {"max_latency": "--max-latency", "latency_stat": "--latency-stat", "max_params": "--max-params",
         "max_size": "--max-size", "latency_batch": "--latency-batch", "latency_on": "--latency-on",
         "latency_threads": "--latency-threads"}


def constraint_options(command: F) -> F:
    """The constraint flags; they reach the command as keyword arguments named like the spec's keys."""
    options = [
        click.option("--max-latency", metavar="TIME",
                     help="Search only models that answer within TIME (5ms, 800us) at --latency-stat, measured "
                          "before each trial trains; slower architectures are pruned untrained."),
        click.option("--latency-stat", type=click.Choice(STATS),
                     help="The latency percentile --max-latency bounds [default: p95]."),
        click.option("--max-params", metavar="N", help="Search only models with at most N parameters (3M, 250k)."),
        click.option("--max-size", metavar="SIZE", help="Search only models whose ONNX file is at most SIZE (10MB)."),
        click.option("--latency-batch", type=click.IntRange(min=1), metavar="N",
                     help="Images per timed call [default: 1]."),
        click.option("--latency-on", type=click.Choice(RUNTIMES),
                     help="The runtime timed: onnxruntime (the file tune convert writes) or torch "
                          "[default: onnxruntime]."),
        click.option("--latency-threads", type=click.IntRange(min=1), metavar="N",
                     help="CPU threads of that runtime while timing [default: 1]."),
        click.option("--objectives", metavar="LIST",
                     help="Search the front of the metric against latency and/or size (the ONNX file): "
                          "accuracy,latency, accuracy,size or accuracy,latency,size (a multi-objective study)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def constraint_flags(given: dict[str, Any]) -> dict[str, Any] | None:
    """The constraint flags given (None if none), checked: a bad value is one line naming the flag."""
    flags = {key: value for key, value in given.items() if key in FLAGS and value is not None}
    if not flags:
        return None
    try:
        Constraints.from_dict(flags)
    except SpecError as e:
        message = str(e)
        for key, flag in FLAGS.items():
            message = message.replace(f"constraints.{key}", flag)
        raise SpecError(message) from None
    return flags


def objectives_flag(raw: str | None) -> tuple[str, ...] | None:
    """--objectives as the spec's tuple (None if not given), checked: a bad value is one line naming the flag (the
    first name is checked against the study's metric once the spec is known)."""
    if raw is None:
        return None
    first = raw.split(",")[0].strip()
    try:
        return check_objectives(raw, first if first in METRICS else "accuracy")
    except SpecError as e:
        raise SpecError(f"--{e}") from None

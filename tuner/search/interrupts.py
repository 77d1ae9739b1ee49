"""Ctrl-C and SIGTERM without a trial left RUNNING."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

from tuner.errors import raise_interrupt


class Interrupts:
    """SIGTERM without a trial left RUNNING. Inside the objective it raises KeyboardInterrupt at once, and Optuna
    marks the trial FAIL; elsewhere (while Optuna creates or records a trial, where an exception would leave the
    trial RUNNING) it is only noted, and raised as the next objective starts or before the next trial is asked for.
    """

    requested = False
    in_objective = False

    @classmethod
    def reset(cls) -> None:
        cls.requested = cls.in_objective = False

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.requested = True
        if cls.in_objective:
            raise KeyboardInterrupt

    @staticmethod
    def quiet_unraisable(unraisable: Any) -> None:
        """A signal that lands in a finalizer (a database connection collected mid-epoch) cannot raise there; it was
        noted, and is raised at the next safe point: say nothing rather than print its traceback."""
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            sys.__unraisablehook__(unraisable)

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise KeyboardInterrupt



@contextlib.contextmanager
def sigterm_as_interrupt(runs_trials: bool = True) -> Iterator[None]:
    """SIGTERM acts as Ctrl-C: KeyboardInterrupt. In a process that runs trials both fail the running trial and
    never leave one RUNNING: a signal that comes while Optuna creates or records a trial waits for the next safe
    point (Interrupts). A pool's parent, which runs none, is interrupted at once and stops its workers."""
    Interrupts.reset()
    handlers = ({signal.SIGTERM: Interrupts.handle, signal.SIGINT: Interrupts.handle} if runs_trials
                else {signal.SIGTERM: raise_interrupt})
    try:
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    hook, sys.unraisablehook = sys.unraisablehook, Interrupts.quiet_unraisable
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""The one exception type a user can cause: the CLI prints its message as one line and exits 2."""


class TuneError(Exception):
    """A problem with the user's input or environment; the message says what is wrong and how to fix it."""


class TrialFailed(Exception):
    """A trial that cannot finish (out of memory, diverged without pruning); the study goes on.

    The reason is stored on the trial as the user attr `fail_reason`.
    """


def raise_interrupt(signum: int, frame: object) -> None:
    """A signal handler that makes SIGTERM act as Ctrl-C (KeyboardInterrupt), so cleanup code runs."""
    raise KeyboardInterrupt

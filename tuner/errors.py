"""The exceptions a user can cause: the CLI prints their message as one line and exits 2."""


class TuneError(Exception):
    """A problem with the user's input or environment; the message says what is wrong and how to fix it."""


class SpecError(TuneError):
    """A study spec, run config or one of their values that tune cannot use."""


class DataUnavailable(TuneError):
    """A torchvision dataset neither in data directory `root` nor downloadable; `reason`: why the download failed."""

    def __init__(self, message: str, dataset: str, root: str, reason: str) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.root = root
        self.reason = reason


class TrialFailed(Exception):
    """A trial that cannot finish (out of memory, diverged without pruning); the study goes on.

    The reason is stored on the trial as the user attr `reason` (tuner.record.REASON).
    """


def one_line(error: BaseException, limit: int | None = 200) -> str:
    """An exception's message on one line (white space folded), cut to `limit` characters: for error lines."""
    text = " ".join(str(error).split())
    return text if limit is None else text[:limit]


def counted(count: int, word: str, plural: str | None = None) -> str:
    """"1 epoch", "2 epochs": a count with its noun in the right number (`plural` where it is not word + "s")."""
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


def raise_interrupt(signum: int, frame: object) -> None:
    """A signal handler that makes SIGTERM act as Ctrl-C (KeyboardInterrupt), so cleanup code runs."""
    raise KeyboardInterrupt

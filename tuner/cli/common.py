"""What every command shares: one-line errors with exit code 2, and the --storage option."""

from __future__ import annotations

from typing import Any

import click

from tuner.errors import TuneError


class UserError(click.ClickException):
    """Printed by Click as one line, `Error: ...`, with exit code 2."""

    exit_code = 2


class TuneGroup(click.Group):
    """A group whose commands turn user errors (bad options, TuneError) into one line and exit code 2.

    Click's own usage errors print a usage block; here they become one line that names the fix. `tune --debug`
    shows the traceback of a TuneError instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            raise UserError(f"{e.format_message()}{hint}") from None
        except TuneError as e:
            if ctx.params.get("debug"):
                raise
            raise UserError(str(e)) from None
        except OSError as e:  # a path the user gave (-o, --out) that cannot be written or read
            if ctx.params.get("debug") or e.filename is None:
                raise
            raise UserError(f"{e.filename}: {e.strerror}: check the path and its permissions") from None


storage_option = click.option(
    "--storage", envvar="TUNE_STORAGE", metavar="URL",
    help="Optuna storage URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
         "[env TUNE_STORAGE; default: ~/.local/share/tune/tune.db].",
)

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), metavar="DIR",
    help="Where the dataset is, or is downloaded to [env TUNE_DATA_DIR; default: ~/.cache/tune/data].")
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
    help="Where to train: auto picks CUDA, then MPS, then the CPU.")
keep_top_option = click.option(
    "--keep-top", type=click.IntRange(min=0), default=3, show_default=True, metavar="K",
    help="Keep the weights of the K best trials as artifacts (0: none).")
image_size_option = click.option(
    "--image-size", type=click.IntRange(min=1), metavar="N",
    help="Image folders: resize images to N x N (shorter side to N, then the center crop) [default: the median "
         "shorter side of the images, at most 224].")

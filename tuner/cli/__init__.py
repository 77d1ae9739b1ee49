"""The `tune` command line: a thin shell over the library; each command lives in a module of this package."""

from __future__ import annotations

import click

from tuner import __version__
from tuner.cli.common import TuneGroup
from tuner.cli.start import start


@click.group(cls=TuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tune")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors instead of one line.")
def main(debug: bool) -> None:
    """Hyperparameter search for PyTorch image classifiers on Optuna.

    \b
    Start here:  tune start --trials 100
    Inspect:     tune ls; tune show fashion-mnist
    """


main.add_command(start)

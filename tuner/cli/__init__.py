"""The `tune` command line: a thin shell over the library; each command lives in a module of this package."""

from __future__ import annotations

import click

from tuner.cli.common import TuneGroup
from tuner.cli.dashboard import dashboard
from tuner.cli.data import data
from tuner.cli.inspect import COMMANDS as INSPECT_COMMANDS
from tuner.cli.production import COMMANDS as PRODUCTION_COMMANDS
from tuner.cli.serve import COMMANDS as SERVE_COMMANDS
from tuner.cli.start import start
from tuner.cli.workers import COMMANDS as WORKER_COMMANDS


@click.group(cls=TuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tune", prog_name="tune")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors instead of one line.")
def main(debug: bool) -> None:
    """Hyperparameter search for PyTorch image classifiers on Optuna.

    \b
    Start here:  tune start --trials 100
                 (offline: the bundled sample, study fashion-mnist-sample)
    Your images: tune data DIR; tune start --dataset DIR
    Inspect:     tune ls; tune show NAME   (NAME: the study tune start named)
    Ship:        tune export NAME -o best.yaml; tune train best.yaml
                 tune predict runs/best IMAGES
    """
    from tuner.storage import quiet_optuna

    quiet_optuna()


main.add_command(start)
main.add_command(dashboard)
main.add_command(data)
for command in (*INSPECT_COMMANDS, *PRODUCTION_COMMANDS, *SERVE_COMMANDS, *WORKER_COMMANDS):
    main.add_command(command)

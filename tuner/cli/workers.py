"""`tune worker` (join a study from any machine) and `tune status` (watch one), and the worker options that
`tune start` shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tuner.cli.common import data_dir_option, device_option, keep_top_option, storage_option
from tuner.cli.output import study_argument

if TYPE_CHECKING:
    from tuner.search.session import Session

F = TypeVar("F", bound=Callable[..., Any])


def worker_options(command: F) -> F:
    """--workers, --gpus, --per-gpu, --heartbeat-interval, --grace-period: how trials run, shared by start/worker."""
    options = [
        click.option("--workers", type=click.IntRange(min=1), metavar="N",
                     help="Worker processes on this machine [default: len(gpus) x per-gpu, else 1, which runs "
                          "trials in this process]."),
        click.option("--gpus", metavar="IDS",
                     help="Pin workers to these GPUs (CUDA_VISIBLE_DEVICES ids), round-robin, e.g. --gpus 0,1,2,3."),
        click.option("--per-gpu", type=click.IntRange(min=1), metavar="K", help="Workers on each GPU of --gpus."),
        # Defaults (None here, so that `tune --help` need not import optuna) are tuner.storage's.
        click.option("--heartbeat-interval", type=click.IntRange(min=1), metavar="S",
                     help="Seconds between heartbeats of a running trial [default: 10]."),
        click.option("--grace-period", type=click.IntRange(min=1), metavar="S",
                     help="Seconds without a heartbeat after which a running trial counts as dead: it is marked "
                          "FAIL and retried with the same params. Use the same value on every worker of a study "
                          "[default: 60]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def heartbeat(interval: int | None, grace: int | None) -> dict[str, int]:
    """The heartbeat settings to open storages with: the options given, else tuner.storage's defaults."""
    from tuner.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL

    return {"heartbeat_interval": interval or HEARTBEAT_INTERVAL, "grace_period": grace or GRACE_PERIOD}


def local_weights_warning(storage_url: str, keep_top: int) -> str | None:
    """One line for stderr when a worker on PostgreSQL keeps weights in a directory of its own machine (no
    TUNE_ARTIFACTS): the dashboard, elsewhere, cannot serve them."""
    from urllib.parse import urlsplit

    from tuner.ship.artifacts import ARTIFACTS_ENV, artifact_dir_for

    if keep_top <= 0 or os.environ.get(ARTIFACTS_ENV) or urlsplit(storage_url).scheme == "sqlite":
        return None
    return (f"Warning: kept weights stay on this machine, in {artifact_dir_for(storage_url)}: set {ARTIFACTS_ENV} "
            "to a directory every machine shares so that the dashboard can serve them (or --keep-top 0)")


def run_and_report(session: Session, slots: list[str | None], *, trials: int, timeout: float | None, seed: int | None,
                   keep_top: int) -> None:
    """Run the trials, then print the summary; on Ctrl-C/SIGTERM print how to resume and exit 130."""
    from tuner.search import runner
    from tuner.search.pool import WorkersFailed

    for line in runner.opening(session):
        click.echo(line, err=True)
    try:
        runner.run(session, slots, n_trials=trials, timeout=timeout, seed=seed, keep_top=keep_top)
    except KeyboardInterrupt:
        click.echo("")
        click.echo(runner.summary(session))
        click.echo(runner.interrupt_note(session, trials), err=True)
        raise SystemExit(130) from None
    except WorkersFailed as e:
        click.echo(runner.summary(session))
        resume = runner.resume_command(session, runner.trials_left(session, trials))
        click.echo(f"Error: {e} (see its message above). Resume with: {resume}", err=True)
        raise SystemExit(1) from None
    click.echo(runner.summary(session))


@click.command()
@study_argument
@storage_option
@click.option("--trials", type=click.IntRange(min=1), default=100, show_default=True,
              help="How many trials this invocation runs (shared by its workers).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Start no new trial after S seconds.")
@data_dir_option
@click.option("--seed", type=click.IntRange(min=0), help="Seed the sampler and each trial's training.")
@keep_top_option
@device_option
@worker_options
def worker(name: str, storage: str | None, trials: int, timeout: float | None, data_dir: str | None,
           seed: int | None, keep_top: int, device: str, workers: int | None, gpus: str | None, per_gpu: int | None,
           heartbeat_interval: int | None, grace_period: int | None) -> None:
    """Join study NAME, running its stored spec, from this machine: many machines can work on one study.

    \b
    Examples:
      tune worker fashion-mnist --storage postgresql://tune@db:5432/tune --gpus 0,1,2,3 --trials 40
      tune worker fashion-mnist --storage postgresql://tune@db:5432/tune --gpus 0 --per-gpu 2
    """
    from tuner.search import session as sessions
    from tuner.search.gpus import plan_workers

    slots = plan_workers(workers, gpus, per_gpu)
    session = sessions.join(study_name=name, storage_url=storage, data_dir=data_dir, device=device, seed=seed,
                          in_process=slots == [None], **heartbeat(heartbeat_interval, grace_period))
    warning = local_weights_warning(session.storage_url, keep_top)
    if warning:
        click.echo(warning, err=True)
    run_and_report(session, slots, trials=trials, timeout=timeout, seed=seed, keep_top=keep_top)


@click.command()
@study_argument
@storage_option
@click.option("--once", is_flag=True, help="Print one snapshot and exit (for scripts) instead of a live view.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json prints one snapshot as JSON (implies --once).")
@click.option("--interval", type=click.FloatRange(min=0.1), metavar="S",
              help="Seconds between updates: a redraw on a terminal, else one line each [default: 2 on a terminal, "
                   "30 in a log].")
def status(name: str, storage: str | None, once: bool, output: str, interval: float | None) -> None:
    """Watch study NAME: trials by state, running trials with worker, GPU, epoch and heartbeat, best, ETA.

    On a terminal the view is redrawn in place; in a log or a pipe a line is printed every interval.

    \b
    Examples:
      tune status fashion-mnist
      tune status fashion-mnist --interval 60 >> status.log
      tune status fashion-mnist --storage postgresql://tune@db:5432/tune --format json
    """
    from rich.console import Console

    from tuner.look import status as view
    from tuner.storage import close_storage, load_study, open_existing_storage

    storage_ = open_existing_storage(storage)
    try:
        study = load_study(name, storage_)
        if output == "json":
            click.echo(view.snapshot(study).to_json())
        elif once:
            Console(highlight=False, soft_wrap=True).print(view.render(view.snapshot(study)))
        else:
            console = Console(highlight=False)
            view.watch(study, console, interval or (view.REFRESH_SECONDS if console.is_terminal else LOG_INTERVAL))
    finally:
        close_storage(storage_)


LOG_INTERVAL = 30.0  # seconds between the lines `tune status` prints without a terminal

COMMANDS = (worker, status)

"""`tune start`: create or resume a study and run trials."""

from __future__ import annotations

import click

from tuner.cli.common import storage_option
from tuner.spec import PRUNERS, SAMPLERS


@click.command()
@click.option("--trials", type=click.IntRange(min=1), default=100, show_default=True,
              help="How many more trials to run in this invocation.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Start no new trial after S seconds.")
@click.option("--study", "study_name", metavar="NAME",
              help="Study to create or resume [default: the spec's name].")
@click.option("--spec", "spec_file", metavar="FILE",
              help="Study spec (YAML, TOML or JSON), or the name of a shipped spec [default: the study's own spec "
                   "when resuming, else fashion-mnist].")
@storage_option
@click.option("--data-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where the dataset is, or is downloaded to [env TUNE_DATA_DIR; default: ~/.cache/tune/data].")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs per trial (overrides the spec).")
@click.option("--sampler", type=click.Choice(SAMPLERS), help="Optuna sampler (overrides the spec).")
@click.option("--pruner", type=click.Choice(PRUNERS), help="Optuna pruner (overrides the spec).")
@click.option("--seed", type=click.IntRange(min=0), help="Make the sampler and every trial's training deterministic.")
@click.option("--keep-top", type=click.IntRange(min=0), default=3, show_default=True, metavar="K",
              help="Keep the weights of the K best trials as artifacts (0: none).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
              help="Where to train: auto picks CUDA, then MPS, then the CPU.")
def start(trials: int, timeout: float | None, study_name: str | None, spec_file: str | None, storage: str | None,
          data_dir: str | None, epochs: int | None, sampler: str | None, pruner: str | None, seed: int | None,
          keep_top: int, device: str) -> None:
    """Create (or resume) a study and run TRIALS more trials of it.

    \b
    Examples:
      tune start --trials 100
      tune start --study fmnist-sgd --spec studies/fashion-mnist.yaml --epochs 8 --seed 1
      tune start --data-dir ./data --storage postgresql://postgres@db:5432/tune
    """
    from tuner import runner

    session = runner.prepare(study_name=study_name, spec_file=spec_file, storage_url=storage, data_dir=data_dir,
                             device=device, seed=seed, epochs=epochs, sampler=sampler, pruner=pruner)
    try:
        runner.run_search(session.study, session.spec, session.splits, n_trials=trials, timeout=timeout,
                          seed=seed, keep_top=keep_top)
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted: the running trial is marked FAIL. Resume with: "
                   f"{runner.resume_command(session)}", err=True)
        raise SystemExit(130) from None
    click.echo(runner.summary(session))

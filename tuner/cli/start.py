"""`tune start`: create or resume a study and run trials."""

from __future__ import annotations

from typing import Any

import click

from tuner.cli.common import data_dir_option, device_option, image_size_option, keep_top_option, storage_option
from tuner.cli.constraints import constraint_flags, constraint_options, objectives_flag
from tuner.cli.workers import heartbeat, run_and_report, worker_options
from tuner.spec import PRUNERS, SAMPLERS
from tuner.spec.refs import dataset_ref, locate_models


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
@click.option("--dataset", metavar="NAME|DIR",
              help="A folder of images, one subfolder per class (or train/, val/, test/ of those), or a shipped "
                   "dataset: fashion-mnist, mnist, kmnist, cifar10, or fashion-mnist-sample (2,222 images inside "
                   "tune: no download) (overrides the spec).")
@image_size_option
@click.option("--model", metavar="REF",
              help="Model to tune (overrides the spec): bncnn, cnn, convnet, mlp, torchvision:NAME, timm:NAME, or "
                   "MODULE:FUNCTION, your own code in the current directory or on sys.path.")
@storage_option
@data_dir_option
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs per trial (overrides the spec).")
@click.option("--sampler", type=click.Choice(SAMPLERS), help="Optuna sampler (overrides the spec).")
@click.option("--pruner", type=click.Choice(PRUNERS), help="Optuna pruner (overrides the spec).")
@click.option("--seed", type=click.IntRange(min=0), help="Make the sampler and every trial's training deterministic.")
@click.option("--compile", "compile_model", is_flag=True, default=None,
              help="Train through torch.compile (overrides the spec): faster long trials on a GPU, after a "
                   "warm-up per trial.")
@click.option("--stop-when-flat/--no-stop-when-flat", default=None,
              help="End the search once more trials are unlikely to help: no trial has beaten the best by more "
                   "than the noise of validation accuracy for as many trials as it took to find it, and at least "
                   "20 (overrides the spec's stop_when_flat).")
@click.option("--warm-start", metavar="STUDY",
              help="Begin this new study with the best trials of STUDY (same data and classes), fitted to this "
                   "study's space; its completed trials are added as they are where both studies train alike.")
@click.option("--warm-start-storage", metavar="URL", help="Where --warm-start's study is [default: --storage].")
@constraint_options
@keep_top_option
@device_option
@worker_options
def start(trials: int, timeout: float | None, study_name: str | None, spec_file: str | None, storage: str | None,
          data_dir: str | None, dataset: str | None, image_size: int | None, model: str | None, epochs: int | None,
          sampler: str | None, pruner: str | None, seed: int | None,
          compile_model: bool | None, stop_when_flat: bool | None, warm_start: str | None,
          warm_start_storage: str | None, keep_top: int, device: str, workers: int | None, gpus: str | None,
          per_gpu: int | None, heartbeat_interval: int | None, grace_period: int | None, **limits: Any) -> None:
    """Create (or resume) a study and run TRIALS more trials of it.

    \b
    Examples:
      tune start --trials 100
      tune start --dataset ~/photos --image-size 96 --study photos
      tune start --model torchvision:resnet18 --study fm-resnet --epochs 4
      tune start --study fmnist-sgd --spec studies/fashion-mnist.yaml --epochs 8 --seed 1
      tune start --data-dir ./data --storage postgresql://postgres@db:5432/tune
      tune start --trials 64 --gpus 0,1,2,3 --per-gpu 2        (8 worker processes, 2 on each GPU)
      tune start --study fm-cnn --model cnn --warm-start fashion-mnist --stop-when-flat --trials 500
      tune start --study fm-fast --max-latency 0.1ms --latency-stat p95 --max-size 1MB
      tune start --study fm-front --objectives accuracy,latency   (the Pareto front: tune best fm-front)
    """
    from tuner.search import session as sessions
    from tuner.search.gpus import plan_workers

    if warm_start_storage is not None and warm_start is None:
        raise click.UsageError("--warm-start-storage names where --warm-start's study is: give --warm-start STUDY")
    slots = plan_workers(workers, gpus, per_gpu)
    models: dict[str, Any] = {"model": model, "model_dirs": locate_models([model])} if model else {}
    session = sessions.prepare(study_name=study_name, spec_file=spec_file, storage_url=storage, data_dir=data_dir,
                               device=device, seed=seed, dataset=dataset_ref(dataset), image_size=image_size,
                               epochs=epochs, sampler=sampler, pruner=pruner, compile=compile_model,
                               stop_when_flat=stop_when_flat, warm_start=warm_start,
                               warm_start_storage=warm_start_storage, in_process=slots == [None], **models,
                               objectives=objectives_flag(limits.pop("objectives")),
                               constraints=constraint_flags(limits),
                               **heartbeat(heartbeat_interval, grace_period))
    run_and_report(session, slots, trials=trials, timeout=timeout, seed=seed, keep_top=keep_top)

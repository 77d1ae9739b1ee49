"""Running trials of one study, in this process or in worker processes (tuner.workers), with live progress, and
stopping cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tuner.datasets import Splits, data_warnings, default_data_dir, is_folder, load_splits, splits_for
from tuner.errors import TuneError, raise_interrupt
from tuner.objective import Objective
from tuner.samplers import make_pruner, make_sampler
from tuner.spec import Choices, Fixed, StudySpec, load_spec
from tuner.storage import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    INPUT_ATTR,
    SPEC_ATTR,
    WORKER_ATTR,
    check_database_exists,
    create_or_load_study,
    default_storage_url,
    load_study,
    open_storage,
    reap_stale_trials,
    stored_spec,
    study_names,
)
from tuner.train import Epoch, resolve_device
from tuner.workers import (
    GPU_ATTR,
    RUN_ATTR,
    Budget,
    Interrupts,
    Tagged,
    new_run_id,
    run_pool,
    run_tag,
    run_trials,
    worker_name,
)


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
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe_best(study: optuna.Study) -> str:
    try:
        best = study.best_trial
    except ValueError:
        return "no completed trial yet"
    return f"best {best.value:.4f} (trial {best.number})"


class SearchProgress:
    """Trials done / total, the running trial's epoch, and the best so far: a live bar on a terminal, else a
    line per finished trial (for logs and CI)."""

    def __init__(self, study: optuna.Study, total: int | None, epochs: int, console: Console) -> None:
        self.study = study
        self.epochs = epochs
        self.console = console
        self.live = console.is_terminal
        self.bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), console=console, disable=not self.live)
        self.best = describe_best(study)  # read from the storage once per finished trial, not per epoch
        self.task = self.bar.add_task(self.best, total=total)

    def __enter__(self) -> SearchProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def on_epoch(self, trial: optuna.Trial, epoch: Epoch) -> None:
        status = f"trial {trial.number} epoch {epoch.epoch}/{self.epochs} val {epoch.val_accuracy:.4f} | {self.best}"
        self.bar.update(self.task, description=status)

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.best = describe_best(study)
        self.bar.update(self.task, advance=1, description=self.best)
        if not self.live:
            value = "" if trial.value is None else f" value {trial.value:.4f}"
            note = trial.user_attrs.get("reason") or trial.user_attrs.get("weights_error")
            reason = f" ({note})" if note else ""
            epochs = len(trial.intermediate_values)
            self.console.print(f"trial {trial.number} {trial.state.name}{value} after {epochs} epoch(s){reason}; "
                               f"{self.best}", highlight=False)


def run_search(study: optuna.Study, spec: StudySpec, splits: Splits, *, n_trials: int | None,
               timeout: float | None, seed: int | None, keep_top: int = 3, console: Console | None = None) -> None:
    """Run `n_trials` more trials (or until `timeout` seconds) of `spec` in this process.

    A trial that fails for its own reasons (out of memory) does not stop the search; Ctrl-C or SIGTERM marks the
    running trial FAIL and raises KeyboardInterrupt, leaving the study resumable. A lost database is waited for
    a while (tuner.workers.run_trials).
    """
    console = console or Console(stderr=True)
    deadline = None if timeout is None else time.time() + timeout
    with SearchProgress(study, n_trials, spec.epochs, console) as progress, sigterm_as_interrupt():
        objective = Objective(spec, splits, seed, on_epoch=progress.on_epoch, keep_top=keep_top)
        tags = {WORKER_ATTR: worker_name(), GPU_ATTR: os.environ.get("CUDA_VISIBLE_DEVICES"),
                RUN_ATTR: run_tag(new_run_id(), n_trials)}
        run_trials(study, Tagged(objective, tags), Budget(n_trials), deadline=deadline,
                   callbacks=[progress.on_trial_end])


def run(session: Session, slots: list[str | None], *, n_trials: int | None, timeout: float | None,
        seed: int | None, keep_top: int = 3, console: Console | None = None) -> None:
    """Run `n_trials` trials of the session's study: in this process for one unpinned worker, else in one worker
    process per slot (tuner.workers.run_pool). Trials whose worker died before this run are failed (and retried)
    at the start, by `prepare`, and again at the end."""
    console = console or Console(stderr=True)
    if slots == [None]:
        run_search(session.study, session.spec, session.splits, n_trials=n_trials, timeout=timeout, seed=seed,
                   keep_top=keep_top, console=console)
    else:
        run_pool(session, slots, n_trials=n_trials, timeout=timeout, seed=seed, keep_top=keep_top, console=console)
    reap_stale_trials(session.study)


@dataclass
class Session:
    """Everything `tune start` (or `tune worker`) resolved before running trials."""

    study: optuna.Study
    spec: StudySpec
    splits: Splits | None  # the data of an in-process run; None for a pool, whose workers load their own
    storage_url: str
    explicit_storage: bool  # whether the user named the storage (so printed commands must name it too)
    data_dir: str = ""  # where workers read the dataset
    device: str = "auto"  # what workers train on (each resolves it after its GPU is pinned)
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL  # seconds; workers use the same settings
    grace_period: int | None = GRACE_PERIOD
    explicit_data_dir: bool = False  # whether the user named the data dir (printed commands name it too)
    command: str = "start"  # the command that resumes it: start, or worker for a study joined from elsewhere


def resolve_spec(storage: optuna.storages.BaseStorage, study_name: str | None, spec_file: str | None,
                 **overrides) -> StudySpec:
    """The spec to run: --spec FILE, else the resumed study's own spec, else the default; then CLI overrides."""
    dataset = overrides.get("dataset")
    if study_name is None and spec_file is None and dataset is not None and is_folder(dataset):
        study_name = Path(dataset).name  # `tune start --dataset ~/photos` is study "photos", not "fashion-mnist"
    if spec_file is not None:
        spec = load_spec(spec_file)
    else:
        name = study_name or StudySpec().name
        existing = None
        if name in study_names(storage):
            existing = stored_spec(optuna.load_study(study_name=name, storage=storage))
        spec = existing or StudySpec()
    if overrides.get("sampler") not in (None, spec.sampler):
        spec = spec.replace(sampler_options={})
    if overrides.get("pruner") not in (None, spec.pruner):
        spec = spec.replace(pruner_options={})
    return spec.replace(name=study_name, **overrides)


# Fields whose change would make a study's trial values incomparable: a different data set, metric or split.
IDENTITY_FIELDS = ("dataset", "image_size", "metric", "validation", "split_seed")


def check_resume(name: str, stored: StudySpec, spec: StudySpec) -> None:
    """Refuse a spec that cannot continue study `name`: other data or metric, or other choices for a categorical
    hyperparameter (Optuna cannot change a categorical's choices within a study). Ranges, epochs, sampler and
    pruner may change."""
    for field_name in IDENTITY_FIELDS:
        old, new = getattr(stored, field_name), getattr(spec, field_name)
        if old != new:
            raise TuneError(f"study {name!r} was created with {field_name} {old!r}, not {new!r}: its trials would "
                            "not be comparable; use a new --study NAME")
    for param in set(stored.search) & set(spec.search):
        old, new = stored.search[param], spec.search[param]
        if old != new and Fixed not in (type(old), type(new)) and Choices in (type(old), type(new)):
            raise TuneError(f"study {name!r} searches {param} over {_domain_text(old)}, not {_domain_text(new)}: "
                            "Optuna cannot change the choices of a study's categorical hyperparameter; use a new "
                            "--study NAME")


def _domain_text(domain) -> str:
    return str(list(domain.values)) if isinstance(domain, Choices) else f"[{domain.low}, {domain.high}]"


def _data_device(device: str, in_process: bool) -> str:
    """Where `prepare` loads the data: the training device for an in-process run, else the CPU, only to check it
    (each worker process loads its own copy)."""
    return str(resolve_device(device)) if in_process else "cpu"


def check_same_input(name: str, recorded: dict | None, splits: Splits) -> None:
    """Refuse data whose images or classes differ from those study `name` was created on (a folder that gained a
    class or a colour image, or whose default image size moved): its trials would not be comparable."""
    if not recorded:
        return
    now = splits.input_info()
    for key, what in (("classes", "classes"), ("shape", "image shape"), ("preprocess", "preprocessing")):
        if key in recorded and recorded[key] != now[key]:
            raise TuneError(f"study {name!r} was created on {what} {_short(recorded[key])}, the data now gives "
                            f"{_short(now[key])}: its trials would not be comparable; use a new --study NAME, or "
                            "pin the image size with --image-size")


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_models(spec: StudySpec, splits: Splits) -> None:
    """Build each model the spec may train, once, on these images, so that a model that cannot take them (or a
    misspelled model.NAME argument, or pretrained weights that cannot be had) is one line before any study exists.
    Pretrained weights are fetched here, once, rather than by each worker."""
    from tuner.models import build_model
    from tuner.space import probe_configs

    for config in probe_configs(spec):
        build_model(config, splits.shape, splits.num_classes, splits.mean, splits.std)


def _session(study: optuna.Study, spec: StudySpec, *, storage_url: str | None, data_dir: str | None, device: str,
             seed: int | None, in_process: bool, heartbeat_interval: int | None, grace_period: int | None,
             command: str) -> Session:
    """Load the data (cached: checked already), reseed a resumed seeded study, and fail the trials of workers
    that died meanwhile."""
    resolved_dir = str(data_dir or default_data_dir())
    splits = splits_for(spec, resolved_dir, _data_device(device, in_process))  # loaded and checked already
    recorded = (study.user_attrs.get(INPUT_ATTR) or {}).get("fingerprint")
    consequence = ("new trials train and select on other images than the earlier ones; use a new --study NAME to "
                   "compare like with like")
    for warning in data_warnings(splits, recorded, f"study {study.study_name!r} recorded it", consequence):
        print(warning, file=sys.stderr)
    if INPUT_ATTR not in study.user_attrs:  # what the study was created on; later runs are compared with it
        study.set_user_attr(INPUT_ATTR, {**splits.input_info(), "dataset": spec.dataset})
    if seed is not None and study.trials:  # a resumed seeded study continues its sequence, not repeats it
        study.sampler = make_sampler(spec, seed + len(study.trials))
    reap_stale_trials(study)
    if not in_process:  # checked; each worker reads the cache itself, so the parent need not hold the images
        splits = None
        load_splits.cache_clear()
    return Session(study, spec, splits, storage_url or default_storage_url(), storage_url is not None,
                   resolved_dir, device, heartbeat_interval, grace_period, data_dir is not None, command)


def prepare(*, study_name: str | None, spec_file: str | None, storage_url: str | None, data_dir: str | None,
            device: str, seed: int | None, heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
            grace_period: int | None = GRACE_PERIOD, in_process: bool = True, **overrides) -> Session:
    """Check every input, load the data, then create or load the study: bad input never creates a study.

    The study (and a fresh database's schema) is created here, once, before any worker process starts. A resumed
    study must be continuable with the spec (check_resume); a changed spec is stored as the study's spec.
    Trials left RUNNING by dead workers (stale heartbeat) are failed and queued for retry.
    """
    resolve_device(device)
    storage = open_storage(storage_url or default_storage_url(), heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period)
    spec = resolve_spec(storage, study_name, spec_file, **overrides)
    sampler, pruner = make_sampler(spec, seed), make_pruner(spec)
    existing = load_study(spec.name, storage) if spec.name in study_names(storage) else None
    stored = stored_spec(existing) if existing is not None else None
    if stored is not None:
        check_resume(spec.name, stored, spec)
    splits = splits_for(spec, data_dir, _data_device(device, in_process))  # before the study
    if existing is not None:
        check_same_input(spec.name, existing.user_attrs.get(INPUT_ATTR), splits)
    check_models(spec, splits)
    study = create_or_load_study(spec.name, spec, storage, sampler, pruner)
    if stored is not None and stored != spec:
        from tuner.notes import record_spec_change

        study.set_user_attr(SPEC_ATTR, spec.to_dict())
        record_spec_change(study, spec)
    return _session(study, spec, storage_url=storage_url, data_dir=data_dir, device=device, seed=seed,
                    in_process=in_process, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                    command="start")


def join(*, study_name: str, storage_url: str | None, data_dir: str | None, device: str, seed: int | None,
         heartbeat_interval: int | None = HEARTBEAT_INTERVAL, grace_period: int | None = GRACE_PERIOD,
         in_process: bool = True) -> Session:
    """Join an existing study (`tune worker`): load it with the spec it was created with; never create one."""
    resolve_device(device)
    check_database_exists(storage_url or default_storage_url())
    storage = open_storage(storage_url or default_storage_url(), heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period)
    spec = stored_spec(load_study(study_name, storage))
    if spec is None:
        raise TuneError(f"study {study_name!r} was not created by `tune start` (it stores no spec): "
                        "run it with `tune start --study NAME --spec FILE` instead")
    study = load_study(study_name, storage, sampler=make_sampler(spec, seed), pruner=make_pruner(spec))
    splits = splits_for(spec, data_dir, _data_device(device, in_process))
    check_same_input(study_name, study.user_attrs.get(INPUT_ATTR), splits)  # this machine's copy of a folder
    return _session(study, spec.replace(name=study_name), storage_url=storage_url, data_dir=data_dir, device=device,
                    seed=seed, in_process=in_process, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, command="worker")


def _storage_flag(session: Session) -> str:
    return f" --storage {shlex.quote(session.storage_url)}" if session.explicit_storage else ""


def _data_flag(session: Session) -> str:
    return f" --data-dir {shlex.quote(session.data_dir)}" if session.explicit_data_dir else ""


def resume_command(session: Session) -> str:
    data = _data_flag(session)
    name = shlex.quote(session.spec.name)
    study = f"--study {name}" if session.command == "start" else name
    return f"tune {session.command} {study}{_storage_flag(session)}{data}"


def summary(session: Session) -> str:
    """What `tune start` prints at the end: trials by state, the best trial, and where to look next."""
    study, name = session.study, shlex.quote(session.spec.name)
    counts = Counter(t.state.name for t in study.trials)
    lines = [f"Study {session.spec.name!r} in {session.storage_url}",
             f"Trials: {len(study.trials)} (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"]
    try:
        best = study.best_trial
    except ValueError:
        lines.append("Best: no trial completed yet")
    else:
        test = best.user_attrs.get("test_accuracy")
        test_text = f", test accuracy {test:.4f}" if test is not None else ""
        lines.append(f"Best: trial {best.number}, validation {session.spec.metric} {best.value:.4f}{test_text}")
        lines.append("  " + " ".join(f"{k}={_short(v)}" for k, v in best.params.items()))
    if counts.get("WAITING"):
        lines.append(f"Queued:  {counts['WAITING']} trial(s) wait with fixed params (retries of trials whose worker "
                     "died): the next run starts with them")
    flag = _storage_flag(session)
    lines += [f"Inspect: tune show {name}{flag}   |   tune dashboard{flag}",
              f"Export:  tune export {name}{flag} -o best.yaml && tune train best.yaml{_data_flag(session)}",
              f"Resume:  {resume_command(session)}"]
    return "\n".join(lines)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

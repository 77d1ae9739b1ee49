"""What `tune start` and `tune worker` resolve before any trial runs: the spec, the data, the study. Every input is
checked before a study is created or changed."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuner.datasets import Splits, data_warnings, default_data_dir, load_splits, splits_for
from tuner.errors import TuneError
from tuner.record import INPUT_ATTR, record_spec, record_spec_change, stored_spec
from tuner.search.samplers import make_pruner, make_sampler
from tuner.spec import Choices, Fixed, StudySpec, load_spec
from tuner.spec.params import domain_text
from tuner.spec.refs import is_folder
from tuner.spec.study import resolve_spec
from tuner.storage import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    check_database_exists,
    check_direction,
    create_study,
    default_storage_url,
    find_study,
    load_study,
    open_storage,
    reap_stale_trials,
)
from tuner.train import resolve_device


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
            raise TuneError(f"study {name!r} searches {param} over {domain_text(old)}, not {domain_text(new)}: "
                            "Optuna cannot change the choices of a study's categorical hyperparameter; use a new "
                            "--study NAME")


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
    from tuner.search.space import probe_configs

    for config in probe_configs(spec):
        build_model(config, splits.shape, splits.num_classes, splits.mean, splits.std)


def _resumed_seed(seed: int | None, study: optuna.Study | None) -> int | None:
    """The sampler's seed: a resumed seeded study continues its sequence rather than repeating it."""
    if seed is None or study is None:
        return seed
    return seed + len(study.get_trials(deepcopy=False))


def _session(study: optuna.Study, spec: StudySpec, splits: Splits, *, storage_url: str | None, data_dir: str | None,
             device: str, in_process: bool, heartbeat_interval: int | None, grace_period: int | None,
             command: str) -> Session:
    """Warn about data that changed since the study recorded it, record it on a new study, and fail the trials of
    workers that died meanwhile."""
    recorded = (study.user_attrs.get(INPUT_ATTR) or {}).get("fingerprint")
    consequence = ("new trials train and select on other images than the earlier ones; use a new --study NAME to "
                   "compare like with like")
    for warning in data_warnings(splits, recorded, f"study {study.study_name!r} recorded it", consequence):
        print(warning, file=sys.stderr)
    if INPUT_ATTR not in study.user_attrs:  # what the study was created on; later runs are compared with it
        study.set_user_attr(INPUT_ATTR, {**splits.input_info(), "dataset": spec.dataset})
    reap_stale_trials(study)
    kept: Splits | None = splits
    if not in_process:  # checked; each worker reads the cache itself, so the parent need not hold the images
        kept = None
        load_splits.cache_clear()
    return Session(study, spec, kept, storage_url or default_storage_url(), storage_url is not None,
                   str(data_dir or default_data_dir()), device, heartbeat_interval, grace_period,
                   data_dir is not None, command)


def study_name_for(study_name: str | None, spec_file: StudySpec | None, dataset: str | None) -> str:
    """The study a `tune start` runs: --study, else the spec file's name, else a folder's name for `--dataset DIR`
    (`tune start --dataset ~/photos` is study "photos", not "fashion-mnist"), else the default study's."""
    if study_name is not None:
        return study_name
    if spec_file is not None:
        return spec_file.name
    if dataset is not None and is_folder(dataset):
        return Path(dataset).name
    return StudySpec().name


def prepare(*, study_name: str | None, spec_file: str | None, storage_url: str | None, data_dir: str | None,
            device: str, seed: int | None, heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
            grace_period: int | None = GRACE_PERIOD, in_process: bool = True, **overrides: Any) -> Session:
    """Check every input, load the data, then create or load the study: bad input never creates a study.

    The study (and a fresh database's schema) is created here, once, before any worker process starts. The spec
    follows one rule of precedence (tuner.spec.study.resolve_spec); a resumed study must be continuable with it
    (check_resume), and a changed spec is stored as the study's spec. Trials left RUNNING by dead workers (stale
    heartbeat) are failed and queued for retry.
    """
    resolve_device(device)
    storage = open_storage(storage_url or default_storage_url(), heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period)
    file_spec = load_spec(spec_file) if spec_file is not None else None
    name = study_name_for(study_name, file_spec, overrides.get("dataset"))
    existing = find_study(name, storage)
    stored = stored_spec(existing) if existing is not None else None
    spec = resolve_spec(name, file_spec, stored, **overrides)
    if stored is not None:
        check_resume(name, stored, spec)
    splits = splits_for(spec, data_dir, _data_device(device, in_process))  # before the study
    if existing is not None:
        check_same_input(name, existing.user_attrs.get(INPUT_ATTR), splits)
    check_models(spec, splits)
    sampler, pruner = make_sampler(spec, _resumed_seed(seed, existing)), make_pruner(spec)
    if existing is None:
        study = create_study(name, spec, storage, sampler, pruner)
    else:
        study = existing
        study.sampler, study.pruner = sampler, pruner
        check_direction(study, spec)
    if stored is None:
        record_spec(study, spec)
    elif stored != spec:
        record_spec_change(study, spec)
    return _session(study, spec, splits, storage_url=storage_url, data_dir=data_dir, device=device,
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
    study = load_study(study_name, storage)
    spec = stored_spec(study)
    if spec is None:
        raise TuneError(f"study {study_name!r} was not created by `tune start` (it stores no spec): "
                        "run it with `tune start --study NAME --spec FILE` instead")
    study.sampler, study.pruner = make_sampler(spec, _resumed_seed(seed, study)), make_pruner(spec)
    splits = splits_for(spec, data_dir, _data_device(device, in_process))
    check_same_input(study_name, study.user_attrs.get(INPUT_ATTR), splits)  # this machine's copy of a folder
    return _session(study, spec.replace(name=study_name), splits, storage_url=storage_url, data_dir=data_dir,
                    device=device, in_process=in_process, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, command="worker")

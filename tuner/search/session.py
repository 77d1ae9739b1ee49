"""What `tune start` and `tune worker` resolve before any trial runs: the spec, the data, the study. Every input is
checked before a study is created or changed."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tuner.datasets import Splits, data_warnings, default_data_dir, load_splits, splits_for
from tuner.errors import TuneError
from tuner.record import (
    INPUT_ATTR,
    record_data_dir,
    record_spec,
    record_spec_change,
    recorded_data_dir,
    stored_spec,
)
from tuner.search.checkpoints import sweep as sweep_checkpoints
from tuner.search.constraints import screen_architectures
from tuner.search.fallback import falls_back_to_sample
from tuner.search.names import unknown_study_line
from tuner.search.photos import first_trial, photo_defaults
from tuner.search.samplers import make_pruner, make_sampler
from tuner.search.trial_loop import new_run_id
from tuner.search.warm_start import apply_warm_start, check_new, plan_warm_start
from tuner.spec import Choices, Fixed, StudySpec, load_spec
from tuner.spec.defaults import budget_search
from tuner.spec.params import domain_text
from tuner.spec.refs import MODEL_ARG, is_folder, is_sample
from tuner.spec.study import resolve_spec
from tuner.storage import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    check_database_exists,
    check_direction,
    check_heartbeat,
    create_study,
    default_storage_url,
    find_study,
    load_study,
    new_database_file,
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
    explicit_data_dir: bool = False  # whether printed commands name the data dir (given, or recorded by the study)
    command: str = "start"  # the command that resumes it: start, or worker for a study joined from elsewhere
    resumed: bool = False  # whether the study existed before this command
    new_database: Path | None = None  # the SQLite file this command created, if it did
    changes: tuple[str, ...] = ()  # how a resumed study's spec changed, as "sampler tpe -> random"
    run_id: str = field(default_factory=new_run_id)  # this invocation, recorded on each of its trials
    validation_images: int | None = None  # the noise of validation accuracy, for --stop-when-flat
    stopped: str | None = None  # why --stop-when-flat ended this invocation's search
    ended: str | None = None  # why this invocation's search ended, for its summary (tuner.search.runner)
    asked: int | None = None  # the trials this invocation was asked to run


# Fields whose change would make a study's trial values incomparable: other data, split, metric, model, epochs or
# objectives (the study's directions).
IDENTITY_FIELDS = ("dataset", "image_size", "validation", "split_seed", "metric", "model", "pretrained", "epochs",
                   "objectives")
FLAGS = {"dataset": "--dataset", "image_size": "--image-size", "model": "--model", "epochs": "--epochs",
         "objectives": "--objectives"}
# Fields a resumed study may change, and say so: how trials are sampled, pruned and compiled; ranges of the space.
SETTINGS = ("sampler", "sampler_options", "pruner", "pruner_options", "compile", "stop_when_flat", "constraints")


def _identity(spec: StudySpec, field_name: str) -> Any:
    if field_name == "objectives":  # what the study's values are: val_accuracy,p95_latency_ms
        return ",".join(spec.metric_names)
    return spec.models() if field_name == "model" else getattr(spec, field_name)


def _shown(value: Any) -> str:
    return repr(value[0]) if isinstance(value, list) and len(value) == 1 else repr(value)


def check_resume(name: str, stored: StudySpec, spec: StudySpec, flags: dict[str, Any] | None = None) -> None:
    """Refuse a spec that cannot continue study `name`, whether a spec file or a flag (`flags`: those given) asks
    for it: other data, split, metric, model or epochs, or other choices for a categorical hyperparameter (Optuna
    cannot change a categorical's choices within a study). Ranges, sampler, pruner and compile may change."""
    for field_name in IDENTITY_FIELDS:
        old, new = _identity(stored, field_name), _identity(spec, field_name)
        if old == new or (field_name == "image_size" and old is None):
            continue  # pinning the default image size is checked against the images the study recorded
        flag, given = FLAGS.get(field_name), (flags or {}).get(field_name)
        given = (",".join(given) or spec.metric) if isinstance(given, tuple) else given
        if flag is not None and given is not None:
            study = f"--study {name}-{given}" if field_name == "image_size" else "--study NAME"
            raise TuneError(f"{flag} {given}: study {name!r} was created with {field_name} "
                            f"{_shown(old)}: its trials would not be comparable; resume without {flag}, or use a "
                            f"new {study}")
        raise TuneError(f"study {name!r} was created with {field_name} {_shown(old)}, not {_shown(new)}: its "
                        "trials would not be comparable; use a new --study NAME")
    for param in set(stored.search) & set(spec.search):
        old, new = stored.search[param], spec.search[param]
        if old != new and Fixed not in (type(old), type(new)) and Choices in (type(old), type(new)):
            raise TuneError(f"study {name!r} searches {param} over {domain_text(old)}, not {domain_text(new)}: "
                            "Optuna cannot change the choices of a study's categorical hyperparameter; use a new "
                            "--study NAME")


def spec_changes(stored: StudySpec, spec: StudySpec) -> tuple[str, ...]:
    """What a resume changes in a study's spec (what check_resume lets through), as "sampler tpe -> random"."""
    changes = [f"{name} {getattr(stored, name)} -> {getattr(spec, name)}" for name in SETTINGS
               if getattr(stored, name) != getattr(spec, name)]
    for param in sorted(set(stored.search) | set(spec.search)):
        old, new = stored.search.get(param), spec.search.get(param)
        if old != new:
            before = "unset" if old is None else domain_text(old)
            changes.append(f"search.{param} {before} -> {'unset' if new is None else domain_text(new)}")
    return tuple(changes)


def _data_device(device: str, in_process: bool) -> str:
    """Where `prepare` loads the data: the training device for an in-process run, else the CPU, only to check it
    (each worker process loads its own copy)."""
    return str(resolve_device(device)) if in_process else "cpu"


def check_same_input(name: str, recorded: dict[str, Any] | None, splits: Splits,
                     image_size: int | None = None) -> None:
    """Refuse data whose images or classes differ from those study `name` was created on (a folder that gained a
    class or a colour image, or whose default image size moved): its trials would not be comparable. `image_size`:
    the --image-size given now, if one was."""
    if not recorded:
        return
    now = splits.input_info()
    for key, what in (("classes", "classes"), ("shape", "image shape"), ("preprocess", "preprocessing")):
        if key in recorded and recorded[key] != now[key]:
            problem = (f"study {name!r} was created on {what} {_short(recorded[key])}, the data now gives "
                       f"{_short(now[key])}: its trials would not be comparable")
            raise TuneError(f"{problem}; {_input_fix(name, key, recorded[key], now[key], image_size)}")


def _input_fix(name: str, key: str, old: Any, new: Any, image_size: int | None) -> str:
    """The way on from other input: for another image size, the study's size or a new study named for the size."""
    if key != "shape" or len(old) != 3 or len(new) != 3 or old[0] != new[0]:
        return "use a new --study NAME"
    study = f"start a new study for this size: --study {name}-{new[1]}"
    if image_size is not None:
        return f"resume without --image-size {image_size} (the study's images are {old[1]} px), or {study}"
    return f"resume with --image-size {old[1]} (the study's images), or {study}"


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


TIE_IMAGES = 100  # below this many validation images, accuracy moves in steps of 1 % or more: trials tie


def validation_warning(splits: Splits, metric: str) -> str | None:
    """A line when the validation split is so small that validation accuracies tie (37 images: steps of 2.7 %)."""
    count = len(splits.val)
    if metric != "accuracy" or count >= TIE_IMAGES:
        return None
    return (f"warning: the validation split has only {count} images, so validation accuracy moves in steps of "
            f"{1 / count:.1%} and many trials will tie; hold out more (the spec's `validation:`, or a val/ folder "
            f"with more images), or select on metric: loss")


def _session(study: optuna.Study, spec: StudySpec, splits: Splits, *, storage_url: str | None, data_dir: str | None,
             device: str, in_process: bool, heartbeat_interval: int | None, grace_period: int | None,
             command: str, **facts: Any) -> Session:
    """Warn about data that changed since the study recorded it (or is too small to rank trials), record it on a
    new study, and fail the trials of workers that died meanwhile."""
    recorded = (study.user_attrs.get(INPUT_ATTR) or {}).get("fingerprint")
    consequence = ("new trials train and select on other images than the earlier ones; use a new --study NAME to "
                   "compare like with like")
    warnings = data_warnings(splits, recorded, f"study {study.study_name!r} recorded it", consequence)
    for warning in [*warnings, validation_warning(splits, spec.metric)]:
        if warning:
            print(warning, file=sys.stderr)
    if INPUT_ATTR not in study.user_attrs:  # what the study was created on; later runs are compared with it
        study.set_user_attr(INPUT_ATTR, {**splits.input_info(), "dataset": spec.dataset})
    reap_stale_trials(study)
    sweep_checkpoints(study)
    kept: Splits | None = splits
    if not in_process:  # checked; each worker reads the cache itself, so the parent need not hold the images
        kept = None
        load_splits.cache_clear()
    return Session(study, spec, kept, storage_url or default_storage_url(), storage_url is not None,
                   str(data_dir or default_data_dir()), device, heartbeat_interval, grace_period,
                   data_dir is not None, command, validation_images=len(splits.val), **facts)


def study_name_for(study_name: str | None, spec_file: StudySpec | None, dataset: str | None) -> str:
    """The study a `tune start` runs: --study, else the spec file's name, else a folder's name for `--dataset DIR`
    (`tune start --dataset ~/photos` is study "photos", not "fashion-mnist") or a bundled sample's name, else the
    default study's."""
    if study_name is not None:
        return study_name
    if spec_file is not None:
        return spec_file.name
    if dataset is not None and (is_folder(dataset) or is_sample(dataset)):
        return Path(dataset).name
    return StudySpec().name


@falls_back_to_sample  # the default study searches the bundled sample when Fashion-MNIST cannot be had
def prepare(*, study_name: str | None, spec_file: str | None, storage_url: str | None, data_dir: str | None,
            device: str, seed: int | None, heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
            grace_period: int | None = GRACE_PERIOD, in_process: bool = True, warm_start: str | None = None,
            warm_start_storage: str | None = None, **overrides: Any) -> Session:
    """Check every input, load the data, then create or load the study: bad input never creates a study.

    The study (and a fresh database's schema) is created here, once, before any worker process starts. The spec
    follows one rule of precedence (tuner.spec.study.resolve_spec); a resumed study must be continuable with it
    (check_resume), and a changed spec is stored as the study's spec. Trials left RUNNING by dead workers (stale
    heartbeat) are failed and queued for retry.
    """
    resolve_device(device)
    url = storage_url or default_storage_url()
    new_file = new_database_file(url)  # created only once every input is known good
    check_heartbeat(heartbeat_interval, grace_period)
    storage = None if new_file else open_storage(url, heartbeat_interval=heartbeat_interval,
                                                 grace_period=grace_period)
    file_spec = load_spec(spec_file) if spec_file is not None else None
    name = study_name_for(study_name, file_spec, overrides.get("dataset"))
    existing = find_study(name, storage) if storage is not None else None
    if existing is None and study_name is not None and storage is not None:  # a typo must not pass unsaid
        line = unknown_study_line(study_name, storage, url)
        if line is not None:
            print(line, file=sys.stderr)
    stored = stored_spec(existing) if existing is not None else None
    spec = resolve_spec(name, file_spec, stored, **overrides)
    new_study_lines: list[str] = []  # said once the data has loaded
    if stored is None:  # a new study: a folder's pretrained start and image size, a budget's narrower widths
        spec, new_study_lines = photo_defaults(spec, resolve_device(device), file_spec is None and
                                               overrides.get("model") is None, file_spec is None)
        smaller = budget_search(spec.search) if file_spec is None and spec.constraints.active else None
        if smaller is not None:
            spec = spec.replace(search=smaller)
            new_study_lines.append(f"with a deployment budget the search also tries narrower models: model.width "
                                   f"{domain_text(smaller[MODEL_ARG + 'width'])}")
    if stored is not None:
        check_resume(name, stored, spec, {k: v for k, v in overrides.items() if v is not None})
    # a flag overrides the folder a resumed study was started with
    used_dir = data_dir or (recorded_data_dir(existing) if existing is not None else None)
    splits = splits_for(spec, used_dir, _data_device(device, in_process))  # before the study
    if existing is not None:
        check_same_input(name, existing.user_attrs.get(INPUT_ATTR), splits, overrides.get("image_size"))
    check_models(spec, splits)
    screen = (screen_architectures(spec, splits, narrow=file_spec is None)
              if stored is None and spec.constraints.active else None)
    if screen is not None:  # before the study exists: a budget no model of the space meets creates nothing
        spec = screen.spec
        new_study_lines += [screen.line] if screen.line is not None else []
    for line in new_study_lines:
        print(line, file=sys.stderr)
    warm = None  # what --warm-start takes from the other study, checked before this study is written
    if warm_start is not None and check_new(name, warm_start, existing):
        warm = plan_warm_start(warm_start, warm_start_storage or url, name=name, storage_url=url, spec=spec,
                               splits=splits)
    sampler, pruner = make_sampler(spec, _resumed_seed(seed, existing)), make_pruner(spec)
    if storage is None:
        storage = open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
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
    for key, measured in screen.cache.items() if screen is not None else ():
        study.set_user_attr(key, measured)  # its trials find their models measured
    if data_dir is not None:
        record_data_dir(study, data_dir)
    for line in apply_warm_start(study, warm) if warm is not None else []:
        print(line, file=sys.stderr)
    start = first_trial(spec) if existing is None and warm is None and file_spec is None else None
    if start is not None:
        study.enqueue_trial(start[0], skip_if_exists=True)  # two starts racing on a new study
        print(start[1], file=sys.stderr)
    return _session(study, spec, splits, storage_url=storage_url, data_dir=used_dir, device=device,
                    in_process=in_process, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, command="start", resumed=existing is not None, new_database=new_file,
                    changes=spec_changes(stored, spec) if stored is not None else ())


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
    used_dir = data_dir or recorded_data_dir(study)  # a flag overrides the folder the study was started with
    splits = splits_for(spec, used_dir, _data_device(device, in_process))
    check_same_input(study_name, study.user_attrs.get(INPUT_ATTR), splits)  # this machine's copy of a folder
    return _session(study, spec.replace(name=study_name), splits, storage_url=storage_url, data_dir=used_dir,
                    device=device, in_process=in_process, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, command="worker", resumed=True)

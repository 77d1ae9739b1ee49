"""Everything tune writes on a study or a trial: the names of the user attrs, how each is read back, and the
study's note (shown by optuna-dashboard: the spec it searches, then every export).

Stored studies are data that outlive versions of tune: a name here is never renamed, only added to.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner.spec import RunConfig, StudySpec

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# Study user attrs
SPEC_ATTR = "spec"  # the spec the study runs (StudySpec.to_dict())
INPUT_ATTR = "input"  # study and trial: image shape, class names, preprocessing, data fingerprint (+ dataset)
DATA_DIR_ATTR = "data_dir"  # study: the --data-dir it was started with (absolute), for resumes, workers and exports
# Trial user attrs
CONFIG_ATTR = "config"  # the run config the trial trains (RunConfig.to_dict())
SEED_ATTR = "seed"  # its training seed: Optuna's retry callback copies it to the retry
THREADS_ATTR = "threads"  # torch CPU threads it trained with: `tune train` replays them
TEST_ATTR = "test_accuracy"  # test accuracy of the trial's final model
PER_CLASS_ATTR = "val_per_class"  # of its final model on validation: {class: {"images": n, "accuracy": recall}}
SECONDS_ATTR = "train_seconds"  # seconds `fit` took
REASON = "reason"  # why it was pruned for divergence or failed (out of memory, interrupted)
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"  # the REASON of a trial stopped by the user; resumes redo it
WEIGHTS_ERROR = "weights_error"  # why its weights could not be kept
WEIGHTS_FILE = "model.safetensors"  # the file name of kept weights in the artifact store (and of run folders)
WORKER_ATTR = "worker"  # "host:pid" of the process that runs it
GPU_ATTR = "gpu"  # the GPU it ran on, when its worker was pinned to one
RUN_ATTR = "run"  # the invocation that ran it: {"id": ..., "trials": its --trials}, for `tune status`
RESUMED_ATTR = "resumed_after_epoch"  # a retry: the epoch of its original's checkpoint it went on from (0: none)
WARM_FROM_ATTR = "warm_start_from"  # a trial queued or copied by --warm-start: {"study": ..., "trial": N}, and
# "prior": true for one copied as it was (not run by this study)
# Study user attrs (long studies)
STOPPED_ATTR = "stopped_when_flat"  # why --stop-when-flat ended a search: {"reason": ..., "trials": N, "at": ...}
WARM_START_ATTR = "warm_start"  # the study it was warm-started from: {"study", "storage", "queued", "added"}
# Deployment constraints (tuner.search.constraints)
DEPLOY_ATTR = "deployment"  # trial: its model measured before training (tuner.ship.latency.Measurement) and the
# constraint values {name: (measured - limit) / limit, > 0 infeasible}; also as Optuna constraints
LATENCY_CACHE = "tune:latency:"  # study: + an architecture key: its Measurement, shared by every worker
# Trial system attrs
CHECKPOINT_ATTR = "tune:checkpoint"  # the artifact ids of its checkpoint; a retry inherits them (tuner.search)
RETRY_OF = "failed_trial"  # Optuna's: the number of the trial a retry retries (the first of the line)
RETRY_HISTORY = "retry_history"  # Optuna's: the numbers of the trials a retry follows, oldest first
REQUEUED_FROM = "tune:requeued_from"  # the trial Ctrl-C stopped that this one goes on with (not in the
# retry history, which Optuna's retry limit counts: an interrupt is not a crash)

EXPORTS_HEADING = "## Exports"


def stored_spec(study: optuna.Study) -> StudySpec | None:
    """The spec a study runs, if tune created it."""
    return spec_in(study.user_attrs)


def spec_in(user_attrs: dict[str, Any]) -> StudySpec | None:
    """The spec recorded in a study's user attrs, if tune created the study."""
    raw = user_attrs.get(SPEC_ATTR)
    return StudySpec.from_dict(raw) if raw is not None else None


def recorded_data_dir(study: optuna.Study) -> str | None:
    """The data directory the study was started with, if it was given one and it is a folder on this machine."""
    raw = study.user_attrs.get(DATA_DIR_ATTR)
    return raw if isinstance(raw, str) and Path(raw).is_dir() else None


def record_data_dir(study: optuna.Study, data_dir: str | Path) -> str:
    """Remember `data_dir` (made absolute) as where the study's data is; returns what was recorded."""
    path = str(Path(data_dir).expanduser().resolve())
    if study.user_attrs.get(DATA_DIR_ATTR) != path:
        study.set_user_attr(DATA_DIR_ATTR, path)
    return path


def is_prior(trial: FrozenTrial) -> bool:
    """Whether `trial` was copied from another study by --warm-start, as prior knowledge, rather than run here."""
    origin = trial.user_attrs.get(WARM_FROM_ATTR)
    return isinstance(origin, dict) and origin.get("prior") is True


def stored_config(trial: FrozenTrial) -> dict[str, Any] | None:
    """The run config a trial recorded, as plain data (None for trials not run by tune)."""
    raw = trial.user_attrs.get(CONFIG_ATTR)
    return raw if isinstance(raw, dict) else None


def per_class(confusion: list[list[int]], classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{class: {"images": its images, "accuracy": the share of them predicted right, None without images}} of a
    confusion matrix (rows: true class, columns: predicted): a PER_CLASS_ATTR, and metrics.json's per-class scores."""
    rows = zip(classes, confusion, strict=True)
    return {name: {"images": sum(row), "accuracy": row[i] / sum(row) if sum(row) else None}
            for i, (name, row) in enumerate(rows)}


def record_trial_start(trial: optuna.Trial, config: RunConfig, seed: int, threads: int,
                       input_info: dict[str, Any]) -> None:
    """What a trial records before it trains: its seed, run config, CPU threads and the data it trains on."""
    trial.set_user_attr(SEED_ATTR, seed)
    trial.set_user_attr(CONFIG_ATTR, config.to_dict())
    trial.set_user_attr(THREADS_ATTR, threads)  # CPU results depend on it
    trial.set_user_attr(INPUT_ATTR, input_info)


def run_tag(run: str, trials: int | None) -> dict[str, Any]:
    """The RUN_ATTR of the trials of one invocation."""
    return {"id": run, "trials": trials}


def run_of(trial: FrozenTrial) -> str | None:
    """The id of the invocation that ran `trial`, if tune ran it."""
    tag = trial.user_attrs.get(RUN_ATTR)
    return tag.get("id") if isinstance(tag, dict) else None


def run_budget(trial: FrozenTrial) -> int | None:
    """The --trials of the invocation that ran `trial`."""
    tag = trial.user_attrs.get(RUN_ATTR)
    return tag.get("trials") if isinstance(tag, dict) else None


def trial_note(trial: FrozenTrial) -> str | None:
    """Why a trial ended as it did, or why its weights were not kept, if it says."""
    return trial.user_attrs.get(REASON) or trial.user_attrs.get(WEIGHTS_ERROR)


# --- the study's note -----------------------------------------------------------------------------------------

def _spec_yaml(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None).rstrip()


def _now() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def spec_note(spec: StudySpec) -> str:
    """Markdown for the note of a study created from `spec`."""
    return f"## Search spec\n\nCreated by `tune start` with this spec:\n\n```yaml\n{_spec_yaml(spec)}\n```\n"


def export_entry(path: Path, trial_number: int) -> str:
    """One Markdown list item: which trial went where, and the command that trains it."""
    path = Path(path).resolve()
    return (f"- {_now()}: trial {trial_number} exported to `{path}`; train it with "
            f"`tune train {shlex.quote(str(path))}`\n")


def record_spec(study: optuna.Study, spec: StudySpec) -> None:
    """Store `spec` as the study's spec and write it into the study's note (replacing the note); called once,
    when the study is created."""
    from optuna_dashboard import save_note

    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    save_note(study, spec_note(spec))


def record_spec_change(study: optuna.Study, spec: StudySpec) -> None:
    """Store the spec a resumed study now runs with, and add it to the note, keeping what is there."""
    from optuna_dashboard import get_note, save_note

    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    addition = (f"## Spec changed {_now()}\n\nResumed by `tune start` with this spec:\n\n"
                f"```yaml\n{_spec_yaml(spec)}\n```\n")
    note = get_note(study).rstrip("\n")
    save_note(study, f"{note}\n\n{addition}" if note else addition)


def record_export(study: optuna.Study, path: Path, trial_number: int) -> None:
    """Add "trial N exported to PATH" and its `tune train` command to the study's note, keeping what is there."""
    from optuna_dashboard import get_note, save_note

    note = get_note(study).rstrip("\n")
    if EXPORTS_HEADING not in note:
        note = f"{note}\n\n{EXPORTS_HEADING}\n" if note else f"{EXPORTS_HEADING}\n"
    save_note(study, f"{note}\n{export_entry(path, trial_number)}")

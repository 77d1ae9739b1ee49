"""Export files: one trial's run config, replayed from the trial, as commented YAML that people and code can read.

An export file has three sections: `config` (the RunConfig fields: everything `tune train` needs to rerun the trial),
`input` (what the model takes and gives: image shape, class names, preprocessing, and the fingerprint of a folder's
files, from the trial's user attr `input`; `tune train` compares the fingerprint with the data it loads) and
`provenance` (where the config came from: study, trial, its results, the search, storage, versions, date). Only
`config` is required.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tuner import record
from tuner.errors import SpecError, TuneError, one_line
from tuner.fileio import file_safe, read_mapping, write_text
from tuner.record import CONFIG_ATTR, INPUT_ATTR, TEST_ATTR, THREADS_ATTR
from tuner.spec import RunConfig
from tuner.spec.refs import BENCHMARKS
from tuner.spec.run import field_notes
from tuner.storage import public_url

SECTIONS = ("config", "input", "provenance")
# The config's fields in groups a reader scans top to bottom; fields of RunConfig not named here go under "other".
FIELD_GROUPS = {
    "data": ("dataset", "image_size", "validation", "split_seed"),
    "model": ("model", "model_args", "pretrained", "model_dir", "dropout"),
    "augmentation": ("flip", "translate", "label_smoothing"),
    "optimizer": ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size"),
    "schedule": ("scheduler", "gamma", "step_size", "epochs"),
    "run": ("seed", "metric"),
}
class ExportError(TuneError):
    pass


@dataclass(frozen=True)
class Export:
    """An export file as read back: the run config and whatever provenance it carries."""

    config: RunConfig
    provenance: dict[str, Any]
    input: dict[str, Any] = dataclasses.field(default_factory=dict)  # shape, classes, preprocess, fingerprint


def trial_config(study_name: str, trial) -> RunConfig:
    """The config the trial trained, as it recorded it (user attr `config`): a replay, not a re-derivation."""
    raw = trial.user_attrs.get(CONFIG_ATTR)
    if raw is None:
        raise ExportError(f"trial {trial.number} of study {study_name!r} has no stored run config (user attr "
                          "`config`): only trials run by `tune start` can be exported")
    try:
        return RunConfig.from_dict(raw)
    except (SpecError, TypeError) as e:
        raise ExportError(f"trial {trial.number} of study {study_name!r} stores an invalid config: {e}") from None


def input_section(trial, config: RunConfig) -> dict[str, Any]:
    """What the trial's model takes and gives, as the trial recorded it (user attr `input`); for older trials the
    shape and class count of a torchvision dataset, else nothing."""
    recorded = trial.user_attrs.get(INPUT_ATTR)
    if isinstance(recorded, dict) and "shape" in recorded:
        return input_of(recorded)
    if config.dataset in BENCHMARKS:
        benchmark = BENCHMARKS[config.dataset]
        return {"shape": list(benchmark.shape), "num_classes": benchmark.num_classes}
    return {}


def input_of(input_info: dict[str, Any]) -> dict[str, Any]:
    """An `input` section from a `Splits.input_info()` record: what the trial stored, or the data loaded now."""
    classes = list(input_info.get("classes") or [])
    out = {"shape": list(input_info["shape"]), "num_classes": len(classes), "classes": classes,
           "preprocess": input_info.get("preprocess") or {}}
    if input_info.get("fingerprint"):
        out["fingerprint"] = input_info["fingerprint"]
    return out


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import optuna
    import torch

    return {"tune": version("tune"), "optuna": str(optuna.__version__), "torch": str(torch.__version__)}


def search_budget(study) -> dict[str, int]:
    """What the search spent when the trial was exported: trials by state and the epochs trained in all."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    return {"trials": len(trials), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"), "epochs": sum(len(t.intermediate_values) for t in trials)}


def provenance(study, trial, storage_url: str) -> dict[str, Any]:
    """Where the config came from; `threads` (the trial's CPU threads, if it recorded them) lets a CPU replay match."""
    out = {
        "study": study.study_name,
        "trial": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "test_accuracy": trial.user_attrs.get(TEST_ATTR),
        "search": search_budget(study),
        "storage": public_url(storage_url),
        "versions": versions(),
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if THREADS_ATTR in trial.user_attrs:
        out["threads"] = trial.user_attrs[THREADS_ATTR]
    return out


def _line(key: str, value: Any, indent: str = "") -> str:
    """`key: value` on one line, mappings and lists in flow style."""
    if isinstance(value, dict | list):
        return f"{indent}{key}: {yaml.safe_dump(value, default_flow_style=True, width=1000).strip()}"
    return indent + yaml.safe_dump({key: value}, default_flow_style=False, width=1000).rstrip("\n")


def _config_lines(config: RunConfig) -> list[str]:
    values = config.to_dict()
    named = {name for group in FIELD_GROUPS.values() for name in group}
    groups = {**FIELD_GROUPS, "other": tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in named)}
    notes = field_notes()
    lines = ["config:"]
    for title, names in groups.items():
        if not names:
            continue
        lines.append(f"  # {title}")
        for name in names:
            text = _line(name, values[name], "  ")
            note = notes.get(name)
            lines.append(f"{text:<33} # {note}" if note else text)  # a space before '#' keeps it a comment
    return lines


def _input_lines(input_info: dict[str, Any]) -> list[str]:
    if not input_info:
        return []
    text = yaml.safe_dump({"input": input_info}, default_flow_style=None, sort_keys=False, width=120)
    return ["# what the model takes: uint8 images of this shape (C, H, W), prepared from files by `preprocess`;",
            "# what it gives: num_classes logits, in the order of `classes`",
            text.rstrip("\n"), ""]


def render(config: RunConfig, provenance: dict[str, Any], header: list[str],
           input_info: dict[str, Any] | None = None) -> str:
    """The export file's text: a comment header, then config (grouped, commented), input, provenance."""
    return "\n".join([
        *(f"# {line}" for line in header), "",
        *_config_lines(config), "",
        *_input_lines(input_info or {}),
        yaml.safe_dump({"provenance": provenance}, sort_keys=False).rstrip("\n"),
    ]) + "\n"


def export_header(study_name: str, trial, path: str) -> list[str]:
    test = trial.user_attrs.get(TEST_ATTR)
    results = f"value {trial.value:.6g}" if trial.value is not None else f"no value ({trial.state.name})"
    if test is not None:
        results += f", test accuracy {test:.6g}"
    return [f"Run config of trial {trial.number} of study {study_name!r} ({results}), exported by tune.",
            f"Train it:  tune train {path}",
            "Other code: `config` holds the run (the fields of tuner.spec.RunConfig); `provenance` where it came from."]


def default_path(study_name: str, trial_number: int) -> Path:
    """NAME-trialN.yaml in the current directory."""
    return Path(f"{file_safe(study_name)}-trial{trial_number}.yaml")


def export_text(study, trial, storage_url: str, path: str) -> str:
    config = trial_config(study.study_name, trial)
    return render(config, provenance(study, trial, storage_url), export_header(study.study_name, trial, path),
                  input_section(trial, config))


def export_trial(study, trial, storage_url: str, path: Path, with_weights: bool = False) -> Path | None:
    """Write `trial`'s export file to `path`, its kept weights beside it when asked; returns the weights' path."""
    text = export_text(study, trial, storage_url, str(path))
    weights = copy_trial_weights(study, trial, path) if with_weights else None
    write_text(path, text)
    return weights


def read_export(path: str | Path) -> Export:
    """An export file read back and validated; any problem is one ExportError line naming the file."""
    path = Path(path)
    try:
        raw = read_mapping(path)
    except TuneError as e:
        raise ExportError(str(e)) from None
    if not isinstance(raw, dict) or "config" not in raw:
        raise ExportError(f"{path} has no `config` section: export a trial with `tune export STUDY -o {path}`")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ExportError(f"{path}: unknown section(s) {', '.join(unknown)}: an export file holds "
                          f"{', '.join(SECTIONS)}")
    provenance = raw.get("provenance") or {}
    input_info = raw.get("input") or {}
    for name, section in (("provenance", provenance), ("input", input_info)):
        if not isinstance(section, dict):
            raise ExportError(f"{path}: {name} must be a mapping, got {type(section).__name__}")
    try:
        return Export(RunConfig.from_dict(raw["config"]), provenance, input_info)
    except (SpecError, TypeError) as e:
        raise ExportError(f"{path}: config: {e}") from None


def copy_trial_weights(study, trial, config_path: Path) -> Path:
    """Copy the trial's kept weights beside the config file, as its stem + .safetensors."""
    from tuner.ship.artifacts import copy_weights

    dest = config_path.with_suffix(".safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        copied = copy_weights(study, trial, Path(tmp))
        if copied is None:
            raise ExportError(f"trial {trial.number} of study {study.study_name!r} has no kept weights (only the "
                              "best --keep-top trials keep theirs): export without --with-weights and run "
                              "`tune train` on the file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(copied, dest)
    return dest


def record_in_note(study, path: Path, trial_number: int) -> str | None:
    """List the export in the study's note (shown by optuna-dashboard); returns why not, if that failed."""
    try:
        record.record_export(study, path, trial_number)
    except Exception as e:  # the file is written: a note that cannot be saved must not fail the export
        return one_line(e)
    return None

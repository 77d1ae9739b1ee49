"""Export files: one trial's run config, replayed from the trial, as commented YAML that people and code can read.

An export file has three sections: `config` (the RunConfig fields: everything `tune train` needs to rerun the trial),
`input` (what the model takes and gives: image shape, class names, preprocessing, and the fingerprint of a folder's
files, from the trial's user attr `input`; `tune train` compares the fingerprint with the data it loads) and
`provenance` (where the config came from: study, trial, its results, the search, storage, versions, date). Only
`config` is required.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner import record
from tuner.errors import SpecError, TuneError, one_line
from tuner.fileio import file_safe, read_mapping, write_text
from tuner.record import CONFIG_ATTR, DATA_DIR_ATTR, INPUT_ATTR, TEST_ATTR, THREADS_ATTR
from tuner.spec import RunConfig
from tuner.spec.refs import BENCHMARKS
from tuner.spec.run import field_notes
from tuner.storage import first_value, maximizes, public_url

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

SECTIONS = ("config", "input", "ensemble", "provenance")
ENSEMBLE_TOP = 5  # distinct configs an export lists by default (the best and its runners-up) for --ensemble
# The config's fields in groups a reader scans top to bottom; fields of RunConfig not named here go under "other".
FIELD_GROUPS = {
    "data": ("dataset", "image_size", "validation", "split_seed"),
    "model": ("model", "model_args", "pretrained", "backbone_lr", "model_dir", "dropout"),
    "augmentation": ("flip", "translate", "crop", "jitter", "trivial_augment", "mixup", "cutmix", "label_smoothing",
                     "class_weights"),
    "optimizer": ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size"),
    "schedule": ("scheduler", "gamma", "step_size", "warmup", "epochs"),
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
    # the runners-up, best first: {trial, value, test_accuracy, config: the fields that differ from `config`}
    ensemble: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def members(self) -> list[tuple[RunConfig, dict[str, Any]]]:
        """(run config, where it came from: trial, value, test accuracy) of `config` and each runner-up."""
        first = {key: self.provenance.get(key) for key in ("trial", "value", "test_accuracy")}
        base = self.config.to_dict()
        others = [(RunConfig.from_dict({**base, **entry["config"]}), {k: v for k, v in entry.items() if k != "config"})
                  for entry in self.ensemble]
        return [(self.config, first), *others]

    @property
    def production_epochs(self) -> int | None:
        """The epochs `tune train --full-train` trains, when the study set them (its spec's production_epochs)."""
        epochs = self.provenance.get("production_epochs")
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None

    @property
    def data_dir(self) -> str | None:
        """The data directory of the study the trial came from, if it recorded one that is a folder here."""
        recorded = self.provenance.get("data_dir")
        return recorded if isinstance(recorded, str) and Path(recorded).is_dir() else None


def trial_config(study_name: str, trial: FrozenTrial) -> RunConfig:
    """The config the trial trained, as it recorded it (user attr `config`): a replay, not a re-derivation."""
    raw = trial.user_attrs.get(CONFIG_ATTR)
    if raw is None:
        raise ExportError(f"trial {trial.number} of study {study_name!r} has no stored run config (user attr "
                          "`config`): only trials run by `tune start` can be exported")
    try:
        return RunConfig.from_dict(raw)
    except (SpecError, TypeError) as e:
        raise ExportError(f"trial {trial.number} of study {study_name!r} stores an invalid config: {e}") from None


def input_section(trial: FrozenTrial, config: RunConfig) -> dict[str, Any]:
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
    from tuner.datasets.images import with_steps  # torch and Pillow load only when an input is written

    classes = list(input_info.get("classes") or [])
    out = {"shape": list(input_info["shape"]), "num_classes": len(classes), "classes": classes,
           "preprocess": with_steps(input_info.get("preprocess") or {})}
    if input_info.get("fingerprint"):
        out["fingerprint"] = input_info["fingerprint"]
    return out


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import optuna
    import torch

    return {"tune": version("tune"), "optuna": str(optuna.__version__), "torch": str(torch.__version__)}


def search_budget(study: optuna.Study) -> dict[str, int]:
    """What the search spent when the trial was exported: trials by state and the epochs trained in all."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    return {"trials": len(trials), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"), "epochs": sum(len(t.intermediate_values) for t in trials)}


def provenance(study: optuna.Study, trial: FrozenTrial, storage_url: str) -> dict[str, Any]:
    """Where the config came from; `threads` (the trial's CPU threads, if it recorded them) lets a CPU replay match."""
    out = {
        "study": study.study_name,
        "trial": trial.number,
        "state": trial.state.name,
        "value": first_value(trial),
        "test_accuracy": trial.user_attrs.get(TEST_ATTR),
        "search": search_budget(study),
        "storage": public_url(storage_url),
        "versions": versions(),
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if trial.values and len(trial.values) > 1:  # a multi-objective study: each objective's value, by name
        names = study.metric_names or [f"objective {i}" for i in range(len(trial.values))]
        out["objectives"] = dict(zip(names, trial.values, strict=False))
    if THREADS_ATTR in trial.user_attrs:
        out["threads"] = trial.user_attrs[THREADS_ATTR]
    spec = record.stored_spec(study)
    if spec is not None and spec.production_epochs is not None:  # what `tune train --full-train` trains
        out["production_epochs"] = spec.production_epochs
    if study.user_attrs.get(DATA_DIR_ATTR):  # where the data was: `tune train` reads it there (offline too)
        out["data_dir"] = study.user_attrs[DATA_DIR_ATTR]
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


def _ensemble_lines(ensemble: list[dict[str, Any]]) -> list[str]:
    if not ensemble:
        return []
    text = yaml.safe_dump({"ensemble": ensemble}, default_flow_style=None, sort_keys=False, width=1000)
    return ["# the next best trials with other configs, best first, for `tune train FILE --ensemble K`; each config",
            "# lists the fields where it differs from `config` above",
            text.rstrip("\n"), ""]


def render(config: RunConfig, provenance: dict[str, Any], header: list[str],
           input_info: dict[str, Any] | None = None, ensemble: list[dict[str, Any]] | None = None) -> str:
    """The export file's text: a comment header, then config (grouped, commented), input, ensemble, provenance."""
    return "\n".join([
        *(f"# {line}" for line in header), "",
        *_config_lines(config), "",
        *_input_lines(input_info or {}),
        *_ensemble_lines(ensemble or []),
        yaml.safe_dump({"provenance": provenance}, sort_keys=False).rstrip("\n"),
    ]) + "\n"


def export_header(study_name: str, trial: FrozenTrial, path: str) -> list[str]:
    test = trial.user_attrs.get(TEST_ATTR)
    value = first_value(trial)
    results = f"value {value:.6g}" if value is not None else f"no value ({trial.state.name})"
    if test is not None:
        results += f", test accuracy {test:.6g}"
    return [f"Run config of trial {trial.number} of study {study_name!r} ({results}), exported by tune.",
            f"Train it:  tune train {path}",
            "Other code: `config` holds the run (the fields of tuner.spec.RunConfig); `provenance` where it came from."]


def default_path(study_name: str, trial_number: int) -> Path:
    """NAME-trialN.yaml in the current directory."""
    return Path(f"{file_safe(study_name)}-trial{trial_number}.yaml")


def runners_up(study: optuna.Study, trial: FrozenTrial, count: int) -> list[dict[str, Any]]:
    """The `count` best complete trials after `trial` whose configs differ from its and from each other's (the
    seed aside), best first, as export file entries: trial, value, test accuracy, and the fields of the config
    that differ from `trial`'s."""
    from optuna.trial import TrialState

    base = trial_config(study.study_name, trial).to_dict()
    seen = [{k: v for k, v in base.items() if k != "seed"}]
    sign = -1 if maximizes(study) else 1
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: (sign * (first_value(t) or 0.0) if t.values else math.inf, t.number))
    found: list[dict[str, Any]] = []
    for other in ranked:
        if len(found) >= count:
            break
        if other.number == trial.number or CONFIG_ATTR not in other.user_attrs or not other.values:
            continue
        try:
            config = RunConfig.from_dict(other.user_attrs[CONFIG_ATTR]).to_dict()
        except (SpecError, TypeError):
            continue  # not a config this tune trains: never a member
        key = {k: v for k, v in config.items() if k != "seed"}
        if key in seen:
            continue
        seen.append(key)
        found.append({"trial": other.number, "value": first_value(other),
                      "test_accuracy": other.user_attrs.get(TEST_ATTR),
                      "config": {k: v for k, v in config.items() if base.get(k) != v}})
    return found


def export_text(study: optuna.Study, trial: FrozenTrial, storage_url: str, path: str, top: int = ENSEMBLE_TOP,
                deployment: dict[str, Any] | None = None) -> str:
    """The export file of `trial`, listing the next `top` - 1 distinct configs for ensembles; `deployment` (the
    model measured against the study's constraints, tuner.ship.deploy.proof) goes into its provenance."""
    config = trial_config(study.study_name, trial)
    origin = provenance(study, trial, storage_url)
    if deployment is not None:
        origin["deployment"] = deployment
    return render(config, origin, export_header(study.study_name, trial, path), input_section(trial, config),
                  runners_up(study, trial, top - 1))


def export_trial(study: optuna.Study, trial: FrozenTrial, storage_url: str, path: Path,
                 with_weights: bool = False, top: int = ENSEMBLE_TOP,
                 deployment: dict[str, Any] | None = None) -> Path | None:
    """Write `trial`'s export file to `path`, its kept weights beside it when asked; returns the weights' path."""
    text = export_text(study, trial, storage_url, str(path), top, deployment)
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
        export = Export(RunConfig.from_dict(raw["config"]), provenance, input_info)
    except (SpecError, TypeError) as e:
        raise ExportError(f"{path}: config: {e}") from None
    ensemble = raw.get("ensemble") or []
    if not isinstance(ensemble, list) or not all(isinstance(e, dict) and isinstance(e.get("config"), dict)
                                                 for e in ensemble):
        raise ExportError(f"{path}: ensemble must be a list of {{trial, value, config: {{fields}}}}, as "
                          "`tune export` writes it")
    export = dataclasses.replace(export, ensemble=ensemble)
    for number, entry in enumerate(ensemble, start=1):
        try:
            RunConfig.from_dict({**export.config.to_dict(), **entry["config"]})
        except (SpecError, TypeError) as e:
            raise ExportError(f"{path}: ensemble member {number}: {e}") from None
    return export


def copy_trial_weights(study: optuna.Study, trial: FrozenTrial, config_path: Path) -> Path:
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


def record_in_note(study: optuna.Study, path: Path, trial_number: int) -> str | None:
    """List the export in the study's note (shown by optuna-dashboard); returns why not, if that failed."""
    try:
        record.record_export(study, path, trial_number)
    except Exception as e:  # the file is written: a note that cannot be saved must not fail the export
        return one_line(e)
    return None

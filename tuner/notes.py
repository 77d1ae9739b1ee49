"""The study's note, shown by optuna-dashboard: the search spec, then every export, so the browser shows what a study
searched and which of its trials went to production."""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path

import optuna
import yaml

from tuner.spec import StudySpec

EXPORTS_HEADING = "## Exports"


def spec_note(spec: StudySpec) -> str:
    """Markdown for the note of a study created from `spec`."""
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None).rstrip()
    return f"## Search spec\n\nCreated by `tune start` with this spec:\n\n```yaml\n{text}\n```\n"


def export_entry(path: Path, trial_number: int) -> str:
    """One Markdown list item: which trial went where, and the command that trains it."""
    path = Path(path).resolve()
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"- {when}: trial {trial_number} exported to `{path}`; train it with `tune train {shlex.quote(str(path))}`\n"


def record_spec(study: optuna.Study, spec: StudySpec) -> None:
    """Write `spec` into the study's note (replacing it); called once, when the study is created."""
    from optuna_dashboard import save_note

    save_note(study, spec_note(spec))


def record_export(study: optuna.Study, path: Path, trial_number: int) -> None:
    """Add "trial N exported to PATH" and its `tune train` command to the study's note, keeping what is there."""
    from optuna_dashboard import get_note, save_note

    note = get_note(study).rstrip("\n")
    if EXPORTS_HEADING not in note:
        note = f"{note}\n\n{EXPORTS_HEADING}\n" if note else f"{EXPORTS_HEADING}\n"
    save_note(study, f"{note}\n{export_entry(path, trial_number)}")


def record_spec_change(study: optuna.Study, spec: StudySpec) -> None:
    """Add the spec a resumed study now runs with to its note, keeping what is there (earlier spec, exports)."""
    from optuna_dashboard import get_note, save_note

    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None).rstrip()
    addition = f"## Spec changed {when}\n\nResumed by `tune start` with this spec:\n\n```yaml\n{text}\n```\n"
    note = get_note(study).rstrip("\n")
    save_note(study, f"{note}\n\n{addition}" if note else addition)

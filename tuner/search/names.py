"""A `--study NAME` that names no study in the storage: said before a new study starts under it, with the closest
name there, since a typo would otherwise quietly start a new study (or, offline, fail on its data)."""

from __future__ import annotations

import difflib

from optuna.storages import BaseStorage

from tuner.storage import public_url

LISTED = 5  # study names the line lists at most


def unknown_study_line(name: str, storage: BaseStorage, storage_url: str) -> str | None:
    """"no study named 'weathr' in URL (studies: weather, ...): starting a new one; did you mean --study
    weather?", or None when the study exists or the storage holds none."""
    names = sorted(study.study_name for study in storage.get_all_studies())
    if not names or name in names:
        return None
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    listed = close + [n for n in names if n not in close]
    shown = ", ".join(listed[:LISTED]) + (", ..." if len(listed) > LISTED else "")
    hint = f"; did you mean --study {close[0]}?" if close else ""
    return f"no study named {name!r} in {public_url(storage_url)} (studies: {shown}): starting a new one{hint}"

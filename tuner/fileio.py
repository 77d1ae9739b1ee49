"""Reading YAML, TOML and JSON files into plain data, and writing files whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TuneError, one_line


class _Loader(yaml.SafeLoader):
    """YAML with 1.2's floats: PyYAML reads `1e-3` and `1.0e6` as strings, which no user means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$"
               r"|^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def read_mapping(path: Path) -> Any:
    """Parse a YAML, JSON or TOML file into plain data, with one-line errors for missing or broken files."""
    if not path.is_file():
        raise TuneError(f"no such file: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        reason = one_line(e, None)
        raise TuneError(f"cannot parse {path}: {reason}") from None


def write_text(path: Path, text: str) -> None:
    """Write whole or not at all: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


@contextlib.contextmanager
def no_empty_folders_on_error(path: Path) -> Iterator[None]:
    """On an error in the block, remove the folders it created on the way to `path` that it left empty (a failed
    download leaves no empty data folders behind); what it put in them stays."""
    first_new = path  # the top folder the block may create
    while not first_new.parent.exists():
        first_new = first_new.parent
    existed = first_new.exists()
    try:
        yield
    except BaseException:
        if not existed and first_new.is_dir():
            for folder, _, _ in sorted(os.walk(first_new), key=lambda entry: -len(entry[0])):
                with contextlib.suppress(OSError):  # not empty: something was written there
                    os.rmdir(folder)
        raise


def as_new_files_are(path: Path) -> None:
    """Give `path` the permissions a file written here normally gets (0666 less the umask): some writers
    (safetensors) create their files readable by their owner alone."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def file_safe(name: str) -> str:
    """A name fit for a file name: runs of other characters than letters, digits, . _ - become _."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"

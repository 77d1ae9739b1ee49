"""Reading YAML, TOML and JSON files into plain data, and writing files whole or not at all."""

from __future__ import annotations

import json
import re
import tomllib
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


def file_safe(name: str) -> str:
    """A name fit for a file name: runs of other characters than letters, digits, . _ - become _."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"

"""The help a new user reads first fits an 80-column terminal: no prose line runs past it unwrapped."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tuner.cli import main


@pytest.mark.parametrize("command", [[], ["data"], ["delete"]])
def test_help_fits_80_columns(command):
    text = CliRunner().invoke(main, [*command, "--help"], prog_name="tune", terminal_width=80).output
    long = [line for line in text.splitlines() if len(line) > 80]
    assert long == [], long
    if command == ["data"]:
        assert "  Layouts: DIR/<class>/<image>, or DIR/train/<class>/... with an optional\n" in text

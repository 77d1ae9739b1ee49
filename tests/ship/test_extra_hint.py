"""Without the onnx extra, `tune convert --to onnx` says how to install it the way the README does: from the clone,
`pip install -e ".[onnx]"` (there is no `tune` package on PyPI to install `tune[onnx]` from)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tuner.errors import TuneError
from tuner.ship.onnxfile import onnx_graph

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
HINT = 'pip install -e ".[onnx]"'


def test_the_missing_extra_is_named_as_the_readme_installs_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails, as without the extra
    with pytest.raises(TuneError) as error:
        onnx_graph(torch.nn.Flatten(), tmp_path / "model.onnx", torch.zeros(1, 1, 2, 2), "m")
    assert str(error.value) == ("--to onnx needs the onnx extra (onnx, onnxscript, onnxruntime): "
                                f"{HINT} in tune's folder")
    assert f"ONNX needs the extra: `{HINT}`" in README

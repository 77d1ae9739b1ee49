"""One network as one ONNX file: the exporter tune's conversions (tuner.ship.convert) and latency measurements
(tuner.ship.latency) share, with the input and output names a serving stack sees."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from tuner.errors import TuneError, one_line

INPUT_NAME, OUTPUT_NAME = "images", "logits"


def quiet() -> contextlib.ExitStack[bool | None]:
    """The exporters' warnings and progress lines are for torch developers, not for tune's users."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def onnx_graph(network: torch.nn.Module, path: Path, example: torch.Tensor, name: str) -> None:
    """`network` as one ONNX file with a dynamic batch dimension, through torch.export (the TorchScript-based
    exporter if that fails); tuner.ship.latency times the same file."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise TuneError("--to onnx needs the onnx extra (onnx, onnxscript, onnxruntime): pip install -e \".[onnx]\" "
                        "in tune's folder") from None
    names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    with quiet():
        try:
            batch = torch.export.Dim("batch")
            torch.onnx.export(network, (example,), str(path), dynamo=True, verbose=False, external_data=False,
                              dynamic_shapes=({0: batch},), **names)  # one file: a served model travels alone
        except Exception:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
            try:
                torch.onnx.export(network, (example,), str(path), dynamo=False, dynamic_axes=axes, **names)
            except Exception as e:
                reason = one_line(e)
                raise TuneError(f"cannot convert {name} to ONNX ({reason}): try --to torchscript") from None

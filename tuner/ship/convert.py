"""`tune convert`: a saved model as one file that a serving stack runs without tune or its training code.

The converted model takes uint8 images (N, C, H, W) at the trained size, any N, and outputs logits; the
normalization is inside it (the model's first layer). Files still have to be decoded and resized as in training
(`tuner.datasets.images.decode_for`), which the metadata describes: ONNX `metadata_props` and TorchScript extra
files `classes` (JSON list), `input_shape` and `preprocess`, whose `steps` list every step with its parameters
(`tuner.datasets.images.preprocess_steps`; docs/onnx_client.py follows them with ONNX Runtime and Pillow alone).

Nothing is reported until the written file has been loaded back (ONNX Runtime; `torch.jit.load`) and gives the
same logits as the torch model, within TOLERANCE, on a batch of real images and on a batch of one.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from tuner.errors import TuneError, one_line
from tuner.ship.checkpoint import Classifier, load_model, weights_path
from tuner.ship.onnxfile import INPUT_NAME, OUTPUT_NAME, onnx_graph, quiet

if TYPE_CHECKING:
    from tuner.ship.latency import Measurement

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4  # largest absolute difference of a logit between the file and torch
CHECK_IMAGES = 32


@dataclass(frozen=True)
class Converted:
    path: Path
    to: str
    max_difference: float  # largest absolute logit difference found by the check
    checked: int  # images in the check batch
    inputs: str  # where those images came from
    measured: Measurement | None = None  # the file's latency (tuner.ship.latency), see `measure_file`


def default_output(source: str | Path, to: str) -> Path:
    """model.onnx (or .pt) in a run folder; beside a weights file, with its stem."""
    weights = weights_path(source)
    return weights.with_suffix(FORMATS[to])


def metadata(model: Classifier) -> dict[str, str]:
    info = model.info
    return {"classes": json.dumps(list(info.classes)), "input_shape": json.dumps(list(info.shape)),
            "preprocess": json.dumps(info.preprocess)}


# --- the images to check on

def check_batch(model: Classifier, images: list[str | Path] | None = None, data_dir: str | Path | None = None,
                count: int = CHECK_IMAGES) -> tuple[torch.Tensor, str]:
    """(up to `count` real images at the model's input, where they came from): the files given, else the images
    the model was trained on, else (with a note) random images."""
    from tuner.datasets import is_folder

    if images:
        return _decode_some([str(p) for p in images], model, count), "the images given"
    dataset = str(model.info.config.get("dataset", ""))
    try:
        if is_folder(dataset):
            return _decode_some([dataset], model, count), f"images of {dataset}"
        if _downloaded(dataset, data_dir):  # a check is no reason to download a dataset
            from tuner.datasets import load_source

            test = load_source(dataset, data_dir).test
            if test is not None and tuple(test.shape) == tuple(model.input_shape):
                return test.take(slice(0, count))[0].clone(), f"test images of {dataset}"
    except TuneError:
        pass
    generator = torch.Generator().manual_seed(0)
    random = torch.randint(0, 256, (count, *model.input_shape), dtype=torch.uint8, generator=generator)
    return random, f"random images ({dataset or 'the training data'} was not found: pass --data-dir or --images)"


def _downloaded(dataset: str, data_dir: str | Path | None) -> bool:
    """Whether a named dataset's images are here without a download: a bundled sample's always are."""
    from tuner.datasets import default_data_dir
    from tuner.spec.refs import BENCHMARKS, is_sample

    root = Path(data_dir or default_data_dir()).expanduser()
    return is_sample(dataset) or (root / BENCHMARKS[dataset].files).is_dir()


def _decode_some(inputs: list[str], model: Classifier, count: int) -> torch.Tensor:
    """Up to `count` readable images of `inputs`, spread over the files found (so over the classes too)."""
    from tuner.datasets.images import UnreadableImage
    from tuner.ship.inference import image_files

    files = [file for file, _ in image_files(inputs, model.classes)]
    if not files:
        raise TuneError(f"no image files in {', '.join(inputs)}")
    step = max(1, len(files) // count)
    picked = files[::step][:count]
    decoded = []
    for file in picked:
        with contextlib.suppress(UnreadableImage):
            decoded.append(model.info.prepare(file))
    if not decoded:
        raise TuneError(f"none of the {len(picked)} image files checked in {', '.join(inputs)} can be read")
    return torch.stack(decoded)


# --- writing

def write_onnx(model: Classifier, path: Path, example: torch.Tensor) -> None:
    """ONNX with a dynamic batch dimension and the model's metadata."""
    import onnx

    onnx_graph(model.network, path, example, str(model.info.config.get("model")))
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata(model))
    onnx.save(proto, str(path))


def write_torchscript(model: Classifier, path: Path, example: torch.Tensor) -> None:
    """TorchScript by tracing (the check catches a batch size baked into the trace)."""
    with quiet():
        try:
            traced = torch.jit.trace(model.network, example)
        except Exception as e:
            reason = one_line(e)
            raise TuneError(f"cannot trace {model.info.config.get('model')} to TorchScript ({reason}): try --to "
                            "onnx") from None
        torch.jit.save(traced, str(path), _extra_files=metadata(model))


# --- checking

def onnx_logits(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])


def torchscript_logits(path: Path, images: torch.Tensor) -> torch.Tensor:
    with quiet(), torch.inference_mode():
        return cast(torch.Tensor, torch.jit.load(str(path), map_location="cpu")(images).float())


def file_metadata(path: Path, to: str) -> dict[str, str]:
    """The metadata a converted file carries, read back as a serving stack would."""
    if to == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    extra = dict.fromkeys(("classes", "input_shape", "preprocess"), "")
    with quiet():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return {key: value.decode() if isinstance(value, bytes) else value for key, value in extra.items()}


def check(model: Classifier, path: Path, to: str, images: torch.Tensor) -> float:
    """The largest absolute logit difference between the file and torch, on `images` and on a batch of one;
    TuneError if it exceeds TOLERANCE or the metadata did not come along."""
    from tuner.ship.inference import logits

    run = onnx_logits if to == "onnx" else torchscript_logits
    worst = 0.0
    for batch in (images, images[:1]):
        expected = logits(model.network, batch, torch.device("cpu"))
        try:
            got = run(path, batch)
        except Exception as e:
            reason = one_line(e)
            raise TuneError(f"the converted file {path} fails on a batch of {len(batch)} ({reason})") from None
        if got.shape != expected.shape:
            raise TuneError(f"the converted file gives logits of shape {tuple(got.shape)} for a batch of "
                            f"{len(batch)}, torch {tuple(expected.shape)}")
        worst = max(worst, (got - expected).abs().max().item())
    if worst > TOLERANCE:
        raise TuneError(f"the converted file's logits differ from torch's by {worst:.2e} (more than {TOLERANCE}): "
                        f"not written; try --to {'torchscript' if to == 'onnx' else 'onnx'}")
    if file_metadata(path, to) != metadata(model):
        raise TuneError(f"the converted file {path} lost its metadata (classes, input_shape, preprocess)")
    return worst


def convert(source: str | Path, to: str, output: str | Path | None = None, *, data_dir: str | Path | None = None,
            images: list[str | Path] | None = None) -> Converted:
    """Convert the saved model at `source` (run folder or weights file) to `to` (onnx or torchscript), check the
    file on real images, and only then put it at `output` (default: beside the weights)."""
    if to not in FORMATS:
        raise TuneError(f"unknown format {to!r}: use {' or '.join(FORMATS)}")
    model = load_model(source)
    path = Path(output) if output is not None else default_output(source, to)
    batch, inputs = check_batch(model, images, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    example = batch[:2] if len(batch) >= 2 else batch.repeat(2, 1, 1, 1)
    try:
        (write_onnx if to == "onnx" else write_torchscript)(model, partial, example)
        worst = check(model, partial, to, batch)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
        partial.with_name(partial.name + ".data").unlink(missing_ok=True)  # an exporter's external weights
    return Converted(path, to, worst, len(batch), inputs, measure_file(model, path, to, weights_path(source).parent))


def measure_file(model: Classifier, path: Path, to: str, run_dir: Path) -> Measurement:
    """The converted file timed as served (ONNX Runtime, or torch.jit.load), at the batch and threads of the
    study's constraints when the run folder's metrics.json has them (else batch 1, one thread); recorded in that
    metrics.json under deployment.converted.FORMAT when there is one."""
    from tuner.fileio import write_text
    from tuner.ship.deploy import constraints_in
    from tuner.ship.latency import EXPORT_RUNS, measure
    from tuner.spec.constraints import Constraints

    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    limits = (constraints_in(metrics) if isinstance(metrics, dict) else None) or Constraints()
    network = model.network
    if to == "torchscript":
        with quiet():
            network = torch.jit.load(str(path), map_location="cpu")
    measured = measure(network, model.input_shape, batch=limits.latency_batch, threads=limits.latency_threads,
                       runtime="onnxruntime" if to == "onnx" else "torch", runs=EXPORT_RUNS, name=str(path),
                       onnx_file=path if to == "onnx" else None, with_size=False)
    record = {**measured.to_dict(), "file": str(path), "file_bytes": path.stat().st_size}
    if isinstance(metrics, dict):
        deployment = metrics.setdefault("deployment", {})
        deployment.setdefault("converted", {})[to] = record
        write_text(metrics_file, json.dumps(metrics, indent=2) + "\n")
    return measured

"""`tune convert`: ONNX and TorchScript files that give torch's logits on real images, with the model's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.ship.test_predict import CLASSES, write_image_folder
from tuner.cli import main
from tuner.datasets import load_splits
from tuner.datasets.images import decode_for
from tuner.models import build_model
from tuner.ship import checkpoint
from tuner.spec import RunConfig

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="tune")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("convert") / "shapes", {"train": 6, "test": 2})


def saved_run(folder: Path, out: Path, model: str) -> Path:
    """A run folder with an untrained `model` on the image folder (weights random, metadata real)."""
    config = RunConfig(dataset=str(folder), model=model, epochs=1)
    splits = load_splits(str(folder), "", 0.2, 0, "cpu")
    torch.manual_seed(0)
    network = build_model(config, splits.shape, splits.num_classes, splits.mean, splits.std)
    out.mkdir(parents=True)
    checkpoint.save(network.eval(), out / checkpoint.WEIGHTS_FILE, config.to_dict(), splits.input_info())
    return out


def real_batch(folder: Path, preprocess: dict) -> torch.Tensor:
    return torch.stack([decode_for(f, preprocess) for f in sorted(folder.rglob("*.png"))[:5]])


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize(("to", "model"), [("onnx", "bncnn"), ("torchscript", "cnn"), ("onnx", "torchvision:resnet18")])
def test_converted_file_gives_torchs_logits_with_its_metadata(images, tmp_path, to, model):
    run = saved_run(images, tmp_path / "run", model)
    result = invoke("convert", run, "--to", to)
    assert result.exit_code == 0, result.output
    path = run / ("model.onnx" if to == "onnx" else "model.pt")
    assert result.stdout == f"Wrote {path}\n"
    assert result.stderr.startswith(f"Checked with {'ONNX Runtime' if to == 'onnx' else 'torch.jit.load'} on 24 "
                                    f"images of {images}: largest logit difference ")
    assert not list(run.glob("*.partial*")) and not list(run.glob("*.data"))  # one file, nothing left behind
    path = path.rename(tmp_path / path.name)  # a served model travels alone

    model = checkpoint.load_model(run)
    batch = real_batch(images / "test", model.info.preprocess)
    with torch.no_grad():
        expected = model(batch)
    if to == "onnx":
        import onnx
        import onnxruntime

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (input_meta,) = session.get_inputs()
        assert input_meta.type == "tensor(uint8)" and input_meta.shape[1:] == [3, 20, 20]
        got = torch.from_numpy(session.run(None, {input_meta.name: batch.numpy()})[0])
    else:
        extra = {"classes": "", "input_shape": ""}
        scripted = torch.jit.load(str(path), _extra_files=extra)
        props = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}
        got = scripted(batch)
    assert json.loads(props["classes"]) == list(CLASSES) and json.loads(props["input_shape"]) == [3, 20, 20]
    assert got.shape == (5, 3)  # a batch size the export never saw
    assert (got - expected).abs().max().item() <= 1e-4


def test_a_file_that_fails_its_check_is_not_written(images, tmp_path, monkeypatch):
    import tuner.ship.convert

    run = saved_run(images, tmp_path / "run", "mlp")
    monkeypatch.setattr(tuner.ship.convert, "TOLERANCE", -1.0)  # no file can pass
    result = invoke("convert", run, "--to", "torchscript", "-o", tmp_path / "out" / "m.pt")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("Error: the converted file's logits differ from torch's by ")
    assert result.stderr.count("\n") == 1
    assert list((tmp_path / "out").iterdir()) == []


def test_random_images_when_the_training_data_is_gone(images, tmp_path):
    weights = tmp_path / "fm.safetensors"
    config = RunConfig(dataset="fashion-mnist", model="mlp")
    network = build_model(config, (1, 28, 28), 10, (0.5,), (0.25,))
    info = {"shape": [1, 28, 28], "classes": [str(i) for i in range(10)]}  # weights from before classes were kept
    checkpoint.save(network, weights, config.to_dict(), info)
    result = invoke("convert", weights, "--to", "onnx", "--data-dir", tmp_path / "no-data")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Wrote {tmp_path / 'fm.onnx'}\n"
    assert "on 32 random images (fashion-mnist was not found: pass --data-dir or --images)" in result.stderr


def test_bad_source_is_one_line(tmp_path):
    result = invoke("convert", tmp_path / "nope", "--to", "onnx")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: no such run folder or weights file: {tmp_path / 'nope'}")
    assert result.stderr.count("\n") == 1

"""The ONNX client in docs/ (ONNX Runtime, Pillow and NumPy, no tune) follows the `preprocess` steps a converted
model carries and gives `tune predict`'s probabilities, JPEGs decoded at a reduced scale included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tests.ship.test_predict import invoke, ok, write_image_folder
from tuner.datasets import load_splits
from tuner.datasets.images import decode_for
from tuner.ship import checkpoint
from tuner.spec import RunConfig
from tuner.train import fit

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

CLIENT = Path(__file__).resolve().parents[2] / "docs" / "onnx_client.py"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """A model trained briefly on a folder of 20 px images, converted to ONNX, and images of every kind to label."""
    work = tmp_path_factory.mktemp("client")
    folder = write_image_folder(work / "shapes", {"train": 8, "test": 2})
    config = RunConfig(dataset=str(folder), model="cnn", epochs=3, lr=3e-3, optimizer="adam", batch_size=8)
    splits = load_splits(str(folder), "", 0.2, 0, "cpu")
    run = work / "run"
    run.mkdir()
    checkpoint.save(fit(config, splits, test=False).model, run / checkpoint.WEIGHTS_FILE, config.to_dict(),
                    splits.input_info())
    ok(invoke("convert", run, "--to", "onnx"))

    images = work / "images"
    images.mkdir()
    source = sorted((folder / "test").rglob("*.png"))
    for n, png in enumerate(source[:3]):
        image = Image.open(png).convert("RGB")
        big = image.resize((image.width * 9, image.height * 9), Image.Resampling.BICUBIC)
        big.save(images / f"photo{n}.jpg", quality=90)  # decoded at 1/8 scale: the draft step matters
    Image.open(source[3]).convert("L").resize((150, 180)).save(images / "gray.jpg")
    rgba = Image.open(source[4]).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(images / "transparent.png")
    deep = (np.asarray(Image.open(source[5]).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(images / "sixteen-bit.png")
    Image.open(source[0]).save(images / "plain.png")
    return {"run": run, "onnx": run / "model.onnx", "images": sorted(images.iterdir())}


def test_the_docs_client_gives_tune_predicts_probabilities(served):
    predicted = ok(invoke("predict", served["run"], *served["images"], "--format", "json", "--device", "cpu"))
    expected = {row["path"]: (row["class"], row["probability"]) for row in json.loads(predicted.stdout)}

    client = subprocess.run([sys.executable, str(CLIENT), str(served["onnx"]), *map(str, served["images"])],
                            capture_output=True, text=True, timeout=120, check=False)
    assert client.returncode == 0, client.stderr
    rows = [line.split("\t") for line in client.stdout.splitlines()]
    assert len(rows) == len(served["images"]) == len(expected)
    for path, name, probability in rows:
        assert name == expected[path][0], path
        assert float(probability) == pytest.approx(expected[path][1], abs=1e-4), path


def test_the_steps_are_structured_and_the_draft_step_matters(served):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(served["onnx"])).metadata_props}
    steps = json.loads(props["preprocess"])["steps"]
    assert [s["op"] for s in steps] == ["open", "draft", "exif_transpose", "to_8bit", "flatten_alpha", "convert",
                                        "fit", "to_array"]
    draft = steps[1]
    assert (draft["mode"], draft["size"]) == ("RGB", [20, 20])
    assert steps[6]["size"] == [20, 20] and steps[6]["method"] == "bilinear"

    # A client that skipped the draft step would see other pixels on the big JPEGs: the test above would notice.
    jpeg = served["images"][[p.name for p in served["images"]].index("photo0.jpg")]
    undrafted = ImageOps.fit(Image.open(jpeg).convert("RGB"), (20, 20), Image.Resampling.BILINEAR)
    tune = decode_for(jpeg, checkpoint.read_info(served["run"]).preprocess)
    assert not torch.equal(torch.from_numpy(np.array(undrafted)).permute(2, 0, 1), tune)

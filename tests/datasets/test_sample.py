"""The Fashion-MNIST sample bundled with tune: real images inside the package, read as torchvision reads the full
set, with a fixed split of its own and a license beside it."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from tuner.datasets import load_source, splits_for
from tuner.datasets.sample import folder
from tuner.spec import StudySpec, load_spec
from tuner.spec.refs import DATASETS

SAMPLE = "fashion-mnist-sample"


def test_the_sample_ships_inside_the_package_under_a_few_mb_with_its_license():
    files = {p.name: p.stat().st_size for p in folder(SAMPLE).iterdir()}
    assert {"train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "LICENSE", "README.md"} <= set(files)
    assert sum(files.values()) < 2_000_000
    license_text = (folder(SAMPLE) / "LICENSE").read_text()
    assert "MIT License" in license_text and "Zalando SE" in license_text


def test_the_sample_is_the_images_torchvision_reads_from_the_same_files(mini_data_dir):
    """mini_data_dir holds the bundled files uncompressed: torchvision's reader and tune's give the same data."""
    sample = load_source(SAMPLE)
    assert (len(sample.train), len(sample.test)) == (1722, 500) and sample.val is None
    for part, train in (("train", True), ("test", False)):
        reference = torchvision.datasets.FashionMNIST(str(mini_data_dir), train=train, download=False)
        images = getattr(sample, part)
        assert torch.equal(images.x, reference.data.unsqueeze(1)) and torch.equal(images.y, reference.targets)
    assert list(sample.classes) == torchvision.datasets.FashionMNIST.classes
    assert sample.preprocess == load_source("fashion-mnist", mini_data_dir).preprocess
    assert "fingerprint" not in sample.info  # its name is its identity, as for torchvision's sets


def test_its_splits_are_fixed_and_its_own_test_file_is_the_test_split():
    spec = StudySpec().replace(dataset=SAMPLE)
    splits = splits_for(spec, None, "cpu")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1463, 259, 500)
    assert torch.equal(splits.test.x, load_source(SAMPLE).test.x)
    counts = torch.bincount(splits.val.y, minlength=10)
    assert counts.min() >= 24 and counts.max() <= 30  # stratified: 15 % of every class
    assert torch.equal(splits_for(spec, "/nonexistent", "cpu").val.x, splits.val.x)  # no data directory involved


def test_its_shipped_spec_is_the_default_study_on_the_sample():
    assert SAMPLE in DATASETS
    assert load_spec(SAMPLE) == StudySpec().replace(name=SAMPLE, dataset=SAMPLE)


def test_the_documented_command_writes_the_test_images_a_folder_per_class(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tuner.datasets.sample", str(tmp_path / "out")],
                            capture_output=True, text=True, check=True)
    assert result.stdout == f"Wrote 500 test images of {SAMPLE} to {tmp_path / 'out'}, one folder per class\n"
    files = sorted((tmp_path / "out").rglob("*.png"))
    assert len(files) == 500
    sample = load_source(SAMPLE)
    test = sample.test
    first = tmp_path / "out" / sample.classes[int(test.y[0])] / "0000.png"
    assert first in files and np.array_equal(np.asarray(Image.open(first)), test.x[0, 0].numpy())
    assert len(list((tmp_path / "out" / "T-shirt" / "top").glob("*.png"))) == int((test.y == 0).sum())


@pytest.mark.parametrize("content", [b"", b"not gzip at all", gzip.compress(b"\x00\x00\x08\x03\x00"),
                                     gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00"),
                                     gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09\x00")[:-6]])
def test_a_damaged_sample_file_is_one_line_saying_to_reinstall(tmp_path, content):
    from tuner.datasets.sample import read_idx
    from tuner.errors import TuneError

    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(TuneError, match=r"cannot be read \(.+\): reinstall tune \(pip install -e \.\)$"):
        read_idx(path)

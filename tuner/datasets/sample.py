"""The samples bundled with tune (`fashion-mnist-sample`: 2,222 real Fashion-MNIST images) as a source: gzipped
IDX files inside the package (tuner/data/NAME/, with their license), so that a search runs on real images on any
machine, without network or data directory. The sample's own train and test files are its splits.

`python -m tuner.datasets.sample DIR` writes a sample's test images as PNG files, one folder per class
(`tune predict` then scores a model on them); `--split train` writes the training images.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from tuner.datasets.splits import Images, Source
from tuner.errors import TuneError
from tuner.spec.refs import BENCHMARKS

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
PREFIXES = {"train": "train", "test": "t10k"}  # the IDX file names of each split


def folder(dataset: str) -> Path:
    return DATA_DIR / BENCHMARKS[dataset].files


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes (the MNIST format): magic (0, 0, 0x08, ndim), big-endian sizes, data."""
    try:
        data = gzip.decompress(path.read_bytes())
        zero, kind, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or kind != 0x08:
            raise ValueError("not an IDX file of unsigned bytes")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, zlib.error, struct.error, ValueError) as e:  # missing, truncated, corrupt
        raise TuneError(f"{path} cannot be read ({e}): reinstall tune (pip install -e .)") from None


def load_images(dataset: str, split: str) -> Images:
    """One split ("train" or "test") of a bundled sample as uint8 tensors (N, 1, H, W) on the CPU."""
    prefix = PREFIXES[split]
    x = read_idx(folder(dataset) / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(folder(dataset) / f"{prefix}-labels-idx1-ubyte.gz")
    return Images(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))


def class_names(dataset: str) -> tuple[str, ...]:
    """The full set's class names, in label order (torchvision's, which the full set's studies record)."""
    import torchvision

    return tuple(getattr(torchvision.datasets, BENCHMARKS[dataset].torchvision_class).classes)


def load(dataset: str) -> Source:
    """The sample's fixed train and test splits (no validation split: it is held out of train)."""
    from tuner.datasets.images import preprocess_record

    train, test = load_images(dataset, "train"), load_images(dataset, "test")
    channels, height, width = train.x.shape[1:]
    info = {"kind": "sample", "name": dataset, "root": str(folder(dataset))}
    return Source(train, None, test, class_names(dataset), preprocess_record(channels, (height, width)), info)


def write_folder(dataset: str, out: str | Path, split: str = "test") -> int:
    """Write one split of a sample as PNG files under `out`, one folder per class (a class name with "/", like
    "T-shirt/top", is a folder in a folder, which `tune predict` reads as that class); returns how many."""
    from PIL import Image

    images, classes = load_images(dataset, split), class_names(dataset)
    for i, (x, y) in enumerate(zip(images.x, images.y, strict=True)):
        path = Path(out) / classes[int(y)] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[0].numpy(), "L").save(path)
    return len(images)


def main(argv: list[str] | None = None) -> int:
    import argparse

    samples = [name for name, b in BENCHMARKS.items() if b.sample_of]
    parser = argparse.ArgumentParser(prog="python -m tuner.datasets.sample",
                                     description="Write a bundled sample's images as PNG files, a folder per class.")
    parser.add_argument("out", metavar="DIR")
    parser.add_argument("--split", choices=tuple(PREFIXES), default="test")
    parser.add_argument("--dataset", choices=samples, default=samples[0])
    args = parser.parse_args(argv)
    count = write_folder(args.dataset, args.out, args.split)
    print(f"Wrote {count} {args.split} images of {args.dataset} to {args.out}, one folder per class")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

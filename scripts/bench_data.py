"""Loading an image folder: tune's first load (parallel decode into the cache) and its cached load, against one
epoch of torchvision's `ImageFolder` + `DataLoader` over the same files, side by side in one run.

All three produce the same thing: every image as a uint8 tensor at the same size (shorter side resized, center
crop). The DataLoader pays that decode on every epoch of every trial; tune pays it once, then reads the cache.
Without --folder a folder of JPEGs of mixed sizes (200 to 640 pixels a side, like scraped photos) is generated.
The last line printed is JSON. Example:

    python scripts/bench_data.py --images 3000 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_jpegs(root: Path, count: int, classes: int = 10, seed: int = 0) -> Path:
    """`count` JPEGs in `classes` class folders: smooth random color fields with noise, 200-640 px a side."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        width, height = (int(v) for v in rng.integers(200, 641, 2))
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def dataloader_epoch(root: Path, size: int, workers: int, batch_size: int) -> int:
    """One pass of the usual pipeline; returns how many images it produced."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
    dataset = datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    seen = 0
    for x, _ in loader:
        seen += len(x)
    return seen


def tune_first_load(root: Path, size: int) -> int:
    from tuner.datasets import cache, folder

    for stale in cache.cache_dir().glob("*.images"):
        stale.unlink()
    store, fresh = folder.cached(root, size)
    assert not fresh
    return len(store.y)


def tune_cached_load(root: Path, size: int) -> int:
    from tuner.datasets import folder

    source = folder.load(root, size)
    assert source.info["cache_fresh"]
    return len(source.train)


def timed(function, *args) -> tuple[float, int]:
    started = time.perf_counter()
    count = function(*args)
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="an image folder to measure (default: generated JPEGs)")
    parser.add_argument("--images", type=int, default=3000, help="how many JPEGs to generate")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader worker processes")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the median is reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TUNE_CACHE_DIR"] = str(Path(tmp) / "cache")
        root = args.folder or write_jpegs(Path(tmp) / "images", args.images)
        results: dict[str, list[float]] = {"dataloader": [], "tune_first": [], "tune_cached": []}
        count = 0
        for _ in range(args.repeats):  # alternating, so that a busy moment of the machine hits all sides
            seconds, count = timed(dataloader_epoch, root, args.image_size, args.workers, args.batch_size)
            results["dataloader"].append(seconds)
            results["tune_first"].append(timed(tune_first_load, root, args.image_size)[0])
            results["tune_cached"].append(timed(tune_cached_load, root, args.image_size)[0])
    medians = {name: statistics.median(values) for name, values in results.items()}
    rates = {name: count / seconds for name, seconds in medians.items()}
    print(f"{count} images at {args.image_size}x{args.image_size}, median of {args.repeats} runs")
    print(f"  DataLoader epoch ({args.workers} workers): {rates['dataloader']:10,.0f} images/s")
    print(f"  tune first load (decode):       {rates['tune_first']:10,.0f} images/s  "
          f"({rates['tune_first'] / rates['dataloader']:.2f}x the DataLoader)")
    print(f"  tune cached load:               {rates['tune_cached']:10,.0f} images/s  "
          f"({rates['tune_cached'] / rates['dataloader']:.1f}x the DataLoader)")
    print(json.dumps({"images": count, "image_size": args.image_size, "seconds": medians, "images_per_s": rates,
                      "cached_speedup": rates["tune_cached"] / rates["dataloader"],
                      "first_load_speedup": rates["tune_first"] / rates["dataloader"]}))


if __name__ == "__main__":
    main()

"""Inference throughput: `tune predict` on a folder of image files against a plain torchvision `ImageFolder` +
`DataLoader` loop with the same model, and ONNX Runtime on the converted model, in one run.

Two folders are written first (class subfolders, like a user's):
- fashion: the Fashion-MNIST images of `--data-dir` (synthetic ones without it) as 28x28 grayscale PNGs, labelled
  by the built-in `bncnn` at 28x28;
- photos: synthetic 320x240 RGB JPEGs, which the model takes at 96x96 (decode, shorter side to 96, center crop).

Measured on each, images per second of wall time:
- tune predict (library): `tuner.predict(model, [folder])`: walk, decode on a thread per core, batched inference;
- tune predict (command): `tune predict RUN FOLDER --format csv > /dev/null` as a process, imports included;
- baseline: `torchvision.datasets.ImageFolder` with Grayscale/Resize/CenterCrop/PILToTensor and a `DataLoader`
  with a worker process per core, then the same model per batch;
- model only, on images already decoded: the torch model, and ONNX Runtime on `tune convert --to onnx`'s file.
It also prints how often the baseline's label equals tune's (the baseline's resize is torchvision's, not the one
the model was trained with). The last line printed is JSON. Example:

    python scripts/bench_predict.py --data-dir ../shared/data/fashion-mnist-mini --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import tuner
from tuner.datasets.images import preprocess_record
from tuner.models import build_model
from tuner.ship import checkpoint
from tuner.ship.convert import convert
from tuner.spec import RunConfig
from tuner.train import resolve_device

BATCH = 256


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fashion_folder(root: Path, data_dir: str | None, count: int) -> tuple[Path, tuple[str, ...]]:
    """`count` Fashion-MNIST images (cycled) as PNGs in root/<class>/."""
    from tuner.datasets.torchvision import load_images
    from tuner.testing import make_images

    if data_dir:
        train, classes = load_images("fashion-mnist", data_dir, train=True)
        test, _ = load_images("fashion-mnist", data_dir, train=False)
        x, y = torch.cat([train.x, test.x])[:, 0], torch.cat([train.y, test.y])
        classes = tuple(name.replace("/", "-") for name in classes)  # T-shirt/top: a folder name
    else:
        x, y = make_images(count)
        classes = tuple(f"class{i}" for i in range(10))
    for n in range(count):
        folder = root / classes[y[n % len(y)]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[n % len(x)].numpy(), "L").save(folder / f"{n:06d}.png")
    return root, classes


def photo_folder(root: Path, count: int) -> tuple[Path, tuple[str, ...]]:
    """`count` synthetic 320x240 RGB JPEGs in root/<class>/ (smooth colour fields and noise: photo-like sizes)."""
    classes = ("a", "b", "c", "d")
    generator = torch.Generator().manual_seed(0)
    for n in range(count):
        label = n % len(classes)
        base = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=generator), size=(240, 320),
                                               mode="bilinear")[0]
        pixels = (0.8 * base + 0.2 * torch.rand(3, 240, 320, generator=generator)) * 255
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.round().byte().permute(1, 2, 0).numpy(), "RGB").save(folder / f"{n:06d}.jpg",
                                                                                    quality=90)
    return root, classes


def saved_model(out: Path, classes: tuple[str, ...], channels: int, size: int) -> Path:
    """A run folder with an (untrained) bncnn: throughput does not depend on the weights."""
    config = RunConfig(model="bncnn", dataset="fashion-mnist" if channels == 1 else str(out), epochs=1)
    torch.manual_seed(0)
    network = build_model(config, (channels, size, size), len(classes), (0.5,) * channels, (0.25,) * channels)
    info = {"shape": [channels, size, size], "classes": list(classes),
            "preprocess": preprocess_record(channels, (size, size))}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(network.eval(), out / checkpoint.WEIGHTS_FILE, config.to_dict(), info)
    return out


def tune_library(run: Path, folder: Path, device: torch.device) -> tuple[float, list[str]]:
    model = tuner.load_model(run, device)
    started = time.perf_counter()
    predictions = tuner.predict(model, [folder], batch_size=BATCH, device=str(device))
    synchronize(device)
    return time.perf_counter() - started, [p.class_name for p in predictions]


def tune_command(run: Path, folder: Path, device: torch.device) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tuner", "predict", str(run), str(folder), "--format", "csv",
                    "--device", device.type, "--batch-size", str(BATCH)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def baseline(run: Path, folder: Path, device: torch.device, workers: int) -> tuple[float, list[str]]:
    """The usual serving loop: ImageFolder + transforms per image in DataLoader workers, model per batch."""
    from torchvision import datasets, transforms

    model = tuner.load_model(run, device)
    channels, size = model.input_shape[0], model.input_shape[1]
    steps = [transforms.Grayscale(1)] if channels == 1 else [transforms.Lambda(lambda image: image.convert("RGB"))]
    transform = transforms.Compose([*steps, transforms.Resize(size), transforms.CenterCrop(size),
                                    transforms.PILToTensor()])
    started = time.perf_counter()
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    labels = []
    with torch.inference_mode():
        for x, _ in loader:
            labels += model(x.to(device, non_blocking=True)).argmax(1).tolist()
    synchronize(device)
    return time.perf_counter() - started, [model.classes[i] for i in labels]


def decoded(run: Path, folder: Path) -> torch.Tensor:
    from tuner.datasets.images import decode_for
    from tuner.ship.inference import image_files

    model = tuner.load_model(run)
    return torch.stack([decode_for(f, model.info.preprocess) for f, _ in image_files([folder], model.classes)])


def torch_model_only(run: Path, images: torch.Tensor, device: torch.device) -> float:
    model = tuner.load_model(run, device)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            model(images[start:start + BATCH].to(device)).argmax(1)
    synchronize(device)
    return time.perf_counter() - started


def onnx_model_only(onnx_file: Path, images: torch.Tensor, device: torch.device) -> tuple[float, str]:
    import onnxruntime

    wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    providers = [p for p in wanted if p in onnxruntime.get_available_providers()] + ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(str(onnx_file), providers=providers)
    array = images.numpy()
    session.run(None, {"images": array[:BATCH]})  # warm-up: session and kernel set-up
    started = time.perf_counter()
    for start in range(0, len(array), BATCH):
        session.run(None, {"images": array[start:start + BATCH]})
    return time.perf_counter() - started, session.get_providers()[0]


def measure(name: str, run: Path, folder: Path, device: torch.device, repeats: int, workers: int) -> dict:
    count = sum(1 for _ in folder.rglob("*") if _.is_file())
    converted = convert(run, "onnx")
    images = decoded(run, folder)
    tune_lib = lib_labels = base_labels = None
    times: dict[str, list[float]] = {"tune_library": [], "tune_command": [], "baseline": [], "torch_model": [],
                                     "onnx_model": []}
    provider = ""
    tune_library(run, folder, device)  # warm-up: imports, thread pools, first kernels
    for _ in range(repeats):
        tune_lib, lib_labels = tune_library(run, folder, device)
        times["tune_library"].append(tune_lib)
        base, base_labels = baseline(run, folder, device, workers)
        times["baseline"].append(base)
        times["tune_command"].append(tune_command(run, folder, device))
        times["torch_model"].append(torch_model_only(run, images, device))
        seconds, provider = onnx_model_only(converted.path, images, device)
        times["onnx_model"].append(seconds)
    rates = {key: round(count / statistics.median(values)) for key, values in times.items()}
    agree = sum(a == b for a, b in zip(lib_labels, base_labels, strict=True)) / count
    return {"folder": name, "images": count, "input": list(tuner.load_model(run).input_shape), "device": str(device),
            "onnx_provider": provider, "images_per_s": rates, "baseline_agrees_with_tune": round(agree, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder with FashionMNIST/raw (default: synthetic images)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fashion-images", type=int, default=10000)
    parser.add_argument("--photo-images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="baseline DataLoader workers")
    args = parser.parse_args()
    device = resolve_device(args.device)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder, classes = fashion_folder(work / "fashion", args.data_dir, args.fashion_images)
        run = saved_model(work / "run-fashion", classes, 1, 28)
        results.append(measure("fashion", run, folder, device, args.repeats, args.workers))
        folder, classes = photo_folder(work / "photos", args.photo_images)
        run = saved_model(work / "run-photos", classes, 3, 96)
        results.append(measure("photos", run, folder, device, args.repeats, args.workers))
    header = ("| folder | images | device | tune predict (library) | tune predict (command) | ImageFolder + "
              "DataLoader | torch model only | ONNX Runtime model only | baseline labels = tune's |")
    print(header)
    print("|" + " --- |" * 9)
    for r in results:
        rate = r["images_per_s"]
        print(f"| {r['folder']} ({'x'.join(map(str, r['input']))}) | {r['images']:,} | {r['device']} | "
              f"{rate['tune_library']:,} | {rate['tune_command']:,} | {rate['baseline']:,} | "
              f"{rate['torch_model']:,} | {rate['onnx_model']:,} ({r['onnx_provider']}) | "
              f"{r['baseline_agrees_with_tune']:.2%} |")
    print(json.dumps({"torch": torch.__version__, "workers": args.workers, "results": results}))


if __name__ == "__main__":
    main()

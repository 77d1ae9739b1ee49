"""Memory of tune's data path on a large image folder: building the cache, N workers sharing it, and training on a
folder larger than the memory limit (streamed) against the same folder in memory.

    python scripts/bench_memory.py make /tmp/jpeg20k --images 20000 --source-size 160  # the folder (10 classes)
    python scripts/bench_memory.py data DIR --image-size 128 [--package /tmp/old]   # peak RSS of `tune data`
    python scripts/bench_memory.py workers DIR --image-size 128 --workers 2 --seconds 240  # PSS / RSS, tune start
    python scripts/bench_memory.py stream DIR --image-size 128 --limit-gb 0.6 --model mlp --width 32  # images/s

`--package DIR` runs another copy of the package, from DIR (say the previous commit: `git archive HEAD | tar -x -C
DIR`).
`stream` needs root and cgroup v1 (it makes /sys/fs/cgroup/memory/tune-bench, limits it and runs the streamed side
in it, after dropping the cache file from the page cache). Every subcommand prints JSON as its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup/memory/tune-bench")


def _env(package: str | None, cache: str) -> dict[str, str]:
    env = {**os.environ, "TUNE_CACHE_DIR": cache}
    if package:
        env["PYTHONPATH"] = package
    return env


def peak_of_data(args: argparse.Namespace) -> dict[str, object]:
    """`tune data DIR` in a child with a fresh cache: its peak RSS and wall time."""
    cache = args.cache or tempfile.mkdtemp(prefix="tune-bench-cache-", dir="/tmp")
    started = time.perf_counter()
    command = [sys.executable, "-m", "tuner", "data", args.folder, "--image-size", str(args.image_size)]
    subprocess.run(command, env=_env(args.package, cache), check=True, stdout=subprocess.DEVNULL, cwd=args.package)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    cached = sum(f.stat().st_size for f in Path(cache).glob("*") if f.is_file())
    return {"peak_rss_gb": peak / 1e9, "seconds": seconds, "cache_gb": cached / 1e9, "cache": cache}


def _tree(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return found


def _rollup(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":")
            out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def workers_memory(args: argparse.Namespace) -> dict[str, object]:
    """`tune start --workers N` on the folder: the peak over its life of the summed PSS of the process tree (each
    shared page counted once), of the summed RSS, and of the file-backed (shared mapping) part."""
    cache = args.cache or tempfile.mkdtemp(prefix="tune-bench-cache-", dir="/tmp")
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        command = [sys.executable, "-m", "tuner", "start", "--dataset", args.folder, "--image-size",
                   str(args.image_size), "--workers", str(args.workers), "--trials", str(args.trials), "--epochs", "1",
                   "--storage", f"sqlite:///{tmp}/studies.db", "--keep-top", "0", "--device", "cpu",
                   "--model", args.model]
        child = subprocess.Popen(command, env=_env(args.package, cache), stdout=subprocess.DEVNULL, cwd=args.package)
        peak = {"pss": 0, "rss": 0, "pss_file": 0, "pss_anon": 0, "processes": 0}
        per_process: dict[int, int] = {}
        stop_at = time.monotonic() + args.seconds if args.seconds else None
        while child.poll() is None:
            if stop_at is not None and time.monotonic() > stop_at:  # the peak is reached once every worker trains
                for pid in reversed(_tree(child.pid)):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                child.wait()
                break
            rollups = {pid: _rollup(pid) for pid in _tree(child.pid)}
            sums = {key: sum(r.get(name, 0) for r in rollups.values())
                    for key, name in (("pss", "Pss"), ("rss", "Rss"), ("pss_file", "Pss_File"),
                                      ("pss_anon", "Pss_Anon"))}
            if sums["pss"] > peak["pss"]:
                peak = {**sums, "processes": len(rollups)}
            for pid, r in rollups.items():
                per_process[pid] = max(per_process.get(pid, 0), r.get("Rss", 0))
            time.sleep(0.5)
    gb = {key: value / 1e9 for key, value in peak.items() if key != "processes"}
    return {**{f"peak_{k}_gb": v for k, v in gb.items()}, "processes_at_peak": peak["processes"],
            "peak_rss_per_process_gb": sorted((v / 1e9 for v in per_process.values()), reverse=True)[:8],
            "exit": child.returncode}


def train_rate(args: argparse.Namespace) -> dict[str, object]:
    """(child) One epoch of train_epoch on the folder's training split: images/s, and where the data was."""
    import torch

    from tuner.augment import Augment
    from tuner.datasets import load_splits
    from tuner.models import build_model
    from tuner.spec import RunConfig
    from tuner.train import make_optimizer, train_epoch

    torch.set_num_threads(args.threads)
    splits = load_splits(args.folder, "", 0.15, 0, "cpu", True, args.image_size)
    config = RunConfig(dataset=args.folder, model=args.model, batch_size=args.batch_size, image_size=args.image_size,
                       model_args={"width": args.width} if args.width else {})
    model = build_model(config, splits.shape, splits.num_classes, splits.mean, splits.std)
    optimizer = make_optimizer(config, model.parameters(), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    train_epoch(model, optimizer, splits.train, args.batch_size, generator, Augment(True, 0.0))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"images_per_s": len(splits.train) / seconds, "images": len(splits.train), "seconds": seconds,
            "placement": splits.info["placement_line"], "peak_rss_gb": peak / 1e9}


def _drop_from_page_cache(cache: str) -> None:
    for path in Path(cache).glob("*.images"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _child(args: argparse.Namespace, env: dict[str, str], cgroup: Path | None) -> dict[str, object]:
    argv = [sys.executable, __file__, "_train", args.folder, "--image-size", str(args.image_size), "--model",
            args.model, "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--width",
            str(args.width)]
    prefix = f"echo $$ > {cgroup}/cgroup.procs && " if cgroup else ""
    done = subprocess.run(["sh", "-c", prefix + "exec " + " ".join(argv)], env=env, check=True,
                          capture_output=True, text=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def stream_against_memory(args: argparse.Namespace) -> dict[str, object]:
    """The training epoch in memory, then streamed in a cgroup whose limit is below the folder's decoded size,
    alternating `--repeats` times; median images/s of each."""
    import statistics

    cache = args.cache or tempfile.mkdtemp(prefix="tune-bench-cache-", dir="/tmp")
    env = _env(None, cache)
    subprocess.run([sys.executable, "-m", "tuner", "data", args.folder, "--image-size", str(args.image_size)],
                   env=env, check=True, stdout=subprocess.DEVNULL)  # build the cache first (if missing)
    decoded = sum(p.stat().st_size for p in Path(cache).glob("*.images"))
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "memory.limit_in_bytes").write_text(str(int(args.limit_gb * 1e9)))
    runs: dict[str, list[dict[str, object]]] = {"memory": [], "streamed": []}
    try:
        for _ in range(args.repeats):
            runs["memory"].append(_child(args, env, None))
            _drop_from_page_cache(cache)
            runs["streamed"].append(_child(args, env, CGROUP))
        failcnt = int((CGROUP / "memory.failcnt").read_text())
        cgroup_peak = int((CGROUP / "memory.max_usage_in_bytes").read_text())
    finally:
        CGROUP.rmdir()
    rates = {name: statistics.median(float(str(r["images_per_s"])) for r in results)
             for name, results in runs.items()}
    return {"decoded_gb": decoded / 1e9, "limit_gb": args.limit_gb, "images_per_s": rates,
            "streamed_share": rates["streamed"] / rates["memory"], "cgroup_peak_gb": cgroup_peak / 1e9,
            "cgroup_failcnt": failcnt, "runs": runs}


def make_folder(args: argparse.Namespace) -> dict[str, object]:
    """`--images` JPEGs of `--source-size` px in 10 class folders: smooth random colour fields with noise."""
    import numpy as np
    from PIL import Image

    rng, size = np.random.default_rng(0), args.source_size
    for i in range(args.images):
        coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = np.clip(field + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        folder = Path(args.folder) / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return {"folder": args.folder, "images": args.images, "size": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["make", "data", "workers", "stream", "_train"])
    parser.add_argument("folder")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--package", help="run this copy of the package instead (PYTHONPATH)")
    parser.add_argument("--cache", help="TUNE_CACHE_DIR to use (default: a new folder under /tmp)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=0, help="the model's width (model_args; 0: its default)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit-gb", type=float, default=0.6, help="stream: the cgroup's memory limit")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seconds", type=float, help="workers: stop the run after this long (the peak comes once "
                        "every worker has loaded the data and trains)")
    parser.add_argument("--images", type=int, default=20_000, help="make: how many JPEGs")
    parser.add_argument("--source-size", type=int, default=160, help="make: their side in pixels")
    args = parser.parse_args()
    run = {"make": make_folder, "data": peak_of_data, "workers": workers_memory, "stream": stream_against_memory,
           "_train": train_rate}
    print(json.dumps(run[args.what](args)))


if __name__ == "__main__":
    main()

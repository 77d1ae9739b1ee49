"""Anytime search quality behind docs/benchmarks.md: how good the best trial is after 10 s, 30 s, 1 min ... 10 min
of `tune start`, for the default study, random search and TPE without pruning, several seeds, side by side in one
run; and what production makes of a short search (`tune train --full-train`, alone and as an ensemble).

    python scripts/bench_quality.py --data-dir ../shared/data/fashion-mnist-mini --minutes 10 --seeds 1 2 3
        Each arm and seed is one `tune start --timeout` (seed-major order, so that a change of the machine's load
        falls on every arm alike). At each time point (from the launch of the command, start-up included) the best
        trial so far is the one with the best validation accuracy; its test accuracy is read, never selected on.
        Writes quality.json and quality.png (two panels: best validation accuracy, and that trial's test
        accuracy, against wall time on a log axis; a line per arm, the mean of the seeds; a dot per seed).

    python scripts/bench_quality.py --data-dir ../shared/data/fashion-mnist-mini --production 60 --seeds 1 2 3
        The targets of issue 17: a 60 s default search, `tune export`, then `tune train --full-train` and
        `tune train --full-train --ensemble 3`: the test accuracy of each, per seed and their mean.

`--spec-arm NAME=FILE` adds an arm that searches another spec (an earlier default, say). Report the machine's load:
a wall-clock measurement on a loaded machine compares the load, not the searches. `--cpu-clock` measures budgets in
CPU seconds of the tune process on one torch thread instead (no trial starts after the budget; the search is
stopped once the running one ends): figures that other jobs on the machine do not change, and that understate what
the same wall seconds buy on a quiet machine with two threads. With it, `--jobs 2` runs two searches at once, one
per core (their CPU budgets hold; they share the memory bus, so each is a little slower per CPU second).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MINI_DATA = REPO.parent / "shared" / "data" / "fashion-mnist-mini"
ARMS: dict[str, list[str]] = {  # name -> flags of `tune start` over the default study
    "default": [],
    "random": ["--sampler", "random", "--pruner", "none"],
    "tpe-no-pruning": ["--pruner", "none"],
}
POINTS = (10, 20, 30, 60, 120, 300, 600)  # seconds
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


class Failed(Exception):
    pass


def tune(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tuner", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise Failed(f"`tune {' '.join(map(str, args))}` failed:\n{done.stderr[-2000:]}")
    return done


Clock = Callable[[datetime], float]  # a moment of the search -> seconds on its clock


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def search(flags: list[str], seconds: float, seed: int, data_dir: Path, work: Path, name: str,
           env: dict[str, str], cpu_clock: bool = False) -> tuple[str, Clock, int | None]:
    """`tune start --timeout SECONDS` with `flags`; returns (storage URL, its clock, None). With `cpu_clock` the
    clock is the tune process's CPU time on one torch thread: no trial starts after SECONDS of it (the running one
    finishes, as with --timeout), and the search is stopped then; the third value is the number of trials started
    within the budget (later ones, failed by the stop, do not count)."""
    storage = f"sqlite:///{work / f'{name}.db'}"
    launched = time.time()
    args = ["start", "--study", name, "--trials", 100_000, "--seed", seed, "--device", "cpu", "--data-dir", data_dir,
            "--storage", storage, "--keep-top", 0, *flags]
    if not cpu_clock:
        tune(*args, "--timeout", seconds, env=env)
        return storage, lambda moment: moment.timestamp() - launched, None
    import optuna

    command = [sys.executable, "-m", "tuner", *map(str, args)]
    process = subprocess.Popen(command, env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    samples: list[tuple[float, float]] = [(launched, 0.0)]
    within: int | None = None
    while process.poll() is None:
        time.sleep(0.2)
        try:
            samples.append((time.time(), process_cpu_seconds(process.pid)))
        except (FileNotFoundError, ProcessLookupError):
            break
        if samples[-1][1] < seconds:
            continue
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        within = len(trials) if within is None else within
        if all(t.state.is_finished() for t in trials[:within]):
            process.send_signal(signal.SIGINT)  # fails a trial started since: outside the budget
            process.wait()
    walls, cpus = [w for w, _ in samples], [c for _, c in samples]

    def clock(moment: datetime) -> float:
        at = moment.timestamp()
        i = max(0, min(len(walls) - 2, bisect.bisect_left(walls, at) - 1))
        share = (at - walls[i]) / max(1e-9, walls[i + 1] - walls[i])
        return cpus[i] + min(1.0, max(0.0, share)) * (cpus[i + 1] - cpus[i])

    return storage, clock, within


def curve(storage: str, name: str, clock: Clock, points: list[float], within: int | None = None) -> dict[str, Any]:
    """The best trial (by validation accuracy) completed by each time point: its validation and test accuracy;
    only the first `within` trials count, when given."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)[:within]
    done = sorted((clock(t.datetime_complete), t.value, t.user_attrs.get("test_accuracy"))
                  for t in trials if t.state.name == "COMPLETE" and t.datetime_complete is not None
                  and t.value is not None)
    val, test = [], []
    for point in points:
        finished = [(v, -at, a) for at, v, a in done if at <= point]
        best = max(finished) if finished else None
        val.append(best[0] if best else None)
        test.append(best[2] if best else None)
    return {"val": val, "test": test, "trials": len(trials),
            "pruned": sum(t.state.name == "PRUNED" for t in trials)}


def mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.mean(known) if len(known) == len(values) and known else None


# --- the picture, drawn with Pillow (tune's own dependency: no plotting library needed)

def plot(results: dict[str, list[dict[str, Any]]], points: list[float], path: Path, title: str,
         clock: str = "wall time (s)") -> None:
    from PIL import Image, ImageDraw

    width, height, margin = 1300, 560, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    panels = [("best validation accuracy", "val"), ("its test accuracy", "test")]
    values = [v for runs in results.values() for run in runs for key in ("val", "test") for v in run[key]
              if v is not None]
    low, high = (min(values) - 0.01, max(values) + 0.01) if values else (0.0, 1.0)
    span_x = [math.log(p) for p in points]
    panel_width = (width - 3 * margin) // 2
    draw.text((margin, 10), title, fill="black")
    for index, (label, key) in enumerate(panels):
        left, top, bottom = margin + index * (panel_width + margin), 40, height - margin
        right = left + panel_width

        def x_of(point: float, left: int = left, right: int = right) -> float:
            position = (math.log(point) - span_x[0]) / max(1e-9, span_x[-1] - span_x[0])
            return left + position * (right - left)

        def y_of(value: float, top: int = top, bottom: int = bottom) -> float:
            return bottom - (value - low) / (high - low) * (bottom - top)

        draw.rectangle((left, top, right, bottom), outline="black")
        draw.text((left, bottom + 30), f"{label} against {clock}, log scale", fill="black")
        for point in points:
            draw.line((x_of(point), bottom, x_of(point), bottom + 5), fill="black")
            draw.text((x_of(point) - 8, bottom + 8), f"{point:g}", fill="black")
        for step in range(6):
            value = low + step * (high - low) / 5
            draw.line((left - 5, y_of(value), left, y_of(value)), fill="black")
            draw.text((left - 45, y_of(value) - 6), f"{value:.3f}", fill="black")
        for number, (arm, runs) in enumerate(results.items()):
            color = COLORS[number % len(COLORS)]
            for run in runs:
                for point, value in zip(points, run[key], strict=True):
                    if value is not None:
                        draw.ellipse((x_of(point) - 2, y_of(value) - 2, x_of(point) + 2, y_of(value) + 2), fill=color)
            line = [(x_of(p), y_of(m)) for p, m in zip(points, [mean([r[key][i] for r in runs])
                                                                for i in range(len(points))], strict=True)
                    if m is not None]
            if len(line) > 1:
                draw.line(line, fill=color, width=3)
            draw.text((right - 150, top + 10 + 16 * number), f"-- {arm}", fill=color)
    image.save(path)


# --- the two modes

def anytime(args: argparse.Namespace, arms: dict[str, list[str]], work: Path, env: dict[str, str]) -> None:
    seconds = args.minutes * 60
    points = [p for p in POINTS if p <= seconds] or [seconds]
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}

    def one(arm: str, seed: int) -> dict[str, Any]:
        name = f"{arm}-{seed}"
        storage, clock, within = search(arms[arm], seconds, seed, args.data_dir, work, name, env, args.cpu_clock)
        run = {"seed": seed, **curve(storage, name, clock, points, within)}
        print(json.dumps({"arm": arm, **run}), flush=True)
        return run

    order = [(arm, seed) for seed in args.seeds for arm in arms]
    with ThreadPoolExecutor(args.jobs) as pool:  # one search per job, each on its own study and core
        for (arm, _), run in zip(order, pool.map(lambda job: one(*job), order), strict=True):
            results[arm].append(run)
    table = ["| arm | " + " | ".join(f"{p:g} s" for p in points) + " | trials (pruned) |",
             "|---|" + "---|" * (len(points) + 1)]
    for arm, runs in results.items():
        cells = []
        for i in range(len(points)):
            v, t = mean([r["val"][i] for r in runs]), mean([r["test"][i] for r in runs])
            cells.append("-" if v is None or t is None else f"{v:.4f} / {t:.4f}")
        count = ", ".join(f"{r['trials']} ({r['pruned']})" for r in runs)
        table.append(f"| {arm} | " + " | ".join(cells) + f" | {count} |")
    print("\nBest validation / its test accuracy, mean of seeds " + ", ".join(map(str, args.seeds)))
    print("\n".join(table))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps({"points": points, "results": results, "load": os.getloadavg()},
                                                 indent=1))
    clock = "CPU seconds of one torch thread" if args.cpu_clock else "wall time (s)"
    plot(results, points, out / "quality.png", f"tune start on {args.data_dir.name}: mean of seeds "
         f"{', '.join(map(str, args.seeds))} (dots: each seed)", clock)
    print(f"\nWrote {out / 'quality.json'} and {out / 'quality.png'}")


def resplit(source: Path, seed: int, out: Path) -> Path:
    """The images of `source` (a FashionMNIST folder in torchvision's raw layout: train and test pooled) split anew
    into train and test of the same sizes, stratified by class, shuffled with `seed`: a second split on which to
    check a default chosen on the first. Returns the data dir to pass to tune."""
    import numpy as np

    raw = source / "FashionMNIST" / "raw"

    def read(name: str, header: int) -> tuple[bytes, Any]:
        data = (raw / name).read_bytes()
        return data[:header], np.frombuffer(data, dtype=np.uint8, offset=header)

    images, labels = {}, {}
    for part in ("train", "t10k"):
        head, pixels = read(f"{part}-images-idx3-ubyte", 16)
        _, labels[part] = read(f"{part}-labels-idx1-ubyte", 8)
        images[part] = pixels.reshape(len(labels[part]), -1)
    x, y = np.concatenate([images["train"], images["t10k"]]), np.concatenate([labels["train"], labels["t10k"]])
    test_share = len(labels["t10k"]) / len(y)
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:round(test_share * int((y == c).sum()))]
                           for c in np.unique(y)])
    train = np.setdiff1d(np.arange(len(y)), test)
    rng.shuffle(train)
    rng.shuffle(test)
    target = out / f"resplit-{seed}" / "FashionMNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for part, index in (("train", train), ("t10k", test)):
        count = len(index).to_bytes(4, "big")
        (target / f"{part}-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + count + (28).to_bytes(4, "big") * 2
                                                          + x[index].tobytes())
        (target / f"{part}-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + count + y[index].tobytes())
    print(f"resplit {seed}: {len(train)} train / {len(test)} test images of {source}", flush=True)
    return target.parents[1]


def production_run(args: argparse.Namespace, seed: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One seed of production mode: the search, its export, then the production runs; a row of results."""
    name = f"production-{seed}"
    flags = ["--spec", str(Path(args.spec).resolve())] if args.spec else []
    flags += ["--dataset", str(Path(args.dataset).resolve())] if args.dataset else []  # a folder of images
    storage, _, within = search(flags, args.production, seed, args.data_dir, work, name, env, args.cpu_clock)
    best = work / f"{name}.yaml"
    tune("export", name, "--storage", storage, "-o", best, env=env)
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)[:within]
    row: dict[str, Any] = {"seed": seed, "trials": len(trials),
                           "pruned": sum(t.state.name == "PRUNED" for t in trials),
                           "stuck": sum(t.user_attrs.get("reason", "").startswith(("stuck", "not learning"))
                                        for t in trials),
                           "best_value": study.best_value, "best_params": study.best_trial.params}
    runs: list[tuple[str, list[Any]]] = [("full_train", [])]
    runs += [(f"ensemble_{args.ensemble}", ["--ensemble", args.ensemble])] if args.ensemble else []  # 0: none
    if args.train_epochs:
        runs += [(f"{label}_epochs_{args.train_epochs}", [*extra, "--epochs", args.train_epochs])
                 for label, extra in runs]
    for label, extra in runs:
        out = work / f"{name}-{label}"
        try:
            tune("train", best, "--full-train", "--device", "cpu", "--data-dir", args.data_dir, "--out", out,
                 *extra, env=env)
        except Failed as e:  # an ensemble of more configs than the search completed, say
            row[label] = None
            row.setdefault("errors", []).append(str(e).splitlines()[-1])
            continue
        metrics = json.loads((out / "metrics.json").read_text())
        row[label] = metrics["test_accuracy"]
        row.setdefault("trial_test_accuracy", metrics["trial_test_accuracy"])
    print(json.dumps(row), flush=True)
    return row


def production(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda seed: production_run(args, seed, work, env), args.seeds))
    for key in rows[0]:
        if key.startswith(("trial_test", "full_train", "ensemble")):
            known = [r[key] for r in rows if r.get(key) is not None]
            print(f"mean {key}: " + (f"{statistics.mean(known):.4f} ({len(known)} of {len(rows)})" if known else "-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=MINI_DATA)
    parser.add_argument("--minutes", type=float, default=10.0, help="budget of each search (anytime mode)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--spec-arm", action="append", default=[], metavar="NAME=FILE",
                        help="also search the spec FILE (TPE, median pruner unless it says otherwise)")
    parser.add_argument("--production", type=float, metavar="SECONDS",
                        help="instead: SECONDS of default search, then tune train --full-train (and --ensemble)")
    parser.add_argument("--ensemble", type=int, default=3, help="production mode: members of the ensemble run (0: no "
                        "ensemble run)")
    parser.add_argument("--train-epochs", type=int, metavar="N",
                        help="production mode: also train each with --epochs N (the schedule stretched)")
    parser.add_argument("--spec", help="production mode: search this spec instead of the default study")
    parser.add_argument("--dataset", help="production mode: search this folder of images (its default study)")
    parser.add_argument("--cpu-clock", action="store_true",
                        help="budgets in CPU seconds of the tune process on one torch thread, not wall seconds: "
                             "figures that hold on a machine other jobs load (a quiet one with two threads is "
                             "faster)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="with --cpu-clock: run this many searches (or production seeds) at once, one core each")
    parser.add_argument("--resplit", type=int, metavar="SEED",
                        help="search a new stratified split of --data-dir's images (train and test pooled, same "
                             "sizes), shuffled with SEED: a second split to check a default on")
    parser.add_argument("--out", default="quality")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the studies, exports and production runs in DIR (default: a temporary directory)")
    args = parser.parse_args()
    if args.resplit is not None:
        args.data_dir = resplit(args.data_dir, args.resplit, Path(tempfile.mkdtemp(prefix="tune-resplit-")))
    if args.jobs > 1 and not args.cpu_clock:
        parser.error("--jobs above 1 needs --cpu-clock: searches sharing the cores would measure each other")
    arms = {arm: ARMS[arm] for arm in args.arms}
    for entry in args.spec_arm:
        name, _, file = entry.partition("=")
        arms[name] = ["--spec", str(Path(file).resolve())]
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep.resolve() if args.keep else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "XDG_DATA_HOME": f"{work}/data", "XDG_CACHE_HOME": f"{work}/cache"}
        print(f"load average at the start: {os.getloadavg()}", flush=True)
        try:
            if args.production:
                production(args, work, env)
            else:
                anytime(args, arms, work, env)
        except Failed as e:
            raise SystemExit(str(e)) from None
        print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

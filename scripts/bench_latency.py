"""How far a model's latency moves between a search's measurement and an export's, behind docs/benchmarks.md
("On a quiet machine"): each model measured as a search measures it (200 timed calls), then as an export proves it
(1,000), each in a fresh process, `--pairs` times; prints p50 and p95 of each and the change of the p95 per pair.

    python scripts/bench_latency.py --models rescnn:64 torchvision:resnet18:64 torchvision:mobilenet_v3_small:96

MODEL:SIDE is a model reference and the side of its square RGB input; an untrained network is timed (latency
depends on the graph and the input shape, not on the weights), on ONNX Runtime with one thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MEASURE = r"""
import json, sys
from tuner.ship.deploy import untrained
from tuner.ship.latency import measure
from tuner.spec import RunConfig
model, side, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
network = untrained(RunConfig(model=model), (3, side, side), 10)
print(json.dumps(measure(network, (3, side, side), runtime="onnxruntime", threads=1, runs=runs).latency_ms))
"""


def measured(model: str, side: int, runs: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", MEASURE, model, str(side), str(runs)], capture_output=True,
                          text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["rescnn:64", "torchvision:resnet18:64"], metavar="MODEL:SIDE")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    print("| model | p95 at 200 calls | p95 at 1,000 calls | change per pair | p50 at 200 / 1,000 calls |")
    print("| --- | --- | --- | --- | --- |")
    for reference in args.models:
        model, side = reference.rsplit(":", 1)
        pairs = [(measured(model, int(side), 200), measured(model, int(side), 1000)) for _ in range(args.pairs)]
        search = ", ".join(f"{s['p95']:.3g}" for s, _ in pairs)
        export = ", ".join(f"{e['p95']:.3g}" for _, e in pairs)
        change = ", ".join(f"{e['p95'] / s['p95'] - 1:+.0%}" for s, e in pairs)
        p50 = "; ".join(f"{s['p50']:.3g} / {e['p50']:.3g}" for s, e in pairs)
        print(f"| {model}, {side} px | {search} ms | {export} ms | {change} | {p50} ms |", flush=True)


if __name__ == "__main__":
    main()

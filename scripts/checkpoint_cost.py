"""What a trial checkpoint costs (docs/benchmarks.md, "Long studies"): the default model (bncnn, the default run
config) trained on the mini Fashion-MNIST for a few epochs, its state saved after each one by tune's StateWriter into
a FileSystemArtifactStore, as a trial saves it.

    python scripts/checkpoint_cost.py --data-dir ../shared/data/fashion-mnist-mini --epochs 6 --repeats 3

For each epoch it reports the epoch's training + validation time, the time the training thread spent serializing
the state (all the training waits for), and the time the background thread spent writing it; and, over whole runs
(with and without checkpoints, alternating), the wall time. The share that matters is serialize / epoch: writing
happens while the next epoch trains.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "fashion-mnist-mini"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = parser.parse_args()

    import torch
    from optuna.artifacts import FileSystemArtifactStore

    from tuner.datasets import load_splits
    from tuner.ship.resume import StateWriter
    from tuner.spec import RunConfig
    from tuner.train import fit

    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_splits("fashion-mnist", args.data_dir, 0.15, 0, "cpu")
    config = RunConfig(epochs=args.epochs)  # the default run config: bncnn, its default optimizer and batch size
    print(f"{config.model}, {config.optimizer}, batch {config.batch_size}, {len(splits.train)} training images, "
          f"{torch.get_num_threads()} threads")
    fit(config.replace(epochs=1), splits)  # warm-up
    plain, saved, epochs, serialize, write, sizes = [], [], [], [], [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = fit(config, splits)
        plain.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as folder:
            writer = StateWriter(FileSystemArtifactStore(folder), ["a", "b"])
            started = time.perf_counter()
            result = fit(config, splits, on_state=writer)
            writer.close(keep=True)
            saved.append(time.perf_counter() - started)
            files = list(Path(folder).iterdir())
            sizes.append(sum(f.stat().st_size for f in files))
            assert len(files) == 1, "only the newest state stays"
        epochs += [e.seconds for e in result.history]
        serialize.append(writer.serialize_seconds / (config.epochs - 1))
        write.append(writer.write_seconds / max(1, config.epochs - 1))
    epoch = statistics.median(epochs)
    print(f"epoch (train + validation): median {epoch * 1000:.0f} ms")
    print(f"serialize, in the training thread: median {statistics.median(serialize) * 1000:.1f} ms "
          f"= {statistics.median(serialize) / epoch:.2%} of an epoch")
    print(f"write (+ delete the older state), in the background: median {statistics.median(write) * 1000:.1f} ms "
          f"= {statistics.median(write) / epoch:.2%} of an epoch")
    print(f"checkpoint size: {statistics.median(sizes) / 1e6:.2f} MB")
    print(f"whole runs of {config.epochs} epochs: without {statistics.median(plain):.2f} s, with checkpoints "
          f"{statistics.median(saved):.2f} s (medians of {args.repeats}; the machine's load varies more)")


if __name__ == "__main__":
    main()

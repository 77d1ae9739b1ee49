"""`tune train` killed mid-run goes on from its last epoch when run again, to the very weights of an uninterrupted
run; the run folder keeps no checkpoint once written; a torn checkpoint starts over with one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tuner.ship.resume import RUN_CHECKPOINT_DIR, RUN_CHECKPOINT_IDS, StateWriter, latest_state

EPOCHS = 30


@pytest.fixture
def run_config(tmp_path) -> Path:
    """A hand-written export: the MLP with dropout and augmentation (both draw random numbers), one CPU thread."""
    config = {"dataset": "fashion-mnist", "model": "mlp", "epochs": EPOCHS, "validation": 0.2, "batch_size": 32,
              "dropout": 0.3, "flip": True, "translate": 2, "seed": 5}
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"config": config, "provenance": {"threads": 1}}))
    return path


def train(run_config: Path, data_dir: Path, out: Path, *more: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tuner", "train", str(run_config), "--data-dir", str(data_dir), "--device",
               "cpu", "--out", str(out), *more]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    return out + err


def checkpoint(out: Path) -> list[Path]:
    paths = [out / RUN_CHECKPOINT_DIR / name for name in RUN_CHECKPOINT_IDS]
    return [path for path in paths if path.exists()]


def killed_after_a_checkpoint(process: subprocess.Popen[str], out: Path) -> None:
    deadline = time.monotonic() + 120
    while not checkpoint(out):
        assert process.poll() is None and time.monotonic() < deadline, "the run wrote no checkpoint"
        time.sleep(0.01)
    time.sleep(0.3)
    process.kill()
    process.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it was killed"


def same_run(a: Path, b: Path) -> None:
    weights_a, weights_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(weights_a[k].equal(weights_b[k]) for k in weights_a)
    metrics_a, metrics_b = (json.loads((m / "metrics.json").read_text()) for m in (a, b))

    def curve(metrics):
        return [(e["epoch"], e["train_loss"], e["val_accuracy"], e["val_loss"]) for e in metrics["history"]]
    assert curve(metrics_a) == curve(metrics_b) and len(curve(metrics_a)) == EPOCHS
    assert metrics_a["test_accuracy"] == metrics_b["test_accuracy"]


@pytest.mark.parametrize("again", [(), ("--resume",)], ids=["same command", "with --resume"])
def test_a_killed_run_goes_on_from_its_last_epoch_to_the_same_weights(run_config, data_dir, tmp_path, again):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    killed_after_a_checkpoint(train(run_config, data_dir, killed), killed)

    output = finished(train(run_config, data_dir, killed, *again))
    resumed = [line for line in output.splitlines() if line.startswith(f"Resuming the run in {killed} after epoch")]
    assert len(resumed) == 1 and resumed[0].endswith(f"of {EPOCHS}, from its checkpoint")
    done = int(resumed[0].split("after epoch ")[1].split()[0])
    epochs = [line for line in output.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == EPOCHS  # each epoch once: those of the checkpoint marked, the rest trained now
    assert all(line.endswith("(from checkpoint)") for line in epochs[:done])
    assert not any("from checkpoint" in line for line in epochs[done:])
    assert not (killed / RUN_CHECKPOINT_DIR).exists()
    finished(train(run_config, data_dir, reference))
    same_run(killed, reference)


def test_a_torn_checkpoint_starts_over_with_one_warning(run_config, data_dir, tmp_path):
    out = tmp_path / "torn"
    killed_after_a_checkpoint(train(run_config, data_dir, out), out)
    for path in checkpoint(out):
        path.write_bytes(path.read_bytes()[:1000])
    output = finished(train(run_config, data_dir, out))
    warnings = [line for line in output.splitlines() if line.startswith(("warning", "Resuming"))]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: the checkpoint in {out / RUN_CHECKPOINT_DIR} cannot continue this run (")
    assert warnings[0].endswith("): training from epoch 1")
    assert "Traceback" not in output and not (out / RUN_CHECKPOINT_DIR).exists()
    reference = tmp_path / "reference"
    finished(train(run_config, data_dir, reference))
    same_run(out, reference)


def test_resume_without_a_checkpoint_says_so_and_trains_from_the_start(cli, run_config, data_dir, tmp_path):
    result = cli("train", run_config, "--data-dir", data_dir, "--device", "cpu", "--out", tmp_path / "fresh",
                 "--epochs", 2, "--resume")
    assert result.exit_code == 0, result.output
    assert (f"warning: --resume: {tmp_path / 'fresh' / RUN_CHECKPOINT_DIR} holds no checkpoint of an unfinished "
            "run: training from epoch 1") in result.output
    assert json.loads((tmp_path / "fresh" / "metrics.json").read_text())["epochs"] == 2


def test_a_checkpoint_of_another_run_is_not_taken(run_config, data_dir, tmp_path):
    """The same folder, --full-train this time: the killed run's state belongs to another run; started over."""
    out = tmp_path / "run"
    killed_after_a_checkpoint(train(run_config, data_dir, out), out)
    output = finished(train(run_config, data_dir, out, "--full-train"))
    warnings = [line for line in output.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and warnings[0].endswith("): training from epoch 1")
    assert "belongs to another run (full_train False, here True)" in warnings[0]  # (and a torn state: killed mid-write)
    assert json.loads((out / "metrics.json").read_text())["full_train"] is True
    assert not (out / RUN_CHECKPOINT_DIR).exists()


def saved_state(epoch: int):
    """A config of 4 epochs, and a state of it after `epoch`."""
    from tuner.spec import RunConfig
    from tuner.train import TrainState

    config = RunConfig.from_dict({"dataset": "fashion-mnist", "model": "mlp", "epochs": 4})
    state = TrainState(config.to_dict(), epoch, [], {}, {}, {}, torch.Generator().get_state(), torch.get_rng_state())
    return config, state


def test_a_run_keeps_only_its_newest_state(tmp_path):
    from optuna.artifacts import FileSystemArtifactStore

    store = FileSystemArtifactStore(tmp_path)
    writer = StateWriter(store, RUN_CHECKPOINT_IDS)
    for epoch in (1, 2, 3):
        config, state = saved_state(epoch)
        writer(state)
        deadline = time.monotonic() + 30
        while writer.written < epoch:  # each state written before the next is handed over
            assert time.monotonic() < deadline
            time.sleep(0.01)
    writer.close(keep=True)
    assert len(list(tmp_path.iterdir())) == 1
    assert latest_state(store, RUN_CHECKPOINT_IDS, config).state.epoch == 3


def test_a_state_saved_on_another_kind_of_device_is_not_taken(tmp_path):
    """A run killed on a GPU and run again on the CPU (or the reverse) starts over, saying why: a CUDA generator's
    state cannot seed a CPU run."""
    from optuna.artifacts import FileSystemArtifactStore

    config, state = saved_state(2)
    store = FileSystemArtifactStore(tmp_path)
    writer = StateWriter(store, RUN_CHECKPOINT_IDS, stamp={"device": "cuda"})
    writer(state)
    writer.close(keep=True)
    assert latest_state(store, RUN_CHECKPOINT_IDS, config, {"device": "cuda"}).state is not None
    saved = latest_state(store, RUN_CHECKPOINT_IDS, config, {"device": "cpu"})
    assert saved.state is None
    assert saved.problem == "state-a.pt belongs to another run (device cuda, here cpu)"

"""A run's training state saved after each epoch, and found again to continue the run: for `tune start`'s trials
(in the study's artifact store, tuner.search.checkpoints) and `tune train`'s runs (in the run folder) alike.

A state goes to one of two artifact ids in turn, and the other one is deleted once it is written: only the newest
state stays, and a process killed while writing one leaves the one before it whole. The reader takes the newest
state that loads. Serializing (a few milliseconds for the default model) happens
in the training thread, because the tensors change with the next batch; writing happens in a background thread,
so that a slow or shared disk does not hold training up. Only the newest state waits to be written: one that is
superseded before its turn is dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tuner.errors import one_line
from tuner.train import Epoch, TrainState

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

    from tuner.spec import RunConfig

RUN_CHECKPOINT_DIR = "checkpoint"  # inside a `tune train` run folder, while the run is not finished
RUN_CHECKPOINT_IDS = ("state-a.pt", "state-b.pt")


def state_bytes(state: TrainState, stamp: Mapping[str, Any] | None = None) -> bytes:
    """`state` serialized (tensors copied out), so that training may go on while the bytes are written. `stamp`:
    what else the run must share to continue from it (a `tune train --full-train` run, its data)."""
    raw = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    raw["history"] = [dataclasses.asdict(epoch) for epoch in state.history]
    raw["stamp"] = dict(stamp or {})
    buffer = io.BytesIO()
    torch.save(raw, buffer)
    return buffer.getvalue()


def read_state(data: bytes) -> tuple[TrainState, dict[str, Any]]:
    """A state and its stamp from `state_bytes`; raises for bytes that are torn or not a state (torch's loader,
    weights only)."""
    raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    raw["history"] = [Epoch(**epoch) for epoch in raw["history"]]
    stamp = raw.pop("stamp", {})
    return TrainState(**raw), stamp


@dataclass(frozen=True)
class Saved:
    """What `latest_state` found: the newest usable state (None: start over), the slot to write next (not the one
    holding that state), and a line saying why saved states could not be used."""

    state: TrainState | None
    next_slot: int = 0
    problem: str | None = None


def _load(store: ArtifactStore, artifact_id: str) -> bytes | None:
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        with store.open_reader(artifact_id) as reader:
            return reader.read()
    except ArtifactNotFound:
        return None


def latest_state(store: ArtifactStore, ids: Sequence[str], config: RunConfig,
                 stamp: Mapping[str, Any] | None = None) -> Saved:
    """The newest state among `ids` that loads and continues `config` (same run config and `stamp`, epochs left
    to train)."""
    usable: list[tuple[int, int, TrainState]] = []
    problems: list[str] = []
    for slot, artifact_id in enumerate(ids):
        try:
            data = _load(store, artifact_id)
            if data is None:
                continue
            state, stamped = read_state(data)
        except Exception as e:  # torn by a kill mid-write, truncated, unreadable: any of torch's errors
            problems.append(f"{artifact_id} cannot be read ({one_line(e, 120) or type(e).__name__})")
            continue
        differs = sorted(k for k in {*stamped, *(stamp or {})} if stamped.get(k) != (stamp or {}).get(k))
        if not config.same_as(state.config):
            problems.append(f"{artifact_id} belongs to another run")
        elif differs:  # the data, or the device: a CUDA generator's state cannot seed a CPU run
            problems.append(f"{artifact_id} belongs to another run (" + ", ".join(
                f"{k} {stamped.get(k)}, here {(stamp or {}).get(k)}" for k in differs) + ")")
        elif not 0 < state.epoch < config.epochs:
            problems.append(f"{artifact_id} is after epoch {state.epoch} of {config.epochs}")
        else:
            usable.append((state.epoch, slot, state))
    if not usable:
        return Saved(None, 0, "; ".join(problems) or None)
    _, slot, state = max(usable, key=lambda found: found[:2])
    return Saved(state, (slot + 1) % len(ids))


def remove_states(store: ArtifactStore, ids: Sequence[str]) -> None:
    from optuna.artifacts.exceptions import ArtifactNotFound

    for artifact_id in ids:
        try:
            store.remove(artifact_id)
        except (ArtifactNotFound, FileNotFoundError):
            continue
        except OSError as e:  # no permission, a stale network share: the old state stays behind, training goes on
            if "delete" not in _WARNED:
                _WARNED.add("delete")
                print(f"warning: cannot delete the checkpoint {artifact_id}: {one_line(e) or type(e).__name__}",
                      file=sys.stderr)


class StateWriter:
    """Writes the states `fit` hands it (call it with each) to `store`, alternating `ids`, in a background thread.

    `close(keep=True)` waits for the newest state to be written (an interrupted run keeps it); `close(keep=False)`
    drops what waits and deletes every saved state (the run ended). A failed write prints one warning line and
    training goes on: a checkpoint only saves time.
    """

    def __init__(self, store: ArtifactStore, ids: Sequence[str], *, first_slot: int = 0, where: str = "",
                 stamp: Mapping[str, Any] | None = None) -> None:
        self.store, self.ids, self.where, self.stamp = store, list(ids), where, stamp
        self.slot = first_slot
        self.written = 0  # the epoch of the newest state written
        self.serialize_seconds = 0.0  # time spent in the training thread (scripts/checkpoint_cost.py)
        self.write_seconds = 0.0  # time spent writing, in the background thread
        self._pending: tuple[int, bytes] | None = None
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tune-checkpoint", daemon=True)
        self._thread.start()

    def __call__(self, state: TrainState) -> None:
        started = time.perf_counter()
        data = state_bytes(state, self.stamp)
        self.serialize_seconds += time.perf_counter() - started
        with self._condition:
            self._pending = (state.epoch, data)
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._closed:
                    self._condition.wait()
                if self._pending is None:
                    return
                epoch, data = self._pending
                self._pending = None
            self._write(epoch, data)

    def _write(self, epoch: int, data: bytes) -> None:
        started = time.perf_counter()
        try:
            self.store.write(self.ids[self.slot], io.BytesIO(data))
        except Exception as e:  # a full disk, a lost network share: the run goes on without checkpoints
            cannot_save(self.where, e)
            return
        remove_states(self.store, [i for i in self.ids if i != self.ids[self.slot]])  # only the newest stays
        self.write_seconds += time.perf_counter() - started
        self.slot = (self.slot + 1) % len(self.ids)
        self.written = epoch

    def close(self, *, keep: bool) -> None:
        with self._condition:
            if not keep:
                self._pending = None
            self._closed = True
            self._condition.notify()
        self._thread.join()
        if not keep:
            remove_states(self.store, self.ids)


_WARNED: set[str] = set()  # the places a warning was printed for, once per process


def cannot_save(where: str, error: BaseException) -> None:
    """One warning line per process and place: checkpoints cannot be written `where` (" to DIR")."""
    if where not in _WARNED:
        _WARNED.add(where)
        print(f"warning: cannot write checkpoints{where}: {one_line(error) or type(error).__name__}; training goes "
              "on, but an interrupted run will start over", file=sys.stderr)


def run_store(out_dir: Path) -> ArtifactStore:
    """The artifact store of a `tune train` run's checkpoint: a folder inside the run folder."""
    from optuna.artifacts import FileSystemArtifactStore

    directory = Path(out_dir) / RUN_CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(directory)


def has_run_checkpoint(out_dir: Path) -> bool:
    directory = Path(out_dir) / RUN_CHECKPOINT_DIR
    return any((directory / name).exists() for name in RUN_CHECKPOINT_IDS)


def drop_run_checkpoint(out_dir: Path) -> None:
    """Delete a finished run's checkpoint folder (and nothing else that may have been put there)."""
    directory = Path(out_dir) / RUN_CHECKPOINT_DIR
    for name in RUN_CHECKPOINT_IDS:
        (directory / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something else was put there
        directory.rmdir()



def open_run_checkpoint(out_dir: Path, config: RunConfig, stamp: Mapping[str, Any], *, resume: bool,
                        note: Callable[[str], None]) -> tuple[TrainState | None, StateWriter]:
    """For a `tune train` run into `out_dir`: the state to go on from (the checkpoint a killed run of this very
    config and `stamp` left there), and the writer of the run's own checkpoints. One note says from which epoch it
    resumes, or why it starts over."""
    where = Path(out_dir) / RUN_CHECKPOINT_DIR
    found = has_run_checkpoint(out_dir)
    store = run_store(out_dir)
    saved = latest_state(store, RUN_CHECKPOINT_IDS, config, stamp) if found else Saved(None)
    if saved.state is not None:
        note(f"Resuming the run in {out_dir} after epoch {saved.state.epoch} of {config.epochs}, from its checkpoint")
    elif saved.problem is not None:
        note(f"warning: the checkpoint in {where} cannot continue this run ({saved.problem}): training from epoch 1")
    elif resume:
        note(f"warning: --resume: {where} holds no checkpoint of an unfinished run: training from epoch 1")
    writer = StateWriter(store, RUN_CHECKPOINT_IDS, first_slot=saved.next_slot, where=f" to {where}", stamp=stamp)
    return saved.state, writer

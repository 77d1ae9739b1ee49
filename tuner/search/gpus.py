"""Which worker runs on which GPU, and how many CPU threads each gets."""

from __future__ import annotations

import os

from tuner.errors import TuneError


def parse_gpus(text: str) -> list[str]:
    """'0,1,2,3' -> ['0', '1', '2', '3']: CUDA_VISIBLE_DEVICES entries (indices or GPU UUIDs)."""
    gpus = [g.strip() for g in text.split(",")]
    if not all(gpus):
        raise TuneError(f"--gpus {text!r} has an empty entry: give GPU ids separated by commas, like --gpus 0,1")
    if len(set(gpus)) < len(gpus):
        raise TuneError(f"--gpus {text!r} names a GPU twice: use --per-gpu K to put K workers on each GPU")
    return gpus


def visible_gpus(ids: list[str]) -> list[str]:
    """--gpus counts among the GPUs this process may use: where CUDA_VISIBLE_DEVICES is set already (Slurm and
    Kubernetes set it to the GPUs they allocated), index i is its i-th entry, not the machine's GPU i."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return ids
    out = []
    for gpu in ids:
        if not gpu.isdigit():
            out.append(gpu)  # a GPU UUID: taken as it is
        elif int(gpu) < len(visible):
            out.append(visible[int(gpu)])
        else:
            raise TuneError(f"--gpus names GPU {gpu} but only {len(visible)} are visible "
                            f"(CUDA_VISIBLE_DEVICES={','.join(visible)}): use indices 0 to {len(visible) - 1}")
    return out


def plan_workers(workers: int | None, gpus: str | None, per_gpu: int | None) -> list[str | None]:
    """The GPU of each worker (None: not pinned). Without --workers there are len(gpus) x per_gpu workers, else
    one; with both, workers go round-robin over the GPUs, at most per_gpu on each."""
    if gpus is None:
        if per_gpu is not None:
            raise TuneError("--per-gpu needs --gpus: name the GPUs, like --gpus 0,1 --per-gpu 2")
        return [None] * (workers or 1)
    ids = visible_gpus(parse_gpus(gpus))
    capacity = len(ids) * (per_gpu or 1)
    if workers is None:
        workers = capacity
    elif per_gpu is not None and workers > capacity:
        raise TuneError(f"--workers {workers} is more than --per-gpu {per_gpu} x {len(ids)} GPU(s) = {capacity}: "
                        f"use --per-gpu {-(-workers // len(ids))} or fewer workers")
    return [ids[i % len(ids)] for i in range(workers)]


def threads_per_worker(local_workers: int) -> int:
    """CPU threads for each of `local_workers` processes on this machine, so that together they use each core once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // local_workers)

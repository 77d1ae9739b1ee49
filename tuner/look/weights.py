"""What a study's kept weights (tune start --keep-top) cost on disk, and the artifact store's size in all: weights
of big models add up (a 183-px bncnn keeps 50 MB a trial), so `tune show` says it and `tune delete --weights-only`
frees it."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import counted

if TYPE_CHECKING:
    import optuna


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # listed but gone (deleted by hand): it takes no room
        return 0


def tree_size(directory: Path) -> int:
    """Bytes of the files under `directory` (0 when it does not exist)."""
    return sum(_file_size(Path(root) / name) for root, _, files in os.walk(directory) for name in files)


def weights_summary(study: optuna.Study) -> dict[str, Any] | None:
    """{"files", "bytes": the study's kept weights; "store", "store_bytes": the artifact store of its storage (all
    its studies' weights and running trials' checkpoints)}; None for a storage that keeps no weights."""
    from tuner.ship.artifacts import artifact_dir_for, kept_weights, storage_url_of

    url = storage_url_of(study._storage)
    if url is None:
        return None
    store = artifact_dir_for(url)
    kept = kept_weights(study)
    return {"files": len(kept), "bytes": sum(_file_size(store / k.artifact_id) for k in kept), "store": str(store),
            "store_bytes": tree_size(store)}


def megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def weights_line(name: str, summary: dict[str, Any] | None) -> str | None:
    """`tune show`'s line about kept weights; None when neither the study nor its store holds any."""
    if summary is None or not (summary["files"] or summary["store_bytes"]):
        return None
    store = f"the artifact store {summary['store']} holds {megabytes(summary['store_bytes'])} in all"
    if not summary["files"]:
        return f"Kept weights: none of this study ({store})"
    files = counted(summary["files"], "file")
    return (f"Kept weights: {files}, {megabytes(summary['bytes'])} ({store}); free them, keeping the trials: "
            f"tune delete {shlex.quote(name)} --weights-only")

"""Trial weights as Optuna artifacts: where the artifact store is, keeping the best K trials' weights, copying them.

The bytes live in an `optuna.artifacts.FileSystemArtifactStore` beside the study's database. Each kept file is
listed in a *study* system attr under optuna-dashboard's per-trial artifact key, so the dashboard shows it on the
trial's page and serves it for download. Not in the trial's own system attrs (where `optuna.artifacts.upload_artifact`
puts them): Optuna forbids changing a finished trial, so weights that fall out of the top K could never be unlisted.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import one_line
from tuner.record import WEIGHTS_ERROR, WEIGHTS_FILE
from tuner.storage import data_home, maximizes, sqlite_path

if TYPE_CHECKING:
    from optuna.artifacts import FileSystemArtifactStore
    from torch import nn

    from tuner.spec import RunConfig

ARTIFACTS_ENV = "TUNE_ARTIFACTS"  # overrides the artifact directory of every storage
WEIGHTS_MIMETYPE = "application/octet-stream"
# optuna-dashboard lists the study system attr `dashboard:artifacts:<trial_id>:<artifact_id>` (JSON artifact meta,
# or JSON null once deleted) on trial <trial_id>'s page and serves its file from the study's artifact store.
TRIAL_ARTIFACT_PREFIX = "dashboard:artifacts:"


def artifact_dir_for(storage_url: str) -> Path:
    """$TUNE_ARTIFACTS, else `<db stem>-artifacts/` beside an SQLite file, else ~/.local/share/tune/artifacts/<db>."""
    if os.environ.get(ARTIFACTS_ENV):
        return Path(os.environ[ARTIFACTS_ENV]).expanduser()
    if urlsplit(storage_url).scheme == "sqlite":
        db = sqlite_path(storage_url)
        return db.with_name(f"{db.stem}-artifacts")
    from sqlalchemy.engine import make_url

    database = make_url(storage_url).database or "default"
    return data_home() / "tune" / "artifacts" / database


def artifact_store_for(storage_url: str) -> FileSystemArtifactStore:
    """The artifact store holding the weights of the studies in `storage_url` (its directory created if missing)."""
    from optuna.artifacts import FileSystemArtifactStore

    directory = artifact_dir_for(storage_url)
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(directory)


def storage_url_of(storage: optuna.storages.BaseStorage) -> str | None:
    """The URL of an RDB storage, also when Optuna wraps it in its caching layer; None for other storages."""
    backend = getattr(storage, "_backend", storage)
    return getattr(backend, "url", None)


@dataclass(frozen=True)
class Kept:
    """One trial's kept weights, as listed in the study's system attrs."""

    key: str  # the study system attr listing them
    trial_id: int
    artifact_id: str
    value: float  # the trial's objective value, to rank by while the trial may still be RUNNING


def kept_weights(study: optuna.Study) -> list[Kept]:
    """The trials whose weights are kept, in no particular order."""
    kept = []
    for key, raw in study._storage.get_study_system_attrs(study._study_id).items():
        if not key.startswith(TRIAL_ARTIFACT_PREFIX) or raw is None:
            continue
        meta = json.loads(raw)
        if meta is None or meta.get("filename") != WEIGHTS_FILE or "value" not in meta:
            continue
        trial_id = int(key.removeprefix(TRIAL_ARTIFACT_PREFIX).split(":", 1)[0])
        kept.append(Kept(key, trial_id, meta["artifact_id"], meta["value"]))
    return kept


def _rank_key(study: optuna.Study) -> Callable[[Kept], tuple[float, int]]:
    """Sorts kept weights best first; ties go to the earlier trial."""
    sign = -1.0 if maximizes(study) else 1.0  # by the metric, the first objective of a multi-objective study
    return lambda k: (sign * k.value, k.trial_id)


def ranked_weights(study: optuna.Study) -> tuple[list[Kept], list[Kept]]:
    """(kept weights of complete or running trials, best first; kept weights of trials that failed since).

    The weights are listed before the trials are read, so a trial that kept weights meanwhile counts as alive.
    """
    kept = kept_weights(study)
    states = (TrialState.COMPLETE, TrialState.RUNNING)
    alive = {t._trial_id for t in study.get_trials(deepcopy=False, states=states)}
    ranked = sorted((k for k in kept if k.trial_id in alive), key=_rank_key(study))
    return ranked, [k for k in kept if k.trial_id not in alive]


def _upload(trial: optuna.Trial, model: nn.Module, value: float, store: FileSystemArtifactStore,
            config: RunConfig, input_info: Mapping[str, Any]) -> str:
    """Write the weights to the store, then list them on the trial: the dashboard never lists a half-written file."""
    from tuner.ship.checkpoint import save  # torch: not for the dashboard, which only serves the files

    artifact_id = str(uuid.uuid4())
    origin = {"study": trial.study.study_name, "trial": str(trial.number), "value": repr(value)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WEIGHTS_FILE
        save(model, path, config.to_dict(), input_info, origin)
        with path.open("rb") as f:
            store.write(artifact_id, f)
    meta = {"artifact_id": artifact_id, "filename": WEIGHTS_FILE, "mimetype": WEIGHTS_MIMETYPE, "encoding": None,
            "value": value}
    key = f"{TRIAL_ARTIFACT_PREFIX}{trial._trial_id}:{artifact_id}"
    trial.storage.set_study_system_attr(trial.study._study_id, key, json.dumps(meta))
    return artifact_id


def drop_weights(study: optuna.Study, kept: Kept, store: FileSystemArtifactStore) -> None:
    """Unlist, then delete one trial's weights; another worker may have done either already."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    study._storage.set_study_system_attr(study._study_id, kept.key, json.dumps(None))
    with contextlib.suppress(ArtifactNotFound):
        store.remove(kept.artifact_id)


def prune_weights(study: optuna.Study, keep_top: int, store: FileSystemArtifactStore) -> None:
    """Delete the kept weights outside the best `keep_top`, and those of trials that failed after keeping them.

    Safe with several workers: a trial outside the top K of what one worker sees is outside the top K of every
    larger set, so no worker drops weights that another one still ranks in the top K.
    """
    ranked, dead = ranked_weights(study)
    for kept in ranked[keep_top:] + dead:
        drop_weights(study, kept, store)


def keep_weights(trial: optuna.Trial, model: nn.Module, value: float, keep_top: int, config: RunConfig,
                 input_info: Mapping[str, Any]) -> str | None:
    """Keep `model`'s weights as trial `trial`'s artifact if `value` ranks in the study's best `keep_top`.

    Called when a trial's fit completed, before it is told; drops the weights that fall out of the top K. `input_info`
    (`Splits.input_info()`: shape, class names, preprocessing) goes into the file with the trial's run `config`, so that
    `tuner.ship.checkpoint.load_model` rebuilds the model and `tune predict` prepares its images.
    Returns the artifact id, or None when the weights were not kept. Weights that cannot be written (the artifact
    directory is a file, the disk is full) do not fail the trial: the reason goes to its user attr `weights_error`.
    """
    from safetensors import SafetensorError

    storage_url = storage_url_of(trial.storage)
    if keep_top <= 0 or storage_url is None:  # an in-memory study has nowhere to keep weights beside it
        return None
    study = trial.study
    ranked, _ = ranked_weights(study)
    key = _rank_key(study)
    if len(ranked) >= keep_top and key(Kept("", trial._trial_id, "", value)) >= key(ranked[keep_top - 1]):
        return None  # not better than the K-th best
    artifact_id = None
    try:
        store = artifact_store_for(storage_url)
        artifact_id = _upload(trial, model, value, store, config, input_info)
        prune_weights(study, keep_top, store)
    except (OSError, SafetensorError) as e:
        reason = one_line(e) or type(e).__name__
        trial.set_user_attr(WEIGHTS_ERROR, f"cannot write weights to {artifact_dir_for(storage_url)}: {reason}")
    return artifact_id


def copy_weights(study: optuna.Study, trial: FrozenTrial, dest_dir: Path) -> Path | None:
    """Copy `trial`'s kept weights to `dest_dir/model.safetensors` (replacing it); None if the trial has none."""
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    storage_url = storage_url_of(study._storage)
    kept = [k for k in kept_weights(study) if k.trial_id == trial._trial_id]
    if not kept or storage_url is None:
        return None
    dest = Path(dest_dir) / WEIGHTS_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    store = artifact_store_for(storage_url)
    try:
        download_artifact(artifact_store=store, file_path=str(dest), artifact_id=kept[0].artifact_id)
    except ArtifactNotFound:  # dropped by a worker since it was listed
        return None
    return dest

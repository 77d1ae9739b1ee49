"""Where studies live: storage URLs (the embedded SQLite default, PostgreSQL); opening a storage, creating and
loading a study in it. What tune records on a study is tuner.record's."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import urlsplit

import optuna
from optuna.trial import TrialState

from tuner.errors import TuneError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from sqlalchemy.engine import URL

    from tuner.spec import StudySpec

SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 60  # seconds without a heartbeat after which a RUNNING trial is failed and retried
MAX_RETRY = 3  # retries of a trial whose worker died, with the same params
# Connections per process: its main thread and its heartbeat thread each hold at most one at a time.
POOL_SIZE, MAX_OVERFLOW = 2, 2
SCHEMA_ATTEMPTS = 3  # opening a new database races any other process creating its tables: try again


def quiet_optuna() -> None:
    """Set by each process's entry point (the CLI, a spawned worker): tune reports each trial itself, with the
    reason of a failure, so Optuna's per-trial log lines, its tracebacks of trials failed on purpose (Ctrl-C, out
    of memory) and its notes on experimental features are noise."""
    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def data_home() -> Path:
    """The user's data directory: $XDG_DATA_HOME, else ~/.local/share."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def default_storage_url() -> str:
    """$TUNE_STORAGE, else an SQLite file in the user's data directory (~/.local/share/tune/tune.db)."""
    if os.environ.get("TUNE_STORAGE"):
        return os.environ["TUNE_STORAGE"]
    return f"sqlite:///{data_home() / 'tune' / 'tune.db'}"


def sqlite_path(url: str) -> Path:
    """The database file of an `sqlite:///PATH` URL, `~` expanded: sqlite:///~/tune.db is ~/tune.db, as in a shell."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if path in ("", ":memory:"):
        raise TuneError("an in-memory SQLite storage would lose the study on exit: use sqlite:///PATH")
    return Path(path).expanduser()


def public_url(url: str | URL) -> str:
    """The storage URL (or an engine's URL) with any password masked, fit to print and to share."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy parses: drop whatever sits between :// and @
        return re.sub(r"//[^@/]*@", "//***@", str(url))


def engine_url(url: str) -> str:
    """The URL to give SQLAlchemy for the storage URL a user wrote: an SQLite path with `~` expanded, and
    postgresql:// on the psycopg (3) driver, the one tune installs (SQLAlchemy 2.0 would pick psycopg2)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return f"sqlite:///{sqlite_path(url)}"
    if scheme == "postgresql":
        return "postgresql+psycopg" + url[len("postgresql"):]
    return url


def _prepare_sqlite(path: Path) -> None:
    """Create the file's directory and switch the database to WAL, so readers never block the writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sqlite3.connect(path, timeout=60) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as e:
        raise TuneError(f"cannot open SQLite storage {path}: {e}; check the path and its permissions") from None


def check_heartbeat(heartbeat_interval: int | None, grace_period: int | None) -> None:
    """A grace period shorter than two heartbeats would fail live trials whose heartbeat is merely late."""
    if heartbeat_interval is not None and grace_period is not None and grace_period < 2 * heartbeat_interval:
        raise TuneError(f"--grace-period {grace_period} is shorter than two heartbeats ({heartbeat_interval} s "
                        f"each): use --grace-period {2 * heartbeat_interval} or more")


def open_storage(url: str | None = None, *, heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
                 grace_period: int | None = GRACE_PERIOD) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for `url` with heartbeats, so trials of dead workers are failed and retried.

    Each process opens its own (engines do not cross processes) with a small connection pool: close it with
    `close_storage`. All workers of a study should use the same heartbeat settings: a worker with a short grace
    period fails the live trials of workers that beat slowly.
    """
    url = url or default_storage_url()
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise TuneError(f"unknown storage scheme {scheme or url!r}: use sqlite:///PATH or "
                        "postgresql://USER@HOST:PORT/DB")
    check_heartbeat(heartbeat_interval, grace_period)
    if scheme == "sqlite":
        _prepare_sqlite(sqlite_path(url))
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True,
                         "pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(
                engine_url(url), engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                grace_period=grace_period, heartbeat_stale_trial_callback=retry)
        except Exception as e:  # sqlalchemy's OperationalError, ArgumentError, a missing driver
            if "already exists" in str(e) and attempt + 1 < SCHEMA_ATTEMPTS:
                time.sleep(0.5)  # another process created the tables of a new database at the same moment
                continue
            reason = " ".join(str(e).split("\n")[0].split())[:300]
            raise TuneError(f"cannot open storage {public_url(url)}: {reason}. Check that the database server runs "
                            "and the URL is right") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


@overload
def open_existing_storage(url: str | None = None, *,
                          missing_ok: Literal[False] = False) -> optuna.storages.RDBStorage: ...


@overload
def open_existing_storage(url: str | None = None, *, missing_ok: bool) -> optuna.storages.BaseStorage: ...


def open_existing_storage(url: str | None = None, *, missing_ok: bool = False) -> optuna.storages.BaseStorage:
    """The storage at `url` (default: `default_storage_url()`) for a command that only reads it: an SQLite file
    that does not exist is never created. It is a one-line TuneError naming the fix, or with `missing_ok` (for
    listings such as `tune ls`) an empty storage. Opened without heartbeats: a reader runs no trial."""
    url = url or default_storage_url()
    if missing_ok and urlsplit(url).scheme == "sqlite" and not sqlite_path(url).is_file():
        return optuna.storages.InMemoryStorage()
    check_database_exists(url)
    return open_storage(url, heartbeat_interval=None, grace_period=None)


def new_database_file(url: str) -> Path | None:
    """The SQLite file `url` names when it does not exist yet (opening the storage would create it), else None."""
    if urlsplit(url).scheme != "sqlite":
        return None
    path = sqlite_path(url)
    return None if path.exists() else path


def check_database_exists(url: str) -> None:
    """A one-line TuneError for an SQLite file that does not exist, before anything would create it."""
    if urlsplit(url).scheme == "sqlite" and not sqlite_path(url).is_file():
        raise TuneError(f"no study database at {sqlite_path(url)}: run `tune start` first, or point --storage (or "
                        "TUNE_STORAGE) at the database your studies are in")


def rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The RDB storage itself: a study loaded from one holds it in Optuna's caching wrapper."""
    return getattr(storage, "_backend", storage)


def close_storage(storage: optuna.storages.RDBStorage) -> None:
    """Give this thread's session back and close the pool's connections (a worker does this on exit)."""
    storage.remove_session()
    storage.engine.dispose()


def reap_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose heartbeat stopped (their worker died) and queue their retries; returns their
    numbers. Optuna does this before each trial; tune also does it when a command starts and ends."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    optuna.storages.fail_stale_trials(study)
    still = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(running - still)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(name: str, storage: optuna.storages.BaseStorage, **kwargs: Any) -> optuna.Study:
    """An existing study, or a clear error naming the studies that do exist."""
    if name not in study_names(storage):
        known = ", ".join(study_names(storage)) or "none yet"
        raise TuneError(f"no study named {name!r} in this storage (studies: {known}); "
                        "check --storage / TUNE_STORAGE or run `tune ls`")
    return optuna.load_study(study_name=name, storage=storage, **kwargs)


def find_study(name: str, storage: optuna.storages.BaseStorage, **kwargs: Any) -> optuna.Study | None:
    """Study `name` if the storage has it, else None (one listing of the storage)."""
    if name not in study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage, **kwargs)


def create_study(name: str, spec: StudySpec, storage: optuna.storages.BaseStorage,
                 sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Study `name` for `spec` (load_if_exists: another invocation may have created it meanwhile), one direction
    per objective (the metric's; then latency and size minimized, with `objectives`), its objectives named so that
    optuna-dashboard labels its axes with them, not "Objective 0". The spec is the caller's to record
    (tuner.record.record_spec)."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=spec.directions, load_if_exists=True)
    check_direction(study, spec)
    if not study.metric_names:
        study.set_metric_names(spec.metric_names)
    return study


def check_direction(study: optuna.Study, spec: StudySpec) -> None:
    """A study runs its directions: a spec whose metric goes the other way, or with other objectives, is refused."""
    directions = [d.name.lower() for d in study.directions]
    if directions != spec.directions:
        raise TuneError(f"study {study.study_name!r} is a {','.join(directions)} study but the spec's objectives "
                        f"{','.join(spec.metric_names)} are to {','.join(spec.directions)}: use the study's own spec "
                        "or a new --study name")


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def first_value(trial: FrozenTrial) -> float | None:
    """The trial's value of its study's first objective, the metric (a single-objective study's only value)."""
    return trial.values[0] if trial.values else None


def maximizes(study: optuna.Study) -> bool:
    """Whether the study's first objective, the metric, is maximized."""
    return study.directions[0] == optuna.study.StudyDirection.MAXIMIZE

"""`tune status`: one study at a glance, read from its storage: trials by state, the running trials with their
worker, GPU, epoch and heartbeat age, the best so far, throughput and an ETA."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tuner.record import CONFIG_ATTR, GPU_ATTR, STOPPED_ATTR, WORKER_ATTR, is_prior, run_budget, run_of
from tuner.search.stopping import Stagnation, best_of, busy_seconds, stagnation
from tuner.storage import first_value, is_multi_objective, rdb

REFRESH_SECONDS = 2.0


@dataclass
class Running:
    """One RUNNING trial."""

    number: int
    worker: str | None  # host:pid
    gpu: str | None
    epoch: int  # epochs reported so far
    epochs: int | None  # epochs it will train, unless pruned
    seconds: float  # since it started
    heartbeat_age: float | None  # seconds since its last heartbeat; None before the first one


@dataclass
class Snapshot:
    """What `tune status` shows; `--format json` prints it as is."""

    study: str
    direction: str
    counts: dict[str, int]
    running: list[Running] = field(default_factory=list)
    best: dict[str, Any] | None = None  # number, value, params
    trials_per_hour: float | None = None  # finished trials per hour over the last hour
    remaining: int | None = None  # trials left in the budgets of the invocations running now
    eta_seconds: float | None = None
    since_best: dict[str, Any] | None = None  # {"trials", "seconds"}: how long the search has not improved
    stopped: str | None = None  # why --stop-when-flat ended a search of it, if one did

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def heartbeat_ages(storage: optuna.storages.BaseStorage, study_name: str, numbers: list[int]) -> dict[int, float]:
    """Seconds since the last heartbeat of the study's trials `numbers` (the RUNNING ones), by trial number.

    Optuna keeps heartbeats in its RDB schema's `trial_heartbeats` table and has no public reader; both times
    are the database's own clock, so the age is right whatever the clocks of the workers say.
    """
    engine = getattr(rdb(storage), "engine", None)
    if engine is None:
        return {}
    from sqlalchemy import DateTime, column, func, select, table

    trials = table("trials", column("trial_id"), column("number"), column("study_id"))
    studies = table("studies", column("study_id"), column("study_name"))
    beats = table("trial_heartbeats", column("trial_id"), column("heartbeat", DateTime))
    query = (select(trials.c.number, beats.c.heartbeat, func.now(type_=DateTime))
             .select_from(trials.join(beats, beats.c.trial_id == trials.c.trial_id)
                          .join(studies, studies.c.study_id == trials.c.study_id))
             .where(studies.c.study_name == study_name, trials.c.number.in_(numbers)))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {number: (now.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds()
            for number, beat, now in rows}


def _running(trial: FrozenTrial, ages: dict[int, float], now: datetime) -> Running:
    config = trial.user_attrs.get(CONFIG_ATTR) or {}
    started = trial.datetime_start or now
    return Running(trial.number, trial.user_attrs.get(WORKER_ATTR), trial.user_attrs.get(GPU_ATTR),
                   len(trial.intermediate_values), config.get("epochs"), (now - started).total_seconds(),
                   ages.get(trial.number))


def _best(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial (a multi-objective study's: the best metric of its Pareto front, with the front's size)."""
    best = best_of(study)
    if best is None:
        return None
    front = {"front": len(study.best_trials)} if is_multi_objective(study) else {}
    return {"number": best.number, "value": first_value(best), "params": best.params, **front}


def _trials_per_hour(finished: list[FrozenTrial], now: datetime) -> float | None:
    """Finished trials per hour of work, over the last hour: the time some trial that finished was running, so
    that a study left idle (or resumed after a pause) is not slower for it."""
    hour_ago = now - timedelta(hours=1)
    spans: list[tuple[datetime, datetime]] = []
    for t in finished:
        if t.datetime_complete is not None and t.datetime_complete >= hour_ago:
            spans.append((max(hour_ago, t.datetime_start or t.datetime_complete), t.datetime_complete))
    if not spans:
        return None
    return len(spans) / (max(busy_seconds(spans, hour_ago), 1.0) / 3600)


def _remaining(trials: list[FrozenTrial], running: list[FrozenTrial]) -> int | None:
    """Trials left in the --trials budgets of the invocations that are running trials now (None: unknown)."""
    budgets = {run_of(t): run_budget(t) for t in running}
    if not budgets or None in budgets or None in budgets.values():
        return None
    started = Counter(run_of(t) for t in trials if t.state != TrialState.WAITING)
    return sum(max(0, total - started[run]) for run, total in budgets.items() if total is not None)


def _eta(finished: list[FrozenTrial], n_running: int, remaining: int | None) -> float | None:
    """Seconds until the budgets are spent: the trials left and those running, at the mean duration of the
    finished trials, spread over the trials running now."""
    durations = [t.duration.total_seconds() for t in finished[-50:] if t.duration is not None]
    if remaining is None or not durations or not n_running:
        return None
    return (remaining + n_running / 2) * (sum(durations) / len(durations)) / n_running


def snapshot(study: optuna.Study) -> Snapshot:
    """The study as it is now."""
    now = datetime.now()
    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state.is_finished() and not is_prior(t)]  # priors took no time here
    ages = heartbeat_ages(study._storage, study.study_name, [t.number for t in running]) if running else {}
    remaining = _remaining(trials, running)
    return Snapshot(
        study=study.study_name, direction=",".join(d.name.lower() for d in study.directions),
        counts=dict(sorted(Counter(t.state.name for t in trials).items())),
        running=[_running(t, ages, now) for t in running], best=_best(study),
        trials_per_hour=_trials_per_hour(finished, now), remaining=remaining,
        eta_seconds=_eta(finished, len(running), remaining), since_best=_since_best(study, trials),
        stopped=None if running else (study.user_attrs.get(STOPPED_ATTR) or {}).get("reason"))


def _since_best(study: optuna.Study, trials: list[FrozenTrial]) -> dict[str, Any] | None:
    if is_multi_objective(study):
        return None  # a front improves along any objective: no single best to have stood still
    flat = stagnation(trials, best_of(study))
    return asdict(flat) if flat is not None else None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(shot: Snapshot) -> Group:
    """The snapshot for a terminal: a header, the running trials as a table, the pace."""
    total = sum(shot.counts.values())
    lines: list[RenderableType] = [Text(f"Study {shot.study!r} ({shot.direction}): {total} trials ("
                                        + ", ".join(f"{state} {n}" for state, n in shot.counts.items()) + ")")]
    if shot.best is None:
        lines.append(Text("Best: no trial completed yet"))
    else:
        params = " ".join(f"{k}={_short(v)}" for k, v in shot.best["params"].items())
        front = f" (of a Pareto front of {shot.best['front']})" if "front" in shot.best else ""
        lines.append(Text(f"Best: trial {shot.best['number']}, value {shot.best['value']:.4f}{front}  {params}"))
    if shot.running:
        table = Table("trial", "epoch", "worker", "gpu", "running", "heartbeat", box=None, pad_edge=False)
        for r in shot.running:
            epochs = f"{r.epoch}/{r.epochs}" if r.epochs else str(r.epoch)
            heartbeat = "-" if r.heartbeat_age is None else f"{_duration(r.heartbeat_age)} ago"
            table.add_row(str(r.number), epochs, r.worker or "-", r.gpu or "-", _duration(r.seconds), heartbeat)
        lines.append(table)
    else:
        lines.append(Text("No trial running"))
    if shot.since_best is not None:
        lines.append(Text(f"Since the best: {Stagnation(**shot.since_best).text()}"))
    if shot.stopped is not None:
        lines.append(Text(f"Stopped: {shot.stopped}"))
    pace = "Pace: " + ("-" if shot.trials_per_hour is None else f"{shot.trials_per_hour:.1f} trials/hour")
    if shot.remaining is not None:
        pace += f"; {shot.remaining} trial(s) left in the running budgets, ETA {_duration(shot.eta_seconds)}"
    lines.append(Text(pace))
    return Group(*lines)


def line(shot: Snapshot, now: datetime | None = None) -> str:
    """The snapshot on one line, for a log: `tune status` without a terminal prints one per interval."""
    moment = (now or datetime.now()).strftime("%H:%M:%S")
    states = ", ".join(f"{state} {n}" for state, n in shot.counts.items())
    parts = [f"{moment} {shot.study}: {sum(shot.counts.values())} trials ({states})"]
    if shot.running:
        parts.append("running: " + ", ".join(f"trial {r.number} epoch {r.epoch}/{r.epochs or '?'}"
                                             for r in shot.running))
    parts.append("no trial completed yet" if shot.best is None
                 else f"best {shot.best['value']:.4f} (trial {shot.best['number']})")
    if shot.since_best is not None:
        parts.append(Stagnation(**shot.since_best).text())
    if shot.trials_per_hour is not None:
        parts.append(f"{shot.trials_per_hour:.1f} trials/hour")
    if shot.remaining is not None:
        parts.append(f"{shot.remaining} left, ETA {_duration(shot.eta_seconds)}")
    return "; ".join(parts)


def watch(study: optuna.Study, console: Console, refresh: float = REFRESH_SECONDS) -> None:
    """Redraw the snapshot every `refresh` seconds until Ctrl-C; without a terminal (a log, a pipe), print it as
    one line every `refresh` seconds instead."""
    from rich.live import Live

    if not console.is_terminal:
        try:
            while True:
                console.print(line(snapshot(study)), highlight=False, soft_wrap=True)
                console.file.flush()
                time.sleep(refresh)
        except KeyboardInterrupt:
            return
    with Live(render(snapshot(study)), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(refresh)
                live.update(render(snapshot(study)), refresh=True)
        except KeyboardInterrupt:
            pass

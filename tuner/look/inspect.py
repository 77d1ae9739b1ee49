"""Studies and trials as plain, JSON-ready data: what `tune ls`, `show`, `trials` and `best` print.

A trial's row uses Optuna's own names (`number`, `state`, `value`, `params`, `user_attrs`, `intermediate_values`,
`datetime_start`, `datetime_complete`), adds `epochs` (epochs reported) and `duration` in seconds; the trial's
test accuracy is the user attr `test_accuracy` that the objective records. In a multi-objective study `value` is
the first objective's (the metric), `values` maps each objective's name to the trial's value, and `tune show` and
`tune best` give the Pareto front (Optuna's `best_trials`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TuneError
from tuner.look.weights import weights_summary
from tuner.record import CONFIG_ATTR, INPUT_ATTR, PER_CLASS_ATTR, SPEC_ATTR
from tuner.storage import first_value, is_multi_objective, load_study, open_existing_storage

STATES = tuple(state.name for state in TrialState)  # RUNNING, COMPLETE, PRUNED, FAIL, WAITING
SORT_KEYS = ("value", "number", "duration")
TOP_TRIALS = 5
# Importances: PED-ANOVA from 2 completed trials, the rule (and the evaluator) of optuna-dashboard, so that `tune
# show`, `tune plot` and the dashboard agree; below ROUGH_IMPORTANCE_TRIALS they say the figures are rough.
MIN_IMPORTANCE_TRIALS = 2
ROUGH_IMPORTANCE_TRIALS = 10  # PED-ANOVA contrasts the top 10% of trials with the rest: fewer is noisy


def read_storage(url: str | None) -> optuna.storages.BaseStorage:
    """The storage at `url` for reading; an SQLite file that does not exist reads as an empty storage
    (rather than being created by a command that only looks)."""
    return open_existing_storage(url, missing_ok=True)


def open_study(name: str, url: str | None) -> optuna.Study:
    return load_study(name, read_storage(url))


def only_study(url: str | None) -> str:
    """The name of the storage's one study, for commands run without a NAME; a TuneError when there are several
    (naming them) or none."""
    from tuner.storage import default_storage_url, public_url, study_names

    names = study_names(read_storage(url))
    where = public_url(url or default_storage_url())
    if not names:
        raise TuneError(f"no studies in {where}: create one with `tune start`, or point --storage at yours")
    if len(names) > 1:
        raise TuneError(f"{len(names)} studies in {where}: name one ({', '.join(sorted(names))})")
    return names[0]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def duration_seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)


def trial_row(trial: FrozenTrial, names: list[str] | None = None) -> dict[str, Any]:
    """The trial as data; `names`: the study's objective names, for a trial with several values."""
    several = {}
    if trial.values is not None and len(trial.values) > 1:
        names = names or [f"objective {i}" for i in range(len(trial.values))]
        several = {"values": dict(zip(names, trial.values, strict=False))}
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": first_value(trial),
        **several,
        "params": trial.params,
        "user_attrs": trial.user_attrs,
        "epochs": len(trial.intermediate_values),
        "duration": duration_seconds(trial),
        "intermediate_values": trial.intermediate_values,
        "datetime_start": _iso(trial.datetime_start),
        "datetime_complete": _iso(trial.datetime_complete),
    }


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = Counter(t.state.name for t in trials)
    return {state: counts[state] for state in STATES}


def last_activity(trials: list[FrozenTrial]) -> str | None:
    moments = [m for t in trials for m in (t.datetime_start, t.datetime_complete) if m is not None]
    return _iso(max(moments)) if moments else None


def _best(trials: list[FrozenTrial], direction: str) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    pick = max if direction == "maximize" else min
    return pick(complete, key=lambda t: cast(float, first_value(t)))  # a complete trial has a value


def direction_of(study: optuna.Study) -> str:
    """The direction of the study's metric (a multi-objective study's first objective)."""
    return study.directions[0].name.lower()


def objectives_of(study: optuna.Study) -> dict[str, str]:
    """Each objective's name and direction: {"val_accuracy": "maximize", "p95_latency_ms": "minimize"}."""
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    return {name: d.name.lower() for name, d in zip(names, study.directions, strict=False)}


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """A multi-objective study's Pareto front (of the trials that met its constraints), best metric first."""
    sign = -1.0 if direction_of(study) == "maximize" else 1.0
    front = sorted(study.best_trials, key=lambda t: (sign * (first_value(t) or 0.0), t.number))
    return [trial_row(t, study.metric_names) for t in front]


def study_rows(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One summary per study: trials by state, best value and trial, last activity."""
    rows = []
    for frozen in storage.get_all_studies():
        trials = storage.get_all_trials(storage.get_study_id_from_name(frozen.study_name), deepcopy=False)
        direction = frozen.directions[0].name.lower() if len(frozen.directions) == 1 else "multi-objective"
        best = _best(trials, direction) if direction != "multi-objective" else None
        rows.append({
            "name": frozen.study_name,
            "direction": direction,
            "trials": len(trials),
            "states": state_counts(trials),
            "best_value": best.value if best else None,
            "best_trial": best.number if best else None,
            "last_activity": last_activity(trials),
        })
    return rows


def best_trial(study: optuna.Study) -> FrozenTrial:
    best = _best(study.get_trials(deepcopy=False), direction_of(study))
    if best is None:
        name = study.study_name
        raise TuneError(f"study {name!r} has no completed trial yet: run `tune start --study {name}`; see its "
                        f"trials with `tune trials {name}`, export one with `tune export {name} --trial N`")
    return best


def get_trial(study: optuna.Study, number: int) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.number == number:
            return trial
    span = f"trials 0-{len(trials) - 1}" if trials else "no trials yet"
    raise TuneError(f"study {study.study_name!r} has no trial {number} ({span}): see `tune trials "
                    f"{study.study_name}`")


def parse_states(text: str | None) -> tuple[str, ...] | None:
    """`complete,pruned` -> ('COMPLETE', 'PRUNED'); None or empty keeps every state."""
    if not text:
        return None
    names = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in STATES]
    if unknown:
        raise TuneError(f"unknown trial state {unknown[0].lower()!r}: use a comma-separated list of "
                        f"{', '.join(s.lower() for s in STATES)}")
    return names


def _sort_key(sort: str, direction: str) -> Callable[[FrozenTrial], tuple[float, ...]]:
    """Best value first; number ascending; longest duration first. Missing values sort last."""
    def key(trial: FrozenTrial) -> tuple[float, ...]:
        if sort == "number":
            return (0, trial.number)
        raw = first_value(trial) if sort == "value" else duration_seconds(trial)
        if raw is None:
            return (1, trial.number)
        descending = sort == "duration" or direction == "maximize"
        return (0, -raw if descending else raw, trial.number)
    return key


def trial_rows(study: optuna.Study, states: tuple[str, ...] | None = None, sort: str = "number",
               limit: int | None = None) -> list[dict[str, Any]]:
    if sort not in SORT_KEYS:
        raise TuneError(f"unknown sort key {sort!r}: use {', '.join(SORT_KEYS)}")
    trials = [t for t in study.get_trials(deepcopy=False) if states is None or t.state.name in states]
    trials.sort(key=_sort_key(sort, direction_of(study)))
    return [trial_row(t, study.metric_names) for t in trials[:limit]]


def planned_epochs(trial: FrozenTrial, study: optuna.Study) -> int:
    """Epochs the trial would have run without pruning: its config's, else the study spec's, else what it ran."""
    config = trial.user_attrs.get(CONFIG_ATTR)
    if isinstance(config, dict) and isinstance(epochs := config.get("epochs"), int):
        return epochs
    spec = study.user_attrs.get(SPEC_ATTR)
    if isinstance(spec, dict) and isinstance(epochs := spec.get("epochs"), int):
        return epochs
    return len(trial.intermediate_values)


def pruning_summary(study: optuna.Study) -> dict[str, Any]:
    """How many finished trials were pruned after which epoch, and the epochs run against running them all out."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    pruned = [t for t in finished if t.state == TrialState.PRUNED]
    at_epoch = Counter(max(t.intermediate_values, default=0) for t in pruned)
    run = sum(len(t.intermediate_values) for t in finished)
    planned = sum(max(planned_epochs(t, study), len(t.intermediate_values)) for t in finished)
    return {
        "finished": len(finished),
        "pruned": len(pruned),
        "pruned_at_epoch": {str(epoch): at_epoch[epoch] for epoch in sorted(at_epoch)},
        "epochs_run": run,
        "epochs_without_pruning": planned,
        "epochs_saved_fraction": round(1 - run / planned, 4) if planned else 0.0,
    }


def importance_options(study: optuna.Study) -> dict[str, Any]:
    """The evaluator and target optuna-dashboard computes importances with (PED-ANOVA ranks low targets best)."""
    sign = -1.0 if direction_of(study) == "maximize" else 1.0
    return {"evaluator": optuna.importance.PedAnovaImportanceEvaluator(),
            "target": lambda trial: sign * (first_value(trial) or 0.0)}  # of the metric, the first objective


def importances(study: optuna.Study) -> tuple[dict[str, float], str | None]:
    """(importance per parameter, None), or ({}, why there are none yet) with too few trials or no varied param."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return {}, f"needs {MIN_IMPORTANCE_TRIALS} completed trials, has {len(complete)}"
    values: dict[str, set[str]] = {}
    for trial in complete:
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(repr(value))
    varied = [name for name, seen in values.items() if len(seen) > 1]
    if not varied:
        return {}, "no parameter took more than one value"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(study, params=varied, **importance_options(study))
    fixed = sorted(set(values) - set(varied))
    notes = [f"rough: from {len(complete)} completed trials, steadier from {ROUGH_IMPORTANCE_TRIALS}"
             if len(complete) < ROUGH_IMPORTANCE_TRIALS else "", f"not varied: {', '.join(fixed)}" if fixed else ""]
    return found, "; ".join(filter(None, notes)) or None


def trial_model(row: dict[str, Any]) -> str | None:
    """The model a trial trained, as the user wrote it (its config's `model`)."""
    config = row["user_attrs"].get(CONFIG_ATTR)
    return config.get("model") if isinstance(config, dict) else None


def best_per_model(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """The best completed trial of each model, best model first, when the study tried more than one; else {}."""
    best: dict[str, dict[str, Any]] = {}
    for row in trial_rows(study, ("COMPLETE",), sort="value"):
        best.setdefault(trial_model(row) or "?", row)
    return best if len(best) > 1 else {}


def per_class_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A trial's validation accuracy per class (its PER_CLASS_ATTR), worst first; [] for trials that recorded none."""
    recorded = row["user_attrs"].get(PER_CLASS_ATTR)
    if not isinstance(recorded, dict):
        return []
    rows = [{"class": name, "images": scores.get("images"), "accuracy": scores.get("accuracy")}
            for name, scores in recorded.items() if isinstance(scores, dict)]
    return sorted(rows, key=lambda r: (r["accuracy"] is None, r["accuracy"] or 0.0))  # no images: last


def study_detail(study: optuna.Study, top: int = TOP_TRIALS) -> dict[str, Any]:
    """Everything `tune show` prints, as data."""
    trials = study.get_trials(deepcopy=False)
    direction = direction_of(study)
    complete = trial_rows(study, ("COMPLETE",), sort="value", limit=top)
    found, note = importances(study)
    spec = study.user_attrs.get(SPEC_ATTR)
    return {
        "name": study.study_name,
        "direction": direction,
        "metric": spec.get("metric") if isinstance(spec, dict) else None,
        "input": study.user_attrs.get(INPUT_ATTR),
        "trials": len(trials),
        "states": state_counts(trials),
        "last_activity": last_activity(trials),
        "best": complete[0] if complete else None,
        "model": trial_model(complete[0]) if complete else None,
        "best_per_model": best_per_model(study) if complete else {},
        "per_class": per_class_rows(complete[0]) if complete else [],  # the best trial's, worst first
        "top": complete,
        "pruning": pruning_summary(study),
        "importances": found,
        "importances_note": note,
        "weights": weights_summary(study),
        **({"objectives": objectives_of(study), "front": front_rows(study)} if is_multi_objective(study) else {}),
    }


def delete_study(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Delete `study` and the weights its trials kept; returns how many weight files went with it."""
    dropped = drop_kept_weights(study, storage)
    optuna.delete_study(study_name=study.study_name, storage=storage)
    return dropped


def drop_kept_weights(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    from tuner.ship.artifacts import artifact_store_for, drop_weights, kept_weights, storage_url_of

    kept = kept_weights(study)
    if kept:
        url = storage_url_of(storage)
        assert url is not None  # only a study in an RDB storage keeps weights (tuner.ship.artifacts.keep_weights)
        store = artifact_store_for(url)
        for weights in kept:
            drop_weights(study, weights, store)
    return len(kept)

"""`tune start --warm-start OTHER`: a new study begins where another one on the same data got to.

The other study's best trials are queued (Optuna's `enqueue_trial`) with their params fitted to the new space:
a number outside a range is clipped into it, a choice the new space lacks is left to the sampler, each with one
line. Where the two studies train alike (same data, split, metric, model, epochs and fixed values) and a completed
trial's params all lie in the new space, the trial itself is added (`add_trials`), value and curve, as prior
knowledge for the sampler, and is not run again. Everything is checked before the new study is created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import FrozenTrial, TrialState

from tuner.datasets import Splits
from tuner.errors import TuneError
from tuner.record import INPUT_ATTR, WARM_FROM_ATTR, WARM_START_ATTR, spec_in
from tuner.spec import Choices, Domain, Fixed, Range, StudySpec
from tuner.spec.params import domain_text, is_integer_range
from tuner.storage import close_storage, load_study, open_existing_storage, public_url

WARM_TOP = 5  # best trials of the other study that a warm start queues
# What makes two studies' trials alike: a trial of one is a trial of the other when these agree.
ALIKE = ("dataset", "image_size", "model", "pretrained", "epochs", "metric", "validation", "split_seed", "compile")


@dataclass
class WarmStart:
    """What a warm start will write into the new study."""

    source: str  # the other study's name
    storage: str  # its storage, password masked
    queued: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (its trial number, fitted params)
    prior: list[FrozenTrial] = field(default_factory=list)  # trials added as they are, in the new space
    notes: list[str] = field(default_factory=list)  # one line per param clipped or left to the sampler


def distribution(name: str, domain: Range | Choices) -> BaseDistribution:
    """The Optuna distribution `tuner.search.space.suggest` samples `domain` from."""
    if isinstance(domain, Choices):
        return CategoricalDistribution(list(domain.values))
    if is_integer_range(name, domain):
        return IntDistribution(int(domain.low), int(domain.high), step=int(domain.step or 1), log=domain.log)
    return FloatDistribution(domain.low, domain.high, step=domain.step, log=domain.log)


def space_of(spec: StudySpec) -> dict[str, BaseDistribution]:
    return {name: distribution(name, d) for name, d in spec.search.items() if not isinstance(d, Fixed)}


def _fitted(name: str, value: Any, domain: Domain | None) -> tuple[Any, str | None]:
    """(`value` fitted to `domain`, or None to leave it to the sampler; a line when it had to change)."""
    if domain is None:
        return None, f"{name} is not searched by this study: left out"
    if isinstance(domain, Fixed):
        return None, None if domain.value == value else f"{name} is fixed at {domain.value!r} here, not {value!r}"
    if isinstance(domain, Choices):
        if value in domain.values:
            return value, None
        return None, f"{name}={value!r} is not among this study's choices {domain_text(domain)}: the sampler picks it"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"{name}={value!r} is not a number in {domain_text(domain)}: the sampler picks it"
    fitted = min(max(value, domain.low), domain.high)
    if domain.step is not None:
        top = domain.low + math.floor((domain.high - domain.low) / domain.step) * domain.step  # Optuna's own high
        fitted = min(domain.low + round((fitted - domain.low) / domain.step) * domain.step, top)
    if is_integer_range(name, domain):
        fitted = int(round(fitted))
    note = None if fitted == value else f"{name}={value!r} clipped to {fitted!r}, into {domain_text(domain)}"
    return fitted, note


def _alike(a: StudySpec, b: StudySpec) -> bool:
    """Whether a trial of study spec `a` trains exactly as the same params would in study spec `b`."""
    def fixed(spec: StudySpec) -> dict[str, Any]:
        return {k: d.value for k, d in spec.search.items() if isinstance(d, Fixed)}

    return (all(getattr(a, f) == getattr(b, f) for f in ALIKE) and fixed(a) == fixed(b)
            and set(space_of(a)) == set(space_of(b)))


def _in_space(trial: FrozenTrial, space: dict[str, BaseDistribution]) -> bool:
    for name, value in trial.params.items():
        new = space.get(name)
        if new is None:
            return False
        try:
            check_distribution_compatibility(trial.distributions[name], new)
        except ValueError:
            return False
        if not new._contains(new.to_internal_repr(value)):
            return False
    return True


def _best_first(trials: list[FrozenTrial], direction: optuna.study.StudyDirection) -> list[FrozenTrial]:
    sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(trials, key=lambda t: (sign * float(t.value or 0.0), t.number))


@dataclass(frozen=True)
class _Source:
    """What a warm start reads of the other study, before its storage is closed."""

    user_attrs: dict[str, Any]
    direction: optuna.study.StudyDirection
    trials: list[FrozenTrial]


def _source(name: str, storage_url: str) -> _Source:
    """The other study's attrs, direction and trials (read, then its storage closed)."""
    try:
        storage = open_existing_storage(storage_url)
    except TuneError as e:
        raise TuneError(f"--warm-start {name}: {e}") from None
    try:
        study = load_study(name, storage)
        if len(study.directions) > 1:
            raise TuneError("a study with several objectives has no single ranking to warm-start from; name a "
                            "single-objective study")
        return _Source(study.user_attrs, study.direction, study.get_trials(deepcopy=False))
    except TuneError as e:
        raise TuneError(f"--warm-start {name}: {e}") from None
    finally:
        close_storage(storage)


def _check_source(name: str, other: _Source, spec: StudySpec, splits: Splits) -> StudySpec:
    """The other study's spec, when its trials can inform this one: same data, classes and metric."""
    other_spec = spec_in(other.user_attrs)
    if other_spec is None:
        raise TuneError(f"--warm-start {name}: that study was not created by `tune start` (it stores no spec), so "
                        "its data and metric are unknown; warm-start from a tune study")
    if other_spec.dataset != spec.dataset:
        raise TuneError(f"--warm-start {name}: it searched {other_spec.dataset}, this study trains on {spec.dataset}: "
                        "its best params need not suit other data; warm-start from a study on the same dataset")
    classes = (other.user_attrs.get(INPUT_ATTR) or {}).get("classes")
    if classes is not None and list(classes) != list(splits.input_info()["classes"]):
        raise TuneError(f"--warm-start {name}: it was trained on other classes ({', '.join(map(str, classes))[:80]}): "
                        "warm-start from a study on the same classes")
    if other_spec.metric != spec.metric:
        raise TuneError(f"--warm-start {name}: it selected on validation {other_spec.metric}, this study on "
                        f"{spec.metric}: its best trials are not the best by this study's measure")
    return other_spec


def plan_warm_start(source: str, source_url: str, *, name: str, storage_url: str, spec: StudySpec, splits: Splits,
                    top: int = WARM_TOP) -> WarmStart:
    """What a new study `name` (in `storage_url`, running `spec` on `splits`) takes from study `source` in
    `source_url`; a one-line TuneError when nothing can be taken or the studies are not on the same data."""
    if source == name and public_url(source_url) == public_url(storage_url):
        raise TuneError(f"--warm-start {source}: a study cannot warm-start itself; name another study")
    if spec.objectives:
        raise TuneError(f"--warm-start {source}: a study with objectives {','.join(spec.objectives)} starts without "
                        "one (its trials' values are the metric, latency and size): drop --warm-start")
    other = _source(source, source_url)
    other_spec = _check_source(source, other, spec, splits)
    completed = [t for t in other.trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not completed:
        raise TuneError(f"--warm-start {source}: nothing to enqueue: that study has no completed trial yet")
    plan = WarmStart(source, public_url(source_url))
    space = space_of(spec)
    alike = [t for t in completed if _in_space(t, space)] if _alike(other_spec, spec) else []
    plan.prior = [_in_new_space(t, space, source) for t in alike]
    added = {t.number for t in alike}
    noted: dict[str, list[int]] = {}  # each note once, with the trials it concerns
    for trial in _best_first([t for t in completed if t.number not in added], other.direction)[:top]:
        params: dict[str, Any] = {}
        for param, value in trial.params.items():
            fitted, note = _fitted(param, value, spec.search.get(param))
            if note is not None:
                noted.setdefault(note, []).append(trial.number)
            if fitted is not None:
                params[param] = fitted
        if params and params not in [p for _, p in plan.queued]:
            plan.queued.append((trial.number, params))
    plan.notes = [f"warm start: trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))} of {source}: "
                  f"{note}" for note, numbers in noted.items()]
    if not plan.queued and not plan.prior:
        raise TuneError(f"--warm-start {source}: nothing to enqueue: none of its best {top} trials has a value this "
                        f"study can use ({'; '.join(n.split(': ', 2)[-1] for n in plan.notes[:3])})")
    return plan


def _in_new_space(trial: FrozenTrial, space: dict[str, BaseDistribution], source: str) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=trial.value, params=trial.params,
        distributions={name: space[name] for name in trial.params},
        user_attrs={**trial.user_attrs, WARM_FROM_ATTR: {"study": source, "trial": trial.number, "prior": True}},
        intermediate_values=trial.intermediate_values)


def _copied(study: optuna.Study) -> set[tuple[int, bool]]:
    """(source trial, copied as a prior) of the trials a warm start already wrote into `study`."""
    origins = [t.user_attrs.get(WARM_FROM_ATTR) for t in study.get_trials(deepcopy=False)]
    return {(o["trial"], o.get("prior") is True) for o in origins if isinstance(o, dict) and "trial" in o}


def apply_warm_start(study: optuna.Study, plan: WarmStart) -> list[str]:
    """Write the plan into the (new) study; returns the lines to tell the user. The study is marked as being
    warm-started first and as done last, so that a start interrupted half-way writes only what is missing when run
    again."""
    record = {"study": plan.source, "storage": plan.storage, "queued": len(plan.queued), "added": len(plan.prior)}
    study.set_user_attr(WARM_START_ATTR, {**record, "done": False})
    copied = _copied(study)
    study.add_trials([t for t in plan.prior if (t.user_attrs[WARM_FROM_ATTR]["trial"], True) not in copied])
    for number, params in plan.queued:
        if (number, False) not in copied:
            study.enqueue_trial(params, user_attrs={WARM_FROM_ATTR: {"study": plan.source, "trial": number}})
    study.set_user_attr(WARM_START_ATTR, record)
    added = f", and {len(plan.prior)} completed trials added as prior knowledge" if plan.prior else ""
    return [*plan.notes, f"Warm start from study {plan.source}: its best {len(plan.queued)} trial(s) queued to run "
                         f"first{added}"]


def check_new(name: str, source: str, existing: optuna.Study | None) -> bool:
    """Whether to warm-start study `name` from `source`: a new (or empty) study, yes; one warm-started from
    `source` already, no (a rerun of the same command); one with trials of its own is refused."""
    if existing is None:
        return True
    done = existing.user_attrs.get(WARM_START_ATTR)
    if isinstance(done, dict) and done.get("study") == source:
        return done.get("done") is False  # interrupted while it was written: write the rest
    count = len(existing.get_trials(deepcopy=False))
    if count:
        raise TuneError(f"--warm-start {source}: study {name!r} exists already with {count} trials; a warm start "
                        "begins a new study: use a new --study NAME")
    return True

"""Running trials of one study, in this process or in worker processes (tuner.search.pool), with live progress,
and what `tune start` prints when they are done."""

from __future__ import annotations

import os
import shlex
import time
from collections import Counter

import optuna
from rich.console import Console

from tuner.datasets import Splits
from tuner.record import (
    INTERRUPTED,
    REQUEUED_FROM,
    RETRY_HISTORY,
    STOPPED_ATTR,
    TEST_ATTR,
    run_of,
    trial_note,
)
from tuner.search.checkpoints import sweep as sweep_checkpoints
from tuner.search.constraints import constraints_line
from tuner.search.gpus import threads_per_worker
from tuner.search.interrupts import sigterm_as_interrupt
from tuner.search.objective import Objective as TrainingObjective
from tuner.search.pool import WorkersFailed, run_pool
from tuner.search.progress import SearchProgress, clock
from tuner.search.session import Session
from tuner.search.stopping import FlatStop, best_of, stopped_record
from tuner.search.trial_loop import Budget, Objective, new_run_id, run_trials, tagged
from tuner.search.worker import WorkerJob
from tuner.spec import StudySpec
from tuner.storage import first_value, is_multi_objective, public_url, reap_stale_trials


def run_search(study: optuna.Study, spec: StudySpec, splits: Splits, *, n_trials: int | None,
               timeout: float | None, seed: int | None, keep_top: int = 3, console: Console | None = None,
               run_id: str | None = None, stop: FlatStop | None = None) -> None:
    """Run `n_trials` more trials (or until `timeout` seconds) of `spec` in this process.

    A trial that fails for its own reasons (out of memory) does not stop the search; Ctrl-C or SIGTERM marks the
    running trial FAIL and raises KeyboardInterrupt, leaving the study resumable. A lost database is waited for
    a while (tuner.search.trial_loop.run_trials). `stop` ends the search before a trial once it finds it flat.
    """
    console = console or Console(stderr=True)
    deadline = None if timeout is None else time.time() + timeout
    with SearchProgress(study, n_trials, spec.epochs, console, deadline) as progress, sigterm_as_interrupt():
        objective = TrainingObjective(spec, splits, seed, on_epoch=progress.on_epoch, keep_top=keep_top,
                                      on_batch=progress.on_batch)
        run_trials(study, tagged(objective, run=run_id or new_run_id(), trials=n_trials,
                                 gpu=os.environ.get("CUDA_VISIBLE_DEVICES")),
                   Budget(n_trials), deadline=deadline, callbacks=[progress.on_trial_end],
                   keep_going=lambda: stop is None or stop.check(study) is None)


def run(session: Session, slots: list[str | None], *, n_trials: int | None, timeout: float | None,
        seed: int | None, keep_top: int = 3, console: Console | None = None,
        objective: Objective | None = None) -> None:
    """Run `n_trials` trials of the session's study: in this process for one unpinned worker, else in one worker
    process per slot (tuner.search.pool). Trials whose worker died before this run are failed (and retried) at
    the start, by `prepare`, and again at the end."""
    console = console or Console(stderr=True)
    stop = FlatStop(session.spec.metric, session.validation_images) if session.spec.stop_when_flat else None
    if session.study.user_attrs.get(STOPPED_ATTR):  # a search runs again: an earlier flat stop is history
        session.study.set_user_attr(STOPPED_ATTR, None)
    session.asked, started = n_trials, time.time()
    try:
        if slots == [None]:
            assert session.splits is not None, "an in-process session holds its data"
            run_search(session.study, session.spec, session.splits, n_trials=n_trials, timeout=timeout, seed=seed,
                       keep_top=keep_top, console=console, run_id=session.run_id, stop=stop)
        else:
            run_pool(session.study, worker_job(session, slots, n_trials=n_trials, timeout=timeout, seed=seed,
                                               keep_top=keep_top, objective=objective), slots, console, stop)
    except KeyboardInterrupt:
        session.ended = f"interrupted (Ctrl-C or SIGTERM) after {_ran_text(session)}"
        raise
    except WorkersFailed:
        session.ended = f"a worker failed, after {_ran_text(session)}"
        raise
    session.ended = ending(session, stop, timeout, time.time() - started)
    reap_stale_trials(session.study)
    sweep_checkpoints(session.study)
    if stop is not None and stop.reason is not None:
        session.stopped = stop.reason
        session.study.set_user_attr(STOPPED_ATTR, stopped_record(stop.reason, session.study))


def _ran_text(session: Session) -> str:
    asked = session.asked
    ran = 0 if asked is None else asked - trials_left(session, asked)
    return f"{ran} of {asked} trials" if asked is not None else "its trials"


def ending(session: Session, stop: FlatStop | None, timeout: float | None, seconds: float) -> str:
    """Why a search that returned ended: flat, its trials done, or --timeout (and by how much its last trial
    outlasted it)."""
    if stop is not None and stop.reason is not None:
        return stop.reason
    asked = session.asked
    left = 0 if asked is None else trials_left(session, asked)
    if timeout is None or seconds < timeout or not left:
        return f"trials done: {_ran_text(session)} ran" if asked is not None else "no trial left to run"
    over = f", the last one running on {clock(seconds - timeout)} past it to its end" if seconds > timeout + 1 else ""
    return (f"timeout: --timeout {timeout:g} s passed after {_ran_text(session)}{over} (the search took "
            f"{clock(seconds)}); {left} never started. Run them: {resume_command(session, left)}")


def worker_job(session: Session, slots: list[str | None], *, n_trials: int | None, timeout: float | None,
               seed: int | None, keep_top: int, objective: Objective | None = None) -> WorkerJob:
    """What each worker process of a pool gets: the session's study, storage, spec and data, as plain values."""
    return WorkerJob(
        study_name=session.study.study_name, storage_url=session.storage_url, spec=session.spec,
        data_dir=session.data_dir, device=session.device, seed=seed,
        sampler_seed=None if seed is None else seed + len(session.study.trials), keep_top=keep_top,
        threads=threads_per_worker(len(slots)), run=session.run_id, run_trials=n_trials,
        heartbeat_interval=session.heartbeat_interval, grace_period=session.grace_period,
        deadline=None if timeout is None else time.time() + timeout, objective=objective)



def _storage_flag(session: Session) -> str:
    return f" --storage {shlex.quote(session.storage_url)}" if session.explicit_storage else ""


def _data_flag(session: Session) -> str:
    return f" --data-dir {shlex.quote(session.data_dir)}" if session.explicit_data_dir else ""


def resume_command(session: Session, trials: int | None = None) -> str:
    """The command that goes on with the session's study; `trials`: how many more it runs."""
    data = _data_flag(session)
    name = shlex.quote(session.spec.name)
    study = f"--study {name}" if session.command == "start" else name
    more = f" --trials {trials}" if trials else ""
    return f"tune {session.command} {study}{_storage_flag(session)}{data}{more}"


def trials_left(session: Session, asked: int) -> int:
    """Of the `asked` trials of this invocation, those still to run: a trial it interrupted runs again."""
    done = [t for t in session.study.get_trials(deepcopy=False) if run_of(t) == session.run_id
            and t.state.is_finished() and trial_note(t) != INTERRUPTED]
    return max(0, asked - len(done))


def interrupted(session: Session) -> tuple[int, int]:
    """(trials this invocation's Ctrl-C or SIGTERM stopped, how many of them are queued to run again)."""
    trials = session.study.get_trials(deepcopy=False)
    stopped = {t.number for t in trials if run_of(t) == session.run_id and trial_note(t) == INTERRUPTED}
    queued = {t.system_attrs.get(REQUEUED_FROM) for t in trials if t.state == optuna.trial.TrialState.WAITING}
    queued |= {(t.system_attrs.get(RETRY_HISTORY) or [None])[-1] for t in trials
               if t.state == optuna.trial.TrialState.WAITING}
    return len(stopped), len(stopped & queued)


def interrupt_note(session: Session, asked: int) -> str:
    """What Ctrl-C did, and the command that goes on."""
    stopped, queued = interrupted(session)
    if not stopped:
        what = "Interrupted between trials."
    elif queued == stopped:
        what = (f"Interrupted: {'the running trial is' if stopped == 1 else f'the {stopped} running trials are'} "
                "marked FAIL and queued again, to go on from the last epoch saved.")
    else:
        what = (f"Interrupted: {stopped} running trial(s) marked FAIL, {queued} of them queued again (the others "
                "run from the start with new params).")
    left = trials_left(session, asked)
    return f"{what} Resume with: {resume_command(session, left)}" if left else f"{what} No trial was left to run."


STATE_ORDER = ("complete", "pruned", "fail", "running", "waiting")


def _states_text(trials: list[optuna.trial.FrozenTrial]) -> str:
    counts = Counter(t.state.name.lower() for t in trials)
    return ", ".join(f"{counts[state]} {state}" for state in STATE_ORDER if counts[state])


def opening(session: Session) -> list[str]:
    """What `tune start` and `tune worker` say before the first trial: whether the study is new (and its database
    file too) or resumed, with its trials and best value so far, and what the resume changed in its spec."""
    name, where = session.spec.name, public_url(session.storage_url)
    if not session.resumed:
        fresh = " (a new database file)" if session.new_database is not None else ""
        return [f"New study {name} in {where}{fresh}"]
    trials = session.study.get_trials(deepcopy=False)
    states = f" ({_states_text(trials)})" if trials else ""
    verb = "Resuming" if session.command == "start" else "Joining"
    lines = [f"{verb} {name}: {len(trials)} trials{states}, {_best_text(session.study)}"]
    if session.changes:
        lines.append(f"Changed for {name} from now on: {'; '.join(session.changes)}")
    return lines


def _best_text(study: optuna.Study) -> str:
    best = best_of(study)
    return "no completed trial yet" if best is None else f"best {first_value(best):.4f}"


def summary(session: Session) -> str:
    """What `tune start` prints at the end: trials by state, the best trial, and where to look next."""
    study, name = session.study, shlex.quote(session.spec.name)
    counts = Counter(t.state.name for t in study.trials)
    lines = [f"Study {session.spec.name!r} in {public_url(session.storage_url)}",
             f"Trials: {len(study.trials)} (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"]
    best = best_of(study)  # a multi-objective study's: the most accurate trial of its Pareto front
    if best is None:
        lines.append("Best: no trial completed yet")
    else:
        test = best.user_attrs.get(TEST_ATTR)
        test_text = f", test accuracy {test:.4f}" if test is not None else ""
        if is_multi_objective(study):
            lines.append(f"Pareto front: {len(study.best_trials)} trial(s) of {', '.join(study.metric_names or [])}"
                         f"; the best {session.spec.metric} of it:")
        lines.append(f"Best: trial {best.number}, validation {session.spec.metric} {first_value(best):.4f}"
                     f"{_objectives_text(study, best)}{test_text}")
        lines.append("  " + " ".join(f"{k}={_param_text(v)}" for k, v in best.params.items()))
    deployment = constraints_line(study, session.spec.constraints)  # tuner.search.constraints
    if deployment is not None:
        lines.append(deployment)
    if session.stopped:
        lines.append(f"Stopped: {session.stopped}. To search on anyway: {resume_command(session)} "
                     "--no-stop-when-flat")
    elif session.ended:
        lines.append(f"Stopped: {session.ended}")
    if counts.get("WAITING"):
        lines.append(f"Queued:  {counts['WAITING']} trial(s) wait with fixed params (retries of interrupted trials, "
                     "or of trials whose worker died, each from its checkpoint; or warm-start trials): the next run "
                     "starts with them")
    flag = _storage_flag(session)
    lines += [f"Inspect: tune show {name}{flag}   |   tune dashboard{flag}",
              f"Export:  tune export {name}{flag} -o best.yaml && tune train best.yaml{_data_flag(session)}"]
    if not (session.ended or "").startswith("interrupted"):  # else the interrupt's note says how to go on
        lines.append(f"Resume:  {resume_command(session)}")
    return "\n".join(lines)


def _objectives_text(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """", p95_latency_ms 0.0512" for the objectives after the metric (none in a single-objective study)."""
    names = study.metric_names or []
    return "".join(f", {name} {value:.4g}" for name, value in zip(names[1:], (trial.values or [])[1:], strict=False))


def _param_text(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

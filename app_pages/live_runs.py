"""The live training runs of every session of this server: a registry by run folder, so that a
reloaded page finds its run again (`keep_in_url`), and a cap on how many train at once,
so that visitors of a small server (the 2-vCPU Space) do not split its cores between their runs."""

from __future__ import annotations

import math
import os
import threading
import uuid
from typing import Any, Callable, Iterable, Optional, Union

import streamlit as st
import torch

from weat_core import lens

from app_pages.common import env_minutes

# finished jobs the registry holds beside the running ones (each holds its model, 2.6 MB for
# weatnet_s): a reload finds a run that has just ended; older ones are in the kept runs' table
KEEP_FINISHED = 16


def max_live_runs() -> int:
    """How many live runs this server trains at once: $WEAT_MAX_LIVE_RUNS, else one for every two
    of torch's threads (a run uses them all; two side by side each go at about half the speed)."""
    text = os.environ.get("WEAT_MAX_LIVE_RUNS", "").strip()
    if text:
        try:
            return max(1, int(text))
        except ValueError:
            pass  # a typo does not stop the app: the default below
    return max(1, torch.get_num_threads() // 2)


# a run still going at this many times $WEAT_MAX_RUN_MINUTES stops: runs are planned to fit the
# limit, and the rest absorbs a slower pace (other visitors' pages share the cores)
OVERRUN = 1.25


def max_run_minutes() -> Optional[float]:
    """How long one live run may train on this server: $WEAT_MAX_RUN_MINUTES (the public Space sets
    it, so that no visitor holds the place for hours), else None, no limit (a teacher's laptop)."""
    return env_minutes("WEAT_MAX_RUN_MINUTES")


def time_limit_s() -> Optional[float]:
    """When a live run still going is stopped (after its batch under way, its finished epochs
    kept): OVERRUN × the limit, in seconds; None without a limit."""
    minutes = max_run_minutes()
    return None if minutes is None else OVERRUN * 60 * minutes


@st.cache_resource
def _registry() -> tuple[dict[str, tuple[str, Any]], threading.Lock]:
    return {}, threading.Lock()


def jobs() -> dict[str, tuple[str, Any]]:
    """Every session's live runs by run folder name (a made-up key for a run not kept on disk),
    each as (its name, its `lens.TrainingJob`)."""
    return _registry()[0]


def running() -> list[tuple[str, Any]]:
    """(name, job) of the runs training now, on any session, oldest first."""
    return sorted((v for v in jobs().values() if v[1].running), key=lambda v: v[1].started)


def _planned(job: Any) -> int:  # a time budget's epoch count is known once its first epoch ends
    return job.history[-1].get("epochs", job.config.epochs) if job.history else job.config.epochs


def time_left(job: Any) -> str:
    """How long a run has left, from its finished epochs' mean time, or the server's time limit
    where that ends it sooner ("" before its first epoch ends on a server without a limit)."""
    times = [r["time_s"] for r in job.history if isinstance(r.get("time_s"), (int, float))]
    limit = getattr(job, "time_left_s", None)
    if not times:
        return "" if limit is None else f", at most {_minutes(limit, up=True)} left"
    s = sum(times) / len(times) * max(0, _planned(job) - len(job.history))
    s = s if limit is None else min(s, limit)
    return ", under a minute left" if s < 60 else f", about {_minutes(s)} left"


def _minutes(s: float, up: bool = False) -> str:
    """`s` seconds in whole minutes, rounded (`up`: rounded up, for an upper bound)."""
    m = math.ceil(s / 60) if up else round(s / 60)
    return "a minute" if m <= 1 else f"{m} minutes"


def _what(job: Any) -> str:
    """A run as a stranger can place it (its name, "weat-adv run 1", tells nothing to another visitor)."""
    c = job.config
    images = f" on {c.limit:,} images" if isinstance(getattr(c, "limit", None), int) else ""
    return f"a {getattr(c, 'method', 'training')} run{images}"


def busy_message() -> Optional[str]:
    """Why a new run cannot start now (the server trains its most at once), or None."""
    going = running()
    if len(going) < max_live_runs():
        return None
    names = ", ".join(f"{_what(job)} ({len(job.history)} of {_planned(job)} epochs done{time_left(job)})" for _, job in going)
    most = max_live_runs()
    return (f"This server trains at most {most} run{'s' if most > 1 else ''} at a time, and "
            f"{'that many are' if most > 1 else 'one is'} training now: {names}. Start yours once "
            f"{'one has' if most > 1 else 'it has'} ended; *Runs kept on this machine* below shows "
            f"{'their' if most > 1 else 'its'} epochs. (Whoever runs the app sets the limit with "
            "WEAT_MAX_LIVE_RUNS.)")


def fresh_name(method: str, also: Iterable[str] = ()) -> str:
    """"{method} run N" with the smallest N that no session's live run, no run kept on this
    machine and no name in `also` has: visitors' runs keep apart in the kept runs' table."""
    taken = {n for n, _ in jobs().values()} | set(also)
    taken |= {r["name"] for r in lens.kept_runs(lens.live_runs_dir())}
    n = 1
    while f"{method} run {n}" in taken:
        n += 1
    return f"{method} run {n}"


def start(key: Optional[str], name: Union[str, Callable[[], str]],
          make: Callable[[], Any]) -> tuple[Optional[Any], Optional[str]]:
    """Start the job `make()` builds (a `lens.TrainingJob`, not yet started) under `key` (its run
    folder's name; None for a run not kept) and `name` (or the name it returns, chosen under the
    lock, e.g. `fresh_name`; a job that `make` named keeps its own), unless the server already
    trains its most: returns (the started job, None) or (None, why not). Finished jobs beyond the
    newest KEEP_FINISHED leave the registry."""
    registry, lock = _registry()
    with lock:  # two sessions pressing Start at once take one place each, not the same one
        if why := busy_message():
            return None, why
        name = name() if callable(name) else name  # under the lock: two new runs get two names
        job = make()
        if not getattr(job, "name", ""):
            job.name = name
        job = job.start()
        registry[key or f"unkept-{uuid.uuid4().hex[:8]}"] = (name, job)
        done = sorted((k for k, (_, j) in registry.items() if not j.running), key=lambda k: registry[k][1].started)
        for k in done[:max(0, len(done) - KEEP_FINISHED)]:
            del registry[k]
    return job, None


def keep_in_url() -> None:
    """A live training run outlives a reload on any page: the session's newest run kept on disk
    rides in the URL as ?run=<its folder> (Streamlit drops query parameters between pages, so
    every page sets it again), and a new session (the reload) with that parameter takes the run
    back from the server's registry of running jobs."""
    mine = st.session_state.setdefault("train_jobs", {})
    key = st.query_params.get("run")
    back = jobs().get(key or "")
    if back and all(j is not back[1] for j in mine.values()):
        mine[back[0]] = back[1]
    kept = [j for j in mine.values() if j.config.out]
    if kept and key != os.path.basename(kept[-1].config.out):
        st.query_params["run"] = os.path.basename(kept[-1].config.out)

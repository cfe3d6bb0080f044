"""A live training run in a background thread (`TrainingJob`), and the runs such jobs keep on disk
(`live_runs_dir`, `kept_runs`, `prune_kept_runs`); reading their per-epoch logs is `training_log`."""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from torch import nn

from .. import WeatError

log = logging.getLogger(__name__)

KEPT_RUN = "live.json"  # what a kept run folder says of itself: its name, when it started and how it ended
KEEP_RUNS = 50  # kept run folders a new run leaves (the oldest go first): about 8 MB each for weatnet_s
# how long a process that exits waits for its running jobs to finish their batch under way (`_stop_at_exit`):
# under Docker's 10-s grace between SIGTERM and SIGKILL, as a Space is stopped or restarted
EXIT_WAIT_S = 8.0


def live_runs_dir() -> Path:
    """Where the app keeps its live training runs: $WEAT_RUNS_DIR, else ~/.cache/weat_lens/runs."""
    env = os.environ.get("WEAT_RUNS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "weat_lens" / "runs"


def kept_runs(root: Union[str, Path]) -> list[dict[str, Any]]:
    """The run folders `TrainingJob`s kept under `root`, newest first: each one's name, folder,
    start, method, planned and finished epochs, its last epoch's record, whether it holds weights
    (a finished epoch) and how it ended ("finished", "stopped…", "failed: …", or None while it
    runs, or where the process running it died)."""
    runs = []
    for d in Path(root).glob(f"*/{KEPT_RUN}"):
        try:
            meta = json.loads(d.read_text())
            records = [json.loads(s) for s in (d.parent / "log.jsonl").read_text().splitlines()] \
                if (d.parent / "log.jsonl").is_file() else []
        except (OSError, ValueError):  # a folder being written, or not one of ours
            continue
        t = meta.get("training") or {}
        runs.append({"name": meta.get("name", d.parent.name), "path": d.parent, "started": meta.get("started", 0.0),
                     "method": t.get("method"), "epochs": len(records),
                     "planned": records[-1].get("epochs", t.get("epochs")) if records else t.get("epochs"),
                     "last": records[-1] if records else {}, "weights": (d.parent / "LATEST").is_file(),
                     "ended": meta.get("ended"), "training": t})
    return sorted(runs, key=lambda r: -r["started"])


def prune_kept_runs(root: Union[str, Path], keep: int = KEEP_RUNS, spare: Sequence[Path] = ()) -> list[Path]:
    """Delete the oldest kept run folders under `root` beyond the newest `keep`, never those in
    `spare` (runs still going); returns what it deleted."""
    spare = {Path(p).resolve() for p in spare}
    gone = []
    for r in kept_runs(root)[keep:]:
        if r["path"].resolve() not in spare:
            shutil.rmtree(r["path"], ignore_errors=True)
            gone.append(r["path"])
    return gone


@dataclass(eq=False)  # a job is itself, not equal to another with the same fields (and hashable)
class TrainingJob:
    """A `weat_core.train.train` run in a background thread, so a UI can poll its history,
    ask it to stop (it ends cleanly after the current batch) and pick up the model. With
    `config.out` the run is also kept on disk: every finished epoch's weights and record (the
    run folder of `train`), and `live.json` with `name`, the start and, once over, how it
    ended, so that `kept_runs` finds it after the process that ran it is gone."""

    config: Any
    data: Optional[tuple] = None
    name: str = ""
    resume: bool = False  # continue the run kept in `config.out` from its last finished epoch
    # a server's limit: the run stops (after the batch under way) once it has trained this long here
    time_limit_s: Optional[float] = None
    timed_out: bool = False  # it stopped at `time_limit_s`
    shut_down: bool = False  # it stopped because its process exited (`_stop_at_exit`)
    history: list = field(default_factory=list)
    result: Any = None
    error: Optional[str] = None
    started: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: Optional[threading.Thread] = field(default=None, repr=False)
    _began: Optional[float] = field(default=None, repr=False)  # time.monotonic() when `start` ran

    def _keep(self, **ended: Any) -> None:
        if not self.config.out:
            return
        out = Path(self.config.out)
        meta = {"name": self.name or out.name, "started": self.started,
                "training": asdict(self.config), **ended}
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{KEPT_RUN}.tmp"
        tmp.write_text(json.dumps(meta, default=str))
        os.replace(tmp, out / KEPT_RUN)

    def start(self) -> "TrainingJob":
        try:
            from ..train import train
        except ImportError as e:
            raise WeatError(f"training is not available in this installation ({e})") from None
        if self.resume:
            from ..train.run_folder import last_epoch

            if not self.config.out:
                raise WeatError("only a run kept in a folder (config.out) can be continued")
            out = Path(self.config.out)
            try:  # the epochs so far, in the history as in the folder; the run keeps its name and start
                meta = json.loads((out / KEPT_RUN).read_text()) if (out / KEPT_RUN).is_file() else {}
                records = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()] \
                    if (out / "log.jsonl").is_file() else []
                # `train` goes on after the newest checkpoint's epoch, dropping later records
                done = last_epoch(out)
                self.history = [r for r in records if r["epoch"] <= done]
            except (OSError, ValueError, IndexError, KeyError) as e:
                raise WeatError(f"cannot continue {out}: {e}") from None
            self.name = self.name or meta.get("name", "")
            self.started = meta.get("started", self.started)
        self._keep()

        self._began = t0 = time.monotonic()

        def should_stop() -> bool:
            if self.time_limit_s is not None and not self._stop.is_set() and time.monotonic() - t0 > self.time_limit_s:
                self.timed_out = True
                self._stop.set()
            return self._stop.is_set()

        def run():
            try:
                self.result = train(self.config, data=self.data, callback=lambda e, r: self.history.append(dict(r)),
                                     should_stop=should_stop, progress=False, resume=self.resume)
            except WeatError as e:
                self.error = str(e)
            except Exception as e:  # noqa: BLE001 - surfaced to the UI instead of killing the thread silently
                log.exception("training failed")
                self.error = f"training failed: {type(e).__name__}: {e}"
            # the images go once the run is over: a UI keeps finished jobs (their model, their
            # history), and the 50,000 CIFAR-10 training images take 154 MB
            self.data = None
            try:
                self._keep(ended=f"failed: {self.error}" if self.error else self.ended)
            except OSError as e:
                log.warning("could not mark %s as ended: %s", self.config.out, e)

        self._thread = threading.Thread(target=run, name="weat-train", daemon=True)
        with _lock:
            _jobs.add(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def time_left_s(self) -> Optional[float]:
        """Seconds until `time_limit_s` stops the run (None without a limit, or before `start`)."""
        if self.time_limit_s is None or self._began is None:
            return None
        return max(0.0, self.time_limit_s - (time.monotonic() - self._began))

    @property
    def ended(self) -> str:
        """How a run that did not fail ended: "finished", "stopped", "stopped at the time
        limit" (`time_limit_s`), "N-minute" named, or "stopped when the app shut down"."""
        if not self.stopping:
            return "finished"
        if self.shut_down:
            return "stopped when the app shut down"
        return f"stopped at the {self.time_limit_s / 60:.4g}-minute limit" if self.timed_out else "stopped"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def model(self) -> Optional[nn.Module]:
        return None if self.result is None else self.result.model


# The jobs started in this process. A daemon thread still in torch's C++ code when the interpreter
# exits aborts it ("terminate called without an active exception", exit status 134), and its run
# is left without an end; so at exit every running job is asked to stop and given EXIT_WAIT_S to
# finish its batch under way, mark itself "stopped when the app shut down" and leave cleanly.
_jobs: "weakref.WeakSet[TrainingJob]" = weakref.WeakSet()
_lock = threading.Lock()


@atexit.register
def _stop_at_exit() -> None:
    with _lock:
        running = [j for j in _jobs if j.running]
    for j in running:
        if not j.stopping:  # (one stopped already, by Stop or its time limit, ends as that)
            j.shut_down = True
            j.stop()
    end = time.monotonic() + EXIT_WAIT_S
    for j in running:
        j.join(max(0.0, end - time.monotonic()))
    if late := [j.name or str(j.config.out) for j in running if j.running]:
        log.warning("exiting while training %s: its batch under way did not end in time", ", ".join(late))

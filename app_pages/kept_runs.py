"""The live runs the training page keeps on disk (`lens.live_runs_dir()`): a folder for each new
run, and the list of kept runs, whose weights go back into the model picker and which, stopped or
interrupted, go on from their last finished epoch."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional

import pandas as pd
import streamlit as st

from app_pages import common, live_runs, model_store
from weat_core import WeatError, lens
from weat_core.export import train_command


def new_folder(method: str) -> Optional[Path]:
    """A new folder under `lens.live_runs_dir()` for a live run (the oldest kept runs beyond
    `lens.KEEP_RUNS` make room), or None, with a warning, where it cannot be written."""
    root = lens.live_runs_dir()
    going = [Path(j.config.out) for _, j in live_runs.running() if j.config.out]
    try:
        lens.prune_kept_runs(root, lens.KEEP_RUNS - 1, spare=going)
        out = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{uuid.uuid4().hex[:6]}"
        out.mkdir(parents=True)
        return out
    except OSError as e:
        st.warning(f"This run is not kept on disk ({e}): set WEAT_RUNS_DIR to a folder this app may write to. It "
                   "lives only as long as this browser session.")
        return None


def drop_folder(out: Optional[Path]) -> None:
    """Remove a folder `new_folder` made for a run that did not start."""
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)


def _when(r: dict) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"]))


def logs(skip: list[str]) -> dict[str, pd.DataFrame]:
    """The per-epoch logs of the kept runs with a finished epoch, but for the folders in `skip`
    (this session's runs, whose curves the page has already), for the recorded runs' charts."""
    mine = {Path(p).resolve() for p in skip}
    out = {}
    for r in lens.kept_runs(lens.live_runs_dir()):
        if r["epochs"] and r["path"].resolve() not in mine:
            try:
                out[f"{r['name']}, {_when(r)} (kept here)"] = lens.load_training_log(r["path"])
            except WeatError as e:
                st.warning(f"{r['path']}: {e}")
    return out


def _run_state(r: dict) -> str:
    here = live_runs.jobs().get(r["path"].name)
    if here and here[1].running:
        return "running"
    if r["planned"] and r["epochs"] >= r["planned"]:  # finished here, or continued with `train --resume`
        return "finished"
    return r["ended"] or f"interrupted after epoch {r['epochs']}"


def _use_kept(path: str, label: str) -> None:  # a callback: it runs before the picker is drawn
    from weat_core.checkpoints import load

    try:
        model = load(path, device=common.ctx().device)
    except WeatError as e:
        st.session_state["tr_kept_error"] = f"{label}: {e}"
        return
    st.session_state["model_choice"] = model_store.register_trained(model, label)
    st.session_state["tr_switch"] = True  # the live view reruns the whole app: the sidebar shows it


def view() -> None:
    """The runs kept on disk (this machine's, this session's too): a table, and the weights of a
    run's last finished epoch back in the model picker."""
    root = lens.live_runs_dir()
    kept = lens.kept_runs(root)
    if not kept:
        return
    with st.expander(f"Runs kept on this machine ({len(kept)})"):
        st.caption(f"Every live run keeps each finished epoch's weights and record in a folder of `{root}` (set "
                   "WEAT_RUNS_DIR to move it), so a reload, a closed tab or a stopped server loses at most the epoch "
                   f"under way; a reloaded page finds its running run again. The newest {lens.KEEP_RUNS} are kept.")
        rows = [{"run": r["name"], "started": _when(r),
                 "method": r["method"], "epochs": f"{r['epochs']}/{r['planned'] or '?'}",
                 "clean": r["last"].get("test_clean_acc"), "robust (PGD)": r["last"].get("test_pgd_acc"),
                 "ΔE": r["last"].get("delta_e"), "state": _run_state(r), "folder": r["path"].name} for r in kept]
        numbers = {"clean": float, "robust (PGD)": float, "ΔE": float}  # no epoch yet: blank, not "None"
        st.dataframe(pd.DataFrame(rows).astype(numbers), hide_index=True, column_config={
            "clean": st.column_config.NumberColumn(format="percent"),
            "robust (PGD)": st.column_config.NumberColumn(format="percent"),
            "ΔE": st.column_config.NumberColumn(format="%+.3f")})
        usable = [r for r in kept if r["weights"]]
        if not usable:
            return
        label: dict[str, str] = {}
        for r in usable:  # unique labels: Streamlit keeps a selectbox's value by its label
            text = f"{r['name']}, {_when(r)}"
            label[str(r["path"])] = text if text not in label.values() else f"{text} · {r['path'].name}"
        pick = st.selectbox("Kept run", list(label), format_func=label.get, key="tr_kept_pick")
        r = next(r for r in usable if str(r["path"]) == pick)
        state = _run_state(r)
        unfinished = state.startswith(("stopped", "interrupted"))
        buttons = st.container(horizontal=True)
        buttons.button("Use its last finished epoch", key="tr_kept_use", on_click=_use_kept,
                       args=(pick, f"{label[pick]} (epoch {r['epochs']})"))
        if unfinished:
            buttons.button("Continue it here", key="tr_kept_continue", on_click=_continue, args=(r,),
                           help="Trains its remaining epochs in this app, from its last finished one, on the same "
                                "images and settings.")
        if err := st.session_state.pop("tr_kept_error", None):
            st.error(err)
        t = _settings(r)
        if unfinished and t.get("dataset") not in (None, common.SYNTHETIC):
            st.caption("Or continue it from the command line (in the repository):")
            st.code(train_command(t, resume=True), language="bash")


def _settings(r: dict) -> dict:
    """A kept run's training settings, a time budget replaced by the epoch count it chose."""
    t = r["training"]
    return {**t, "epochs": r["planned"], "minutes": None} if t.get("minutes") and r["planned"] else t


def _continue(r: dict) -> None:  # a callback: the new job is there when the live view draws
    from weat_core.checkpoints import resolve
    from weat_core.train import TrainConfig

    if busy := live_runs.busy_message():  # before its images load
        st.session_state["tr_kept_error"] = busy
        return
    t = _settings(r)
    try:
        classes = len(json.loads((resolve(r["path"]) / "config.json").read_text())["classes"])
        cfg = TrainConfig(**{**{k: v for k, v in t.items() if k in TrainConfig.__dataclass_fields__},
                             "device": common.ctx().device})
        # the images it trained on: the first `limit` of its dataset's training split and the test
        # subset, loaded as the page loaded them for it
        data = (common.load_images(cfg.dataset, "train", cfg.limit, classes),
                common.load_images(cfg.dataset, "test", cfg.eval_size, classes))
        name = f"{r['name']} (continued)"
        job, busy = live_runs.start(r["path"].name, name, lambda: lens.TrainingJob(
            cfg, data, name=r["name"], resume=True, time_limit_s=live_runs.time_limit_s()))
    except (WeatError, OSError, ValueError, TypeError, KeyError) as e:
        st.session_state["tr_kept_error"] = f"{r['name']}: cannot continue it ({e})"
        return
    if job is None:
        st.session_state["tr_kept_error"] = busy
        return
    st.session_state.setdefault("train_jobs", {})[name] = job
    st.query_params["run"] = r["path"].name
    st.session_state["tr_switch"] = True  # a whole-app rerun: the live view then refreshes itself while it trains

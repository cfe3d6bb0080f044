"""The training page's per-epoch charts of one or more runs: energies, ΔE, accuracies, the shaded
phases, held-out diamonds and what each run's curves say (robust overfitting or not)."""

from __future__ import annotations

from typing import Optional

import pandas as pd
import streamlit as st

from app_pages import common, epoch_plots
from weat_core import lens
from weat_core.export import heldout_text

NAMES = {"energy_nat_mean": "E(x)", "energy_adv_mean": "E(x*)", "delta_e": "ΔE", "test_clean_acc": "clean",
         "test_pgd_acc": "robust (PGD)", "train_pgd_acc": "robust, train subset",
         # a run with a weight average (`train --ema`): the average's curves, drawn where recorded
         "ema_test_clean_acc": "clean, weight average", "ema_test_pgd_acc": "robust, weight average"}


def short_run_names(runs: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Each run's name in the charts' legends: its training method ("sat", "trades", "weat-adv" for
    `preactresnet18-sat-5000-step-long (sat, log only)` and its two siblings) where the runs'
    names differ only there (the words all of them share at the start and end of the name, before
    " (", left out); else the whole key."""
    keys = list(runs)
    if len(keys) < 2:
        return {k: k for k in keys}
    words = [k.split(" (")[0].split("-") for k in keys]
    head = 0
    while all(len(w) > head + 1 for w in words) and len({w[head] for w in words}) == 1:
        head += 1
    tail = 0
    while all(len(w) > head + tail + 1 for w in words) and len({w[-1 - tail] for w in words}) == 1:
        tail += 1
    short = ["-".join(w[head:len(w) - tail]) for w in words]
    methods = [str(d["method"].iloc[-1]) if "method" in d and len(d) else None for d in runs.values()]
    if short != methods or len(set(short)) < len(short):
        return {k: k for k in keys}
    return dict(zip(keys, short))


def run_curves(runs: dict[str, pd.DataFrame], key: str, heldout: Optional[dict[str, dict]] = None) -> None:
    """The per-epoch charts for one or more runs (phases shaded for the first) and, for each
    run, where its robust accuracy peaked and whether it then fell (robust overfitting), with
    the held-out check of its best and last epoch where the run was shipped with one."""
    short = short_run_names(runs)  # the legends' names: full ones ran off a narrow column's charts
    if any(short[k] != k for k in runs):
        st.caption("In the charts, each run by its training method: "
                   + " · ".join(f"**{short[k]}** = {k}" for k in runs) + ".")
    df = pd.concat([d.assign(run=short[n]) for n, d in runs.items()], ignore_index=True).rename(columns=NAMES)
    held = {short[n]: (heldout or {}).get(n) for n in runs}  # each run's held-out check, where it has one
    phases = lens.training_phases(next(iter(runs.values())))
    multi = len(runs) > 1
    color = "run" if multi else None
    charts = [
        ("mean E(x) and E(x*), training subset", ["E(x)", "E(x*)"]),
        ("ΔE = mean E(x) − mean E(x*)", ["ΔE"]),
        ("accuracy, test subset", ["clean", "robust (PGD)", "clean, weight average", "robust, weight average"]),
        ("robust accuracy: training vs test subset", ["robust, train subset", "robust (PGD)"]),
    ]
    starts = {n: lens.stage_starts(d) for n, d in runs.items()}  # fine-tuning stages, once per run
    smooth = st.segmented_control(
        "Smoothing", [1, 3, 5, 9, 15], default=1, required=True, key=f"{key}_smooth",
        format_func=lambda k: "off" if k == 1 else f"{k} epochs",
        help="Draw each curve as a moving average over this many recorded epochs, centred (a peak stays at its "
             "epoch), to read trends through the test subset's sampling noise; the epochs themselves stay pale "
             "behind. The shaded phases, the best epochs and the text below always use the epochs themselves.")
    shown = lens.smooth_curves(df, [y for _, ys in charts for y in ys if y in df], smooth, by=color)
    # two rows of two fixed-width blocks that wrap: side by side on a laptop (820 px and wider), one
    # under the other in a narrower column, where two columns' halves cut titles and legends
    cols = common.side_by_side(2, f"{key}-a") + common.side_by_side(2, f"{key}-b")
    for col, (title, ys) in zip(cols, charts):
        ys = [y for y in ys if y in df]
        if not ys:
            col.caption(f"{title}: not recorded")
            continue
        fig = epoch_plots.lines(shown, "epoch", ys, title, color=color, markers=smooth == 1,  # markers hid the dashes
                          faint=df if smooth > 1 else None)
        if not title.startswith(("accuracy", "robust")):
            epoch_plots.focus_y(fig, df, ys)
        if "ΔE" in ys:
            fig.add_hline(y=0, line_color="#888", line_width=1)
        if title.startswith("accuracy") and any(held.values()):
            epoch_plots.heldout_marks(fig, list(held.items()), multi)
        for e in sorted({e for es in starts.values() for e in es}):
            fig.add_vline(x=e - 0.5, line_dash="dash", line_color="#888", line_width=1,
                          annotation_text="fine-tune", annotation_position="top right", annotation_font_size=10)
        col.plotly_chart(epoch_plots.shade_phases(fig, phases), key=f"{key}_{title[:12]}")
    summary = lens.runs_summary(runs)
    if "best_epoch" in summary:
        for _, r in summary.dropna(subset=["best_epoch"]).iterrows():
            msg = f"**{r['run']}**: best robust accuracy {r['best_robust']:.1%} at epoch {int(r['best_epoch'])}"
            msg += (f", then down {r['robust_drop']:.1%} to {r['last_robust']:.1%} at epoch {r['epochs']} — "
                    "**robust overfitting**" if r["robust_overfitting"] else f", {r['last_robust']:.1%} at the end")
            if "train_robust_last" in r and pd.notna(r["train_robust_last"]):
                msg += f"; it fits {r['train_robust_last']:.1%} of its training subset under attack at the end"
            if "delta_e_last" in r and pd.notna(r["delta_e_last"]):
                msg += f"; ΔE {r['delta_e_best']:+.3f} at the best epoch, {r['delta_e_last']:+.3f} at the end"
            if "ema_best_epoch" in r and pd.notna(r["ema_best_epoch"]):  # a run that kept a weight average
                msg += (f"; its weight average: best {r['ema_best_robust']:.1%} at epoch {int(r['ema_best_epoch'])}, "
                        f"{r['ema_last_robust']:.1%} at the end"
                        + (" — **robust overfitting**" if r["ema_robust_overfitting"] else ""))
            st.markdown(msg + ".")
            if held.get(short[r["run"]]):
                st.caption(f"{r['run']}, " + heldout_text(held[short[r["run"]]]) + ".")
    sizes = [int(d["eval_size"].min()) for d in runs.values() if "eval_size" in d and d["eval_size"].notna().any()]
    noise = (f"two standard errors are up to ±{100 / min(sizes) ** 0.5:.1f} points at {min(sizes):,} images, the "
             "smallest subset here" if sizes else "two standard errors are about ±6 points at 256 images")
    st.caption("Accuracies here come from the fixed test subset each run evaluates every epoch (a few hundred "
               f"images), so a change of a few points can be sampling noise ({noise}); "
               + ("the diamonds are a run's best and last epoch measured again on held-out test images (its "
                  "held-out check, with the stronger attack its line below names); " if any(held.values()) else "") +
               "`python -m weat_core eval` measures the shipped weights on the full test split.")
    ordinals = ("second", "third", "fourth", "fifth")
    for n, es in starts.items():
        for i, e in enumerate(es):
            nth = ordinals[i] if i < len(ordinals) else f"{i + 2}th"
            st.caption(f"{n}: from epoch {e} on, a {nth} training stage fine-tunes the weights of epoch {e - 1} "
                       "with a fresh learning-rate cycle (`train --init`; the dashed line), so its learning rate "
                       "rises and falls again.")
    if phases.get("phases"):
        st.caption("Shaded phases" + (f" (of {next(iter(runs))})" if multi else "") + ": "
                   + epoch_plots.phase_caption(phases))

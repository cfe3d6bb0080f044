"""Plotly figures of per-epoch training curves (the training page's charts, `run_charts`): lines
per run and measure, held-out diamonds, the shaded phases of training, a y-axis fitted past the
first epochs (data in, figure out; no computation)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from app_pages.plots import RUN_COLORS


def lines(df: pd.DataFrame, x: str, ys: Sequence[str], title: str = "", height: int = 300,
          color: Optional[str] = None, markers: bool = True, faint: Optional[pd.DataFrame] = None) -> go.Figure:
    """One line per column of `ys`; with `color` (e.g. a run column), one colour per group and
    one dash style per column, so each run keeps its colour across charts. `faint` (the same
    frame before smoothing) is drawn thin and pale behind each line, without legend or hover."""
    def draw(frame: pd.DataFrame, **kw) -> tuple[go.Figure, pd.DataFrame]:
        long = frame.melt(id_vars=[x] + ([color] if color else []), value_vars=list(ys), var_name="series")
        long = long.dropna(subset=["value"])  # a column one run lacks (e.g. a weight average) draws nothing for it
        # the theme's two blues told E(x) from E(x*) badly
        by = dict(color=color, line_dash="series") if color else dict(color="series")
        return px.line(long, x=x, y="value", **by, color_discrete_sequence=RUN_COLORS, **kw), long

    fig, long = draw(df, markers=markers, title=title)
    n = long[color].nunique() * long["series"].nunique() if color else long["series"].nunique()
    if faint is not None:
        # the same groups in the same order as `df`'s, so the traces pair up one to one
        behind = draw(faint)[0].update_traces(line_width=1, opacity=0.3, showlegend=False, hoverinfo="skip")
        fig = go.Figure(data=list(behind.data) + list(fig.data), layout=fig.layout)
    legend = dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right", title=None)
    if color or n > 3:  # several runs: the legend goes under the plot, one entry a line
        legend = dict(orientation="v", y=-0.25, yanchor="top", x=0, title=None, font_size=10)
        height += 18 * n
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60 if title else 30, b=10), yaxis_title="",
                      title_y=0.97, title_font_size=13, legend=legend)
    return fig


def heldout_marks(fig: go.Figure, checks: Sequence[tuple[str, Optional[dict]]], multi: bool) -> go.Figure:
    """Diamonds at a run's best and last epoch for its robust accuracy on held-out test images
    (the `heldout` check a recorded run carries), in the run's colour, beside the per-epoch
    subset's curve; `checks` lists (run, check or None) in the charts' run order."""
    # long runs' curves are WebGL traces (plotly express switches above 1,000 points), which a
    # browser paints over every SVG trace: the diamonds must then be WebGL too, or a best epoch's
    # diamond hides under the curve's markers
    trace = go.Scattergl if any(t.type == "scattergl" for t in fig.data) else go.Scatter
    for i, (run, h) in enumerate(checks):
        if not h:
            continue
        a, b, e = h["attack"], h["best"], h["last"]
        colour = RUN_COLORS[i % len(RUN_COLORS)] if multi else "#444"
        fig.add_trace(trace(x=[b["epoch"], e["epoch"]], y=[b[f"test_{a}"], e[f"test_{a}"]], mode="markers",
                            name=f"{run}, held-out (best, last epoch)",
                            marker=dict(symbol="diamond", size=13, color=colour, line=dict(width=1.5, color="black"))))
        if fig.layout.legend.orientation == "v":  # the legend under the plot: room for its new entry
            fig.update_layout(height=fig.layout.height + 18)
    return fig


def shade_phases(fig: go.Figure, phases: dict, robust_label: bool = True) -> go.Figure:
    """Shade the three phases of training and mark the best robust epoch / robust overfitting."""
    fills = ["rgba(76,120,168,0.08)", "rgba(84,162,75,0.08)", "rgba(228,87,86,0.10)"]
    for i, ph in enumerate(phases.get("phases", [])):
        fill = fills[int(ph["name"][0]) - 1] if "overfitting" in ph["name"] or ph["name"][0] != "3" else fills[1]
        # only the phase number in the chart (full names overlap on narrow phases); see phase_caption
        fig.add_vrect(x0=ph["start"], x1=ph["end"], fillcolor=fill, line_width=0,
                      annotation_text=ph["name"].split(" · ")[0], annotation_position="top left",
                      annotation_font_size=11)
    if phases.get("best_epoch") is not None and robust_label:
        text = "best robust" + (" → then it drops" if phases.get("overfitting") else "")
        fig.add_vline(x=phases["best_epoch"], line_dash="dot", line_color="#D55E00",
                      annotation_text=text, annotation_position="bottom right", annotation_font_size=10)
    return fig


def focus_y(fig: go.Figure, df: pd.DataFrame, ys: Sequence[str], x: str = "epoch", skip: float = 0.1) -> go.Figure:
    """Fit the y-axis to the values after the first `skip` share of epochs, so a wild first epoch
    (energies of a fresh network) does not flatten the rest; says so in the title when it clips."""
    late = df[df[x] > df[x].min() + skip * (df[x].max() - df[x].min())][list(ys)]
    vals, all_vals = late.to_numpy(dtype=float), df[list(ys)].to_numpy(dtype=float)
    if late.empty or not np.isfinite(vals).any():
        return fig
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    pad = 0.15 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-3)
    lo, hi = lo - pad, hi + pad
    if np.nanmin(all_vals) < lo or np.nanmax(all_vals) > hi:
        fig.update_yaxes(range=[lo, hi])
        fig.update_layout(title_text=f"{fig.layout.title.text} (first epochs off scale)")
    return fig


def phase_caption(phases: dict) -> str:
    """The phases as text: '1 · warm-up (epochs 1–5) · 2 · …', or '' when there are none; and,
    where robust accuracy peaked inside phase 1, why no phase 2 follows."""
    text = " · ".join(f"**{ph['name']}** (epochs {ph['start']:.0f}–{ph['end']:.0f})" for ph in phases.get("phases", []))
    if text and phases.get("phase1_end") is not None:
        text += (f". No phase 2: robust accuracy peaked at epoch {phases['best_epoch']}, before the schedule's "
                 f"phase 1 would have ended (epoch {phases['phase1_end']}), so phase 1 is cut off there.")
    return text

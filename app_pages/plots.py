"""Plotly figure builders shared by the pages (data in, figure out; no computation)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from PIL import Image

from app_pages import labels

# The palettes come from Okabe & Ito's (2008) colour-universal-design set, with indigo, wine and sand
# from Paul Tol's twelve-colour scheme and d3's brown for the rarer attacks, so that the pairs a class
# compares stay apart for the red-green colour blind (about 8 % of men of European descent; Birch
# 2012): tests/test_app.py measures them under Machado et al.'s (2009) simulation. The earlier
# palette's PGD green and PGD-T red, Observation 1's two sides, were 1.4 CAM02-UCS units apart for a
# deuteranope: one colour. No black or near-black: seven overlaid histograms turned brown-black.

# One colour per attack, stable across pages: natural grey, untargeted blues and a green, targeted
# vermillion, orange, wine, brown and yellows.
ATTACK_COLORS = {"natural": "#999999", "PGD": "#0072B2", "APGD-CE": "#56B4E9", "TRADES-KL": "#332288",
                 "E(x)↓": "#009E73", "PGD-T": "#D55E00", "APGD-T": "#E69F00", "CW": "#882255", "E(x)↑": "#DDCC77",
                 "FAB-T": "#8C564B", "Square": "#F0E442"}

# One colour per training method (the zoo's scatter): plotly's default gave TRADES and WEAT-adv two blues.
METHOD_COLORS = {"standard": "#BBBBBB", "sat": "#D55E00", "trades": "#0072B2", "mart": "#882255",
                 "weat-adv": "#009E73", "weat-nat": "#56B4E9", "untrained": "#8C564B"}

# Distinct hues for runs compared side by side (the theme's default starts with two blues).
RUN_COLORS = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#882255", "#56B4E9", "#CC79A7", "#999999"]


def energy_hist(df: pd.DataFrame, col: str = "E(x)", title: str = "", height: int = 340) -> go.Figure:
    """Overlaid density histograms of `col` per attack."""
    fig = px.histogram(df, x=col, color="attack", barmode="overlay", histnorm="probability density", nbins=60,
                       opacity=0.55, color_discrete_map=ATTACK_COLORS, title=title)
    for name, g in df.groupby("attack", sort=False):
        fig.add_vline(x=float(g[col].mean()), line_dash="dash", line_color=ATTACK_COLORS.get(name, "#888"),
                      opacity=0.9)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60 if title else 30, b=10), title_y=0.97,
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right", title=None),
                      yaxis_title="density")
    return fig


def shift_vs_eps(df: pd.DataFrame, title: str = "", height: int = 320, by: str = "eps") -> go.Figure:
    """Mean shift of E(x) from the natural images (± two standard errors) against ε (or, with
    by="steps", the number of steps), one line per attack, from `lens.strength_sweep` or
    `lens.steps_sweep`; a log axis, zero marked."""
    unit, axis = ("ε %{x:g}/255", "ε (× 1/255, log scale)") if by == "eps" else \
        ("%{x:g} steps", "PGD steps (log scale)")
    fig = go.Figure()
    for name, g in df.groupby("attack", sort=False):
        fig.add_trace(go.Scatter(x=g[by], y=g["shift E(x)"], mode="lines+markers", name=name,
                                 line=dict(color=ATTACK_COLORS.get(name, "#888")),
                                 error_y=dict(type="data", array=2 * g["se"], visible=True),
                                 customdata=np.stack([g["share E(x)↓"], g["accuracy"]], axis=1),
                                 hovertemplate=unit + ": shift %{y:+.3f}<br>%{customdata[0]:.0%} of images "
                                               "lower, accuracy %{customdata[1]:.0%}<extra>" + name + "</extra>"))
    fig.add_hline(y=0, line_color="#888", line_width=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60 if title else 30, b=10), title=title,
                      title_y=0.97, xaxis_title=axis, yaxis_title="mean E(x*) − E(x)",
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right", title=None))
    fig.update_xaxes(type="log", tickvals=sorted(df[by].unique()))
    return fig


def shift_by_outcome(df: pd.DataFrame, title: str = "", height: int = 300) -> go.Figure:
    """Mean shift of E(x) (± two standard errors) per outcome group, one bar per attack, from
    `lens.shift_by_outcome`; zero marked."""
    fig = go.Figure()
    for name, g in df.groupby("attack", sort=False):
        fig.add_trace(go.Bar(x=g["outcome"], y=g["shift E(x)"], name=name, marker_color=ATTACK_COLORS.get(name, "#888"),
                             error_y=dict(type="data", array=2 * g["se"].fillna(0), visible=True),
                             customdata=np.stack([g["n"], g["share E(x)↓"]], axis=1),
                             hovertemplate="%{x}: %{customdata[0]} images, shift %{y:+.3f}, %{customdata[1]:.0%} "
                                           "lower<extra>" + name + "</extra>"))
    fig.add_hline(y=0, line_color="#888", line_width=1)
    fig.update_layout(barmode="group", height=height, margin=dict(l=10, r=10, t=60 if title else 30, b=10), title=title,
                      title_y=0.97, yaxis_title="mean E(x*) − E(x)",
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right", title=None))
    return fig


Z_CLIP = 6.0  # |z| beyond this many standard errors is drawn at full colour
# red where an attack moved E(x) against Observation 1 beyond two standard errors, grey within them,
# blue where it moved the way the observation says (red-blue, not red-green: readable with the
# common colour-vision deficiencies); the steps sit at z = ±2, the verdicts' edges
OBS1_SCALE = [[0.0, "#B2182B"], [1 / 3, "#F4C7C3"], [1 / 3, "#ECECEC"], [2 / 3, "#ECECEC"], [2 / 3, "#C6DBEF"],
              [1.0, "#2166AC"]]


def observation1_heatmap(grid: pd.DataFrame, height_per_model: int = 34) -> go.Figure:
    """`lens.observation1_grid` as a models × attacks heatmap: colour is z (the shift of mean E(x)
    in standard errors, positive the way Observation 1 expects, clipped at ±Z_CLIP), each cell
    reads the verdict's mark and the shift itself. The standard model's row goes last."""
    models = list(dict.fromkeys(grid.sort_values("method", key=lambda m: m == "standard", kind="stable")["model"]))
    attacks = list(dict.fromkeys(grid["attack"]))
    expected = dict(zip(grid["attack"], grid["expected"]))
    z = grid.pivot(index="model", columns="attack", values="z").reindex(index=models, columns=attacks)
    cell = grid.set_index(["model", "attack"])
    mark = {"holds": "✓", "fails": "✗", "unclear": "≈"}
    # the shift in at most six characters (the hover has three decimals and the error): in a narrow
    # column a cell is about 40 px wide, so the mark goes over the number
    text = [[mark.get(cell.loc[(m, a), "verdict"], "") + "<br>" + _short_shift(cell.loc[(m, a), "shift"])
             if (m, a) in cell.index else "" for a in attacks] for m in models]
    hover = [[f"{m}<br>{a}: mean E(x) {'lowered' if cell.loc[(m, a), 'shift'] < 0 else 'raised'} by "
              f"{abs(cell.loc[(m, a), 'shift']):.3f} ± {2 * cell.loc[(m, a), 'se']:.3f}<br>expected: {expected[a]} · "
              f"{cell.loc[(m, a), 'verdict']}" if (m, a) in cell.index else "" for a in attacks] for m in models]
    fig = go.Figure(go.Heatmap(
        z=z.clip(-Z_CLIP, Z_CLIP).to_numpy(), x=[f"{a} ({expected[a]})" for a in attacks], y=models,
        zmin=-Z_CLIP, zmax=Z_CLIP, colorscale=OBS1_SCALE, text=text, texttemplate="%{text}", textfont_size=10,
        hovertext=hover, hoverinfo="text", xgap=2, ygap=2,
        # the colour bar under the cells, not beside them: a narrow column needs the width for them
        colorbar=dict(title=dict(text="standard errors, + as expected", side="top"), thickness=10,
                      orientation="h", y=-0.02, yanchor="top", len=0.9,
                      tickvals=[-Z_CLIP, -2, 0, 2, Z_CLIP], ticktext=[f"≤ −{Z_CLIP:g}", "−2", "0", "2", f"≥ {Z_CLIP:g}"])))
    fig.update_layout(height=150 + height_per_model * len(models), margin=dict(l=10, r=10, t=10, b=70),
                      # the attacks' names upright in a narrow column; the expected way in words, which an
                      # arrow turned with them would not say
                      yaxis=dict(autorange="reversed", tickvals=models, ticktext=[_two_lines(m) for m in models],
                                 ticks=""),  # a tick would sit between a name's two lines
                      xaxis=dict(side="top", tickangle=-90))
    return fig


def _two_lines(model: str) -> str:
    """A model's name broken after its architecture ("preactresnet18<br>weat-adv-100ep"): on one
    line the longest name took 175 of a narrow column's 440 px from the cells."""
    arch, sep, rest = model.partition("-")
    return f"{arch}<br>{rest}" if sep and rest else model


def _short_shift(v: float) -> str:
    """A shift with its sign, in at most six characters: +1.1, -0.35, -0.034, +0.005, 0."""
    a = abs(v)
    if a == 0:
        return "0"
    return f"{v:+.1f}" if a >= 1 else f"{v:+.2f}" if a >= 0.1 else f"{v:+.3f}" if a >= 0.01 else f"{v:+.1g}"


# The zoo scatter's geometry, fixed so that the pixels between two markers are known to the label
# placement: the narrowest column it meets is a 900-px window's with the sidebar open (440 px; a
# laptop's is wider, which only moves the markers apart), less fixed margins; the points span the
# middle 1/1.2 of the plot area in both directions.
ZOO_WIDTH, ZOO_HEIGHT = 440, 480
ZOO_MARGIN = dict(l=64, r=16, t=104, b=76)  # t: the title, two rows of methods; b: the shapes
ARCH_SYMBOLS = ["circle", "diamond", "square", "triangle-up", "star", "pentagon", "hexagon", "cross"]


def zoo_scatter(res: pd.DataFrame, rob: str, title: str, y_title: str) -> go.Figure:
    """Robust accuracy (`rob`) against the energy gap |ΔE|, one marker per model (`res`: rows with
    model, arch, method, |ΔE|): the colour is the training method, the shape the architecture, and
    each label the model's name without its architecture, placed by `labels.label_places` beside
    its marker or, in a crowd, further out with a leader line. A log x axis when the gaps span more
    than a factor of 20; the full name and the numbers on hover. `title` stays on one line, which
    plotly does not wrap: about 55 characters fit the narrow column."""
    res = res.dropna(subset=[rob, "|ΔE|"]).reset_index(drop=True)
    gaps = res["|ΔE|"].clip(lower=1e-3).to_numpy(float)
    acc = res[rob].to_numpy(float)
    log_x = bool(gaps.max() / gaps.min() > 20)
    xs = np.log10(gaps) if log_x else gaps
    archs = [a if isinstance(a, str) and a else "?" for a in res.get("arch", pd.Series([None] * len(res)))]
    by_count = pd.Series(archs).value_counts(sort=True).index  # the commonest architecture gets the circle
    shapes = {a: ARCH_SYMBOLS[i % len(ARCH_SYMBOLS)] for i, a in enumerate(by_count)}
    short = labels.short_names(res["model"].tolist(), archs)

    def padded(v: np.ndarray, unit: float) -> list[float]:
        lo, hi = float(v.min()), float(v.max())
        pad = 0.1 * (hi - lo) if hi > lo else unit
        return [lo - pad, hi + pad]

    fig = go.Figure()
    method = res["method"].fillna("?")
    rank = {a: i for i, a in enumerate(shapes)}
    order = ([k for k in METHOD_COLORS if k in set(method)]
             + [k for k in dict.fromkeys(method) if k not in METHOD_COLORS])
    for m in order:
        # the commonest shape first: the legend's entry takes the first marker's shape, a circle where it can
        rows = sorted(res.index[method == m], key=lambda i: rank[archs[i]])
        fig.add_trace(go.Scatter(
            x=gaps[rows], y=acc[rows], mode="markers", name=m,
            marker=dict(size=12, color=METHOD_COLORS.get(m, "#444"), symbol=[shapes[archs[i]] for i in rows],
                        line=dict(width=1, color="white")),
            hovertext=[f"<b>{res['model'][i]}</b><br>{archs[i]} · {m}" for i in rows],
            hovertemplate="%{hovertext}<br>" + y_title + ": %{y:.1%}<br>|ΔE|: %{x:.3g}<extra></extra>"))
    for a, sym in shapes.items():  # the shapes' legend: grey markers that draw nothing on the plot
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=a, legend="legend2",
                                 marker=dict(size=11, color="#8a8a99", symbol=sym)))

    plot_w = ZOO_WIDTH - ZOO_MARGIN["l"] - ZOO_MARGIN["r"]
    plot_h = ZOO_HEIGHT - ZOO_MARGIN["t"] - ZOO_MARGIN["b"]
    x_range, y_range = padded(xs, 0.5 if log_x else 0.05), padded(acc, 0.05)
    w, h = plot_w / 1.2, plot_h / 1.2
    where = labels.label_places(short, gaps, acc, log_x=log_x, width=w, height=h,
                                room=(0.1 * w, 0.1 * w + ZOO_MARGIN["r"], 0.1 * h, 0.1 * h))
    # Every label is pinned to the axes, not to pixels: where the column is wider than ZOO_WIDTH,
    # the labels then move apart with the markers, and what kept clear of each other in the
    # narrow column keeps clear in a wide one too (its text keeps its size; only the gaps grow).
    # (A log axis takes an annotation's x as log10 of the value.)
    per_x, per_y = plot_w / (x_range[1] - x_range[0]), plot_h / (y_range[1] - y_range[0])  # px per unit
    for name, g, r, (dx, dy) in zip(short, xs, acc, where):
        at = dict(x=float(g), y=float(r), text=name, font_size=12, font_color="#6b6b80", showarrow=False)
        if labels.is_far(dx, dy, labels.CHAR_PX * len(name)):  # away from its marker: a leader line
            at.update(showarrow=True, axref="x", ayref="y", ax=float(g + dx / per_x), ay=float(r + dy / per_y),
                      arrowhead=0, arrowwidth=1, arrowcolor="#b0b0c0", standoff=7)
        elif dx:  # beside it: the label's near edge where `label_places` put it
            edge = np.sign(dx) * (abs(dx) - labels.CHAR_PX * len(name) / 2)
            at.update(x=float(g + edge / per_x), xanchor="left" if dx > 0 else "right")
        else:  # right above or below it
            at.update(y=float(r + dy / per_y))
        fig.add_annotation(**at)
    fig.update_layout(
        title=title, title_y=0.98, height=ZOO_HEIGHT, margin=ZOO_MARGIN,
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0, xanchor="left", title=None),
        legend2=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left",
                     title=dict(text="architecture", side="left")),
        xaxis=dict(title="|ΔE|", type="log" if log_x else "linear", range=x_range),
        yaxis=dict(title=y_title, tickformat=".0%", range=y_range))
    return fig


def topk_bar(df: pd.DataFrame, title: str, highlight: Sequence[str] = ()) -> go.Figure:
    colors = ["#D55E00" if c in highlight else "#0072B2" for c in df["class"]]
    fig = go.Figure(go.Bar(x=df["prob"], y=df["class"], orientation="h", marker_color=colors,
                           text=[f"{p:.1%}" for p in df["prob"]], textposition="auto"))
    fig.update_layout(title=title, height=220, margin=dict(l=10, r=10, t=40, b=10), xaxis=dict(range=[0, 1]),
                      yaxis=dict(autorange="reversed"))
    return fig


def energy_plane(plane, classes: Sequence[str], marks: dict[str, tuple[float, float]], joint: bool = False,
                 height: int = 380) -> go.Figure:
    """`lens.EnergyPlane` as two heatmaps side by side: E(x) (or, with `joint`, E(x, y) of the
    true class), and the predicted class (one colour per class, its name on hover); `marks` name
    points such as {"natural": (0, 0)}; a dashed square is the box |u|, |v| ≤ 1 that `spread` measures."""
    from plotly.subplots import make_subplots

    label, z = ("E(x, y)", plane.joint) if joint and plane.joint is not None else ("E(x)", plane.energy)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[label, "predicted class"], horizontal_spacing=0.14)
    fig.add_heatmap(x=plane.u, y=plane.v, z=z, colorscale="Viridis", row=1, col=1,
                    colorbar=dict(x=0.43, len=0.9, thickness=12), hovertemplate="u %{x:.2f}, v %{y:.2f}<br>"
                    f"{label} %{{z:.3f}}<extra></extra>")
    def class_name(k: int) -> str:
        return str(classes[k]) if k < len(classes) else str(k)

    present = sorted({int(k) for k in np.unique(plane.pred)})
    index = {k: i for i, k in enumerate(present)}  # only the classes on the plane get colours
    names = np.vectorize(class_name)(plane.pred)
    colours = [RUN_COLORS[i % len(RUN_COLORS)] for i in range(len(present))]
    scale = [p for i, c in enumerate(colours) for p in ((i / len(present), c), ((i + 1) / len(present), c))]
    fig.add_heatmap(x=plane.u, y=plane.v, z=np.vectorize(index.get)(plane.pred), customdata=names,
                    colorscale=scale, showscale=False,
                    zmin=-0.5, zmax=len(present) - 0.5, row=1, col=2,
                    hovertemplate="u %{x:.2f}, v %{y:.2f}<br>%{customdata}<extra></extra>")
    ends = {tuple(p): name for name, p in marks.items()}  # the marks at (1, 0) and (0, 1) name the axes
    for col in (1, 2):
        fig.add_shape(type="rect", x0=-1, x1=1, y0=-1, y1=1, line=dict(dash="dash", color="white", width=1),
                      row=1, col=col)
        for name, (u, v) in marks.items():  # white with a dark rim and a boxed label: legible on any colour
            fig.add_scatter(x=[u], y=[v], mode="markers", marker=dict(size=9, color="white", line=dict(color="#222",
                            width=1.5)), showlegend=False, hoverinfo="skip", row=1, col=col)
            fig.add_annotation(x=u, y=v, text=name, showarrow=False, yshift=14, font=dict(size=11, color="#222"),
                               bgcolor="rgba(255,255,255,0.75)", borderpad=1, row=1, col=col)
        fig.update_xaxes(title_text=f"u (× the {ends.get((1, 0), 'first')} perturbation)", row=1, col=col,
                         constrain="domain")
        fig.update_yaxes(title_text=f"v (× the {ends.get((0, 1), 'second')} perturbation)", row=1, col=col,
                         scaleanchor=f"x{col if col > 1 else ''}")
    for k, i in index.items():  # a legend of the classes on the plane
        fig.add_scatter(x=[None], y=[None], mode="markers", marker=dict(size=10, color=colours[i], symbol="square"),
                        name=class_name(k), showlegend=True)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    return fig


def to_pil(x: torch.Tensor, scale: int = 4) -> Image.Image:
    """(C, H, W) or (1, C, H, W) in [0, 1] → PIL image upscaled `scale`× (nearest: crisp pixels)."""
    a = x.detach().float().cpu().reshape(-1, *x.shape[-2:]).clamp(0, 1)
    arr = (a.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if arr.shape[2] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr)
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) if scale > 1 else im


def amplified(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """A perturbation x* − x shown as 0.5 + δ/(2ε): grey is zero, the ε-ball spans black to white."""
    return (0.5 + delta / (2 * max(eps, 1e-8))).clamp(0, 1)

"""Where the zoo scatter's labels go: beside their markers where there is room, else further out
with a leader line (pixel arithmetic only; `plots.zoo_scatter` builds the figure)."""

from __future__ import annotations

import functools

import numpy as np

CHAR_PX = 6.5  # the width of one character of a 12-px plotly label, roughly


def short_names(names: list[str], archs: list) -> list[str]:
    """Each model's name without its architecture in front ("weatnet_s-sat" → "sat"), for a chart
    that shows the architecture as the marker's shape; a name that does not start with it stays."""
    out = []
    for name, arch in zip(names, archs):
        head = f"{arch}-" if isinstance(arch, str) and arch else None
        out.append(name[len(head):] if head and name.startswith(head) and len(name) > len(head) else name)
    return out


def is_far(dx: float, dy: float, w: float) -> bool:
    """Whether a label `w` px wide at offset (dx, dy) sits away from its marker (the chart draws a
    leader line to it) rather than right beside it."""
    return abs(dx) > 0.5 * w + 12 or abs(dy) > 20


def label_places(names: list[str], x, y, log_x: bool, width: float = 450, height: float = 250,
                 room: tuple = (60, 60, 40, 40)) -> list[tuple]:
    """An offset (dx, dy, in pixels, dy upwards) per point, in the order given, for its label; see
    `_label_places`. Kept for the same input: the zoo page draws the same chart on every rerun."""
    return list(_label_places(tuple(names), tuple(np.asarray(x, float).tolist()), tuple(np.asarray(y, float).tolist()),
                              bool(log_x), float(width), float(height), tuple(room)))


@functools.lru_cache(maxsize=64)
def _label_places(names: tuple, x: tuple, y: tuple, log_x: bool, width: float, height: float,
                  room: tuple) -> tuple:
    """An offset (dx, dy, in pixels, dy upwards) per point, in the order given, for its label (the
    names may repeat), in rough pixel units of a `width` × `height` box that the points span.

    Each label goes right above, below, right or left of its marker where that is free of the
    other labels, the markers and the leader lines; else further out, in twelve directions at
    four distances, with a leader line that must not cross a label or a marker either. The labels
    are first placed one by one (in several orders: who goes first matters), then each moved in
    turn to its cheapest place while that lowers what the layout covers and crosses in all; the
    layout that covers least, then has the fewest and shortest leader lines, wins. Labels stay
    within `room` px (left, right, below, above) of that box: the chart's padding and margins.
    Where nothing is free, the cheapest layout found is returned. A chart wider than `width`, with
    its labels pinned to the axes, only moves everything apart: what keeps clear here keeps clear
    there."""
    xs = np.log10(np.asarray(x, float)) if log_x else np.asarray(x, float)
    ys = np.asarray(y, float)

    def scale(v):
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.full_like(v, 0.5)

    px, py = scale(xs) * width, scale(ys) * height
    n = len(names)
    half = CHAR_PX * np.array([len(t) for t in names], float) / 2
    off = np.stack([_places(2 * h) for h in half])  # (n, K, 2): each label's places, in order of preference
    if (n * off.shape[1]) ** 2 > MAX_PAIRS:  # many models: the places beside and nearest only, so that
        off = off[:, :16]  # the table of what two labels at two places cost each other stays small
    cx, cy = px[:, None] + off[..., 0], py[:, None] + off[..., 1]  # the labels' centres there
    boxes = np.stack([cx - half[:, None], cy - 6, cx + half[:, None], cy + 6], -1)  # (n, K, 4)
    far = (np.abs(off[..., 0]) > half[:, None] + 12) | (np.abs(off[..., 1]) > 20)  # `is_far`
    # each leader line's visible part: from 7 px out (the chart's standoff) to the label's edge
    ends = np.stack([np.broadcast_to(px[:, None], cx.shape), np.broadcast_to(py[:, None], cy.shape), cx, cy], -1)
    t_in = _clip(ends, boxes)[0]
    t0 = np.minimum(7 / np.maximum(np.hypot(off[..., 0], off[..., 1]), 1e-9), t_in)
    lines = np.stack([px[:, None] + t0 * off[..., 0], py[:, None] + t0 * off[..., 1],
                      px[:, None] + t_in * off[..., 0], py[:, None] + t_in * off[..., 1]], -1)
    markers = np.stack([px - 6, py - 6, px + 6, py + 6], -1)  # (n, 4)

    # what each place costs against the markers: the area it covers, and its leader line crossing
    # one (a quarter as much for a marker that covers part of the label's own, which lines in some
    # directions cannot keep clear of)
    other = ~np.eye(n, dtype=bool)
    weight = np.where(_area(markers[:, None], markers[None]) > 0, CROSSING / 4, CROSSING)  # (n, n)
    cover = _area(boxes[:, :, None], markers[None, None])  # (n, K, n)
    cross = far[..., None] & _crosses(lines[:, :, None], markers[None, None])
    base = np.where(other[:, None], cover + weight[:, None] * cross, 0).sum(-1)
    outside = ((boxes[..., 0] < -room[0]) | (boxes[..., 2] > width + room[1]) | (boxes[..., 1] < -room[2])
               | (boxes[..., 3] > height + room[3]))
    base[outside] = np.inf
    # what two labels at their places cost each other: (n, K, n, K)
    bi, bj = boxes[:, :, None, None], boxes[None, None]
    pair = (_area(bi, bj) + CROSSING * (far[:, :, None, None] & _crosses(lines[:, :, None, None], bj))
            + CROSSING * (far[None, None] & _crosses(lines[None, None], bi)))
    pair[np.arange(n), :, np.arange(n), :] = 0

    def layout(order) -> tuple:
        at = np.full(n, -1)
        for i in order:  # one by one: the first place that costs least, given those placed
            placed = np.flatnonzero(at >= 0)
            at[i] = int(np.argmin(base[i] + pair[i, :, placed, at[placed]].sum(0)))
        for _ in range(8):  # then each in turn to its cheapest place, while that lowers the total
            moved = False
            for i in range(n):
                costs = base[i] + pair[i, :, np.arange(n), at].sum(0)
                k = int(np.argmin(costs))
                if costs[k] < costs[at[i]] - 1e-9:
                    at[i], moved = k, True
            if not moved:
                break
        total = base[np.arange(n), at].sum() + pair[np.arange(n)[:, None], at[:, None], np.arange(n), at].sum() / 2
        used = far[np.arange(n), at]
        seg = lines[np.arange(n), at][used]
        return (float(total), int(used.sum()), float(np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]).sum())), at

    near_by = np.array([np.sum(np.hypot(px - a, py - b) < 60) for a, b in zip(px, py)])
    orders = [np.argsort(px, kind="stable"), np.argsort(-px, kind="stable"), np.argsort(-py, kind="stable"),
              np.argsort(py, kind="stable"), np.lexsort((px, -near_by))]
    rng = np.random.default_rng(0)  # and shuffled orders, the same ones on every run
    orders += [rng.permutation(n) for _ in range(max(10, RESTARTS * 13 // max(n, 1)))]
    at = min((layout(o) for o in orders), key=lambda r: r[0])[1]
    return tuple((float(off[i, k, 0]), float(off[i, k, 1])) for i, k in enumerate(at))


RESTARTS = 200  # shuffled orders tried besides the five above, for 13 labels (fewer for more: 0.05 s)
CROSSING = 100.0  # what a leader line crossing a label or a marker costs, in px² of overlap
MAX_PAIRS = 1.2e6  # (labels × places)² above which only the 16 nearest places are tried (21 labels: all 52)


def _places(w: float) -> np.ndarray:
    """The places a label `w` px wide may take, as offsets from its marker, in order of preference:
    right above, below, right and left of it; then further out (a leader line), in twelve
    directions at four distances."""
    near = [(0.0, 16.0), (0.0, -16.0), (w / 2 + 10, 0.0), (-w / 2 - 10, 0.0)]
    far = []
    for r in (34, 52, 70, 88):
        for deg in (90, -90, 30, -30, 150, -150, 0, 180, 60, -60, 120, -120):
            c, s_ = np.cos(np.radians(deg)), np.sin(np.radians(deg))
            # the box's nearer edge, not its centre, lies r px out, so it does not cover the marker
            far.append((r * c + np.sign(round(c, 6)) * w / 2, r * s_))
    return np.array(near + far)


def _area(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The area boxes p and q (left, bottom, right, top; broadcast over leading axes) share."""
    return (np.clip(np.minimum(p[..., 2], q[..., 2]) - np.maximum(p[..., 0], q[..., 0]), 0, None)
            * np.clip(np.minimum(p[..., 3], q[..., 3]) - np.maximum(p[..., 1], q[..., 1]), 0, None))


def _clip(seg: np.ndarray, b: np.ndarray) -> tuple:
    """Liang–Barsky: the parameters (t_in, t_out) of segments (x0, y0, x1, y1) inside boxes b (left,
    bottom, right, top), broadcast over leading axes; t_in >= t_out where a segment misses its box
    or only runs along an edge."""
    seg, b = np.broadcast_arrays(np.asarray(seg, float), np.asarray(b, float))
    x0, y0, x1, y1 = np.moveaxis(seg, -1, 0)
    t_in, t_out = np.zeros(x0.shape), np.ones(x0.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q in ((x0 - x1, x0 - b[..., 0]), (x1 - x0, b[..., 2] - x0),
                     (y0 - y1, y0 - b[..., 1]), (y1 - y0, b[..., 3] - y0)):
            r = q / p
            t_in = np.where(p < 0, np.maximum(t_in, r), t_in)
            t_out = np.where(p > 0, np.minimum(t_out, r), t_out)
            t_out = np.where((p == 0) & (q <= 0), -1.0, t_out)  # parallel to this edge, outside it or along it
    return t_in, t_out


def _crosses(seg, b) -> np.ndarray:
    """Whether segments pass through the inside of boxes (touching an edge is not crossing)."""
    t_in, t_out = _clip(seg, b)
    return t_out - t_in > 1e-6

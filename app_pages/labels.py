"""Where the zoo scatter's labels go: beside their markers where there is room, else further out
with a leader line (pixel arithmetic only; the figure is built in the zoo page)."""

from __future__ import annotations

import numpy as np

CHAR_PX = 6.5  # the width of one character of a 12-px plotly label, roughly


def label_places(names: list[str], x, y, log_x: bool, width: float = 450, height: float = 250) -> dict[str, tuple]:
    """An offset (dx, dy, in pixels, dy upwards) per point for its label, in rough pixel units of a
    `width` × `height` plot: first right above, below, right or left of its marker; where none of
    those is free of the labels already placed and of the other markers, further out in eight
    directions (the chart then draws a leader line); where nothing is free, the place that
    overlaps them least. Labels stay within 60 px of the plot area (the chart's margins). A
    plot wider than `width` only moves the markers apart, so the labels stay clear of each other."""
    xs = np.log10(np.asarray(x, float)) if log_x else np.asarray(x, float)
    ys = np.asarray(y, float)

    def scale(v):
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.full_like(v, 0.5)

    px, py = scale(xs) * width, scale(ys) * height
    boxes = [(a - 6, b - 6, a + 6, b + 6) for a, b in zip(px, py)]  # the markers

    def places(w: float) -> list[tuple]:
        near = [(0, 16), (0, -16), (w / 2 + 10, 0), (-w / 2 - 10, 0)]
        far = []
        for r in (34, 52, 70):
            for deg in (90, -90, 30, -30, 150, -150, 0, 180):
                c, s_ = np.cos(np.radians(deg)), np.sin(np.radians(deg))
                # the box's nearer edge, not its centre, lies r px out, so it does not cover the marker
                far.append((r * c + np.sign(round(c, 6)) * w / 2, r * s_))
        return near + far

    def box(a: float, b: float, dx: float, dy: float, w: float) -> tuple:
        return a + dx - w / 2, b + dy - 6, a + dx + w / 2, b + dy + 6

    def overlap(bx: tuple, own: int) -> float:
        """The area the label box shares with the markers and the labels already placed."""
        if bx[0] < -60 or bx[2] > width + 60 or bx[1] < -40 or bx[3] > height + 40:
            return float("inf")
        return sum(max(0.0, min(bx[2], o[2]) - max(bx[0], o[0])) * max(0.0, min(bx[3], o[3]) - max(bx[1], o[1]))
                   for k, o in enumerate(boxes) if k != own)

    out = {}
    for i in np.argsort(px):
        w = CHAR_PX * len(names[i])
        cands = places(w)
        # the first free place in the order above; where none is free, the one that covers least
        costs = [overlap(box(px[i], py[i], dx, dy, w), i) for dx, dy in cands]
        dx, dy = cands[int(np.argmin(costs))]
        boxes.append(box(px[i], py[i], dx, dy, w))
        out[names[i]] = (float(dx), float(dy))
    return out

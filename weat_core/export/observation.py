"""The model card's Observation 1 tables, across ε (`python -m weat_core sweep --store`) and for
every attack the energy landscape page offers (`landscape --store`), and its Observation 3 line:
how much E(x) changes around each test image (`plane --store`)."""

from __future__ import annotations

from typing import Any

__all__ = ["attacks_lines", "join_names", "plane_lines", "sweep_lines"]


def sweep_lines(sweep: dict[str, Any]) -> list[str]:
    """The model card's table of Observation 1 across ε (`python -m weat_core sweep --store`)."""
    import pandas as pd

    from ..lens import sweep_summary

    rows = sweep["rows"]
    by = {(r["eps"], r["attack"]): r for r in rows}
    cell = (lambda r: f"{r['shift']:+.3f} ± {2 * r['se']:.3f} ({100 * r['share_lower']:.0f} % lower, "
                      f"accuracy {100 * r['accuracy']:.1f} %)" if r else "")
    lines = ["### Observation 1 across ε", "",
             f"Mean shift of E(x) from the natural images (± two standard errors), first {sweep['n']} test images, "
             f"PGD with {sweep['steps']} steps of max(2/255, 2.5·ε/{sweep['steps']}):", "",
             "| ε | untargeted PGD | targeted PGD |", "|---|---|---|"]
    for e in sorted({r["eps"] for r in rows}):
        lines.append(f"| {e:g}/255 | {cell(by.get((e, 'PGD')))} | {cell(by.get((e, 'PGD-T')))} |")
    df = pd.DataFrame([{"eps": r["eps"], "attack": r["attack"], "accuracy": r["accuracy"], "verdict": r["verdict"]}
                       for r in rows])
    lines += ["", sweep_summary(df), ""]
    split = [(e, by[(e, "PGD")]["by_outcome"]) for e in sorted({r["eps"] for r in rows})
             if by.get((e, "PGD"), {}).get("by_outcome")]
    if split:  # sweeps stored before the split existed have none
        part = (lambda g: f"{g['shift']:+.3f} ({g['n']} images)" if g else "none")
        lines += ["Untargeted PGD's mean shift of E(x) on the same images, split by what it did to each prediction:", "",
                  "| ε | stays correct | flipped | already wrong |", "|---|---|---|---|"]
        lines += [f"| {e:g}/255 | {part(g.get('stays correct'))} | {part(g.get('flipped'))} | "
                  f"{part(g.get('already wrong'))} |" for e, g in split] + [""]
    return lines


def attacks_lines(obs: dict[str, Any]) -> list[str]:
    """The model card's table of Observation 1 for every attack at ε = 8/255 (`landscape --store`)."""
    nat = obs["natural"]
    verdicts = {"holds": "holds", "fails": "fails", "unclear": "within the noise"}
    handing_back = [r["attack"] for r in obs["rows"] if r["unchanged"] > 0]
    square = f" (Square: {obs['square_queries']:,} queries)" if obs.get("square_queries") else ""
    lines = ["### Observation 1 for every attack", "",
             f"First {obs['n']} test images (class-balanced order; natural: accuracy {100 * nat['accuracy']:.1f} %, "
             f"mean E(x) {nat['energy_mean']:.3f}), L∞ ε = {obs['eps']:g}/255, {obs['steps']} steps{square}, as the "
             "energy landscape page runs them. Mean shift of E(x) from the natural images with two standard errors"
             + (f"; {join_names(handing_back)} hand back the natural image wherever they do not flip it, so the images "
                "they flip carry their shift" if handing_back else "") + ":", "",
             "| attack | expected | accuracy | shift of mean E(x) | images lower | unchanged | flipped images | "
             "verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in obs["rows"]:
        f = r.get("by_outcome", {}).get("flipped")
        lines.append(f"| {r['attack']} | {r['expected']} | {100 * r['accuracy']:.1f} % | {r['shift']:+.3f} ± "
                     f"{2 * r['se']:.3f} | {100 * r['share_lower']:.0f} % | {100 * r['unchanged']:.0f} % | "
                     + (f"{f['n']}: {f['shift']:+.3f}" if f else "none") + f" | {verdicts[r['verdict']]} |")
    held = [r["attack"] for r in obs["rows"] if r["verdict"] == "holds"]
    failed = [r["attack"] for r in obs["rows"] if r["verdict"] == "fails"]
    lines += ["", f"Observation 1 holds for {join_names(held) or 'none of them'}"
              + (f" and fails for {join_names(failed)}" if failed else "") + ".", ""]
    return lines


def plane_lines(span: dict[str, Any]) -> list[str]:
    """The model card's line on the energy around each test image (`plane --store`)."""
    return ["## Energy around each image (Observation 3)", "",
            f"On the plane through each of the first {span['n']} test images and its PGD-{span['steps']} and targeted "
            f"PGD-{span['steps']} images (L∞ ε = 8/255, a random other class), E(x) changes by {span['mean']:.3f} "
            f"on average across the square the two attacks span (± {span['se']:.3f}, one standard error; median "
            f"{span['median']:.3f}; a {span['grid']} × {span['grid']} grid). Mirza et al. (2024) find smoother "
            "energies around the images in more robust models; the attack explorer draws one such plane.", ""]


def join_names(names: list[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]

"""A recorded run's best and last epoch measured again on held-out test images
(`scripts/heldout_best_last.py`), judged pairwise on the same images."""

from __future__ import annotations

import re
from typing import Any, Optional

from .. import WeatError
from ..evaluate import per_255
from ..results import paired_accuracy, robust_peak

__all__ = ["heldout_summary", "heldout_text"]


def heldout_summary(rows: dict[str, dict], run_name: Optional[str] = None) -> dict[str, Any]:
    """The held-out check of a run's best and last epoch from the rows `scripts/heldout_best_last.py`
    writes (keyed `RUN:best-NNNN` and `RUN:state-NNNN`; `run_name` picks one run's rows from a file
    holding several): both epochs' rows, the attack, and whether the robust accuracy fell from the
    best epoch to the last by more than the held-out images' noise.

    Both epochs are measured on the same images, so when the rows say which images each got
    right (`test_ATTACK_correct`, a string of 0/1) the fall is judged pairwise (McNemar): only
    the images one epoch gets right and the other wrong vary, and the fall counts as robust
    overfitting when it is over one point and over twice its paired standard error
    √(b + c − (b − c)²/n)/n (b: right only at the best epoch, c: only at the last). Without
    them, as for rows written before that, the two are treated as independent samples
    (`robust_peak`), a wider margin. The per-image strings are not kept, only b and c."""
    runs = sorted({k.split(":", 1)[0] for k in rows})
    if run_name is None and len(runs) == 1:
        run_name = runs[0]
    if run_name not in runs:
        raise WeatError(f"the held-out results hold runs {', '.join(runs) or 'none'}; name one of them")
    mine = {k.split(":", 1)[1]: v for k, v in rows.items() if k.split(":", 1)[0] == run_name}
    best = [k for k in mine if k.startswith("best-")]
    last = [k for k in mine if not k.startswith("best-")]
    if len(best) != 1 or len(last) != 1:
        raise WeatError(f"the held-out results of {run_name} need one best-NNNN and one last checkpoint row, "
                        f"not {sorted(mine)}")
    b, e = mine[best[0]], mine[last[0]]
    attack = next((k[5:] for k in b if k.startswith("test_") and k not in ("test_clean", "test_delta_e")), None)
    if attack is None or f"test_{attack}" not in e:
        raise WeatError(f"the held-out results of {run_name} carry no robust accuracy (test_ATTACK)")
    out: dict[str, Any] = {"attack": attack, "n_test": b.get("n_test"), "n_train": b.get("n_train")}
    key, se = f"test_{attack}_correct", None
    if isinstance(b.get(key), str) and isinstance(e.get(key), str) and len(b[key]) == len(e[key]) > 0:
        pair = paired_accuracy([c == "1" for c in b[key]], [c == "1" for c in e[key]])
        se = pair["se"]
        out["paired"] = {"best_only": pair["only_a"], "last_only": pair["only_b"], "se": se}
    _, drop, fell = robust_peak([b[f"test_{attack}"], e[f"test_{attack}"]], b.get("n_test"), se=se)
    epoch = lambda k: int(k.rsplit("-", 1)[-1])  # noqa: E731 (checkpoint folders are named *-NNNN)
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("_correct")}  # noqa: E731
    return {**out, "best": {"epoch": epoch(best[0]), **strip(b)}, "last": {"epoch": epoch(last[0]), **strip(e)},
            "drop": drop, "overfitting": fell}


def heldout_text(h: dict[str, Any]) -> str:
    """One sentence on a run's held-out check (`heldout_summary`), for its card and the app."""
    a, b, e = h["attack"], h["best"], h["last"]
    shown = re.sub(r"^pgd(\d+)", r"PGD-\1", a).replace("-t", ", targeted")
    if b.get("eps") is not None:  # rows written before they carried the threat model were at 8/255, step 2/255
        shown += f" at ε = {per_255(b['eps'])}, step {per_255(b['alpha'])}"
    if b.get("amp") or e.get("amp"):
        shown += ", attacks in bf16"
    n = f"{h['n_test']:,} " if h.get("n_test") else ""
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    paired = h.get("paired")
    if paired and h["drop"] > 0:  # the same images at both epochs: judged pairwise
        verdict = (("robust overfitting, beyond" if h["overfitting"] else "within")
                   + f" two standard errors of the paired difference ({paired['best_only']:,} images right only "
                   f"at the best epoch, {paired['last_only']:,} only at the last)")
    else:
        verdict = ("robust overfitting, beyond two standard errors" if h["overfitting"]
                   else "within the noise of these images" if h["drop"] > 0 else "no fall")
    if b["epoch"] == e["epoch"]:  # the best epoch on the per-epoch subset is the last: one checkpoint
        text = (f"held-out check ({n}test images the run never evaluated, {shown}): the best epoch is the last "
                f"({e['epoch']}): robust accuracy {pct(e['test_' + a])}, clean {pct(e['test_clean'])}")
        if f"train_{a}" in e:
            text += f"; its own training images under attack {pct(e['train_' + a])}"
        if "test_delta_e" in e and "train_delta_e" in e:
            text += f"; ΔE {e['test_delta_e']:+.3f} held-out, {e['train_delta_e']:+.3f} on its training images"
        return text
    text = (f"held-out check ({n}test images the run never evaluated, {shown}): robust accuracy "
            f"{pct(b['test_' + a])} at the best epoch ({b['epoch']}), {pct(e['test_' + a])} at the last ({e['epoch']}): "
            f"{verdict}; clean {pct(b['test_clean'])} → {pct(e['test_clean'])}")
    if f"train_{a}" in b and f"train_{a}" in e:
        text += f"; its own training images under attack {pct(b['train_' + a])} → {pct(e['train_' + a])}"
    if "test_delta_e" in b and "train_delta_e" in b:
        text += (f"; ΔE {b['test_delta_e']:+.3f} → {e['test_delta_e']:+.3f} held-out, "
                 f"{b['train_delta_e']:+.3f} → {e['train_delta_e']:+.3f} on its training images")
    return text

"""Reading evaluation results: `evaluate`'s plain-text table, a checkpoint's stored metrics
beside a new measurement, per-image results kept as 0/1 strings and compared pairwise between
models (McNemar), and where a run's robust accuracy peaked (robust overfitting)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from . import WeatError

__all__ = ["against_stored", "compare_results", "correct_bits", "format_against_stored", "format_table",
           "from_bits", "paired_accuracy", "robust_peak", "stored_setting"]


def _text_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of strings as aligned text lines, the first a header underlined with dashes."""
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * k for k in w))
    return lines


def format_table(res: dict[str, Any]) -> str:
    """A plain-text table of accuracy and energies per attack."""
    rows = [("attack", "accuracy %", "mean E(x)", "mean E(x,y)", "ΔE", "E(x*) < E(x)", "unchanged", "seconds")]
    for name, st in res["energy"].items():
        acc = res["clean_acc" if name == "clean" else f"{name}_acc"]
        de, low, same = (res.get(k, {}).get(name) for k in ("delta_e", "share_lower", "unchanged"))
        rows.append((name, f"{100 * acc:.2f}", f"{st['mean']:.3f}", f"{res['joint_energy'][name]['mean']:.3f}",
                     "" if de is None else f"{de:+.3f}", "" if low is None else f"{100 * low:.1f} %",
                     "" if same is None else f"{100 * same:.1f} %", f"{res['time_s'][name]:.1f}"))
    lines = _text_table(rows)
    amp = "; attacks in bf16, accuracy and energies from fp32 forwards" if res.get("amp") else ""
    step = f", step {res['alpha']:.4f}" if res.get("alpha") is not None else ""
    return "\n".join(lines) + f"\n(n = {res['n']}, eps = {res['eps']:.4f}{step}, {res['norm']}{amp})"


def stored_setting(norm: Optional[str], eps: float, alpha: Optional[float]) -> bool:
    """Whether an evaluation ran at the setting every stored metric has: L∞ ε = 8/255 at the
    default step (`eval --store` keeps only these; `against_stored` compares only with these)."""
    return norm == "linf" and abs(eps - 8 / 255) <= 1e-9 and alpha is None


def against_stored(res: dict[str, Any], metrics: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each accuracy of `evaluate`'s result that a checkpoint stores (its config's `metrics`) for
    the same number of test images: {measure: (stored, measured now)}, as fractions. Stored
    metrics are L∞ ε = 8/255 at the default step (`eval --store`), so a result measured otherwise
    has none to compare with; AutoAttack's count is `aa_n`, every other measure's `n`."""
    if not stored_setting(res.get("norm"), res.get("eps", 0), res.get("alpha")):
        return {}
    out = {}
    for name in res.get("energy", {}):
        key = "clean_acc" if name == "clean" else f"{name}_acc"
        n = metrics.get("aa_n" if name == "aa" else "n")
        if isinstance(metrics.get(key), (int, float)) and n == res["n"]:
            out[name] = (float(metrics[key]), float(res[key]))
    return out


def format_against_stored(pairs: dict[str, tuple[float, float]], n: int) -> str:
    """`eval`'s second table: each stored accuracy beside the one just measured, and their
    difference in points ("" when the checkpoint stores none of them for these images)."""
    if not pairs:
        return ""
    rows = [("measure", "stored %", "now %", "difference (points)")]
    rows += [(k, f"{100 * a:.2f}", f"{100 * b:.2f}", f"{100 * (b - a):+.2f}") for k, (a, b) in pairs.items()]
    lines = [line.rstrip() for line in _text_table(rows)]
    return f"stored with the checkpoint, measured on {n:,} test images too:\n" + "\n".join(lines)


def robust_peak(robust_acc: Sequence[float], n: Optional[int] = None,
                se: Optional[float] = None) -> tuple[int, float, bool]:
    """Where a run's per-epoch robust accuracy peaked, how far it fell from there to the last
    epoch, and whether that is robust overfitting (Rice et al. 2020): a drop from a best that is
    itself meaningful (≥ 5 %) of more than one point, and, when the accuracies were measured on
    `n` images, of more than twice the binomial standard error √(p(1−p)/n) at the best p, so
    that the noise of a small per-epoch subset (±2 points at 512 images) is not called
    overfitting. `se` (a fraction), when given, is the drop's own standard error instead (e.g. the
    paired one of two checkpoints measured on the same images). Accuracies as fractions or
    percent. Returns (first best index, drop, overfitting)."""
    import numpy as np

    rob = np.asarray(robust_acc, dtype=float)
    best = int(np.nanargmax(rob))
    scale = 100.0 if np.nanmax(rob) > 1.5 else 1.0
    drop = float(rob[best] - rob[-1])
    p = rob[best] / scale
    noise = se if se is not None else (float(np.sqrt(p * (1 - p) / n)) if n else 0.0)
    threshold = max(0.01, 2.0 * noise) * scale
    return best, drop, bool(best < len(rob) - 1 and drop > threshold and rob[best] >= 0.05 * scale)


def correct_bits(correct: Sequence[bool]) -> str:
    """Per-image results (`evaluate(per_image=True)`'s `correct[name]`) as one string of 0/1 in
    image order: how `eval --out`, `compare --out` and scripts/heldout_best_last.py keep them in
    JSON (`from_bits` reads them back)."""
    return "".join("1" if c else "0" for c in correct)


def from_bits(bits: str) -> list[bool]:
    """`correct_bits`' inverse: a string of 0/1 back to per-image results."""
    if set(bits) - {"0", "1"}:
        raise WeatError("per-image results are a string of 0 and 1 only")
    return [c == "1" for c in bits]


def paired_accuracy(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Two models' per-image results on the same images (`evaluate(per_image=True)`'s
    `correct[name]`), compared pairwise (McNemar): the difference of accuracies b − a and its
    standard error √(n_a + n_b − (n_b − n_a)²/n)/n, where n_a images are right only for a and n_b
    only for b. Images both get right or both wrong do not vary, so this is much tighter than
    two independent samples' error. Accuracies as fractions."""
    if len(a) != len(b) or not len(a):
        raise WeatError(f"a paired comparison needs per-image results on the same images ({len(a)} vs {len(b)})")
    n = len(a)
    only_a = sum(bool(p) and not bool(q) for p, q in zip(a, b))
    only_b = sum(bool(q) and not bool(p) for p, q in zip(a, b))
    se = (max(only_a + only_b - (only_b - only_a) ** 2 / n, 0.0)) ** 0.5 / n
    return {"n": n, "acc_a": sum(map(bool, a)) / n, "acc_b": sum(map(bool, b)) / n, "diff": (only_b - only_a) / n,
            "se": se, "only_a": only_a, "only_b": only_b}


def compare_results(results: dict[str, dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Rows comparing each model's `evaluate(per_image=True)` result with the reference model's,
    measure by measure ("clean", then each attack), on the same images: `paired_accuracy` with
    a = the reference, and a verdict, "ahead" or "behind" when the difference is beyond two
    paired standard errors, else "level"."""
    ref = results[reference]
    rows = []
    for name, res in results.items():
        if name == reference:
            continue
        for measure, correct in res["correct"].items():
            if measure not in ref["correct"]:
                continue
            pair = paired_accuracy(ref["correct"][measure], correct)
            beyond = abs(pair["diff"]) > 2 * pair["se"]
            verdict = ("ahead" if pair["diff"] > 0 else "behind") if beyond else "level"
            rows.append({"model": name, "measure": measure, **pair, "verdict": verdict})
    return rows

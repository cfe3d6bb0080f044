"""Turn a training run into a shipped checkpoint: weights + config.json with measured test
metrics + the per-epoch energy log + a model card (README.md).

    python -m weat_core export --run runs/weat-adv-weatnet_s --name weatnet_s-weat-adv \
        --dataset cifar10 --attacks pgd20,pgd20-t --aa-n 1000
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from . import WeatError
from .checkpoints import RUNS_DIR, checkpoints_dir, load, save
from .data import DATASETS, load_split
from .evaluate import evaluate, robust_peak
from .train import TrainConfig

__all__ = ["choose_epoch", "export_log", "export_run", "heldout_summary", "heldout_text", "model_card", "store_metrics"]

log = logging.getLogger(__name__)


_REPO = Path(__file__).resolve().parents[1]


def _portable(path: Any) -> str:
    """A dataset path as the re-train command should give it: commands run from the repository
    root, so an absolute path beside the repository (the shared CIFAR-10 copy in `../shared`)
    becomes relative to it, the same on every machine, and the GPU scripts' carried copy of that
    folder (`.data/`, ignored, which exists only where the scripts were set up) names the original;
    other paths and names stay as they are."""
    s = str(path)
    p = Path(s)
    if not p.is_absolute() and p.parts[:1] == (".data",) and len(p.parts) == 2:
        return str(Path("..", "shared", "data", p.name))
    if p.is_absolute() and _REPO.parent != Path(_REPO.anchor) and Path(os.path.normpath(p)).is_relative_to(_REPO.parent):
        return os.path.relpath(os.path.normpath(p), _REPO)
    return s


def _dataset_flag(dataset: Any) -> str:
    """` --dataset PATH` for a command that must measure on the same local data as before (a
    class-folder copy or archive, given as `_portable` names it); "" for a dataset name, which
    the checkpoint's config already gives."""
    if not dataset or str(dataset).lower() in DATASETS:
        return ""
    return " --dataset " + shlex.quote(_portable(dataset))


def _train_command(t: dict[str, Any], with_out: bool = False) -> str:
    """The `train` command line of settings `t`; `with_out` names its run folder (for a stage
    that a later one fine-tunes with `--init`)."""
    args = ["python", "-m", "weat_core", "train", "--method", t["method"], "--arch", t["arch"], "--dataset",
            _portable(t["dataset"]), "--epochs", str(t["epochs"]), "--batch-size", str(t["batch_size"]), "--lr", str(t["lr"]),
            "--schedule", t["schedule"], "--eps", f"{t['eps'] * 255:.0f}/255", "--alpha", f"{t['alpha'] * 255:.0f}/255",
            "--attack-steps", str(t["attack_steps"]), "--beta", str(t["beta"]), "--seed", str(t["seed"]),
            "--eval-size", str(t["eval_size"]), "--eval-steps", str(t["eval_steps"])]
    if t.get("limit"):
        args += ["--limit", str(t["limit"])]
    defaults = TrainConfig()
    for key in ("momentum", "weight_decay", "warmup"):  # (older configs without them used the defaults)
        if t.get(key, getattr(defaults, key)) != getattr(defaults, key):
            args += ["--" + key.replace("_", "-"), str(t[key])]
    if t.get("amp") is not None:
        args.append("--amp" if t["amp"] else "--no-amp")
    if t.get("channels_last") is False:
        args.append("--no-channels-last")
    if t.get("compile") or t.get("compile_mode"):  # compiled kernels round differently from eager ones
        args.append("--compile")
    if t.get("compile_mode"):
        args += ["--compile-mode", str(t["compile_mode"])]
    if t.get("arch_kwargs"):
        args += ["--arch-kwargs", json.dumps(t["arch_kwargs"])]
    if t.get("init"):
        args += ["--init", str(t["init"])]
    if with_out and t.get("out"):
        args += ["--out", str(t["out"])]
    return " ".join(shlex.quote(a) for a in args)


def _read_log(path: Path) -> list[dict]:
    """The records of a `log.jsonl` ([] when there is none)."""
    return [json.loads(s) for s in path.read_text().splitlines()] if path.is_file() else []


def _subset_size(records: list[dict], training: Optional[dict]) -> Optional[int]:
    """Images behind the per-epoch test accuracies (their noise): from the log records, else the
    run's settings (logs written before records carried it)."""
    sizes = [r["eval_size"] for r in records if r.get("eval_size")]
    return sizes[-1] if sizes else (training or {}).get("eval_size")


def _chain(stages: list[dict], sep: str) -> str:
    return sep.join(_train_command(st, with_out=i < len(stages) - 1) for i, st in enumerate(stages))


def _stage(cfg: dict[str, Any]) -> dict[str, Any]:
    """One stage's training settings, with what the run resolved at run time (`runtime`:
    device, bf16 or not, threads) when its checkpoint recorded that."""
    return {**cfg.get("training", {}), **({"runtime": cfg["runtime"]} if cfg.get("runtime") else {})}


def _runtime_text(rt: dict[str, Any]) -> str:
    return (f"{rt.get('device', '?')}{' (' + rt['gpu'] + ')' if rt.get('gpu') else ''}, "
            f"{'bf16 autocast' if rt.get('bf16') else 'fp32'}, "
            f"{rt.get('world_size', 1)} process(es) × {rt.get('threads', '?')} thread(s), torch {rt.get('torch', '?')}")


def lineage(cfg: dict[str, Any], records: list[dict]) -> tuple[list[dict], list[dict]]:
    """The training stages behind a checkpoint that was fine-tuned (`--init`) from another run's
    checkpoint: (training settings of every stage, oldest first; the per-epoch records of all
    stages, renumbered to run on from one stage to the next, each tagged with its `stage`).
    The earlier stages are followed through the `init` folders as long as they exist locally."""
    stages, logs = [_stage(cfg)], [records]
    seen = set()
    while stages[0].get("init") and str(stages[0]["init"]) not in seen:
        seen.add(str(stages[0]["init"]))
        src = Path(str(stages[0]["init"]))
        run = src if (src / "log.jsonl").is_file() else src.parent
        if not (src / "config.json").is_file() and (src / "LATEST").is_file():
            src = src / (src / "LATEST").read_text().strip()
        if not (src / "config.json").is_file() or not (run / "log.jsonl").is_file():
            break  # a shipped or Hub checkpoint: its own card tells its history
        prev = json.loads((src / "config.json").read_text())
        upto = prev.get("epoch", 10**9)
        stages.insert(0, _stage(prev))
        logs.insert(0, [r for r in _read_log(run / "log.jsonl") if r["epoch"] <= upto])
    merged, offset = [], 0
    for i, recs in enumerate(logs):
        for r in recs:
            merged.append({**r, "epoch": r["epoch"] + offset, "stage": i + 1} if len(logs) > 1 else r)
        offset += recs[-1]["epoch"] if recs else 0
    return stages, merged


def model_card(name: str, cfg: dict[str, Any], log_records: list[dict]) -> str:
    """Markdown model card from a checkpoint's config.json and its training log."""
    m, t = cfg.get("metrics", {}), cfg.get("training", {})
    e = m.get("energy_mean", {})
    lines = [f"# {name}", "",
             f"{cfg['arch']}{_arch_options(cfg.get('arch_kwargs'))} trained with **{cfg.get('method', '?')}** on {cfg.get('dataset', '?')} by WEAT Lens "
             f"(`weat_core` {cfg.get('weat_core_version', '')}).", ""]
    measured = any(k.endswith("_acc") for k in m)
    if cfg.get("recorded"):
        subsets = "the fixed subsets the run evaluated every epoch"
        source = (f"The test metrics below were {cfg.get('metrics_note', 'measured on weights that are not shipped')}; "
                  f"the training accuracies come from {subsets}." if measured
                  else f"The accuracies below come from {subsets}.")
        lines += ["A recorded training run: its per-epoch log (`log.jsonl`) and settings are shipped, not its "
                  "weights. " + source, ""]
    if measured:
        lines += ["## Test metrics (measured by `python -m weat_core eval`)", "",
                  "| metric | value |", "|---|---|"]
        for k, v in m.items():
            if k.endswith("_acc"):
                lines.append(f"| {k} | {100 * v:.2f} % |")
        lines.append(f"| images (PGD) | {m.get('n', '?')} |")
        if "aa_n" in m:
            lines.append(f"| images (AutoAttack) | {m['aa_n']} |")
        lines += ["", "L∞ ε = 8/255; PGD-20 with step 2/255 and a random start; targeted PGD aims at a random "
                  "other class.", ""]
    if e:
        lines += ["## Energies (Observation 1)", "", "| images | mean E(x) |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in e.items()]
        nat, unt, tgt = e.get("clean"), e.get("pgd20"), e.get("pgd20-t")
        if None not in (nat, unt, tgt):
            ok = unt < nat < tgt
            lines += ["", f"Untargeted PGD {'lowers' if unt < nat else 'does not lower'} the mean E(x) "
                      f"({unt:.3f} vs {nat:.3f} natural); targeted PGD {'raises' if tgt > nat else 'does not raise'} "
                      f"it ({tgt:.3f}). Observation 1 {'holds' if ok else 'does NOT hold'} for this model"
                      + (" (a standard model, shipped for contrast; docs/models.md has where the paper measured "
                         "the observation)." if cfg.get("method") == "standard" else "."), ""]
        low = m.get("share_lower") or {}
        if low:
            lines += ["Per image, the attack's x* has a lower E(x) than the natural image for: "
                      + ", ".join(f"{k} {100 * v:.1f} %" for k, v in low.items()) + " of the images.", ""]
    sweep = m.get("obs1_sweep")
    if sweep and sweep.get("rows"):
        lines += _sweep_lines(sweep)
    if log_records:
        last = log_records[-1]
        lines += ["## Training", "", f"- epochs: {last['epoch']}, images/s: {last.get('img_per_s', 0):.0f} "
                  f"(on the training machine), total training time: "
                  f"{sum(r.get('time_s', 0) for r in log_records) / 60:.1f} min",
                  "- per-epoch records (energies, ΔE, accuracies on fixed subsets): `log.jsonl`"]
        planned = t.get("epochs") if len(cfg.get("stages") or [t]) == 1 else None
        if isinstance(planned, int) and last["epoch"] < planned:
            lines.append(f"- stopped after epoch {last['epoch']} of the {planned} planned (a time limit or an "
                         f"interruption): its learning-rate schedule is the {planned}-epoch one, so the re-train "
                         f"command below repeats this run up to epoch {last['epoch']} and then goes on")
        if cfg.get("runtime"):
            lines.append(f"- ran on: {_runtime_text(cfg['runtime'])}")
        if cfg.get("note"):
            lines.append(f"- note: {cfg['note']}")
        if "epoch" in cfg:
            lines.append(f"- these weights: epoch {cfg['epoch']}, " + (
                "the run's last" if cfg.get("exported") == "last"
                else "the run's best by " + ("clean" if cfg.get("method") == "standard" else "robust")
                + " accuracy on the per-epoch test subset")
                + (f" ({cfg['exported_why']})" if str(cfg.get("exported_why", "")).startswith("auto") else ""))
        clean = [(r["test_clean_acc"], r["epoch"]) for r in log_records if "test_clean_acc" in r]
        if clean and cfg.get("method") == "standard":  # robust accuracy is ~0 for it: its clean curve instead
            top = max(clean)
            lines.append(f"- clean accuracy on the per-epoch test subset: {clean[-1][0]:.1%} at the last epoch "
                         f"({clean[-1][1]}), best {top[0]:.1%} at epoch {top[1]}")
        rob = [(r["test_pgd_acc"], r["epoch"], r.get("delta_e")) for r in log_records if "test_pgd_acc" in r]
        if rob and cfg.get("method") != "standard":
            best_i, drop, overfit = robust_peak([acc for acc, _, _ in rob], _subset_size(log_records, t))
            best, end = rob[best_i], rob[-1]
            line = (f"- robust accuracy on the per-epoch test subset: best {best[0]:.1%} at epoch {best[1]}, "
                    f"{end[0]:.1%} at the last epoch ({end[1]})")
            if overfit:
                line += f": down {drop:.1%}, robust overfitting"
            if best[2] is not None and end[2] is not None:
                line += f"; ΔE {best[2]:+.3f} at the best epoch, {end[2]:+.3f} at the last"
            lines.append(line)
            fit = {r["epoch"]: r["train_pgd_acc"] for r in log_records if "train_pgd_acc" in r}
            if best[1] in fit and end[1] in fit:  # how far the run fits its own images under attack
                lines.append(f"- robust accuracy on the per-epoch training subset: {fit[best[1]]:.1%} at the best "
                             f"epoch, {fit[end[1]]:.1%} at the last (the gap to the test subset: "
                             f"{100 * (fit[best[1]] - best[0]):+.1f} and {100 * (fit[end[1]] - end[0]):+.1f} points)")
        if cfg.get("heldout"):
            lines.append("- " + heldout_text(cfg["heldout"]))
        lines.append("")
    remeasure = [(cfg.get("reproduce") or {}).get(k) for k in ("eval", "eval_aa", "sweep")]
    if not cfg.get("recorded") and any(remeasure):
        lines += ["## Re-measure", "", "The stored metrics, the AutoAttack number and the ε sweep come from:", "",
                  "```", *[c for c in remeasure if c], "```", ""]
    stages = cfg.get("stages") or ([t] if t else [])
    if stages:
        lines += ["## Re-train", ""]
        if len(stages) > 1:
            lines += [f"{len(stages)} stages; each later one fine-tunes the weights the one before it ended "
                      "with (`--init`), so the epochs above run on across stages.", ""]
        lines += ["```", _chain(stages, "\n"), "```", ""]
        lines += [f"Settings{f' (stage {i + 1})' if len(stages) > 1 else ''}: {json.dumps(st, sort_keys=True)}"
                  for i, st in enumerate(stages)] + [""]
    return "\n".join(lines)


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
        n = len(b[key])
        only_best = sum(p == "1" and q == "0" for p, q in zip(b[key], e[key]))
        only_last = sum(p == "0" and q == "1" for p, q in zip(b[key], e[key]))
        se = math.sqrt(max(only_best + only_last - (only_best - only_last) ** 2 / n, 0.0)) / n
        out["paired"] = {"best_only": only_best, "last_only": only_last, "se": se}
    _, drop, fell = robust_peak([b[f"test_{attack}"], e[f"test_{attack}"]], b.get("n_test"), se=se)
    epoch = lambda k: int(k.rsplit("-", 1)[-1])  # noqa: E731 (checkpoint folders are named *-NNNN)
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("_correct")}  # noqa: E731
    return {**out, "best": {"epoch": epoch(best[0]), **strip(b)}, "last": {"epoch": epoch(last[0]), **strip(e)},
            "drop": drop, "overfitting": fell}


def heldout_text(h: dict[str, Any]) -> str:
    """One sentence on a run's held-out check (`heldout_summary`), for its card and the app."""
    a, b, e = h["attack"], h["best"], h["last"]
    shown = re.sub(r"^pgd(\d+)", r"PGD-\1", a).replace("-t", ", targeted")
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
    text = (f"held-out check ({n}test images the run never evaluated, {shown}): robust accuracy "
            f"{pct(b['test_' + a])} at the best epoch ({b['epoch']}), {pct(e['test_' + a])} at the last ({e['epoch']}): "
            f"{verdict}; clean {pct(b['test_clean'])} → {pct(e['test_clean'])}")
    if f"train_{a}" in b and f"train_{a}" in e:
        text += f"; its own training images under attack {pct(b['train_' + a])} → {pct(e['train_' + a])}"
    if "test_delta_e" in b and "train_delta_e" in b:
        text += (f"; ΔE {b['test_delta_e']:+.3f} → {e['test_delta_e']:+.3f} held-out, "
                 f"{b['train_delta_e']:+.3f} → {e['train_delta_e']:+.3f} on its training images")
    return text


def _arch_options(kw: Optional[dict]) -> str:
    """' (width 48)' for arch_kwargs {"width": 48}; '' for none."""
    return f" ({', '.join(f'{k} {v}' for k, v in kw.items())})" if kw else ""


def _sweep_lines(sweep: dict[str, Any]) -> list[str]:
    """The model card's table of Observation 1 across ε (`python -m weat_core sweep --store`)."""
    import pandas as pd

    from .lens import sweep_summary

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


def store_metrics(directory: Path, res: dict[str, Any], attacks: Sequence[str],
                  dataset: Optional[str] = None) -> dict[str, Any]:
    """Write `evaluate`'s results (L∞ 8/255, as every stored metric) into a checkpoint folder's
    config.json and rewrite its model card. PGD-type attacks replace clean accuracy, `n`,
    energies and ΔE with the new measurement; AutoAttack ("aa") is stored as `aa_acc`/`aa_n`.
    `dataset`: the test data measured on (default: the folder's `eval_dataset`); the stored
    commands name it when it is a local copy, so they measure the same images again."""
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    m = cfg.setdefault("metrics", {})
    name = directory.name
    if dataset is not None:
        cfg["eval_dataset"] = _portable(dataset)  # (a dataset name stays as it is)
    cmd = f"python -m weat_core eval --checkpoint {name}{_dataset_flag(cfg.get('eval_dataset'))} --attacks"
    others = [a for a in attacks if a not in ("clean", "aa")]
    if others or "aa" not in attacks:
        m.update(clean_acc=res["clean_acc"], n=res["n"])
        m.update({f"{a}_acc": res[f"{a}_acc"] for a in others})
        m["energy_mean"] = {k: v["mean"] for k, v in res["energy"].items() if k == "clean" or k in others}
        m["delta_e"] = {k: v for k, v in res["delta_e"].items() if k in others}
        m["share_lower"] = {k: v for k, v in res.get("share_lower", {}).items() if k in others}
        n = f" --n {res['n']}" if res["n"] < 10000 else ""
        cfg.setdefault("reproduce", {})["eval"] = f"{cmd} {','.join(others) or 'clean'}{n}"
    if "aa" in attacks:
        m.update(aa_acc=res["aa_acc"], aa_n=res["n"])
        cfg.setdefault("reproduce", {})["eval_aa"] = f"{cmd} aa --n {res['n']}"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
    (directory / "README.md").write_text(model_card(name, cfg, _read_log(directory / "log.jsonl")))
    return cfg


def store_sweep(directory: Path, rows: list[dict], n: int, steps: int, eps_arg: str,
                dataset: Optional[str] = None) -> dict[str, Any]:
    """Write a `sweep` (Observation 1 across ε; rows from `cli.sweep_rows`) into a checkpoint
    folder's config.json as metrics["obs1_sweep"] and rewrite its model card; `dataset` as in
    `store_metrics`."""
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    cfg.setdefault("metrics", {})["obs1_sweep"] = {"n": n, "steps": steps, "rows": rows}
    flag = _dataset_flag(dataset if dataset is not None else cfg.get("eval_dataset"))
    cfg.setdefault("reproduce", {})["sweep"] = (f"python -m weat_core sweep --checkpoint {directory.name}{flag} "
                                                f"--eps {eps_arg} --steps {steps} --n {n}")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
    (directory / "README.md").write_text(model_card(directory.name, cfg, _read_log(directory / "log.jsonl")))
    return cfg


def choose_epoch(run: Path, which: str = "auto") -> tuple[str, str]:
    """("best" or "last", why) for `export --which`. "auto" keeps the run's best epoch (by test
    PGD accuracy on the per-epoch subset; clean accuracy for standard training) only when the
    last epoch fell from it by more than that subset's noise (`evaluate.robust_peak`, the rule
    that flags robust overfitting), and the last epoch otherwise: on a 512-image subset a best
    epoch that leads by a point or two is noise, and the end of the schedule is the better bet."""
    if which in ("best", "last"):
        return which, f"--which {which}"
    if which != "auto":
        raise WeatError(f"--which must be best, last or auto, not {which!r}")
    recs = _read_log(run / "log.jsonl")
    if not recs:
        return "best", "auto: the run has no log, so its best checkpoint"
    key = "test_clean_acc" if recs[-1].get("method") == "standard" else "test_pgd_acc"
    recs = [r for r in recs if key in r]
    if not recs:
        return "best", "auto: the log has no accuracies, so the run's best checkpoint"
    training = {}
    if (run / "LATEST").is_file():  # older logs do not record the subset size; the run's settings do
        cfg_path = run / (run / "LATEST").read_text().strip() / "config.json"
        if cfg_path.is_file():
            training = json.loads(cfg_path.read_text()).get("training") or {}
    best_i, drop, fell = robust_peak([r[key] for r in recs], _subset_size(recs, training))
    what = "clean" if key == "test_clean_acc" else "robust"
    if fell:
        return "best", (f"auto: the last epoch's {what} accuracy fell {100 * drop:.1f} points from the best "
                        f"(epoch {recs[best_i]['epoch']}), more than the per-epoch subset's noise")
    return "last", (f"auto: the best epoch ({recs[best_i]['epoch']}) led the last by {100 * drop:.1f} points of "
                    f"{what} accuracy, within the per-epoch subset's noise")


def export_run(run: Path, name: str, dataset: Optional[str] = None, data_dir: Optional[str] = None,
               attacks: Sequence[str] = ("pgd20", "pgd20-t"), n: Optional[int] = None, aa_n: int = 0,
               which: str = "auto", fp16: bool = True, dest_root: Optional[Path] = None,
               device: str = "cpu", dataset_name: Optional[str] = None,
               max_shard_size: str = "100MB", note: Optional[str] = None) -> Path:
    """Evaluate the run's best or last checkpoint (`which`: best, last, or auto, see
    `choose_epoch`) on the test split and write it, with the metrics, the training log and a
    model card, to `dest_root/name` (default `checkpoints/`). `dataset_name` replaces a local
    dataset path in config.json (e.g. "cifar10" for a run on a class-folder copy of CIFAR-10),
    so users' `eval` finds the official data by name. Weights above `max_shard_size` are split
    into safetensors shards with an index, the Hub's layout (e.g. "15MB" for a transfer that
    caps file sizes). `note`: a sentence about how the run was made that its numbers alone do
    not tell (stored as `note`, shown in the card)."""
    which, why = choose_epoch(run, which)
    log.info("exporting the %s checkpoint (%s)", which, why)
    pointer = run / ("BEST" if which == "best" else "LATEST")
    if not pointer.is_file():
        raise WeatError(f"{run} is not a training run folder (no {pointer.name})")
    src = run / pointer.read_text().strip()
    model = load(src, device=device)
    if fp16:  # measure the weights exactly as they will be shipped
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point() and not k.startswith("normalize."):
                    v.copy_(v.half().float())
    cfg = json.loads((src / "config.json").read_text())
    ds = dataset or cfg["dataset"]
    test = load_split(ds, "test", root=data_dir, limit=n)
    # progress is kept in the run folder, per exported checkpoint: a re-run after a crash resumes
    tag = f"{src.name}-{'fp16' if fp16 else 'fp32'}-{name}"
    res = evaluate(model, test.float(), test.y, list(attacks), batch_size=256, progress=True,
                   state=run / f".export-{tag}.partial")
    metrics: dict[str, Any] = {"clean_acc": res["clean_acc"], "n": res["n"]}
    metrics.update({f"{a}_acc": res[f"{a}_acc"] for a in attacks})
    metrics["energy_mean"] = {k: v["mean"] for k, v in res["energy"].items()}
    metrics["delta_e"] = res["delta_e"]
    metrics["share_lower"] = res["share_lower"]
    if aa_n:
        sub = test.subset(aa_n)
        aa = evaluate(model, sub.float(), sub.y, ["aa"], batch_size=256, progress=True,
                      state=run / f".export-{tag}-aa.partial")
        metrics.update(aa_acc=aa["aa_acc"], aa_n=aa["n"])
    dest = (dest_root or checkpoints_dir()) / name
    if dest.exists():
        shutil.rmtree(dest)
    cfg_out, stages, records = _run_settings(run, cfg, dataset_name)
    cfg_out.update(metrics=metrics, exported=which, exported_why=why, eval_dataset=_portable(ds),
                   **({"note": note} if note else {}))
    cmd = f"python -m weat_core eval --checkpoint {name}{_dataset_flag(ds)} --attacks"
    cfg_out["reproduce"]["eval"] = f"{cmd} {','.join(attacks)}" + (f" --n {n}" if n else "")
    if aa_n:
        cfg_out["reproduce"]["eval_aa"] = f"{cmd} aa --n {metrics['aa_n']}"
    if len(stages) > 1 and "epoch" in cfg:  # count the epochs of the earlier stages too
        cfg_out["epoch"] = cfg["epoch"] + max(r["epoch"] for r in records if r["stage"] < len(stages))
    # the run checkpoint's own metrics and their note ("per-epoch metrics on fixed subsets") must
    # not come back through the model's config: the shipped metrics are the ones measured here
    model.config = {k: v for k, v in model.config.items() if k not in ("metrics", "metrics_note", "source")}
    shared = dest.parent / "_shared" / f"{cfg_out.get('dataset')}-init_stats.safetensors"
    if shared.is_file():  # the dataset's SGLD start statistics, shipped once for all its checkpoints
        cfg_out["init_stats"] = f"../_shared/{shared.name}"
    save(model, dest, cfg_out, dtype=torch.float16 if fp16 else None, max_shard_size=max_shard_size)
    _write_log_and_card(dest, name, json.loads((dest / "config.json").read_text()), records)
    log.info("exported %s → %s", src, dest)
    return dest


def _run_settings(run: Path, cfg: dict[str, Any], dataset_name: Optional[str]) -> tuple[dict, list[dict], list[dict]]:
    """What a shipped folder's config.json takes from a run's checkpoint config `cfg` (its own
    per-epoch metrics left behind), with the stages and re-train command of its `--init` chain;
    also (stages, the merged per-epoch records). `dataset_name` replaces a local dataset path."""
    from . import __version__

    out = {k: v for k, v in cfg.items() if k not in ("metrics", "metrics_note", "source")}
    if dataset_name:
        out.update(dataset=dataset_name, trained_on=str(cfg["dataset"]))
    stages, records = lineage(cfg, _read_log(run / "log.jsonl"))
    if len(stages) > 1:
        out["stages"] = stages
    out.update(weat_core_version=__version__, reproduce={"train": _chain(stages, " && ") if "training" in cfg else None})
    return out, stages, records


def _write_log_and_card(dest: Path, name: str, cfg: dict[str, Any], records: list[dict]) -> None:
    if records:
        (dest / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (dest / "README.md").write_text(model_card(name, cfg, records))


def export_log(run: Path, name: str, dest_root: Optional[Path] = None, dataset_name: Optional[str] = None,
               heldout: Optional[dict[str, Any]] = None, note: Optional[str] = None) -> Path:
    """Ship a training run's dynamics without its weights: the per-epoch `log.jsonl` (earlier
    `--init` stages included), `config.json` with the settings and the command that re-trains
    it, and a card, in `dest_root/_runs/name` (default `checkpoints/_runs/`). Nothing is
    evaluated: the card reports the per-epoch subset accuracies the log holds. For runs that
    matter for their curves (robust overfitting) rather than as models to load.

    `run` may also be an exported checkpoint folder (`config.json` and `log.jsonl`, e.g. one
    trained on a GPU machine whose weights are too large to ship): its measured test metrics
    are kept, marked as measured on weights that are not shipped. `heldout` (from
    `heldout_summary`) stores the run's best and last epoch measured on held-out test images;
    re-exporting a recorded run keeps the check it already has, and its `note` (as `export_run`'s)
    unless a new one is given."""
    pointer = run / "LATEST"
    if pointer.is_file():
        cfg = json.loads((run / pointer.read_text().strip() / "config.json").read_text())
        out, _, records = _run_settings(run, cfg, dataset_name)
        out.pop("epoch", None)  # no weights, so no epoch of them
    elif (run / "config.json").is_file() and (run / "log.jsonl").is_file():
        out = json.loads((run / "config.json").read_text())
        if "training" not in out:
            raise WeatError(f"{run}/config.json does not come from `weat_core export` (no training settings)")
        records = _read_log(run / "log.jsonl")
        if dataset_name:
            out.update(dataset=dataset_name)
        if out.get("eval_dataset"):
            out["eval_dataset"] = _portable(out["eval_dataset"])
        # no weights to evaluate; the re-train command written afresh from the stored settings
        out["reproduce"] = {"train": _chain(out.get("stages") or [_stage(out)], " && ")}
        if out.get("metrics") and "epoch" in out:  # (a recorded run re-exported keeps its note)
            out["metrics_note"] = (f"measured by `weat_core eval` on the weights of epoch {out.get('epoch', '?')}, "
                                   "which are not shipped")
        out.pop("epoch", None)
    else:
        raise WeatError(f"{run} is not a training run folder (no LATEST) nor an exported checkpoint folder "
                        "(config.json and log.jsonl)")
    if not records:
        raise WeatError(f"{run} has no per-epoch records in log.jsonl to ship")
    out.update(recorded="log only: no weights are shipped", epochs=records[-1]["epoch"])
    if heldout is not None:
        out["heldout"] = heldout
    if note:
        out["note"] = note
    dest = (dest_root or checkpoints_dir()) / RUNS_DIR / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / "config.json").write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
    _write_log_and_card(dest, name, out, records)
    log.info("recorded %s → %s", run, dest)
    return dest

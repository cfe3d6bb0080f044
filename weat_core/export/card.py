"""A shipped folder's texts: the model card (README.md), the re-train command and the `--init`
lineage behind it, and the dataset paths as those commands give them."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Optional

from ..attacks import attack_title
from ..data import DATASETS
from ..evaluate import per_255
from ..results import robust_peak
from ..train import TrainConfig
from .heldout import heldout_text
from .observation import attacks_lines, join_names, plane_lines, sweep_lines

__all__ = ["lineage", "model_card"]

_REPO = Path(__file__).resolve().parents[2]


def _portable(path: Any) -> str:
    """A dataset path as the re-train command should give it: commands run from the repository
    root, so an absolute path beside the repository (the shared CIFAR-10 copy in `../shared`)
    becomes relative to it, the same on every machine, and the GPU scripts' carried copy of that
    folder (`.data/`, ignored, which exists only where the scripts were set up) names the original.
    A file in a `shared/data/` folder elsewhere (the copy beside the checkout a run was trained in,
    when the command is written from another checkout, e.g. a fresh clone in CI) names the one
    beside this repository, so a card reads the same wherever it is written. Other paths and names
    stay as they are."""
    s = str(path)
    p = Path(s)
    if not p.is_absolute() and p.parts[:1] == (".data",) and len(p.parts) == 2:
        return str(Path("..", "shared", "data", p.name))
    if p.is_absolute() and _REPO.parent != Path(_REPO.anchor) and Path(os.path.normpath(p)).is_relative_to(_REPO.parent):
        return os.path.relpath(os.path.normpath(p), _REPO)
    if p.is_absolute() and p.parts[-3:-1] == ("shared", "data"):
        return str(Path("..", "shared", "data", p.name))
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
            "--schedule", t["schedule"], "--eps", per_255(t["eps"]), "--alpha", per_255(t["alpha"]),
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
    if t.get("ema"):
        args += ["--ema", str(t["ema"])]
    if t.get("init"):
        args += ["--init", str(t["init"])]
    if with_out and t.get("out"):
        args += ["--out", str(t["out"])]
    return " ".join(shlex.quote(a) for a in args)


def train_command(t: dict[str, Any], resume: bool = False) -> str:
    """The `train` command line of settings `t` (a `TrainConfig` as a dict), with its run folder;
    `resume` continues that run from its last finished epoch."""
    return _train_command(t, with_out=True) + (" --resume" if resume else "")


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
                  "| measure | accuracy | test images |", "|---|---|---|"]
        accs = {k[:-len("_acc")]: v for k, v in m.items() if k.endswith("_acc")}
        for k in ["clean", *sorted(set(accs) - {"clean", "aa"}), "aa"]:  # as the README's table: AutoAttack last
            if k in accs:
                n = m.get("aa_n" if k == "aa" else "n")
                lines.append(f"| {attack_title(k)} | {100 * accs[k]:.2f} % | {'?' if n is None else f'{n:,}'} |")
        lines += ["", "L∞ ε = 8/255; PGD-20 with step 2/255 and a random start; targeted PGD aims at a random "
                  "other class."
                  + (" AutoAttack is the standard version (APGD-CE, APGD-T, FAB-T and Square; Croce & Hein 2020), "
                     "on the first test images of the class-balanced order (`eval --n`)." if "aa" in accs else ""),
                  ""]
    if e:
        lines += ["## Energies (Observation 1)", "", "| images | mean E(x) |", "|---|---|"]
        lines += [f"| {attack_title(k)} | {v:.3f} |" for k, v in e.items()]
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
                      + ", ".join(f"{attack_title(k)} {100 * v:.1f} %" for k, v in low.items()) + " of the images.",
                      ""]
    sweep = m.get("obs1_sweep")
    if sweep and sweep.get("rows"):
        lines += sweep_lines(sweep)
    attacks = m.get("obs1_attacks")
    if attacks and attacks.get("rows"):
        lines += attacks_lines(attacks)
    if m.get("plane_span"):
        lines += plane_lines(m["plane_span"])
    if log_records:
        last = log_records[-1]
        speeds = sorted(r["img_per_s"] for r in log_records if r.get("img_per_s"))
        # the median epoch, not the last: runs sharing a device speed up as the others finish
        speed = (f"{speeds[len(speeds) // 2]:.0f} in the median epoch, {last.get('img_per_s', 0):.0f} in the last"
                 if len(speeds) > 2 else f"{last.get('img_per_s', 0):.0f}")
        lines += ["## Training", "", f"- epochs: {last['epoch']}, images/s on the training machine: {speed}, "
                  "total training time: "
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
        averaged = any("ema_test_pgd_acc" in r for r in log_records)  # a run that shipped its weight average
        if "epoch" in cfg:
            lines.append(f"- these weights: {'the weight average (`--ema`) at ' if averaged else ''}"
                         f"epoch {cfg['epoch']}, " + (
                "the run's last" if cfg.get("exported") == "last"
                else "the run's best by " + ("clean" if cfg.get("method") == "standard" else "robust")
                + " accuracy on the per-epoch test subset")
                + (f" ({cfg['exported_why']})" if str(cfg.get("exported_why", "")).startswith("auto") else ""))
        ck = "ema_test_clean_acc" if averaged else "test_clean_acc"
        clean = [(r[ck], r["epoch"]) for r in log_records if ck in r]
        if clean and cfg.get("method") == "standard":  # robust accuracy is ~0 for it: its clean curve instead
            top = max(clean)
            lines.append(f"- clean accuracy on the per-epoch test subset: {clean[-1][0]:.1%} at the last epoch "
                         f"({clean[-1][1]}), best {top[0]:.1%} at epoch {top[1]}")
        # with a weight average, the average's curve (the weights shipped; ΔE and the training subset
        # are measured on the trained weights only, so they are left out of its line)
        rob = [(r["ema_test_pgd_acc"], r["epoch"], None) if averaged else (r["test_pgd_acc"], r["epoch"], r.get("delta_e"))
               for r in log_records if ("ema_test_pgd_acc" if averaged else "test_pgd_acc") in r]
        if rob and cfg.get("method") != "standard":
            best_i, drop, overfit = robust_peak([acc for acc, _, _ in rob], _subset_size(log_records, t))
            best, end = rob[best_i], rob[-1]
            once = best[1] == end[1]  # the best epoch is the last: its numbers are given once
            line = (f"- robust accuracy {'of the weight average ' if averaged else ''}on the per-epoch test subset: "
                    + (f"{end[0]:.1%} at the last epoch ({end[1]}), its best" if once else
                       f"best {best[0]:.1%} at epoch {best[1]}, {end[0]:.1%} at the last epoch ({end[1]})"))
            if overfit:
                line += f": down {drop:.1%}, robust overfitting"
            if best[2] is not None and end[2] is not None:
                line += (f"; ΔE {end[2]:+.3f} there" if once else
                         f"; ΔE {best[2]:+.3f} at the best epoch, {end[2]:+.3f} at the last")
            lines.append(line)
            fit = {} if averaged else {r["epoch"]: r["train_pgd_acc"] for r in log_records if "train_pgd_acc" in r}
            if best[1] in fit and end[1] in fit:  # how far the run fits its own images under attack
                lines.append("- robust accuracy on the per-epoch training subset: " + (
                    f"{fit[end[1]]:.1%} at the last epoch (the gap to the test subset: "
                    f"{100 * (fit[end[1]] - end[0]):+.1f} points)" if once else
                    f"{fit[best[1]]:.1%} at the best epoch, {fit[end[1]]:.1%} at the last (the gap to the test "
                    f"subset: {100 * (fit[best[1]] - best[0]):+.1f} and {100 * (fit[end[1]] - end[0]):+.1f} points)"))
        if cfg.get("heldout"):
            lines.append("- " + heldout_text(cfg["heldout"]))
        lines.append("")
    what = {"eval": "the stored metrics", "eval_aa": "the AutoAttack number", "sweep": "the ε sweep",
            "landscape": "the attacks of Observation 1", "plane": "the energy around each image"}
    remeasure = {k: c for k in what if (c := (cfg.get("reproduce") or {}).get(k))}
    if not cfg.get("recorded") and remeasure:
        said = join_names([what[k] for k in remeasure])
        one = len(remeasure) == 1 and next(iter(remeasure)) in ("eval_aa", "sweep", "plane")  # a singular noun
        lines += ["## Re-measure", "", f"{said[0].upper()}{said[1:]} come{'s' if one else ''} from:", "",
                  "```", *remeasure.values(), "```", ""]
    stages = cfg.get("stages") or ([t] if t else [])
    if stages:
        lines += ["## Re-train", ""]
        if len(stages) > 1:
            lines += [f"{len(stages)} stages; each later one fine-tunes the weights the one before it ended "
                      "with (`--init`), so the epochs above run on across stages.", ""]
        lines += ["```", _chain(stages, "\n"), "```", ""]
        lines += [f"Settings{f' (stage {i + 1})' if len(stages) > 1 else ''}: {json.dumps(_shown(st, i < len(stages) - 1), sort_keys=True)}"
                  for i, st in enumerate(stages)] + [""]
    return "\n".join(lines)



def _shown(settings: dict[str, Any], feeds_next: bool) -> dict[str, Any]:
    """A stage's settings as its card lists them: the dataset as the re-train command names it
    (`_portable`), and the run folder (`out`) only where the commands use it (a stage that a later
    one fine-tunes with `--init`); elsewhere it is a path on the machine that trained the run
    (often a temporary folder) and tells a reader nothing. config.json keeps both as they were."""
    shown = {k: v for k, v in settings.items() if feeds_next or k != "out"}
    if shown.get("dataset"):
        shown["dataset"] = _portable(shown["dataset"])
    return shown


def _arch_options(kw: Optional[dict]) -> str:
    """' (width 48)' for arch_kwargs {"width": 48}; '' for none."""
    return f" ({', '.join(f'{k} {v}' for k, v in kw.items())})" if kw else ""

"""Writing shipped folders: `export_run` (a run's checkpoint, evaluated, with its log and card),
`export_log` (a recorded run without weights), `choose_epoch` (best or last), and `store_metrics` /
`store_sweep` / `store_attacks` / `store_plane` (new measurements into an existing folder)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .. import WeatError
from ..checkpoints import RUNS_DIR, checkpoints_dir, load, save
from ..data import CIFAR10_CLASSES, DATASETS, load_split
from ..evaluate import evaluate
from ..results import robust_peak
from ..lens._common import prepare
from .card import _chain, _dataset_flag, _portable, _read_log, _stage, _subset_size, lineage, model_card

__all__ = ["choose_epoch", "export_log", "export_run", "store_attacks", "store_metrics", "store_plane", "store_sweep"]

log = logging.getLogger(__name__)


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


def _store(directory: Path, key: str, value: dict[str, Any], command: str, args: str,
           dataset: Optional[str] = None) -> dict[str, Any]:
    """Write one measurement into a checkpoint folder's config.json as metrics[`key`], with the
    `python -m weat_core COMMAND` that measures it again under reproduce[`command`], and rewrite its
    model card. `dataset`, as in `store_metrics`, is what the command names (default: the folder's
    `eval_dataset`)."""
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    cfg.setdefault("metrics", {})[key] = value
    flag = _dataset_flag(dataset if dataset is not None else cfg.get("eval_dataset"))
    cfg.setdefault("reproduce", {})[command] = f"python -m weat_core {command} --checkpoint {directory.name}{flag} {args}"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
    (directory / "README.md").write_text(model_card(directory.name, cfg, _read_log(directory / "log.jsonl")))
    return cfg


def store_sweep(directory: Path, rows: list[dict], n: int, steps: int, eps_arg: str,
                dataset: Optional[str] = None) -> dict[str, Any]:
    """Write a `sweep` (Observation 1 across ε; rows from `cli.observation.sweep_rows`) into a checkpoint
    folder's config.json as metrics["obs1_sweep"] and rewrite its model card."""
    return _store(directory, "obs1_sweep", {"n": n, "steps": steps, "rows": rows}, "sweep",
                  f"--eps {eps_arg} --steps {steps} --n {n}", dataset)


def store_attacks(directory: Path, result: dict[str, Any], dataset: Optional[str] = None) -> dict[str, Any]:
    """Write Observation 1 for every attack (`landscape`; `result` from
    `cli.observation.landscape_result`) into a checkpoint folder's config.json as
    metrics["obs1_attacks"] and rewrite its model card."""
    attacks = ",".join(r["attack"] for r in result["rows"])
    return _store(directory, "obs1_attacks", result, "landscape",
                  f"--attacks {attacks} --steps {result['steps']} --n {result['n']}", dataset)


def store_plane(directory: Path, result: dict[str, Any], dataset: Optional[str] = None) -> dict[str, Any]:
    """Write the span of E(x) on each test image's attack plane (`plane`; `result` from
    `cli.plane.plane_result`: mean, se, median, n, steps, grid) into a checkpoint folder's config.json
    as metrics["plane_span"] and rewrite its model card; each image's span stays out."""
    keep = {k: result[k] for k in ("mean", "se", "median", "n", "steps", "grid")}
    return _store(directory, "plane_span", keep, "plane",
                  f"--n {keep['n']} --steps {keep['steps']} --grid {keep['grid']}", dataset)


def choose_epoch(run: Path, which: str = "auto") -> tuple[str, str]:
    """("best" or "last", why) for `export --which`. "auto" keeps the run's best epoch (by test
    PGD accuracy on the per-epoch subset; clean accuracy for standard training) only when the
    last epoch fell from it by more than that subset's noise (`results.robust_peak`, the rule
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
    if "ema_" + key in recs[-1]:  # a run with a weight average checkpoints (and is judged by) the average
        key = "ema_" + key
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
    if best_i == len(recs) - 1:
        return "last", f"auto: the last epoch is also the best by {what} accuracy on the per-epoch subset"
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
    if not (run / "LATEST").is_file():
        raise WeatError(f"{run} is not a training run folder (no LATEST): give the folder a `train --out` wrote")
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
    measured = prepare(model)  # as `eval` runs it (channels_last on a CPU); `model` itself is saved below
    res = evaluate(measured, test.float(), test.y, list(attacks), batch_size=256, progress=True,
                   state=run / f".export-{tag}.partial")
    metrics: dict[str, Any] = {"clean_acc": res["clean_acc"], "n": res["n"]}
    metrics.update({f"{a}_acc": res[f"{a}_acc"] for a in attacks})
    metrics["energy_mean"] = {k: v["mean"] for k, v in res["energy"].items()}
    metrics["delta_e"] = res["delta_e"]
    metrics["share_lower"] = res["share_lower"]
    if aa_n:
        sub = test.subset(aa_n)
        aa = evaluate(measured, sub.float(), sub.y, ["aa"], batch_size=256, progress=True,
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


def shipped_dataset_name(cfg: dict[str, Any], given: Optional[str] = None) -> Optional[str]:
    """The dataset name a shipped folder gives for a run's data: `given` (--dataset-name), else
    "cifar10" for a run trained on a local copy whose classes are CIFAR-10's, so that the app and
    `compare` see it as the same dataset as the other CIFAR-10 checkpoints (the copy's path stays
    in `trained_on`), else None: the run's own dataset stands."""
    if given:
        return given
    ds = str(cfg.get("dataset", ""))
    if ds in DATASETS or tuple(cfg.get("classes") or ()) != CIFAR10_CLASSES:
        return None
    log.info("the run trained on %s, a copy with CIFAR-10's classes: shipped as dataset cifar10 "
             "(--dataset-name names it otherwise)", ds)
    return "cifar10"


def _run_settings(run: Path, cfg: dict[str, Any], dataset_name: Optional[str]) -> tuple[dict, list[dict], list[dict]]:
    """What a shipped folder's config.json takes from a run's checkpoint config `cfg` (its own
    per-epoch metrics left behind), with the stages and re-train command of its `--init` chain;
    also (stages, the merged per-epoch records). `dataset_name` replaces a local dataset path."""
    from .. import __version__

    out = {k: v for k, v in cfg.items() if k not in ("metrics", "metrics_note", "source")}
    dataset_name = shipped_dataset_name(cfg, dataset_name)
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

"""`gen-eval`: quality of generated images: agreement with an independent classifier, diversity
(pixels and features), Inception Score and FID.

    gen-eval --samples DIR/samples.npz --classifier NAME   (or --checkpoint NAME to generate first)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import WeatError
from .common import count, log, pick_device
from .generate import add_device_args, add_generation_args, run_generation

if TYPE_CHECKING:
    import torch


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gen-eval", help="quality metrics of generated images (agreement, diversity, IS, FID)",
        description="Score samples.npz from `generate` (or generate afresh with --checkpoint): the share an "
                    "independent classifier assigns to the intended class, within-class diversity vs real test "
                    "images (in pixels, and in that classifier's penultimate features), and Inception Score / FID vs real training images (Inception weights download once).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", help="samples.npz written by `generate`")
    src.add_argument("--checkpoint", help="generate from this checkpoint first (settings as for `generate`)")
    p.add_argument("--classifier", default=None, help="an independently trained classifier checkpoint (agreement)")
    p.add_argument("--dataset", default=None, help="real images: cifar10 | … | folder | .tar.gz "
                                                   "(default: the checkpoint's dataset)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--real", type=count, default=5000, help="real training images for FID")
    p.add_argument("--no-inception", action="store_true", help="skip IS and FID (no download, faster on CPU)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_generation_args(p)
    p.set_defaults(per_class=50)
    add_device_args(p)
    p.set_defaults(func=cmd_gen_eval)


def _load_samples(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    import torch

    p = Path(path)
    if p.is_dir():
        p = p / "samples.npz"
    if not p.is_file():
        raise WeatError(f"no samples at {p}; write them with `python -m weat_core generate`")
    try:
        with np.load(p, allow_pickle=False) as z:
            images = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W) uint8
            labels = torch.from_numpy(z["labels"]).long()
    except (KeyError, ValueError, OSError) as e:
        raise WeatError(f"{p} is not a samples.npz from `generate` ({e})") from None
    return images, labels


def cmd_gen_eval(args: argparse.Namespace) -> int:
    """`gen-eval`: print agreement, diversity (pixels and features), IS and FID of generated images."""
    import torch

    from .. import checkpoints
    from ..data import load_split
    from ..sampling.metrics import evaluate_samples, fid, inception_score

    device = pick_device(args.device)
    dataset = args.dataset
    classifier = None
    if args.samples:
        images, labels = _load_samples(args.samples)
    else:
        model = checkpoints.load(args.checkpoint, device=device)
        res, _ = run_generation(args, model)
        images, labels = res.images, res.labels
        dataset = dataset or model.config.get("dataset")
    if args.classifier:
        classifier = checkpoints.load(args.classifier, device=device)
        dataset = dataset or classifier.config.get("dataset")
        if args.checkpoint and str(checkpoints.resolve(args.classifier)) == str(checkpoints.resolve(args.checkpoint)):
            log.warning("the classifier is the generating model itself: agreement is then not an independent check")
    real_test = load_split(dataset, "test", root=args.data_dir) if dataset else None
    if not dataset:
        log.info("no --dataset: diversity without a real reference, no FID")
    m = evaluate_samples(images, labels, classifier=classifier, real_test=real_test, inception=False)
    if args.no_inception:
        m["skipped"]["inception"] = "turned off (--no-inception)"
    else:
        m["skipped"].pop("inception", None)
        log.info("Inception Score / FID of %d images (slow on a CPU; --no-inception skips them)", images.shape[0])
        try:
            m["inception_score"] = inception_score(images, device=device)
            if dataset and args.real > 0:  # load the real images only once Inception is known to work
                real_train = load_split(dataset, "train", root=args.data_dir, limit=args.real).x
                m["fid"] = fid(images, real_train, device=device)
                m["fid_real_n"] = int(real_train.shape[0])
            else:
                m["skipped"]["fid"] = "no real training images (--dataset, --real)"
        except WeatError as e:
            m["skipped"]["inception"] = str(e)
    judge_method = classifier.config.get("method", "?") if classifier is not None else None
    if "classifier" in m:
        m["classifier"]["method"] = judge_method  # what kind of judge: its features see differently
    if args.json:
        print(json.dumps(m, indent=2, default=float))
        return 0
    print(f"samples               {m['n']} ({len(torch.unique(labels))} classes)")
    if "classifier" in m:
        c = m["classifier"]
        print(f"classifier agreement  {100 * c['agreement']:.1f} %  (mean p(y|x) {c['confidence']:.3f}; "
              f"classifier {args.classifier}, trained {judge_method})")
    d = m["diversity"]
    line = f"diversity             {d['generated']:.3f} mean pairwise L2 within a class"
    if d.get("real"):
        line += f"; real test images {d['real']:.3f}; ratio {d['ratio']:.3f}"
    print(line)
    if "feature_diversity" in m:
        f = m["feature_diversity"]
        line = f"feature diversity     {f['generated']:.3f} in the classifier's penultimate features"
        if f.get("real"):
            line += f"; real test images {f['real']:.3f}; ratio {f['ratio']:.3f}"
        print(line)
        if judge_method == "standard":  # measured on the PreActResNet-18 samples (docs/generation.md)
            print("                      (a standard classifier's features hardly tell repeated textures from "
                  "varied images; a robust classifier as --classifier shows collapse better)")
    if "inception_score" in m:
        print(f"Inception Score       {m['inception_score'][0]:.3f} ± {m['inception_score'][1]:.3f}")
    if "fid" in m:
        print(f"FID                   {m['fid']:.2f}  (vs {m['fid_real_n']} training images; compare at equal N)")
    for what, why in m["skipped"].items():
        print(f"skipped {what}: {why}")
    return 0

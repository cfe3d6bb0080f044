"""scripts/device_carry.sh: leaving the shipped PreActResNet-18 weights out of a device-tool call
and bringing them back, on a small stand-in repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _stand_in(tmp_path: Path, files: dict[str, int]):
    """A committed stand-in repository with scripts/device_carry.sh and these files under checkpoints/
    ({path: MiB}; a config.json holds "{}"); returns its folder and a runner of the script there."""
    r = tmp_path / "repo"
    (r / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "device_carry.sh", r / "scripts")
    for path, mib in files.items():
        f = r / "checkpoints" / path
        f.parent.mkdir(parents=True, exist_ok=True)
        if f.name == "config.json":
            f.write_text("{}")
        else:
            f.write_bytes(b"\0" * mib * 2**20)
    _git(r, "init", "-q")
    _git(r, "add", ".")
    _git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "stand-in")
    return r, lambda *a: subprocess.run(["bash", "scripts/device_carry.sh", *a], cwd=r, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None, reason="needs git and bash")
def test_device_carry_leaves_the_big_weights_out_and_restores_them(tmp_path):
    ck = tmp_path / "repo" / "checkpoints" / "preactresnet18-trades"
    r, run = _stand_in(tmp_path, {"preactresnet18-trades/model-00001-of-00002.safetensors": 3,  # 6 MiB in all
                                  "preactresnet18-trades/model-00002-of-00002.safetensors": 3,
                                  "preactresnet18-trades/config.json": 0, "weatnet_s-sat/model.safetensors": 1})

    before = run()
    assert before.returncode == 0 and "sends 7.0 MiB" in before.stdout, before.stdout + before.stderr

    light = run("light")
    assert light.returncode == 0 and "sends 1.0 MiB" in light.stdout, light.stdout + light.stderr
    tracked = _git(r, "ls-files").split()
    assert "checkpoints/preactresnet18-trades/config.json" in tracked
    assert not any(p.endswith(".safetensors") and "preactresnet18" in p for p in tracked)
    assert "checkpoints/weatnet_s-sat/model.safetensors" in tracked  # the small models still travel
    ignored = _git(r, "status", "--porcelain", "--ignored")
    assert "!! checkpoints/preactresnet18-trades/model-00001-of-00002.safetensors" in ignored
    assert (ck / "model-00001-of-00002.safetensors").stat().st_size == 3 * 2**20  # the files stay on disk
    assert run("light").returncode == 0  # twice is harmless

    restore = run("restore")
    assert restore.returncode == 0 and "sends 7.0 MiB" in restore.stdout
    assert _git(r, "status", "--porcelain", "--ignored", "--untracked-files=no") == ""  # index as committed
    assert "preactresnet18" not in (r / ".git" / "info" / "exclude").read_text()
    assert run("bogus").returncode == 2


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None, reason="needs git and bash")
def test_device_carry_only_keeps_the_named_checkpoints_weights(tmp_path):
    sizes = {"preactresnet18-sat": 3, "preactresnet18-trades": 3, "preactresnet18-weat-adv": 3, "weatnet_s-sat": 1}
    files = {f"{name}/model.safetensors": mib for name, mib in sizes.items()}
    files.update({f"{name}/config.json": 0 for name in sizes}, **{"_shared/stats.safetensors": 1})
    r, run = _stand_in(tmp_path, files)

    assert "sends 11.0 MiB" in run().stdout
    only = run("only", "preactresnet18-sat", "preactresnet18-weat-adv")
    assert only.returncode == 0 and "sends 6.0 MiB" in only.stdout, only.stdout + only.stderr
    tracked = _git(r, "ls-files").split()
    assert {p for p in tracked if p.endswith(".safetensors")} == {
        "checkpoints/preactresnet18-sat/model.safetensors", "checkpoints/preactresnet18-weat-adv/model.safetensors"}
    assert "checkpoints/preactresnet18-trades/config.json" in tracked  # only the weights stay behind
    assert (r / "checkpoints" / "preactresnet18-trades" / "model.safetensors").stat().st_size == 3 * 2**20
    assert "sends 6.0 MiB" in run("only", "preactresnet18-sat", "preactresnet18-weat-adv").stdout  # twice is harmless
    bad = run("only", "no-such-model")
    assert bad.returncode == 2 and "no shipped checkpoint" in bad.stderr
    assert run("only").returncode == 2

    restore = run("restore")
    assert restore.returncode == 0 and "sends 11.0 MiB" in restore.stdout, restore.stdout + restore.stderr
    assert _git(r, "status", "--porcelain", "--ignored", "--untracked-files=no") == ""  # index as committed
    assert "safetensors" not in (r / ".git" / "info" / "exclude").read_text()
    assert not (r / ".git" / "device_carry_left_out").exists()


def test_subset_archive_holds_the_first_images_of_the_balanced_order(tmp_path):
    """scripts/subset_archive.py copies the first images of each class, so that the small archive's first
    n test images are the whole archive's, in the same order (what a device call's AutoAttack needs)."""
    import io
    import sys
    import tarfile

    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(REPO / "scripts"))
    import subset_archive

    from weat_core.data import load_split

    rng = np.random.default_rng(0)
    src = tmp_path / "whole.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        # classes with unequal counts, written out of name order; a train split that must not be copied
        for split, c, i in [("test", c, i) for c in ("cat", "ant", "dog") for i in (4, 0, 3, 1, 2)][:-1] \
                + [("train", "ant", 0)]:
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
            info = tarfile.TarInfo(f"./{split}/{c}/{i:04d}.png")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    dest = tmp_path / "part.tar.gz"
    assert subset_archive.main([str(src), str(dest), "--per-class", "3"]) == 0  # it checks itself, too
    with tarfile.open(dest) as tar:
        names = sorted(m.name for m in tar.getmembers())
    assert names == [f"test/{c}/{i:04d}.png" for c, idx in (("ant", (0, 1, 2)), ("cat", (0, 1, 2)), ("dog", (0, 1, 3)))
                     for i in idx]  # dog has no 0002
    whole, part = load_split(str(src), "test", limit=9), load_split(str(dest), "test", limit=9)
    assert torch.equal(whole.x, part.x) and torch.equal(whole.y, part.y) and whole.classes == part.classes
    assert whole.y.tolist() == [0, 1, 2] * 3  # the class-balanced order


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_aa_repro_runs_and_ends_with_stored_against_measured(cifar_tarball, tmp_path):
    """scripts/gpu_aa_repro.sh as its CPU smoke run: AutoAttack on the first two test images of a
    shipped model, each image's result kept, and the last table with the stored and measured numbers."""
    import json
    import os

    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "DEVICE": "cpu", "AA_N": "2", "DATA": str(cifar_tarball),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "scripts/gpu_aa_repro.sh", "weatnet_s-sat"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads((out / "aa-weatnet_s-sat.json").read_text())
    assert got["n"] == 2 and got["checkpoint"] == "weatnet_s-sat" and len(got["correct"]["aa"]) == 2
    row = (out / "session.log").read_text().split("stored against measured")[1].splitlines()[2].split()
    from weat_core.checkpoints import list_checkpoints

    stored = next(c.metrics for c in list_checkpoints() if c.name == "weatnet_s-sat")
    assert row[:4] == ["weatnet_s-sat", f"{100 * stored['aa_acc']:.2f}", "%", str(stored["aa_n"])]
    assert row[4:7] == [f"{100 * got['aa_acc']:.2f}", "%", "2"]  # measured on the 2
    assert subprocess.run(["bash", "scripts/gpu_aa_repro.sh"], cwd=REPO, capture_output=True).returncode == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_cpu_aa_resume_starts_then_goes_on_from_the_partial_file(cifar_tarball, tmp_path, monkeypatch):
    """scripts/cpu_aa_resume.sh starts a dated measurement where none is under way, goes on from
    its .partial where one is (a session on a fresh machine gets it from git), and says when the
    measurement is done."""
    import json
    import os

    from weat_core.attacks.autoattack import TorchAttack
    from weat_core.cli import main

    res = tmp_path / "results"
    env = {**os.environ, "RESULTS": str(res), "DATA": str(cifar_tarball), "AA_N": "2", "OMP_NUM_THREADS": "1"}

    def run():
        return subprocess.run(["bash", "scripts/cpu_aa_resume.sh", "weatnet_s-sat"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)

    proc = run()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (done,) = res.glob("cpu-*-eval-weatnet_s-sat-aa-2.json")
    got = json.loads(done.read_text())
    assert got["n"] == 2 and len(got["correct"]["aa"]) == 2 and "starting" in proc.stdout
    again = run()
    assert again.returncode == 0 and "the measurement is done" in again.stderr
    # one interrupted in an earlier session (Ctrl-C once AutoAttack began), dated another day
    older = res / "cpu-2026-01-01-eval-weatnet_s-sat-aa-2.json"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(TorchAttack, "__call__", interrupt)
    assert main(["eval", "--checkpoint", "weatnet_s-sat", "--dataset", str(cifar_tarball), "--attacks", "aa",
                 "--n", "2", "--batch-size", "32", "--threads", "1", "--out", str(older), "--quiet"]) == 130
    assert (res / (older.name + ".partial")).is_file() and not older.exists()
    done.unlink()
    proc = run()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "going on from" in proc.stdout and not (res / (older.name + ".partial")).exists()
    assert json.loads(older.read_text())["correct"] == got["correct"]  # as the uninterrupted run

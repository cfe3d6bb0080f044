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


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None, reason="needs git and bash")
def test_device_carry_leaves_the_big_weights_out_and_restores_them(tmp_path):
    r = tmp_path / "repo"
    (r / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "device_carry.sh", r / "scripts")
    ck = r / "checkpoints" / "preactresnet18-trades"
    ck.mkdir(parents=True)
    for i in (1, 2):
        (ck / f"model-0000{i}-of-00002.safetensors").write_bytes(b"\0" * 3 * 2**20)  # 6 MiB in all
    (ck / "config.json").write_text("{}")
    (r / "checkpoints" / "weatnet_s-sat").mkdir()
    (r / "checkpoints" / "weatnet_s-sat" / "model.safetensors").write_bytes(b"\0" * 2**20)
    _git(r, "init", "-q")
    _git(r, "add", ".")
    _git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "stand-in")
    run = lambda *a: subprocess.run(["bash", "scripts/device_carry.sh", *a], cwd=r, capture_output=True, text=True)

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

"""Shared fixtures for the CPU test suite.

- `tiny_model`: a fresh, untrained `weatnet_tiny` (≈22 k parameters), eval mode, seeded.
- `seeded`: seeds torch's global RNG (and numpy's) to 0 for the test.
- `trained_tiny`: a `weatnet_tiny` trained with plain cross-entropy on `synthetic_task`
  (session-scoped, a couple of seconds), so attacks have meaningful predictions to move.
  Do not modify it in place: deep-copy it first (`copy.deepcopy(trained_tiny)`).
- `synthetic_task` / `synthetic_batch`: the 10-class separable toy task and a held-out batch.
- `cifar_tarball`: the shared CIFAR-10 JPEG tarball (skips when absent).
- `fake_hf_api`: huggingface_hub's `HfApi` stood in for; records every call (uploads too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent

# The tests use tiny models, where a second intra-op thread buys little; on a shared
# 2-core machine, OpenMP threads competing with other processes can make a tiny conv net
# tens of times slower. One thread keeps the suite's run time predictable.
torch.set_num_threads(int(os.environ.get("WEAT_TEST_THREADS", "1")))


@pytest.fixture
def seeded() -> int:
    """Seed torch and numpy's global RNGs with 0; returns the seed."""
    torch.manual_seed(0)
    np.random.seed(0)
    return 0


@pytest.fixture
def tiny_model(seeded):
    """A freshly initialised `weatnet_tiny` for 10 classes, in eval mode."""
    from weat_core.models import create_model

    return create_model("weatnet_tiny", num_classes=10).eval()


@dataclass(frozen=True)
class SyntheticTask:
    """10 classes; class c is 0.5 + amp·pattern_c + noise·N(0, I), clipped to [0, 1], where
    pattern_c is a fixed random ±1 image. Small-amplitude, high-frequency class signals make
    the task easy to learn but (like natural images) easy to attack within ε = 8/255."""

    patterns: torch.Tensor  # (K, 3, 32, 32) in {−1, +1}
    amp: float = 0.05
    noise: float = 0.05

    @property
    def num_classes(self) -> int:
        return int(self.patterns.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, self.num_classes, (n,), generator=generator)
        x = 0.5 + self.amp * self.patterns[y] + self.noise * torch.randn(n, 3, 32, 32, generator=generator)
        return x.clamp(0.0, 1.0), y  # (n, 3, 32, 32), (n,)


@pytest.fixture(scope="session")
def synthetic_task() -> SyntheticTask:
    g = torch.Generator().manual_seed(1234)
    return SyntheticTask(torch.randn(10, 3, 32, 32, generator=g).sign())


@pytest.fixture(scope="session")
def synthetic_batch(synthetic_task) -> tuple[torch.Tensor, torch.Tensor]:
    """32 held-out images of the synthetic task, (32, 3, 32, 32) in [0, 1], and labels (32,)."""
    return synthetic_task.sample(32, torch.Generator().manual_seed(99))


@pytest.fixture(scope="session")
def trained_tiny(synthetic_task, synthetic_batch):
    """`weatnet_tiny` trained with plain CE (Adam, 150 steps of batch 32) on the synthetic task;
    eval mode. Asserts it reached ≥ 90 % accuracy on `synthetic_batch` so tests built on it
    are meaningful."""
    from weat_core.models import create_model

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("weatnet_tiny", num_classes=synthetic_task.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        x, y = synthetic_task.sample(32, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    x, y = synthetic_batch
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.9, f"trained_tiny only reached {acc:.0%} accuracy on the synthetic task"
    return model


@pytest.fixture(scope="session")
def cifar_tarball() -> Path:
    """The shared CIFAR-10 JPEG tarball (../shared/data/cifar10-jpeg.tar.gz from the repo root)."""
    path = (REPO_ROOT / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz").resolve()
    if not path.is_file():
        pytest.skip(f"the shared CIFAR-10 tarball is not at {path} (only present on machines with the shared data)")
    return path


@pytest.fixture
def fake_hf_api(monkeypatch) -> dict:
    """Stand in for `huggingface_hub.HfApi`, so uploads can be checked offline. Returns the dict
    the stand-in records into: "token" (the constructor's), "create" and "branch" (repo id and
    keywords), "upload" (repo id, the uploaded folder's file names, keywords) and "texts" (each
    uploaded .json and .md file's text, read before the folder goes away). A test that sets
    "on_upload" to a function of (repo_id, folder) has it called during each upload. Every
    upload returns a commit whose url ends in /commit/ and forty b's."""
    import huggingface_hub

    calls: dict = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kw):
            calls["create"] = (repo_id, kw)

        def create_branch(self, repo_id, **kw):
            calls["branch"] = (repo_id, kw)

        def upload_folder(self, *, repo_id, folder_path, **kw):
            folder = Path(folder_path)
            calls["upload"] = (repo_id, sorted(p.name for p in folder.iterdir()), kw)
            calls["texts"] = {p.name: p.read_text() for p in folder.iterdir() if p.suffix in (".json", ".md")}
            if "on_upload" in calls:
                calls["on_upload"](repo_id, folder)
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/{'b' * 40}"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return calls

"""The GPU path: training steps, a whole training run, attacks, evaluation, loading and SGLD on
a CUDA device, with bf16 autocast and channels_last as training uses them.

Skipped without a CUDA GPU (the CI machines have none); `scripts/gpu_session.sh` runs this
file first on a lent GPU. `WEAT_TEST_DEVICE=cpu python -m pytest tests/test_cuda.py` runs the
same checks on the CPU, to check the tests themselves.
"""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch

from weat_core import checkpoints
from weat_core.attacks import PGD, TorchAttack, TradesAttack
from weat_core.data import ImageSet
from weat_core.losses import get_loss
from weat_core.models import create_model
from weat_core.train import METHODS, TrainConfig, augment, make_attack, train, train_step

DEVICE = os.environ.get("WEAT_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="needs a CUDA GPU (the device machine runs it: bash scripts/gpu_session.sh)")
EPS = 8 / 255


def _images(n: int, seed: int) -> ImageSet:
    """Class-coloured noise, 10 classes: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    base = (y.view(-1, 1, 1, 1).float() * 20 + 30).expand(n, 3, 32, 32)
    x = (base + torch.randint(0, 40, (n, 3, 32, 32), generator=g)).clamp(0, 255).to(torch.uint8)
    return ImageSet(x, y, tuple(f"c{k}" for k in range(10)), "toy")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("weatnet_tiny").to(DEVICE).to(memory_format=torch.channels_last)


@pytest.mark.parametrize("method", METHODS)
def test_train_step_under_bf16_autocast(model, method):
    cfg = TrainConfig(method=method, arch="weatnet_tiny", attack_steps=2, device=DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = _images(64, 0)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    xb = augment(data.float().to(DEVICE), g).contiguous(memory_format=torch.channels_last)
    assert xb.device.type == torch.device(DEVICE).type and xb.shape == (64, 3, 32, 32)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    res = train_step(model, model, opt, make_attack(cfg), get_loss(method), xb, data.y.to(DEVICE), cfg, amp=True)
    assert res.loss.shape == (64,) and torch.isfinite(res.loss).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.training  # the attack put the model back in train mode


@pytest.mark.parametrize("attack", [PGD(steps=3), PGD(steps=3, targeted=True), TradesAttack(steps=3)])
def test_attacks_stay_in_the_ball_and_restore_the_mode(model, attack):
    x = _images(32, 1).float().to(DEVICE)
    y = (torch.arange(32) % 10).to(DEVICE)
    model.train()
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        xa = attack(model, x, y)
    assert xa.device == x.device and model.training
    assert (xa - x).abs().max() <= EPS + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert not torch.equal(xa, x)


def test_a_whole_run_trains_logs_and_evaluates(tmp_path):
    cfg = TrainConfig(method="weat-adv", arch="weatnet_tiny", epochs=2, batch_size=64, attack_steps=2, eval_size=40,
                      eval_steps=2, seed=0, device=DEVICE, out=str(tmp_path / "run"))
    res = train(cfg, data=(_images(256, 2), _images(80, 3)), progress=False)
    assert len(res.history) == 2 and (tmp_path / "run" / "LATEST").is_file()
    rec = res.history[-1]
    assert math.isfinite(rec["loss"]) and rec["img_per_s"] > 0 and 0 <= rec["test_pgd_acc"] <= 1
    assert next(res.model.parameters()).device.type == torch.device(DEVICE).type
    state = tmp_path / "run" / (tmp_path / "run" / "LATEST").read_text().strip()
    runtime = json.loads((state / "config.json").read_text())["runtime"]
    assert runtime["device"] == torch.device(DEVICE).type
    if runtime["device"] == "cuda":  # the card says which GPU it ran on
        assert runtime["gpu"] == torch.cuda.get_device_name(torch.device(DEVICE))

    from weat_core.evaluate import evaluate

    m = checkpoints.load(str(tmp_path / "run"), device=DEVICE)
    assert next(m.parameters()).device.type == torch.device(DEVICE).type and not m.training
    test = _images(40, 4)
    out = evaluate(m, test.float(), test.y, ["pgd3", "pgd3-t"], batch_size=16)
    assert 0 <= out["pgd3_acc"] <= out["clean_acc"] <= 1 and out["n"] == 40


def test_a_whole_run_with_cuda_graphs_learns_as_the_eager_one(tmp_path):
    """`train --compile-mode reduce-overhead`, the fastest setting `bench/bench_train.py` measured on
    an H100 (CUDA graphs replayed each step): a whole run, with its per-epoch evaluation between the
    training epochs, learns the toy classes as the uncompiled run with the same seed does."""
    hist = {}
    for mode in (None, "reduce-overhead"):
        cfg = TrainConfig(method="weat-adv", arch="weatnet_tiny", epochs=3, batch_size=64, attack_steps=2,
                          eval_size=40, eval_steps=2, seed=0, device=DEVICE, compile_mode=mode,
                          out=str(tmp_path / str(mode)))
        hist[mode] = train(cfg, data=(_images(512, 2), _images(80, 3)), progress=False).history
    eager, graphs = hist[None], hist["reduce-overhead"]
    assert len(graphs) == 3 and all(math.isfinite(r["loss"]) for r in graphs)
    assert graphs[-1]["loss"] < graphs[0]["loss"]  # it learns
    # the same run up to compiled kernels' rounding: its losses track the eager run's
    for e, g in zip(eager, graphs):
        assert g["loss"] == pytest.approx(e["loss"], rel=0.1, abs=0.02), (e["epoch"], e["loss"], g["loss"])


def test_a_compiled_run_with_a_weight_average_averages_on_the_device(tmp_path):
    """`train --compile --ema`: the average (timm's ModelEmaV3) lives on the training device beside
    the compiled model, is measured every epoch and is what the run returns and checkpoints."""
    cfg = TrainConfig(method="weat-adv", arch="weatnet_tiny", epochs=2, batch_size=64, attack_steps=2, eval_size=40,
                      eval_steps=2, seed=0, device=DEVICE, compile=True, ema=0.99, out=str(tmp_path / "run"))
    res = train(cfg, data=(_images(256, 2), _images(80, 3)), progress=False)
    assert next(res.model.parameters()).device.type == torch.device(DEVICE).type
    assert all(0 <= r["ema_test_pgd_acc"] <= 1 and math.isfinite(r["ema_test_delta_e"]) for r in res.history)
    state = tmp_path / "run" / (tmp_path / "run" / "LATEST").read_text().strip()
    assert (state / "trained.safetensors").is_file()
    saved = checkpoints.load(str(state)).state_dict()
    for k, v in res.model.state_dict().items():
        assert torch.equal(saved[k], v.cpu()), k


def test_autoattack_through_torchattacks(model):
    pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    x = _images(16, 5).float().to(DEVICE)
    y = (torch.arange(16) % 10).to(DEVICE)
    xa = TorchAttack("autoattack-fast", steps=5)(model.eval(), x, y)
    assert xa.device == x.device and (xa - x).abs().max() <= EPS + 1e-6


def test_sgld_generation(model):
    from weat_core.sampling import generate

    torch.manual_seed(0)
    res = generate(copy.deepcopy(model).eval(), torch.arange(4).to(DEVICE), steps=5, init="uniform", seed=0)
    assert res.images.shape == (4, 3, 32, 32) and res.images.min() >= 0 and res.images.max() <= 1
    assert torch.isfinite(res.images).all()


def test_evaluate_attacks_each_image_towards_the_same_class_as_on_the_cpu(monkeypatch):
    """`evaluate`'s targeted PGD draws every image's random target on the CPU from a generator seeded
    with `seed`, so the device attacks each image towards the class a CPU run would: the classes
    handed to the attack here are the CPU's (random starts still come from each device's own generator)."""
    from weat_core.evaluate import evaluate

    calls: list[tuple[str, torch.Tensor]] = []
    real = PGD.__call__

    def spy(self, m, xb, yb, target=None, callback=None):
        calls.append((xb.device.type, target.cpu()))
        return real(self, m, xb, yb, target=target, callback=callback)

    monkeypatch.setattr(PGD, "__call__", spy)
    data = _images(48, 3)
    targets = []
    for device in ("cpu", DEVICE):
        calls.clear()
        torch.manual_seed(0)
        m = create_model("weatnet_tiny").to(device)
        evaluate(m, data.float(), data.y, ["pgd2-t"], batch_size=16, seed=5)
        assert {d for d, _ in calls} == {torch.device(device).type}  # attacked on that device
        targets.append(torch.cat([t for _, t in calls]))
    on_cpu, on_device = targets
    assert on_cpu.shape == (48,) and torch.equal(on_cpu, on_device) and bool((on_cpu != data.y).all())

"""Training: schedules, augmentation, logs, atomic checkpoints, exact resume, DDP, CLI."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from weat_core import WeatError
from weat_core.checkpoints import load, load_state_dict
from weat_core.train import TrainConfig, augment, lr_at, train

REPO = Path(__file__).resolve().parents[1]
SHARED_TAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
REQUIRED_KEYS = {
    "epoch", "lr", "loss", "ce", "kl", "weight_mean", "weight_std", "train_clean_acc", "train_pgd_acc",
    "test_clean_acc", "test_pgd_acc", "energy_nat_mean", "energy_adv_mean", "energy_nat_std", "energy_adv_std",
    "energy_nat_q05", "energy_nat_q95", "delta_e", "joint_energy_nat_mean", "time_s", "img_per_s",
}


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory) -> Path:
    """A small ImageFolder dataset (10 classes, 16 train / 4 test images each) of class-coloured noise."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder_ds")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 4)):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            base = rng.integers(0, 255, size=3)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def _cfg(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = dict(method="weat-adv", arch="weatnet_tiny", dataset=str(dataset), epochs=3, batch_size=32,
                attack_steps=2, eval_size=20, eval_steps=2, seed=3, out=str(out), device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedules_follow_their_formulas():
    cfg = TrainConfig(lr=0.1, warmup=0.25, schedule="onecycle")
    assert lr_at(0, 100, cfg) == 0.0
    assert lr_at(25, 100, cfg) == pytest.approx(0.1)
    assert lr_at(50, 100, cfg) == pytest.approx(0.1 * 50 / 75)
    assert lr_at(100, 100, cfg) == pytest.approx(0.0)
    step = TrainConfig(lr=0.1, schedule="step")
    assert [lr_at(s, 100, step) for s in (0, 49, 50, 74, 75)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def _torch_one_cycle(total: int, warmup: float, lr: float) -> list[tuple[float, float]]:
    """(lr, momentum) that torch.optim.lr_scheduler.OneCycleLR, with its defaults (as the WEAT
    authors' code uses it), sets on an SGD optimizer at each of `total` steps: the reference."""
    import warnings

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=warmup)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the scheduler's warning about stepping order)
        for s in range(total):
            out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
            opt.step()
            if s < total - 1:
                sched.step()
    return out


@pytest.mark.parametrize("total,warmup,lr", [(1955, 0.25, 0.1), (100, 0.25, 0.8), (7, 0.3, 0.1), (3, 0.25, 0.1)])
def test_onecycle_cos_is_torchs_one_cycle_scheduler_step_for_step(total, warmup, lr):
    """--schedule onecycle-cos gives, at every step, the learning rate and the momentum that
    torch's OneCycleLR sets on an SGD optimizer: the library is the reference."""
    from weat_core.train import momentum_at

    cfg = TrainConfig(lr=lr, warmup=warmup, schedule="onecycle-cos")
    ours = [(lr_at(s, total, cfg), momentum_at(s, total, cfg)) for s in range(total)]
    assert ours == pytest.approx(_torch_one_cycle(total, warmup, lr), rel=1e-12, abs=1e-15)
    assert max(m for _, m in ours) == pytest.approx(0.95) and min(m for _, m in ours) < 0.9  # it cycles
    assert momentum_at(5, 100, TrainConfig(momentum=0.8)) == 0.8  # the other schedules keep --momentum


def test_augment_is_crop_and_flip_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment(x, g, pad=2)
    assert out.shape == x.shape
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(64):  # each output is some crop of the padded image, flipped or not
        found = any(
            torch.equal(out[b], c) or torch.equal(out[b], c.flip(-1))
            for c in (xp[b, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5))
        )
        assert found
    assert not torch.equal(out, x)  # some randomness happened


def _crash_mid_epoch_2():
    """A `should_stop` that raises KeyboardInterrupt at its 7th poll: with `_cfg`'s 160 images in
    batches of 32 (5 an epoch), that is in the middle of epoch 2, as a kill would be."""
    calls = {"n": 0}

    def crash():
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt

    return crash


def test_bad_config_is_a_clear_error():
    with pytest.raises(WeatError, match="unknown method"):
        TrainConfig(method="adam")
    # out-of-range numbers are named together, before any data is read (they were tracebacks from
    # torch: a negative lr from SGD, a negative eps from the attack's random start)
    with pytest.raises(WeatError, match=r"lr -1.0 \(at least 0\); eps -0.1 \(at least 0\)$"):
        TrainConfig(lr=-1.0, eps=-0.1)
    for bad in (dict(momentum=1.0), dict(warmup=1.0), dict(alpha=0.0), dict(attack_steps=0), dict(beta=-1.0),
                dict(limit=0), dict(weight_decay=-1e-4), dict(eval_steps=0), dict(eval_size=0)):
        with pytest.raises(WeatError, match="invalid training settings"):
            TrainConfig(**bad)
    TrainConfig(lr=0.0, weight_decay=0.0, eps=0.0, beta=0.0, warmup=0.0, limit=1, eval_size=1)  # edges that are fine


def test_run_writes_log_and_checkpoints(folder_dataset, tmp_path):
    records = []
    res = train(_cfg(folder_dataset, tmp_path / "run", epochs=2), progress=False,
                callback=lambda e, r: records.append((e, r)))
    assert [e for e, _ in records] == [1, 2]
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[-1])
    assert REQUIRED_KEYS <= set(rec), REQUIRED_KEYS - set(rec)
    assert rec["delta_e"] == pytest.approx(rec["energy_nat_mean"] - rec["energy_adv_mean"])
    assert 0 <= rec["test_pgd_acc"] <= rec["test_clean_acc"] + 1e-9 or rec["test_clean_acc"] < 0.2
    assert (tmp_path / "run" / "LATEST").read_text().strip() == "state-0002"
    model = load(tmp_path / "run")  # follows LATEST
    sd = res.model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k].cpu()), k
    cfg = json.loads((tmp_path / "run" / "state-0002" / "config.json").read_text())
    assert cfg["method"] == "weat-adv" and cfg["training"]["seed"] == 3 and "test_pgd_acc" in cfg["metrics"]
    # "auto" settings are recorded as what they resolved to
    assert cfg["runtime"]["device"] == "cpu" and cfg["runtime"]["world_size"] == 1
    from weat_core.devices import bf16_ok

    assert cfg["training"]["amp"] is None and cfg["runtime"]["bf16"] == bf16_ok(torch.device("cpu"))
    assert cfg["runtime"]["torch"] == torch.__version__
    assert (tmp_path / "run" / (tmp_path / "run" / "BEST").read_text().strip() / "model.safetensors").is_file()
    with pytest.raises(WeatError, match="--resume"):
        train(_cfg(folder_dataset, tmp_path / "run", epochs=2), progress=False)


@pytest.mark.parametrize("schedule", ["onecycle", "onecycle-cos"])
def test_interrupted_and_resumed_run_equals_uninterrupted(folder_dataset, tmp_path, schedule):
    full = train(_cfg(folder_dataset, tmp_path / "full", schedule=schedule), progress=False)

    crash = _crash_mid_epoch_2()

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(folder_dataset, tmp_path / "part", schedule=schedule), progress=False, should_stop=crash)
    assert (tmp_path / "part" / "LATEST").read_text().strip() == "state-0001"
    resumed = train(_cfg(folder_dataset, tmp_path / "part", schedule=schedule), progress=False, resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    log = [json.loads(s) for s in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert ("momentum" in log[0]) == (schedule == "onecycle-cos")  # logged where the schedule cycles it


def test_a_weight_averaged_run_checkpoints_measures_and_returns_the_average(folder_dataset, tmp_path, monkeypatch):
    import weat_core.train.loop as loop

    trained: list[dict] = []  # the trained weights (parameters and buffers) after every optimizer step
    step = loop.train_step

    def spy(model, *a, **k):
        r = step(model, *a, **k)
        trained.append({n: v.detach().clone() for n, v in model.state_dict().items()})
        return r

    monkeypatch.setattr(loop, "train_step", spy)
    res = train(_cfg(folder_dataset, tmp_path / "run", epochs=2, ema=0.9), progress=False)
    # the average, by the formula the docs give: the first step copies, then d_t = min(0.9, 1 − t^(−3/4))
    want = dict(trained[0])
    for t, w in enumerate(trained[1:], start=2):
        d = min(0.9, 1 - t ** -0.75)
        want = {n: (v * d + w[n] * (1 - d)) if v.is_floating_point() else w[n] for n, v in want.items()}
    got = res.model.state_dict()
    for n, v in want.items():
        assert torch.allclose(got[n], v, rtol=1e-5, atol=1e-6), n
    assert not torch.allclose(got["net.linear.weight"], trained[-1]["net.linear.weight"])  # the average is not the last step
    assert any("running_mean" in n for n in want)  # BatchNorm statistics averaged too
    # the folder's model is the average, with its own metrics; the trained weights sit beside it
    d = tmp_path / "run" / "state-0002"
    for n, v in load(d).state_dict().items():
        assert torch.equal(v, got[n]), n
    for n, v in load_state_dict(d / "trained.safetensors").items():
        assert torch.equal(v, trained[-1][n]), n
    rec = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["metrics"] == {"test_clean_acc": rec["ema_test_clean_acc"], "test_pgd_acc": rec["ema_test_pgd_acc"],
                              "test_delta_e": rec["ema_test_delta_e"]}
    assert "averaged" in cfg["metrics_note"] and cfg["training"]["ema"] == 0.9
    assert "test_pgd_acc" in rec  # the trained weights are measured as before, beside the average
    from weat_core.export.card import _train_command

    assert "--ema 0.9" in _train_command(cfg["training"])
    from weat_core.export.card import model_card

    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    card = model_card("tiny-ema", {**cfg, "exported": "last"}, records)
    best = max(r["ema_test_pgd_acc"] for r in records)
    assert "these weights: the weight average (`--ema`) at epoch 2" in card
    line = next(x for x in card.splitlines() if "robust accuracy of the weight average on the per-epoch test subset" in x)
    assert f"{best:.1%}" in line
    assert "--ema 0.9" in card


def test_a_weight_averaged_run_resumes_exactly_and_only_as_it_was_started(folder_dataset, tmp_path):
    full = train(_cfg(folder_dataset, tmp_path / "full", ema=0.9), progress=False)
    crash = _crash_mid_epoch_2()

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(folder_dataset, tmp_path / "part", ema=0.9), progress=False, should_stop=crash)
    with pytest.raises(WeatError, match="with a weight average"):
        train(_cfg(folder_dataset, tmp_path / "part"), progress=False, resume=True)
    resumed = train(_cfg(folder_dataset, tmp_path / "part", ema=0.9), progress=False, resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    ta = load_state_dict(tmp_path / "full" / "state-0003" / "trained.safetensors")
    tb = load_state_dict(tmp_path / "part" / "state-0003" / "trained.safetensors")
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"trained {k} differs after resume"
    with pytest.raises(WeatError, match="between 0 and 1"):
        TrainConfig(ema=1.0)


def test_a_onecycle_cos_run_steps_with_torchs_learning_rates_and_momenta(folder_dataset, tmp_path, monkeypatch):
    """In a real run, every optimizer step of `--schedule onecycle-cos` sees the learning rate and
    momentum that torch's OneCycleLR would set (the other schedules keep --momentum)."""
    import weat_core.train.loop as T

    seen = []
    real = T.train_step

    def spy(model, fwd, opt, *a, **k):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        return real(model, fwd, opt, *a, **k)

    monkeypatch.setattr(T, "train_step", spy)
    train(_cfg(folder_dataset, tmp_path / "run", schedule="onecycle-cos", epochs=2, lr=0.2, warmup=0.3), progress=False)
    assert seen == pytest.approx(_torch_one_cycle(10, 0.3, 0.2), rel=1e-12)  # 160 images, batch 32: 5 steps an epoch
    seen.clear()
    train(_cfg(folder_dataset, tmp_path / "plain", epochs=1, momentum=0.8), progress=False)
    assert {m for _, m in seen} == {0.8}


def test_epochs_for_budget_fits_whole_epochs():
    from weat_core.train import epochs_for_budget

    # 600 s, 30 s spent, 100 steps of 0.5 s + 10 s eval = 60 s an epoch, 63 s with the 5 % margin
    assert epochs_for_budget(600, 30, 100, 0.5, 10.0) == 9  # 570 // 63
    assert epochs_for_budget(600, 30, 100, 0.5, 10.0, margin=1.0) == 9  # 570 // 60
    assert epochs_for_budget(600, 0, 100, 0.5, 10.0, margin=1.0) == 10
    assert epochs_for_budget(10, 30, 100, 0.5, 10.0) == 1  # never zero
    with pytest.raises(WeatError, match="positive number of minutes"):
        TrainConfig(minutes=0)
    with pytest.raises(WeatError, match="most epochs"):
        TrainConfig(minutes=1.0, max_epochs=0)


def test_a_stop_while_a_budget_is_timed_ends_the_run_before_its_first_epoch(folder_dataset, tmp_path):
    """A Stop (or the app's time limit) during the budget's throwaway steps acts after the step
    under way: no epoch, no checkpoint, and the weights of the random start, restored."""
    calls = []

    def stop_at_the_second_poll():
        calls.append(1)
        return len(calls) >= 2

    cfg = _cfg(folder_dataset, tmp_path / "run", minutes=5.0)
    res = train(cfg, progress=False, should_stop=stop_at_the_second_poll)
    assert res.stopped and res.history == [] and len(calls) == 2  # polled once a step: stopped after the second
    assert not (tmp_path / "run" / "LATEST").exists()
    torch.manual_seed(cfg.seed)  # the initial weights, as `train` draws them
    from weat_core.models import create_model

    start = create_model(cfg.arch, num_classes=10)
    for k, v in start.state_dict().items():
        torch.testing.assert_close(res.model.state_dict()[k].float(), v.float(), msg=k)


def test_a_time_budget_with_max_epochs_trains_no_more_than_those(folder_dataset, tmp_path):
    """--minutes with --max-epochs: a budget that holds many epochs of this tiny run trains only
    the most asked for, with the schedule spanning them (the run `--epochs 2` gives)."""
    res = train(_cfg(folder_dataset, tmp_path / "capped", minutes=5.0, max_epochs=2), progress=False)
    assert [r["epoch"] for r in res.history] == [1, 2] and res.history[-1]["epochs"] == 2
    assert res.history[-1]["lr"] == pytest.approx(lr_at(2 * 5 - 1, 2 * 5, _cfg(folder_dataset, tmp_path, epochs=2)))


def test_calibration_times_a_warm_evaluation_where_the_first_warms_up():
    """On a GPU or compiled, the first evaluation pays for autotuning and compilation, which no
    epoch pays again (an H100 run planned with 1.8 s where epochs took 0.3 s): the second call is
    timed there. On a CPU, uncompiled, one call is timed."""
    from weat_core.models import create_model
    from weat_core.losses import get_loss
    from weat_core.train import make_attack
    from weat_core.train.budget import _calibrate

    def timed_eval(cfg):
        model = create_model("weatnet_tiny")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        calls = []

        def evaluate_once():  # the first call is slow, as a warm-up is
            calls.append(1)
            time.sleep(0.6 if len(calls) == 1 else 0.0)

        xs = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
        ys = torch.randint(0, 10, (16,))
        _, eval_s = _calibrate(model, model, opt, make_attack(cfg), get_loss(cfg.method), xs, ys, 4,
                               torch.contiguous_format, cfg, False, torch.device("cpu"), 1, evaluate_once)
        return len(calls), eval_s

    base = TrainConfig(method="sat", arch="weatnet_tiny", attack_steps=1, device="cpu")
    n, eval_s = timed_eval(replace(base, compile=True))
    assert n == 2 and eval_s < 0.3
    n, eval_s = timed_eval(base)
    assert n == 1 and eval_s >= 0.6


def test_time_budget_run_is_the_run_its_epoch_count_gives(folder_dataset, tmp_path):
    """--minutes times throwaway steps, then trains; the calibration leaves no trace, so the
    budgeted run ends with exactly the weights of a plain run with the epochs it chose."""
    timed = train(_cfg(folder_dataset, tmp_path / "timed", minutes=0.04), progress=False)
    n = len(timed.history)
    assert n >= 1 and [r["epoch"] for r in timed.history] == list(range(1, n + 1))
    cfg = json.loads((tmp_path / "timed" / f"state-{n:04d}" / "config.json").read_text())
    assert cfg["training"]["epochs"] == n and cfg["training"]["minutes"] == 0.04
    plain = train(_cfg(folder_dataset, tmp_path / "plain", epochs=n), progress=False)
    a, b = timed.model.state_dict(), plain.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs: the calibration changed the run"


def test_time_budget_uses_the_measured_times_and_resume_keeps_its_epochs(folder_dataset, tmp_path, monkeypatch):
    import weat_core.train.loop as tr

    monkeypatch.setattr(tr, "_calibrate", lambda *a, **k: (1.0, 5.0))  # 5 steps × 1 s + 5 s eval → 10.5 s/epoch
    crash = _crash_mid_epoch_2()

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(folder_dataset, tmp_path / "run", minutes=1.0), progress=False, should_stop=crash)
    # a resumed run keeps the schedule it started with, whatever a new calibration would say
    monkeypatch.setattr(tr, "_calibrate", lambda *a, **k: pytest.fail("a resumed budgeted run re-calibrated"))
    res = train(_cfg(folder_dataset, tmp_path / "run", minutes=1.0), progress=False, resume=True)
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4, 5]  # (60 s − setup) // 10.5 s


def test_a_resumed_budgeted_run_does_not_re_plan(folder_dataset, tmp_path, monkeypatch):
    """Only a fresh run re-plans after its first epoch; a resumed one keeps its count (part of
    its budget went before the restart), even where its schedule could be re-planned exactly."""
    import weat_core.train.budget as budget
    import weat_core.train.loop as tr

    monkeypatch.setattr(tr, "_calibrate", lambda *a, **k: (1.0, 5.0))  # plans 5 epochs of 10.5 s
    asked = []
    monkeypatch.setattr(budget, "replanned_epochs", lambda cfg, done, *a, **k: asked.append(done))  # (None: plan stands)
    crash = _crash_mid_epoch_2()

    cfg = _cfg(folder_dataset, tmp_path / "run", minutes=1.0, schedule="step")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, should_stop=crash)
    assert asked == [1]
    res = train(cfg, progress=False, resume=True)
    assert asked == [1] and [r["epoch"] for r in res.history] == [1, 2, 3, 4, 5]


def test_a_budgeted_run_says_when_its_first_epoch_shows_the_plan_is_off(folder_dataset, tmp_path, monkeypatch,
                                                                        caplog):
    """`--minutes` plans from steps timed at the start; when the first real epoch runs at another
    pace (another job on the machine started or ended), the run says where the planned epochs
    will end, a warning when past the budget by over 10 %, a note when a fifth of it stays
    unused, and nothing in between. The schedule itself is left as planned."""
    import logging

    import weat_core.train.budget as budget
    import weat_core.train.loop as tr

    cfg = TrainConfig(method="sat", dataset="x", epochs=10, minutes=1.0)
    with caplog.at_level(logging.INFO, logger="weat_core.train"):
        budget._check_pace(cfg, 1, 10.0, 10.0)  # ends at 10 + 9 × 10 = 100 s of a 60 s budget
        budget._check_pace(cfg, 1, 10.0, 2.0)   # 28 s: over half the budget unused
        budget._check_pace(cfg, 1, 10.0, 5.5)   # 59.5 s: on plan
    msgs = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(msgs) == 2 and msgs[0][0] == "WARNING" and "end after 1.7 min, past the 1-minute budget" in msgs[0][1]
    assert msgs[1][0] == "INFO" and "leaving 0.5 of the 1 minutes unused" in msgs[1][1]
    # in a run: the steps timed at the start look a thousand times faster than they are
    caplog.clear()
    monkeypatch.setattr(tr, "_calibrate", lambda *a, **k: (1e-4, 1e-4))
    done = []
    with caplog.at_level(logging.INFO, logger="weat_core.train"):
        res = train(_cfg(folder_dataset, tmp_path / "run", minutes=0.5), progress=False,
                    callback=lambda e, r: done.append(e), should_stop=lambda: bool(done))
    assert res.history[0]["epochs"] > 100 and len(res.history) == 1  # stopped after the first epoch
    assert any(r.levelname == "WARNING" and "planned epochs end after" in r.getMessage() for r in caplog.records)


def test_stop_request_ends_cleanly_without_a_partial_checkpoint(folder_dataset, tmp_path):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 7

    res = train(_cfg(folder_dataset, tmp_path / "s"), progress=False, should_stop=stop)
    assert res.stopped and len(res.history) == 1
    assert (tmp_path / "s" / "LATEST").read_text().strip() == "state-0001"


def _cli(*args, **popen_kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "weat_core", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen_kw)


def test_cli_kill_9_then_resume_matches_uninterrupted(folder_dataset, tmp_path):
    args = ["train", "--method", "trades", "--arch", "weatnet_tiny", "--dataset", str(folder_dataset),
            "--epochs", "3", "--batch-size", "16", "--attack-steps", "3", "--eval-size", "20", "--eval-steps", "2",
            "--seed", "5", "--device", "cpu", "--quiet"]
    out = tmp_path / "killed"
    proc = _cli(*args, "--out", str(out))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        p = out / "LATEST"
        if p.is_file() and p.read_text().strip() == "state-0001":
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert load(out) is not None  # whatever moment it died, the last good checkpoint loads
    done = _cli(*args, "--out", str(out), "--resume")
    assert done.wait(timeout=300) == 0, done.stdout.read()
    ref = train(TrainConfig(method="trades", arch="weatnet_tiny", dataset=str(folder_dataset), epochs=3,
                            batch_size=16, attack_steps=3, eval_size=20, eval_steps=2, seed=5, device="cpu"),
                progress=False)
    got = load_state_dict(out / (out / "LATEST").read_text().strip() / "model.safetensors")
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, got[k]), k


def test_ddp_two_gloo_processes(folder_dataset, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "weat_core",
           "train", "--method", "weat-adv", "--arch", "weatnet_tiny", "--dataset", str(folder_dataset),
           "--batch-size", "32", "--attack-steps", "2", "--eval-size", "20", "--eval-steps", "2",
           "--device", "cpu", "--quiet", "--out", str(out), "--ema", "0.99",  # each rank averages alike
           "--minutes", "0.005"]  # a budget smaller than the set-up: the ranks calibrate together, agree on 1 epoch
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    assert len(recs) == 1  # only rank 0 writes
    assert "time budget" in r.stderr + r.stdout
    assert recs[0]["images"] == 160  # 5 global batches of 32 (16 per rank), summed over both ranks
    assert 0.0 <= recs[0]["test_clean_acc"] <= 1.0 and REQUIRED_KEYS - {"weight_std"} <= set(recs[0])
    assert 0 < recs[0]["weight_min"] <= recs[0]["weight_mean"] <= recs[0]["weight_max"] <= 1 / math.log(2)  # both ranks'
    # the test accuracy was gathered over the 20 images of both ranks: a multiple of 1/20
    assert abs(recs[0]["test_clean_acc"] * 20 - round(recs[0]["test_clean_acc"] * 20)) < 1e-6
    assert abs(recs[0]["ema_test_clean_acc"] * 20 - round(recs[0]["ema_test_clean_acc"] * 20)) < 1e-6
    assert "averaged weights" in r.stderr + r.stdout  # the closing line reports the average
    assert (out / "state-0001" / "trained.safetensors").is_file()
    load(out)


@pytest.mark.skipif(not SHARED_TAR.is_file(), reason=f"the shared CIFAR-10 copy is absent ({SHARED_TAR})")
def test_cli_one_epoch_on_shared_cifar10_slice(tmp_path):
    out = tmp_path / "cifar"
    p = _cli("train", "--method", "weat-adv", "--arch", "weatnet_tiny", "--dataset", str(SHARED_TAR), "--limit", "256",
             "--epochs", "1", "--batch-size", "64", "--attack-steps", "2", "--eval-size", "64", "--eval-steps", "2",
             "--device", "cpu", "--quiet", "--out", str(out))
    assert p.wait(timeout=300) == 0, p.stdout.read()
    state = out / (out / "LATEST").read_text().strip()
    assert (state / "model.safetensors").is_file() and (state / "config.json").is_file()
    rec = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert REQUIRED_KEYS <= set(rec) and rec["images"] == 256
    cfg = json.loads((state / "config.json").read_text())
    assert cfg["classes"][0] == "airplane" and cfg["num_classes"] == 10


def test_export_auto_ships_the_best_epoch_only_beyond_the_subset_noise(tmp_path):
    from weat_core.export import choose_epoch

    def run(name, accs, method="trades", key="test_pgd_acc", n=512):
        d = tmp_path / name
        d.mkdir()
        size = {"eval_size": n} if n else {}
        (d / "log.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "method": method, key: a, **size})
                                             + "\n" for i, a in enumerate(accs)))
        return d

    # 512 images at ~35 %: 2·SE ≈ 4.2 points; a 1-point lead of epoch 2 is noise → the last epoch
    which, why = choose_epoch(run("flat", [0.30, 0.36, 0.35]))
    assert which == "last" and "best epoch (2)" in why and "within" in why
    # a run still improving at its end: the last epoch is the best, and the reason says so
    which, why = choose_epoch(run("rising", [0.30, 0.33, 0.36]))
    assert which == "last" and why == "auto: the last epoch is also the best by robust accuracy on the per-epoch subset"
    # a 10-point fall from epoch 2 is robust overfitting → the best epoch
    which, why = choose_epoch(run("over", [0.30, 0.45, 0.35]))
    assert which == "best" and "fell 10.0 points" in why and "epoch 2" in why
    # the same 10-point gap on a 20-image subset is within its noise (2·SE ≈ 22 points)
    assert choose_epoch(run("tiny", [0.30, 0.45, 0.35], n=20))[0] == "last"
    # standard training is judged by clean accuracy
    assert choose_epoch(run("std", [0.5, 0.8, 0.6], method="standard", key="test_clean_acc"))[0] == "best"
    # an older log without eval_size: the subset size comes from the run's newest checkpoint settings
    old = run("old", [0.30, 0.45, 0.35], n=None)
    assert choose_epoch(old)[0] == "best"  # unknown size: only the one-point floor applies
    (old / "state-0003").mkdir()
    (old / "state-0003" / "config.json").write_text(json.dumps({"training": {"eval_size": 20}}))
    (old / "LATEST").write_text("state-0003\n")
    assert choose_epoch(old)[0] == "last"
    # a run with a weight average is judged by the average, the weights it checkpoints
    d = tmp_path / "averaged"
    d.mkdir()
    (d / "log.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "method": "trades", "eval_size": 512,
                                                     "test_pgd_acc": a, "ema_test_pgd_acc": b}) + "\n"
                                         for i, (a, b) in enumerate([(0.30, 0.30), (0.45, 0.36), (0.35, 0.37)])))
    assert choose_epoch(d)[0] == "last"
    assert choose_epoch(run("flat2", [0.3]), "best") == ("best", "--which best")
    assert choose_epoch(tmp_path / "nolog")[0] == "best"
    with pytest.raises(WeatError, match="best, last or auto"):
        choose_epoch(tmp_path / "flat", "middle")


def test_a_local_copy_of_cifar10_ships_as_cifar10():
    from weat_core.data import CIFAR10_CLASSES
    from weat_core.export.ship import shipped_dataset_name

    copy = {"dataset": "../shared/data/cifar10-jpeg.tar.gz", "classes": list(CIFAR10_CLASSES)}
    assert shipped_dataset_name(copy) == "cifar10"  # like the checkpoints of the named dataset
    assert shipped_dataset_name(copy, "toy") == "toy"  # --dataset-name decides
    assert shipped_dataset_name({**copy, "classes": ["a", "b"]}) is None  # another dataset keeps its path
    assert shipped_dataset_name({**copy, "dataset": "cifar10"}) is None  # a name already
    assert shipped_dataset_name({"dataset": "/x/folder"}) is None


def test_export_writes_checkpoint_metrics_log_and_card(folder_dataset, tmp_path, capsys):
    from weat_core.checkpoints import load_config
    from weat_core.cli import main

    train(_cfg(folder_dataset, tmp_path / "run", epochs=1), progress=False)
    (tmp_path / "ck" / "_shared").mkdir(parents=True)  # the dataset's shared SGLD statistics: linked, not copied
    (tmp_path / "ck" / "_shared" / "toy-init_stats.safetensors").write_bytes(b"stand-in")
    rc = main(["export", "--run", str(tmp_path / "run"), "--name", "tiny-weat", "--dest", str(tmp_path / "ck"),
               "--dataset-name", "toy", "--dataset", str(folder_dataset), "--attacks", "pgd3,pgd3-t", "--device", "cpu",
               "--max-shard-size", "20KB"])
    assert rc == 0
    assert not list((tmp_path / "run").glob(".export-*"))  # its resumable evaluation state is cleaned up
    d = tmp_path / "ck" / "tiny-weat"
    assert (d / "model.safetensors.index.json").is_file() and len(list(d.glob("model-*.safetensors"))) > 1
    cfg = load_config(d)
    assert cfg["dataset"] == "toy" and cfg["trained_on"] == str(folder_dataset) and cfg["weights_dtype"] == "float16"
    assert {"clean_acc", "pgd3_acc", "pgd3-t_acc", "n", "energy_mean"} <= set(cfg["metrics"])
    assert cfg["metrics"]["n"] == 40 and "metrics_note" not in cfg  # the run's per-epoch note stays behind
    assert cfg["init_stats"] == "../_shared/toy-init_stats.safetensors" and not (d / "init_stats.safetensors").exists()
    card = (d / "README.md").read_text()
    assert (d / "log.jsonl").is_file() and "Observation 1" in card
    assert "at the last epoch (1), its best" in card  # a one-epoch run: its best is its last
    # one epoch: its best is its last, and auto (the default) says why it ships the last
    assert cfg["exported"] == "last" and cfg["exported_why"].startswith("auto: ")
    assert f"these weights: epoch {cfg['epoch']}, the run's last (auto: " in card
    assert "python -m weat_core train --method weat-adv" in cfg["reproduce"]["train"]
    # the re-measure command names the local test data the metrics came from, and the card shows it
    assert cfg["reproduce"]["eval"] == (f"python -m weat_core eval --checkpoint tiny-weat --dataset {folder_dataset} "
                                        "--attacks pgd3,pgd3-t")
    assert "## Re-measure" in card and cfg["reproduce"]["eval"] in card
    # the stored metric is reproduced by `eval` (same seed, same images)
    from weat_core.evaluate import evaluate
    from weat_core.data import load_split

    test = load_split(folder_dataset, "test")
    again = evaluate(load(d), test.float(), test.y, ["pgd3", "energy-lower5"])
    assert again["pgd3_acc"] == pytest.approx(cfg["metrics"]["pgd3_acc"], abs=0.01)
    # per image: the share of x* below their own natural E(x); the energy attack lowers it by construction
    assert set(cfg["metrics"]["share_lower"]) == {"pgd3", "pgd3-t"}
    assert again["share_lower"]["pgd3"] == pytest.approx(cfg["metrics"]["share_lower"]["pgd3"], abs=0.03)
    assert again["share_lower"]["energy-lower5"] > 0.9 and "clean" not in again["share_lower"]
    assert again["unchanged"] == {"pgd3": 0.0, "energy-lower5": 0.0}  # PGD-style attacks move every image
    # an exported folder can be shipped as a recorded run (weights too large to ship): its
    # measured metrics stay, marked as measured on weights that are not shipped
    capsys.readouterr()
    assert main(["export", "--run", str(d), "--name", "rec", "--dest", str(tmp_path / "ck"), "--log-only"]) == 0
    r = tmp_path / "ck" / "_runs" / "rec"
    assert sorted(p.name for p in r.iterdir()) == ["README.md", "config.json", "log.jsonl"]
    rcfg = json.loads((r / "config.json").read_text())
    assert rcfg["metrics"] == cfg["metrics"] and "epoch" not in rcfg and rcfg["recorded"].startswith("log only")
    assert f"epoch {cfg['epoch']}, which are not shipped" in rcfg["metrics_note"]
    assert set(rcfg["reproduce"]) == {"train"} and rcfg["reproduce"]["train"] == cfg["reproduce"]["train"]
    rcard = (r / "README.md").read_text()
    assert "not its weights" in rcard and "| PGD-3 |" in rcard and "these weights" not in rcard
    assert (r / "log.jsonl").read_text() == (d / "log.jsonl").read_text()
    assert "lower E(x) than the natural image for: PGD-3 " in card

    # eval --store re-measures the shipped folder: new n and PGD numbers, AutoAttack kept apart
    assert main(["eval", "--checkpoint", str(d), "--dataset", str(folder_dataset), "--n", "20", "--attacks", "pgd2",
                 "--store", "--device", "cpu", "--quiet"]) == 0
    sub = load_split(folder_dataset, "test", limit=20)
    part = evaluate(load(d), sub.float(), sub.y, ["pgd2"])
    cfg2 = load_config(d)
    assert cfg2["metrics"]["n"] == 20 and cfg2["metrics"]["pgd2_acc"] == pytest.approx(part["pgd2_acc"])
    assert cfg2["metrics"]["clean_acc"] == pytest.approx(part["clean_acc"]) and "--n 20" in cfg2["reproduce"]["eval"]
    assert f"--dataset {folder_dataset} --attacks pgd2 --n 20" in cfg2["reproduce"]["eval"]
    assert "| PGD-2 |" in (d / "README.md").read_text()
    # measured again, eval prints the stored numbers beside the new ones (equal here: one seed, one device)
    capsys.readouterr()
    base = ["eval", "--checkpoint", str(d), "--dataset", str(folder_dataset), "--attacks", "pgd2", "--device", "cpu",
            "--quiet"]
    assert main(base + ["--n", "20", "--out", str(tmp_path / "again.json")]) == 0
    text = capsys.readouterr().out
    assert "stored with the checkpoint, measured on 20 test images too:" in text
    for measure in ("clean", "pgd2"):
        stored = 100 * cfg2["metrics"]["clean_acc" if measure == "clean" else "pgd2_acc"]
        assert re.search(rf"^{measure} +{stored:.2f} +{stored:.2f} +\+0\.00$", text, re.M), text
    assert json.loads((tmp_path / "again.json").read_text())["stored"] == {
        "clean": cfg2["metrics"]["clean_acc"], "pgd2": cfg2["metrics"]["pgd2_acc"]}
    assert main(base + ["--n", "10"]) == 0 and "stored with" not in capsys.readouterr().out  # stored for 20 only
    assert main(["eval", "--checkpoint", str(d), "--dataset", str(folder_dataset), "--eps", "4/255", "--store"]) != 0
    assert "ε = 8/255" in capsys.readouterr().err


def test_init_fine_tunes_from_a_checkpoint_and_export_keeps_both_stages(folder_dataset, tmp_path):
    from weat_core.cli import main
    from weat_core.export import lineage

    first = train(_cfg(folder_dataset, tmp_path / "stage1", epochs=2), progress=False)
    start = tmp_path / "stage1" / (tmp_path / "stage1" / "LATEST").read_text().strip()
    # lr 0 and one epoch: the fine-tuned parameters must be exactly the ones it started from
    # (BatchNorm's running statistics do move: the model trains)
    second = train(_cfg(folder_dataset, tmp_path / "stage2", epochs=1, lr=0.0, weight_decay=0.0, init=str(start)),
                   progress=False)
    for (k, a), b in zip(first.model.named_parameters(), second.model.parameters()):
        assert torch.equal(a, b), k
    with pytest.raises(WeatError, match="weatnet_tiny"):
        train(_cfg(folder_dataset, tmp_path / "bad", arch="weatnet_s", init=str(start)), progress=False)

    rc = main(["export", "--run", str(tmp_path / "stage2"), "--name", "ft", "--dest", str(tmp_path / "ck"),
               "--which", "last", "--dataset", str(folder_dataset), "--attacks", "pgd3,pgd3-t", "--device", "cpu"])
    assert rc == 0
    cfg = json.loads((tmp_path / "ck" / "ft" / "config.json").read_text())
    recs = [json.loads(s) for s in (tmp_path / "ck" / "ft" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3] and [r["stage"] for r in recs] == [1, 1, 2]
    assert cfg["epoch"] == 3 and len(cfg["stages"]) == 2 and cfg["stages"][1]["init"] == str(start)
    one, two = cfg["reproduce"]["train"].split(" && ")
    assert f"--out {tmp_path / 'stage1'}" in one and f"--init {start}" in two
    card = (tmp_path / "ck" / "ft" / "README.md").read_text()
    assert "2 stages" in card and "these weights: epoch 3" in card
    assert all(st["runtime"]["device"] == "cpu" for st in cfg["stages"]) and "- ran on: cpu, " in card
    # a checkpoint whose init is not a local run folder keeps its own stage only
    assert len(lineage({"training": {"init": "some/hub-id"}}, recs[2:])[0]) == 1


def test_export_log_only_ships_a_recorded_run_without_weights(folder_dataset, tmp_path, monkeypatch, capsys):
    """`export --log-only`: the run's log (all --init stages), settings and a card, in
    DEST/_runs/NAME; nothing to load, so list_checkpoints leaves it out and list_runs finds it."""
    from weat_core.checkpoints import list_checkpoints, list_runs
    from weat_core.cli import main

    train(_cfg(folder_dataset, tmp_path / "s1", epochs=2), progress=False)
    start = tmp_path / "s1" / (tmp_path / "s1" / "LATEST").read_text().strip()
    train(_cfg(folder_dataset, tmp_path / "s2", epochs=1, init=str(start)), progress=False)
    ck = tmp_path / "ck"
    assert main(["export", "--run", str(tmp_path / "s2"), "--name", "rec", "--dest", str(ck), "--log-only",
                 "--dataset-name", "toy"]) == 0
    d = ck / "_runs" / "rec"
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "config.json", "log.jsonl"]
    cfg = json.loads((d / "config.json").read_text())
    recs = [json.loads(s) for s in (d / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3] and cfg["epochs"] == 3 and len(cfg["stages"]) == 2
    assert cfg["dataset"] == "toy" and cfg["trained_on"] == str(folder_dataset)
    assert "metrics" not in cfg and "epoch" not in cfg and cfg["recorded"].startswith("log only")
    assert f"--init {start}" in cfg["reproduce"]["train"].split(" && ")[1]
    card = (d / "README.md").read_text()
    assert card.strip() in capsys.readouterr().out  # the command prints the card
    assert "not its weights" in card and "Test metrics" not in card and "these weights" not in card
    last = recs[-1]
    assert f"{last['train_pgd_acc']:.1%} at the last" in card  # how well it fits its own images under attack
    monkeypatch.setenv("WEAT_CHECKPOINTS_DIR", str(ck))
    runs = {r.name: r for r in list_runs()}
    assert runs["rec"].method == "weat-adv" and runs["rec"].path == d
    assert "rec" not in {c.name for c in list_checkpoints()}
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split("recorded training runs")
    row = next(line for line in listed[1].splitlines() if line.startswith("rec "))
    assert len(listed) == 2 and row.split()[1:] == ["weatnet_tiny", "weat-adv", "toy", "3"]  # its arch, ..., epochs
    with pytest.raises(WeatError, match="not a training run folder"):
        from weat_core.export import export_log

        export_log(tmp_path / "nothing", "x", dest_root=ck)
    with pytest.raises(WeatError, match=r"not a training run folder \(no LATEST\)"):
        from weat_core.export import export_run

        export_run(tmp_path / "nothing", "x", dest_root=ck)
    # the held-out check of its best and last epoch (rows as scripts/heldout_best_last.py writes them)
    row = {"test_clean": 0.5, "test_pgd20": 0.30, "test_delta_e": -0.01, "train_clean": 0.6, "train_pgd20": 0.4,
           "train_delta_e": -0.05, "n_test": 2000, "n_train": 64}
    rows = {"s2:best-0001": row, "s2:state-0003": {**row, "test_pgd20": 0.25, "train_pgd20": 0.7}}
    (tmp_path / "held.json").write_text(json.dumps(rows))
    assert main(["export", "--run", str(tmp_path / "s2"), "--name", "rec", "--dest", str(ck), "--log-only",
                 "--heldout", str(tmp_path / "held.json")]) == 0
    held = json.loads((d / "config.json").read_text())["heldout"]
    assert held["best"]["epoch"] == 1 and held["last"]["epoch"] == 3 and held["overfitting"]
    assert "held-out check (2,000 test images" in (d / "README.md").read_text()
    # re-exported from its own folder (e.g. to refresh the card), a recorded run keeps the check,
    # and a note on how it ran, once given, stays in its card
    assert main(["export", "--run", str(d), "--name", "rec", "--dest", str(ck), "--log-only",
                 "--note", "ran beside two other runs on one GPU"]) == 0
    assert main(["export", "--run", str(d), "--name", "rec", "--dest", str(ck), "--log-only"]) == 0
    assert json.loads((d / "config.json").read_text())["heldout"] == held
    assert "- note: ran beside two other runs on one GPU" in (d / "README.md").read_text()
    capsys.readouterr()
    assert main(["export", "--run", str(d), "--name", "x", "--heldout", str(tmp_path / "held.json")]) == 2
    assert "goes with --log-only" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")
    (tmp_path / "other" / "log.jsonl").write_text("")
    with pytest.raises(WeatError, match="does not come from"):
        export_log(tmp_path / "other", "x", dest_root=ck)


def test_compile_also_compiles_the_attack(folder_dataset, tmp_path, monkeypatch):
    """--compile: the training forwards and the attack's forwards run through torch.compile (the
    attack is most of a step's work); the run trains and logs as the eager one does."""
    import weat_core.train.loop as T

    seen = []
    real = T.train_step

    def spy(model, fwd, opt, attack, loss_fn, xb, yb, cfg, amp, attack_model=None):
        seen.append(type(attack_model).__name__)
        return real(model, fwd, opt, attack, loss_fn, xb, yb, cfg, amp, attack_model)

    monkeypatch.setattr(T, "train_step", spy)
    res = train(_cfg(folder_dataset, tmp_path / "run", epochs=1, compile=True, amp=False), progress=False)
    assert seen and set(seen) == {"OptimizedModule"}
    rec = res.history[-1]
    assert math.isfinite(rec["loss"]) and 0 <= rec["test_pgd_acc"] <= 1
    assert (tmp_path / "run" / "log.jsonl").is_file()


def test_cli_sweep_prints_stores_and_writes_json(folder_dataset, trained_tiny, tmp_path, capsys):
    """`sweep`: Observation 1 across ε; --store puts the rows into config.json and a table into the
    model card, --out writes them as JSON; the rows are lens.strength_sweep's on the model prepared
    as the command prepares it."""
    import copy

    from weat_core import lens
    from weat_core.checkpoints import load_config, save
    from weat_core.cli import main
    from weat_core.data import load_split

    # a trained model, whose energies the attacks move well beyond float32 rounding (an untrained
    # one's shifts are ~1e-6, where the convolution kernel chosen alone changes the digits)
    d = tmp_path / "ck" / "tiny"
    save(copy.deepcopy(trained_tiny).eval(), d, config={"dataset": str(folder_dataset), "method": "sat"})
    out = tmp_path / "sweep.json"
    argv = ["sweep", "--checkpoint", str(d), "--n", "20", "--eps", "1,16", "--steps", "2", "--device", "cpu",
            "--out", str(out), "--store", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "16/255" in printed and "Untargeted PGD, mean E(x*) vs E(x)" in printed
    rows = load_config(d)["metrics"]["obs1_sweep"]["rows"]
    assert [(r["eps"], r["attack"]) for r in rows] == [(1, "PGD"), (1, "PGD-T"), (16, "PGD"), (16, "PGD-T")]
    assert json.loads(out.read_text())["rows"] == rows
    test = load_split(str(folder_dataset), "test", limit=20)
    ref = lens.strength_sweep(lens.prepare(load(d)), test.float(), test.y, (1, 16), steps=2)  # as the CLI runs it
    assert min(abs(r["shift"]) for r in rows) > 1e-3
    assert [r["shift"] for r in rows] == pytest.approx(list(ref["shift E(x)"]), rel=1e-4)
    card = (d / "README.md").read_text()
    assert "### Observation 1 across ε" in card and "| 16/255 | " in card
    # each row also splits the shift by what the attack did to each prediction; the groups add up
    for r in rows:
        groups = r["by_outcome"]
        assert sum(g["n"] for g in groups.values()) == 20
        assert sum(g["n"] * g["shift"] for g in groups.values()) / 20 == pytest.approx(r["shift"], abs=1e-5)
    assert "| stays correct | flipped | already wrong |" in card
    assert f"sweep --checkpoint tiny --dataset {folder_dataset} --eps 1,16 --steps 2 --n 20" in load_config(d)["reproduce"]["sweep"]
    assert load_config(d)["reproduce"]["sweep"] in card
    assert main(["sweep", "--checkpoint", str(d), "--eps", "two", "--quiet"]) != 0
    assert "--eps takes numbers" in capsys.readouterr().err
    # --steps-list: the number of steps at one ε instead (lens.steps_sweep), printed and as JSON
    argv = ["sweep", "--checkpoint", str(d), "--n", "20", "--eps", "8", "--steps-list", "1,3", "--device", "cpu",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "1 step " in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["steps"], r["eps"], r["attack"]) for r in rows] == [(1, 8, "PGD"), (1, 8, "PGD-T"), (3, 8, "PGD"),
                                                                    (3, 8, "PGD-T")]
    ref = lens.steps_sweep(lens.prepare(load(d)), test.float(), test.y, (1, 3), eps=8)
    assert min(abs(r["shift"]) for r in rows) > 1e-3
    assert [r["shift"] for r in rows] == pytest.approx(list(ref["shift E(x)"]), rel=1e-4)
    for bad in (["--eps", "4,8", "--steps-list", "1,2"], ["--eps", "8", "--steps-list", "1", "--store"],
                ["--eps", "8", "--steps-list", "x"]):
        assert main(["sweep", "--checkpoint", str(d), "--quiet", *bad]) != 0
        assert "--steps-list" in capsys.readouterr().err


def test_cli_landscape_prints_stores_and_writes_json(folder_dataset, tmp_path, capsys):
    """`landscape`: Observation 1 for the energy landscape page's attacks at one ε; its numbers are
    lens.energy_landscape's on the model prepared as the app prepares it; --store puts them into
    config.json and a table into the model card, with the command that re-measures them."""
    from weat_core import lens
    from weat_core.checkpoints import load_config, save
    from weat_core.cli import main
    from weat_core.data import load_split
    from weat_core.models import create_model

    torch.manual_seed(0)
    d = tmp_path / "ck" / "tiny"
    save(create_model("weatnet_tiny").eval(), d, config={"dataset": str(folder_dataset), "method": "trades"})
    out = tmp_path / "landscape.json"
    argv = ["landscape", "--checkpoint", str(d), "--n", "20", "--steps", "2", "--attacks", "PGD,PGD-T,FAB-T,Square",
            "--device", "cpu", "--out", str(out), "--store", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "natural images: accuracy" in printed and "Square" in printed
    obs = load_config(d)["metrics"]["obs1_attacks"]
    assert json.loads(out.read_text())["rows"] == obs["rows"]
    assert [(r["attack"], r["expected"]) for r in obs["rows"]] == [("PGD", "lower"), ("PGD-T", "higher"),
                                                                   ("FAB-T", "higher"), ("Square", "higher")]
    assert obs["square_queries"] == 2 * lens.attack_specs.SQUARE_QUERIES_PER_STEP and obs["n"] == 20
    test = load_split(str(folder_dataset), "test", limit=20)
    ref = lens.energy_landscape(lens.prepare(load(d)), test.float(), test.y,
                                {k: lens.attack_from(k, steps=2) for k in ("PGD", "PGD-T", "FAB-T", "Square")},
                                batch_size=32).summary.set_index("attack")
    assert [r["shift"] for r in obs["rows"]] == pytest.approx(list(ref["shift E(x)"].iloc[1:]), abs=1e-6)
    assert obs["natural"]["accuracy"] == pytest.approx(ref.loc["natural", "accuracy"])
    for r in obs["rows"]:  # the split by outcome adds up to the whole
        assert sum(g["n"] for g in r["by_outcome"].values()) == 20
        assert sum(g["n"] * g["shift"] for g in r["by_outcome"].values()) / 20 == pytest.approx(r["shift"], abs=1e-5)
    card = (d / "README.md").read_text()
    assert "### Observation 1 for every attack" in card and "| FAB-T | higher | " in card
    cmd = load_config(d)["reproduce"]["landscape"]
    assert f"landscape --checkpoint tiny --dataset {folder_dataset} --attacks PGD,PGD-T,FAB-T,Square --steps 2 --n 20" in cmd
    assert cmd in card
    for bad, says in ((["--attacks", "PGD,FGSM"], "--attacks takes the page's attacks"),
                      (["--eps", "4", "--store"], "ε = 8/255 only"),
                      (["--eps", "2040"], "units of 1/255 (8 means 8/255), so at most 255; got 2040")):
        assert main(["landscape", "--checkpoint", str(d), "--quiet", *bad]) == 2
        assert says in capsys.readouterr().err
    assert main(["sweep", "--checkpoint", str(d), "--quiet", "--eps", "8,300"]) == 2
    assert "so at most 255; got 300" in capsys.readouterr().err


def test_cli_plane_prints_stores_reuses_and_writes_json(folder_dataset, trained_tiny, tmp_path, capsys, monkeypatch):
    """`plane`: each test image's span of E(x) on its attack plane, as lens.plane_spreads gives it
    on the model prepared as the command prepares it; --out keeps every image's span, --reuse takes
    them back without measuring (refusing a file of other settings), --store puts the mean into
    config.json, the model card and the zoo's recorded table."""
    import copy

    from weat_core import lens
    from weat_core.checkpoints import list_checkpoints, load_config, save
    from weat_core.cli import main
    from weat_core.data import load_split

    d = tmp_path / "ck" / "tiny"
    save(copy.deepcopy(trained_tiny).eval(), d, config={"dataset": str(folder_dataset), "method": "trades"})
    out = tmp_path / "plane.json"
    argv = ["plane", "--checkpoint", str(d), "--n", "12", "--steps", "2", "--grid", "3", "--batch-size", "5",
            "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "tiny: E(x) changes by " in capsys.readouterr().out
    saved = json.loads(out.read_text())
    test = load_split(str(folder_dataset), "test", limit=12)
    ref = lens.plane_spreads(lens.prepare(load(d)), test.float(), test.y, steps=2, n=3, batch_size=5)
    assert saved["spreads"] == pytest.approx(list(ref), abs=2e-5) and min(ref) > 1e-3
    assert (saved["n"], saved["steps"], saved["grid"]) == (12, 2, 3)
    assert saved["mean"] == pytest.approx(ref.mean(), abs=1e-5)
    assert saved["se"] == pytest.approx(ref.std(ddof=1) / 12 ** 0.5, abs=1e-5)
    # stored from the file, nothing measured again: the same numbers
    assert main(["plane", "--checkpoint", str(d), "--n", "12", "--steps", "2", "--grid", "3", "--reuse", str(out),
                 "--store", "--quiet"]) == 0
    stored = load_config(d)["metrics"]["plane_span"]
    assert stored == pytest.approx({k: saved[k] for k in ("mean", "se", "median", "n", "steps", "grid")}, abs=1e-5)
    # (the file keeps each span to 5 decimals, so the reused mean moves in the 6th)
    card = (d / "README.md").read_text()
    cmd = load_config(d)["reproduce"]["plane"]
    assert cmd.endswith(f"plane --checkpoint tiny --dataset {folder_dataset} --n 12 --steps 2 --grid 3") and cmd in card
    assert "\n## Energy around each image (Observation 3)\n" in card and f"E(x) changes by {saved['mean']:.3f}" in card
    assert "The energy around each image comes from:" in card  # the only command this folder stores
    monkeypatch.setenv("WEAT_CHECKPOINTS_DIR", str(d.parent))
    info = next(c.to_dict() for c in list_checkpoints() if c.name == "tiny")
    assert lens.recorded_table([info])["E(x) span, attack plane"].iloc[0] == pytest.approx(saved["mean"])
    for bad, says in ((["--grid", "5", "--reuse", str(out)], "holds 12 images, 2 steps and a 3-point grid"),
                      (["--grid", "1"], "--grid takes 2 or more"), (["--n", "1"], "--n 2 or more images"),
                      (["--reuse", str(tmp_path / "none.json")], "no spans of tiny there")):
        assert main(["plane", "--checkpoint", str(d), "--n", "12", "--steps", "2", "--quiet", *bad]) == 2
        assert says in capsys.readouterr().err


def test_heldout_script_measures_best_and_last_away_from_the_per_epoch_subset(folder_dataset, tmp_path):
    """scripts/heldout_best_last.py (the README's held-out table): BEST and LATEST of a run, on
    the test images after the run's per-epoch subset and on the run's own training images."""
    from weat_core.checkpoints import load
    from weat_core.data import balanced_order, load_split
    from weat_core.evaluate import evaluate

    repo = Path(__file__).resolve().parents[1]
    train(_cfg(folder_dataset, tmp_path / "run", epochs=2, limit=64), progress=False)
    out = tmp_path / "heldout.json"
    proc = subprocess.run([sys.executable, str(repo / "scripts" / "heldout_best_last.py"), str(tmp_path / "run"),
                           "--dataset", str(folder_dataset), "--n", "20", "--attack", "pgd2", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    run = tmp_path / "run"
    names = [f"run:{(run / p).read_text().strip()}" for p in ("BEST", "LATEST")]
    assert sorted(res) == sorted(set(names)) and len(proc.stdout.splitlines()) == 2
    test = load_split(folder_dataset, "test")  # 40 images, 20 of them the run's per-epoch subset
    seen = set(balanced_order(test.y)[:20].tolist())  # as test.subset(20), which training evaluates on
    rest = torch.tensor([i for i in range(len(test)) if i not in seen])
    for name in names:
        row = res[name]
        assert row["n_test"] == 20 and row["n_train"] == 64
        model = load(run / name.split(":")[1])
        held = evaluate(model, test.float()[rest], test.y[rest], [])
        assert row["test_clean"] == pytest.approx(held["clean_acc"])
        assert 0 <= row["test_pgd2"] <= row["test_clean"] and 0 <= row["train_pgd2"] <= row["train_clean"]


def test_a_standard_models_card_reports_its_clean_curve():
    """Robust accuracy says nothing about a standard model (it is ~0): its card gives the clean
    accuracy on the per-epoch subset, last and best, instead of the robust line."""
    from weat_core.export import model_card

    recs = [{"epoch": e, "test_clean_acc": a, "test_pgd_acc": 0.0} for e, a in ((1, 0.5), (2, 0.8), (3, 0.75))]
    card = model_card("std", {"arch": "weatnet_tiny", "method": "standard", "training": {}}, recs)
    assert "clean accuracy on the per-epoch test subset: 75.0% at the last epoch (3), best 80.0% at epoch 2" in card
    assert "robust accuracy" not in card
    robust = model_card("rob", {"arch": "weatnet_tiny", "method": "sat", "training": {}}, recs)
    assert "clean accuracy on the per-epoch test subset" not in robust and "robust accuracy" in robust


def test_the_retrain_command_names_a_dataset_beside_the_repository_relative_to_it():
    """Commands run from the repository root: an absolute path into a folder beside it (the
    shared CIFAR-10 copy) is written as `../shared/...`, the same on every machine; names and
    paths elsewhere are kept."""
    from weat_core.export.card import _REPO, _train_command

    t = {"method": "sat", "arch": "weatnet_tiny", "epochs": 1, "batch_size": 8, "lr": 0.1, "schedule": "step",
         "eps": 8 / 255, "alpha": 2 / 255, "attack_steps": 1, "beta": 6.0, "seed": 0, "eval_size": 8, "eval_steps": 1}
    beside = _REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    assert "--dataset ../shared/data/cifar10-jpeg.tar.gz " in _train_command({**t, "dataset": str(beside)})
    assert "--dataset cifar10 " in _train_command({**t, "dataset": "cifar10"})
    assert "--dataset /elsewhere/c.tar.gz " in _train_command({**t, "dataset": "/elsewhere/c.tar.gz"})
    # the shared copy beside another checkout (a run trained there, its card written from a fresh clone)
    assert "--dataset ../shared/data/c.tar.gz " in _train_command({**t, "dataset": "/other/shared/data/c.tar.gz"})
    # the GPU scripts' carried copy of ../shared/data (.data/, set up by hand) names the original
    assert "--dataset ../shared/data/cifar10-jpeg.tar.gz " in _train_command({**t, "dataset": ".data/cifar10-jpeg.tar.gz"})
    assert "--dataset my.data/c.tar.gz " in _train_command({**t, "dataset": "my.data/c.tar.gz"})


def test_a_card_says_when_a_run_stopped_before_its_planned_epochs():
    """A run stopped early (a time limit, a kill) has the planned run's learning-rate schedule:
    its card says so, and that the re-train command repeats it only up to that epoch; a run
    that finished says nothing of the kind."""
    from weat_core.export import model_card

    recs = [{"epoch": e, "test_clean_acc": 0.5, "test_pgd_acc": 0.3} for e in (1, 2, 3)]
    t = {"method": "sat", "arch": "weatnet_tiny", "dataset": "cifar10", "epochs": 5, "batch_size": 8, "lr": 0.1,
         "schedule": "step", "eps": 8 / 255, "alpha": 2 / 255, "attack_steps": 1, "beta": 6.0, "seed": 0,
         "eval_size": 8, "eval_steps": 1}
    cfg = {"arch": "weatnet_tiny", "method": "sat", "training": t}
    card = model_card("x", cfg, recs)
    assert ("stopped after epoch 3 of the 5 planned (a time limit or an interruption): its learning-rate "
            "schedule is the 5-epoch one" in card) and "--epochs 5 " in card
    assert "stopped after" not in model_card("x", {**cfg, "training": {**t, "epochs": 3}}, recs)


def test_a_card_says_a_best_epoch_that_is_the_last_once_and_leaves_out_the_trained_run_folder():
    """When a run's best epoch is its last, its card gives that epoch's numbers once; its settings
    line names the dataset as the re-train command does and leaves out the run folder it was
    trained in (a path on that machine), which only a stage that a later one fine-tunes keeps."""
    from weat_core.export import model_card

    recs = [{"epoch": e, "test_clean_acc": 0.5, "test_pgd_acc": 0.2 + 0.05 * e, "delta_e": -0.1 * e,
             "train_pgd_acc": 0.3 + 0.05 * e} for e in (1, 2, 3)]
    t = {"method": "sat", "arch": "weatnet_tiny", "dataset": str(REPO.parent / "shared" / "data" / "c.tar.gz"),
         "epochs": 3, "batch_size": 8, "lr": 0.1, "schedule": "step", "eps": 8 / 255, "alpha": 2 / 255,
         "attack_steps": 1, "beta": 6.0, "seed": 0, "eval_size": 8, "eval_steps": 1, "out": "/tmp/xyz/run"}
    card = model_card("x", {"arch": "weatnet_tiny", "method": "sat", "training": t}, recs)
    assert "35.0% at the last epoch (3), its best; ΔE -0.300 there" in card
    assert "training subset: 45.0% at the last epoch (the gap to the test subset: +10.0 points)" in card
    assert "at the best epoch" not in card and "/tmp/xyz" not in card
    assert '"dataset": "../shared/data/c.tar.gz"' in card
    falling = recs + [{"epoch": 4, "test_clean_acc": 0.5, "test_pgd_acc": 0.1, "delta_e": -0.5, "train_pgd_acc": 0.9}]
    card = model_card("x", {"arch": "weatnet_tiny", "method": "sat", "training": {**t, "epochs": 4}}, falling)
    assert "ΔE -0.300 at the best epoch, -0.500 at the last" in card
    assert "45.0% at the best epoch, 90.0% at the last (the gap to the test subset: +10.0 and +80.0 points)" in card
    # a stage that a later one fine-tunes keeps its folder: the next stage's --init names it
    chained = {"arch": "weatnet_tiny", "method": "sat", "training": {**t, "out": "runs/b", "init": "runs/a/best-0003"},
               "stages": [{**t, "out": "runs/a"}, {**t, "out": "runs/b", "init": "runs/a/best-0003"}]}
    settings = [s for s in model_card("x", chained, recs).splitlines() if s.startswith("Settings")]
    assert '"out": "runs/a"' in settings[0] and '"out"' not in settings[1]


def test_the_heldout_check_tells_robust_overfitting_from_noise():
    """A run's best and last epoch on held-out images: a fall beyond two standard errors of those
    images is robust overfitting, a smaller one is noise; the rows of one run are picked by name
    from a file holding several, and a file that does not say which is refused."""
    from weat_core.export import heldout_summary, heldout_text

    def rows(run, best, last, n=2000):
        base = {"test_clean": 0.4, "test_delta_e": -0.02, "n_test": n}
        return {f"{run}:best-0040": {**base, "test_pgd20": best}, f"{run}:state-0100": {**base, "test_pgd20": last}}

    fell = heldout_summary(rows("a", 0.25, 0.20))  # 5 points; 2 SE at 2,000 images ≈ 1.9
    assert fell["overfitting"] and fell["drop"] == pytest.approx(0.05) and fell["attack"] == "pgd20"
    assert (fell["best"]["epoch"], fell["last"]["epoch"]) == (40, 100)
    text = heldout_text(fell)
    assert "PGD-20" in text and "25.0 % at the best epoch (40), 20.0 % at the last (100): robust overfitting" in text
    noisy = heldout_summary(rows("a", 0.25, 0.235))
    assert not noisy["overfitting"] and "within the noise" in heldout_text(noisy)
    assert not heldout_summary(rows("a", 0.25, 0.20, n=100))["overfitting"]  # 2 SE at 100 images ≈ 8.7
    both = {**rows("a", 0.25, 0.20), **rows("b", 0.25, 0.25)}
    assert not heldout_summary(both, "b")["overfitting"]
    with pytest.raises(WeatError, match="name one of them"):
        heldout_summary(both)
    with pytest.raises(WeatError, match="one best-NNNN"):
        heldout_summary({"a:state-0100": rows("a", 0.2, 0.2)["a:state-0100"]})
    # a run whose best epoch is its last (as a weight average's can be): one checkpoint, said once
    row = {"test_clean": 0.4455, "test_pgd20": 0.319, "test_delta_e": -0.017, "train_pgd20": 0.692,
           "train_delta_e": -0.257, "n_test": 2000}
    once = heldout_text(heldout_summary({"e:best-0100": row, "e:state-0100": row}))
    assert ("the best epoch is the last (100): robust accuracy 31.9 %, clean 44.5 %; its own training images "
            "under attack 69.2 %; ΔE -0.017 held-out, -0.257 on its training images") in once and "→" not in once


def test_the_heldout_check_compares_best_and_last_pairwise_on_the_same_images():
    """Best and last epoch are measured on the same held-out images: with per-image results the
    fall is judged by McNemar's paired standard error, √(b + c − (b − c)²/n)/n, which is small when
    the two epochs agree on most images and large when they trade many. Golden values: n = 4,000,
    34.0 % → 32.6 % (1,360 → 1,304 right), a 1.4-point fall that two independent samples would
    call noise (2 SE ≈ 1.50 points)."""
    from weat_core.export import heldout_summary, heldout_text

    def rows(both, only_best, only_last, n=4000):
        best = "1" * (both + only_best) + "0" * only_last + "0" * (n - both - only_best - only_last)
        last = "1" * both + "0" * only_best + "1" * only_last + "0" * (n - both - only_best - only_last)
        base = {"test_clean": 0.58, "test_delta_e": -0.1, "n_test": n}
        return {"r:best-0042": {**base, "test_pgd20": best.count("1") / n, "test_pgd20_correct": best},
                "r:state-0054": {**base, "test_pgd20": last.count("1") / n, "test_pgd20_correct": last}}

    agree = heldout_summary(rows(1300, 60, 4))  # se = √(64 − 56²/4000)/4000 = 0.199 points
    assert agree["paired"]["best_only"] == 60 and agree["paired"]["last_only"] == 4
    assert agree["paired"]["se"] == pytest.approx(0.0019877, abs=1e-6) and agree["drop"] == pytest.approx(0.014)
    assert agree["overfitting"]
    assert "test_pgd20_correct" not in agree["best"] and "test_pgd20_correct" not in agree["last"]  # b, c kept only
    assert ("robust overfitting, beyond two standard errors of the paired difference (60 images right only at "
            "the best epoch, 4 only at the last)") in heldout_text(agree)
    churn = heldout_summary(rows(760, 600, 544))  # se = √(1144 − 56²/4000)/4000 = 0.845 points
    assert churn["paired"]["se"] == pytest.approx(0.0084532, abs=1e-6) and not churn["overfitting"]
    assert "within two standard errors of the paired difference" in heldout_text(churn)
    unpaired = {k: {f: v for f, v in r.items() if not f.endswith("_correct")} for k, r in rows(1300, 60, 4).items()}
    assert not heldout_summary(unpaired)["overfitting"] and "paired" not in heldout_summary(unpaired)
    bf16 = {k: {**r, "amp": True} for k, r in rows(1300, 60, 4).items()}  # heldout_best_last.py --amp
    assert "PGD-20, attacks in bf16)" in heldout_text(heldout_summary(bf16))
    small = {k: {**r, "eps": 2 / 255, "alpha": 0.5 / 255} for k, r in rows(1300, 60, 4).items()}  # the run's own ε
    assert "PGD-20 at ε = 2/255, step 0.5/255)" in heldout_text(heldout_summary(small))


@pytest.mark.parametrize("parallel", ["0", "1"])
def test_gpu_overfit_script_runs_end_to_end_on_a_cpu(folder_dataset, tmp_path, parallel):
    """scripts/gpu_overfit.sh, the one command a lent GPU session runs, on a tiny model and data:
    it trains each method (one after another, or side by side with PARALLEL=1), checks best vs
    last on held-out images and returns the recorded runs (with that check) as one tarball, so
    its first run on a GPU is not its first run at all."""
    import os
    import shutil
    import subprocess
    import sys
    import tarfile

    repo = Path(__file__).resolve().parents[1]
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)  # the script calls python3: this interpreter
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo),
           "ARCH": "weatnet_tiny", "DEVICE": "cpu", "MINUTES": "0.01", "LIMIT": "64", "EVAL": "20",
           "HELDOUT_N": "20", "BATCH": "32", "METHODS": "sat weat-adv", "OUT": str(out), "DATA": str(folder_dataset),
           "OMP_NUM_THREADS": "1", "PARALLEL": parallel}
    if parallel == "1":  # and a fixed epoch count instead of the time budget, one run at its own lr, a name tag
        env.update(EPOCHS="1", METHODS="sat weat-adv@0.3", RUN_TAG="-long")
    r = subprocess.run(["bash", "scripts/gpu_overfit.sh"], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["heldout.json", "runs.tar.gz", "session.log"]
    held = json.loads((out / "heldout.json").read_text())
    weat, tag = ("weat-adv-lr0.3", "-long") if parallel == "1" else ("weat-adv", "")
    assert sorted(held) == ["of-sat:best-0001", "of-sat:state-0001", f"of-{weat}:best-0001", f"of-{weat}:state-0001"]
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = sorted(n for n in tar.getnames() if n.endswith("config.json"))
        assert names == [f"./weatnet_tiny-sat-64-step{tag}/config.json", f"./weatnet_tiny-{weat}-64-step{tag}/config.json"]
        cfg = json.load(tar.extractfile(names[0]))
        weat_cfg = json.load(tar.extractfile(names[1]))
    assert weat_cfg["training"]["lr"] == (0.3 if parallel == "1" else 0.1)  # METHOD@LR reached train
    assert cfg["heldout"]["n_test"] == 20 and cfg["training"]["schedule"] == "step" and cfg["dataset"] == "cifar10"
    assert set(cfg["heldout"]["paired"]) == {"best_only", "last_only", "se"}  # judged pairwise, on the same images
    assert ("side by side" in cfg.get("note", "")) == (parallel == "1")  # the card says the runs shared the device
    assert "== [" in (out / "session.log").read_text()


def test_compile_mode_implies_compile_and_unknown_modes_are_refused(folder_dataset, tmp_path, monkeypatch):
    """--compile-mode MODE turns --compile on and reaches torch.compile; a mode torch.compile does
    not know is one clear error, before any data is read."""
    from weat_core.cli import main

    modes = []
    monkeypatch.setattr(torch, "compile", lambda m, mode=None: modes.append(mode) or m)  # eager, but seen
    main(["train", "--method", "sat", "--arch", "weatnet_tiny", "--dataset", str(folder_dataset), "--epochs", "1",
          "--limit", "32", "--eval-size", "16", "--eval-steps", "1", "--attack-steps", "1", "--batch-size", "16",
          "--device", "cpu", "--no-amp", "--compile-mode", "reduce-overhead", "--out", str(tmp_path / "run"),
          "--quiet"])
    assert modes == ["reduce-overhead"] and (tmp_path / "run" / "LATEST").is_file()

    cfg = TrainConfig(method="sat", dataset="x", compile_mode="reduce-overhead")
    assert cfg.compile and cfg.compile_mode == "reduce-overhead"
    with pytest.raises(WeatError, match="unknown compile mode 'fast'"):
        TrainConfig(method="sat", dataset="x", compile_mode="fast")
    with pytest.raises(SystemExit):  # argparse refuses it too, naming the choices
        main(["train", "--method", "sat", "--dataset", str(folder_dataset), "--compile-mode", "fast"])


def _gpu_session(tmp_path, args, **settings):
    """Run scripts/gpu_session.sh on the CPU with a tiny model and the shared CIFAR-10 copy;
    `settings` are its environment variables. Returns the process (skips without bash or data)."""
    import os
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    data = repo.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if shutil.which("bash") is None or not data.is_file():
        pytest.skip("needs bash and the shared CIFAR-10 copy (../shared/data/cifar10-jpeg.tar.gz)")
    bindir = tmp_path / "bin"
    if not bindir.is_dir():
        bindir.mkdir()
        (bindir / "python3").symlink_to(sys.executable)
        (bindir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo),
           "ARCH": "weatnet_tiny", "DEVICE": "cpu", "TESTS_S": "0", "BENCH_S": "0", "SAMPLING_S": "0",
           "DATA": str(data), "OMP_NUM_THREADS": "1", **settings}
    r = subprocess.run(["bash", "scripts/gpu_session.sh", *args], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_gpu_session_script_runs_end_to_end_on_a_cpu(tmp_path):
    """scripts/gpu_session.sh as a GPU session would run it to put all its time into one
    model (stages set to 0 skipped, compiled training for EPOCHS epochs with the given batch and lr, export,
    AutoAttack stored in the card), on a tiny model, CIFAR-10's shared copy and the CPU."""
    out = tmp_path / "out"
    _gpu_session(tmp_path, ["sat"], EPOCHS="1", AA_N="8", AA_MIN_S="1", BATCH="64", LR="0.2", OUT=str(out),
                 TRAIN_EXTRA="--compile --limit 128 --eval-size 32 --eval-steps 1 --attack-steps 1",
                 EXPORT_EXTRA="--n 32")
    log = (out / "session.log").read_text()
    assert "GPU tests" not in log and "benchmark" not in log  # the stages set to 0 were skipped
    ck = out / "ckpt" / "weatnet_tiny-sat"
    cfg = json.loads((ck / "config.json").read_text())
    assert cfg["training"]["compile"] and cfg["training"]["batch_size"] == 64 and cfg["training"]["lr"] == 0.2
    assert cfg["training"]["epochs"] == 1 and cfg["training"]["minutes"] is None  # EPOCHS=1, not a budget
    assert cfg["metrics"]["aa_n"] == 8 and (ck / "model.safetensors").is_file() and (out / "aa.json").is_file()


def test_gpu_session_script_in_two_calls(tmp_path):
    """The next GPU session's two calls: the first trains and exports into KEEP (a folder the warm
    machine keeps) and brings a copy back under its OUT, without AutoAttack; the second
    (AA_ONLY) runs AutoAttack alone on the kept checkpoint and brings back its new config and card.
    No whole compiled run has been tried on a GPU, and one that fails must not cost the session's
    device time: here the first call's compiled run fails at once (on a compile mode that does not
    exist), and the script trains again without torch.compile in what is left of the budget."""
    keep, out1, out2 = tmp_path / "keep", tmp_path / "out1", tmp_path / "out2"
    _gpu_session(tmp_path, ["sat"], MINUTES="0.45", AA_N="0", KEEP=str(keep), OUT=str(out1), BATCH="64",
                 TRAIN_EXTRA="--compile-mode bogus --limit 128 --eval-size 32 --eval-steps 1 --attack-steps 1",
                 EXPORT_EXTRA="--n 32")
    kept, back = keep / "ckpt" / "weatnet_tiny-sat", out1 / "ckpt" / "weatnet_tiny-sat"
    assert (kept / "model.safetensors").is_file() and (back / "model.safetensors").is_file()
    assert "training without torch.compile" in (out1 / "session.log").read_text()
    cfg = json.loads((back / "config.json").read_text())
    assert not cfg["training"]["compile"] and cfg["training"]["minutes"] < 0.45 and "aa_n" not in cfg["metrics"]
    assert not (out1 / "aa.json").exists() and "AutoAttack on the first" not in (out1 / "session.log").read_text()
    _gpu_session(tmp_path, [], AA_N="8", AA_ONLY=str(kept), OUT=str(out2))
    log = (out2 / "session.log").read_text()
    assert "training" not in log and "AutoAttack on the first 8" in log
    cfg = json.loads((out2 / "ckpt" / "weatnet_tiny-sat" / "config.json").read_text())
    assert cfg["metrics"]["aa_n"] == 8 and cfg["metrics"] == json.loads((kept / "config.json").read_text())["metrics"]
    assert "AutoAttack" in (out2 / "ckpt" / "weatnet_tiny-sat" / "README.md").read_text()
    assert (out2 / "aa.json").is_file() and not (out2 / "ckpt" / "weatnet_tiny-sat" / "model.safetensors").exists()


def test_gpu_session_run_stopped_by_the_tool_goes_on_with_resume(tmp_path):
    """A training call the device tool stops at its limit (killed, nothing copied back) leaves its
    run folder under KEEP on the warm machine; the same call again with RESUME=1 continues that run
    from its last complete epoch instead of starting over, and exports the whole run."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    data = repo.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if shutil.which("bash") is None or not data.is_file():
        pytest.skip("needs bash and the shared CIFAR-10 copy (../shared/data/cifar10-jpeg.tar.gz)")
    keep, out1 = tmp_path / "keep", tmp_path / "out1"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for exe in ("python", "python3"):
        (bindir / exe).symlink_to(sys.executable)
    settings = dict(EPOCHS="3", AA_N="0", KEEP=str(keep), BATCH="64", EXPORT_EXTRA="--n 32",
                    TRAIN_EXTRA="--limit 1024 --eval-size 32 --eval-steps 1 --attack-steps 1")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo),
           "ARCH": "weatnet_tiny", "DEVICE": "cpu", "TESTS_S": "0", "BENCH_S": "0", "SAMPLING_S": "0",
           "DATA": str(data), "OMP_NUM_THREADS": "1", "OUT": str(out1), **settings}
    p = subprocess.Popen(["bash", "scripts/gpu_session.sh", "sat"], cwd=repo, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = keep / "runs" / "weatnet_tiny-sat-3ep"
    t0 = time.time()
    while not (run / "LATEST").exists() and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # as the device tool stops a command at its limit
    p.wait()
    assert (run / "LATEST").exists()
    first = (run / "LATEST").read_text().strip()
    out2 = tmp_path / "out2"
    r = _gpu_session(tmp_path, ["sat"], RESUME="1", OUT=str(out2), **settings)
    log = (out2 / "session.log").read_text()
    assert f"continuing the run in {run} from its {first}" in log, r.stdout[-2000:]
    ck = out2 / "ckpt" / "weatnet_tiny-sat"
    recs = [json.loads(x) for x in (ck / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3]  # the epochs of the first call kept, the rest added
    assert json.loads((ck / "config.json").read_text())["training"]["epochs"] == 3


def test_replanned_epochs_only_where_the_steps_taken_keep_their_learning_rates():
    """After the first epoch a budgeted run re-plans its epoch count at that epoch's real pace,
    but only where the steps already taken had exactly the learning rates the new count gives:
    the step schedule (constant until half-way) and the constant one, never one-cycle or cosine,
    whose first epoch depends on the count."""
    from weat_core.train import replanned_epochs

    step = TrainConfig(method="sat", dataset="x", epochs=10, minutes=1.0, schedule="step")
    # 60 s budget, 12 s gone, epochs of 4 s (5 % margin: 4.2 s) → 1 + 48 // 4.2 = 12 epochs
    assert replanned_epochs(step, 1, 100, 12.0, 4.0) == 12
    assert replanned_epochs(replace(step, max_epochs=11), 1, 100, 12.0, 4.0) == 11  # never past the most asked for
    assert replanned_epochs(step, 1, 100, 12.0, 9.0) == 6   # slower than planned: fewer
    assert replanned_epochs(step, 1, 100, 10.0, 5.0) is None  # 1 + 50 // 5.25 = 10: the plan holds
    # so few epochs that the first decay (at half the steps) would fall inside the first epoch
    assert replanned_epochs(step, 1, 100, 40.0, 30.0) is None
    assert replanned_epochs(replace(step, schedule="constant"), 1, 100, 40.0, 30.0) == 1
    for schedule in ("onecycle", "cosine", "onecycle-cos"):
        assert replanned_epochs(replace(step, schedule=schedule), 1, 100, 12.0, 4.0) is None


def test_a_budgeted_step_schedule_run_re_plans_to_exactly_the_run_its_new_count_gives(folder_dataset, tmp_path,
                                                                                       monkeypatch, caplog):
    """The steps timed at the start look so slow that the budget's plan is 2 epochs; the first
    real epoch is much faster, so the run re-plans to what fits, records the new count from its
    first epoch on, and ends with exactly the weights of a plain run with that many epochs."""
    import logging

    import weat_core.train.loop as tr

    budget_s = 8.0
    t_call = time.perf_counter()

    def slow(*a, **k):  # an epoch that looks like (budget left) / 2.5: the plan is 2 epochs
        return 0.0, (budget_s - (time.perf_counter() - t_call)) / (1.05 * 2.5)

    monkeypatch.setattr(tr, "_calibrate", slow)
    with caplog.at_level(logging.INFO, logger="weat_core.train"):
        timed = train(_cfg(folder_dataset, tmp_path / "timed", minutes=budget_s / 60, schedule="step"),
                      progress=False)
    n = len(timed.history)
    assert any("re-planned from 2 to" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert n > 2 and all(r["epochs"] == n for r in timed.history)  # the first record already carries the new count
    cfg = json.loads((tmp_path / "timed" / f"state-{n:04d}" / "config.json").read_text())
    assert cfg["training"]["epochs"] == n
    plain = train(_cfg(folder_dataset, tmp_path / "plain", epochs=n, schedule="step"), progress=False)
    for k, v in timed.model.state_dict().items():
        assert torch.equal(v, plain.model.state_dict()[k]), f"{k} differs from the plain {n}-epoch run"


def test_epoch_sums_average_every_image_of_the_epoch():
    """The per-epoch record's training terms: means over all the epoch's images (not means of
    batch means), the WEAT weights' spread, and the batch energies under their record names."""
    from weat_core.train.steps import _EpochSums

    g = torch.Generator().manual_seed(0)
    batches = [{"loss": torch.rand(n, generator=g), "energy": -torch.rand(n, generator=g),
                "weight": torch.rand(n, generator=g)} for n in (5, 3)]  # unequal batches
    sums = _EpochSums()
    for b in batches:
        sums.add(b)
    rec = sums.means(seen=8)
    every = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    assert rec["loss"] == pytest.approx(every["loss"].mean().item(), rel=1e-6)
    assert rec["batch_energy_mean"] == pytest.approx(every["energy"].mean().item(), rel=1e-6) and "energy" not in rec
    w = every["weight"]
    assert rec["weight_mean"] == pytest.approx(w.mean().item(), rel=1e-6)
    assert rec["weight_std"] == pytest.approx(w.std(unbiased=False).item(), rel=1e-4)
    assert (rec["weight_min"], rec["weight_max"]) == (pytest.approx(w.min().item()), pytest.approx(w.max().item()))
    assert "weight" not in rec and "weight_sq" not in rec
    plain = _EpochSums()  # a method without weights records none of their statistics
    plain.add({"loss": torch.ones(4)})
    assert plain.means(seen=4) == {"loss": 1.0}

"""Golden-value tests for weat_core.energy against formulas written out with math/numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weat_core.energy import cross_entropy_from_energies, energy, energy_stats, joint_energy, weat_weights

LOGITS = [
    [1.0, 2.0, 3.0],
    [-5.0, 0.0, 5.0],
    [100.0, 100.0, -100.0],  # large logits: a naive exp() overflows in fp32
    [0.0, 0.0, 0.0],
]


def ref_energy(row: list[float], T: float = 1.0) -> float:
    """−T·log Σ_k exp(f_k / T), with the max subtracted for stability."""
    m = max(v / T for v in row)
    return -T * (m + math.log(sum(math.exp(v / T - m) for v in row)))


@pytest.mark.parametrize("T", [1.0, 0.5, 2.0, 10.0])
def test_energy_matches_minus_logsumexp(T):
    got = energy(torch.tensor(LOGITS), T=T)
    want = torch.tensor([ref_energy(r, T) for r in LOGITS])
    assert got.shape == (len(LOGITS),)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)


def test_energy_hand_values():
    # E = −log(e^1 + e^2 + e^3) = −(3 + log(1 + e^−1 + e^−2)); uniform logits 0 over 3 classes: −log 3.
    e = energy(torch.tensor(LOGITS))
    assert e[0].item() == pytest.approx(-(3 + math.log(1 + math.exp(-1) + math.exp(-2))), rel=1e-6)
    assert e[2].item() == pytest.approx(-(100 + math.log(2)), rel=1e-6)
    assert e[3].item() == pytest.approx(-math.log(3), rel=1e-6)


def test_energy_low_temperature_tends_to_minus_max():
    logits = torch.tensor(LOGITS)
    torch.testing.assert_close(energy(logits, T=1e-3), -logits.max(dim=1).values, rtol=0, atol=1e-2)


def test_joint_energy_is_minus_the_label_logit():
    logits = torch.tensor(LOGITS)
    y = torch.tensor([2, 0, 1, 1])
    want = torch.tensor([-LOGITS[i][int(y[i])] for i in range(len(LOGITS))])
    assert torch.equal(joint_energy(logits, y), want)


def test_energies_are_fp32_for_half_logits():
    logits = torch.tensor(LOGITS).half()
    assert energy(logits).dtype == torch.float32
    assert joint_energy(logits, torch.zeros(4, dtype=torch.long)).dtype == torch.float32


def test_cross_entropy_from_energies_equals_torch_cross_entropy(seeded):
    logits = torch.randn(64, 10) * 5
    y = torch.randint(0, 10, (64,))
    got = cross_entropy_from_energies(logits, y)
    torch.testing.assert_close(got, F.cross_entropy(logits, y, reduction="none"), rtol=1e-5, atol=1e-5)
    # and p(y|x) = exp(−E(x, y)) / exp(−E(x))
    p = torch.exp(-(joint_energy(logits, y) - energy(logits)))
    torch.testing.assert_close(p, F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1), rtol=1e-5, atol=1e-6)


def ref_weight(e: float) -> float:
    """1 / log(1 + exp(|e|)) in float64; log1p(exp(−a)) + a avoids the overflow for large a."""
    a = abs(e)
    return 1.0 / (a + math.log1p(math.exp(-a)))


E_VALUES = [0.0, 1e-6, 0.1, -0.5, 1.0, -3.0, 10.0, -19.9, 20.0, 20.1, 30.0, -50.0, 88.0, 89.0, 100.0, -1000.0,
            1e4, -1e4]


def test_weat_weights_golden():
    e = torch.tensor(E_VALUES, dtype=torch.float64)
    w = weat_weights(e)
    want = torch.tensor([ref_weight(v) for v in E_VALUES], dtype=torch.float64)
    assert w.shape == e.shape
    assert torch.isfinite(w).all() and (w > 0).all()
    torch.testing.assert_close(w.double(), want, rtol=1e-6, atol=0)


def test_weat_weights_special_points():
    w = weat_weights(torch.tensor([0.0, 1e4, -1e4]))
    assert w[0].item() == pytest.approx(1 / math.log(2), rel=1e-6)  # softplus(0) = log 2
    assert w[1].item() == pytest.approx(1e-4, rel=1e-6)  # for large |e|, softplus(|e|) → |e|
    assert w[2].item() == pytest.approx(1e-4, rel=1e-6)


def test_weat_weights_even_and_decreasing_in_abs_energy():
    a = torch.linspace(0, 200, 401)
    w = weat_weights(a)
    assert torch.equal(w, weat_weights(-a))
    assert (w[1:] < w[:-1]).all()


def test_weat_weights_half_input_stays_finite():
    # fp16 energies (autocast) can be large; the weight must not be inf or 0
    e = torch.tensor([0.0, 100.0, 6e4], dtype=torch.float16)
    w = weat_weights(e)
    assert torch.isfinite(w).all() and (w > 0).all()
    assert w[2].item() == pytest.approx(1 / 6e4, rel=1e-3)


def test_energy_stats_matches_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(-3.0, 2.0, size=101)
    stats = energy_stats(torch.tensor(values, dtype=torch.float32), prefix="nat_")
    want = {"mean": values.mean(), "std": values.std(ddof=0)}
    for q in (5, 25, 50, 75, 95):
        want[f"q{q:02d}"] = np.quantile(values, q / 100)  # linear interpolation, numpy's default
    assert set(stats) == {f"nat_{k}" for k in want}
    for k, v in want.items():
        assert stats[f"nat_{k}"] == pytest.approx(float(v), rel=1e-5, abs=1e-5), k
    assert all(isinstance(v, float) for v in stats.values())


def test_energy_stats_hand_values():
    stats = energy_stats(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert stats["mean"] == pytest.approx(3.0)
    assert stats["std"] == pytest.approx(math.sqrt(2.0))  # population std
    assert stats["q50"] == pytest.approx(3.0)
    assert stats["q25"] == pytest.approx(2.0)
    assert stats["q05"] == pytest.approx(1.2)
    assert stats["q95"] == pytest.approx(4.8)


def test_energy_stats_empty_and_grad():
    assert energy_stats(torch.tensor([])) == {}
    e = torch.tensor([1.0, 2.0], requires_grad=True)  # accepts tensors that require grad
    assert energy_stats(e)["mean"] == pytest.approx(1.5)

"""Golden values for the training objectives, against formulas written out here in numpy
(float64) and, for MART, the authors' reference code (Wang et al. 2020) reproduced verbatim."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from weat_core.losses import LOSSES, LossOutput, get_loss, mart, sat, trades, weat_adv, weat_nat

B, K = 16, 10
BETA = 6.0


@pytest.fixture
def logits(seeded):
    """Natural and adversarial logits (B, K) with a realistic spread, and labels (B,)."""
    nat = torch.randn(B, K) * 3
    adv = nat + torch.randn(B, K) * 2
    y = torch.randint(0, K, (B,))
    return nat, adv, y


# ---- references in numpy, float64 -------------------------------------------------------


def np_logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=1, keepdims=True)))[:, 0]


def np_log_softmax(a: np.ndarray) -> np.ndarray:
    return a - np_logsumexp(a)[:, None]


def np_ce(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np_logsumexp(a) - a[np.arange(len(y)), y]


def np_kl(nat: np.ndarray, adv: np.ndarray) -> np.ndarray:
    lp, lq = np_log_softmax(nat), np_log_softmax(adv)
    return (np.exp(lp) * (lp - lq)).sum(axis=1)


def np_energy(a: np.ndarray) -> np.ndarray:
    return -np_logsumexp(a)


def np_weat_weight(e: np.ndarray) -> np.ndarray:
    a = np.abs(e)
    return 1.0 / (a + np.log1p(np.exp(-a)))  # 1 / log(1 + exp(|e|)) without overflow


def as_np(*ts):
    return [t.detach().double().numpy() for t in ts]


def check(got: torch.Tensor, want: np.ndarray, rtol=1e-5, atol=1e-5):
    assert got.shape == want.shape
    np.testing.assert_allclose(got.detach().double().numpy(), want, rtol=rtol, atol=atol)


# ---- golden values ----------------------------------------------------------------------


def test_sat(logits):
    nat, adv, y = logits
    a, n, yy = *as_np(adv, nat), y.numpy()
    out = sat(adv, y, logits_nat=nat)
    check(out.loss, np_ce(a, yy))
    check(out.terms["ce"], np_ce(a, yy))
    check(out.terms["energy_adv"], np_energy(a))
    check(out.terms["energy"], np_energy(n))
    assert "energy" not in sat(adv, y).terms


def test_trades(logits):
    nat, adv, y = logits
    n, a, yy = *as_np(nat, adv), y.numpy()
    out = trades(nat, adv, y, beta=BETA)
    check(out.loss, np_ce(n, yy) + BETA * np_kl(n, a))
    check(out.terms["ce"], np_ce(n, yy))
    check(out.terms["kl"], np_kl(n, a))
    check(out.terms["energy"], np_energy(n))
    check(out.terms["energy_adv"], np_energy(a))
    check(trades(nat, adv, y).loss, np_ce(n, yy) + 6.0 * np_kl(n, a))  # β defaults to 6


def test_trades_kl_is_the_energy_decomposition(logits):
    """KL(p(·|x) ‖ p(·|x*)) = E_{k∼p(·|x)}[E(x*,k) − E(x,k)] + E(x) − E(x*)  (MISSION.md)."""
    nat, adv, y = logits
    n, a = as_np(nat, adv)
    p = np.exp(np_log_softmax(n))
    decomposition = (p * (-a - -n)).sum(axis=1) + np_energy(n) - np_energy(a)
    check(trades(nat, adv, y).terms["kl"], decomposition)


def test_weat_adv(logits):
    nat, adv, y = logits
    n, a, yy = *as_np(nat, adv), y.numpy()
    w = np_weat_weight(np_energy(n))
    out = weat_adv(nat, adv, y, beta=BETA)
    check(out.terms["weight"], w, rtol=1e-6)
    check(out.loss, w * (np_ce(a, yy) + BETA * np_kl(n, a)))
    check(out.terms["ce"], np_ce(a, yy))
    check(out.terms["kl"], np_kl(n, a))
    check(out.terms["energy"], np_energy(n))
    check(out.terms["energy_adv"], np_energy(a))


def test_weat_nat(logits):
    nat, adv, y = logits
    n, a, yy = *as_np(nat, adv), y.numpy()
    w = np_weat_weight(np_energy(n))
    out = weat_nat(nat, adv, y, beta=BETA)
    check(out.terms["weight"], w, rtol=1e-6)
    check(out.loss, w * (np_ce(n, yy) + BETA * np_kl(n, a)))
    check(out.terms["ce"], np_ce(n, yy))


def test_weat_weights_from_large_energies():
    """Confident logits (|E| in the hundreds) must give finite, positive weights ≈ 1/|E|."""
    nat = torch.zeros(3, K)
    nat[:, 0] = torch.tensor([200.0, 1000.0, -300.0])
    adv = nat.clone()
    y = torch.zeros(3, dtype=torch.long)
    w = weat_adv(nat, adv, y).terms["weight"]
    assert torch.isfinite(w).all() and (w > 0).all()
    check(w, np_weat_weight(np_energy(nat.double().numpy())), rtol=1e-6)


def test_weat_nat_with_unit_weights_is_trades(logits):
    nat, adv, y = logits
    ones = torch.ones(B)
    got, want = weat_nat(nat, adv, y, beta=BETA, weights=ones), trades(nat, adv, y, beta=BETA)
    assert torch.equal(got.loss, want.loss)
    for k in ("ce", "kl", "energy", "energy_adv"):
        assert torch.equal(got.terms[k], want.terms[k]), k
    assert torch.equal(got.terms["weight"], ones)


def test_weat_adv_with_unit_weights_is_ce_adv_plus_beta_kl(logits):
    nat, adv, y = logits
    got = weat_adv(nat, adv, y, beta=BETA, weights=torch.ones(B))
    want = F.cross_entropy(adv, y, reduction="none") + BETA * (
        F.softmax(nat, 1) * (F.log_softmax(nat, 1) - F.log_softmax(adv, 1))).sum(1)
    torch.testing.assert_close(got.loss, want)


@pytest.mark.parametrize("loss_fn", [weat_adv, weat_nat])
def test_weat_weights_are_detached(loss_fn, logits):
    nat, adv, y = logits
    nat = nat.clone().requires_grad_(True)
    adv = adv.clone().requires_grad_(True)
    out = loss_fn(nat, adv, y, beta=BETA)
    w = out.terms["weight"]
    assert not w.requires_grad and not out.terms["energy"].requires_grad
    g_nat, g_adv = torch.autograd.grad(out.loss.sum(), (nat, adv))

    # reference: the same loss with the weight as a constant
    nat2, adv2 = nat.detach().clone().requires_grad_(True), adv.detach().clone().requires_grad_(True)
    ce_logits = adv2 if loss_fn is weat_adv else nat2
    kl = (F.softmax(nat2, 1) * (F.log_softmax(nat2, 1) - F.log_softmax(adv2, 1))).sum(1)
    ref = w.detach() * (F.cross_entropy(ce_logits, y, reduction="none") + BETA * kl)
    r_nat, r_adv = torch.autograd.grad(ref.sum(), (nat2, adv2))
    torch.testing.assert_close(g_nat, r_nat)
    torch.testing.assert_close(g_adv, r_adv)

    # ... and it differs from letting gradients flow through w (so this test can fail)
    nat3 = nat.detach().clone().requires_grad_(True)
    w3 = 1.0 / F.softplus((-torch.logsumexp(nat3, 1)).abs())
    ce3 = F.cross_entropy(adv.detach() if loss_fn is weat_adv else nat3, y, reduction="none")
    kl3 = (F.softmax(nat3, 1) * (F.log_softmax(nat3, 1) - F.log_softmax(adv.detach(), 1))).sum(1)
    (g3,) = torch.autograd.grad((w3 * (ce3 + BETA * kl3)).sum(), nat3)
    assert not torch.allclose(g3, g_nat, atol=1e-4)


def mart_reference(logits, logits_adv, y, beta):
    """The loss of YisenWang/MART `mart_loss` (Wang et al. 2020, ICLR), after the attack."""
    kl = nn.KLDivLoss(reduction="none")
    batch_size = len(y)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    loss_robust = (1.0 / batch_size) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs))
    return loss_adv + float(beta) * loss_robust


def test_mart_matches_reference_code(logits):
    nat, adv, y = logits
    out = mart(nat, adv, y, beta=BETA)
    torch.testing.assert_close(out.mean(), mart_reference(nat, adv, y, BETA), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mart(nat, adv, y).mean(), mart_reference(nat, adv, y, 6.0), rtol=1e-5, atol=1e-6)


def test_mart_per_sample_golden(logits):
    nat, adv, y = logits
    n, a, yy = *as_np(nat, adv), y.numpy()
    idx = np.arange(B)
    p_adv, p_nat = np.exp(np_log_softmax(a)), np.exp(np_log_softmax(n))
    masked = p_adv.copy()
    masked[idx, yy] = -np.inf
    wrong = masked.argmax(axis=1)  # most likely wrong class under x*
    bce = np_ce(a, yy) - np.log(1.0001 - p_adv[idx, wrong])
    kl = (p_nat * (np.log(p_nat) - np.log(p_adv))).sum(axis=1)
    want = bce + BETA * kl * (1.0000001 - p_nat[idx, yy])
    out = mart(nat, adv, y, beta=BETA)
    check(out.loss, want, rtol=1e-4, atol=1e-5)
    check(out.terms["ce"], bce, rtol=1e-4, atol=1e-5)
    check(out.terms["kl"], kl, rtol=1e-4, atol=1e-5)


def test_mart_wrong_class_when_adv_is_already_misclassified():
    # x* puts most mass on class 2 ≠ y = 0: the "wrong" class is 2 (top-1), not the runner-up
    nat = torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    adv = torch.tensor([[1.0, 0.0, 4.0, 2.0]])
    y = torch.tensor([0])
    p = F.softmax(adv, 1)[0]
    want = F.cross_entropy(adv, y) - torch.log(1.0001 - p[2])
    torch.testing.assert_close(mart(nat, adv, y, beta=0.0).loss, want.view(1))


# ---- interface ----------------------------------------------------------------------------

EXPECTED_TERMS = {
    "standard": {"ce", "energy"},
    "sat": {"ce", "energy", "energy_adv"},
    "trades": {"ce", "kl", "energy", "energy_adv"},
    "mart": {"ce", "kl", "energy", "energy_adv"},
    "weat-adv": {"ce", "kl", "energy", "energy_adv", "weight"},
    "weat-nat": {"ce", "kl", "energy", "energy_adv", "weight"},
}


def test_registry_has_every_method():
    assert set(LOSSES) == set(EXPECTED_TERMS)


@pytest.mark.parametrize("method", sorted(EXPECTED_TERMS))
def test_uniform_interface(method, logits):
    nat, adv, y = logits
    nat, adv = nat.clone().requires_grad_(True), adv.clone().requires_grad_(True)
    out = get_loss(method)(nat, adv, y, beta=BETA)
    assert isinstance(out, LossOutput)
    assert out.loss.shape == (B,) and out.loss.dtype == torch.float32
    assert set(out.terms) == EXPECTED_TERMS[method]
    for k, v in out.terms.items():
        assert v.shape == (B,), k
        assert torch.isfinite(v).all(), k
    for k in ("energy", "energy_adv", "weight"):
        if k in out.terms:
            assert not out.terms[k].requires_grad, k
    assert out.mean().shape == () and out.mean().requires_grad
    torch.testing.assert_close(out.mean(), out.loss.mean())


@pytest.mark.parametrize("method", ["trades", "mart", "weat-adv", "weat-nat"])
def test_half_logits_give_fp32_losses(method, logits):
    nat, adv, y = logits
    out = get_loss(method)(nat.half(), adv.half(), y)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss).all()
    torch.testing.assert_close(out.loss, get_loss(method)(nat.half().float(), adv.half().float(), y).loss)


def test_standard_is_clean_ce(logits):
    nat, adv, y = logits
    check(get_loss("standard")(nat, adv, y).loss, np_ce(*as_np(nat), y.numpy()))


def test_get_loss_unknown():
    with pytest.raises(ValueError, match="unknown method 'pgd-at'"):
        get_loss("pgd-at")

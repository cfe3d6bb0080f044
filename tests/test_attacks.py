"""Attacks: ε-ball and box constraints, that each attack does what it claims on a trained
tiny model, and that no attack changes the model (mode, parameters, buffers, .grad)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from weat_core import WeatError
from weat_core.attacks import (
    PGD,
    EnergyAttack,
    TorchAttack,
    TradesAttack,
    eval_mode,
    kl_div,
    make_attack,
    margin,
    pick_target,
    project,
)
from weat_core.energy import energy

EPS = 8 / 255
TOL = 1e-6  # float32 rounding of x + δ

# Every attack, in a configuration small enough for CPU tests.
ATTACKS = {
    "pgd-linf": PGD(eps=EPS, alpha=2 / 255, steps=5),
    "pgd-l2": PGD(eps=0.5, alpha=0.125, steps=5, norm="l2"),
    "pgd-targeted": PGD(eps=EPS, steps=5, targeted=True),
    "cw-linf": PGD(eps=EPS, steps=5, loss="cw"),
    "trades": TradesAttack(eps=EPS, steps=5),
    "energy-lower": EnergyAttack("lower", eps=EPS, steps=5),
    "energy-raise": EnergyAttack("raise", eps=EPS, steps=5),
    "apgd-ce": TorchAttack("apgd-ce", eps=EPS, steps=5),
    "apgd-dlr": TorchAttack("apgd-dlr", eps=EPS, steps=5),
    "apgd-t": TorchAttack("apgd-t", eps=EPS, steps=5),
    "fab-t": TorchAttack("fab-t", eps=EPS, steps=5),
    "square": TorchAttack("square", eps=EPS, n_queries=20),
    "autoattack-fast": TorchAttack("autoattack-fast", eps=EPS, steps=5),
    "autoattack": TorchAttack("autoattack", eps=EPS, steps=5, n_queries=20),
    "apgd-ce-l2": TorchAttack("apgd-ce", eps=0.5, norm="l2", steps=5),
}
STEPPED = ["pgd-linf", "pgd-l2", "pgd-targeted", "cw-linf", "trades", "energy-lower", "energy-raise"]


def eps_norm(attack) -> tuple[float, str]:
    return attack.eps, attack.norm


def ce(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def predict(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture
def batch(synthetic_batch):
    """16 images, with some pixels pinned at exactly 0 and 1 to exercise the box projection."""
    x, y = synthetic_batch
    x = x[:16].clone()
    x[:, :, :4, :4] = 0.0
    x[:, :, -4:, -4:] = 1.0
    return x, y[:16]


# --------------------------------------------------------------------------- constraints


@pytest.mark.parametrize("name", list(ATTACKS))
def test_stays_in_eps_ball_and_box(name, trained_tiny, batch, seeded):
    attack = ATTACKS[name]
    x, y = batch
    x_adv = attack(trained_tiny, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    eps, norm = eps_norm(attack)
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + TOL
    else:
        assert (delta.norm(dim=1) <= eps * (1 + 1e-5)).all()
    assert delta.abs().max() > 0  # it did move


def test_project_by_hand():
    x = torch.tensor([[0.0, 0.5, 1.0, 0.98]])
    x_adv = torch.tensor([[-0.5, 0.9, 0.2, 1.5]])
    torch.testing.assert_close(project(x_adv, x, 0.1, "linf"), torch.tensor([[0.0, 0.6, 0.9, 1.0]]))
    # L2: δ = (3, 4)·0.01 has norm 0.05, scaled down to radius 0.025 → (0.015, 0.02)
    x = torch.full((1, 2), 0.5)
    got = project(x + torch.tensor([[0.03, 0.04]]), x, 0.025, "l2")
    torch.testing.assert_close(got, torch.tensor([[0.515, 0.52]]))
    inside = x + torch.tensor([[0.003, 0.004]])
    torch.testing.assert_close(project(inside, x, 0.025, "l2"), inside)
    with pytest.raises(ValueError):
        project(x, x, 0.1, "l1")


# --------------------------------------------------------------------------- effects


def test_pgd_raises_cross_entropy(trained_tiny, batch, seeded):
    x, y = batch
    x_adv = PGD(eps=EPS, steps=10)(trained_tiny, x, y)
    clean, adv = ce(trained_tiny, x, y), ce(trained_tiny, x_adv, y)
    assert (adv > clean).float().mean() >= 0.9
    assert adv.mean() > clean.mean() + 1.0
    assert (predict(trained_tiny, x_adv) != y).float().mean() >= 0.8  # untargeted PGD fools it
    with pytest.raises(ValueError, match="untargeted"):  # a target it would ignore is refused
        PGD(eps=EPS, steps=1)(trained_tiny, x, y, target=(y + 1) % 10)


def test_pgd_l2_raises_cross_entropy(trained_tiny, batch, seeded):
    x, y = batch
    x_adv = PGD(eps=1.0, alpha=0.25, steps=10, norm="l2")(trained_tiny, x, y)
    assert ce(trained_tiny, x_adv, y).mean() > ce(trained_tiny, x, y).mean() + 1.0


def test_cw_raises_margin(trained_tiny, batch, seeded):
    x, y = batch
    x_adv = PGD(eps=EPS, steps=10, loss="cw")(trained_tiny, x, y)
    with torch.no_grad():
        assert (margin(trained_tiny(x_adv), y) > margin(trained_tiny(x), y)).float().mean() >= 0.9


def test_margin_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, -1.0]])
    torch.testing.assert_close(margin(logits, torch.tensor([1, 2])), torch.tensor([2.0 - 3.0, 5.0 - (-1.0)]))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_pgd_reaches_given_targets(norm, trained_tiny, batch, seeded):
    x, y = batch
    target = (y + 3) % 10
    eps = EPS if norm == "linf" else 1.0
    attack = PGD(eps=eps, alpha=eps / 4, steps=10, norm=norm, targeted=True)
    x_adv = attack(trained_tiny, x, y, target=target)
    assert (predict(trained_tiny, x_adv) == target).float().mean() >= 0.8


def test_targeted_pgd_scalar_target(trained_tiny, batch, seeded):
    x, y = batch
    x_adv = PGD(eps=EPS, steps=10, targeted=True)(trained_tiny, x, y, target=torch.tensor(4))
    assert (predict(trained_tiny, x_adv) == 4).float().mean() >= 0.8


@pytest.mark.parametrize("target", [None, "random"])
def test_targeted_pgd_random_targets(target, trained_tiny, batch, seeded):
    x, y = batch
    x_adv = PGD(eps=EPS, steps=10, targeted=True)(trained_tiny, x, y, target=target)
    pred = predict(trained_tiny, x_adv)
    assert (pred != y).float().mean() >= 0.8
    assert len(torch.unique(pred)) >= 4  # random targets spread over classes, not one sink class


def test_targeted_pgd_least_likely(trained_tiny, batch, seeded):
    x, y = batch
    with torch.no_grad():
        least = trained_tiny(x).argmin(1)  # the reference target, computed here
    x_adv = PGD(eps=EPS, steps=10, targeted=True)(trained_tiny, x, y, target="least-likely")
    assert (predict(trained_tiny, x_adv) == least).float().mean() >= 0.8


def test_pick_target(tiny_model):
    y = torch.arange(10).repeat(500)  # (5000,)
    for t in (pick_target(tiny_model, None, y, None, 10), pick_target(tiny_model, None, y, "random", 10)):
        assert t.shape == y.shape and t.dtype == torch.long
        assert (t != y).all() and t.min() >= 0 and t.max() <= 9
        for c in range(10):  # every other class is drawn for class c, about equally often
            counts = torch.bincount(t[y == c], minlength=10)
            assert counts[c] == 0 and counts.sum() == 500
            assert counts[torch.arange(10) != c].min() >= 25  # expected 500/9 ≈ 56
    y = torch.arange(10).repeat(5)
    x = torch.rand(50, 3, 32, 32)
    given = torch.randint(0, 10, (50,))
    assert torch.equal(pick_target(tiny_model, x, y, given, 10), given)
    assert torch.equal(pick_target(tiny_model, x, y, torch.tensor(7), 10), torch.full_like(y, 7))
    with torch.no_grad():
        assert torch.equal(pick_target(tiny_model, x, y, "least-likely", 10), tiny_model(x).argmin(1))
    with pytest.raises(ValueError):
        pick_target(tiny_model, x, y, "most-likely", 10)


def test_trades_attack_increases_kl(trained_tiny, batch, seeded):
    x, y = batch
    with torch.no_grad():
        logits_nat = trained_tiny(x)
        x_rand = project(x + torch.empty_like(x).uniform_(-EPS, EPS), x, EPS, "linf")
        kl_rand = kl_div(logits_nat, trained_tiny(x_rand))
    x_adv = TradesAttack(eps=EPS, steps=10)(trained_tiny, x, y)
    with torch.no_grad():
        kl_adv = kl_div(logits_nat, trained_tiny(x_adv))
    assert (kl_adv > kl_rand).float().mean() >= 0.9
    assert kl_adv.mean() > 1.0 and kl_adv.mean() > 10 * kl_rand.mean()


def test_trades_attack_accepts_precomputed_logits(trained_tiny, batch, seeded):
    x, y = batch
    with torch.no_grad():
        logits_nat = trained_tiny(x)
    x_adv = TradesAttack(eps=EPS, steps=5)(trained_tiny, x, y, logits_nat=logits_nat)
    with torch.no_grad():
        assert kl_div(logits_nat, trained_tiny(x_adv)).mean() > 0.1
    with pytest.raises(ValueError):
        TradesAttack()(trained_tiny, x, y, target=torch.zeros_like(y))


def test_kl_div_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q = torch.tensor([[0.2, 0.5, 0.3]])
    want = sum(pi * torch.log(pi / qi) for pi, qi in zip(p[0], q[0]))
    torch.testing.assert_close(kl_div(p.log() + 3.0, q.log() - 1.0), want.view(1))  # shift-invariant in logits


@pytest.mark.parametrize("direction", ["lower", "raise"])
def test_energy_attack_moves_energy(direction, trained_tiny, batch, seeded):
    x, y = batch
    x_adv = EnergyAttack(direction, eps=EPS, steps=10)(trained_tiny, x)
    with torch.no_grad():
        e_nat, e_adv = energy(trained_tiny(x)), energy(trained_tiny(x_adv))
    moved = e_adv < e_nat if direction == "lower" else e_adv > e_nat
    assert moved.all()
    assert (e_adv - e_nat).abs().mean() > 1.0


def test_energy_attack_rejects_bad_direction():
    with pytest.raises(ValueError):
        EnergyAttack("sideways")


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "autoattack-fast"])
def test_torchattacks_fool_the_trained_model(name, trained_tiny, batch):
    x, y = batch
    x_adv = ATTACKS[name](trained_tiny, x, y)
    assert (predict(trained_tiny, x_adv) != y).float().mean() >= 0.8


def test_autoattack_reports_each_stage_with_the_images_left(tiny_model, trained_tiny, batch, seeded):
    """on_stage names each of AutoAttack's four attacks as it starts, with the images it gets:
    all of them for APGD-CE, then only those the attacks before did not break. At an ε too small
    to flip any prediction every stage gets every image; at 1/255 APGD-CE breaks some of the
    trained model's images, and the later stages get the rest."""
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        y = tiny_model(x).argmax(1)  # correctly classified, so nothing counts as broken at the start
    stages = []
    TorchAttack("autoattack", eps=1e-6, steps=2, n_queries=5, on_stage=lambda *s: stages.append(s))(tiny_model, x, y)
    assert stages == [("APGD-CE", 6), ("APGD-T", 6), ("FAB-T", 6), ("Square", 6)]
    x, y = batch
    stages.clear()
    x_adv = TorchAttack("autoattack", eps=1 / 255, steps=5, n_queries=20,
                        on_stage=lambda *s: stages.append(s))(trained_tiny, x, y)
    left = [k for _, k in stages]
    assert [s for s, _ in stages] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert left[0] == len(y) and 0 < left[1] < len(y) and left == sorted(left, reverse=True)
    assert left[-1] >= int((predict(trained_tiny, x_adv) == y).sum())  # Square got at least what survived
    assert TorchAttack("autoattack", on_stage=print) == TorchAttack("autoattack")  # not a setting


def test_square_raises_cross_entropy(trained_tiny, batch):
    x, y = batch
    x_adv = TorchAttack("square", eps=EPS, n_queries=50)(trained_tiny, x, y)
    assert ce(trained_tiny, x_adv, y).mean() > ce(trained_tiny, x, y).mean()


@pytest.mark.parametrize("k, n_targets", [(100, 9), (10, 9), (5, 4)])
def test_targeted_torchattacks_use_nine_target_classes(k, n_targets, tiny_model):
    """Standard AutoAttack runs APGD-T and FAB-T against the 9 most likely other classes,
    whatever the number of classes K (Croce & Hein 2020)."""
    for name in ("apgd-t", "fab-t"):
        assert TorchAttack(name).build(tiny_model, k).n_target_classes == n_targets
    inner = TorchAttack("autoattack").build(tiny_model, k).attacks
    assert [getattr(a, "n_target_classes", None) for a in inner[1:3]] == [n_targets, n_targets]


def test_apgd_t_on_a_100_class_model(seeded):
    from weat_core.models import create_model

    model = create_model("weatnet_tiny", num_classes=100).eval()
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 100, (4,))
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified, so APGD-T attacks every point
    x_adv = TorchAttack("apgd-t", steps=2)(model, x, y)
    assert (x_adv - x).abs().max() <= EPS + TOL


def test_apgd_max_loss_moves_every_image(trained_tiny, batch):
    """keep="max-loss": where APGD fails, torchattacks hands back the natural image; the energy
    pictures want the attack's highest-loss point instead, for every image."""
    x, y = batch
    eps = 1 / 255  # small enough that some images survive
    adv = TorchAttack("apgd-ce", eps=eps, steps=5)(trained_tiny, x, y)
    top = TorchAttack("apgd-ce", eps=eps, steps=5, keep="max-loss")(trained_tiny, x, y)
    survived = (adv == x).flatten(1).all(1)
    assert survived.any() and not survived.all()
    assert not (top == x).flatten(1).all(1).any()  # every image moved
    assert (top - x).abs().max() <= eps + TOL and top.min() >= 0 and top.max() <= 1
    assert (ce(trained_tiny, top, y) > ce(trained_tiny, x, y))[survived].float().mean() >= 0.9
    with pytest.raises(ValueError, match="best-loss"):
        TorchAttack("apgd-t", keep="max-loss")
    with pytest.raises(ValueError, match="keep"):
        TorchAttack("apgd-ce", keep="final")


def test_torch_attack_validation(tiny_model):
    with pytest.raises(ValueError):
        TorchAttack("deepfool")
    with pytest.raises(ValueError):
        TorchAttack("apgd-ce", norm="l1")
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    with pytest.raises(ValueError):
        TorchAttack("apgd-t", steps=1)(tiny_model, x, y, target=y)


# --------------------------------------------------------------------------- the model is left as found


def _mixed_mode(model):
    """Train mode, except the normaliser and a few feature layers (one BatchNorm among them)."""
    model.train()
    model.normalize.eval()
    for i, layer in enumerate(model.net.features):
        if i % 3 == 0:
            layer.eval()
    return model


MODES = {"train": lambda m: m.train(), "eval": lambda m: m.eval(), "mixed": _mixed_mode}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_take_channels_last_batches(name, trained_tiny, batch, seeded):
    """The app runs its CPU models and batches channels_last (`lens.prepare`); torchattacks' FAB
    reshaped such a batch's input gradients with .view and failed."""
    model = copy.deepcopy(trained_tiny).to(memory_format=torch.channels_last)
    x, y = batch
    x = x.contiguous(memory_format=torch.channels_last)
    x_adv = ATTACKS[name](model, x, y)
    eps = ATTACKS[name].eps
    dist = (x_adv - x).flatten(1).norm(dim=1) if ATTACKS[name].norm == "l2" else (x_adv - x).abs().flatten(1).amax(1)
    assert x_adv.shape == x.shape and bool((dist <= eps + TOL).all())


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_leaves_model_untouched(name, mode, trained_tiny, batch, seeded):
    model = MODES[mode](copy.deepcopy(trained_tiny))
    flags = [m.training for m in model.modules()]
    if mode == "mixed":
        assert any(flags) and not all(flags)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # parameters and buffers
    x, y = batch
    ATTACKS[name](model, x, y)
    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    assert list(after) == list(state)
    changed = [k for k in state if not torch.equal(after[k], state[k])]
    assert not changed, f"{name} changed {changed}"
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_attack_keeps_existing_param_grads(trained_tiny, batch):
    model = copy.deepcopy(trained_tiny)
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for name in ("pgd-linf", "fab-t", "apgd-ce"):
        ATTACKS[name](model, x, y)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


@pytest.mark.parametrize("name", ["pgd-linf", "trades", "energy-lower", "apgd-ce", "fab-t"])
def test_attack_works_under_no_grad(name, trained_tiny, batch, seeded):
    x, y = batch
    with torch.no_grad():  # evaluation loops often run attacks inside no_grad
        x_adv = ATTACKS[name](trained_tiny, x, y)
    assert (x_adv - x).abs().max() > 0


def test_torch_attack_does_not_reset_global_rng(trained_tiny, batch):
    x, y = batch
    torch.manual_seed(123)
    torch.rand(1)
    expected = torch.rand(5)  # the draws right after one rand(1) from seed 123
    torch.manual_seed(123)
    torch.rand(1)
    TorchAttack("apgd-ce", steps=2)(trained_tiny, x, y)  # APGD calls torch.manual_seed(seed) inside
    assert torch.equal(torch.rand(5), expected)


def test_eval_mode_restores_each_flag_on_error(tiny_model):
    model = _mixed_mode(tiny_model)
    flags = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == flags


def test_pgd_loop_crafts_with_frozen_parameters_and_restores_them(tiny_model, batch, seeded):
    """The attacks take input gradients with the parameters' requires_grad off (a compiled
    model's backward then leaves out the weight gradients); afterwards each parameter has its
    own flag back, also after an error, and a parameter that was frozen before stays frozen."""
    from weat_core.attacks.base import frozen_params

    model = copy.deepcopy(tiny_model)
    fixed = next(model.parameters())
    fixed.requires_grad_(False)
    seen = []
    PGD(steps=2)(model, *batch, callback=lambda i, xa, lo: seen.append([p.requires_grad for p in model.parameters()]))
    assert seen and not any(any(flags) for flags in seen)
    assert [p.requires_grad for p in model.parameters()] == [p is not fixed for p in model.parameters()]
    with pytest.raises(RuntimeError):
        with frozen_params(model):
            raise RuntimeError("boom")
    assert [p.requires_grad for p in model.parameters()] == [p is not fixed for p in model.parameters()]


# --------------------------------------------------------------------------- callbacks


@pytest.mark.parametrize("name", STEPPED)
def test_callback_sees_every_step(name, trained_tiny, batch, seeded):
    attack = ATTACKS[name]
    x, y = batch
    calls = []
    x_adv = attack(trained_tiny, x, y, callback=lambda step, xa, logits: calls.append((step, xa.clone(), logits)))
    assert [c[0] for c in calls] == list(range(attack.steps + 1))
    for step, xa, logits in calls:
        assert xa.shape == x.shape and logits.shape == (x.shape[0], 10)
        assert not xa.requires_grad and not logits.requires_grad
    assert torch.equal(calls[-1][1], x_adv)
    with torch.no_grad():
        torch.testing.assert_close(calls[-1][2], trained_tiny(x_adv))
        torch.testing.assert_close(calls[0][2], trained_tiny(calls[0][1]))  # logits belong to that step's x_adv


@pytest.mark.parametrize("name", ["apgd-ce", "square"])
def test_torch_attack_callback_gets_the_result(name, trained_tiny, batch):
    x, y = batch
    calls = []
    x_adv = ATTACKS[name](trained_tiny, x, y, callback=lambda *a: calls.append(a))
    assert len(calls) >= 1
    step, xa, logits = calls[-1]
    assert torch.equal(xa, x_adv) and logits.shape == (x.shape[0], 10)


# --------------------------------------------------------------------------- make_attack


@pytest.mark.parametrize(
    "spec, cls, fields, target",
    [
        ("pgd20", PGD, dict(steps=20, targeted=False, loss="ce", alpha=2 / 255), None),
        ("PGD20", PGD, dict(steps=20, targeted=False), None),
        ("pgd10-t", PGD, dict(steps=10, targeted=True, loss="ce"), None),
        ("pgd10-ll", PGD, dict(steps=10, targeted=True, loss="ce"), "least-likely"),
        ("cw20", PGD, dict(steps=20, targeted=False, loss="cw"), None),
        ("trades10", TradesAttack, dict(steps=10, alpha=2 / 255), None),
        ("energy-lower10", EnergyAttack, dict(steps=10, direction="lower"), None),
        ("energy-raise5", EnergyAttack, dict(steps=5, direction="raise"), None),
        ("aa", TorchAttack, dict(name="autoattack"), None),
        ("aa-fast", TorchAttack, dict(name="autoattack-fast"), None),
        ("apgd-ce", TorchAttack, dict(name="apgd-ce"), None),
        ("apgd-t", TorchAttack, dict(name="apgd-t"), None),
        ("fab-t", TorchAttack, dict(name="fab-t"), None),
        ("square", TorchAttack, dict(name="square"), None),
    ],
)
def test_make_attack_parses(spec, cls, fields, target):
    attack, t = make_attack(spec, eps=4 / 255)
    assert type(attack) is cls
    for k, v in fields.items():
        assert getattr(attack, k) == v, k
    assert attack.eps == 4 / 255 and attack.norm == "linf"
    assert t == target


def test_make_attack_l2_step():
    attack, _ = make_attack("pgd10", eps=0.5, norm="l2")
    assert attack.norm == "l2" and attack.alpha == pytest.approx(0.125)


@pytest.mark.parametrize("spec", ["", "pgd", "pgdx", "pgd-10", "pgd10-x", "trades10-t", "energy-lower10-ll",
                                  "energy10", "autoattack-slow", "10pgd", "pgd 10"])
def test_make_attack_rejects_garbage(spec):
    with pytest.raises(WeatError, match="use pgdN"):
        make_attack(spec)


@pytest.mark.parametrize("spec", ["pgd20", "apgd-ce", "trades10"])
def test_make_attack_rejects_a_negative_radius_or_a_zero_step(spec):
    # a negative ε was a RuntimeError from the random start, in the middle of an evaluation
    with pytest.raises(WeatError, match="ε must be at least 0"):
        make_attack(spec, eps=-1 / 255)
    with pytest.raises(WeatError, match="step must be above 0"):
        make_attack(spec, eps=8 / 255, alpha=0.0)
    make_attack(spec, eps=0.0, norm="l2")  # ε = 0 (the step ε/4 = 0 with it) is a clean pass, not an error


@pytest.mark.parametrize("cls", [PGD, TradesAttack, EnergyAttack])
def test_attack_classes_refuse_a_budget_no_one_can_mean(cls):
    for bad, match in ((dict(eps=-0.1), "radius ε must be at least 0"), (dict(alpha=0.0), "step must be above 0"),
                       (dict(steps=-1), "steps must be at least 0"), (dict(norm="l1"), "norm must be")):
        with pytest.raises(ValueError, match=match):
            cls(**bad)
    cls(eps=0.0, alpha=0.0)  # no radius: a clean pass, whatever the step
    cls(steps=0)


def test_attacks_are_hashable():
    assert len({PGD(), PGD(), TradesAttack(), EnergyAttack(), TorchAttack("apgd-ce")}) == 4


def test_attack_title_reads_every_make_attack_name():
    """The names model cards give the attacks `make_attack` knows; an unknown name stays as it is."""
    from weat_core.attacks import attack_title

    assert [attack_title(n) for n in ("clean", "pgd20", "pgd20-t", "pgd10-ll", "cw20", "trades10", "energy-lower5",
                                      "aa", "aa-fast", "apgd-ce", "fab-t", "square", "no-such")] == [
        "clean", "PGD-20", "targeted PGD-20", "PGD-10 at the least likely class", "CW-20", "TRADES-KL-10",
        "energy-lowering PGD-5", "AutoAttack", "AutoAttack (APGD-CE and APGD-T)", "APGD-CE", "FAB-T", "Square",
        "no-such"]

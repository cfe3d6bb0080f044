"""weat_core.lens: the app's analyses, and untrusted input (uploads, checkpoints, Hub ids)."""

from __future__ import annotations

import copy
import io
import json
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from weat_core import WeatError, lens
from weat_core.attacks import PGD, TradesAttack
from weat_core.energy import energy
from weat_core.lens.attack_specs import SQUARE_QUERIES_PER_STEP


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prepare_copies_and_matches(trained_tiny, synthetic_batch):
    x, _ = synthetic_batch
    before = _params(trained_tiny)
    fast = lens.prepare(trained_tiny, channels_last=True)
    assert fast is not trained_tiny and not fast.training
    assert all(not p.requires_grad for p in fast.parameters())
    assert any(p.requires_grad for p in trained_tiny.parameters())  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(fast(x), trained_tiny(x), atol=1e-4, rtol=1e-4)
    assert _same(before, _params(trained_tiny))


def test_energy_landscape(trained_tiny, synthetic_batch):
    x, y = synthetic_batch
    model = lens.prepare(trained_tiny)
    before = _params(model)
    calls = []
    res = lens.energy_landscape(model, x, y, {"PGD": lens.attack_from("PGD", steps=5),
                                              "PGD-T": lens.attack_from("PGD-T", steps=5)},
                                batch_size=16, callback=lambda d, t, n: calls.append((d, t, n)))
    assert _same(before, _params(model))
    assert list(res.summary["attack"]) == ["natural", "PGD", "PGD-T"]
    assert len(res.per_image) == 3 * len(y)
    assert calls[-1][0] == calls[-1][1] == 6  # 3 names × 2 batches
    s = res.summary.set_index("attack")
    assert s.loc["natural", "accuracy"] >= 0.9
    assert s.loc["PGD", "accuracy"] < s.loc["natural", "accuracy"]
    assert s.loc["natural", "shift E(x)"] == 0
    # E(x,y) of the true class rises under both attacks (MISSION.md, observation 1)
    assert s.loc["PGD", "shift E(x,y)"] > 0 and s.loc["PGD-T", "shift E(x,y)"] > 0
    nat = res.per_image[res.per_image.attack == "natural"]
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(nat["E(x)"].to_numpy()), energy(model(x)), atol=1e-4, rtol=1e-4)


def test_strength_sweep_is_the_landscape_at_each_eps(trained_tiny, synthetic_batch):
    """Each ε's rows are exactly `energy_landscape` + `observation1` with the sweep's PGD
    settings (α = max(2/255, 2.5·ε/steps)); a stronger attack leaves fewer images correct."""
    from weat_core.attacks import PGD

    x, y = synthetic_batch
    calls = []
    df = lens.strength_sweep(trained_tiny, x, y, eps_values=(0.1, 32), steps=4, batch_size=16,
                             callback=lambda d, t, n: calls.append((d, t, n)))
    assert list(zip(df["eps"], df["attack"])) == [(0.1, "PGD"), (0.1, "PGD-T"), (32, "PGD"), (32, "PGD-T")]
    assert calls[-1][:2] == (12, 12) and "ε = 32/255" in calls[-1][2]  # 2 ε × 3 names × 2 batches
    pgd = df[df["attack"] == "PGD"].set_index("eps")
    assert pgd.loc[32, "accuracy"] < pgd.loc[0.1, "accuracy"]
    eps, alpha = 32 / 255, 2.5 * (32 / 255) / 4
    land = lens.energy_landscape(trained_tiny, x, y, {"PGD": (PGD(eps=eps, alpha=alpha, steps=4), None),
                                                      "PGD-T": (PGD(eps=eps, alpha=alpha, steps=4, targeted=True), None)},
                                 batch_size=16)
    ob = lens.observation1(land.summary).set_index("attack")
    for a in ("PGD", "PGD-T"):
        row = df[(df["eps"] == 32) & (df["attack"] == a)].iloc[0]
        assert row["shift E(x)"] == pytest.approx(ob.loc[a, "shift E(x)"]) and row["verdict"] == ob.loc[a, "verdict"]
    # stopped as soon as the second ε has begun: only the first ε's rows
    seen: list[str] = []
    part = lens.strength_sweep(trained_tiny, x, y, eps_values=(2, 32), steps=2, batch_size=16,
                               callback=lambda d, t, label: seen.append(label),
                               should_stop=lambda: any("32/255" in s for s in seen))
    assert list(part["eps"].unique()) == [2]


def test_steps_sweep_is_the_landscape_at_each_number_of_steps(trained_tiny, synthetic_batch):
    """Each row of `steps_sweep` is `energy_landscape` + `observation1` for PGD with that many
    steps of 2/255 at the one ε; more steps leave no more images correct; the summary names
    steps, not ε."""
    from weat_core.attacks import PGD

    x, y = synthetic_batch
    calls = []
    df = lens.steps_sweep(trained_tiny, x, y, steps_values=(1, 6), eps=4, batch_size=16,
                          callback=lambda d, t, n: calls.append(n))
    assert list(zip(df["steps"], df["attack"])) == [(1, "PGD"), (1, "PGD-T"), (6, "PGD"), (6, "PGD-T")]
    assert set(df["eps"]) == {4.0} and "6 steps" in calls[-1]
    pgd = df[df["attack"] == "PGD"].set_index("steps")
    assert pgd.loc[6, "accuracy"] <= pgd.loc[1, "accuracy"]
    land = lens.energy_landscape(trained_tiny, x, y, {"PGD": (PGD(eps=4 / 255, alpha=2 / 255, steps=6), None),
                                                      "PGD-T": (PGD(eps=4 / 255, alpha=2 / 255, steps=6, targeted=True), None)},
                                 batch_size=16)
    ob = lens.observation1(land.summary).set_index("attack")
    for a in ("PGD", "PGD-T"):
        row = df[(df["steps"] == 6) & (df["attack"] == a)].iloc[0]
        assert row["shift E(x)"] == pytest.approx(ob.loc[a, "shift E(x)"]) and row["verdict"] == ob.loc[a, "verdict"]
    text = lens.sweep_summary(df, by="steps")
    assert "1 step ✗" in text or "1 step ✓" in text or "1 step ≈" in text
    assert "6 steps" in text and "/255" not in text
    fake = pd.DataFrame({"steps": [1, 2, 5], "attack": "PGD", "verdict": ["fails", "holds", "holds"],
                         "accuracy": [0.4, 0.1, 0.0]})
    assert lens.lowers_from(fake, by="steps") == 2 and "from 2 steps on" in lens.sweep_summary(fake, by="steps")


def test_observation1_verdicts(trained_tiny, synthetic_batch):
    """share E(x)↓ pairs every x* with its own natural image; observation1 keeps the attacks
    with an expected direction and judges the sign of the mean shift."""
    x, y = synthetic_batch
    res = lens.energy_landscape(trained_tiny, x, y, {k: lens.attack_from(k, steps=4) for k in ("PGD", "PGD-T", "E(x)↓")})
    e = res.per_image.pivot(index="index", columns="attack", values="E(x)")
    s = res.summary.set_index("attack")
    for k in ("PGD", "PGD-T", "E(x)↓"):
        assert s.loc[k, "share E(x)↓"] == pytest.approx(float((e[k] < e["natural"]).mean()))
    assert s.loc["natural", "share E(x)↓"] == 0
    assert s.loc["E(x)↓", "share E(x)↓"] > 0.9  # the energy attack lowers E(x) by construction
    assert s.loc["PGD", "unchanged"] == 0 and np.isnan(s.loc["natural", "unchanged"])
    obs = lens.observation1(res.summary).set_index("attack")
    assert list(obs.index) == ["PGD", "PGD-T"]  # E(x)↓ is not a test of the observation
    assert list(obs["expected"]) == ["lower", "higher"]
    for k in obs.index:
        d = (e[k] - e["natural"]).to_numpy()
        se = d.std(ddof=1) / np.sqrt(len(d))
        assert obs.loc[k, "shift E(x)"] == pytest.approx(d.mean(), abs=1e-5)
        assert obs.loc[k, "se"] == pytest.approx(se, rel=1e-4)
        signed = -d.mean() if k == "PGD" else d.mean()
        want = "holds" if signed > 2 * se else "fails" if signed < -2 * se else "unclear"
        assert obs.loc[k, "verdict"] == want
    assert lens.observation1(pd.DataFrame()).empty
    # the verdict rule on hand-made summaries: beyond ±2 standard errors, or unclear
    fake = pd.DataFrame({"attack": ["PGD", "PGD-T", "CW"], "shift E(x)": [-0.3, 0.01, -0.5],
                         "shift E(x) se": [0.1, 0.1, 0.1], "share E(x)↓": [0.8, 0.5, 0.9], "unchanged": [0.0] * 3})
    assert list(lens.observation1(fake)["verdict"]) == ["holds", "unclear", "fails"]


def test_landscape_apgd_shows_where_every_image_went(trained_tiny, synthetic_batch):
    """APGD-CE in the landscape keeps its highest-loss point for every image; APGD-T hands the
    natural image back where it fails, and the summary says how often."""
    x, y = synthetic_batch
    atk = {k: lens.attack_from(k, eps=1 / 255, steps=3) for k in ("APGD-CE", "APGD-T")}
    res = lens.energy_landscape(trained_tiny, x[:16], y[:16], atk)
    s = res.summary.set_index("attack")
    survived = s.loc["APGD-T", "accuracy"]
    assert s.loc["APGD-CE", "unchanged"] == 0
    # the images it failed on (all 16 start correctly classified, so none is skipped as already wrong)
    assert s.loc["APGD-T", "unchanged"] == pytest.approx(survived)
    assert 0 < survived < 1


def test_landscape_offers_every_attack_of_observation_1(trained_tiny, synthetic_batch):
    """FAB-T and Square (MISSION.md: they move E(x) higher) run in the landscape with the app's
    steps setting: FAB-T for that many steps, Square for 100 queries a step. Both hand back the
    natural image wherever they do not flip it, and the summary judges them against 'higher'."""
    fab, _ = lens.attack_from("FAB-T", eps=1 / 255, steps=4)
    square, _ = lens.attack_from("Square", eps=1 / 255, steps=3)
    assert (fab.name, fab.steps, fab.eps) == ("fab-t", 4, 1 / 255)
    assert (square.name, square.n_queries) == ("square", 3 * SQUARE_QUERIES_PER_STEP)
    assert lens.EXPECTED_SHIFT["FAB-T"] == lens.EXPECTED_SHIFT["Square"] == "higher"
    # the torchattacks ones run in small batches, so progress and Stop come between them more often
    assert lens.batch_size_for(["PGD", "PGD-T", "CW"]) == 128 and lens.batch_size_for(["PGD", "Square"]) == 32
    x, y = synthetic_batch
    # prepared as the app prepares its models (channels_last on a CPU), where FAB-T once failed
    res = lens.energy_landscape(lens.prepare(trained_tiny), x[:16], y[:16],
                                {"FAB-T": (fab, None), "Square": (square, None)})
    s = res.summary.set_index("attack")
    per = res.per_image[res.per_image["attack"] != "natural"]
    for name in ("FAB-T", "Square"):
        flipped = (~per.loc[per["attack"] == name, "correct"].to_numpy()).mean()
        assert 0 < flipped < 1  # flips some images, not all: a real attack within a small ε
        # every image it did not flip comes back as it was (all 16 start correctly classified)
        assert s.loc[name, "unchanged"] == pytest.approx(1 - flipped)
    # the groups they hand back whole say so, where a bare +0.000 would puzzle
    said = lens.outcome_summary(lens.shift_by_outcome(res.per_image), "FAB-T")
    assert "stays correct (" in said and "all handed back unchanged) +0.000" in said
    assert "flipped (" in said and said.count("handed back") == 1
    obs = lens.observation1(res.summary).set_index("attack")
    assert list(obs.index) == ["FAB-T", "Square"] and set(obs["expected"]) == {"higher"}


def test_landscape_targets_depend_on_the_seed_only(trained_tiny, synthetic_batch, monkeypatch):
    """Targeted PGD's random classes are drawn once for all images from a generator seeded with
    `seed` (the CPU's, whatever the model's device): the same for any batch size and whatever ran
    before, and the same classes `evaluate` aims at with that seed."""
    from weat_core.evaluate import evaluate

    x, y = synthetic_batch
    real = PGD.__call__
    seen: list[torch.Tensor] = []

    def spy(self, model, xb, yb, target=None, callback=None):
        if self.targeted:
            seen.append(target.clone())
        return real(self, model, xb, yb, target=target, callback=callback)

    monkeypatch.setattr(PGD, "__call__", spy)

    def targets(attacks: list[str], batch_size: int, seed: int) -> torch.Tensor:
        seen.clear()
        lens.energy_landscape(trained_tiny, x, y, {a: a for a in attacks}, batch_size=batch_size, seed=seed)
        return torch.cat(seen)

    t = targets(["PGD-T"], 8, 0)
    assert t.shape == y.shape and bool((t != y).all())
    assert torch.equal(targets(["PGD", "PGD-T"], 5, 0), t)  # other batches, an attack before it: the same
    assert not torch.equal(targets(["PGD-T"], 8, 1), t)  # another seed, other classes
    seen.clear()
    evaluate(trained_tiny, x, y, ["pgd1-t"], batch_size=16, seed=0)
    assert torch.equal(torch.cat(seen), t)


def test_energy_landscape_stops(trained_tiny, synthetic_batch):
    x, y = synthetic_batch
    res = lens.energy_landscape(trained_tiny, x, y, {"PGD": "PGD"}, batch_size=8, should_stop=lambda: True)
    assert res.stopped and res.per_image.empty


@pytest.mark.parametrize("name, spec", [("Square", "Square"), ("PGD", "pgd100")])
def test_a_stop_takes_effect_inside_an_attack_s_batch(trained_tiny, synthetic_batch, name, spec):
    """Square makes 1,000 queries a batch, PGD-100 a hundred steps; the landscape reports progress
    and asks `should_stop` between their forward passes, so a stop ends the batch after one, not
    at its end. The natural images, finished before, are kept; the model is left as found."""
    x, y = synthetic_batch
    asked, calls = [], []

    def should_stop() -> bool:  # no before the natural batch and before the attack's, yes inside it
        asked.append(len(trained_tiny._forward_pre_hooks))  # the test's own hook only, even mid-attack
        return len(asked) > 2

    forwards, mode = [], trained_tiny.training
    hook = trained_tiny.register_forward_pre_hook(lambda m, a: forwards.append(1))
    try:
        res = lens.energy_landscape(trained_tiny, x, y, {name: spec}, batch_size=len(x), should_stop=should_stop,
                                    callback=lambda d, t, label: calls.append((d, label)))
    finally:
        hook.remove()
    assert res.stopped and set(res.per_image["attack"]) == {"natural"}
    assert (1, name) in calls  # reported from inside the batch: one done (the natural images), the attack running
    assert len(forwards) < 10  # the whole batch: about 1,000 queries (fewer only once all flip), or 101 passes
    assert trained_tiny.training == mode and not any(p.grad is not None for p in trained_tiny.parameters())
    assert asked == [1, 1, 1]  # the landscape hooks nothing onto the model, which the app shares between sessions


def test_attack_trajectory(trained_tiny, synthetic_batch):
    x, y = synthetic_batch
    t = lens.attack_trajectory(trained_tiny, x[0], int(y[0]), lens.attack_from("PGD", steps=8), classes="abcdefghij")
    assert list(t.steps["step"]) == list(range(10))  # natural, random start, 8 steps
    assert t.frames.shape == (10, 3, 32, 32)
    assert torch.equal(t.frames[0], x[:1][0])
    assert t.perturbation.abs().max() <= 8 / 255 + 1e-6
    assert t.steps["E(x,y)"].iloc[-1] > t.steps["E(x,y)"].iloc[0]
    assert list(t.top_before.columns) == ["class", "index", "prob"] and len(t.top_before) == 5
    tt = lens.attack_trajectory(trained_tiny, x[0], int(y[0]), lens.attack_from("PGD-T", steps=8), target=3)
    assert tt.target == 3 and "E(x,t)" in tt.steps
    assert tt.steps["E(x,t)"].iloc[-1] < tt.steps["E(x,t)"].iloc[0]  # the target's energy is pulled down


def test_energy_plane_passes_through_the_image_and_both_attacks(trained_tiny, synthetic_batch):
    """The plane x + u·d1 + v·d2 holds the natural image at (0, 0) and the two attacked images at
    (1, 0) and (0, 1): E(x) there equals the trajectories' own energies; each point is E(x) of the
    clipped image; the spread is max − min inside |u|, |v| ≤ 1."""
    from weat_core.energy import energy, joint_energy

    x, y = synthetic_batch
    pgd = lens.attack_trajectory(trained_tiny, x[0], int(y[0]), lens.attack_from("PGD", steps=5))
    tgt = lens.attack_trajectory(trained_tiny, x[0], int(y[0]), lens.attack_from("PGD-T", steps=5), target=3)
    pl = lens.energy_plane(trained_tiny, x[0], pgd.perturbation, tgt.perturbation, y=int(y[0]), n=13)
    assert pl.energy.shape == pl.joint.shape == pl.pred.shape == (13, 13) and len(pl.u) == len(pl.v) == 13
    assert pl.at(0, 0) == pytest.approx(pgd.steps["E(x)"].iloc[0], abs=1e-4)
    assert pl.at(1, 0) == pytest.approx(pgd.steps["E(x)"].iloc[-1], abs=1e-4)
    assert pl.at(0, 1) == pytest.approx(tgt.steps["E(x)"].iloc[-1], abs=1e-4)
    # one point off the axes, by hand: row i follows v, column j follows u
    i, j = 2, 11
    pt = (x[:1] + pl.u[j] * pgd.perturbation + pl.v[i] * tgt.perturbation).clamp(0, 1)
    with torch.no_grad():
        lg = trained_tiny(pt)
    assert pl.energy[i, j] == pytest.approx(float(energy(lg)), abs=1e-4)
    assert pl.joint[i, j] == pytest.approx(float(joint_energy(lg, y[:1])), abs=1e-4)
    assert pl.pred[i, j] == int(lg.argmax())
    inside = pl.energy[2:11, 2:11]  # u, v ∈ [−1, 1] on the 13-point grid over [−1.5, 1.5]
    assert pl.spread() == pytest.approx(float(inside.max() - inside.min()))
    assert pl.spread(1.5) >= pl.spread() > 0
    # a bright image pushed further than [0, 1] allows is clipped, and says how much
    white = torch.ones(3, 32, 32)
    assert lens.energy_plane(trained_tiny, white, pgd.perturbation, tgt.perturbation, n=3).clipped > 0.2
    assert lens.energy_plane(trained_tiny, white, pgd.perturbation, tgt.perturbation, n=3).joint is None
    with pytest.raises(ValueError, match="n ≥ 2"):
        lens.energy_plane(trained_tiny, x[0], pgd.perturbation, tgt.perturbation, n=1)


def test_plane_spreads_is_the_span_of_each_image_s_plane(trained_tiny, synthetic_batch):
    """Per image, max − min of E(x) on the plane through it and its PGD and PGD-T images over
    |u|, |v| ≤ 1: equal to `energy_plane(...).spread()` on the same perturbations; seeded."""
    from weat_core.attacks import make_attack, random_targets

    x, y = synthetic_batch[0][:6], synthetic_batch[1][:6]
    sp = lens.plane_spreads(trained_tiny, x, y, steps=3, n=5, seed=1, batch_size=4)
    assert sp.shape == (6,) and (sp > 0).all()
    assert np.array_equal(sp, lens.plane_spreads(trained_tiny, x, y, steps=3, n=5, seed=1, batch_size=4))
    # the same planes by hand for the first batch of four: the random starts drawn in the same order,
    # the target classes drawn once for all six images from a generator seeded with the seed
    torch.manual_seed(1)
    d1 = make_attack("pgd3", eps=8 / 255)[0](trained_tiny, x[:4], y[:4]) - x[:4]
    t = random_targets(y, 10, generator=torch.Generator().manual_seed(1))[:4]
    d2 = make_attack("pgd3-t", eps=8 / 255)[0](trained_tiny, x[:4], y[:4], target=t) - x[:4]
    for j in range(4):
        pl = lens.energy_plane(trained_tiny, x[j], d1[j], d2[j], n=5, span=1.0)
        assert sp[j] == pytest.approx(pl.spread(), abs=1e-4)


def test_trades_identity_on_real_images(trained_tiny, cifar_tarball):
    """KL(p(·|x) ‖ p(·|x*)) = E_{k∼p(·|x)}[E(x*,k) − E(x,k)] + E(x) − E(x*), on CIFAR-10 images."""
    from weat_core.data import load_split

    s = load_split(cifar_tarball, "test", limit=16)
    dec = lens.trades_decomposition(trained_tiny, s.float(), s.y, attack=TradesAttack(steps=3))
    assert len(dec) == 16
    assert dec["|error|"].max() < 1e-9
    np.testing.assert_allclose(dec["KL"], dec["cross term"] + dec["marginal term"], atol=1e-9)
    assert (dec["KL"] >= -1e-12).all()
    np.testing.assert_allclose(dec["marginal term"], dec["E(x)"] - dec["E(x*)"], atol=1e-9)


def test_trades_identity_synthetic(trained_tiny, synthetic_batch):
    x, y = synthetic_batch
    dec = lens.trades_decomposition(trained_tiny, x, y, attack=TradesAttack(steps=5))
    assert dec["|error|"].max() < 1e-9 and dec["KL"].max() > 1e-4  # a real, non-trivial KL


def test_explorer_and_decomposition_report_their_progress_and_keep_their_results(trained_tiny, synthetic_batch):
    """The attack explorer's trajectories and plane and the TRADES decomposition call `callback(done,
    total, name)` as they go (where the app's progress bar and time limit act), up to done == total, and
    the results are those without a callback."""
    x, y = synthetic_batch
    calls = {}

    def cb(key):
        return lambda done, total, name="": calls.setdefault(key, []).append((done, total, name))

    spec = lens.attack_from("PGD", steps=4)
    t = lens.attack_trajectory(trained_tiny, x[0], int(y[0]), spec, callback=cb("traj"))
    assert [d for d, _, _ in calls["traj"]] == [0, 1, 2, 3, 4] and {n for _, n, _ in calls["traj"]} == {4}
    assert t.steps.equals(lens.attack_trajectory(trained_tiny, x[0], int(y[0]), spec).steps)

    pl = lens.energy_plane(trained_tiny, x[0], t.perturbation, -t.perturbation, n=9, batch_size=20, callback=cb("plane"))
    assert [d for d, _, _ in calls["plane"]] == [20, 40, 60, 80, 81] and {n for _, n, _ in calls["plane"]} == {81}
    assert np.array_equal(pl.energy, lens.energy_plane(trained_tiny, x[0], t.perturbation, -t.perturbation, n=9).energy)

    dec = lens.trades_decomposition(trained_tiny, x[:10], y[:10], attack=TradesAttack(steps=3), batch_size=4,
                                    callback=cb("dec"))
    done = [d for d, _, _ in calls["dec"]]
    assert done == sorted(done) and done[-1] == 9 and {(n, s) for _, n, s in calls["dec"]} == {(9, "TRADES attack")}
    pd.testing.assert_frame_equal(dec, lens.trades_decomposition(trained_tiny, x[:10], y[:10],
                                                                 attack=TradesAttack(steps=3), batch_size=4))


def test_weights():
    c = lens.weight_curve(-5, 5, 11)
    assert c["w"].iloc[5] == pytest.approx(1 / np.log(2))  # w(0) = 1/softplus(0)
    assert c["w"].iloc[0] == pytest.approx(c["w"].iloc[-1])  # symmetric in E
    assert (np.diff(c["w"].iloc[5:]) < 0).all()


def test_weights_of(trained_tiny, synthetic_batch):
    x, y = synthetic_batch
    w = lens.weights_of(trained_tiny, x, y)
    assert len(w) == len(y) and (np.diff(w["w"]) <= 0).all()
    assert set(w["index"]) == set(range(len(y)))


def test_zoo_table(trained_tiny, tiny_model, synthetic_batch):
    x, y = synthetic_batch
    per_image: dict = {}
    df = lens.zoo_table({"trained": trained_tiny, "random": tiny_model}, x[:16], y[:16], attacks=("pgd5",),
                        per_image=per_image)
    assert list(df["model"]) == ["trained", "random"]
    assert {"clean_acc", "pgd5_acc", "ΔE", "|ΔE|"} <= set(df.columns)
    assert df.loc[0, "clean_acc"] >= 0.9
    # per image, as the table counts them; and the random model against the trained one, paired
    assert set(per_image) == {"trained", "random"} and len(per_image["trained"]["clean"]) == 16
    assert sum(per_image["trained"]["clean"]) / 16 == df.loc[0, "clean_acc"]
    pairs = lens.paired_table(per_image, "trained")
    assert list(pairs["measure"]) == ["clean", "pgd5"] and list(pairs["model"]) == ["random", "random"]
    clean = pairs.iloc[0]
    assert clean["vs trained"] == pytest.approx(100 * (df.loc[1, "clean_acc"] - df.loc[0, "clean_acc"]))
    assert clean["right only for trained"] - clean["right only for this"] == \
        round(16 * (df.loc[0, "clean_acc"] - df.loc[1, "clean_acc"]))
    assert clean["verdict"] == "behind"  # 90 % or more against chance, on 16 images


def test_recorded_table_reads_stored_metrics_only():
    infos = [{"name": "a", "arch": "weatnet_s", "method": "sat", "dataset": "cifar10", "n": 2000, "clean_acc": 0.6,
              "pgd20_acc": 0.3, "energy_mean": {"clean": -3.0, "pgd20": -2.8}, "delta_e": {"pgd20": -0.2}},
             {"name": "b", "arch": "weatnet_s", "method": "standard", "dataset": "cifar10", "test_pgd_acc": 0.1}]
    infos[0]["obs1_sweep"] = {"n": 10, "steps": 2, "rows": [  # as `sweep --store` writes it
        {"eps": e, "attack": a, "verdict": v} for e, a, v in
        [(2.0, "PGD", "holds"), (2.0, "PGD-T", "holds"), (8.0, "PGD", "fails"), (8.0, "PGD-T", "holds"),
         (32.0, "PGD", "holds"), (32.0, "PGD-T", "fails"), (64.0, "PGD", "holds"), (64.0, "PGD-T", "fails")]]}
    infos[0]["obs1_attacks"] = {"n": 10, "eps": 8, "steps": 2, "rows": [  # as `landscape --store` writes it
        {"attack": a, "verdict": v} for a, v in [("PGD", "fails"), ("TRADES-KL", "unclear"), ("PGD-T", "holds"),
                                                 ("FAB-T", "holds")]]}
    df = lens.recorded_table(infos).set_index("model")
    assert df.loc["a", "Observation 1 holds for"] == "PGD-T, FAB-T" and df.loc["a", "Observation 1 fails for"] == "PGD"
    assert df.loc["b", "Observation 1 holds for"] != df.loc["b", "Observation 1 holds for"]  # none stored: NaN
    assert df.loc["a", "PGD lowers E(x) from ε (/255)"] == 32.0  # not 2: it fails again at 8
    assert np.isnan(df.loc["b", "PGD lowers E(x) from ε (/255)"])
    assert df.loc["a", "pgd20_acc"] == 0.3 and df.loc["a", "ΔE"] == -0.2 and df.loc["a", "|ΔE|"] == 0.2
    assert df.loc["a", "E(x) natural"] == -3.0
    assert np.isnan(df.loc["b", "ΔE"]) and df.loc["b", "test_pgd_acc"] == 0.1


def test_observation1_grid_counts_the_shift_in_standard_errors_the_expected_way():
    rows = [  # as `landscape --store` writes them
        {"attack": "PGD", "expected": "lower", "shift": 0.10, "se": 0.02, "verdict": "fails"},
        {"attack": "PGD-T", "expected": "higher", "shift": 0.06, "se": 0.02, "verdict": "holds"},
        {"attack": "Square", "expected": "higher", "shift": 0.0, "se": 0.0, "verdict": "unclear"},  # all handed back
        {"attack": "APGD-T", "expected": "higher", "shift": 0.01, "se": 0.0, "verdict": "holds"},
        {"attack": "E(x)↓", "expected": None, "shift": -1.0, "se": 0.1, "verdict": None}]  # no expected direction
    infos = [{"name": "a", "method": "sat", "obs1_attacks": {"rows": rows}},
             {"name": "b", "method": "standard"}]  # stores no landscape
    g = lens.observation1_grid(infos).set_index("attack")
    assert list(g.index) == ["PGD", "PGD-T", "Square", "APGD-T"] and set(g["model"]) == {"a"}
    assert g.loc["PGD", "z"] == pytest.approx(-5.0)  # raised where lower was expected: against it
    assert g.loc["PGD-T", "z"] == pytest.approx(3.0)
    assert g.loc["Square", "z"] == 0.0 and g.loc["APGD-T", "z"] == np.inf
    assert (g["verdict"] == ["fails", "holds", "unclear", "holds"]).all()
    assert lens.observation1_grid([{"name": "b"}]).empty


def test_gap_trend_is_spearmans_rho_over_the_robust_models():
    """Observation 3 across models: Spearman's ρ between robust accuracy and |ΔE|, the standard
    model left out. Golden values from the rank-difference formula 1 − 6 Σd² / (n (n² − 1))."""
    rows = [("s", "standard", 0.00, 8.4),  # left out: its huge gap would decide any trend
            ("a", "sat", 0.50, 0.10), ("b", "trades", 0.40, 0.20), ("c", "weat-adv", 0.30, 0.30),
            ("d", "sat", 0.20, 0.25)]
    table = pd.DataFrame(rows, columns=["model", "method", "pgd20_acc", "|ΔE|"])
    # accuracy ranks a4 b3 c2 d1, gap ranks a1 b2 c4 d3: d = 3, 1, -2, -2 → Σd² = 18 → ρ = 1 − 108/60
    trend = lens.gap_trend(table)
    assert trend["n"] == 4 and trend["rho"] == pytest.approx(1 - 6 * 18 / (4 * 15))
    # of the 24 orders of four, those with |ρ| ≥ 0.8: the two perfect ones and the three at ±0.8 each way
    assert trend["p"] == pytest.approx(8 / 24) and trend["verdict"] == "no clear trend"
    rising = table.assign(**{"|ΔE|": [8.4, 0.30, 0.20, 0.10, 0.05]})  # the gap grows with robustness
    assert lens.gap_trend(rising)["rho"] == pytest.approx(1.0)
    assert lens.gap_trend(rising)["p"] == pytest.approx(2 / 24)  # four models: never beyond chance
    flat = table.assign(**{"|ΔE|": [8.4, 0.10, 0.30, 0.30, 0.10]})  # ties: average ranks, ρ = 0
    assert lens.gap_trend(flat)["rho"] == pytest.approx(0.0) and lens.gap_trend(flat)["p"] == pytest.approx(1.0)
    assert lens.gap_trend(table.iloc[:3]) is None  # two robust models: no trend to speak of
    assert lens.gap_trend(table.drop(columns="|ΔE|")) is None
    six = pd.DataFrame({"model": list("uvwxyz"), "method": "trades", "pgd20_acc": np.linspace(0.2, 0.5, 6),
                        "|ΔE|": np.linspace(0.6, 0.1, 6)})
    assert lens.gap_trend(six)["p"] == pytest.approx(2 / 720) and lens.gap_trend(six)["verdict"] == "holds"
    against = lens.gap_trend(six.assign(**{"|ΔE|": np.linspace(0.1, 0.6, 6)}))
    assert against["rho"] == pytest.approx(1.0) and against["verdict"] == "runs against it"


def test_rank_corr_p_draws_match_the_exact_count():
    """Above seven values the p-value comes from seeded random pairings; it agrees with the
    count over all 362,880 orders of nine and never reaches 0."""
    import itertools

    a = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9], float)
    b = np.array([2, 1, 4, 3, 6, 5, 9, 7, 8], float)
    rho = 1 - 6 * np.sum((a - b) ** 2) / (9 * 80)  # 0.933…
    d2 = np.sum((np.array(list(itertools.permutations(a))) - b) ** 2, axis=1)  # (9!,) Σd² of every order
    exact = np.mean(np.abs(1 - 6 * d2 / (9 * 80)) >= rho - 1e-12)
    assert lens.rank_corr_p(a, b) == pytest.approx(exact, abs=0.003)
    assert 0 < lens.rank_corr_p(a, a) < 1e-3
    assert lens.rank_corr_p(a, a) == lens.rank_corr_p(a, a)  # seeded


def test_gap_trend_within_groups_models_trained_alike():
    """Pooled models trained differently can show a trend their groups do not: here each group
    of models trained alike has the paper's order (ρ = −1), while across groups the more robust
    group has the larger gaps (pooled ρ > 0). Models without a recipe are left out."""
    rows = [(f"{g}{i}", "trades", acc, gap) for g, base, gbase in (("p", 0.45, 0.5), ("w", 0.30, 0.1))
            for i, (acc, gap) in enumerate([(base, gbase + 0.2), (base + 0.02, gbase + 0.1), (base + 0.04, gbase)])]
    table = pd.DataFrame(rows + [("alone", "sat", 0.9, 0.9), ("w-std", "standard", 0.0, 8.0)],
                         columns=["model", "method", "pgd20_acc", "|ΔE|"])
    recipes = {m: ("preact" if m.startswith("p") else "weatnet") for m in table["model"] if m != "alone"}
    assert lens.gap_trend(table.iloc[:6])["rho"] > 0
    within = lens.gap_trend_within(table, recipes)
    assert [g["models"] for g in within["groups"]] == [["p0", "p1", "p2"], ["w0", "w1", "w2"]]  # no standard model
    assert all(g["rho"] == pytest.approx(-1.0) and g["p"] == pytest.approx(2 / 6) for g in within["groups"])
    # both groups perfect the paper's way: 2 of 6 orders each way per group → P(|mean ρ| = 1) = 2 · (1/6)² = 1/18
    assert within["rho"] == pytest.approx(-1.0) and within["n"] == 6
    assert within["p"] == pytest.approx(1 / 18) and within["verdict"] == "no clear trend"  # 36 orders: counted
    # three trios at −1, −1 and −0.5 (the shipped spans on the attack plane): of the 6³ = 216 combinations of
    # orders, 7 give a mean of −0.83 or lower (all three at −1, or two at −1 and one at −0.5) and 7 the mirror
    extra = pd.DataFrame([("q0", "sat", 0.20, 0.3), ("q1", "trades", 0.22, 0.1), ("q2", "mart", 0.24, 0.2)],
                         columns=table.columns)
    three = lens.gap_trend_within(pd.concat([table, extra]), {**recipes, "q0": "q", "q1": "q", "q2": "q"})
    assert sorted(g["rho"] for g in three["groups"]) == pytest.approx([-1, -1, -0.5])
    assert three["p"] == pytest.approx(14 / 216)
    # beyond 20,000 combinations (two groups of seven: 5,040² orders), seeded draws instead, (k + 1) / (draws + 1)
    big = pd.DataFrame([(f"{g}{i}", "trades", 0.3 + 0.01 * i, 0.5 - 0.01 * i + (0.02 * (i % 2) if g == "b" else 0))
                        for g in "ab" for i in range(7)], columns=table.columns)
    drawn = lens.gap_trend_within(big, {m: m[0] for m in big["model"]})
    assert 0 < drawn["p"] < 0.01 and drawn["p"] * 20_001 == pytest.approx(round(drawn["p"] * 20_001))
    assert lens.gap_trend_within(table, {"p0": 1, "p1": 1}) is None  # no group of three
    assert lens.gap_trend_within(table.drop(columns="model"), recipes) is None


def test_training_recipe_tells_models_trained_alike_apart():
    cfg = {"dataset": "cifar10", "arch": "weatnet_s", "arch_kwargs": {},
           "training": {"limit": 5000, "batch_size": 128, "lr": 0.05, "schedule": "step", "eps": 8 / 255,
                        "epochs": 50, "seed": 1, "method": "sat"}}
    other_method = {**cfg, "method": "trades", "training": {**cfg["training"], "method": "trades", "seed": 0}}
    assert lens.training_recipe(cfg) == lens.training_recipe(other_method)
    wider = {**cfg, "arch_kwargs": {"width": 48}}
    longer = {**cfg, "training": {**cfg["training"], "epochs": 100}}
    staged = {**cfg, "stages": [{}, {}]}
    assert len({lens.training_recipe(c) for c in (cfg, wider, longer, staged)}) == 4
    assert lens.training_recipe(cfg, length=False) == lens.training_recipe(longer, length=False)
    assert lens.training_recipe({}) == lens.training_recipe({"training": {}})  # an old config without settings


def test_training_log_and_phases(tmp_path):
    recs = []
    for e in range(1, 21):
        rob = 0.3 + 0.02 * e if e <= 12 else 0.54 - 0.02 * (e - 12)
        recs.append({"epoch": e, "lr": min(e, 5) / 5 * 0.1 * (1 if e <= 5 else (21 - e) / 16), "test_pgd_acc": rob,
                     "energy_nat_mean": -5.0, "energy_adv_mean": -5.0 + 0.03 * e})
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + "not json\n")
    df = lens.load_training_log(tmp_path)
    assert len(df) == 20 and "delta_e" in df
    ph = lens.training_phases(df)
    assert ph["best_epoch"] == 12 and ph["overfitting"]
    assert [p["name"][0] for p in ph["phases"]] == ["1", "2", "3"]
    assert ph["phases"][0]["end"] == 5
    assert lens.training_phases(df.assign(method="standard"))["phases"] == []  # no robust phases without attacks
    # a step schedule (÷10 at epochs 11 and 16): phase 1 is the whole high-learning-rate stretch
    step = df.assign(lr=[0.1 if e <= 10 else 0.01 if e <= 15 else 0.001 for e in df["epoch"]])
    assert lens.training_phases(step)["phases"][0]["end"] == 10
    assert lens.training_phases(step)["phases"][0]["name"] == "1 · high learning rate"
    assert ph["phases"][0]["name"] == "1 · warm-up"
    assert [p["name"][0] for p in lens.training_phases(step)["phases"]] == ["1", "2", "3"]
    assert ph["phase1_end"] is None and lens.training_phases(step)["phase1_end"] is None
    # robust accuracy peaking at epoch 6, while the step schedule's learning rate stays high to epoch 10:
    # phase 1 ends at the peak, no phase 2, and `phase1_end` says where the schedule would have ended it
    early = step.assign(test_pgd_acc=[0.3 + 0.02 * e if e <= 6 else 0.42 - 0.01 * (e - 6) for e in df["epoch"]])
    eph = lens.training_phases(early)
    assert [p["name"][0] for p in eph["phases"]] == ["1", "3"] and eph["phases"][0]["end"] == 6
    assert eph["best_epoch"] == 6 and eph["phase1_end"] == 10
    assert lens.stage_starts(df) == [] and lens.stage_starts(df.assign(stage=1)) == []
    assert lens.stage_starts(df.assign(stage=[1] * 14 + [2] * 4 + [3] * 2)) == [15, 19]
    # a 3-point drop from 40 %: overfitting by the 1-point rule, noise on a 512-image subset
    # (2·√(0.4·0.6/512) = 4.3 points), real on 10,000 images (2·SE = 1.0 point)
    small = df.assign(test_pgd_acc=[0.2 + 0.02 * min(e, 10) - (0.03 if e == 20 else 0.0) for e in df["epoch"]])
    assert lens.training_phases(small)["overfitting"]
    assert not lens.training_phases(small.assign(eval_size=512))["overfitting"]
    assert lens.training_phases(small.assign(eval_size=10000))["overfitting"]
    assert ph["overfitting"] and lens.training_phases(df.assign(eval_size=512))["overfitting"]  # 16 points is real
    # a shipped checkpoint's older log: the subset size comes from its config.json
    (tmp_path / "config.json").write_text(json.dumps({"training": {"eval_size": 512}}))
    assert (lens.load_training_log(tmp_path)["eval_size"] == 512).all()
    with pytest.raises(WeatError):
        lens.load_training_log(tmp_path / "missing")


def test_smooth_curves_is_a_centred_mean_per_run_that_keeps_rows_and_gaps():
    # run "z" first with its epochs out of order: the rows keep their order (the charts' colours
    # follow the runs' order), the mean follows the epochs
    df = pd.DataFrame({"epoch": [3, 2, 1, 4, 5] + [1, 2, 3, 4, 5], "run": ["z"] * 5 + ["b"] * 5,
                       "acc": [0, 1, 0, 1, 0] + [5, 5, np.nan, 5, 8], "lr": 0.1})
    s = lens.smooth_curves(df, ["acc", "missing"], 3, by="run")
    assert s["run"].tolist() == df["run"].tolist() and s["epoch"].tolist() == df["epoch"].tolist()
    by_epoch = s[s.run == "z"].set_index("epoch")["acc"]
    assert by_epoch.loc[[1, 2, 3, 4, 5]].tolist() == pytest.approx([0.5, 1 / 3, 2 / 3, 1 / 3, 0.5])
    b = s[s.run == "b"]["acc"].tolist()  # the missing epoch stays missing and is skipped
    assert np.isnan(b[2]) and b[:2] + b[3:] == pytest.approx([5, 5, 6, 6.5])
    assert (s["lr"] == 0.1).all() and lens.smooth_curves(df, ["acc"], 1, by="run").equals(df)
    one = lens.smooth_curves(df[df.run == "z"], ["acc"], 5)  # no groups: one run
    assert one["acc"].tolist() == pytest.approx([0.4, 0.5, 1 / 3, 0.5, 1 / 3])  # epochs 3, 2, 1, 4, 5
    with pytest.raises(WeatError, match="odd"):
        lens.smooth_curves(df, ["acc"], 4)


def test_runs_summary_marks_robust_overfitting():
    ep = np.arange(1, 11)
    over = pd.DataFrame({"epoch": ep, "method": "sat", "lr": 0.1,
                         "test_pgd_acc": [.1, .2, .3, .4, .45, .42, .40, .38, .36, .35],
                         "train_pgd_acc": [.1, .2, .3, .4, .5, .6, .7, .8, .85, .9],
                         "delta_e": [0, -.1, -.1, -.2, -.2, -.3, -.4, -.5, -.6, -.6]})
    flat = over.assign(method="trades", test_pgd_acc=[.1, .2, .3, .4, .45, .45, .46, .46, .46, .46],
                       delta_e=0.01 * ep)
    s = lens.runs_summary({"a": over, "b": flat}).set_index("run")
    assert s.loc["a", "best_epoch"] == 5 and s.loc["a", "robust_overfitting"]
    assert s.loc["a", "robust_drop"] == pytest.approx(0.10) and s.loc["a", "last_robust"] == pytest.approx(0.35)
    assert s.loc["a", "train_test_gap_last"] == pytest.approx(0.55) and s.loc["a", "train_robust_last"] == 0.9
    assert s.loc["a", "delta_e_min"] == pytest.approx(-0.6) and s.loc["a", "delta_e_best"] == pytest.approx(-0.2)
    assert not s.loc["b", "robust_overfitting"] and s.loc["b", "best_epoch"] == 7
    assert s.loc["b", "delta_e_last"] == pytest.approx(0.10)
    assert list(s["epochs"]) == [10, 10]
    assert "ema_best_epoch" not in s  # no run kept a weight average
    # a run with a weight average (`train --ema`): the average's peak and fall, judged the same way
    averaged = over.assign(ema_test_pgd_acc=[.1, .15, .25, .35, .40, .42, .43, .43, .425, .425])
    s = lens.runs_summary({"a": over, "c": averaged}).set_index("run")
    assert s.loc["c", "robust_overfitting"] and not s.loc["c", "ema_robust_overfitting"]
    assert s.loc["c", "ema_best_epoch"] == 7 and s.loc["c", "ema_last_robust"] == pytest.approx(0.425)
    assert s.loc["c", "ema_robust_drop"] == pytest.approx(0.005) and pd.isna(s.loc["a", "ema_best_epoch"])


def test_demo_images_and_grid():
    s = lens.demo_images(20, num_classes=10)
    assert s.x.dtype == torch.uint8 and s.x.shape == (20, 3, 32, 32) and s.num_classes == 10
    png = lens.image_grid_png(s.float(), nrow=5, scale=2)
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.size == ((5 * 34 + 2) * 2, (4 * 34 + 2) * 2)


def test_find_datasets(tmp_path):
    (tmp_path / "mine" / "test" / "a").mkdir(parents=True)
    (tmp_path / "x.tar.gz").write_bytes(b"")
    (tmp_path / "cifar-10-batches-py").mkdir()
    found = lens.find_datasets(tmp_path)
    assert found == ["cifar10", str(tmp_path / "mine"), str(tmp_path / "x.tar.gz")]
    assert lens.find_datasets(tmp_path / "nope") == []


# ------------------------------------------------------------------------------------------
# uploads: every bad image gives one WeatError; odd-but-valid images decode to (1, 3, 32, 32)


def _png(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGB", (50, 40), (200, 10, 10)),
    lambda: Image.new("L", (32, 32), 128),                                   # grayscale
    lambda: Image.new("RGBA", (64, 64), (0, 0, 255, 0)),                     # fully transparent
    lambda: Image.new("LA", (20, 30), (10, 255)),
    lambda: Image.new("RGB", (33, 31), (1, 2, 3)).convert("P", palette=Image.Palette.ADAPTIVE),
    lambda: Image.new("1", (32, 32), 1),
    lambda: Image.new("CMYK", (32, 32), (0, 0, 0, 0)),
    lambda: Image.new("F", (16, 16), 0.5),
])
def test_decode_image_modes(make):
    im = make()
    fmt = "TIFF" if im.mode in ("CMYK", "F") else "PNG"
    x = lens.decode_image(_png(im, fmt))
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1


def test_decode_transparent_is_white_and_16bit_scaled():
    x = lens.decode_image(_png(Image.new("RGBA", (8, 8), (0, 0, 255, 0))))
    assert torch.allclose(x, torch.ones_like(x))
    arr = np.full((40, 40), 65535 // 2, dtype=np.uint16)  # mid-grey in 16 bits
    im16 = Image.fromarray(arr)
    assert im16.mode.startswith("I;16")
    x = lens.decode_image(_png(im16))
    assert x.mean().item() == pytest.approx(0.5, abs=0.01)


def test_decode_resizes_to_model_size():
    x = lens.decode_image(_png(Image.new("RGB", (300, 200), (0, 255, 0))), size=(64, 48))
    assert x.shape == (1, 3, 64, 48)


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|corrupt"),
])
def test_decode_rejects_garbage(data, match):
    with pytest.raises(WeatError, match=match):
        lens.decode_image(data)


def test_decode_rejects_truncated():
    data = _png(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(WeatError, match="corrupt|truncated"):
        lens.decode_image(data[: len(data) // 2])


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width × height pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    data = bytearray(_png(Image.new("L", (1, 1))))
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


@pytest.mark.parametrize("w, h", [(8000, 6000), (30000, 30000)])  # over our limit; over Pillow's bomb limit
def test_decode_rejects_huge_before_decoding(monkeypatch, w, h):
    data, loads = _png_claiming(w, h), []
    monkeypatch.setattr(Image.Image, "load", lambda self, *a, **k: loads.append(1))
    with pytest.raises(WeatError, match="megapixels"):
        lens.decode_image(data)
    assert not loads
    with pytest.raises(WeatError, match="MB"):
        lens.decode_image(b"\x00" * 100, max_bytes=50)


# ------------------------------------------------------------------------------------------
# uploaded checkpoints


def _ckpt(model, tmp_path):
    from weat_core.checkpoints import save

    d = save(model, tmp_path / "ck")
    return (d / "model.safetensors").read_bytes(), (d / "config.json").read_bytes()


def test_upload_roundtrip(tiny_model, tmp_path, synthetic_batch):
    w, c = _ckpt(tiny_model, tmp_path)
    m = lens.load_uploaded_checkpoint(w, c, "model.safetensors")
    x, _ = synthetic_batch
    with torch.no_grad():
        torch.testing.assert_close(m(x), tiny_model(x))


def test_upload_wrong_shape(tiny_model, tmp_path):
    w, c = _ckpt(tiny_model, tmp_path)
    cfg = json.loads(c)
    cfg["arch_kwargs"] = {"width": 8}
    with pytest.raises(WeatError, match="do not fit"):
        lens.load_uploaded_checkpoint(w, json.dumps(cfg).encode(), "model.safetensors")
    cfg = json.loads(c)
    cfg["num_classes"] = 100
    with pytest.raises(WeatError, match="do not fit"):
        lens.load_uploaded_checkpoint(w, json.dumps(cfg).encode(), "model.safetensors")


def test_upload_refuses_pickles(tiny_model, tmp_path):
    _, c = _ckpt(tiny_model, tmp_path)
    buf = io.BytesIO()
    torch.save(tiny_model.state_dict(), buf)
    for data, name in ((buf.getvalue(), "model.pt"), (buf.getvalue(), "model.safetensors"),
                       (pickle.dumps({"a": 1}), "weights.safetensors"), (pickle.dumps({"a": 1}), "w.pkl")):
        with pytest.raises(WeatError, match="pickle"):
            lens.load_uploaded_checkpoint(data, c, name)


def test_a_model_goes_out_as_a_zip_and_comes_back_as_an_upload(tiny_model, tmp_path, synthetic_batch):
    import zipfile

    from weat_core.checkpoints import load

    records = [{"epoch": 1, "test_pgd_acc": 0.25, "delta_e": -0.01}, {"epoch": 2, "test_pgd_acc": 0.5}]
    data = lens.checkpoint_zip(tiny_model, records)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["config.json", "log.jsonl", "model.safetensors"]
        assert [json.loads(line) for line in z.read("log.jsonl").decode().splitlines()] == records
        z.extractall(tmp_path / "unzipped")
    x, _ = synthetic_batch
    back = lens.load_uploaded_checkpoint(data, None, "run 1.zip")
    assert back.config["source"] == "upload:run 1.zip:model.safetensors"
    with torch.no_grad():
        torch.testing.assert_close(back(x), tiny_model(x))
        torch.testing.assert_close(load(tmp_path / "unzipped")(x), tiny_model(x))  # unzipped: a checkpoint folder
    assert "log.jsonl" not in zipfile.ZipFile(io.BytesIO(lens.checkpoint_zip(tiny_model))).namelist()


def test_the_unzipped_limit_is_the_app_s_upload_limit():
    from pathlib import Path

    import tomllib

    from weat_core.lens.uploads import MAX_UNZIPPED_BYTES

    cfg = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert MAX_UNZIPPED_BYTES == cfg["server"]["maxUploadSize"] * 2**20


def test_zip_uploads_are_checked_before_anything_is_read(tiny_model, tmp_path):
    import zipfile

    from weat_core.lens.uploads import _unzip_checkpoint

    buf = io.BytesIO()
    torch.save(tiny_model.state_dict(), buf)  # a zip archive too, with a pickle inside
    for data, match in ((buf.getvalue(), "holds 0 .safetensors"), (b"PK\x03\x04 not really", "not a readable zip"),
                        (b"plain bytes", "not a readable zip")):
        with pytest.raises(WeatError, match=match):
            lens.load_uploaded_checkpoint(data, None, "model.zip")
    data = lens.checkpoint_zip(tiny_model)
    with pytest.raises(WeatError, match="unpacked; the limit is"):  # sizes come from the archive's directory
        _unzip_checkpoint(data, max_bytes=1024)
    two = io.BytesIO()
    with zipfile.ZipFile(two, "w") as z:
        z.writestr("a.safetensors", b"x")
        z.writestr("b.safetensors", b"y")
    with pytest.raises(WeatError, match="holds 2 .safetensors"):
        lens.load_uploaded_checkpoint(two.getvalue(), None, "two.zip")
    for weights, match in ((b"", "model.safetensors in the uploaded .zip is empty"), (b"x", "config.json")):
        no_cfg = io.BytesIO()
        with zipfile.ZipFile(no_cfg, "w") as z:
            z.writestr("model.safetensors", weights)
        with pytest.raises(WeatError, match=match):
            lens.load_uploaded_checkpoint(no_cfg.getvalue(), None, "half.zip")


@pytest.mark.parametrize("weights, config, match", [
    (b"", b"{}", "empty"),
    (b"garbage that is not safetensors", None, "config.json"),
    (b"garbage that is not safetensors", b"{not json", "JSON"),
    (b"garbage that is not safetensors", b"[1, 2]", "JSON object"),
    (b"garbage that is not safetensors", b'{"arch": "weatnet_tiny", "num_classes": 10}', "safetensors"),
    (b"x", b'{"arch": "no_such_arch", "num_classes": 10}', "build|safetensors"),
])
def test_upload_bad_inputs(weights, config, match):
    with pytest.raises(WeatError, match=match):
        lens.load_uploaded_checkpoint(weights, config, "model.safetensors")


def test_unknown_hub_id_offline(monkeypatch, tmp_path):
    from weat_core.checkpoints import load

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeatError) as e:
        load("nobody-here/no-such-model")
    msg = str(e.value)
    assert "no-such-model" in msg and "\n" not in msg


def test_models_are_never_mutated_by_lens(trained_tiny, synthetic_batch):
    x, y = synthetic_batch
    m = copy.deepcopy(trained_tiny)
    before = _params(m)
    lens.energy_landscape(m, x[:8], y[:8], {"APGD-T": lens.attack_from("APGD-T", steps=2), "CW": "CW"})
    lens.attack_trajectory(m, x[0], int(y[0]), PGD(steps=3))
    lens.trades_decomposition(m, x[:8], y[:8], attack=TradesAttack(steps=2))
    assert _same(before, _params(m)) and all(p.grad is None for p in m.parameters())


def test_bf16_crafting_matches_fp32(trained_tiny, synthetic_batch):
    """Crafting under bf16 autocast (the CPU fast path) gives attacks of the same strength, and the
    energies themselves are still computed in fp32 (natural rows identical)."""
    x, y = synthetic_batch
    atk = {"PGD": lens.attack_from("PGD", steps=5), "PGD-T": lens.attack_from("PGD-T", steps=5)}
    fp32 = lens.energy_landscape(trained_tiny, x, y, atk, amp=False).summary.set_index("attack")
    bf16 = lens.energy_landscape(trained_tiny, x, y, atk, amp=True).summary.set_index("attack")
    assert fp32.loc["natural", "mean E(x)"] == bf16.loc["natural", "mean E(x)"]
    for a in atk:
        assert abs(fp32.loc[a, "accuracy"] - bf16.loc[a, "accuracy"]) <= 0.1
        assert fp32.loc[a, "shift E(x,y)"] == pytest.approx(bf16.loc[a, "shift E(x,y)"], rel=0.2, abs=0.05)


def test_shift_by_outcome_by_hand():
    """Each attack's x* paired with its own natural image and grouped by what the attack did to
    the prediction; the numbers worked out by hand."""
    nat = pd.DataFrame({"attack": "natural", "index": [0, 1, 2, 3, 4], "correct": [True, True, True, False, False],
                        "E(x)": [-3.0, -2.0, -4.0, -1.0, -2.0], "E(x,y)": [0.0, 0.0, 0.0, 1.0, 1.0]})
    pgd = pd.DataFrame({"attack": "PGD", "index": [0, 1, 2, 3, 4], "correct": [True, True, False, False, True],
                        "E(x)": [-2.5, -1.0, -4.5, -1.5, -2.0], "E(x,y)": [1.0, 2.0, 3.0, 1.0, 1.5]})
    df = lens.shift_by_outcome(pd.concat([nat, pgd], ignore_index=True)).set_index("outcome")
    assert list(df.index) == ["stays correct", "flipped", "already wrong", "corrected"]
    assert list(df["n"]) == [2, 1, 1, 1] and df["share"].tolist() == pytest.approx([0.4, 0.2, 0.2, 0.2])
    # stays correct: images 0 and 1 move by +0.5 and +1.0
    assert df.loc["stays correct", "shift E(x)"] == pytest.approx(0.75)
    assert df.loc["stays correct", "se"] == pytest.approx(np.std([0.5, 1.0], ddof=1) / np.sqrt(2))
    assert df.loc["stays correct", "share E(x)↓"] == 0 and df.loc["stays correct", "shift E(x,y)"] == pytest.approx(1.5)
    assert df.loc["flipped", "shift E(x)"] == pytest.approx(-0.5) and df.loc["flipped", "share E(x)↓"] == 1
    assert df.loc["already wrong", "shift E(x)"] == pytest.approx(-0.5)
    assert df.loc["corrected", "shift E(x)"] == pytest.approx(0.0) and np.isnan(df.loc["corrected", "se"])
    line = lens.outcome_summary(df.reset_index(), "PGD")
    assert line.startswith("PGD, mean E(x*) − E(x)") and "stays correct (2 images) +0.750" in line
    assert lens.outcome_summary(df.reset_index(), "CW") == ""
    assert lens.shift_by_outcome(pgd).empty  # no natural rows to pair with


def test_shift_by_outcome_of_a_real_landscape(trained_tiny, synthetic_batch):
    x, y = synthetic_batch
    res = lens.energy_landscape(lens.prepare(trained_tiny), x, y, {"PGD": lens.attack_from("PGD", steps=5)},
                                batch_size=16)
    df = lens.shift_by_outcome(res.per_image)
    assert df["n"].sum() == len(y) and set(df["outcome"]) <= set(lens.OUTCOMES)
    overall = res.summary.set_index("attack").loc["PGD", "shift E(x)"]
    assert (df["shift E(x)"] * df["n"]).sum() / len(y) == pytest.approx(overall, abs=1e-5)  # the groups add up


def test_kept_runs_lists_the_newest_first_and_pruning_spares_running_ones(tmp_path):
    for i, ended in enumerate(["finished", None, "stopped", "failed: out of memory"]):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "live.json").write_text(json.dumps({"name": f"r{i}", "started": 1000.0 + i, "ended": ended,
                                                 "training": {"method": "sat", "epochs": 4}}))
        (d / "log.jsonl").write_text("".join(json.dumps({"epoch": e, "test_pgd_acc": 0.1 * e}) + "\n"
                                             for e in range(1, i + 1)))
    (tmp_path / "run2" / "LATEST").write_text("state-0002\n")
    (tmp_path / "not-a-run").mkdir()  # no live.json: not one of ours
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "live.json").write_text("{")  # being written
    runs = lens.kept_runs(tmp_path)
    assert [r["name"] for r in runs] == ["r3", "r2", "r1", "r0"]
    r2 = runs[1]
    assert (r2["epochs"], r2["planned"], r2["ended"], r2["weights"]) == (2, 4, "stopped", True)
    assert r2["last"]["test_pgd_acc"] == pytest.approx(0.2) and r2["method"] == "sat" and not runs[0]["weights"]
    gone = lens.prune_kept_runs(tmp_path, keep=2, spare=[tmp_path / "run0"])  # run0 still going
    assert gone == [tmp_path / "run1"] and (tmp_path / "run0").is_dir() and (tmp_path / "not-a-run").is_dir()
    assert lens.kept_runs(tmp_path / "nowhere") == []


def test_a_training_job_with_a_run_folder_says_how_it_ended(tmp_path):
    pytest.importorskip("weat_core.train")
    from weat_core.train import TrainConfig

    imgs = lens.demo_images(64)
    cfg = TrainConfig(arch="no-such-arch", epochs=1, batch_size=32, out=str(tmp_path / "bad"), device="cpu")
    job = lens.TrainingJob(cfg, (imgs, imgs), name="bad run").start()
    job.join(60)
    meta = json.loads((tmp_path / "bad" / "live.json").read_text())
    assert job.error and meta["name"] == "bad run" and meta["ended"] == f"failed: {job.error}"
    assert meta["training"]["arch"] == "no-such-arch" and meta["started"] == job.started


def test_a_training_job_past_its_time_limit_stops_and_keeps_its_finished_epochs(tmp_path):
    pytest.importorskip("weat_core.train")
    from weat_core.train import TrainConfig

    imgs = lens.demo_images(64)
    cfg = TrainConfig(method="sat", arch="weatnet_tiny", epochs=200, batch_size=32, attack_steps=1, eval_size=16,
                      eval_steps=1, out=str(tmp_path / "run"), device="cpu")
    job = lens.TrainingJob(cfg, (imgs, imgs), name="long run", time_limit_s=3600.0).start()
    for _ in range(600):  # its first epoch, well within the hour
        if job.history or not job.running:
            break
        time.sleep(0.1)
    assert job.history and not job.timed_out and 3000 < job.time_left_s < 3600
    job.time_limit_s = 0.0  # the limit passes: the run stops after the batch under way
    job.join(120)
    assert not job.running and job.error is None and job.timed_out and job.result.stopped
    assert 1 <= len(job.history) < 200 and job.ended == "stopped at the 0-minute limit" and job.time_left_s == 0
    assert lens.TrainingJob(cfg).time_left_s is None  # not started
    meta = json.loads((tmp_path / "run" / "live.json").read_text())
    assert meta["ended"] == job.ended and (tmp_path / "run" / "LATEST").is_file()
    (kept,) = lens.kept_runs(tmp_path)
    assert kept["ended"] == job.ended and kept["epochs"] == len(job.history) and kept["weights"]


def test_a_process_that_exits_while_a_job_trains_stops_it_and_exits_cleanly(tmp_path):
    """A server stopped mid-run (SIGTERM to streamlit ends in a normal exit) used to abort with
    "terminate called without an active exception", status 134, its run left without an end."""
    pytest.importorskip("weat_core.train")
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import time
        from weat_core import lens
        from weat_core.train import TrainConfig
        imgs = lens.demo_images(64)
        cfg = TrainConfig(method="sat", arch="weatnet_tiny", epochs=500, batch_size=32, attack_steps=1,
                          eval_size=16, eval_steps=1, out={str(out)!r}, device="cpu")
        job = lens.TrainingJob(cfg, (imgs, imgs), name="cut short").start()
        while not job.history and job.running:  # exit mid-run, after a finished epoch
            time.sleep(0.05)
        print("running" if job.running else job.error, flush=True)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0 and p.stdout.strip() == "running", p.stderr[-2000:]
    assert "terminate called" not in p.stderr
    (kept,) = lens.kept_runs(tmp_path)
    assert kept["ended"] == "stopped when the app shut down" and kept["epochs"] >= 1 and kept["weights"]


def test_a_continued_training_job_starts_from_the_epochs_its_folder_finished(tmp_path):
    pytest.importorskip("weat_core.train")
    from weat_core.train import TrainConfig

    imgs = lens.demo_images(64)
    with pytest.raises(WeatError, match="config.out"):
        lens.TrainingJob(TrainConfig(epochs=3), (imgs, imgs), resume=True).start()
    out = tmp_path / "run"
    out.mkdir()
    (out / "live.json").write_text(json.dumps({"name": "sat run 1", "started": 123.0, "training": {}}))
    # epoch 3's record was written, its checkpoint not (the server stopped between the two)
    (out / "log.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)))
    (out / "LATEST").write_text("state-0002\n")
    (out / "state-0002").mkdir()
    (out / "state-0002" / "trainer.json").write_text(json.dumps({"epoch": 2, "step": 4, "best": 0.1}))
    cfg = TrainConfig(arch="no-such-arch", epochs=3, out=str(out), device="cpu")
    job = lens.TrainingJob(cfg, (imgs, imgs), resume=True).start()
    assert [r["epoch"] for r in job.history] == [1, 2] and job.name == "sat run 1" and job.started == 123.0
    job.join(60)
    assert job.error and json.loads((out / "live.json").read_text())["started"] == 123.0
    assert job.data is None  # a job over, failed or not, lets go of its images

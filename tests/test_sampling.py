"""weat_core.sampling: SGLD / Heun steps against closed forms, seeded reproducibility, the three
initialisations, the generate / gen-eval / init-stats commands, divergence handling, metrics."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from weat_core import WeatError, checkpoints
from weat_core.data import ImageSet
from weat_core.sampling import (
    FAMILY_DEFAULTS,
    SGLD,
    STATS_NAME,
    ClassStats,
    GenerationSettings,
    Heun,
    SamplingDiverged,
    classifier_agreement,
    default_settings,
    diversity,
    generate,
    inception_score,
    initial_images,
    threat_model,
)
from weat_core.cli import build_parser
from weat_core.cli.generate import parse_classes

# ------------------------------------------------------------------------------ helpers


def quadratic(a: torch.Tensor, c: torch.Tensor):
    """E(x) = ½ Σ a·(x − c)², per image; ∇E = a·(x − c)."""

    def energy_fn(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (a * (x - c) ** 2).flatten(1).sum(1)

    return energy_fn


def _quad_setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = 0.3 + 0.4 * torch.rand(4, 3, 8, 8, generator=g)  # interior: no pixel clipping in one small step
    a = 0.5 + torch.rand(1, 3, 8, 8, generator=g)
    c = 0.3 + 0.4 * torch.rand(1, 3, 8, 8, generator=g)
    return x0, a, c


class NaNForClass(nn.Module):
    """Wraps a classifier; images whose first pixel is above 0.5 get NaN logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = dict(getattr(model, "config", {}))
        self.num_classes = model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        bad = (x[:, 0, 0, 0] > 0.5).view(-1, 1)
        return torch.where(bad, torch.full_like(logits, float("nan")), logits)


def gaussian_imageset(n_per_class: int = 1500, seed: int = 0) -> tuple[ImageSet, dict]:
    """Two classes of 3×4×4 float images from known Gaussians (low rank + small isotropic part)."""
    g = torch.Generator().manual_seed(seed)
    d, r = 48, 3
    truth = {}
    xs, ys = [], []
    for k in range(2):
        mu = 0.35 + 0.3 * torch.rand(d, generator=g)
        basis, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))  # (d, r) orthonormal
        sd = torch.tensor([0.08, 0.05, 0.03], dtype=torch.float64)
        cov = basis @ torch.diag(sd**2) @ basis.T + 0.005**2 * torch.eye(d, dtype=torch.float64)
        z = torch.randn(n_per_class, d, generator=g, dtype=torch.float64)
        x = mu.double() + z @ torch.linalg.cholesky(cov).T
        xs.append(x.float().view(-1, 3, 4, 4))
        ys.append(torch.full((n_per_class,), k))
        truth[k] = {"mean": mu, "cov": cov.float(), "basis": basis.float()}
    return ImageSet(torch.cat(xs), torch.cat(ys), ("a", "b"), "gauss"), truth


# -------------------------------------------------------------------------- SGLD steps


def test_sgld_step_without_noise_is_the_closed_form():
    x0, a, c = _quad_setup()
    fn = quadratic(a, c)
    eta = 0.1
    s = SGLD(step_size=eta, noise_std=0.0, momentum=0.0)
    st = s.step(s.init(x0, fn), fn)
    expected = x0 - (eta / 2) * a * (x0 - c)  # x + v, v = −(η/2)∇E
    torch.testing.assert_close(st.x, expected, rtol=0, atol=1e-6)
    assert st.step == 1 and bool(st.alive.all())
    torch.testing.assert_close(st.energy, fn(expected), rtol=1e-5, atol=1e-6)  # E is evaluated at the new point


def test_sgld_momentum_and_clamps_closed_form():
    x0, a, c = _quad_setup(1)
    fn = quadratic(a, c)
    eta, zeta = 0.1, 0.8
    s = SGLD(step_size=eta, noise_std=0.0, momentum=zeta)
    st = s.step(s.step(s.init(x0, fn), fn), fn)
    v1 = -(eta / 2) * a * (x0 - c)
    x1 = x0 + v1
    v2 = zeta * v1 - (eta / 2) * a * (x1 - c)
    torch.testing.assert_close(st.x, (x1 + v2).clamp(0, 1), rtol=0, atol=1e-6)
    torch.testing.assert_close(st.v, v2, rtol=0, atol=1e-6)

    big = SGLD(step_size=10.0, noise_std=0.0, max_update=0.01, update_norm="linf")
    st = big.step(big.init(x0, fn), fn)
    assert float((st.x - x0).abs().max()) <= 0.01 + 1e-6
    l2 = SGLD(step_size=10.0, noise_std=0.0, max_update=0.05, update_norm="l2")
    st = l2.step(l2.init(x0, fn), fn)
    torch.testing.assert_close((st.x - x0).flatten(1).norm(dim=1), torch.full((4,), 0.05), rtol=1e-4, atol=1e-5)


def test_heun_step_closed_form_and_noise_statistics():
    x0, a, c = _quad_setup(2)
    fn = quadratic(a, c)
    eta = 0.2
    h = Heun(step_size=eta, noise_std=0.0)
    st = h.step(h.init(x0, fn), fn)
    g1 = a * (x0 - c)
    x_pred = x0 - (eta / 2) * g1
    g2 = a * (x_pred - c)
    torch.testing.assert_close(st.x, x0 - (eta / 2) * 0.5 * (g1 + g2), rtol=0, atol=1e-6)
    assert h.grads_per_step == 2

    # zero gradient: the step is pure noise of std σ
    flat = lambda x: (0 * x).flatten(1).sum(1)  # noqa: E731
    x = torch.full((64, 3, 8, 8), 0.5)
    s = SGLD(step_size=1.0, noise_std=0.01)
    st = s.step(s.init(x, flat), flat, generator=torch.Generator().manual_seed(0))
    assert abs(float((st.x - x).std()) - 0.01) < 5e-4


def test_sampler_rejects_bad_settings():
    for kw in ({"step_size": -1.0}, {"step_size": float("nan")}, {"momentum": 1.0}, {"noise_std": -0.1},
               {"update_norm": "l1"}, {"max_update": 0.0}):
        with pytest.raises(WeatError):
            SGLD(**kw)
    with pytest.raises(WeatError):
        GenerationSettings(init="zeros")


# ------------------------------------------------------------------------------ generate


def test_generate_is_seeded_and_reproducible(trained_tiny):
    labels = torch.tensor([0, 1, 2, 3, 3, 7])
    kw = dict(steps=5, step_size=0.5, noise_std=0.01, init="uniform")
    r1 = generate(trained_tiny, labels, seed=3, **kw)
    r2 = generate(trained_tiny, labels, seed=3, **kw)
    r3 = generate(trained_tiny, labels, seed=4, **kw)
    assert r1.images.shape == (6, 3, 32, 32) and r1.images.dtype == torch.float32
    assert float(r1.images.min()) >= 0.0 and float(r1.images.max()) <= 1.0
    assert torch.equal(r1.images, r2.images) and torch.equal(r1.energies, r2.energies)
    assert not torch.equal(r1.images, r3.images)
    assert r1.energies.shape == r1.joint.shape == r1.marginal.shape == (6, 6)  # (steps + 1, N)
    torch.testing.assert_close(r1.energies, r1.joint)  # the objective is E(x, y)
    assert torch.equal(r1.labels, labels) and torch.equal(r1.chain, torch.arange(6))
    # descending E(x, y): the energy of the intended class falls
    assert float(r1.joint[-1].mean()) < float(r1.joint[0].mean())
    # the batch size does not change a chain's start; the callback sees every step
    seen = []
    r4 = generate(trained_tiny, labels, seed=3, batch_size=4, callback=lambda t, s: seen.append(t), **kw)
    assert seen == list(range(6)) * 2
    torch.testing.assert_close(r4.energies[0], r1.energies[0])


def test_generate_objectives_and_heun(trained_tiny):
    labels = torch.tensor([0, 5])
    for obj in ("joint", "ce", "marginal", "E(x)", "CE"):
        r = generate(trained_tiny, labels, steps=2, init="uniform", objective=obj, seed=0)
        assert torch.isfinite(r.energies).all()
    r = generate(trained_tiny, labels, steps=2, init="uniform", objective="marginal", seed=0)
    torch.testing.assert_close(r.energies, r.marginal)
    r = generate(trained_tiny, labels, steps=3, init="uniform", sampler="heun", seed=0)
    assert r.settings.sampler == "heun" and r.images.shape == (2, 3, 32, 32)
    x0 = torch.full((2, 3, 32, 32), 0.5)
    r = generate(trained_tiny, labels, steps=0, init=x0)
    assert r.settings.init == "custom" and torch.equal(r.images, x0)


def test_defaults_per_family_and_config_override(tiny_model):
    m = copy.deepcopy(tiny_model)
    assert threat_model({"method": "weat-adv", "training": {"eps": 8 / 255}}) == "linf"
    assert threat_model({"method": "standard"}) == "standard"
    assert threat_model({"method": "sat", "training": {"norm": "l2", "eps": 0.5}}) == "l2"
    assert threat_model({"method": "robustbench (L2)"}) == "l2"
    assert threat_model({"method": "robustbench (Linf)"}) == "linf"
    assert default_settings(m) == FAMILY_DEFAULTS["linf"]
    assert default_settings({"method": "trades", "training": {"norm": "l2"}}).steps == 500
    m.config["generation"] = {"steps": 3, "step_size": 0.1, "init": "uniform"}
    r = generate(m, [1, 2], seed=0)
    assert r.settings.steps == 3 and r.settings.step_size == 0.1 and r.energies.shape[0] == 4
    r = generate(m, [1, 2], seed=0, steps=1)  # an argument beats the config
    assert r.settings.steps == 1
    m.config.update(method="standard", generation={"steps": 1, "init": "uniform"})
    assert generate(m, [1], seed=0).settings.max_update == pytest.approx(2 / 255)  # the standard family clamps
    free = generate(m, [1], seed=0, max_update=0)  # 0 turns the clamp off
    assert free.settings.max_update is None
    assert generate(m, [1], seed=0, max_update=0.1).settings.max_update == 0.1


def test_generate_needs_stats_for_gaussian_and_falls_back_for_the_default(tiny_model):
    with pytest.raises(WeatError, match="init-stats"):
        generate(tiny_model, [0], steps=1, init="gaussian")
    r = generate(tiny_model, [0], steps=1)  # default "pca" without stats → uniform, logged
    assert r.settings.init == "uniform"
    with pytest.raises(WeatError, match="class indices"):
        generate(tiny_model, [10], steps=1)


# ------------------------------------------------------------------------ initialisations


def test_uniform_init_shape_and_statistics():
    x = initial_images("uniform", torch.zeros(2000, dtype=torch.long), (3, 8, 8),
                       generator=torch.Generator().manual_seed(0))
    assert x.shape == (2000, 3, 8, 8)
    assert abs(float(x.mean()) - 0.5) < 0.01 and abs(float(x.var()) - 1 / 12) < 0.002


def test_class_stats_gaussian_and_pca_inits_match_the_data(tmp_path):
    data, truth = gaussian_imageset()
    stats = ClassStats.fit(data, max_variance=0.999)
    assert stats.shape == (3, 4, 4) and stats.num_classes == 2 and stats.classes == ("a", "b")
    stats = ClassStats.load(stats.save(tmp_path))  # round trip through safetensors (fp16 basis)
    assert (tmp_path / STATS_NAME).is_file()
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1]).repeat_interleave(3000)
    for k in (0, 1):
        t = truth[k]
        xg = initial_images("gaussian", labels, (3, 4, 4), stats, g)[labels == k].flatten(1).double()
        assert xg.shape == (3000, 48)
        torch.testing.assert_close(xg.mean(0).float(), t["mean"], atol=0.01, rtol=0)
        cov = torch.cov(xg.T).float()
        # Σ_y + 1e-4·I, up to sampling error
        torch.testing.assert_close(cov, t["cov"] + 1e-4 * torch.eye(48), atol=8e-4, rtol=0)

        xp = initial_images("pca", labels, (3, 4, 4), stats, g, pca_variance=0.85)[labels == k].flatten(1)
        kept = int(stats.rank_for(0.85)[k])
        assert kept == 3  # 0.08², 0.05² keep 82 % of the variance, with 0.03² 90 %
        resid = (xp - stats.mean[k]) - ((xp - stats.mean[k]) @ stats.basis[k, :kept].float().T) @ \
            stats.basis[k, :kept].float()
        assert float(resid.abs().max()) < 2e-3  # no variance outside the kept components
        var_kept = float((xp - stats.mean[k]).pow(2).sum(1).mean())
        assert abs(var_kept / float(stats.eigvals[k, :kept].sum()) - 1) < 0.1


def test_class_stats_byte_budget_and_errors(tmp_path):
    data, _ = gaussian_imageset(200)
    for budget in (2500, 4000):
        stats = ClassStats.fit(data, max_variance=1.0, max_bytes=budget)
        assert 1 <= stats.rank < 48
        assert stats.save(tmp_path / f"s{budget}.safetensors").stat().st_size <= budget
    assert ClassStats.fit(data, max_variance=0.5).rank == 1  # 0.08² alone is over half the variance
    with pytest.raises(WeatError, match="init-stats"):
        ClassStats.load(tmp_path / "missing")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeatError):
        ClassStats.load(tmp_path / "bad.safetensors")
    with pytest.raises(WeatError):
        initial_images("pca", torch.tensor([5]), (3, 4, 4), stats)  # class 5 does not exist


def test_class_stats_file_is_int8_and_loads_orthonormal(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    data, _ = gaussian_imageset(200)
    stats = ClassStats.fit(data, max_variance=1.0)
    path = stats.save(tmp_path / "s.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("basis_q").dtype == torch.int8 and f.get_tensor("basis_scale").shape == stats.eigvals.shape
    back = ClassStats.load(path)
    u = back.basis.float()
    eye = torch.eye(stats.rank).expand(stats.num_classes, -1, -1)
    torch.testing.assert_close(u @ u.transpose(1, 2), eye, atol=2e-3, rtol=0)  # orthonormal again after int8
    # each row still points where the fitted eigenvector did (within int8 rounding)
    cos = (u * stats.basis.float()).sum(-1)
    assert float(cos.min()) > 0.999
    # a file of the first format (fp16 basis, as in earlier releases) still loads
    save_file({"mean": stats.mean.half(), "basis": stats.basis.half(), "eigvals": stats.eigvals,
               "total_var": stats.total_var, "counts": stats.counts},
              str(tmp_path / "v1.safetensors"), metadata={"format": "weat-init-stats", "version": "1",
                                                          "shape": "[3, 4, 4]", "classes": '["a", "b"]'})
    torch.testing.assert_close(ClassStats.load(tmp_path / "v1.safetensors").basis, stats.basis.half())


def test_class_stats_on_real_cifar(cifar_tarball):
    from weat_core.data import load_split

    data = load_split(cifar_tarball, "train", limit=400)
    stats = ClassStats.fit(data, max_variance=0.95)
    assert stats.shape == (3, 32, 32) and stats.num_classes == 10
    x = stats.sample(torch.arange(10).repeat_interleave(4), "pca", torch.Generator().manual_seed(0))
    assert x.shape == (40, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    # class means of the inits are close to the class means of the data
    for k in (0, 9):
        mu = data.float()[data.y == k].mean(0)
        assert float((stats.mean[k].view(3, 32, 32) - mu).abs().max()) < 1e-3


# ----------------------------------------------------------------------------- divergence


def test_nan_setting_is_caught_and_never_returned(trained_tiny):
    # an infinite step size (e.g. --step-size 1e999) makes the update inf·∇E: inf or NaN
    with pytest.raises(SamplingDiverged) as err:
        generate(trained_tiny, [0, 1], steps=3, step_size=float("inf"), init="uniform", seed=0)
    assert len(err.value.report) == 2 and err.value.report[0]["step"] == 1
    assert "non-finite" in err.value.report[0]["reason"]

    # a model that gives NaN for some inputs: only those chains stop, the rest finish
    x0 = torch.full((4, 3, 32, 32), 0.25)
    x0[1, 0, 0, 0] = 0.9
    x0[3, 0, 0, 0] = 0.9
    res = generate(NaNForClass(trained_tiny), [0, 1, 2, 3], steps=3, step_size=0.01, init=x0, seed=0)
    assert res.chain.tolist() == [0, 2] and res.labels.tolist() == [0, 2]
    assert torch.isfinite(res.images).all()
    assert [d["index"] for d in res.diverged] == [1, 3] and res.diverged[0]["step"] == 0
    assert torch.isnan(res.energies[:, 1]).all() and torch.isfinite(res.energies[:, 0]).all()
    trace = res.trace_dict()
    json.dumps(trace, allow_nan=False)  # NaN became null
    assert trace["chains"][1]["energy"][0] is None and trace["chains"][1]["finished"] is False


# -------------------------------------------------------------------------------- metrics


def test_offline_metrics():
    class ByChannel(nn.Module):  # predicts the class of the brightest channel
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(50.0))

        def forward(self, x):
            return self.scale * x.mean((2, 3))  # (B, 3)

    x = torch.zeros(6, 3, 4, 4)
    for i, c in enumerate([0, 1, 2, 0, 1, 2]):
        x[i, c] = 1.0
    a = classifier_agreement(ByChannel(), x, torch.tensor([0, 1, 2, 0, 1, 1]))
    assert a["agreement"] == pytest.approx(5 / 6, rel=1e-6) and a["per_class"][1] == pytest.approx(2 / 3, rel=1e-6)
    assert a["n"] == 6 and a["per_class"][0] == 1.0

    same = torch.rand(1, 3, 4, 4).repeat(5, 1, 1, 1)
    assert diversity(same, torch.zeros(5))["generated"] == pytest.approx(0.0, abs=1e-6)
    collapsed = diversity(same, torch.zeros(5), same, torch.zeros(5) + 1)  # no real image of its class
    assert collapsed["ratio"] is None
    collapsed = diversity(same, torch.zeros(5), torch.rand(3, 3, 4, 4), torch.zeros(3))
    assert collapsed["ratio"] == pytest.approx(0.0, abs=1e-6)  # collapse reads as 0, not as unknown
    two = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])  # distance √48
    real = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.5)]).mul(255).to(torch.uint8)
    d = diversity(two, torch.zeros(2), real, torch.zeros(2))
    assert d["generated"] == pytest.approx(math.sqrt(48), rel=1e-6)
    assert d["ratio"] == pytest.approx(2.0, rel=1e-2)


def test_feature_diversity_measures_distances_between_penultimate_features():
    """The features are what the last linear layer receives (here: ReLU(W1·x)); distances
    between them, per class, against real images' the same way."""
    from weat_core.sampling import penultimate_features

    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.rand(6, 3, 2, 2)
    with torch.no_grad():
        by_hand = torch.relu(x.flatten(1) @ clf[1].weight.T + clf[1].bias)
    torch.testing.assert_close(penultimate_features(clf, x, batch_size=4), by_hand)
    assert not clf._forward_pre_hooks and not clf[3]._forward_pre_hooks  # the hook is removed again
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    f = diversity(x, labels, x, labels, classifier=clf)  # the samples are the real images: ratio 1
    assert f["ratio"] == pytest.approx(1.0) and f["generated"] > 0
    d01 = torch.cdist(by_hand[:3].double(), by_hand[:3].double()).sum() / 6
    assert f["per_class"][0]["generated"] == pytest.approx(float(d01))
    same = diversity(x[:1].repeat(4, 1, 1, 1), torch.zeros(4), x, labels, classifier=clf)  # one image four times
    assert same["generated"] == pytest.approx(0.0, abs=1e-6) and same["ratio"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(WeatError, match="no final linear layer"):
        penultimate_features(nn.Sequential(nn.Flatten()), x)


def test_inception_metrics_without_weights_give_a_clear_error(monkeypatch):
    import urllib.error

    import torchmetrics.image.inception as tm_is

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tm_is, "InceptionScore", offline)
    with pytest.raises(WeatError, match="could not be downloaded"):
        inception_score(torch.rand(4, 3, 32, 32))


def test_inception_metrics_run_offline_from_a_pre_populated_torch_hub_cache(tmp_path, monkeypatch):
    """With torch-fidelity's weight file in the torch hub cache, IS and FID run with no network:
    the real torchmetrics/torch-fidelity path, fed an Inception-v3 of random weights written
    where the download would have put the real file (this machine cannot fetch it)."""
    pytest.importorskip("torch_fidelity")
    import socket

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from weat_core.sampling import fid
    from weat_core.sampling.metrics import INCEPTION_WEIGHTS

    # 1. an Inception-v3 state dict of the right layout, without any download
    with monkeypatch.context() as m:
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS)
    # 2. the network is gone; the metrics must read the cache
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*a, **k):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(12, 3, 32, 32, generator=g), torch.rand(12, 3, 32, 32, generator=g)
    mean, std = inception_score(a, splits=2, device="cpu")
    assert math.isfinite(mean) and mean >= 1.0 - 1e-4 and std >= 0  # IS = exp(E KL) ≥ 1
    same, other = fid(a, a, device="cpu"), fid(a, (b * 0.2).clamp(0, 1), device="cpu")
    assert abs(same) < 1e-2 and other > same


# ------------------------------------------------------------------------------------ CLI


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


@pytest.fixture
def tiny_checkpoint(tmp_path, trained_tiny) -> Path:
    d = tmp_path / "ckpt"
    checkpoints.save(trained_tiny, d, config={"dataset": "synthetic", "method": "weat-adv",
                                              "classes": [f"c{i}" for i in range(10)]})
    return d


def _image_folder(root: Path, n: int = 6) -> Path:
    from PIL import Image

    g = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(10):
            d = root / split / f"c{k}"
            d.mkdir(parents=True)
            for i in range(n):
                base = np.full((32, 32, 3), 20 * k + 30, np.uint8)
                Image.fromarray((base + g.integers(0, 40, (32, 32, 3))).astype(np.uint8)).save(d / f"{i}.png")
    return root


def test_parse_classes():
    names = ["cat", "dog", "ship"]
    assert parse_classes("0-2", 3, names) == [0, 1, 2]
    assert parse_classes("2,0", 3) == [0, 2]
    assert parse_classes("dog,Ship", 3, names) == [1, 2]
    assert parse_classes("all", 3) == [0, 1, 2]
    for bad in ("0-5", "horse", "", "2-1"):
        with pytest.raises(WeatError):
            parse_classes(bad, 3, names)


def test_cli_init_stats_generate_and_gen_eval_write_every_output(tmp_path, tiny_checkpoint, trained_tiny, capsys):
    data = _image_folder(tmp_path / "data")
    assert _run(["init-stats", "--checkpoint", str(tiny_checkpoint), "--dataset", str(data), "--quiet"]) == 0
    assert (tiny_checkpoint / STATS_NAME).is_file()
    assert (tiny_checkpoint / STATS_NAME).stat().st_size < 4 * 2**20

    out = tmp_path / "gen"
    assert _run(["generate", "--checkpoint", str(tiny_checkpoint), "--classes", "0-9", "--per-class", "2",
                 "--steps", "3", "--out", str(out), "--seed", "0", "--quiet"]) == 0
    assert (out / "grid.png").is_file()
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 20 and pngs[0].name == "0000_c0.png"
    with np.load(out / "samples.npz") as z:
        assert z["images"].shape == (20, 32, 32, 3) and z["images"].dtype == np.uint8
        assert z["labels"].tolist() == [k for k in range(10) for _ in range(2)]
    trace = json.loads((out / "energies.json").read_text())
    assert trace["settings"]["init"] == "pca" and trace["settings"]["steps"] == 3  # stats found beside the checkpoint
    assert len(trace["chains"]) == 20 and len(trace["chains"][0]["energy"]) == 4 and trace["seed"] == 0
    from PIL import Image

    with Image.open(out / "grid.png") as im:
        assert im.size == (2 * 34 + 2, 10 * 34 + 2)  # 2 columns (per class) × 10 rows, 2-px padding

    capsys.readouterr()
    assert _run(["gen-eval", "--samples", str(out), "--classifier", str(tiny_checkpoint), "--dataset", str(data),
                 "--no-inception", "--json", "--quiet"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n"] == 20 and 0 <= m["classifier"]["agreement"] <= 1
    assert m["classifier"]["method"] == json.loads((tiny_checkpoint / "config.json").read_text()).get("method", "?")
    assert m["diversity"]["real"] > 0 and "inception" in m["skipped"]
    assert m["feature_diversity"]["real"] > 0 and m["feature_diversity"]["ratio"] is not None
    assert _run(["gen-eval", "--samples", str(out), "--classifier", str(tiny_checkpoint), "--dataset", str(data),
                 "--no-inception", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "feature diversity" in text and f"classifier {tiny_checkpoint}, trained {m['classifier']['method']}" in text
    assert "standard classifier's features" not in text  # a robust judge needs no caveat
    judge = tmp_path / "standard-judge"  # the same weights, recorded as a standard model
    checkpoints.save(trained_tiny, judge, config={"dataset": "synthetic", "method": "standard",
                                                  "classes": [f"c{i}" for i in range(10)]})
    assert _run(["gen-eval", "--samples", str(out), "--classifier", str(judge), "--dataset", str(data),
                 "--no-inception", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "trained standard" in text and "a standard classifier's features hardly tell" in text


def test_cli_init_stats_share_one_file_between_checkpoints(tmp_path, trained_tiny, capsys):
    from weat_core.sampling import stats_path

    data = _image_folder(tmp_path / "data")
    cfg = {"dataset": "synthetic", "method": "sat", "classes": [f"c{i}" for i in range(10)]}
    a, b = tmp_path / "ck" / "a", tmp_path / "ck" / "b"
    checkpoints.save(trained_tiny, a, config=cfg)
    checkpoints.save(trained_tiny, b, config=cfg)
    shared = tmp_path / "ck" / "_shared" / "synthetic-init_stats.safetensors"
    assert _run(["init-stats", "--checkpoint", str(a), "--dataset", str(data), "--share", str(shared),
                 "--quiet"]) == 0
    assert shared.is_file() and not (a / STATS_NAME).exists()
    shutil.copy(shared, b / STATS_NAME)  # b has a copy beside it: the duplicate goes when b shares the file
    assert json.loads((a / "config.json").read_text())["init_stats"] == "../_shared/synthetic-init_stats.safetensors"
    assert _run(["init-stats", "--checkpoint", str(b), "--share", str(shared), "--quiet"]) == 0  # reused: no data
    assert not (b / STATS_NAME).exists() and "removed" in capsys.readouterr().out
    for d in (a, b):
        assert stats_path(d) == shared.resolve()
        model = checkpoints.load(str(d))
        assert ClassStats.for_model(model).rank == ClassStats.load(shared).rank
    out = tmp_path / "gen"
    assert _run(["generate", "--checkpoint", str(b), "--classes", "0", "--per-class", "2", "--steps", "2",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "energies.json").read_text())["settings"]["init"] == "pca"  # the shared stats

    # other statistics beside a checkpoint would win over the shared file: refused, nothing changed
    (b / STATS_NAME).write_bytes(b"not the shared statistics")
    with pytest.raises(WeatError, match="other statistics"):
        _run(["init-stats", "--checkpoint", str(b), "--share", str(shared), "--quiet"])
    assert (b / STATS_NAME).is_file()
    with pytest.raises(WeatError, match="safetensors"):
        _run(["init-stats", "--checkpoint", str(a), "--share", str(tmp_path / "x.bin"), "--quiet"])
    # a config naming a missing or non-safetensors file finds nothing
    for link in ("../_shared/missing.safetensors", "../../etc/passwd", 3):
        (a / "config.json").write_text(json.dumps({**json.loads((a / "config.json").read_text()), "init_stats": link}))
        assert stats_path(a) is None


def test_cli_generate_reports_diverged_chains(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "gen"
    argv = ["generate", "--checkpoint", str(tiny_checkpoint), "--classes", "0,1", "--per-class", "2", "--steps",
            "2", "--step-size", "1e999", "--init", "uniform", "--out", str(out), "--quiet"]
    with pytest.raises(SamplingDiverged):
        _run(argv)
    assert not (out / "images").exists() or not list((out / "images").glob("*.png"))


def test_fid_glue_with_a_custom_feature_extractor():
    from weat_core.sampling import fid

    class MeanColour(nn.Module):  # (B, 3, H, W) in [0, 1] → (B, 3) features
        def forward(self, x):
            return x.float().mean((2, 3)).double()

    g = torch.Generator().manual_seed(0)
    a = 0.4 + 0.1 * torch.rand(200, 3, 8, 8, generator=g)
    b = 0.4 + 0.1 * torch.rand(200, 3, 8, 8, generator=g)
    near = fid(a, b, feature=MeanColour(), device="cpu")
    far = fid(a, (b + 0.3).clamp(0, 1), feature=MeanColour(), device="cpu")
    assert 0 <= near < 1e-3 and far == pytest.approx(3 * 0.3**2, rel=0.05)  # ‖Δμ‖² dominates


def test_top_components_randomized_branch_matches_the_exact_spectrum():
    from weat_core.sampling.pca import top_components

    g = torch.Generator().manual_seed(0)
    n, d, r = 1100, 1100, 8  # past the exact SVD's 1024: the randomized branch
    signal = torch.randn(n, r, generator=g) * torch.linspace(10, 3, r)  # (n, r): strong, distinct variances
    x = signal @ torch.linalg.qr(torch.randn(d, r, generator=g))[0].T + 0.1 * torch.randn(n, d, generator=g)
    xc = x - x.mean(0)
    lam, vec = top_components(xc, r)
    exact = torch.linalg.svdvals(xc).pow(2) / (n - 1)
    assert lam.shape[0] >= r and vec.shape == (lam.shape[0], d)
    torch.testing.assert_close(lam[:r], exact[:r], rtol=1e-3, atol=0)
    assert bool((lam[:-1] >= lam[1:]).all())  # descending
    torch.testing.assert_close(vec[:r] @ vec[:r].T, torch.eye(r), atol=1e-4, rtol=0)

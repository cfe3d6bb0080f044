"""The model registry, parametrized over every registered architecture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from weat_core import WeatError
from weat_core.models import DEFAULT_CPU_ARCH, TIMM_PREFIX, Classifier, create_model, list_archs
from weat_core.models.layers import CIFAR10_MEAN, CIFAR10_STD

ARCHS = list_archs()
REPO = Path(__file__).resolve().parents[1]


def test_registry_contents():
    assert ARCHS == sorted(ARCHS)
    assert DEFAULT_CPU_ARCH in ARCHS
    assert {"weatnet_tiny", "weatnet_s", "resnet18", "preactresnet18", "wrn28_10", "wrn34_10"} <= set(ARCHS)


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_and_config(arch, num_classes):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=num_classes).eval()
    assert isinstance(model, Classifier)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, num_classes)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    cfg = model.config
    assert cfg["arch"] == arch and cfg["num_classes"] == num_classes and model.num_classes == num_classes
    assert cfg["mean"] == list(CIFAR10_MEAN) and cfg["std"] == list(CIFAR10_STD)


@pytest.mark.parametrize("arch", ARCHS)
def test_timm_registration_builds_the_same_architecture(arch):
    timm = pytest.importorskip("timm")
    assert timm.is_model(TIMM_PREFIX + arch)
    ours = create_model(arch, num_classes=100).state_dict()
    theirs = timm.create_model(TIMM_PREFIX + arch, num_classes=100).state_dict()
    assert list(theirs) == list(ours)
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    with pytest.raises(ValueError, match="checkpoints.load"):
        timm.create_model(TIMM_PREFIX + arch, pretrained=True)


def test_timm_forwards_architecture_kwargs():
    timm = pytest.importorskip("timm")
    model = timm.create_model(TIMM_PREFIX + "weatnet_s", num_classes=7, width=8)
    assert model.config["arch_kwargs"] == {"width": 8} and model.num_classes == 7
    assert model.state_dict().keys() == create_model("weatnet_s", num_classes=7, width=8).state_dict().keys()
    assert model.net.linear.in_features == 64  # 8·width


@pytest.mark.parametrize("timm_first", [False, True])
def test_timm_registration_without_importing_timm_early(timm_first):
    """Importing our models leaves timm (3 s: torchvision, torch._dynamo) unloaded; the architectures
    join timm's registry when timm is imported later, or at once when it was imported first, and the
    import hook is gone afterwards. A fresh interpreter each, as a user's script would start."""
    pytest.importorskip("timm")
    code = (
        "import sys\n"
        + ("import timm\n" if timm_first else "")
        + "import weat_core.models as M\n"
        "print('early', 'timm' in sys.modules, 'torchvision' in sys.modules)\n"
        "M.create_model('weatnet_tiny')\n"
        "import timm\n"
        "print('registered', all(timm.is_model(M.TIMM_PREFIX + a) for a in M.list_archs()))\n"
        "print('built', type(timm.create_model('weat_weatnet_tiny', num_classes=3)).__name__)\n"
        "print('hooks', sum(type(f).__name__ == '_RegisterWhenTimmLoads' for f in sys.meta_path))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == ("early True True" if timm_first else "early False False")
    assert lines[1:4] == ["registered True", "built Classifier", "hooks 0"]


def test_timm_prefix_accepted_by_create_model():
    assert create_model(TIMM_PREFIX + "weatnet_tiny").config["arch"] == "weatnet_tiny"


def test_unknown_arch_or_option_is_a_clear_error():
    with pytest.raises(WeatError, match="unknown architecture 'resnet1000'.*weatnet_tiny"):
        create_model("resnet1000")
    with pytest.raises(WeatError, match="'weatnet_tiny' does not take the options {'depth': 3}"):
        create_model("weatnet_tiny", depth=3)


def test_normalization_lives_inside_the_model(seeded):
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    model = create_model("weatnet_tiny", num_classes=10, mean=mean, std=std).eval()
    assert model.config["mean"] == list(mean) and model.config["std"] == list(std)
    assert model.normalize.mean.flatten().tolist() == pytest.approx(mean)
    assert model.normalize.std.flatten().tolist() == pytest.approx(std)
    # the normalisation statistics are buffers (saved with the weights), not parameters
    names = dict(model.named_buffers())
    assert "normalize.mean" in names and "normalize.std" in names
    assert not any(n.startswith("normalize.") for n, _ in model.named_parameters())

    x = torch.rand(3, 3, 32, 32)
    by_hand = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(model.normalize(x), by_hand)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(by_hand))


def test_default_normalization_is_cifar10():
    model = create_model("weatnet_tiny")
    x = torch.full((1, 3, 32, 32), 0.5)
    want = torch.tensor([(0.5 - m) / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)]).view(1, 3, 1, 1).expand_as(x)
    torch.testing.assert_close(model.normalize(x), want)


def test_weatnet_widths():
    tiny = create_model("weatnet_tiny")
    s = create_model("weatnet_s")
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(tiny) < 30_000
    assert 500_000 < n_params(s) < 800_000  # docstring: ≈0.66 M
    assert create_model("weatnet_s", width=8).config["arch_kwargs"] == {"width": 8}


def test_model_follows_input_dtype_double():
    model = create_model("weatnet_tiny").double().eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64

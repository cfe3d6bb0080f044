"""Checkpoints: safetensors round trips, every way of naming a checkpoint, refusal of pickled
code, clear errors, the catalogue, and offline Hugging Face Hub loading from the local cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from weat_core import WeatError
from weat_core.checkpoints import CONFIG_NAME, INDEX_NAME, WEIGHTS_NAME, list_checkpoints, load, load_state_dict, save
from weat_core.models import create_model

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def model(seeded):
    """weatnet_tiny with non-trivial BatchNorm running statistics (so buffers must round-trip)."""
    m = create_model("weatnet_tiny", num_classes=10)
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(8, 3, 32, 32))
    return m.eval()


@pytest.fixture
def x():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def logits(m, x):
    with torch.no_grad():
        return m.eval()(x)


# ---- round trips -------------------------------------------------------------------------


def test_round_trip_fp32(model, x, tmp_path):
    d = save(model, tmp_path / "ck", config={"dataset": "cifar10", "method": "trades", "metrics": {"pgd20": 0.5}})
    assert (d / WEIGHTS_NAME).is_file() and (d / CONFIG_NAME).is_file()
    cfg = json.loads((d / CONFIG_NAME).read_text())
    assert cfg["arch"] == "weatnet_tiny" and cfg["num_classes"] == 10 and cfg["weights_dtype"] == "float32"
    loaded = load(d)
    assert not loaded.training and all(not m.training for m in loaded.modules())
    assert torch.equal(logits(loaded, x), logits(model, x))
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)  # BatchNorm running stats included
    assert loaded.config["dataset"] == "cifar10" and loaded.config["method"] == "trades"
    assert loaded.config["metrics"] == {"pgd20": 0.5}
    assert loaded.config["source"] == str(d)


def test_round_trip_fp16(model, x, tmp_path):
    from safetensors import safe_open

    d = save(model, tmp_path / "half", dtype=torch.float16)
    with safe_open(str(d / WEIGHTS_NAME), "pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes["net.linear.weight"] == torch.float16
    assert dtypes["normalize.mean"] == torch.float32  # normalisation statistics stay exact
    assert dtypes["net.features.1.num_batches_tracked"] == torch.int64
    assert json.loads((d / CONFIG_NAME).read_text())["weights_dtype"] == "float16"
    loaded = load(d)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())  # upcast on load
    torch.testing.assert_close(logits(loaded, x), logits(model, x), rtol=2e-2, atol=2e-2)
    assert not torch.equal(logits(loaded, x), logits(model, x))  # it really went through fp16


def test_round_trip_sharded(model, x, tmp_path):
    d = save(model, tmp_path / "sharded", max_shard_size=20_000)
    shards = sorted(d.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and (d / INDEX_NAME).is_file() and not (d / WEIGHTS_NAME).exists()
    assert torch.equal(logits(load(d), x), logits(model, x))


def test_resave_unsharded_over_sharded_loads_the_new_weights(model, x, tmp_path):
    d = save(model, tmp_path / "ck", max_shard_size=20_000)
    other = create_model("weatnet_tiny", num_classes=10).eval()
    save(other, d)
    assert not (d / INDEX_NAME).exists()
    assert torch.equal(logits(load(d), x), logits(other, x))


def test_save_needs_arch_and_num_classes(tmp_path):
    with pytest.raises(ValueError):
        save(torch.nn.Linear(2, 2), tmp_path / "bad")


# ---- what `load` accepts ------------------------------------------------------------------


def test_load_weights_file_path(model, x, tmp_path):
    d = save(model, tmp_path / "ck")
    assert torch.equal(logits(load(d / WEIGHTS_NAME), x), logits(model, x))
    assert torch.equal(logits(load(str(d)), x), logits(model, x))


def test_load_training_run_with_latest_pointer(model, x, tmp_path):
    run = tmp_path / "run"
    old = create_model("weatnet_tiny", num_classes=10).eval()
    save(old, run / "ckpt-0001")
    save(model, run / "ckpt-0002")
    (run / "LATEST").write_text("ckpt-0002\n")
    assert torch.equal(logits(load(run), x), logits(model, x))
    (run / "LATEST").write_text("ckpt-0001")
    assert torch.equal(logits(load(run), x), logits(old, x))


def test_load_by_shipped_name_from_env_dir(model, x, tmp_path, monkeypatch):
    save(model, tmp_path / "zoo" / "tiny-test-ckpt")
    monkeypatch.setenv("WEAT_CHECKPOINTS_DIR", str(tmp_path / "zoo"))
    monkeypatch.chdir(tmp_path)
    assert torch.equal(logits(load("tiny-test-ckpt"), x), logits(model, x))


@pytest.mark.parametrize("wrapped", ["plain", "state_dict", "ddp"])
def test_load_torch_save_state_dict(wrapped, model, x, tmp_path):
    d = tmp_path / "pt"
    d.mkdir()
    (d / CONFIG_NAME).write_text(json.dumps(model.config))
    sd = model.state_dict()
    obj = {"plain": sd, "state_dict": {"state_dict": sd}, "ddp": {f"module.{k}": v for k, v in sd.items()}}[wrapped]
    torch.save(obj, d / "weights.pt")
    assert torch.equal(logits(load(d / "weights.pt"), x), logits(model, x))
    assert torch.equal(logits(load(d), x), logits(model, x))


class Evil:
    """Unpickling this object runs `open(marker, "w")`, i.e. creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_malicious_pickle_is_refused(suffix, model, tmp_path):
    d = tmp_path / "evil"
    d.mkdir()
    (d / CONFIG_NAME).write_text(json.dumps(model.config))
    marker = tmp_path / "pwned"
    torch.save({"net.linear.weight": Evil(marker)}, d / f"weights{suffix}")

    for source in (d / f"weights{suffix}", d):
        with pytest.raises(WeatError, match="refused to load") as err:
            load(source)
        assert "weights_only" in str(err.value) or "safetensors" in str(err.value)
        assert not marker.exists()
    with pytest.raises(WeatError):
        load_state_dict(d / f"weights{suffix}")
    assert not marker.exists()

    # control: the payload is real (an unsafe torch.load does create a marker)
    control = tmp_path / "control"
    torch.save({"w": Evil(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()


def test_pickle_of_non_tensors_is_refused(model, tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / CONFIG_NAME).write_text(json.dumps(model.config))
    torch.save({"epoch": 3, "lr": 0.1}, d / "weights.pt")  # loads with weights_only, but holds no tensors
    with pytest.raises(WeatError, match="refused to load weights.pt"):
        load(d / "weights.pt")


def test_garbage_safetensors_is_a_weat_error(model, tmp_path):
    d = save(model, tmp_path / "ck")
    (d / WEIGHTS_NAME).write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeatError, match="not a readable safetensors"):
        load(d)


def test_unsupported_weights_suffix(model, tmp_path):
    d = save(model, tmp_path / "ck")
    (d / "weights.npz").write_bytes(b"\0")
    with pytest.raises(WeatError, match="unsupported weights file"):
        load(d / "weights.npz")


# ---- clear errors -------------------------------------------------------------------------


def test_wrong_shape_is_a_clear_error(tmp_path):
    d = save(create_model("weatnet_tiny", num_classes=100), tmp_path / "ck")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    cfg["num_classes"] = 10
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(WeatError) as err:
        load(d)
    msg = str(err.value)
    assert "weatnet_tiny" in msg and "10 classes" in msg
    assert "net.linear" in msg and "100" in msg


def test_wrong_arch_is_a_clear_error(model, tmp_path):
    d = save(model, tmp_path / "ck")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    cfg["arch"] = "weatnet_s"
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(WeatError, match="do not fit a weatnet_s"):
        load(d)


def test_missing_config_is_a_clear_error(model, tmp_path):
    d = save(model, tmp_path / "ck")
    (d / CONFIG_NAME).unlink()
    with pytest.raises(WeatError, match="config.json"):
        load(d)
    with pytest.raises(WeatError, match="config.json"):
        load(d / WEIGHTS_NAME)


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.pop("arch"), "lacks the field 'arch'"),
    (lambda c: c.update(arch="resnet1000"), "cannot build"),
    (lambda c: c.update(arch_kwargs={"depth": 3}), "cannot build"),
])
def test_bad_config_is_a_clear_error(edit, match, model, tmp_path):
    d = save(model, tmp_path / "ck")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    edit(cfg)
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(WeatError, match=match):
        load(d)


def test_invalid_json_config(model, tmp_path):
    d = save(model, tmp_path / "ck")
    (d / CONFIG_NAME).write_text("{not json")
    with pytest.raises(WeatError, match="not valid JSON"):
        load(d)


def test_folder_without_weights(model, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / CONFIG_NAME).write_text(json.dumps(model.config))
    with pytest.raises(WeatError, match="holds no model.safetensors"):
        load(d)


def test_unknown_local_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeatError, match="no checkpoint 'no-such-model'"):
        load("no-such-model")


def test_robustbench_models_load_through_the_optional_package(monkeypatch):
    """`robustbench:NAME[:DATASET[:THREAT]]` goes to robustbench.utils.load_model (a stand-in
    module here: the package is optional and downloads), and comes back in eval mode with a config
    the app reads; without the package, or when it fails, one clear error."""
    import types

    monkeypatch.setitem(sys.modules, "robustbench", None)  # not installed
    with pytest.raises(WeatError, match="optional robustbench package"):
        load("robustbench:Wong2020Fast")

    asked = []

    def load_model(model_name, dataset, threat_model):
        asked.append((model_name, dataset, threat_model))
        if model_name == "Missing":
            raise KeyError(model_name)
        # a plain module, as RobustBench's are
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 100 if dataset == "cifar100" else 10))

    utils = types.ModuleType("robustbench.utils")
    utils.load_model = load_model
    monkeypatch.setitem(sys.modules, "robustbench", types.ModuleType("robustbench"))
    monkeypatch.setitem(sys.modules, "robustbench.utils", utils)
    m = load("robustbench:Wong2020Fast")
    assert asked[-1] == ("Wong2020Fast", "cifar10", "Linf") and not m.training
    assert m.config["method"] == "robustbench (Linf)" and m.config["num_classes"] == 10
    m = load("robustbench:Rade2021Helper:cifar100:L2")
    assert asked[-1] == ("Rade2021Helper", "cifar100", "L2") and m.config["num_classes"] == 100
    assert m.config["source"] == "robustbench:Rade2021Helper:cifar100:L2" and m(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(WeatError, match="RobustBench could not load 'Missing'"):
        load("robustbench:Missing")


# ---- the catalogue ------------------------------------------------------------------------


def test_list_checkpoints_in_env_dir(model, tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    save(model, zoo / "b-tiny-trades", config={"dataset": "cifar10", "method": "trades",
                                               "metrics": {"clean": 0.8, "pgd20": 0.45}})
    save(create_model("weatnet_tiny", num_classes=100), zoo / "a-tiny-weat",
         config={"dataset": "cifar100", "method": "weat-adv", "metrics": {"aa": 0.25}})
    (zoo / "not-a-checkpoint").mkdir()
    monkeypatch.setenv("WEAT_CHECKPOINTS_DIR", str(zoo))
    infos = {c.name: c for c in list_checkpoints()}
    assert {"a-tiny-weat", "b-tiny-trades"} <= set(infos) and "not-a-checkpoint" not in infos
    names = [c.name for c in list_checkpoints()]
    assert names == sorted(names)
    a, b = infos["a-tiny-weat"], infos["b-tiny-trades"]
    assert (a.arch, a.dataset, a.method, a.num_classes, a.metrics) == ("weatnet_tiny", "cifar100", "weat-adv", 100,
                                                                       {"aa": 0.25})
    assert (b.arch, b.dataset, b.method, b.num_classes) == ("weatnet_tiny", "cifar10", "trades", 10)
    assert b.metrics == {"clean": 0.8, "pgd20": 0.45} and b.path == zoo / "b-tiny-trades"
    row = b.to_dict()
    assert row["name"] == "b-tiny-trades" and row["pgd20"] == 0.45 and row["method"] == "trades"


def test_list_checkpoints_skips_broken_config(model, tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    save(model, zoo / "good")
    (zoo / "broken").mkdir()
    (zoo / "broken" / CONFIG_NAME).write_text("{")
    monkeypatch.setenv("WEAT_CHECKPOINTS_DIR", str(zoo))
    names = [c.name for c in list_checkpoints()]
    assert "good" in names and "broken" not in names


# ---- Hugging Face Hub, offline, from a pre-populated cache ------------------------------

HUB_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from safetensors.torch import load_file, save_file
    from weat_core import WeatError
    from weat_core.checkpoints import load

    x = load_file(sys.argv[1])["x"]
    pinned = sys.argv[3]
    out, errors = {}, {}
    for key, source, revision in [("main", "owner/tiny", None), ("pinned", "owner/tiny", pinned)]:
        out[key] = load(source, revision=revision)(x).detach().contiguous()
    for key, source, revision in [("unknown_repo", "owner/not-cached", None),
                                  ("unknown_revision", "owner/tiny", "0" * 40)]:
        try:
            load(source, revision=revision)
            errors[key] = None
        except WeatError as e:
            errors[key] = str(e)
    save_file(out, sys.argv[2])
    print(json.dumps(errors))
    """
)


def _fake_hub_repo(cache: Path, repo_id: str, commits: dict[str, Path], main: str) -> None:
    """The huggingface_hub cache layout: models--owner--name/{refs/main, blobs/, snapshots/<sha>/}
    with snapshot files as symlinks into blobs/, as `snapshot_download` leaves them."""
    import hashlib

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs" / "main").write_text(main)  # no newline, like the real thing
    for sha, src in commits.items():
        snap = repo / "snapshots" / sha
        snap.mkdir(parents=True)
        for f in src.iterdir():
            data = f.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))


def test_hub_offline_from_local_cache(model, x, tmp_path):
    from safetensors.torch import load_file, save_file

    other = create_model("weatnet_tiny", num_classes=10).eval()
    sha_main, sha_old = "a" * 40, "0123456789abcdef0123456789abcdef01234567"
    save(model, tmp_path / "export-main")
    save(other, tmp_path / "export-old")
    cache = tmp_path / "hf" / "hub"
    _fake_hub_repo(cache, "owner/tiny", {sha_main: tmp_path / "export-main", sha_old: tmp_path / "export-old"},
                   main=sha_main)
    save_file({"x": x}, tmp_path / "x.safetensors")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(cache),
               HF_HUB_DISABLE_TELEMETRY="1", WEAT_CHECKPOINTS_DIR=str(tmp_path / "no-zoo"),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    (tmp_path / "script.py").write_text(HUB_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "script.py"), str(tmp_path / "x.safetensors"),
         str(tmp_path / "out.safetensors"), sha_old],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    out = load_file(tmp_path / "out.safetensors")

    assert torch.equal(out["main"], logits(model, x))  # by repo id: refs/main → sha_main
    assert torch.equal(out["pinned"], logits(other, x))  # revision=<sha> pins the older commit
    msg = errors["unknown_repo"]
    assert msg is not None and "owner/not-cached" in msg and "cache" in msg
    assert "\n" not in msg and "Traceback" not in msg
    msg = errors["unknown_revision"]
    assert msg is not None and "owner/tiny" in msg and "0" * 40 in msg


# ---- publishing on the Hub (`push`) ----------------------------------------------------------


def test_push_stages_a_folder_that_stands_on_its_own(tmp_path):
    """What `push` uploads: the shipped checkpoint's weights (every shard and the index), config,
    log and card, with the SGLD statistics it shares from checkpoints/_shared/ copied in (the Hub
    copy cannot point outside itself) and the card led by the Hub's metadata block; the copy
    gives exactly the shipped model's logits. A folder without weights or a bad repo id is refused."""
    from weat_core.export.hub import stage
    from weat_core.sampling.class_stats import STATS_NAME, ClassStats, stats_path

    for name in ("weatnet_s-weat-adv", "preactresnet18-trades"):  # one file, and two shards with an index
        src = REPO_ROOT / "checkpoints" / name
        dest = stage(name, tmp_path / name, "owner/" + name)
        shipped = {f.name for f in src.glob("model*")} | {"config.json", "log.jsonl", "README.md", STATS_NAME}
        assert {f.name for f in dest.iterdir()} == shipped
        cfg, ours = json.loads((dest / "config.json").read_text()), json.loads((src / "config.json").read_text())
        assert "init_stats" in ours and cfg == {k: v for k, v in ours.items() if k != "init_stats"}
        assert stats_path(dest) == dest / STATS_NAME and ClassStats.load(dest).num_classes == 10
        card = (dest / "README.md").read_text()
        assert card.startswith("---\npipeline_tag: image-classification\n") and "\ndatasets:\n- cifar10\n---\n# " in card
        assert f'load("owner/{name}")' in card and card.endswith((src / "README.md").read_text().partition("\n")[2])
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        assert torch.equal(logits(load(dest), x), logits(load(name), x))
    own = tmp_path / "own-card"  # a card with a metadata block of its own keeps it, the loading line after it
    shutil.copytree(REPO_ROOT / "checkpoints" / "weatnet_s-sat", own)
    (own / "README.md").write_text("---\nlicense: mit\n---\n# mine\n\ntext\n")
    card = (stage(str(own), tmp_path / "own-staged", "owner/mine") / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\n---\n# mine\n\nLoad it with") and card.endswith("\ntext\n")
    with pytest.raises(WeatError, match="no model.safetensors"):
        stage(str(REPO_ROOT / "checkpoints" / "_runs" / "weatnet_s-sat-1k-step-eps2"), tmp_path / "run")
    with pytest.raises(WeatError, match="not a Hub repo id"):
        stage("weatnet_s-weat-adv", tmp_path / "bad", "not an id")
    with pytest.raises(WeatError, match="not empty"):
        stage("weatnet_s-weat-adv", tmp_path / "weatnet_s-weat-adv")


def test_push_uploads_what_loads_back_by_repo_id(model, x, tmp_path, monkeypatch, fake_hf_api):
    """`push` creates the repo and uploads the staged folder through huggingface_hub's HfApi
    (here a stand-in that files the upload in a local Hub cache, as a download would leave it);
    loading the repo id from that cache, offline, gives the pushed model's logits."""
    import huggingface_hub
    from safetensors.torch import load_file, save_file

    from weat_core.export import hub

    calls = fake_hf_api
    calls["on_upload"] = lambda repo_id, folder: _fake_hub_repo(tmp_path / "hf" / "hub", repo_id, {"b" * 40: folder},
                                                                main="b" * 40)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    save(model, tmp_path / "mine", config={"dataset": "cifar10", "method": "trades"})
    url = hub.push_checkpoint(str(tmp_path / "mine"), "owner/pushed", private=True, message="first")
    assert url.endswith("/owner/pushed/commit/" + "b" * 40)
    assert calls["create"] == ("owner/pushed", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls["upload"][1] == ["README.md", "config.json", "model.safetensors"]
    assert calls["upload"][2] == {"repo_type": "model", "revision": None, "commit_message": "first"}
    assert "branch" not in calls  # main
    hub.push_checkpoint(str(tmp_path / "mine"), "owner/other", revision="v2")
    assert calls["branch"] == ("owner/other", {"branch": "v2", "repo_type": "model", "exist_ok": True})
    assert calls["upload"][2] == {"repo_type": "model", "revision": "v2", "commit_message": "Upload mine from WEAT Lens"}

    save_file({"x": x}, tmp_path / "x.safetensors")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
               WEAT_CHECKPOINTS_DIR=str(tmp_path / "no-zoo"),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    script = ("import sys, torch; from safetensors.torch import load_file, save_file; "
              "from weat_core.checkpoints import load; m = load('owner/pushed'); "
              "save_file({'y': m(load_file(sys.argv[1])['x']).detach().contiguous()}, sys.argv[2])")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.safetensors"), str(tmp_path / "y.safetensors")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.equal(load_file(tmp_path / "y.safetensors")["y"], logits(model, x))


def test_push_without_a_token_or_offline_says_what_to_do(model, tmp_path):
    """The real huggingface_hub, no stand-in: without a token `push` says how to log in; with
    HF_HUB_OFFLINE it says to unset it (in a process of its own: the Hub reads it at import);
    neither leaves a traceback."""
    save(model, tmp_path / "mine", config={"dataset": "cifar10", "method": "trades"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-m", "weat_core", "push", "--checkpoint", str(tmp_path / "mine"), "--repo", "owner/pushed"]
    for extra, says in [({}, "hf auth login"), ({"HF_TOKEN": "hf_not_a_real_token", "HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE")]:
        proc = subprocess.run(cmd, cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


# ---- the repository's own shipped folders ---------------------------------------------------

SHIPPED_CONFIGS = sorted((REPO_ROOT / "checkpoints").glob("*/config.json")) + sorted(
    (REPO_ROOT / "checkpoints" / "_runs").glob("*/config.json"))


@pytest.mark.parametrize("cfg_file", SHIPPED_CONFIGS, ids=lambda p: p.parent.name)
def test_shipped_retrain_commands_name_data_a_fresh_clone_has(cfg_file):
    """Every shipped card's re-train command must run from a fresh clone: its datasets are names
    torchvision downloads or the shared CIFAR-10 copy beside the repository, never a folder that
    only existed where the run was made (the GPU scripts' `.data/` copy, a /tmp path); and the
    card shows the same command as config.json."""
    import shlex

    cfg = json.loads(cfg_file.read_text())
    command = (cfg.get("reproduce") or {}).get("train")
    assert command, f"{cfg_file} has no re-train command"
    words = shlex.split(command.replace(" && ", " "))
    datasets = [words[i + 1] for i, w in enumerate(words) if w == "--dataset"]
    assert datasets and all(d in ("cifar10", "cifar100", "svhn", "tinyimagenet") or d.startswith("../shared/data/")
                            for d in datasets), datasets
    card = (cfg_file.parent / "README.md").read_text()
    assert all(stage in card for stage in command.split(" && "))  # a fine-tuned model's card lists its stages
    assert not str(cfg.get("eval_dataset", "")).startswith((".data", "/"))
    if not cfg.get("recorded"):  # a folder with weights: its re-measure commands use the data it was measured on
        data = cfg.get("eval_dataset", "")
        for key in ("eval", "eval_aa", "sweep", "landscape"):
            cmd = cfg["reproduce"].get(key)
            if cmd:
                assert cmd in card and (data in ("", "cifar10") or f" --dataset {data} " in cmd), (key, cmd)



def _parses_back(t: dict) -> None:
    """`train`'s own argument parser, given the re-train command of settings `t`, gives back
    every setting: those left at their defaults and those not (compiled or not, bf16 or not,
    momentum, weight decay, warm-up)."""
    import shlex

    from weat_core.cli import build_parser
    from weat_core.export.card import _train_command
    from weat_core.train import TrainConfig

    argv = shlex.split(_train_command(t))
    assert argv[:4] == ["python", "-m", "weat_core", "train"]
    a = build_parser().parse_args(argv[3:])
    defaults = TrainConfig()
    for key in ("method", "arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "warmup",
                "attack_steps", "beta", "seed", "eval_size", "eval_steps", "limit", "amp", "channels_last"):
        assert getattr(a, key) == t.get(key, getattr(defaults, key)), key
    assert a.compile == bool(t.get("compile") or t.get("compile_mode")) and a.compile_mode == t.get("compile_mode")
    for key in ("eps", "alpha"):
        num, den = getattr(a, key).split("/")
        assert float(num) / float(den) == pytest.approx(t[key], abs=1e-6), key


def test_the_retrain_command_gives_back_every_setting_of_a_run():
    every = {"method": "trades", "arch": "weatnet_tiny", "dataset": "cifar10", "epochs": 7, "batch_size": 96,
             "lr": 0.3, "momentum": 0.8, "weight_decay": 1e-4, "schedule": "cosine", "warmup": 0.1, "eps": 4 / 255,
             "alpha": 1 / 255, "attack_steps": 3, "beta": 5.0, "seed": 4, "eval_size": 64, "eval_steps": 2,
             "limit": 500, "amp": False, "channels_last": False, "compile": True, "compile_mode": "reduce-overhead"}
    _parses_back(every)
    _parses_back({**every, "amp": True, "compile": False, "compile_mode": None, "channels_last": True})
    _parses_back({**every, "eps": 2 / 255, "alpha": 0.5 / 255})  # a step under 1/255 once became "0/255"


@pytest.mark.parametrize("cfg_file", SHIPPED_CONFIGS, ids=lambda p: p.parent.name)
def test_shipped_retrain_commands_give_back_the_settings(cfg_file):
    """Each shipped folder's settings (every stage of a fine-tuned one) survive the trip through
    its re-train command."""
    cfg = json.loads(cfg_file.read_text())
    for t in cfg.get("stages") or [cfg["training"]]:
        _parses_back(t)

@pytest.mark.parametrize("cfg_file", SHIPPED_CONFIGS, ids=lambda p: p.parent.name)
def test_shipped_cards_are_what_the_code_writes_from_their_config_and_log(cfg_file):
    """Every shipped card is the one `model_card` writes now from the folder's config.json and
    log.jsonl, so a change to the cards' wording or numbers reaches every shipped folder (rewrite
    them with `model_card` when this fails) and no card keeps a number its config no longer has."""
    from weat_core.export.card import _read_log, model_card

    d = cfg_file.parent
    assert (d / "README.md").read_text() == model_card(d.name, json.loads(cfg_file.read_text()), _read_log(d / "log.jsonl"))


SHIPPED_WEIGHTS = [c.parent.name for c in sorted((REPO_ROOT / "checkpoints").glob("*/config.json"))
                   if any(c.parent.glob("model*.safetensors"))]


@pytest.fixture(scope="module")
def first_test_images(cifar_tarball):
    from weat_core.data import load_split

    return load_split(cifar_tarball, "test", limit=500)  # the first 500, as `eval --n 500` takes them


@pytest.mark.parametrize("name", SHIPPED_WEIGHTS)
def test_shipped_weights_classify_as_their_card_says(name, first_test_images):
    """Each shipped model, loaded by name (fp16 shards and all), classifies the first 500 test
    images within four binomial standard errors (about 8 points) of the clean accuracy its card
    stores for all 10,000: a wrong shard, a lost normalisation or a broken fp16 conversion lands
    near 10 %."""
    model = load(name)
    cfg = json.loads((REPO_ROOT / "checkpoints" / name / "config.json").read_text())
    stored = cfg["metrics"]["clean_acc"]
    x, y = first_test_images.float(), first_test_images.y
    with torch.no_grad():
        acc = sum((model(x[i:i + 250]).argmax(1) == y[i:i + 250]).sum().item() for i in range(0, len(y), 250)) / len(y)
    se = (stored * (1 - stored) / len(y)) ** 0.5
    assert abs(acc - stored) <= 4 * se, f"{name}: {acc:.1%} on the first 500 against {stored:.1%} stored"


def test_card_gives_the_median_epochs_speed_beside_the_last():
    """Runs that share a device speed up as the others finish, so a card's images/s is its median
    epoch's, with the last epoch's beside it (a one- or two-epoch run gives the last alone)."""
    from dataclasses import asdict

    from weat_core.export.card import model_card
    from weat_core.train import TrainConfig

    cfg = {"arch": "weatnet_tiny", "method": "sat", "dataset": "cifar10",
           "training": asdict(TrainConfig(method="sat", arch="weatnet_tiny", dataset="cifar10", epochs=3))}
    recs = [{"epoch": e, "img_per_s": v, "time_s": 10.0} for e, v in ((1, 100.0), (2, 300.0), (3, 400.0))]
    assert "images/s on the training machine: 300 in the median epoch, 400 in the last," in model_card("x", cfg, recs)
    assert "images/s on the training machine: 300, total" in model_card("x", cfg, recs[:2])


def test_card_names_exactly_the_measurements_it_gives_commands_for():
    """The card's Re-measure section names what its commands measure, no more: a folder with no
    sweep stored must not promise "the ε sweep" (as the 100-epoch WEAT-adv's first card did)."""
    from weat_core.export.card import model_card

    cfg = {"arch": "weatnet_tiny", "method": "sat", "dataset": "cifar10", "reproduce": {}}

    def said(*keys):
        cfg["reproduce"] = {k: f"python -m weat_core {k} ..." for k in keys}
        card = model_card("x", cfg, [])
        return card[card.index("## Re-measure"):].split("\n")[2]

    assert said("eval") == "The stored metrics come from:"
    assert said("eval_aa") == "The AutoAttack number comes from:"
    assert said("eval", "eval_aa") == "The stored metrics and the AutoAttack number come from:"
    assert said("eval", "eval_aa", "sweep", "landscape", "plane") == (
        "The stored metrics, the AutoAttack number, the ε sweep, the attacks of Observation 1 and the energy "
        "around each image come from:")

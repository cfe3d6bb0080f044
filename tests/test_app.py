"""Every page of the Streamlit app under streamlit.testing (AppTest), with a tiny checkpoint in a
temporary WEAT_CHECKPOINTS_DIR and a tiny ImageFolder dataset as WEAT_DATA_DIR."""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

APP = Path(__file__).resolve().parent.parent / "app.py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TIMEOUT = 60


def make_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """root/{train,test}/<class>/NNN.png: each class a noisy flat colour, 32×32."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for k, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            base = np.array([(37 * k) % 256, (91 * k) % 256, (173 * k) % 256], dtype=np.float64)
            for i in range(n):
                a = np.clip(base + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i:03d}.png")
    return root


def make_checkpoint(root: Path, data_dir: Path, name: str = "tiny-weat-adv") -> Path:
    """A weatnet_tiny checkpoint with a training log and (when available) SGLD init statistics."""
    from weat_core.checkpoints import save
    from weat_core.models import create_model

    torch.manual_seed(0)
    model = create_model("weatnet_tiny", num_classes=10)
    d = save(model, root / name, {"dataset": "cifar10", "method": "weat-adv", "classes": list(CLASSES),
                                  "metrics": {"test_clean_acc": 0.5, "test_pgd_acc": 0.3, "delta_e": -0.1,
                                              "plane_span": {"mean": 0.5, "se": 0.01, "median": 0.45, "n": 64,
                                                             "steps": 10, "grid": 9}}})
    recs = []
    for e in range(1, 9):
        rob = 0.2 + 0.03 * e if e <= 5 else 0.35 - 0.03 * (e - 5)
        recs.append({"epoch": e, "lr": 0.1 * min(e, 2) / 2, "test_clean_acc": 0.3 + 0.05 * e, "test_pgd_acc": rob,
                     "energy_nat_mean": -3.0 - 0.1 * e, "energy_adv_mean": -3.0 - 0.1 * e + 0.05 * max(0, e - 5),
                     "delta_e": -0.05 * max(0, e - 5), "loss": 2.0 - 0.1 * e, "stage": 1 if e <= 6 else e - 5})  # stages 1 (epochs 1-6), 2 (7), 3 (8)
    (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    try:
        from weat_core.sampling.class_stats import ClassStats
    except ImportError:
        return d
    # Small rank-4 statistics built directly (fitting 10 full 3072×3072 covariances takes a minute).
    from weat_core.data import load_split

    s = load_split(data_dir, "train")
    x = s.float().flatten(1)  # (N, D)
    mean = torch.stack([x[s.y == k].mean(0) for k in range(10)])
    basis = torch.linalg.qr(torch.randn(x.shape[1], 4, generator=torch.Generator().manual_seed(0)))[0].T
    ClassStats(mean, basis.expand(10, 4, -1).half().contiguous(), torch.full((10, 4), 0.5).sort(1, True)[0],
               torch.full((10,), 3.0), torch.full((10,), 4, dtype=torch.long), (3, 32, 32), CLASSES, "test").save(d)
    return d


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    import streamlit as st

    root = tmp_path_factory.mktemp("app")
    data = make_image_folder(root / "data" / "tiny", {"train": 4, "test": 4})
    make_checkpoint(root / "ckpts", data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEAT_CHECKPOINTS_DIR", str(root / "ckpts"))
        mp.setenv("WEAT_DATA_DIR", str(root / "data"))
        mp.setenv("WEAT_DEFAULT_MODEL", "tiny-weat-adv")  # not whatever checkpoints/ ships
        mp.setenv("WEAT_RUNS_DIR", str(root / "runs"))  # live training runs kept here, not in ~/.cache
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HUB_CACHE", str(root / "hub"))
        import huggingface_hub.constants as hc

        mp.setattr(hc, "HF_HUB_OFFLINE", True)
        mp.setattr(hc, "HF_HUB_CACHE", str(root / "hub"))
        st.cache_data.clear()
        st.cache_resource.clear()
        yield root
        st.cache_data.clear()
        st.cache_resource.clear()


def open_page(page: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    return at


def ok(at) -> None:
    """No exception and no error message anywhere (main area or sidebar)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at) -> list:
    return at.get("plotly_chart")


def test_overview(app_env):
    at = open_page()
    ok(at)
    assert at.title[0].value.startswith("🔭 WEAT Lens")
    assert len(charts(at)) == 1 and len(at.metric) == 4
    assert sum(c.value.startswith("Observation 1 on this model") for c in at.caption) == 1
    obs = next(c.value for c in at.caption if c.value.startswith("Observation 1 on this model"))
    raised = "PGD raised mean E(x)" in obs
    assert any("ε sweep" in c.value for c in at.caption) == raised  # the pointer only where PGD went up
    sb = at.sidebar.selectbox(key="model_choice")
    assert sb.value == "tiny-weat-adv"
    assert not at.sidebar.info  # a small model: no note that pages will be slow
    assert "tiny" in at.sidebar.selectbox(key="data_choice").value
    sb.set_value("untrained weatnet_s (random weights)").run()
    ok(at)
    assert any("untrained" in w.value for w in at.sidebar.warning)
    assert len(charts(at)) == 1


def test_sidebar_says_when_a_model_is_slow_on_a_cpu(app_env, monkeypatch):
    import app_pages.sidebar as sidebar

    monkeypatch.setattr(sidebar, "BIG_ON_CPU", 1000)  # weatnet_tiny counts as big here
    at = open_page()
    ok(at)
    assert any("M parameters" in i.value and "Fewer images" in i.value for i in at.sidebar.info)


def test_landscape(app_env):
    at = open_page("landscape")
    ok(at)
    assert at.title[0].value == "Energy landscape"
    assert at.session_state["ctx"].data.endswith("tiny")  # the sidebar's dataset survives the page switch
    assert not charts(at)
    at.select_slider(key="ls_n").set_value(32)
    at.slider(key="ls_steps").set_value(2)
    at.multiselect(key="ls_attacks").set_value(["PGD", "PGD-T", "CW"])
    at.selectbox(key="ls_other").set_value("untrained weatnet_s (random weights)")
    at.button(key="ls_run").click().run()
    ok(at)
    assert len(charts(at)) == 6  # E(x), E(x,y) and the shift by outcome for each of the two models
    assert len(at.dataframe) == 2
    summary = at.dataframe[0].value
    assert list(summary["attack"]) == ["natural", "PGD", "PGD-T", "CW"]
    assert len(at.get("download_button")) == 2
    verdicts = [c.value for c in at.caption if c.value.startswith("Observation 1 on this model")]
    assert len(verdicts) == 2 and all(v.count("(expected: ") == 3 for v in verdicts)
    outcomes = [c.value for c in at.caption if c.value.startswith("PGD, mean E(x*) − E(x) by what the attack did")]
    assert len(outcomes) == 2 and all("CW, mean E(x*)" in v for v in outcomes)  # one line per model, every attack

    # the ε sweep: one chart and one table more, a line saying what PGD did at each ε
    at.multiselect(key="ls_sw_eps").set_value([2, 32])
    at.slider(key="ls_sw_steps").set_value(5)
    at.select_slider(key="ls_sw_n").set_value(64)
    at.button(key="ls_sw_run").click().run()
    ok(at)
    assert len(charts(at)) == 7 and len(at.dataframe) == 3
    sweep = at.dataframe[2].value
    assert list(sweep["attack"]) == ["PGD", "PGD-T", "PGD", "PGD-T"] and list(sweep["eps"]) == [2, 2, 32, 32]
    line = next(c.value for c in at.caption if c.value.startswith("Untargeted PGD, mean E(x*)"))
    assert "2/255" in line and "32/255" in line

    # the same across the number of steps at one ε
    at.radio(key="ls_sw_by").set_value("steps").run()
    at.multiselect(key="ls_sw_stepsl").set_value([1, 3])
    at.select_slider(key="ls_sw_at").set_value(4)
    at.button(key="ls_sw_run").click().run()
    ok(at)
    assert len(charts(at)) == 7 and len(at.dataframe) == 3
    sweep = at.dataframe[2].value
    assert list(sweep["steps"]) == [1, 1, 3, 3] and set(sweep["eps"]) == {4}
    line = next(c.value for c in at.caption if c.value.startswith("Untargeted PGD, mean E(x*)"))
    assert "1 step " in line and "3 steps" in line and "/255" not in line


def test_attack_explorer(app_env):
    at = open_page("attack_explorer")
    ok(at)
    at.slider(key="ax_steps").set_value(4)
    at.selectbox(key="ax_target").set_value("cat")
    at.button(key="ax_run").click().run()
    ok(at)
    assert len(charts(at)) == 5  # energy trajectories, three top-5 bars, the energy plane
    # the top-5 bars go without plotly's toolbar (it covered their titles), the others keep it
    assert [json.loads(c.proto.config or "{}").get("displayModeBar") for c in charts(at)] == [None, False, False,
                                                                                             False, None]
    assert len(at.get("imgs")) >= 5 or len(at.get("image")) >= 5
    plane = json.loads(charts(at)[-1].proto.spec)["data"]
    assert [t["type"] for t in plane[:2]] == ["heatmap", "heatmap"] and plane[0]["z"]["shape"] == "19, 19"
    note = next(c.value for c in at.caption if c.value.startswith("Across the dashed square"))
    # read against the span the checkpoint stores for many images (`plane --store`)
    assert note.endswith("Over its first 64 test images (PGD-10 and PGD-T-10 at 8/255, its card's settings) this "
                         "model's span averages 0.50.")
    at.slider(key="ax_step").set_value(1).run()
    ok(at)
    assert any(c.value == note for c in at.caption)  # the plane is kept, not computed again
    at.select_slider(key="ax_grid").set_value(13).run()
    ok(at)
    assert json.loads(charts(at)[-1].proto.spec)["data"][0]["z"]["shape"] == "13, 13"
    at.radio(key="ax_plane_energy").set_value("E(x, y)").run()
    ok(at)
    assert "E(x, y)" in json.loads(charts(at)[-1].proto.spec)["data"][0]["hovertemplate"]
    # a second model's plane below: the same image attacked the same way, its own attacks
    second = next(o for o in at.selectbox(key="ax_other").options if o != "none")
    at.selectbox(key="ax_other").set_value(second).run()
    ok(at)
    assert len(charts(at)) == 6 and sum(c.value.startswith("Across the dashed square") for c in at.caption) == 2
    assert any(m.value == f"**{second}**" for m in at.markdown)
    # another model: the attacks shown were not its own, so the page asks for a new run
    other = next(o for o in at.sidebar.selectbox(key="model_choice").options if o.startswith("untrained"))
    at.sidebar.selectbox(key="model_choice").set_value(other).run()
    ok(at)
    assert len(charts(at)) == 0 and any("ran on another model" in i.value for i in at.info)


def test_attack_explorer_bad_uploads(app_env):
    at = open_page("attack_explorer")
    at.radio(key="ax_source").set_value("upload").run()
    ok(at)
    up = at.file_uploader(key="ax_upload")
    up.set_value(("broken.png", b"\x89PNG\r\n\x1a\n not really", "image/png")).run()
    assert not at.exception
    assert len(at.error) == 1 and "image" in at.error[0].value
    buf = io.BytesIO()
    Image.new("I;16", (40, 30), 30000).save(buf, format="PNG")
    at.file_uploader(key="ax_upload").set_value(("gray16.png", buf.getvalue(), "image/png")).run()
    ok(at)
    at.button(key="ax_run").click().run()
    ok(at)
    assert len(charts(at)) == 5


def test_training_preselects_the_recorded_comparison_with_the_most_sgd_steps(app_env):
    """Among recorded runs that carry a held-out check, the training page preselects, per
    method, the one that took the most SGD steps (epochs × images / batch): robust overfitting
    needs steps, and those runs are the comparison worth seeing first."""
    import streamlit as st

    from weat_core.export import heldout_summary

    recs = [dict(json.loads(s), method="sat") for s in (app_env / "ckpts" / "tiny-weat-adv" / "log.jsonl").open()]
    row = {"test_clean": 0.4, "test_pgd20": 0.3, "test_delta_e": -0.01, "n_test": 2000}
    held = heldout_summary({"r:best-0005": row, "r:state-0008": row})
    for name, limit in (("rec-few", 64), ("rec-many", 10 ** 6)):  # more steps than any shipped recorded run
        d = app_env / "ckpts" / "_runs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / "config.json").write_text(json.dumps({"arch": "weatnet_tiny", "method": "sat", "recorded": "log only",
                                                   "heldout": held, "epochs": len(recs),
                                                   "training": {"limit": limit, "batch_size": 32}}))
    st.cache_data.clear()
    at = open_page("training")
    ok(at)
    picked = at.multiselect(key="tr_runs").value
    assert "rec-many (sat, log only)" in picked and not any(" (sat" in p for p in picked if not p.startswith("rec-many"))


def test_training_preselects_the_runs_trained_like_the_one_with_the_most_steps(app_env):
    """The preselected comparison is one recipe: beside the run with the most SGD steps come the
    runs trained like it (model, data, batch, learning rate, schedule, ε), even where a run of the
    same method at another learning rate took more steps (WEAT-adv at three times the lr, shipped
    beside its TRADES and SAT twins)."""
    import streamlit as st

    from weat_core.export import heldout_summary

    recs = [json.loads(s) for s in (app_env / "ckpts" / "tiny-weat-adv" / "log.jsonl").open()]
    row = {"test_clean": 0.4, "test_pgd20": 0.3, "test_delta_e": -0.01, "n_test": 2000}
    held = heldout_summary({"r:best-0005": row, "r:state-0008": row})
    for name, method, epochs, lr, n in (("rec-sat", "sat", 90, 0.1, 256), ("rec-weat", "weat-adv", 70, 0.1, 512),
                                        ("rec-weat-lr0.3", "weat-adv", 80, 0.3, 512)):
        d = app_env / "ckpts" / "_runs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "log.jsonl").write_text("".join(json.dumps(dict(r, method=method, eval_size=n)) + "\n" for r in recs))
        (d / "config.json").write_text(json.dumps({
            "arch": "weatnet_tiny", "method": method, "recorded": "log only", "heldout": held, "epochs": epochs,
            "training": {"limit": 10 ** 6, "batch_size": 32, "lr": lr, "schedule": "step", "eps": 8 / 255}}))
    st.cache_data.clear()
    at = open_page("training")
    ok(at)
    picked = at.multiselect(key="tr_runs").value
    assert "rec-sat (sat, log only)" in picked and "rec-weat (weat-adv, log only)" in picked
    assert "rec-weat-lr0.3 (weat-adv, log only)" not in picked
    # the subsets' noise, from the smallest subset picked (256 images: 2 × √(¼/256) = 6.25 points)
    assert any("up to ±6.2 points at 256 images, the smallest subset here" in c.value for c in at.caption)


def test_training_legends_name_runs_by_method_where_that_is_all_that_differs(app_env):
    """Runs whose names differ only in the method (`…-sat-5k`, `…-weat-adv-5k`) go by the method in
    the charts' legends, a caption saying which run each is; other names stay whole."""
    import streamlit as st

    recs = [json.loads(s) for s in (app_env / "ckpts" / "tiny-weat-adv" / "log.jsonl").open()]
    for name, method in (("rec-sat-5k", "sat"), ("rec-weat-adv-5k", "weat-adv"), ("other-sat", "sat")):
        d = app_env / "ckpts" / "_runs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "log.jsonl").write_text("".join(json.dumps(dict(r, method=method)) + "\n" for r in recs))
        (d / "config.json").write_text(json.dumps({"arch": "weatnet_tiny", "method": method, "recorded": "log only",
                                                   "epochs": len(recs)}))
    st.cache_data.clear()
    at = open_page("training")
    at.multiselect(key="tr_runs").set_value(["rec-sat-5k (sat, log only)", "rec-weat-adv-5k (weat-adv, log only)"]).run()
    ok(at)
    said = [c.value for c in at.caption if c.value.startswith("In the charts")]
    assert said == ["In the charts, each run by its training method: **sat** = rec-sat-5k (sat, log only) · "
                    "**weat-adv** = rec-weat-adv-5k (weat-adv, log only)."]
    legends = {t["name"] for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"] if t.get("name")}
    assert "sat, E(x)" in legends and not any(n.startswith("rec-") for n in legends)
    at.multiselect(key="tr_runs").set_value(["rec-sat-5k (sat, log only)", "other-sat (sat, log only)"]).run()
    ok(at)
    assert not [c for c in at.caption if c.value.startswith("In the charts")]


def test_training_smoothing_draws_the_mean_over_the_epochs_and_the_epochs_pale_behind(app_env):
    at = open_page("training")
    run = next(o for o in at.multiselect(key="tr_runs").options if o.startswith("tiny-weat-adv"))
    at.multiselect(key="tr_runs").set_value([run]).run()

    import plotly.io as pio

    def delta_e_traces():
        figs = [pio.from_json(c.proto.spec) for c in at.get("plotly_chart")]
        return next(f.data for f in figs if f.layout.title.text.startswith("ΔE ="))

    def values(v):  # plotly sends arrays as base64 typed arrays
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]) if isinstance(v, dict) else np.asarray(v)

    raw = delta_e_traces()
    assert len(raw) == 1 and raw[0].opacity is None and "markers" in raw[0].mode
    at.segmented_control(key="rec_smooth").set_value(3).run()
    ok(at)
    faint, line = delta_e_traces()
    y = values(raw[0].y).astype(float)
    assert faint.showlegend is False and faint.opacity == 0.3 and values(faint.y).tolist() == y.tolist()
    want = [y[max(i - 1, 0):i + 2].mean() for i in range(len(y))]  # the log's epochs are in order
    assert values(line.y).tolist() == pytest.approx(want) and line.mode == "lines" and len(y) >= 3


def start_small_run(at, epochs: int, images: int = 64):
    """Start a live run of `epochs` on `images` training images (batches of 32, one attack step)
    from the training page `at`: its (name, job)."""
    at.slider(key="tr_epochs").set_value(epochs)
    at.select_slider(key="tr_n").set_value(images)
    at.select_slider(key="tr_batch").set_value(32)
    at.slider(key="tr_steps").set_value(1)
    next(b for b in at.button if b.label == "Start training").click().run()
    ok(at)
    (name, job), = at.session_state["train_jobs"].items()
    return name, job


def test_a_live_run_is_kept_on_disk_and_found_again_after_a_reload(app_env):
    """A live run writes every finished epoch to its own folder under $WEAT_RUNS_DIR; a reloaded
    page (a new session, the same URL) finds the run again by ?run=; any other session lists it
    among the kept runs, can put its weights in the picker and compare its curves."""
    pytest.importorskip("weat_core.train")
    from streamlit.testing.v1 import AppTest

    at = open_page("training")
    name, job = start_small_run(at, epochs=2)
    job.join(120)
    folder = Path(job.config.out)
    assert job.error is None and folder.parent == app_env / "runs" and at.query_params["run"] == folder.name
    assert job.data is None and job.model is not None  # the finished job keeps its model, not its images
    assert (folder / "LATEST").is_file() and len((folder / "log.jsonl").read_text().splitlines()) == 2
    meta = json.loads((folder / "live.json").read_text())
    assert meta["name"] == name and meta["ended"] == "finished" and meta["training"]["limit"] == 64

    at.switch_page("app_pages/zoo.py").run()
    at.query_params.clear()  # as a browser's page change does
    at.run()
    assert at.query_params["run"] == folder.name  # every page puts it back in the URL
    reloaded = AppTest.from_file(str(APP), default_timeout=TIMEOUT)  # a reload on the overview page
    reloaded.query_params["run"] = folder.name
    reloaded.run()
    ok(reloaded)
    assert list(reloaded.session_state["train_jobs"].items()) == [(name, job)]
    reloaded.switch_page("app_pages/training.py").run()
    ok(reloaded)
    assert any(p.proto.text.startswith(f"{name}: epoch 2/2") for p in reloaded.get("progress"))

    other = open_page("training")  # no ?run=: not this session's run, but kept on this machine
    ok(other)
    assert not other.session_state["train_jobs"]
    table = next(d.value for d in other.dataframe if "folder" in d.value)
    row = table.set_index("folder").loc[folder.name]
    assert row["run"] == name and row["state"] == "finished" and row["epochs"] == "2/2"
    assert row["robust (PGD)"] == pytest.approx(job.history[-1]["test_pgd_acc"])
    assert any(o.startswith(f"{name}, ") and o.endswith("(kept here)") for o in other.multiselect(key="tr_runs").options)
    other.button(key="tr_kept_use").click().run()
    ok(other)
    choice = other.sidebar.selectbox(key="model_choice").value
    assert choice.startswith(f"trained here: {name}, ") and choice.endswith("(epoch 2)")
    # a run whose server stopped mid-way: "interrupted", with the command that finishes it
    meta.pop("ended")
    meta["training"]["epochs"] = 3
    (folder / "live.json").write_text(json.dumps(meta))
    (folder / "log.jsonl").write_text("".join(json.dumps({**r, "epochs": 3}) + "\n" for r in job.history))
    other.run()
    row = next(d.value for d in other.dataframe if "folder" in d.value).set_index("folder").loc[folder.name]
    assert row["state"] == "interrupted after epoch 2"
    code = [c.value for c in other.code if "--resume" in c.value]
    assert len(code) == 1 and f"--out {folder}" in code[0] and "--limit 64" in code[0] and "--epochs 3" in code[0]
    # or here: its third epoch, from the second's weights, on the same images
    other.button(key="tr_kept_continue").click().run()
    ok(other)
    (again, cont), = other.session_state["train_jobs"].items()
    cont.join(120)
    assert cont.error is None and again == f"{name} (continued)" and other.query_params["run"] == folder.name
    assert [r["epoch"] for r in cont.history] == [1, 2, 3]
    assert [r["test_pgd_acc"] for r in cont.history[:2]] == [r["test_pgd_acc"] for r in job.history]
    assert [json.loads(s)["epoch"] for s in (folder / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert json.loads((folder / "live.json").read_text())["ended"] == "finished"
    other.run()
    row = next(d.value for d in other.dataframe if "folder" in d.value).set_index("folder").loc[folder.name]
    assert (row["state"], row["epochs"]) == ("finished", "3/3") and not [c for c in other.code if "--resume" in c.value]
    # another visitor's first run of the same method: a name of its own, not the kept run's
    new, job3 = start_small_run(open_page("training"), epochs=1)
    job3.join(120)
    assert new == f"{name.rsplit(' ', 1)[0]} {int(name.rsplit(' ', 1)[1]) + 1}" and job3.name == new
    assert json.loads((Path(job3.config.out) / "live.json").read_text())["name"] == new


class _Running:
    """Stands in for another session's training job: running, at its second epoch of five."""

    running = True
    started = 0.0
    history = [{"epoch": 1, "time_s": 40.0}, {"epoch": 2, "time_s": 44.0}]
    config = type("cfg", (), {"epochs": 5, "out": None, "method": "sat", "limit": 2000})()


def test_a_server_trains_at_most_weat_max_live_runs_at_once(app_env, monkeypatch):
    """With the server's places taken (another session's run), Start and Continue say so and
    start nothing: no job, no run folder; the limit comes from WEAT_MAX_LIVE_RUNS."""
    pytest.importorskip("weat_core.train")
    from app_pages import live_runs

    monkeypatch.setenv("WEAT_MAX_LIVE_RUNS", "1")
    at = open_page("training")
    live_runs.jobs()["someone-elses"] = ("sat run 1", _Running())
    try:
        (app_env / "runs").mkdir(exist_ok=True)
        runs = sorted((app_env / "runs").iterdir())
        at.run()  # the page says so before Start is pressed
        assert any("at most 1 run at a time" in i.value for i in at.info)
        next(b for b in at.button if b.label == "Start training").click().run()
        ok(at)
        assert not at.session_state["train_jobs"] and sorted((app_env / "runs").iterdir()) == runs
        said = " ".join(w.value for w in at.warning)
        assert "at most 1 run at a time" in said and "a sat run on 2,000 images (2 of 5 epochs done, about 2 minutes left)" in said
        # a stopped run kept here (epoch 1 of 3): not continued either, while the place is taken
        stopped = app_env / "runs" / "20261207-120000-sat-abcdef"
        stopped.mkdir(parents=True)
        (stopped / "live.json").write_text(json.dumps({"name": "sat run 9", "started": time.time(), "ended": "stopped",
                                                       "training": {"method": "sat", "epochs": 3}}))
        (stopped / "log.jsonl").write_text(json.dumps({"epoch": 1, "epochs": 3}) + "\n")
        (stopped / "LATEST").write_text("state-0001\n")
        at.run()
        at.selectbox(key="tr_kept_pick").set_value(str(stopped)).run()
        at.button(key="tr_kept_continue").click().run()
        assert not at.session_state["train_jobs"]
        assert any("at most 1 run at a time" in e.value for e in at.error)
    finally:
        live_runs.jobs().pop("someone-elses")
        shutil.rmtree(app_env / "runs" / "20261207-120000-sat-abcdef", ignore_errors=True)


def test_a_server_with_weat_max_run_minutes_gives_each_run_that_long(app_env, monkeypatch):
    """WEAT_MAX_RUN_MINUTES (the public Space): the budgets stop at the limit, the page says so,
    a run without a budget trains its epochs within the limit, and every run stops at 1.25× it;
    a run stopped there can be continued."""
    pytest.importorskip("weat_core.train")
    monkeypatch.setenv("WEAT_MAX_RUN_MINUTES", "3")
    at = open_page("training")
    ok(at)
    assert at.select_slider(key="tr_minutes").options == ["off", "0.5", "1", "2", "3"]
    said = " ".join(c.value for c in at.caption)
    assert "at most 3 minutes" in said and "after 3.75 minutes stops" in said
    name, job = start_small_run(at, epochs=2)
    assert (job.config.minutes, job.config.max_epochs, job.time_limit_s) == (3.0, 2, 225.0)
    # drawn as it began (its budget being timed): what the limit leaves it
    assert any(p.proto.text.endswith("· running, at most 4 minutes left") for p in at.get("progress"))
    job.join(300)
    assert job.error is None and [r["epoch"] for r in job.history] == [1, 2] and not job.timed_out
    # a run the limit stopped: kept, and continued from its finished epochs
    cut = app_env / "runs" / "20261207-120000-sat-0a0b0c"
    cut.mkdir(parents=True)
    (cut / "live.json").write_text(json.dumps({"name": "sat run 7", "started": time.time(),
                                               "ended": "stopped at the 3.75-minute limit",
                                               "training": {"method": "sat", "epochs": 3}}))
    (cut / "log.jsonl").write_text(json.dumps({"epoch": 1, "epochs": 3}) + "\n")
    (cut / "LATEST").write_text("state-0001\n")
    at.run()
    at.selectbox(key="tr_kept_pick").set_value(str(cut)).run()
    row = next(d.value for d in at.dataframe if "folder" in d.value).set_index("folder").loc[cut.name]
    assert row["state"] == "stopped at the 3.75-minute limit" and at.button(key="tr_kept_continue")


def test_the_time_a_live_run_has_left_heeds_the_server_limit():
    from app_pages import live_runs

    job = _Running()  # two epochs of 40 and 44 s done, three to go: about 2 minutes
    assert live_runs.time_left(job) == ", about 2 minutes left"
    job.time_left_s = 50.0  # the server's limit stops it sooner
    assert live_runs.time_left(job) == ", under a minute left"
    job.history = []  # before its first epoch ends, only the limit is known
    job.time_left_s = 750.0  # 12.5 minutes: an upper bound rounds up
    assert live_runs.time_left(job) == ", at most 13 minutes left"
    del job.time_left_s
    assert live_runs.time_left(job) == ""


def test_a_server_with_weat_max_task_minutes_stops_long_computations(app_env, monkeypatch):
    """WEAT_MAX_TASK_MINUTES (the public Space): a page's computation that runs past it ends at
    its next progress report with a message that says why and what finishes sooner; the limit is
    per computation, so the page keeps working."""
    from app_pages import common

    monkeypatch.setenv("WEAT_MAX_TASK_MINUTES", "0.00001")  # 0.6 ms: past it at the first report
    at = open_page("landscape")
    at.select_slider(key="ls_n").set_value(32)
    at.slider(key="ls_steps").set_value(2)
    at.button(key="ls_run").click().run()
    assert not at.exception and not charts(at)
    said = " ".join(e.value for e in at.error)
    assert "The energy landscape was stopped after 1e-05 minutes" in said and "WEAT_MAX_TASK_MINUTES" in said
    for page, button, what in (("zoo", "zoo_run", "The evaluation"),
                               ("generation", "gen_run", "Generating with "),
                               ("attack_explorer", "ax_run", "The attack"),
                               ("weat", "weat_run", "The decomposition")):
        at.switch_page(f"app_pages/{page}.py").run()
        at.button(key=button).click().run()
        assert not at.exception and any(e.value.startswith(what) and " was stopped after " in e.value for e in at.error), page
    # the zoo says so before AutoAttack, the slow one, is started
    at.switch_page("app_pages/zoo.py").run()
    assert not any("This server stops a computation after" in c.value for c in at.caption)
    at.multiselect(key="zoo_attacks").set_value(["pgd20", "aa"]).run()
    assert any("This server stops a computation after 1e-05 minutes" in c.value for c in at.caption)
    monkeypatch.delenv("WEAT_MAX_TASK_MINUTES")
    at.run()
    assert not any("This server stops a computation after" in c.value for c in at.caption)
    at.switch_page("app_pages/landscape.py").run()
    at.button(key="ls_run").click().run()
    ok(at)
    assert charts(at)
    for text, minutes in (("", None), ("five", None), ("0", None), ("2.5", 2.5)):
        monkeypatch.setenv("WEAT_MAX_TASK_MINUTES", text)
        assert common.max_task_minutes() == minutes
    common.check_time()  # outside a computation: never stopped


def test_a_live_run_stopped_before_its_first_epoch_offers_no_model(app_env):
    """A run that the limit (or Stop) ended while its budget was timed has no trained weights:
    the page says so instead of putting the random start in the model picker."""
    pytest.importorskip("weat_core.train")
    from weat_core import lens
    from weat_core.train import TrainConfig

    imgs = lens.demo_images(64)
    cfg = TrainConfig(method="sat", arch="weatnet_tiny", epochs=5, batch_size=32, attack_steps=1, eval_size=16,
                      eval_steps=1, minutes=1.0, device="cpu")
    job = lens.TrainingJob(cfg, (imgs, imgs), name="sat run 5", time_limit_s=0.0).start()
    job.join(120)
    assert job.timed_out and not job.history and job.error is None
    at = open_page("training")
    at.session_state["train_jobs"] = {"sat run 5": job}
    at.run()
    ok(at)
    assert any("sat run 5 stopped at the 0-minute limit before its first epoch ended" in i.value for i in at.info)
    assert not at.session_state["tr_registered"] and not at.success


def test_live_runs_limit_and_registry(monkeypatch, tmp_path):
    """The default limit is one run per two of torch's threads; a bad WEAT_MAX_LIVE_RUNS falls back to
    it; a refused start builds no job; finished jobs beyond KEEP_FINISHED leave the registry."""
    from app_pages import live_runs

    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.delenv("WEAT_MAX_LIVE_RUNS", raising=False)
    assert live_runs.max_live_runs() == 4
    monkeypatch.setenv("WEAT_MAX_LIVE_RUNS", "two")
    assert live_runs.max_live_runs() == 4
    monkeypatch.setenv("WEAT_MAX_LIVE_RUNS", "1")
    assert live_runs.max_live_runs() == 1
    for text, minutes in (("", None), ("ten", None), ("-5", None), ("0", None), ("7.5", 7.5)):
        monkeypatch.setenv("WEAT_MAX_RUN_MINUTES", text)
        assert live_runs.max_run_minutes() == minutes
        assert live_runs.time_limit_s() == (None if minutes is None else 1.25 * 60 * minutes)

    class Done:
        running, history, config = False, [], None

        def __init__(self, started):
            self.started = started

        def start(self):
            return self

    registry = live_runs.jobs()
    saved = dict(registry)
    registry.clear()
    try:
        for i in range(live_runs.KEEP_FINISHED + 3):
            job, why = live_runs.start(f"run{i}", f"run {i}", lambda i=i: Done(float(i)))
            assert job is not None and why is None
        assert sorted(registry, key=lambda k: int(k[3:])) == [f"run{i}" for i in range(3, live_runs.KEEP_FINISHED + 3)]
        registry["busy"] = ("sat run 1", _Running())
        # new names skip those of live runs (any session's), kept runs and the session's own
        monkeypatch.setenv("WEAT_RUNS_DIR", str(tmp_path))
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "live.json").write_text(json.dumps({"name": "sat run 2", "started": 1.0}))
        assert live_runs.fresh_name("sat", also=["sat run 3"]) == "sat run 4"
        assert live_runs.fresh_name("trades") == "trades run 1"
        built = []
        job, why = live_runs.start("run-x", "x", lambda: built.append(1))
        assert job is None and "a sat run" in why and not built and "run-x" not in registry
    finally:
        registry.clear()
        registry.update(saved)


def test_training_recorded_and_live(app_env, fake_hf_api):
    import streamlit as st

    rec = app_env / "ckpts" / "_runs" / "rec-sat"  # a run shipped for its curves only (export --log-only)
    rec.mkdir(parents=True, exist_ok=True)
    recs = [dict(json.loads(s), method="sat") for s in (app_env / "ckpts" / "tiny-weat-adv" / "log.jsonl").open()]
    (rec / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    from weat_core.export import heldout_summary

    row = {"test_clean": 0.4, "test_pgd20": 0.3, "test_delta_e": -0.01, "n_test": 2000}
    held = heldout_summary({"r:best-0005": row, "r:state-0008": {**row, "test_pgd20": 0.2}})  # its held-out check
    (rec / "config.json").write_text(json.dumps({"arch": "weatnet_tiny", "method": "sat", "recorded": "log only",
                                                 "heldout": held}))
    st.cache_data.clear()
    at = open_page("training")
    ok(at)
    assert len(charts(at)) == 4  # the shipped run's energy, ΔE, accuracy and train-vs-test robust curves
    assert any("robust overfitting" in m.value for m in at.markdown)
    runs = at.multiselect(key="tr_runs")
    assert "rec-sat (sat, log only)" in runs.options
    method = (lambda label: label.split(" (")[1].split(",")[0].rstrip(")"))
    picked = [method(v) for v in runs.value]  # by default: the longest run of each of up to three methods
    assert len(set(picked)) == len(picked) == min(3, len({method(o) for o in runs.options}))
    at.multiselect(key="tr_runs").set_value(["rec-sat (sat, log only)"]).run()
    ok(at)
    assert any(c.value.startswith("rec-sat (sat, log only), held-out check (2,000 test images") and
               "30.0 % at the best epoch (5), 20.0 % at the last (8): robust overfitting" in c.value for c in at.caption)
    marks = [c for c in charts(at) if "held-out (best, last epoch)" in c.proto.spec]  # diamonds on the accuracy chart
    assert len(marks) == 1 and '"symbol":"diamond"' in marks[0].proto.spec.replace(" ", "")
    tiny = next(o for o in at.multiselect(key="tr_runs").options if o.startswith("tiny-weat-adv"))
    at.multiselect(key="tr_runs").set_value([tiny]).run()
    ok(at)
    assert any(f"{tiny}: from epoch 7 on, a second training stage" in c.value for c in at.caption)
    assert any(f"{tiny}: from epoch 8 on, a third training stage" in c.value for c in at.caption)
    pytest.importorskip("weat_core.train")
    at.slider(key="tr_epochs").set_value(1)
    at.select_slider(key="tr_n").set_value(64)
    at.select_slider(key="tr_batch").set_value(32)
    at.slider(key="tr_steps").set_value(1)
    at.checkbox(key="tr_ema").check()  # with a weight average: measured beside the trained weights
    next(b for b in at.button if b.label == "Start training").click().run()
    ok(at)
    job = next(iter(at.session_state["train_jobs"].values()))
    job.join(120)
    assert job.error is None and len(job.history) == 1
    assert job.config.ema == 0.999 and 0 <= job.history[0]["ema_test_pgd_acc"] <= 1
    at.checkbox(key="tr_ema").uncheck()
    at.run()
    ok(at)
    assert any(o.startswith("trained here: ") for o in at.sidebar.selectbox(key="model_choice").options)
    # it can be taken home: one .zip, which the sidebar's upload takes back
    data = next(iter(at.session_state["tr_zips"].values()))
    with zipfile.ZipFile(io.BytesIO(data)) as z:  # with the run's settings and its per-epoch records
        assert json.loads(z.read("config.json"))["training"]["ema"] == 0.999
        assert len(z.read("log.jsonl").decode().splitlines()) == 1
    assert [d for d in at.get("download_button") if d.proto.label == "Download it (.zip)"]
    # or published on the Hub (huggingface_hub's HfApi stood in for), with its settings, records and card
    up = fake_hf_api
    assert at.button(key="tr_hub_push").disabled  # no repo id yet
    at.text_input(key="tr_hub_repo").set_value("not an id").run()
    at.button(key="tr_hub_push").click().run()
    assert any("not a Hub repo id" in e.value for e in at.error) and not up  # refused before any upload
    at.text_input(key="tr_hub_repo").set_value("me/tiny-trained").run()
    at.text_input(key="tr_hub_token").set_value("hf_typed").run()
    at.checkbox(key="tr_hub_private").check().run()
    at.button(key="tr_hub_push").click().run()
    ok(at)
    assert up["token"] == "hf_typed"
    assert up["create"] == ("me/tiny-trained", {"repo_type": "model", "private": True, "exist_ok": True})
    assert up["upload"][1] == ["README.md", "config.json", "log.jsonl", "model.safetensors"]
    config, card = json.loads(up["texts"]["config.json"]), up["texts"]["README.md"]
    assert config["method"] == job.config.method and config["training"]["epochs"] == 1
    assert card.startswith("---\n") and 'load("me/tiny-trained")' in card
    assert any("me/tiny-trained/commit/bbbb" in m.value for m in at.success)
    at.button(key="tr_use").click().run()
    ok(at)
    # a time budget instead of an epoch count: the progress bar learns the count after epoch 1
    at.select_slider(key="tr_minutes").set_value(0.5)
    next(b for b in at.button if b.label == "Start training").click().run()
    ok(at)
    job = list(at.session_state["train_jobs"].values())[-1]
    assert job.config.minutes == 0.5
    deadline = time.time() + 120
    while not job.history and job.error is None and time.time() < deadline:
        time.sleep(0.2)
    job.stop()
    job.join(120)
    assert job.error is None and job.history and job.history[0]["epochs"] >= 1
    at.run()
    ok(at)
    bars = [p.proto.text for p in at.get("progress")]
    assert any(f"epoch {len(job.history)}/{job.history[-1]['epochs']} (0.5-minute budget)" in t for t in bars), bars
    ended = "stopped" if job.result.stopped else "finished"  # stopped, unless it had ended before the Stop
    assert any(t.endswith(f" · {ended}") for t in bars), bars
    assert at.sidebar.selectbox(key="model_choice").value.startswith("trained here: ")
    # the downloaded .zip comes back in through the sidebar's upload
    at.sidebar.selectbox(key="model_choice").set_value("Upload .safetensors + config.json, or a .zip…").run()
    at.sidebar.file_uploader(key="up_weights").set_value(("weat_lens_run.zip", data, "application/zip")).run()
    ok(at)
    assert at.session_state["ctx"].model_name == "upload: weat_lens_run.zip"


def test_model_zoo(app_env):
    from weat_core import lens
    from weat_core.checkpoints import list_checkpoints

    at = open_page("zoo")
    ok(at)
    assert len(at.dataframe) == 1
    recorded = 1 if "pgd20_acc" in at.dataframe[0].value else 0  # the scatter of stored metrics
    # and the Observation 1 heatmap, where a checkpoint stores `landscape --store`
    grid = lens.observation1_grid([c.to_dict() for c in list_checkpoints()])
    assert len(charts(at)) == recorded + (not grid.empty)
    if not grid.empty:
        heat = [c for c in charts(at) if json.loads(c.proto.spec)["data"][0].get("type") == "heatmap"]
        assert len(heat) == 1 and any(c.value.startswith("Each cell: how one attack") for c in at.caption)
    before = len(charts(at))
    at.multiselect(key="zoo_models").set_value(["tiny-weat-adv", "untrained weatnet_s (random weights)"])
    at.multiselect(key="zoo_attacks").set_value(["pgd10"])
    at.select_slider(key="zoo_n").set_value(32)
    at.button(key="zoo_run").click().run()
    ok(at)
    assert len(at.dataframe) == 3 and len(charts(at)) == before + 1
    assert set(at.dataframe[1].value["model"]) >= {"tiny-weat-adv", "untrained weatnet_s (random weights)"}
    heads = json.loads(at.dataframe[1].proto.columns)  # each accuracy headed by its measure's name, not its key
    assert heads["clean_acc"]["label"] == "clean" and heads["pgd10_acc"]["label"] == "PGD-10"
    # and the second model against the first, image by image, clean and under the attack
    pairs = at.dataframe[2].value
    assert list(pairs["model"]) == ["untrained weatnet_s (random weights)"] * 2
    assert list(pairs["measure"]) == ["clean", "pgd10"] and set(pairs["verdict"]) <= {"ahead", "behind", "level"}
    assert any("All models saw the same 32 test images" in c.value for c in at.caption)
    # under each chart, whether its models bear Observation 3 out (the two evaluated: too few for a trend)
    notes = [c.value for c in at.caption if c.value.startswith("Observation 3")]
    assert len(notes) == 1 + recorded and "needs at least three robust models" in notes[-1]
    if recorded and "three robust models" not in notes[0]:  # a ρ comes with how often chance matches it
        assert "Spearman's ρ" in notes[0] and "% of the time" in notes[0]


def test_zoo_starts_with_one_model_per_method():
    """The comparison starts with the current model and one checkpoint per other method of the same
    architecture and dataset: the same schedule and subset first, then the best recorded PGD-20."""
    from app_pages.model_store import contrast_set

    def info(name, method, pgd, arch="a", dataset="cifar10", schedule="onecycle", limit=None):
        return {"name": name, "method": method, "arch": arch, "dataset": dataset, "pgd20_acc": pgd,
                "config": {"training": {"schedule": schedule, "limit": limit}}}

    infos = [info("std", "standard", 0.0), info("sat", "sat", 0.33), info("sat-step", "sat", 0.27, schedule="step"),
             info("trades-step", "trades", 0.27, schedule="step"), info("trades", "trades", 0.34),
             info("weat", "weat-adv", 0.40), info("weat-big", "weat-adv", 0.55, arch="b"),
             info("weat-c100", "weat-adv", 0.2, dataset="cifar100"), info("sat-nopgd", "sat", None)]
    assert contrast_set("weat", infos) == ["weat", "sat", "std", "trades"]
    assert contrast_set("sat-step", infos) == ["sat-step", "std", "trades-step", "weat"]
    assert contrast_set("weat-big", infos) == ["weat-big"]
    assert contrast_set("trained here: x", infos) == ["trained here: x"]


# the shipped models' names, |ΔE| and PGD-20 accuracy (as stored), for the zoo scatter's layout
ZOO_NAMES = ["a-sat", "a-sat-5k-step", "a-standard", "a-trades", "a-trades-5k-step", "a-weat-adv", "a-weat-adv-5k-step",
             "p-sat", "p-trades", "p-weat-adv", "p-weat-adv-100ep", "a-weat-nat", "a-mart"]
ZOO_GAPS = [0.165, 0.106, 8.382, 0.086, 0.062, 0.138, 0.063, 0.787, 0.131, 0.111, 0.122, 0.085, 0.072]
ZOO_ACC = [0.330, 0.272, 0.000, 0.341, 0.274, 0.397, 0.275, 0.459, 0.488, 0.488, 0.495, 0.325, 0.354]


def _meet(p, q):
    return min(p[2], q[2]) > max(p[0], q[0]) and min(p[3], q[3]) > max(p[1], q[1])


def test_zoo_scatter_labels_avoid_each_other():
    """Every shipped model's label on the zoo's scatter keeps clear of the other labels and of every
    marker, in the narrow column `label_places` reckons with; a label that cannot sit beside its
    marker moves further out, and no such leader line crosses a label or another marker."""
    from app_pages.labels import CHAR_PX, _crosses, is_far, label_places

    names = [n.replace("a-", "").replace("p-", "") for n in ZOO_NAMES]  # shown without the architecture: "sat" twice
    width, height = 300, 235
    places = label_places(names, ZOO_GAPS, ZOO_ACC, log_x=True, width=width, height=height)
    assert len(places) == len(names)
    lx = np.log10(ZOO_GAPS)
    px_ = (lx - lx.min()) / (lx.max() - lx.min()) * width
    py_ = (np.array(ZOO_ACC) - min(ZOO_ACC)) / (max(ZOO_ACC) - min(ZOO_ACC)) * height
    boxes = [(a + dx - CHAR_PX * len(n) / 2, b + dy - 6, a + dx + CHAR_PX * len(n) / 2, b + dy + 6)
             for n, a, b, (dx, dy) in zip(names, px_, py_, places)]
    markers = [(a - 6, b - 6, a + 6, b + 6) for a, b in zip(px_, py_)]
    for i, n in enumerate(names):
        assert not any(_meet(boxes[i], boxes[j]) for j in range(i + 1, len(names))), n
        assert not any(_meet(boxes[i], m) for m in markers), n
        dx, dy = places[i]
        if is_far(dx, dy, CHAR_PX * len(n)):  # the line from 7 px out to the label's edge
            t = np.linspace(0, 1, 400)
            pts = [(px_[i] + u * dx, py_[i] + u * dy) for u in t if u * np.hypot(dx, dy) > 7]
            pts = [p for p in pts if not (boxes[i][0] < p[0] < boxes[i][2] and boxes[i][1] < p[1] < boxes[i][3])]
            seg = (*pts[0], *pts[-1])
            assert not any(_crosses(seg, b) for j, b in enumerate(boxes) if j != i), n
            # (a marker that covers part of this one's own is left out: no line from it keeps clear)
            assert not any(_crosses(seg, m) for j, m in enumerate(markers) if j != i and not _meet(m, markers[i])), n
    assert any(is_far(dx, dy, CHAR_PX * len(n)) for n, (dx, dy) in zip(names, places))  # a crowd
    # two markers far apart: both labels right above them
    assert label_places(["p", "q"], [0.1, 10], [0.1, 0.5], log_x=True) == [(0.0, 16.0), (0.0, 16.0)]


def test_label_places_keeps_to_the_nearest_places_for_many_models():
    """Sixty models (a zoo of local runs): the table of what two labels cost each other would take
    gigabytes with every place, so only the places beside a marker and nearest it are tried."""
    from app_pages.labels import _places, label_places

    rng = np.random.default_rng(0)
    names = [f"run-{i:02d}" for i in range(60)]  # six characters each
    out = label_places(names, 10 ** rng.uniform(-1, 1, 60), rng.uniform(0, 0.5, 60), log_x=True)
    nearest = {tuple(p) for p in _places(6.5 * 6)[:16].round(6)}
    assert len(out) == 60 and all(tuple(np.round(o, 6)) in nearest for o in out)


def test_crossing_helpers():
    from app_pages.labels import _crosses

    box = (0, 0, 10, 10)
    assert _crosses((-5, 5, 15, 5), box) and _crosses((5, -5, 5, 5), box)
    assert not _crosses((-5, 11, 15, 11), box) and not _crosses((-5, -5, -1, 20), box)
    assert not _crosses((10, -5, 10, 15), box)  # along an edge: touching, not crossing


def _label_boxes(fig, plot_w: float) -> list:
    """The zoo scatter's label boxes and markers, in px of a plot area `plot_w` wide, the way the
    browser lays them out: annotations pinned to the axes, their text CHAR_PX a character."""
    from app_pages.labels import CHAR_PX
    from app_pages.plots import ZOO_HEIGHT, ZOO_MARGIN

    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    plot_h = ZOO_HEIGHT - ZOO_MARGIN["t"] - ZOO_MARGIN["b"]

    def at(x, y):
        return (x - x0) / (x1 - x0) * plot_w, (y - y0) / (y1 - y0) * plot_h

    out = []
    for a in fig.layout.annotations:
        w = CHAR_PX * len(a.text)
        cx, cy = at(a.ax, a.ay) if a.showarrow else at(a.x, a.y)
        left = {"left": cx, "right": cx - w}.get(a.xanchor, cx - w / 2)
        out.append((left, cy - 6, left + w, cy + 6))
    log = fig.layout.xaxis.type == "log"
    markers = [at(np.log10(x) if log else x, y) for t in fig.data for x, y in zip(t.x, t.y) if x is not None]
    return out, [(a - 6, b - 6, a + 6, b + 6) for a, b in markers]


def test_zoo_scatter_figure_keeps_labels_clear_in_narrow_and_wide_columns():
    """The zoo's chart labels each model without its architecture, which the marker's shape shows
    (a legend of its own); its labels are pinned to the axes, so the layout that keeps clear in
    the narrowest column keeps clear in a wide one, where the markers move apart."""
    import pandas as pd

    from app_pages.plots import ZOO_MARGIN, ZOO_WIDTH, zoo_scatter

    archs = ["weatnet_s" if n.startswith("a-") else "preactresnet18" for n in ZOO_NAMES]
    models = [n.replace("a-", "weatnet_s-").replace("p-", "preactresnet18-") for n in ZOO_NAMES]
    res = pd.DataFrame({"model": models, "arch": archs, "method": [n.split("-", 1)[1].split("-5k")[0].replace(
        "-100ep", "") for n in ZOO_NAMES], "|ΔE|": ZOO_GAPS, "pgd20_acc": ZOO_ACC})
    fig = zoo_scatter(res, "pgd20_acc", "t", "PGD-20 accuracy")
    texts = sorted(a.text for a in fig.layout.annotations)
    assert texts == sorted(m.split("-", 1)[1] for m in models) and texts.count("sat") == 2
    shapes = {t.name: t.marker.symbol for t in fig.data if t.legend == "legend2"}
    assert shapes == {"weatnet_s": "circle", "preactresnet18": "diamond"}  # the commoner one a circle
    sat = next(t for t in fig.data if t.name == "sat" and t.x[0] is not None)
    assert set(sat.marker.symbol) == {"circle", "diamond"}
    assert sat.marker.symbol[0] == "circle"  # the legend's entry shows the first
    assert fig.layout.xaxis.type == "log"
    narrow = ZOO_WIDTH - ZOO_MARGIN["l"] - ZOO_MARGIN["r"]
    for plot_w in (narrow, 1.5 * narrow, 2.5 * narrow):
        boxes, markers = _label_boxes(fig, plot_w)
        assert len(markers) == len(models)
        for i, b in enumerate(boxes):
            assert not any(_meet(b, o) for o in boxes[i + 1:]), (plot_w, fig.layout.annotations[i].text)
            assert not any(_meet(b, m) for m in markers), (plot_w, fig.layout.annotations[i].text)


def test_zoo_scatter_figure_handles_one_model_and_foreign_names():
    import pandas as pd

    from app_pages.plots import zoo_scatter

    one = pd.DataFrame({"model": ["untrained weatnet_s (random weights)"], "arch": ["weatnet_s"],
                        "method": ["untrained"], "|ΔE|": [0.5], "pgd10_acc": [0.0]})
    fig = zoo_scatter(one, "pgd10_acc", "t", "PGD-10 accuracy")
    assert [a.text for a in fig.layout.annotations] == ["untrained weatnet_s (random weights)"]
    lo, hi = fig.layout.xaxis.range
    assert lo < 0.5 < hi and fig.layout.xaxis.type == "linear"


def test_every_attack_the_landscape_offers_has_a_colour_of_its_own():
    from app_pages.plots import ATTACK_COLORS
    from weat_core import lens

    shown = ["natural", *lens.ATTACKS]
    assert set(shown) <= set(ATTACK_COLORS)  # else plotly picks one from its theme, often natural's blue
    assert len({ATTACK_COLORS[k].lower() for k in shown}) == len(shown)


def _apart(a: str, b: str) -> float:
    """The smallest CAM02-UCS distance of two colours for normal vision and the two red-green colour
    blindnesses at full severity (deuteranopia, protanopia; Machado et al. 2009, as colorspacious
    simulates them). About 15 units tell two lines apart at a glance; the old PGD and PGD-T were 1.4."""
    cs = pytest.importorskip("colorspacious", reason="colorspacious (requirements-dev.txt) is not installed")

    def rgb(h):
        return np.array([int(h[i:i + 2], 16) / 255 for i in (1, 3, 5)])

    def seen(c, cvd):
        c = rgb(c) if cvd is None else np.clip(cs.cspace_convert(
            rgb(c), {"name": "sRGB1+CVD", "cvd_type": cvd, "severity": 100}, "sRGB1"), 0, 1)
        return cs.cspace_convert(c, "sRGB1", "CAM02-UCS")

    return min(float(np.linalg.norm(seen(a, v) - seen(b, v))) for v in (None, "deuteranomaly", "protanomaly"))


def test_the_palettes_stay_apart_for_the_red_green_colour_blind():
    """What a class compares, told apart by a deuteranope or a protanope: the landscape's default
    natural / PGD / PGD-T, each untargeted attack against each targeted one (Observation 1's two
    sides), the training page's first five runs, the zoo's robust training methods and the two ends
    of its Observation 1 heatmap."""
    import itertools

    from app_pages.plots import ATTACK_COLORS, METHOD_COLORS, OBS1_SCALE, RUN_COLORS

    pairs = list(itertools.combinations([ATTACK_COLORS[k] for k in ("natural", "PGD", "PGD-T")], 2))
    pairs += [(ATTACK_COLORS[u], ATTACK_COLORS[t]) for u in ("PGD", "APGD-CE", "TRADES-KL")
              for t in ("PGD-T", "APGD-T", "CW", "FAB-T", "Square")]
    pairs += list(itertools.combinations(RUN_COLORS[:5], 2))
    pairs += list(itertools.combinations([METHOD_COLORS[m] for m in ("sat", "trades", "mart", "weat-adv")], 2))
    pairs += [(OBS1_SCALE[0][1], OBS1_SCALE[-1][1])]  # the heatmap's "against" and "as expected" ends
    near = [(a, b, round(_apart(a, b), 1)) for a, b in pairs if _apart(a, b) < 15]
    assert not near
    # every attack the landscape offers, all at once: still no two alike
    assert min(_apart(a, b) for a, b in itertools.combinations(ATTACK_COLORS.values(), 2)) > 8


def test_every_training_method_has_a_colour_of_its_own():
    from app_pages.plots import METHOD_COLORS
    from weat_core.train import METHODS

    assert set(METHODS) <= set(METHOD_COLORS)
    assert len({c.lower() for c in METHOD_COLORS.values()}) == len(METHOD_COLORS)


def test_run_charts_draw_a_weight_average_only_for_the_runs_that_kept_one():
    import pandas as pd

    from app_pages.epoch_plots import lines

    plain = pd.DataFrame({"epoch": [1, 2], "robust": [0.2, 0.3], "run": "plain"})
    averaged = pd.DataFrame({"epoch": [1, 2], "robust": [0.2, 0.3], "averaged": [0.25, 0.35], "run": "ema"})
    fig = lines(pd.concat([plain, averaged], ignore_index=True), "epoch", ["robust", "averaged"], color="run")
    assert sorted(t.name for t in fig.data) == ["ema, averaged", "ema, robust", "plain, robust"]


def test_phase_caption_says_why_a_run_has_no_phase_2():
    from app_pages.epoch_plots import phase_caption

    three = {"phases": [{"name": "1 · high learning rate", "start": 1, "end": 10},
                        {"name": "2 · robust learning", "start": 10, "end": 12},
                        {"name": "3 · plateau", "start": 12, "end": 20}], "best_epoch": 12, "phase1_end": None}
    assert phase_caption(three) == ("**1 · high learning rate** (epochs 1–10) · **2 · robust learning** "
                                    "(epochs 10–12) · **3 · plateau** (epochs 12–20)")
    early = {"phases": [{"name": "1 · high learning rate", "start": 1, "end": 90},
                        {"name": "3 · robust overfitting", "start": 90, "end": 400}],
             "best_epoch": 90, "phase1_end": 200}
    assert phase_caption(early).endswith("No phase 2: robust accuracy peaked at epoch 90, before the schedule's "
                                         "phase 1 would have ended (epoch 200), so phase 1 is cut off there.")
    assert phase_caption({"phases": [], "best_epoch": None}) == ""


def test_one_run_s_curves_get_distinct_hues():
    """E(x) and E(x*) of one run are told apart by colour (the theme's first two are both blue)."""
    import pandas as pd

    from app_pages.epoch_plots import lines
    from app_pages.plots import RUN_COLORS

    df = pd.DataFrame({"epoch": [1, 2], "E(x)": [-3.0, -3.1], "E(x*)": [-2.9, -3.0]})
    fig = lines(df, "epoch", ["E(x)", "E(x*)"])
    assert [t.line.color for t in fig.data] == RUN_COLORS[:2]


def test_observation1_heatmap_puts_the_standard_model_last_and_leaves_missing_cells_blank():
    import pandas as pd

    from app_pages.plots import Z_CLIP, observation1_heatmap

    rows = [("s", "standard", "PGD", "lower", -7.0, 0.3, "holds", 23.3), ("a", "sat", "PGD", "lower", 0.1, 0.02, "fails", -5.0),
            ("a", "sat", "PGD-T", "higher", 0.1, 0.02, "holds", 5.0), ("b", "trades", "PGD", "lower", 0.01, 0.0, "fails",
                                                                        float("-inf"))]
    grid = pd.DataFrame(rows, columns=["model", "method", "attack", "expected", "shift", "se", "verdict", "z"])
    h = observation1_heatmap(grid).data[0]
    assert list(h.y) == ["a", "b", "s"] and list(h.x) == ["PGD (lower)", "PGD-T (higher)"]
    assert [list(r) for r in h.text] == [["✗<br>+0.10", "✓<br>+0.10"], ["✗<br>+0.010", ""], ["✓<br>-7.0", ""]]
    fig = observation1_heatmap(grid.replace({"a": "weatnet_s-sat-5k-step"}))
    assert list(fig.layout.yaxis.ticktext) == ["weatnet_s<br>sat-5k-step", "b", "s"]  # broken after the architecture
    z = np.asarray(h.z, dtype=float)
    assert z[0].tolist() == [-5.0, 5.0] and z[1, 0] == -Z_CLIP and z[2, 0] == Z_CLIP and np.isnan(z[1:, 1]).all()


def test_heldout_diamonds_are_drawn_in_the_layer_of_the_curves_they_sit_on():
    """A browser paints WebGL traces over SVG ones, and plotly express draws long runs' curves in
    WebGL: the held-out diamonds of such a chart must be WebGL too (else a best epoch's diamond
    hides under the curve), and stay SVG beside short runs' SVG curves."""
    import pandas as pd

    from app_pages.epoch_plots import heldout_marks, lines

    check = {"attack": "pgd20", "best": {"epoch": 90, "test_pgd20": 0.16}, "last": {"epoch": 400, "test_pgd20": 0.06}}
    for epochs, kind in ((400, "scattergl"), (20, "scatter")):
        df = pd.concat([pd.DataFrame({"epoch": range(1, epochs + 1), "clean": 0.3, "robust": 0.1, "run": r})
                        for r in ("a", "b")], ignore_index=True)
        fig = heldout_marks(lines(df, "epoch", ["clean", "robust"], color="run"), [("a", check), ("b", None)], multi=True)
        assert {t.type for t in fig.data} == {kind} and fig.data[-1].name == "a, held-out (best, last epoch)"
        assert list(fig.data[-1].x) == [90, 400]


def test_weat_explained(app_env):
    at = open_page("weat")
    ok(at)
    assert len(charts(at)) == 1
    at.select_slider(key="weat_m").set_value(8)
    at.button(key="weat_run").click().run()
    ok(at)
    assert len(charts(at)) == 2
    assert any("identity holds" in c.value for c in at.caption)


def test_generation(app_env):
    pytest.importorskip("weat_core.sampling", reason="weat_core.sampling is not there yet")
    at = open_page("generation")
    ok(at)
    at.slider(key="gen_steps").set_value(5)
    at.button(key="gen_run").click().run()
    ok(at)
    assert len(charts(at)) >= 1
    assert at.get("download_button")
    assert at.radio(key="gen_init_stats").value == "pca"  # the tiny checkpoint ships class statistics
    assert at.slider(key="gen_pca_var").value == 0.99 and any("of each class's variance" in c.value for c in at.caption)
    first = at.session_state["gen_result"]
    at.slider(key="gen_pca_var").set_value(0.5)
    at.button(key="gen_run").click().run()
    ok(at)
    name = next(iter(first))  # a smaller share of the variance: other starting images, other samples
    assert not torch.equal(first[name].images, at.session_state["gen_result"][name].images)
    # a model without them: uniform start by default, and picking PCA gives one clear message
    at.sidebar.selectbox(key="model_choice").set_value("untrained weatnet_s (random weights)").run()
    ok(at)
    assert at.radio(key="gen_init_nostats").value == "uniform"
    at.radio(key="gen_init_nostats").set_value("pca")
    at.button(key="gen_run").click().run()
    assert not at.exception and len(at.error) == 1 and "statistics" in at.error[0].value


def test_sidebar_unknown_hub_id_offline(app_env):
    at = open_page()
    at.sidebar.selectbox(key="model_choice").set_value("Hugging Face Hub id…").run()
    ok(at)
    at.sidebar.text_input(key="hub_id").set_value("nobody-here/no-such-model").run()
    assert not at.exception
    assert len(at.sidebar.error) == 1 and "no-such-model" in at.sidebar.error[0].value
    assert len(charts(at)) == 1  # the page still works, on the fallback model


def test_sidebar_uploads(app_env, tmp_path):
    from weat_core.checkpoints import save
    from weat_core.models import create_model

    at = open_page()
    at.sidebar.selectbox(key="model_choice").set_value("Upload .safetensors + config.json, or a .zip…").run()
    ok(at)
    at.sidebar.file_uploader(key="up_weights").set_value(("evil.pkl", pickle.dumps({"x": 1}), "application/octet-stream"))
    at.run()
    assert not at.exception and len(at.sidebar.error) == 1 and "pickle" in at.sidebar.error[0].value
    # a well-formed checkpoint whose config does not match the weights
    d = save(create_model("weatnet_tiny", num_classes=10), tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_classes"] = 7
    at.sidebar.file_uploader(key="up_weights").set_value(
        ("model.safetensors", (d / "model.safetensors").read_bytes(), "application/octet-stream"))
    at.sidebar.file_uploader(key="up_config").set_value(("config.json", json.dumps(cfg).encode(), "application/json"))
    at.run()
    assert not at.exception and len(at.sidebar.error) == 1 and "do not fit" in at.sidebar.error[0].value
    # and the right config loads it
    at.sidebar.file_uploader(key="up_config").set_value(
        ("config.json", (d / "config.json").read_bytes(), "application/json"))
    at.run()
    ok(at)
    assert "upload: model.safetensors" in " ".join(c.value for c in at.caption)


def test_no_checkpoint_no_data(tmp_path, monkeypatch):
    """A fresh clone before any model ships, with no dataset: every page still works, on an
    untrained weatnet_s (clearly labelled) and the built-in synthetic images."""
    import streamlit as st

    import weat_core.checkpoints.listing as ck

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(ck, "checkpoints_dir", lambda: empty)
    monkeypatch.setenv("WEAT_CHECKPOINTS_DIR", str(empty))
    monkeypatch.setenv("WEAT_DATA_DIR", str(empty))
    monkeypatch.delenv("WEAT_DEFAULT_MODEL", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = open_page()
        ok(at)
        assert at.sidebar.selectbox(key="model_choice").value.startswith("untrained")
        assert "No trained checkpoint is shipped yet" in at.sidebar.warning[0].value
        assert at.sidebar.selectbox(key="data_choice").value == "synthetic patterns (built in)"
        assert len(charts(at)) == 1
        for page in ("landscape", "attack_explorer", "training", "generation", "zoo", "weat"):
            at.switch_page(f"app_pages/{page}.py").run()
            ok(at)
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def test_name_set_says_a_group_s_shared_start_and_end_once():
    from app_pages.common import name_set

    assert name_set(["preactresnet18-sat", "preactresnet18-trades"]) == "preactresnet18-{sat, trades}"
    assert name_set(["weatnet_s-sat-5k-step", "weatnet_s-weat-adv-5k-step"]) == "weatnet_s-{sat, weat-adv}-5k-step"
    assert name_set(["x-sat", "x-sat-ema"]) == "x-{sat, sat-ema}"  # a name inside another stays whole
    assert name_set(["a", "b"]) == "a, b" and name_set(["only"]) == "only"
    assert name_set(["ab-x", "ab-x"]) == "ab-x, ab-x"  # nothing left between: whole names


def test_chance_keeps_a_decimal_near_the_five_percent_line():
    """The zoo's Observation 3 captions say how often random orders match ρ: 0.054 must not read
    "5%" beside a verdict of no clear trend, nor 0.004 read "0%"."""
    from app_pages.common import chance

    assert chance(0.0536) == "5.4%" and chance(0.004) == "0.4%"
    assert chance(0.3053) == "31%" and chance(1.0) == "100%"


def test_zoo_gives_observation_3_on_the_attack_plane_too(tmp_path, monkeypatch):
    """Where the checkpoints store the span of E(x) on their attack planes (`plane --store`), the
    zoo's recorded table shows it and the caption under the scatter gives its ρ with robustness,
    across the models and within the group trained alike, with its chance level."""
    import streamlit as st

    from weat_core.checkpoints import save
    from weat_core.models import create_model

    training = {"arch": "weatnet_tiny", "batch_size": 64, "lr": 0.1, "schedule": "onecycle", "eps": 8 / 255, "epochs": 5}
    for k, method in enumerate(["sat", "trades", "weat-adv", "mart"]):  # more robust, smoother: ρ = −1
        save(create_model("weatnet_tiny"), tmp_path / f"z-{method}",
             {"dataset": "cifar10", "method": method, "classes": list(CLASSES), "training": training,
              "metrics": {"clean_acc": 0.6, "pgd20_acc": 0.3 + 0.01 * k, "n": 100, "delta_e": {"pgd20": -0.1 - 0.01 * k},
                          "plane_span": {"mean": 1.0 - 0.1 * k, "se": 0.01, "median": 0.9, "n": 8, "steps": 10,
                                         "grid": 9}}})
    monkeypatch.setenv("WEAT_CHECKPOINTS_DIR", str(tmp_path))
    monkeypatch.setattr("weat_core.checkpoints.listing.checkpoints_dir", lambda: tmp_path / "none")  # these four only
    monkeypatch.setenv("WEAT_DEFAULT_MODEL", "z-sat")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = open_page("zoo")
        ok(at)
        table = at.dataframe[0].value
        assert list(table.sort_values("model")["E(x) span, attack plane"]) == pytest.approx([0.7, 1.0, 0.9, 0.8])  # mart, sat, trades, weat-adv
        note = next(c.value for c in at.caption if c.value.startswith("Observation 3"))
        # four models: ρ = −1 comes 2 times in 24 by chance, so no verdict; |ΔE| grows with robustness here
        assert "Measured around each image instead (*E(x) span, attack plane*, 4 robust models), ρ is -1.00 " \
               "(random orders match it 8.3% of the time); within the groups trained alike, -1.00" in note
        assert note.endswith("**no clear trend either way**.")
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()

"""Times the app's work on the CPU against the targets of issue 3 (2 cores, default model).

    python bench/bench_app.py [--data DIR|TAR] [--threads 2] [--repeat 3] [--browser] [--json out.json]

1. cold start to first chart: the Overview page in a fresh process, after the imports
   (streamlit.testing AppTest: model load, 128 test images, PGD-10, the histogram); with
   --browser also `streamlit run` + headless chromium, from launch (imports included) to the
   chart on screen;
2. energy landscape: 256 test images, natural + PGD-10 + targeted PGD-10;
3. SGLD: 16 images × 100 steps;
4. one attack-explorer run: untargeted and targeted PGD-20 on one image, every step recorded;
5. a stop inside a slow attack: seconds from a stop request, made 3 s into the energy
   landscape's Square (1,000 queries, batches of 32), to the landscape's return — how long the
   page's Stop button takes to act there; and the same 3 s into the model zoo's evaluation
   under AutoAttack (batches of 128, as on the page), whose callback is where a Stop acts.

The model is the app's default: the preferred shipped checkpoint, else an untrained weatnet_s
(same speed). Data: --data, else $WEAT_DATA_DIR, else the test split of the shared CIFAR-10
tarball unpacked into a temporary folder, else the built-in synthetic images. Prints a table;
timings are the median of --repeat runs (after one warm-up) except the cold start.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = {"cold start to first chart (after imports)": 5.0, "energy landscape 256 img, PGD-10 + PGD-10-T": 10.0,
           "SGLD 16 img × 100 steps": 10.0, "attack explorer run (PGD-20 + PGD-20-T, 1 img)": 2.0}


def _data_dir(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("WEAT_DATA_DIR"):
        return os.environ["WEAT_DATA_DIR"]
    tar = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not tar.is_file():
        return None
    out = Path(tempfile.mkdtemp(prefix="weat-bench-data-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    with tarfile.open(tar) as t:  # only the test split: 10 000 small JPEGs
        t.extractall(out / "cifar10", members=[m for m in t.getmembers() if m.name.lstrip("./").startswith("test/")],
                     filter="data")
    return str(out)


def _median(fn, repeat: int) -> float:
    fn()  # warm-up: first-call allocations, oneDNN kernel selection
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cold_start_apptest() -> float:
    """Seconds from a fresh AppTest of app.py (imports already done) to the Overview chart."""
    from streamlit.testing.v1 import AppTest

    t0 = time.perf_counter()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    dt = time.perf_counter() - t0
    if at.exception or not at.get("plotly_chart"):
        raise RuntimeError(f"the Overview page did not draw its chart: {[e.value for e in at.exception]}")
    return dt


def cold_start_browser() -> float | None:
    """Seconds from `streamlit run` to the first chart in headless chromium (imports included)."""
    import socket
    import urllib.request

    chromium = "/usr/bin/chromium"
    if not Path(chromium).is_file():
        print("(--browser: /usr/bin/chromium is missing, skipped)")
        return None
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as prof, sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                prof, executable_path=chromium, headless=True,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            pg = ctx.new_page()
            t_nav = time.perf_counter()
            pg.goto(f"http://127.0.0.1:{port}/")
            pg.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=120_000)
            t1 = time.perf_counter()
            ctx.close()
        print(f"(--browser: server up after {t_nav - t0:.1f} s; page open to chart {t1 - t_nav:.1f} s)")
        return t1 - t0
    finally:
        proc.terminate()
        proc.wait(10)


def stop_latency(model, x, y, after: float = 3.0) -> float:
    """Seconds from a stop request `after` s into the landscape's Square to the landscape's return."""
    import threading

    from weat_core import lens

    asked: dict[str, float] = {}
    timer = threading.Timer(after, lambda: asked.setdefault("at", time.perf_counter()))
    timer.start()
    land = lens.energy_landscape(model, x, y, {"Square": "Square"}, batch_size=32, should_stop=lambda: "at" in asked)
    done = time.perf_counter()
    timer.cancel()
    if not land.stopped:
        raise RuntimeError(f"Square finished in under {after:g} s; nothing was stopped")
    return done - asked["at"]


def zoo_stop_latency(model, x, y, after: float = 3.0) -> float:
    """Seconds from a stop request `after` s into the zoo's AutoAttack to `evaluate`'s return: the
    app's Stop raises from the next callback, as the callback here does once asked."""
    import threading

    from weat_core.lens import zoo_table

    class Stopped(Exception):
        pass

    asked: dict[str, float] = {}

    def callback(name, attack, done, n):
        if attack == "aa" and "timer" not in asked:  # the request comes `after` s into AutoAttack
            asked["timer"] = threading.Timer(after, lambda: asked.setdefault("at", time.perf_counter()))
            asked["timer"].start()
        if "at" in asked:
            raise Stopped

    try:
        zoo_table({"m": model}, x[:128], y[:128], attacks=["aa"], callback=callback)
    except Stopped:
        return time.perf_counter() - asked["at"]
    finally:
        if "timer" in asked:
            asked["timer"].cancel()
    raise RuntimeError(f"AutoAttack finished in under {after:g} s; nothing was stopped")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset folder/tarball (default: $WEAT_DATA_DIR or the shared CIFAR-10)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--browser", action="store_true", help="also time a real `streamlit run` + chromium cold start")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()

    data = _data_dir(args.data)
    if data:
        os.environ["WEAT_DATA_DIR"] = data

    t_imp = time.perf_counter()
    import plotly.express  # noqa: F401
    import streamlit  # noqa: F401
    import torch
    import torchattacks  # noqa: F401
    from streamlit.testing.v1 import AppTest  # noqa: F401

    from app_pages import common  # noqa: F401  (the app's own imports)
    from weat_core import lens
    from weat_core.checkpoints import list_checkpoints, load
    from weat_core.models import create_model
    from weat_core.sampling import generate
    t_imp = time.perf_counter() - t_imp
    torch.set_num_threads(args.threads)

    res: dict[str, float] = {}
    res["cold start to first chart (after imports)"] = cold_start_apptest()

    infos = list_checkpoints()
    pref = [c for c in infos if c.arch == "weatnet_s" and c.method == "weat-adv"] or \
        [c for c in infos if c.arch == "weatnet_s"] or infos
    if pref:
        model_name, model = pref[0].name, lens.prepare(load(pref[0].name))
    else:
        torch.manual_seed(0)
        model_name, model = "untrained weatnet_s", lens.prepare(create_model("weatnet_s"))
    s = None
    if data:
        found = lens.find_datasets(data)
        if found:
            from weat_core.data import load_split

            s = load_split(found[0], "test", limit=256, download=False)
    data_name = s.name if s is not None else "synthetic"
    if s is None:
        s = lens.demo_images(256)
    x, y = s.float(), s.y

    attacks = {"PGD": lens.attack_from("PGD", steps=10), "PGD-T": lens.attack_from("PGD-T", steps=10)}
    res["energy landscape 256 img, PGD-10 + PGD-10-T"] = _median(
        lambda: lens.energy_landscape(model, x, y, attacks, batch_size=128), args.repeat)
    labels = torch.arange(16) % model.num_classes
    res["SGLD 16 img × 100 steps"] = _median(
        lambda: generate(model, labels, steps=100, init="uniform", seed=0), args.repeat)

    def explorer():
        for kind in ("PGD", "PGD-T"):
            lens.attack_trajectory(model, x[0], int(y[0]), lens.attack_from(kind, steps=20))

    res["attack explorer run (PGD-20 + PGD-20-T, 1 img)"] = _median(explorer, args.repeat)
    res["stop inside Square (request to return)"] = stop_latency(model, x, y)
    res["stop inside the zoo's AutoAttack (request to return)"] = zoo_stop_latency(model, x, y)
    if args.browser:
        b = cold_start_browser()
        if b is not None:
            res["cold start incl. imports, streamlit run + chromium"] = b

    print(f"\nWEAT Lens app bench · model {model_name} · data {data_name} · torch {torch.__version__} · "
          f"{torch.get_num_threads()} threads · imports {t_imp:.1f} s · load avg {os.getloadavg()[0]:.1f}")
    print(f"{'what':52s} {'seconds':>8s} {'target':>7s}")
    for k, v in res.items():
        tgt = TARGETS.get(k)
        mark = "" if tgt is None else ("  ok" if v <= tgt else "  OVER")
        print(f"{k:52s} {v:8.2f} {'' if tgt is None else f'{tgt:7.0f}'}{mark}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": model_name, "data": data_name, "seconds": res,
                                               "targets": TARGETS}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

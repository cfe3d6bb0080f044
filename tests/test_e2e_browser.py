"""End to end in a real browser: `streamlit run app.py` as a subprocess, driven by Debian's headless
chromium through Playwright. Visits every page, runs one attack and one generation, and saves a
screenshot of each step into $WEAT_ARTIFACTS_DIR (default: a temporary folder).

Skipped, with the reason, where /usr/bin/chromium (apt-get install chromium; see
.ci/install-browser.sh) or the playwright package is missing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_app import make_checkpoint, make_image_folder

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("WEAT_CHROMIUM", "/usr/bin/chromium")
PAGES = [("", "WEAT Lens"), ("landscape", "Energy landscape"), ("attack_explorer", "Attack explorer"),
         ("training", "Training dynamics"), ("generation", "Generation"), ("zoo", "Model zoo"),
         ("weat", "WEAT explained")]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"{CHROMIUM} is missing: install Debian's chromium (bash .ci/install-browser.sh)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(cmd: list, cwd: Path, env: dict, port: int, log_path: Path):
    """Run `cmd` (a streamlit server on `port`) until its health check answers; yields its URL
    and stops it afterwards. Fails with the end of its log if it does not start within 60 s."""
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("streamlit did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = make_image_folder(root / "data" / "tiny", {"train": 4, "test": 4})
    make_checkpoint(root / "ckpts", data)
    port = _free_port()
    env = dict(os.environ, WEAT_CHECKPOINTS_DIR=str(root / "ckpts"), WEAT_DATA_DIR=str(root / "data"),
               HF_HUB_OFFLINE="1", WEAT_DEFAULT_MODEL="tiny-weat-adv", HF_HUB_CACHE=str(root / "hub"), PYTHONPATH=str(REPO),
               WEAT_RUNS_DIR=str(root / "runs"))
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with streamlit_server(cmd, REPO, env, port, root / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    d = Path(os.environ["WEAT_ARTIFACTS_DIR"]) if os.environ.get("WEAT_ARTIFACTS_DIR") else \
        tmp_path_factory.mktemp("artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        # a fresh profile folder (Playwright passes it as --user-data-dir)
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, viewport={"width": 1400, "height": 2000},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        pg = ctx.pages[0] if ctx.pages else ctx.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        ctx.close()


def settle(pg, timeout: float = 90.0) -> None:
    """Wait until the script run started by the last action has finished."""
    pg.wait_for_selector('[data-testid="stApp"]')
    time.sleep(0.5)  # let a rerun request reach the server
    deadline = time.time() + timeout
    quiet = 0
    while time.time() < deadline:
        state = pg.get_attribute('[data-testid="stApp"]', "data-test-script-state")
        quiet = quiet + 1 if state == "notRunning" else 0
        if quiet >= 3:
            return
        time.sleep(0.25)
    raise AssertionError(f"the app was still running after {timeout:.0f} s")


def no_errors(pg, where: str) -> None:
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, f"{where}: {exc.first.inner_text()[:500]}"


def test_every_page_attack_and_generation(server, page, artifacts):
    pg = page
    for path, title in PAGES:
        pg.goto(f"{server}/{path}")
        settle(pg)
        pg.get_by_role("heading", name=title).first.wait_for()
        no_errors(pg, path or "overview")
        if path == "":
            pg.wait_for_selector('[data-testid="stPlotlyChart"]')  # the first picture
        pg.screenshot(path=str(artifacts / f"page-{path or 'overview'}.png"), full_page=True)

    # one attack: the attack explorer with its default settings
    pg.goto(f"{server}/attack_explorer")
    settle(pg)
    pg.get_by_role("button", name="Run both attacks").click()
    settle(pg)
    no_errors(pg, "attack explorer")
    assert pg.locator('[data-testid="stPlotlyChart"]').count() >= 4
    pg.screenshot(path=str(artifacts / "attack-explorer-run.png"), full_page=True)

    # one generation (the tiny model's defaults: 40 steps, a second or two)
    pg.goto(f"{server}/generation")
    settle(pg)
    pg.get_by_role("button", name="Generate").click()
    settle(pg)
    no_errors(pg, "generation")
    pg.get_by_role("button", name="Download grid (PNG)").wait_for()
    assert pg.locator('[data-testid="stPlotlyChart"]').count() >= 1
    pg.screenshot(path=str(artifacts / "generation-run.png"), full_page=True)
    assert len(list(artifacts.glob("*.png"))) >= len(PAGES) + 2


# the buttons whose label is cut off (an ellipsis: a part of the label wider than its box)
CUT_BUTTONS = """() => [...document.querySelectorAll('button[data-testid^="stBaseButton"]')]
    .filter(b => b.offsetParent !== null
                 && [...b.querySelectorAll('div, p, span')].some(e => e.scrollWidth > e.clientWidth + 1))
    .map(b => b.innerText)"""


def test_a_narrow_window_cuts_no_button_label(server, page):
    """A 900-px window with the sidebar open (a laptop's split screen; the content column is then
    about 440 px): every page's buttons show their whole label. Run/Stop in a seventh of the
    column cut "Generate" to "G…" and the sweep's button to "Run…"."""
    pg = page
    pg.set_viewport_size({"width": 900, "height": 2000})
    try:
        for path, title in PAGES:
            pg.goto(f"{server}/{path}")
            settle(pg)
            pg.get_by_role("heading", name=title).first.wait_for()
            assert pg.evaluate(CUT_BUTTONS) == [], path or "overview"
    finally:
        pg.set_viewport_size({"width": 1400, "height": 2000})


CHART_BOXES = """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
    .filter(c => c.offsetParent !== null).map(c => { const r = c.getBoundingClientRect();
    return [Math.round(r.x), Math.round(r.y), Math.round(r.width)]; })"""


@pytest.mark.parametrize("width", [1920, 900])
def test_side_by_side_charts_share_a_wide_window_and_stack_in_a_narrow_one(server, page, width):
    """The training page's four charts (common.side_by_side): two a row that share a 1920-px
    projector's column (they stayed 400 px wide, with 700 px empty beside them), and one under
    the other, each the column's whole width, in a 900-px window."""
    pg = page
    pg.set_viewport_size({"width": width, "height": 2000})
    try:
        pg.goto(f"{server}/training")
        settle(pg)
        pg.wait_for_selector('[data-testid="stPlotlyChart"]')
        time.sleep(1)  # plotly sizes a chart to its box once drawn
        boxes = pg.evaluate(CHART_BOXES)[:4]
        column = pg.evaluate("""() => document.querySelector('[data-testid="stTabs"]').getBoundingClientRect().width""")
        assert len(boxes) == 4
        if width == 1920:
            (x0, y0, w0), (x1, y1, w1) = boxes[:2]
            assert y0 == y1 and x1 > x0 and min(w0, w1) > 0.45 * column > 600
        else:
            assert len({x for x, _, _ in boxes}) == 1 and len({y for _, y, _ in boxes}) == 4
            assert min(w for _, _, w in boxes) > 0.95 * column
    finally:
        pg.set_viewport_size({"width": 1400, "height": 2000})



# each shown formula's rightmost piece of math against its block's right edge, in px
FORMULA_FITS = """() => [...document.querySelectorAll('.katex-display')].filter(d => d.offsetParent !== null)
    .map(d => [Math.round(Math.max(...[...d.querySelectorAll('.base')].map(b => b.getBoundingClientRect().right))),
               Math.round(d.getBoundingClientRect().right)])"""


TOOLBARS_SHOWN = """() => [...document.querySelectorAll('.js-plotly-plot .modebar-container')]
    .filter(m => getComputedStyle(m).display !== 'none').length"""


def test_the_formulas_and_charts_fit_a_phone(server, page):
    """On a 390-px phone the formulas of the overview and the WEAT page fit the screen (app.py
    shrinks them under 640 px; the overview's four stack, one a line): at full size the WEAT loss's
    second line ran off the screen, cut. The charts show no plotly toolbar there: on a touch screen
    it stayed over their titles."""
    pg = page
    pg.set_viewport_size({"width": 390, "height": 844})
    try:
        for path in ("", "weat"):
            pg.goto(f"{server}/{path}")
            settle(pg)
            pg.wait_for_selector(".katex-display")
            sizes = pg.evaluate(FORMULA_FITS)
            assert sizes and all(formula <= box + 2 for formula, box in sizes), (path or "overview", sizes)
            pg.wait_for_selector(".js-plotly-plot")  # and no plotly toolbar over the charts' titles
            assert pg.evaluate(TOOLBARS_SHOWN) == 0
    finally:
        pg.set_viewport_size({"width": 1400, "height": 2000})

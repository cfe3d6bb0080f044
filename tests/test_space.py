"""The Hugging Face Space set-up: README front matter, Dockerfile and .dockerignore agree, and the
Dockerfile's own CMD, run with its ENV over exactly the files the image would hold, serves an app
whose first page draws its chart in a real browser.

No Docker engine runs in CI, so the image itself is not built here; this checks everything of it
that can be checked without one (the pip install step is what `.ci/run` already does)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _dockerfile() -> dict:
    """ENV (dict), EXPOSE (int), CMD (list) and the WORKDIR of the Dockerfile."""
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)  # join continuation lines
    out: dict = {"env": {}}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                k, v = pair.split("=", 1)
                out["env"][k] = v
        elif line.startswith("EXPOSE "):
            out["expose"] = int(line.split()[1])
        elif line.startswith("CMD "):
            out["cmd"] = json.loads(line[4:])
        elif line.startswith("WORKDIR "):
            out["workdir"] = line.split()[1]
    return out


def _front_matter() -> dict:
    text = (REPO / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must open with the Space's YAML front matter"
    block = text[4:text.index("\n---", 4)]
    return {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in block.splitlines() if ":" in ln
                                              and not ln.startswith(" "))}


def _image_files() -> list[str]:
    """The repository files `COPY . .` puts into the image: tracked and untracked-not-ignored
    files, minus what .dockerignore excludes."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    patterns = [p.strip().rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        for pat in patterns:
            pat = pat.removeprefix("**/")
            if any(fnmatch.fnmatch("/".join(parts[:i]), pat) or fnmatch.fnmatch(parts[i - 1], pat)
                   for i in range(1, len(parts) + 1)):
                return True
        return False

    return [p for p in listed if not ignored(p) and (REPO / p).is_file()]


def test_front_matter_dockerfile_and_config_agree():
    fm, df = _front_matter(), _dockerfile()
    assert fm["sdk"] == "docker"
    port = int(fm["app_port"])
    assert df["expose"] == port
    assert f"--server.port={port}" in df["cmd"] and "--server.address=0.0.0.0" in df["cmd"]
    assert df["cmd"][:3] == ["streamlit", "run", "app.py"]
    assert df["env"]["WEAT_DATA_DIR"].startswith(df["env"]["HOME"])  # the user's own, writable folder


def test_image_holds_the_app_and_its_models_but_no_runs_or_data():
    files = set(_image_files())
    assert {"app.py", "requirements.txt", "requirements-nodeps.txt", ".streamlit/config.toml",
            "weat_core/__init__.py", "app_pages/overview.py"} <= files
    shipped = [p for p in files if p.startswith("checkpoints/") and p.count("/") == 2 and p.endswith("config.json")]
    assert shipped, "the image must carry the shipped checkpoints"
    recorded = sorted(Path(REPO, "checkpoints", "_runs").glob("*/log.jsonl"))  # logs only: no statistics needed
    assert all(str(r.relative_to(REPO)) in files for r in recorded), "the training page's recorded runs"
    for cfg_file in shipped:  # the SGLD start statistics each checkpoint names are in the image too
        link = json.loads((REPO / cfg_file).read_text()).get("init_stats")
        beside = cfg_file.replace("config.json", "init_stats.safetensors")
        target = os.path.normpath(os.path.join(os.path.dirname(cfg_file), link)) if link else beside
        assert target in files, f"{cfg_file}: its class statistics {target} are not in the image"
    assert not any(p.startswith(("runs/", ".data/", ".git/")) or "__pycache__" in p for p in files)


@pytest.mark.skipif(not Path(os.environ.get("WEAT_CHROMIUM", "/usr/bin/chromium")).is_file(),
                    reason="no headless chromium (bash .ci/install-browser.sh)")
def test_dockerfile_cmd_serves_the_first_chart(tmp_path):
    """Run the CMD with the Dockerfile's ENV from a copy of the image's files (no dataset, no
    network: the Space's state before anyone picks data), then open it in chromium."""
    from test_e2e_browser import CHROMIUM, _free_port, no_errors, settle, streamlit_server

    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    df = _dockerfile()
    app = tmp_path / "home" / "user" / "app"
    for rel in _image_files():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, app / rel)
    home = tmp_path / "home" / "user"
    env = {k: v.replace(df["env"]["HOME"], str(home)) for k, v in df["env"].items()}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    Path(env["WEAT_DATA_DIR"]).mkdir(parents=True)  # RUN mkdir -p "$WEAT_DATA_DIR"
    env.update(HF_HUB_OFFLINE="1")  # this test has no network
    port = _free_port()
    cmd = [sys.executable, "-m"] + [c.replace(f"={df['expose']}", f"={port}") for c in df["cmd"]] + \
          ["--server.headless=true", "--browser.gatherUsageStats=false"]
    log_path = tmp_path / "streamlit.log"
    with streamlit_server(cmd, app, env, port, log_path) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-quic"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1600})
        pg.set_default_timeout(60_000)
        pg.goto(url)
        settle(pg)
        pg.wait_for_selector('[data-testid="stPlotlyChart"]')
        no_errors(pg, "overview in the Space set-up")
        browser.close()
    text = log_path.read_text()
    assert "is not a valid config option" not in text and "Traceback" not in text, text[-3000:]

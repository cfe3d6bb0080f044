"""What every page shares: the sidebar's selection (`ctx()`; `app_pages.sidebar` draws it), cached
images, error guards and small widgets. Data is cached with st.cache_data."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Optional

import streamlit as st
import torch

from weat_core import WeatError, lens
from weat_core.data import ImageSet, data_root

from app_pages import model_store

SYNTHETIC = "synthetic patterns (built in)"
MAX_TEST = 1024  # test images kept in memory per dataset (the pages take prefixes of these)


@dataclass
class Ctx:
    model: torch.nn.Module
    model_name: str
    model_id: str  # a string that changes whenever the model does (keys for cached results)
    untrained: bool
    data: str  # dataset source: a name, a path or SYNTHETIC
    device: str


# ------------------------------------------------------------------------------------------
# cached data


@st.cache_data(show_spinner="Loading images…", max_entries=8)
def _load_split(source: str, split: str, n: int, num_classes: int) -> ImageSet:
    if source == SYNTHETIC:
        return lens.demo_images(n, num_classes=num_classes, seed=0 if split == "test" else 1)
    from weat_core.data import load_split

    return load_split(source, split, limit=n, download=source.lower() in ("cifar10", "cifar100", "svhn"))


def slug(s: str) -> str:
    """A file-name-safe version of a model or dataset name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s).strip("_")[:60] or "model"


def short(s: str) -> str:
    """A path's last part (dataset and model names stay as they are)."""
    return os.path.basename(s.rstrip("/")) if os.sep in s else s


def chance(p: float) -> str:
    """A permutation p-value as a share of random orders, with a decimal below 10 %, where a whole
    percent would blur the verdict (0.054 reads "5.4%", not "5%", beside "no clear trend")."""
    return f"{p:.1%}" if p < 0.1 else f"{p:.0%}"


def name_set(names: list[str]) -> str:
    """Model names with the start and end they share said once: "weatnet_s-{sat, trades}-5k-step"
    (whole names where they share neither)."""
    pre = os.path.commonprefix(names)
    pre = pre[:pre.rfind("-") + 1]
    suf = os.path.commonprefix([n[::-1] for n in names])[::-1]
    suf = suf[suf.find("-"):] if "-" in suf else ""
    mids = [n[len(pre):len(n) - len(suf)] for n in names]
    if len(names) < 2 or not (pre or suf) or not all(mids):
        return ", ".join(names)
    return f"{pre}{{{', '.join(mids)}}}{suf}"


def ctx() -> Ctx:
    c = st.session_state.get("ctx")
    if c is None:  # a page run without app.py (should not happen): draw the sidebar now
        from app_pages.sidebar import sidebar

        sidebar()
        c = st.session_state["ctx"]
    return c


# ------------------------------------------------------------------------------------------
# data


def images(split: str = "test", n: int = 256) -> ImageSet:
    """The first n images (class-balanced order) of the chosen dataset's split, falling back to
    the built-in synthetic set (with a message) when the dataset cannot be read."""
    c = ctx()
    k = c.model.num_classes
    try:
        s = load_images(c.data, split, n, k)
    except WeatError as e:
        st.warning(f"{e} — using the built-in synthetic patterns instead.")
        s = load_images(SYNTHETIC, split, n, k)
    if s.num_classes > k:
        st.warning(f"The dataset has {s.num_classes} classes but the model only {k}; using the built-in synthetic "
                   "patterns instead. Pick a matching dataset in the sidebar.")
        s = load_images(SYNTHETIC, split, n, k)
    if s.name == "synthetic":
        st.caption("ℹ️ Images: built-in synthetic patterns. For real ones pick **cifar10** under Dataset in the "
                   f"sidebar (torchvision downloads it once, about 170 MB, into {data_root()}), or set "
                   "WEAT_DATA_DIR to a folder of train/ and test/ class folders.")
    return s


def load_images(source: str, split: str, n: int, num_classes: int) -> ImageSet:
    """The first n images (class-balanced order) of a split of `source` (a dataset the sidebar
    offers), as `images` loads them but without falling back; raises WeatError."""
    # the test split is loaded whole up to MAX_TEST once, and cut: every size shares one cache entry
    s = _load_split(source, split, MAX_TEST if split == "test" and n <= MAX_TEST else n, num_classes)
    n = min(n, len(s))
    return ImageSet(s.x[:n], s.y[:n], s.classes, s.name)


def class_names(s: Optional[ImageSet] = None) -> tuple[str, ...]:
    c = ctx()
    names = c.model.config.get("classes")
    if names and len(names) == c.model.num_classes:
        return tuple(names)
    if s is not None and s.num_classes == c.model.num_classes:
        return s.classes
    from weat_core.data import CIFAR10_CLASSES

    return CIFAR10_CLASSES if c.model.num_classes == 10 else tuple(str(i) for i in range(c.model.num_classes))


# ------------------------------------------------------------------------------------------
# helpers for pages


class TimeLimitReached(WeatError):
    """A page's computation ran past the server's $WEAT_MAX_TASK_MINUTES (`check_time`)."""


_deadline: ContextVar[Optional[float]] = ContextVar("weat_lens_deadline", default=None)


def env_minutes(name: str) -> Optional[float]:
    """A server's time limit in minutes from the environment variable `name`: a positive number,
    else None, no limit (unset, zero or less, or a typo, which does not stop the app)."""
    try:
        minutes = float(os.environ.get(name, "").strip())
    except ValueError:
        return None
    return minutes if minutes > 0 else None


def max_task_minutes() -> Optional[float]:
    """How long one page computation (one `guard` block) may run on this server:
    $WEAT_MAX_TASK_MINUTES (the public Space sets it, so that no visitor's hour-long AutoAttack
    halves everyone else's speed), else None, no limit."""
    return env_minutes("WEAT_MAX_TASK_MINUTES")


def check_time() -> None:
    """Raise TimeLimitReached once the `guard` block under way has run past $WEAT_MAX_TASK_MINUTES;
    the pages' progress callbacks call it, so a long computation ends at its next report."""
    end = _deadline.get()
    if end is not None and time.monotonic() > end:
        raise TimeLimitReached(f"it ran past {max_task_minutes():g} minutes")


@contextmanager
def guard(what: str = "This") -> Iterator[None]:
    """Turn errors into one message on the page; the rest of the app keeps working. The block
    is also one computation for the server's time limit (`check_time`)."""
    minutes = max_task_minutes()
    token = _deadline.set(None if minutes is None else time.monotonic() + 60 * minutes)
    try:
        yield
    except TimeLimitReached:
        st.error(f"{what} was stopped after {minutes:g} minutes: this server gives a computation at most that long, "
                 "so that its visitors share its cores (WEAT_MAX_TASK_MINUTES). Fewer images, models, attacks or "
                 "steps finish sooner; on your own machine (`streamlit run app.py`) there is no limit.")
    except WeatError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001 - (Streamlit's stop/rerun signals are BaseExceptions and pass)
        st.error(f"{what} failed: {type(e).__name__}: {e}"[:500])
    finally:
        _deadline.reset(token)


def progress_callback(bar, label: str):
    """callback(done, total, name) → st.progress updates (each call is also a point where a
    Stop click or any widget change interrupts the run, and where the server's time limit acts)."""

    def cb(done: int, total: int, name: str = "") -> None:
        check_time()
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {name} {done}/{total}")

    return cb


def other_model_picker(label: str, key: str, exclude: str) -> tuple[Optional[str], Optional[torch.nn.Module]]:
    """A second model for side-by-side views (None when 'none' is picked or it fails to load)."""
    opts = ["none"] + [m for m in model_store.model_choices() if m != exclude]
    pick = st.selectbox(label, opts, key=key)
    if pick == "none":
        return None, None
    try:
        return pick, model_store.load_named_model(pick, ctx().device)
    except WeatError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001
        st.error(f"Could not load {pick}: {e}"[:400])
    return None, None


SIDE_W = 400  # px a model when two are shown side by side: two a row fit a laptop's 820-px column


# Streamlit's fixed-width blocks stay SIDE_W px in a wide window, and its stretching ones shrink
# instead of wrapping: this rule makes the side_by_side blocks grow from SIDE_W to share the row
# (flex-basis SIDE_W, then wrap), so a 1920-px projector draws two models' charts at about 700 px.
_SIDE_CSS = ('<style>div:has(> div[class*="st-key-sidebox-"]) '
             f'{{flex: 1 1 {SIDE_W}px !important; width: auto !important; max-width: 100% !important;}} '
             'div[class*="st-key-sidebox-"] {width: 100% !important;}</style>')


def side_by_side(n: int, key: str) -> list:
    """Containers for `n` models' results: with two or more, blocks of at least SIDE_W px that
    share the width of the row and wrap, side by side where they fit and one under the other in a
    narrower window (where half-columns squeezed charts and tables); with one, the whole width.
    `key` names the row (unique on its page)."""
    if n < 2:
        return [st.container()]
    st.html(_SIDE_CSS)
    row = st.container(horizontal=True, wrap=True, key=f"side-{key}")
    return [row.container(width=SIDE_W, key=f"sidebox-{key}-{i}") for i in range(n)]


def model_caption() -> None:
    c = ctx()
    d = lens.describe_model(c.model)
    st.caption(f"Model **{c.model_name}** · {d['arch']} · {d['method']} · trained on {short(str(d['dataset']))} · "
               f"{d['params'] / 1e6:.2f} M parameters · data: {short(c.data)} · {c.device}")


def eps_slider(key: str, norm: str = "linf", default_255: int = 8) -> float:
    """ε as a slider: in 1/255 units for L∞, in plain units for L2."""
    if norm == "linf":
        return st.slider("ε (×1/255)", 1, 32, default_255, key=f"{key}_linf") / 255
    return st.slider("ε (L2)", 0.05, 3.0, 0.5, 0.05, key=f"{key}_l2")


OBSERVATION_PREFIX = ("Observation 1 on this model (✓ holds, ✗ fails, ≈ within noise; ± two standard errors of the "
                      "per-image shifts): ")


def observation_lines(summary) -> list[str]:
    """One short verdict per attack with an expected direction: did mean E(x) move that way?"""
    out = []
    for _, r in lens.observation1(summary).iterrows():
        moved = "lowered" if r["shift E(x)"] < 0 else "raised"
        kept = f"; {r['unchanged']:.0%} handed back unchanged" if r["unchanged"] > 0 else ""
        mark = {"holds": "✓", "fails": "✗", "unclear": "≈"}[r["verdict"]]
        out.append(f"{mark} {r['attack']} {moved} mean E(x) by {abs(r['shift E(x)']):.3f} ± {2 * r['se']:.3f} "
                   f"(expected: {r['expected']}; {r['share E(x)↓']:.0%} of images went lower{kept})")
    return out


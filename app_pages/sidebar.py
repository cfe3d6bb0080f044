"""The sidebar every page shares: the model, device and dataset pickers. app.py draws it on every
run, so its widgets keep their values across pages; pages read the selection with
`common.ctx()`. The models it offers come from `app_pages.model_store`."""

from __future__ import annotations

import hashlib
import os

import streamlit as st
import torch

from weat_core import WeatError, lens

from app_pages import live_runs, model_store
from app_pages.common import SYNTHETIC, Ctx, short
from app_pages.model_store import TRAINED_PREFIX, UNTRAINED

HUB = "Hugging Face Hub id…"
UPLOAD = "Upload .safetensors + config.json, or a .zip…"
CUSTOM_PATH = "a folder or .tar.gz path…"
BIG_ON_CPU = 5_000_000  # parameters above which the sidebar says that pages will be slow on a CPU


@st.cache_data(show_spinner=False, ttl=60)
def _find_datasets() -> list[str]:
    return lens.find_datasets()


def sidebar() -> None:
    """Draw the shared model / dataset / device picker; pages read the result with ctx()."""
    live_runs.keep_in_url()
    sb = st.sidebar
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + \
        (["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else [])
    choices = model_store.model_choices()
    options = choices + [HUB, UPLOAD]
    if st.session_state.get("model_choice") not in options:
        st.session_state.pop("model_choice", None)
    default = model_store.default_model(choices)
    # index only matters the first time; 0 afterwards keeps Streamlit from warning about a value
    # also set through session state (the Training page's "use it" button does that).
    sb.selectbox("Model", options, index=0 if "model_choice" in st.session_state else options.index(default),
                 key="model_choice",
                 help="Checkpoints shipped in checkpoints/ (and $WEAT_CHECKPOINTS_DIR), models trained on the "
                      "Training page, a Hugging Face Hub repo, or your own files.")
    device = sb.selectbox("Device", devices, key="device")
    choice = st.session_state["model_choice"]
    model, name, model_id = None, choice, f"{choice}|{device}"
    try:
        if choice == HUB:
            hub_id = sb.text_input("Hub repo id", key="hub_id", placeholder="owner/name")
            rev = sb.text_input("Revision (optional)", key="hub_rev", placeholder="main")
            if hub_id.strip():
                model = model_store.load_checkpoint(hub_id.strip(), device, rev.strip() or None)
                name, model_id = hub_id.strip(), f"hub:{hub_id.strip()}@{rev.strip()}|{device}"
        elif choice == UPLOAD:
            w = sb.file_uploader("Weights (.safetensors, or the .zip the Training page downloads)", key="up_weights",
                                 type=["safetensors", "zip", "pt", "pth", "bin", "ckpt", "pkl"])
            c = sb.file_uploader("config.json (inside the .zip already)", type=["json"], key="up_config")
            if w is not None:
                data = w.getvalue()
                cfg = c.getvalue() if c is not None else None
                model = model_store.load_upload(data, cfg, w.name, device)
                digest = hashlib.sha256(data + (cfg or b"")).hexdigest()[:12]
                name, model_id = f"upload: {w.name}", f"upload:{digest}|{device}"
        elif choice.startswith(TRAINED_PREFIX):
            model = model_store.load_named_model(choice, device)
            model_id = f"{choice}:{st.session_state.get('trained_ids', {}).get(choice[len(TRAINED_PREFIX):], '')}"
        else:
            model = model_store.load_named_model(choice, device)
    except WeatError as e:
        sb.error(str(e))
    except Exception as e:  # noqa: BLE001 - a bad model must never take the app down
        sb.error(f"Could not load this model: {type(e).__name__}: {e}"[:400])
    if model is None:
        fallback = default if default in choices else UNTRAINED
        model, name, model_id = model_store.load_named_model(fallback, device), fallback, f"{fallback}|{device}"
        if choice in (HUB, UPLOAD):
            sb.caption(f"Using **{fallback}** until a model is given.")
    untrained = name == UNTRAINED
    if untrained:
        why = "" if choices[0] != UNTRAINED else "No trained checkpoint is shipped yet: "
        sb.warning(f"{why}this is an **untrained** weatnet_s, so its energies and accuracies are those of random "
                   "weights. Train one on the **Training** page.", icon="⚠️")
    elif device == "cpu":
        params = sum(p.numel() for p in model.parameters())
        if params > BIG_ON_CPU:
            sb.info(f"**{name}** has {params / 1e6:.1f} M parameters, many times the work per image of the small "
                    "CPU models: on a CPU, pages that attack or sample many images take tens of seconds. Fewer "
                    "images make them quick.", icon="⏱️")

    found = _find_datasets()
    data_opts = found + ["cifar10", SYNTHETIC, CUSTOM_PATH]
    data_opts = list(dict.fromkeys(data_opts))
    if st.session_state.get("data_choice") not in data_opts:
        st.session_state.pop("data_choice", None)
    sb.selectbox("Dataset", data_opts, index=0 if found or "data_choice" in st.session_state
                 else data_opts.index(SYNTHETIC), key="data_choice",
                 format_func=_data_label, help="Found under $WEAT_DATA_DIR; 'cifar10' downloads it when missing.")
    data = st.session_state["data_choice"]
    if data == CUSTOM_PATH:
        data = sb.text_input("Dataset path", key="data_path", placeholder="/data/cifar10 or cifar10.tar.gz").strip() \
            or SYNTHETIC
    st.session_state["ctx"] = Ctx(model, name, model_id, untrained, data, device)



def _data_label(s: str) -> str:
    # Labels must be unique: Streamlit keeps a selectbox's value by its label.
    if os.sep in s:
        return f"{short(s)} · {os.path.dirname(s.rstrip('/'))}"
    return f"{s} (torchvision; downloads if missing)" if s in ("cifar10", "cifar100", "svhn") else s

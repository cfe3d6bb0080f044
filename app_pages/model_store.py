"""The app's models: shipped checkpoints, Hub repos, uploads, models trained in this session and
the untrained default, each loaded once and cached; the model picker's choices and defaults; and
the form that publishes a model trained here on the Hub.

Models are cached with st.cache_resource and shared by all sessions; nothing in the app or in
weat_core ever changes a cached model (attacks only take input gradients; training builds its
own model).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict
from typing import Any, Optional

import streamlit as st
import torch

from weat_core import WeatError, lens

UNTRAINED = "untrained weatnet_s (random weights)"
TRAINED_PREFIX = "trained here: "


@st.cache_resource(show_spinner="Loading model…", max_entries=16)
def load_checkpoint(source: str, device: str, revision: Optional[str] = None) -> torch.nn.Module:
    from weat_core.checkpoints import load

    return lens.prepare(load(source, device=device, revision=revision or None))


@st.cache_resource(show_spinner=False)
def _untrained(arch: str, device: str, num_classes: int = 10) -> torch.nn.Module:
    from weat_core.models import create_model

    torch.manual_seed(0)
    m = create_model(arch, num_classes=num_classes).to(device)
    m.config.update(method="untrained", dataset="none", source="random init (seed 0)")
    return lens.prepare(m)


@st.cache_resource(show_spinner="Checking the uploaded model…", max_entries=4)
def load_upload(weights: bytes, config: Optional[bytes], name: str, device: str) -> torch.nn.Module:
    return lens.prepare(lens.load_uploaded_checkpoint(weights, config, name, device))


@st.cache_data(show_spinner=False, ttl=600)
def _checkpoint_infos() -> list[dict[str, Any]]:
    from weat_core.checkpoints import list_checkpoints

    return [dict(c.to_dict(), has_log=(c.path / "log.jsonl").is_file(), config=c.config) for c in list_checkpoints()]


def checkpoint_infos() -> list[dict[str, Any]]:
    return _checkpoint_infos()


@st.cache_data(show_spinner=False, ttl=600)
def recorded_runs() -> list[dict[str, Any]]:
    """Training runs shipped for their curves only (`checkpoints/_runs/`: log, settings, card)."""
    from weat_core.checkpoints import list_runs

    return [{**r.to_dict(), "heldout": r.config.get("heldout"), "sgd_steps": _sgd_steps(r.config),
             "recipe": _recipe(r.config)} for r in list_runs()]


def _recipe(cfg: dict[str, Any]) -> tuple:
    """What a recorded run shares with the runs it was trained beside, apart from its method and
    length: dataset, model, data, batch, learning rate and schedule, ε."""
    return lens.training_recipe(cfg, length=False)


def _sgd_steps(cfg: dict[str, Any]) -> Optional[int]:
    """SGD steps a recorded run took (epochs run × steps per epoch), when its settings say how
    many images it trained on (`--limit`); None otherwise."""
    t = cfg.get("training") or {}
    if not (t.get("limit") and t.get("batch_size") and isinstance(cfg.get("epochs"), int)):
        return None
    return cfg["epochs"] * max(1, t["limit"] // t["batch_size"])


def load_named_model(name: str, device: str = "cpu") -> torch.nn.Module:
    """A shipped checkpoint, a session-trained model or the untrained default, by picker name."""
    if name.startswith(TRAINED_PREFIX):
        return st.session_state["trained_models"][name[len(TRAINED_PREFIX):]]
    if name == UNTRAINED:
        return _untrained("weatnet_s", device)
    return load_checkpoint(name, device)


def trained_models() -> dict[str, torch.nn.Module]:
    return st.session_state.setdefault("trained_models", {})


def register_trained(model: torch.nn.Module, label: str) -> str:
    """Add a model trained in this session to the picker; returns its picker name."""
    name = label if label not in trained_models() else f"{label} #{len(trained_models()) + 1}"
    trained_models()[name] = lens.prepare(model)
    st.session_state.setdefault("trained_ids", {})[name] = uuid.uuid4().hex[:8]
    return TRAINED_PREFIX + name


def model_choices() -> list[str]:
    shipped = [c["name"] for c in checkpoint_infos()]
    return shipped + [TRAINED_PREFIX + k for k in trained_models()] + [UNTRAINED]


def contrast_set(current: str, infos: list[dict[str, Any]]) -> list[str]:
    """The models a comparison starts with: the current one, then for every other training
    method one shipped checkpoint of the same architecture and dataset: trained on the same
    schedule and subset where one exists, else the one with the best recorded PGD-20 accuracy
    (standard, SAT, TRADES and WEAT-adv side by side, not every schedule variant)."""
    cur = next((c for c in infos if c["name"] == current), None)
    picked = [current]
    if cur is None:
        return picked

    def recipe(c: dict[str, Any]) -> tuple:
        t = (c.get("config") or {}).get("training") or {}
        return t.get("schedule"), t.get("limit")

    def rank(c: dict[str, Any]) -> tuple:
        return recipe(c) == recipe(cur), c.get("pgd20_acc") or 0.0

    best: dict[str, dict[str, Any]] = {}
    for c in infos:
        if c["name"] == current or c["method"] == cur["method"]:
            continue
        if (c["arch"], c["dataset"]) != (cur["arch"], cur["dataset"]):
            continue
        if c["method"] not in best or rank(c) > rank(best[c["method"]]):
            best[c["method"]] = c
    return picked + [c["name"] for c in sorted(best.values(), key=lambda c: c["name"])]


def default_model(choices: list[str]) -> str:
    """$WEAT_DEFAULT_MODEL if it names an available model, else the shipped weatnet_s trained
    with WEAT-adv that has the best recorded PGD-20 accuracy, else any weatnet_s, else any
    checkpoint, else the untrained model."""
    env = os.environ.get("WEAT_DEFAULT_MODEL")
    if env and env in choices:
        return env
    infos = checkpoint_infos()
    for pref in (("weatnet_s", "weat-adv"), ("weatnet_s", None), (None, None)):
        found = [c for c in infos
                 if (pref[0] is None or c["arch"] == pref[0]) and (pref[1] is None or c["method"] == pref[1])]
        if found:
            return max(found, key=lambda c: c.get("pgd20_acc") or 0.0)["name"]
    return choices[0] if choices else UNTRAINED


def has_init_stats(model: torch.nn.Module) -> bool:
    """Whether SGLD's class Gaussian / PCA statistics ship with this model's checkpoint."""
    from weat_core.sampling import stats_path

    return stats_path(getattr(model, "config", {}).get("source")) is not None


def publish_form(job) -> None:
    """The training page's form that publishes a model trained here on the Hugging Face Hub, with
    its settings, per-epoch records and model card (`export.hub.push_model`), so that anyone loads
    it by its repo id."""
    with st.expander("Publish it on the Hugging Face Hub"):
        cols = st.columns([3, 3, 1])
        repo = cols[0].text_input("Repo id (owner/name)", key="tr_hub_repo",
                                  help="Created when it does not exist; a new commit when it does.").strip()
        token = cols[1].text_input("Token with write access", type="password", key="tr_hub_token",
                                   help="Used for this upload only, never stored. Leave it empty to use this "
                                        "machine's login (`hf auth login`, or HF_TOKEN).")
        private = cols[2].checkbox("private", key="tr_hub_private")
        if st.button("Publish", key="tr_hub_push", disabled=not repo):
            from weat_core.export.hub import push_model

            cfg = job.config
            try:
                with st.spinner(f"uploading to {repo}…"):
                    url = push_model(job.model, repo, job.history,
                                     {"method": cfg.method, "dataset": cfg.dataset, "training": asdict(cfg)},
                                     private=private, token=token.strip() or None)
            except WeatError as e:
                st.error(str(e))
            else:
                st.success(f"Published ({url}). Anyone can load it by its id: `--checkpoint {repo}`, or the "
                           "sidebar's Model → Hugging Face Hub id.")

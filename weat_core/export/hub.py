"""Publish a checkpoint folder on the Hugging Face Hub, so that anyone loads it by its repo id
(`load("owner/name")`, the app's sidebar, `--checkpoint owner/name`).

    python -m weat_core push --checkpoint weatnet_s-weat-adv --repo owner/weatnet_s-weat-adv

What goes up is a copy of the folder made to stand on its own (`stage`): the weights (shards and
index too), `config.json`, `log.jsonl`, the model card with the Hub's metadata block in front,
and the SGLD start statistics that shipped checkpoints share from `checkpoints/_shared/`, copied
in as `init_stats.safetensors`, since a Hub repo cannot point outside itself. The copy is loaded
before anything is sent, so a broken folder fails here and not for the people who download it.
The upload itself is `huggingface_hub`'s `create_repo` + `upload_folder`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Optional

from .. import WeatError

__all__ = ["push_checkpoint", "push_model", "stage"]

log = logging.getLogger(__name__)

_HUB_DATASETS = ("cifar10", "cifar100", "svhn")  # our dataset names that are also the Hub's dataset ids


def _card_metadata(cfg: dict[str, Any]) -> str:
    """The YAML block a Hub model card starts with: the tags and dataset the Hub lists it under."""
    tags = ["adversarial-robustness", "energy-based-models", "weat-lens", "pytorch", "safetensors"]
    if cfg.get("method"):
        tags.append(str(cfg["method"]))
    lines = ["---", "pipeline_tag: image-classification", "tags:", *[f"- {t}" for t in tags]]
    dataset = str(cfg.get("dataset", "")).lower()
    if dataset in _HUB_DATASETS:
        lines += ["datasets:", f"- {dataset}"]
    return "\n".join(lines + ["---", ""])


def stage(source: str, dest: Path, repo_id: Optional[str] = None) -> Path:
    """Copy the checkpoint `source` (a shipped name, a folder, or anything `load` accepts) into
    `dest` as it would be uploaded, and check that the copy loads. `repo_id` goes into the
    card's loading hint. Returns `dest`."""
    from ..checkpoints import _HUB_ID, CONFIG_NAME, INDEX_NAME, WEIGHTS_NAME, load, resolve
    from ..sampling.class_stats import STATS_NAME, stats_path

    if repo_id is not None and not _HUB_ID.match(repo_id):
        raise WeatError(f"{repo_id!r} is not a Hub repo id; give it as owner/name")
    folder = resolve(source)
    if not folder.is_dir() or not (folder / CONFIG_NAME).is_file():
        raise WeatError(f"{source!r} is not a checkpoint folder (config.json and weights); push needs one, e.g. the "
                        "folder `python -m weat_core export` wrote")
    weights = sorted(folder.glob("model*.safetensors"))
    if not weights:
        raise WeatError(f"{folder} holds no {WEIGHTS_NAME} (a recorded run without weights cannot be loaded from the Hub)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise WeatError(f"{dest} is not empty; give a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    for f in weights + [folder / n for n in (INDEX_NAME, "log.jsonl") if (folder / n).is_file()]:
        shutil.copyfile(f, dest / f.name)
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    stats = stats_path(folder)
    cfg.pop("init_stats", None)  # a path beside the repository's checkpoints/, which the Hub copy has not
    if stats is not None:
        shutil.copyfile(stats, dest / STATS_NAME)
    (dest / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
    card = (folder / "README.md").read_text() if (folder / "README.md").is_file() else f"# {folder.name}\n"
    end = card.find("\n---\n", 3) + 5 if card.startswith("---\n") else 0  # a metadata block of its own stays
    head, card = (card[:end], card[end:]) if end > 4 else (_card_metadata(cfg), card)
    if repo_id:  # how to load it, under the card's title
        title, _, rest = card.partition("\n")
        card = (f"{title}\n\nLoad it with WEAT Lens (`weat_core`): `weat_core.checkpoints.load(\"{repo_id}\")` in "
                f"Python, `python -m weat_core eval --checkpoint {repo_id}`, or in the app's sidebar (Model "
                f"\"Hugging Face Hub id…\", then `{repo_id}`).\n{rest}")
    (dest / "README.md").write_text(head + card)
    try:
        load(dest)
    except WeatError as e:
        raise WeatError(f"the copy of {folder} does not load, so nothing was uploaded: {e}") from None
    return dest


def push_checkpoint(source: str, repo_id: str, private: bool = False, revision: Optional[str] = None,
                    message: Optional[str] = None, token: Optional[str] = None) -> str:
    """Upload the checkpoint `source` to the Hub model repo `repo_id` ("owner/name"; created when
    it does not exist, `private` then). `revision`: a branch to commit to (default main).
    Returns the commit's URL. Needs a token with write access: `token`, else this machine's login
    (`hf auth login`, or HF_TOKEN)."""
    import tempfile

    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    with tempfile.TemporaryDirectory(prefix="weat-push-") as tmp:
        folder = stage(source, Path(tmp) / "repo", repo_id)
        token = token or get_token()
        if token is None:
            raise WeatError("no Hugging Face token: log in with `hf auth login` (or `huggingface-cli login`), or set "
                            "HF_TOKEN to a token that can write to " + repo_id)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            if revision:  # a new branch is made from main; an existing one is committed to
                api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                                     commit_message=message or f"Upload {Path(str(source)).name} from WEAT Lens")
        except OfflineModeIsEnabled:
            raise WeatError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it and try again") from None
        except HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            why = ("the token may not write to it (log in with a token that has write access)"
                   if status in (401, 403) else str(e).splitlines()[0])
            raise WeatError(f"the Hub refused the upload to {repo_id}: {why}") from None
        except Exception as e:  # no network, DNS, timeouts: requests' or httpx's errors, by version
            raise WeatError(f"could not reach the Hugging Face Hub to upload to {repo_id}: {e}") from None
    log.info("uploaded %s to %s", source, repo_id)
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def push_model(model, repo_id: str, records: Optional[list[dict]] = None, config: Optional[dict[str, Any]] = None,
               private: bool = False, token: Optional[str] = None) -> str:
    """Upload a model held in memory (one the app trained) as a checkpoint: its weights and
    `config.json` as `checkpoints.save` writes them (with `config` added, e.g. the method, the
    dataset and the run's settings under "training"), its per-epoch `records` as `log.jsonl`, and
    the model card `export` would write from them; then `push_checkpoint`. Returns the commit's URL."""
    import tempfile

    from ..checkpoints import save
    from .card import model_card

    with tempfile.TemporaryDirectory(prefix="weat-model-") as tmp:
        folder = Path(tmp) / repo_id.rsplit("/", 1)[-1]
        save(model, folder, config=dict(config or {}))
        records = [dict(r) for r in records or []]
        if records:
            (folder / "log.jsonl").write_text("".join(json.dumps(r, default=float) + "\n" for r in records))
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "README.md").write_text(model_card(folder.name, cfg, records))
        return push_checkpoint(str(folder), repo_id, private=private, token=token)

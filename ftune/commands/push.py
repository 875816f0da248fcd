"""`ftune push`: upload a run's best/ (or an `ftune export` folder) with its model card to the Hugging Face hub.

The checks come first and cost nothing: offline mode or no token is one line and exit 2 before any file is
read or any request is made; then the hub is asked who the token belongs to (one request, nothing sent).
Only then is the card rewritten for the repo and the folder uploaded: `create_repo(exist_ok=True)` (private
unless private=false) and `upload_folder` limited to the files `select_files` lists (never checkpoints,
optimizer states or hidden files).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from omegaconf import DictConfig

from ftune.errors import FtuneError

log = logging.getLogger("ftune")
# files of a training checkpoint that never belong in a model repo (best/ has none; an export may be a copy)
NEVER = {"optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json", "checksums.json"}


def select_files(folder: Path) -> list[str]:
    """The relative paths `push` uploads from a model folder: everything but checkpoints, training state,
    hidden and temporary files."""
    chosen = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        parts = relative.parts
        if not path.is_file() or any(p.startswith(".") or p in ("checkpoints", "__pycache__") for p in parts):
            continue
        if path.name in NEVER or path.name.endswith((".tmp", ".lock")):
            continue
        chosen.append(relative.as_posix())
    return chosen


def _token() -> str:
    """The token to upload with; one line and exit 2 when offline or when there is none."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        raise FtuneError("the Hugging Face hub is switched off here (HF_HUB_OFFLINE=1): nothing was uploaded",
                         where="HF_HUB_OFFLINE", fix="unset HF_HUB_OFFLINE on a machine with network access")
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise FtuneError("no Hugging Face token: nothing was uploaded", where="HF_TOKEN",
                         fix="run `hf auth login`, or set HF_TOKEN to a token with write access")
    return token


def _folder(cfg: DictConfig) -> tuple[Path, Path | None]:
    if bool(cfg.run_dir) == bool(cfg.folder):
        raise FtuneError("give one of run_dir or folder", where="run_dir",
                         fix="ftune push run_dir=<training run> repo_id=..., or folder=<export folder> repo_id=...")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    folder = run_dir / "best" if run_dir else Path(cfg.folder)
    if (folder / "checkpoints").is_dir():
        raise FtuneError(f"{folder} is a run directory", where="folder",
                         fix=f"use run_dir={folder} (its best/ is uploaded) or an export folder")
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise FtuneError(f"no model in {folder} (no config.json or adapter_config.json)",
                         where="run_dir" if run_dir else "folder", fix="train first, or `ftune export` a run")
    if "/" not in cfg.repo_id or cfg.repo_id.count("/") > 1:
        raise FtuneError(f"`{cfg.repo_id}` is not a repo id", where="repo_id", fix="use <user or org>/<name>")
    return folder, run_dir


def run(cfg: DictConfig) -> dict:
    token = None if cfg.dry_run else _token()
    folder, run_dir = _folder(cfg)
    files = select_files(folder)
    if cfg.dry_run:
        for name in files:
            print(name)
        return {"repo_id": cfg.repo_id, "folder": str(folder), "files": files, "uploaded": False}
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
    except Exception as error:  # no network, a proxy, a revoked token: nothing was sent yet
        raise FtuneError(f"cannot reach the Hugging Face hub with this token: {str(error).splitlines()[0][:200]}",
                         where="HF_TOKEN", fix="check the network and the token (`hf auth whoami`)") from error
    from ftune.card import write_card

    readme = folder / "README.md"
    if run_dir is not None or not readme.is_file():  # the card's snippet names the repo
        write_card(folder, run_dir=run_dir, repo_id=cfg.repo_id)
        files = select_files(folder)
    else:  # an export folder's card (written by `ftune export`): only its snippet's model_id changes
        text = re.sub(r"^model_id = .*$", f"model_id = {cfg.repo_id!r}  # this folder, or its hub repo id",
                      readme.read_text(encoding="utf-8"), flags=re.M)
        readme.write_text(text, encoding="utf-8")
    url = api.create_repo(cfg.repo_id, private=cfg.private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(repo_id=cfg.repo_id, folder_path=str(folder), allow_patterns=files,
                               revision=cfg.revision, commit_message=cfg.commit_message or
                               f"ftune push of {run_dir or folder}")
    log.info("pushed %d files as %s to %s (%s)", len(files), user, url, "private" if cfg.private else "public")
    return {"repo_id": cfg.repo_id, "folder": str(folder), "files": files, "uploaded": True,
            "url": str(url), "commit": getattr(commit, "oid", None)}

"""Stage `model`: put the base model into models/base.

builtin    - a tiny random Qwen3-VL (or Qwen2-VL) built offline, deterministic from the seed (the default);
local      - an existing model directory, hard-linked (no copy) where the filesystem allows;
modelscope - a ModelScope download of one revision into ModelScope's cache, hard-linked here
             (stages/hub/snapshot.py; endpoint and token from MODELSCOPE_ENDPOINT and MODELSCOPE_API_TOKEN only).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from stages.common import ROOT, atomic_dir, setup_logging, stage_params
from stages.hub.snapshot import DownloadError, download

OUT = ROOT / "models" / "base"
log = logging.getLogger("model")

REQUIRED = ("config.json", "tokenizer_config.json")


def check_model_dir(path: Path) -> None:
    """A usable HF model dir has a config, a tokenizer and weights; name what is missing."""
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        missing.append("*.safetensors (model weights)")
    if missing:
        raise FileNotFoundError(f"model directory {path} is incomplete: missing {', '.join(missing)}")


def remote_code(path: Path) -> list[str]:
    """What in a model dir would make transformers run the repository's own code (ms-swift trusts it)."""
    found = sorted(str(p.relative_to(path)) for p in path.rglob("*.py"))
    config = path / "config.json"
    if config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8")):
        found.append("config.json: auto_map")
    return found


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no multi-GB copy), or a copy where links are impossible (another filesystem, none allowed)."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path, files: list[str] | None = None) -> None:
    """Link every file of src (or only `files`, paths relative to it) into dst."""
    if files is None:
        shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True)
        return
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(src / f, dst / f)


def obtain(cfg: dict, seed: int, dst: Path) -> None:
    """Fill `dst` with the model from its source, then check it is complete and runs no foreign code."""
    if cfg["source"] == "builtin":
        from stages.tiny_model.build import build_tiny_qwen2_vl, build_tiny_qwen3_vl
        build = build_tiny_qwen2_vl if cfg["model_type"] == "qwen2_vl" else build_tiny_qwen3_vl
        build(dst, seed, **cfg["builtin"])
    elif cfg["source"] == "local":
        src = (ROOT / cfg["local_dir"]).resolve()
        if not src.is_dir():
            raise FileNotFoundError(f"model.local_dir: {src} is not a directory")
        check_model_dir(src)
        link_tree(src, dst)
    else:
        root, files = download(cfg["model_id"], cfg["revision"])
        link_tree(root, dst, files)
    check_model_dir(dst)
    if (found := remote_code(dst)) and not cfg["trust_remote_code"]:
        raise PermissionError(f"the model ships code that ms-swift would run ({', '.join(found)}); Qwen2/2.5/3-VL "
                              "need none. Refusing; set model.trust_remote_code: true if you trust it.")


def main() -> None:
    setup_logging()
    p = stage_params("model")
    try:
        with atomic_dir(OUT) as tmp:
            obtain(p["model"], p["seed"], tmp)
    except (DownloadError, FileNotFoundError, PermissionError) as e:   # models/base is as it was
        log.error("%s", e)
        sys.exit(1)
    log.info("base model (%s) ready in %s", p["model"]["source"], OUT.relative_to(ROOT))


if __name__ == "__main__":
    main()

"""Stage `model`: put the base model into models/base.

builtin    - a tiny random Qwen3-VL (or Qwen2-VL) built offline, deterministic from the seed (the default);
local      - an existing model directory, copied (a reflink where the filesystem allows, which costs no space): a
             hard link would let a write into models/base change the user's own files;
modelscope - a ModelScope download of one revision into ModelScope's cache, hard-linked here
             (stages/hub/snapshot.py; endpoint and token from MODELSCOPE_ENDPOINT and MODELSCOPE_API_TOKEN only);
             the client checks each cached file's size and SHA-256 on every run and fetches a damaged one again.
Weights are checked on the way in: a safetensors file must hold exactly what its header describes.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from stages.common import ROOT, setup_logging, stage_params
from stages.hub.snapshot import DownloadError, download
from stages.storage.atomic import atomic_dir
from stages.storage.clone import clone_tree

OUT = ROOT / "models" / "base"
log = logging.getLogger("model")

REQUIRED = ("config.json", "tokenizer_config.json")


class ModelDirError(ValueError):
    """A model directory that cannot be used as it is: the message names the file and what is wrong."""


def configs(path: Path) -> dict[str, object]:
    """Every JSON config of a model dir (config.json, tokenizer_config.json, preprocessor_config.json, ...),
    parsed; one that does not parse (a truncated copy) is named with where it breaks."""
    parsed, broken = {}, []
    for f in sorted(path.rglob("*config*.json")):
        try:
            parsed[str(f.relative_to(path))] = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            broken.append(f"{f.relative_to(path)} is not valid JSON ({e}): truncated or damaged")
    if broken:
        raise ModelDirError(f"model directory {path}: {'; '.join(broken)}")
    return parsed


def safetensors_problem(f: Path) -> str | None:
    """What is wrong with a safetensors file: the 8-byte header length, the JSON header, then exactly the tensor
    bytes it describes (a truncated or padded copy holds a different number)."""
    size = f.stat().st_size
    with open(f, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little") if size >= 8 else 0
        if not 0 < n <= size - 8:
            return f"is truncated or not a safetensors file ({size:,} bytes, header length {n:,})"
        try:
            header = json.loads(fh.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            return f"has a damaged header ({type(e).__name__}: {e})"
    if 8 + n + end != size:
        return f"is truncated or damaged: its header describes {8 + n + end:,} bytes, the file holds {size:,}"
    return None


def check_model_dir(path: Path) -> None:
    """A usable HF model dir has a config, a tokenizer and whole weights, and configs that parse; name what is not."""
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        missing.append("*.safetensors (model weights)")
    configs(path)
    index = path / "model.safetensors.index.json"   # a sharded model: every shard its weight_map names
    try:
        shards = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values() if index.is_file() else []
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ModelDirError(f"model directory {path}: {index.name} is not a valid index ({e})") from None
    missing += sorted({s for s in shards if not (path / s).is_file()})
    if missing:
        raise ModelDirError(f"model directory {path} is incomplete: missing {', '.join(missing)}")
    broken = [f"{f.relative_to(path)} {problem}" for f in sorted(path.glob("*.safetensors"))
              if (problem := safetensors_problem(f))]
    if broken:
        raise ModelDirError(f"model directory {path}: {'; '.join(broken)}")


def code_references(obj, key: str = "") -> list[str]:
    """`auto_map` anywhere in a config, and class names of the `<repo>--<module>.<Class>` form that transformers
    loads from another repository or folder (e.g. a `processor_class`)."""
    if isinstance(obj, dict):
        return [r for k, v in obj.items() for r in (["auto_map"] if k == "auto_map" else code_references(v, k))]
    if isinstance(obj, list):
        return [r for v in obj for r in code_references(v, key)]
    return [f"{key}: {obj}"] if isinstance(obj, str) and key.endswith("_class") and "--" in obj else []


def remote_code(path: Path) -> list[str]:
    """What in a model dir would make transformers run code other than its own (ms-swift trusts it): a Python
    file, or a reference to one from any of its JSON configs."""
    found = sorted(str(p.relative_to(path)) for p in path.rglob("*.py"))
    for name, cfg in configs(path).items():
        found += [f"{name}: {r}" for r in dict.fromkeys(code_references(cfg))]
    return found


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no multi-GB copy), or a copy where links are impossible (another filesystem, none allowed)."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path, files: list[str]) -> None:
    """Link `files` (paths relative to src) into dst."""
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
        clone_tree(src, dst)
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
        with atomic_dir(OUT, cached=False) as tmp:   # cache: false in dvc.yaml
            obtain(p["model"], p["seed"], tmp)
    except (DownloadError, FileNotFoundError, PermissionError, ModelDirError) as e:   # models/base is as it was
        log.error("%s", e)
        sys.exit(1)
    log.info("base model (%s) ready in %s", p["model"]["source"], OUT.relative_to(ROOT))


if __name__ == "__main__":
    main()

"""A throwaway copy of the repository and the real `dvc` in it: what the end-to-end and reliability tests share."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import yaml
from dvc.utils.hydra import apply_overrides

from stages.params.tree import set_dotted

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}


def sh(*argv, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, cwd=cwd, env=ENV, text=True, capture_output=True)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def commit(repo: Path, message: str) -> None:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", message,
       "--allow-empty", cwd=repo)


# The embedded default at a fraction of its size: the same stages, model and recipe, 600 pairs instead of
# 3,200, a few pretraining steps and batch 8 (so that 2 epochs are still ~110 steps), so that each `dvc repro`
# here takes ~2 minutes instead of ~10 (the full-size run and what it learns are measured in bench/FINDINGS.md).
TEST_SIZE = {"synth.num_samples": 600, "model.builtin.pretrain_vision_steps": 20, "train.num_train_epochs": 2,
             "train.per_device_train_batch_size": 8}


def clone(dest: Path) -> Path:
    """What a clean clone has (tracked and untracked-not-ignored files), minus the committed results,
    so that every stage really runs, with params.yaml cut to TEST_SIZE; made a git repository of its own
    (dvc exp needs one)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file() and f != "dvc.lock" and not f.startswith("metrics/"):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    # DVC's own rewrite of params.yaml (what `dvc exp run -S` does), which keeps its comments and layout
    apply_overrides(str(dest / "params.yaml"), [f"{key}={value}" for key, value in TEST_SIZE.items()])
    sh("git", "init", "-q", cwd=dest)
    sh("git", "config", "user.name", "test", cwd=dest)          # dvc exp commits too: no global identity needed
    sh("git", "config", "user.email", "test@example.com", cwd=dest)
    commit(dest, "clone")
    return dest


def ran(output: str) -> list[str]:
    """Stages that `dvc repro` / `dvc exp run` actually ran, from their own log lines."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def stale(repo: Path) -> set[str]:
    """Stages whose own deps, params or outs changed (`dvc status`); downstream ones follow from dvc.yaml."""
    return set(json.loads(sh("dvc", "status", "--json", cwd=repo).stdout))


def set_params(repo: Path, **changes) -> None:
    """set_params(repo, **{"lora.rank": 4}) - edit params.yaml as a user would."""
    path = repo / "params.yaml"
    p = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        set_dotted(p, key, value)
    path.write_text(yaml.safe_dump(p, allow_unicode=True, sort_keys=False), encoding="utf-8")


def corrupt_png_pixels(path: Path) -> None:
    """Garbage in a PNG's compressed pixel data, every chunk's CRC kept sound: PIL's verify() passes it."""
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT")
    n = int.from_bytes(data[at - 4:at], "big")
    data[at + 4 + n // 2:at + 12 + n // 2] = b"\xff" * 8
    data[at + 4 + n:at + 8 + n] = zlib.crc32(bytes(data[at:at + 4 + n])).to_bytes(4, "big")
    path.write_bytes(bytes(data))

"""Helpers every stage shares: params, logging, writing outputs (atomically: stages/storage/atomic.py), subprocess
calls."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages.params import ParamsError, validate
from stages.params.load import read_yaml
from stages.params.tree import project
from stages.storage.atomic import write_atomic
from stages.storage.space import full_disk_hint

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = ROOT / "params.yaml"
log = logging.getLogger("pipeline")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def load_params(path: Path = PARAMS_FILE) -> dict:
    """The whole params.yaml, checked against the schema (every problem reported at once)."""
    return validate(read_yaml(path) or {})


def declared_params(stage: str, dvc_yaml: Path = ROOT / "dvc.yaml") -> list[str]:
    """The params keys `stage` declares in dvc.yaml (a foreach stage's `do` block included)."""
    with open(dvc_yaml, encoding="utf-8") as f:
        spec = yaml.safe_load(f)["stages"][stage]
    return [k for k in spec.get("do", spec).get("params", []) if isinstance(k, str)]


def stage_params(stage: str) -> dict:
    """The whole params.yaml is checked, then the stage gets only what it declares in dvc.yaml,
    so reading an undeclared key fails loudly (KeyError) instead of going stale in DVC's cache. A params.yaml that
    does not fit the schema stops the stage with the list of problems, not a traceback (`dvc repro build` runs
    build without check_params)."""
    try:
        params = load_params()
    except ParamsError as e:
        raise SystemExit(str(e)) from None
    return project(params, declared_params(stage))


def count(n: int, noun: str) -> str:
    """`1,204 samples` - counts the way a person reads them."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def to_csv(rows: list[dict], columns: list[str]) -> str:
    """Rows as CSV text, for DVC plots."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_json(dest: Path, obj) -> None:
    write_atomic(dest, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(dest: Path, rows) -> None:
    write_atomic(dest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_set_marker(dataset: Path) -> str:
    """A line naming the test split by its content, written into a stage's report so a later run can tell whether
    the persisted outputs belong to the same test set."""
    return f"<!-- test set: blake2b {hashlib.blake2b((dataset / 'test.jsonl').read_bytes(), digest_size=8).hexdigest()} -->"


def drop_stale(paths: list[Path], report: Path, marker: str) -> None:
    """After a failed run: remove persisted outputs that belong to another test set (their `report` lacks `marker`),
    so that `dvc metrics show` never shows another data set's figures beside this run's. Those of the same test
    set stay."""
    if not report.exists() or marker in report.read_text(encoding="utf-8"):
        return
    for p in paths:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    log.warning("removed %s: computed on another test set, they would be shown beside this run's",
                ", ".join(Path(p).relative_to(ROOT).as_posix() for p in paths))


def run(argv: list[str], env: dict[str, str] | None = None, stdout=None, writes: tuple[Path, ...] = ()) -> None:
    """Run a command from an argv list (never a shell string), with extra environment variables, its stderr passed
    through as it comes. If it fails, say so in one line, naming a full disk among the folders it `writes` to."""
    log.info("$ %s", " ".join(argv))
    tail = b""   # the last 64 KiB of its stderr: where a full disk is named
    with subprocess.Popen(argv, env={**os.environ, **(env or {})}, cwd=ROOT, stdout=stdout,
                          stderr=subprocess.PIPE) as proc:
        try:
            while chunk := os.read(proc.stderr.fileno(), 65536):
                sys.stderr.buffer.write(chunk)
                sys.stderr.buffer.flush()
                tail = (tail + chunk)[-65536:]
        except BaseException:
            proc.kill()
            raise
    if proc.returncode:
        tool = " ".join(Path(a).name for a in argv[:2])
        hint = full_disk_hint(tail, writes)
        raise SystemExit(f"{tool} failed with exit code {proc.returncode}"
                         f"{f': {hint}' if hint else '; its output above says why'}")


def swift_exe() -> str:
    """The `swift` command of the running interpreter's environment (falls back to PATH)."""
    beside = Path(sys.executable).parent / "swift"
    return str(beside) if beside.is_file() else "swift"


def swift_env(model: dict) -> dict[str, str]:
    """Environment for swift sft/infer: offline (the model is local by now) and the image token budget,
    which must be the same at training and inference."""
    return {"HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1",
            "IMAGE_MAX_TOKEN_NUM": str(model["image_max_token_num"])}

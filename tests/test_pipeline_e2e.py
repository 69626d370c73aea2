"""End to end, as a new user would: a fresh copy of the repository, `dvc repro` on the embedded default,
then an experiment. Real dvc, real swift, real (tiny) model; nothing mocked."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def sh(*argv, cwd, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(argv, cwd=cwd, env=env, text=True, capture_output=True)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def ran(output: str) -> list[str]:
    """Stages that `dvc repro` / `dvc exp run` actually ran, from their own log lines."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def would_run(repo: Path) -> set[str]:
    """Stages whose deps/params changed, from `dvc status --json` (downstream ones follow from dvc.yaml)."""
    return set(json.loads(sh("dvc", "status", "--json", cwd=repo).stdout))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A clean clone's worth of the repository (tracked and untracked-not-ignored files), as a git repo."""
    dest = tmp_path_factory.mktemp("clone") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    for f in ("dvc.lock", "metrics"):   # results committed from another machine must not mask a real run
        shutil.rmtree(dest / f, ignore_errors=True) if (dest / f).is_dir() else (dest / f).unlink(missing_ok=True)
    sh("git", "init", "-q", cwd=dest)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "init", "--allow-empty", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone", cwd=dest)
    return dest


@pytest.fixture(scope="module")
def reproduced(repo) -> Path:
    start = time.monotonic()
    out = sh("dvc", "repro", cwd=repo).stdout
    print(f"dvc repro: {time.monotonic() - start:.0f} s")
    assert set(ran(out)) == {"model", "generate", "build", "train", "infer_base", "infer_finetuned",
                             "score@base", "score@finetuned"}
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro", cwd=repo)
    return repo


def test_repro_outputs_and_metrics(reproduced):
    repo = reproduced
    for f in ("models/base/config.json", "models/adapter/adapter_model.safetensors", "data/raw/labels.csv",
              "data/dataset/train.jsonl", "data/predictions/base.jsonl", "data/predictions/finetuned.jsonl",
              "metrics/train.json", "metrics/plots/train_loss.csv"):
        assert (repo / f).is_file(), f
    base = json.loads((repo / "metrics/base.json").read_text())
    ft = json.loads((repo / "metrics/finetuned.json").read_text())
    assert base.keys() == ft.keys() and base["fields"].keys() == ft["fields"].keys()
    assert ft["parse_rate"] >= 0.95, ft
    assert base["parse_rate"] <= 0.05, base
    assert ft["fields"]["direction"]["accuracy"] > base["fields"]["direction"]["accuracy"]
    rows = [json.loads(line) for line in (repo / "data/dataset/test.jsonl").read_text().splitlines()]
    assert all(not os.path.isabs(p) for r in rows for p in r["images"])
    shown = sh("dvc", "metrics", "show", cwd=repo).stdout
    assert "metrics/base.json" in shown and "metrics/finetuned.json" in shown


def test_second_repro_is_a_fast_no_op(reproduced):
    start = time.monotonic()
    out = sh("dvc", "repro", cwd=reproduced).stdout
    elapsed = time.monotonic() - start
    assert ran(out) == []
    assert elapsed < 10, f"no-op dvc repro took {elapsed:.1f} s"


def set_param(repo: Path, section: str, key: str, value) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(p, allow_unicode=True, sort_keys=False))


def test_what_reruns_after_a_param_change(reproduced):
    repo = reproduced
    original = (repo / "params.yaml").read_text()
    try:
        set_param(repo, "infer", "max_new_tokens", 48)
        assert would_run(repo) == {"infer_base", "infer_finetuned"}   # base predictions rerun, training does not
        (repo / "params.yaml").write_text(original)
        set_param(repo, "lora", "rank", 4)
        assert would_run(repo) == {"train"}
        (repo / "params.yaml").write_text(original)
        set_param(repo, "data", "prompt", "Which way is focus?")
        assert would_run(repo) == {"build"}
        sh("dvc", "repro", "build", cwd=repo)                         # cheap; then everything after it is stale
        assert would_run(repo) == {"train", "infer_base", "infer_finetuned"}
    finally:
        (repo / "params.yaml").write_text(original)
        sh("dvc", "repro", "build", cwd=repo)                         # restored from DVC's run cache
    assert would_run(repo) == set()


def test_experiment_reruns_train_onwards_only(reproduced):
    repo = reproduced
    out = sh("dvc", "exp", "run", "-S", "lora.rank=16", "-n", "rank16", cwd=repo).stdout
    assert set(ran(out)) == {"train", "infer_finetuned", "score@finetuned"}
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    text = json.dumps(shown)
    assert "rank16" in text and '"rank": 16' in text.replace(" ", "").replace('"rank":16', '"rank": 16')
    diff = json.loads(sh("dvc", "metrics", "diff", "--all", "--json", cwd=repo).stdout)
    assert diff["metrics/train.json"]["steps"]["old"] is not None       # the last commit vs the experiment
    assert all(v.get("diff", 0) in (0, None) for v in diff["metrics/base.json"].values())   # base was not rerun

"""End-to-end: `python -m stages.build` in a temporary copy of the repository, one run per input format on the
fixture in tests/fixtures/<format>/ (data/ is copied to data/user, params.yaml's data.* overrides are applied),
checking the exact JSONL written; and a bad run, which must exit non-zero and leave the previous outputs."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.params.tree import merge

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def repo_copy(tmp_path: Path, fixture: str) -> Path:
    """The stages, dvc.yaml and params.yaml (with the fixture's data.* overrides) and the fixture's data."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params = merge(params, yaml.safe_load((FIXTURES / fixture / "params.yaml").read_text(encoding="utf-8")))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    shutil.copytree(FIXTURES / fixture / "data", repo / "data" / "user")
    return repo


def build(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.build"], cwd=repo, capture_output=True, text=True)


@pytest.mark.parametrize("fixture", ["table", "filename", "qa_jsonl", "swift_jsonl"])
def test_each_format_builds_the_exact_jsonl(tmp_path, fixture):
    repo = repo_copy(tmp_path, fixture)
    done = build(repo)
    assert done.returncode == 0, done.stderr
    for part in ("train", "val", "test"):
        got = (repo / "data" / "dataset" / f"{part}.jsonl").read_text(encoding="utf-8")
        assert got == (FIXTURES / fixture / "expected" / f"{part}.jsonl").read_text(encoding="utf-8"), part


def test_bad_data_exits_non_zero_lists_every_problem_and_keeps_the_previous_outputs(tmp_path):
    repo = repo_copy(tmp_path, "table")
    assert build(repo).returncode == 0
    before = {p.name: p.read_bytes() for p in (repo / "data" / "dataset").iterdir()}
    labels = repo / "data" / "user" / "labels.csv"
    lines = labels.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1].replace("images/s1_a.png", "../../etc/passwd")
    lines[2] = lines[2].replace(",-,1,", ",,1,")
    labels.write_text("".join(lines), encoding="utf-8")
    (repo / "data" / "user" / "images" / "s4_b.jpg").write_bytes(b"")
    done = build(repo)
    assert done.returncode == 1
    assert "3 problems in the input data (nothing was written):" in done.stderr
    assert "data/user/labels.csv:2: image path '../../etc/passwd' escapes the data folder data/user" in done.stderr
    assert "data/user/labels.csv:3: empty answer field(s) direction" in done.stderr
    assert "data/user/labels.csv:5: image data/user/images/s4_b.jpg is empty (0 bytes)" in done.stderr
    assert {p.name: p.read_bytes() for p in (repo / "data" / "dataset").iterdir()} == before


def test_dvc_repro_build_on_bad_data_keeps_the_previous_dataset(tmp_path):
    """Under `dvc repro` too: DVC would delete a plain output before running the stage; `persist: true` on
    data/dataset leaves it, and the stage exits before writing."""
    repo = repo_copy(tmp_path, "table")
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # stage's `python`
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=repo, check=True)
    subprocess.run([*dvc, "repro", "build"], cwd=repo, check=True, capture_output=True, env=env)
    before = {p.name: p.read_bytes() for p in (repo / "data" / "dataset").iterdir()}
    (repo / "data" / "user" / "images" / "s2_a.png").unlink()
    done = subprocess.run([*dvc, "repro", "build"], cwd=repo, capture_output=True, text=True, env=env)
    assert done.returncode != 0
    assert "data/user/labels.csv:3: image not found: data/user/images/s2_a.png" in done.stdout + done.stderr
    assert {p.name: p.read_bytes() for p in (repo / "data" / "dataset").iterdir()} == before


def test_skip_writes_the_good_rows_and_lists_the_dropped_ones(tmp_path):
    """data.on_error: skip, as a stage run: exit 0, every good row in the splits, each bad one in dropped.jsonl."""
    import json

    repo = repo_copy(tmp_path, "table")
    labels = repo / "data" / "user" / "labels.csv"
    labels.write_text(labels.read_text(encoding="utf-8") + "s7,images/nope.png,images/s1_b.png,,+,3,007,false,0.9\n"
                      "s8,images/s1_a.png,images/s1_b.png,,+,3,007,false\n", encoding="utf-8")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["on_error"] = "skip"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    done = build(repo)
    assert done.returncode == 0, done.stderr
    assert "data.on_error: skip dropped 2 rows with problems" in done.stderr
    out = repo / "data" / "dataset"
    ids = [json.loads(line)["id"] for part in ("train", "val", "test")
           for line in (out / f"{part}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(ids) == ["s1", "s2", "s3", "s4", "s5", "s6"]
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [d["where"] for d in dropped] == ["data/user/labels.csv:10", "data/user/labels.csv:9"]
    assert dropped[1]["problems"] == ["image not found: data/user/images/nope.png"]
    assert dropped[0]["problems"][0].startswith("malformed row: 8 fields, expected 9")

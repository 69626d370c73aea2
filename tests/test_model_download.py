"""The model stage's ModelScope download, run for real (`python -m stages.model`, the installed modelscope client,
no mock of it) against a ModelScope-compatible hub on 127.0.0.1 (tests/hub_server.py) that serves the tiny model's
files: pinned revisions, the cache, broken connections, kills, corrupt files, private models, remote code."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages.params.tree import set_dotted
from tests.hub_server import CLIENT_VERSIONS, Hub, Repo

ROOT = Path(__file__).resolve().parent.parent
MODEL_ID = "test-org/tiny-qwen3-vl"
TOKEN = "ms-" + secrets.token_hex(12)   # made per run, so not even this file holds it; never to be seen outside env


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """The tiny Qwen3-VL's files (random weights, no vision pretraining: the download is what is tested)."""
    from stages.tiny_model.build import build_tiny_qwen3_vl
    out = tmp_path_factory.mktemp("tiny")
    build_tiny_qwen3_vl(out, 0)
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def hub(tiny_files):
    """A hub with the tiny model at commit c1, commit c2 (README and config changed) and master (= c2)."""
    c1 = {**tiny_files, "README.md": b"# tiny\n"}
    c2 = {**tiny_files, "README.md": b"# tiny, revised\n", "config.json": tiny_files["config.json"].read_bytes()
          .replace(b'"model_type"', b'"_revision": "c2", "model_type"', 1)}
    hub = Hub(repos={MODEL_ID: Repo(revisions={"c1": c1, "c2": c2, "master": c2})})
    server, hub.endpoint = hub.serve()
    yield hub
    server.shutdown()
    assert hub.unknown == [], f"the client called routes the test hub does not serve: {hub.unknown}"


@pytest.fixture
def repo(tmp_path) -> Path:
    """The stages, dvc.yaml and params.yaml with model.source: modelscope."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    set_model(repo, source="modelscope", model_id=MODEL_ID, revision="c1")
    return repo


def set_model(repo: Path, **model) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load((path if path.exists() else ROOT / "params.yaml").read_text(encoding="utf-8"))
    for k, v in model.items():
        set_dotted(params, f"model.{k}", v)
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")


def env(hub: Hub, tmp: Path, token: str | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MODELSCOPE_")}
    e.update(MODELSCOPE_ENDPOINT=hub.endpoint, MODELSCOPE_CACHE=str(tmp / "cache"), MODELSCOPE_HOME=str(tmp / "home"),
             MODELSCOPE_DOWNLOAD_INTRA_CLOUD="false", MODELSCOPE_DOWNLOAD_MAX_RETRIES="2",
             MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    if token:
        e["MODELSCOPE_API_TOKEN"] = token
    return e


def stage(repo: Path, hub: Hub, token: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.model"], cwd=repo, env=env(hub, repo.parent, token),
                          capture_output=True, text=True)


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def served(files: dict) -> dict[str, bytes]:
    return {k: v if isinstance(v, bytes) else v.read_bytes() for k, v in files.items()}


def test_the_client_is_the_version_the_test_hub_speaks():
    import modelscope
    import modelscope_hub
    assert {"modelscope": modelscope.__version__, "modelscope_hub": modelscope_hub.__version__} == CLIENT_VERSIONS, (
        "a new modelscope client: check the routes it calls against tests/hub_server.py, then update CLIENT_VERSIONS")


def test_a_pinned_commit_and_master_download_exactly_their_files(repo, hub):
    done = stage(repo, hub)
    assert done.returncode == 0, done.stderr
    assert tree(repo / "models/base") == served(hub.repos[MODEL_ID].revisions["c1"])
    set_model(repo, revision="master")
    assert stage(repo, hub).returncode == 0
    assert tree(repo / "models/base") == served(hub.repos[MODEL_ID].revisions["master"])


def test_a_file_deleted_upstream_leaves_models_base_when_master_moves(repo, hub):
    revisions = hub.repos[MODEL_ID].revisions
    revisions["master"] = {**revisions["c2"], "stale.txt": b"deleted upstream later\n"}
    set_model(repo, revision="master")
    assert stage(repo, hub).returncode == 0 and (repo / "models/base/stale.txt").is_file()
    revisions["master"] = dict(revisions["c2"])   # master moves on: stale.txt is gone from the listing
    assert stage(repo, hub).returncode == 0
    assert tree(repo / "models/base") == served(revisions["c2"])   # the cache's master folder still has it


@pytest.mark.parametrize("key, value, says", [
    ("revision", "v9.9", "has no revision v9.9"),
    ("model_id", "test-org/no-such-model", "does not exist"),
])
def test_an_unknown_revision_or_model_is_one_clear_error_and_keeps_models_base(repo, hub, key, value, says):
    assert stage(repo, hub).returncode == 0
    before = tree(repo / "models/base")
    set_model(repo, **{key: value})
    done = stage(repo, hub)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot download" in done.stderr and says in done.stderr
    assert "check model.model_id and model.revision" in done.stderr
    assert tree(repo / "models/base") == before


def test_the_same_revision_again_downloads_nothing_and_a_changed_one_only_what_changed(repo, hub):
    assert stage(repo, hub).returncode == 0
    first = list(hub.downloads)
    assert sorted(p for _, p in first) == sorted(hub.repos[MODEL_ID].revisions["c1"])
    assert stage(repo, hub).returncode == 0 and hub.downloads == first            # all from the cache
    set_model(repo, revision="c2")
    assert stage(repo, hub).returncode == 0
    assert sorted(hub.downloads[len(first):]) == [("c2", "README.md"), ("c2", "config.json")]
    assert tree(repo / "models/base") == served(hub.repos[MODEL_ID].revisions["c2"])


def test_a_connection_dropped_half_way_is_resumed(repo, hub):
    hub.drop["model.safetensors"] = 1
    done = stage(repo, hub)
    assert done.returncode == 0, done.stderr
    ranged = [h for m, p, h in hub.requests if "model.safetensors" in p and "Range" in h]
    assert ranged and ranged[0]["Range"].startswith("bytes=") and ranged[0]["Range"] != "bytes=0-"
    assert tree(repo / "models/base") == served(hub.repos[MODEL_ID].revisions["c1"])


def test_killed_mid_download_leaves_no_half_model_and_the_next_run_completes(repo, hub, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * 2**20))
    hub.repos[MODEL_ID].revisions["c1"]["extra/big.bin"] = big
    hub.slow["extra/big.bin"] = 0.5                                               # 12 s for the file
    proc = subprocess.Popen([sys.executable, "-m", "stages.model"], cwd=repo, env=env(hub, repo.parent),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = repo.parent / "cache"
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 2**20 for p in partial.rglob("big.bin.incomplete")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (repo / "models/base").exists()                                    # nothing half-made in place
    hub.slow.clear()
    done = stage(repo, hub)
    assert done.returncode == 0, done.stderr
    assert any("big.bin" in p and "Range" in h for m, p, h in hub.requests)       # resumed, not restarted
    assert (repo / "models/base/extra/big.bin").read_bytes() == big.read_bytes()


def test_a_file_whose_hash_does_not_match_is_refused(repo, hub):
    hub.corrupt.add("config.json")
    done = stage(repo, hub)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot download test-org/tiny-qwen3-vl@c1" in done.stderr and "SHA-256" in done.stderr
    assert not (repo / "models/base").exists()


def test_weights_damaged_through_models_base_are_fetched_again(repo, hub):
    """models/base is hard-linked to ModelScope's cache, so a write into it damages the cache too: the next run
    finds the cached file's SHA-256 wrong and downloads it again, and models/base is whole."""
    assert stage(repo, hub).returncode == 0
    with open(repo / "models/base/model.safetensors", "r+b") as f:
        f.truncate(1000)
    before = len(hub.downloads)
    done = stage(repo, hub)
    assert done.returncode == 0, done.stderr
    assert hub.downloads[before:] == [("c1", "model.safetensors")]
    assert tree(repo / "models/base") == served(hub.repos[MODEL_ID].revisions["c1"])


def test_a_private_model_needs_the_token_which_is_never_written_anywhere(repo, hub):
    hub.repos[MODEL_ID].token = TOKEN
    refused = stage(repo, hub)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "private" in refused.stderr and "MODELSCOPE_API_TOKEN" in refused.stderr
    done = stage(repo, hub, token=TOKEN)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr + refused.stderr
    assert not [p for p in repo.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def test_a_model_that_ships_code_is_refused_unless_trusted(repo, hub):
    hub.repos[MODEL_ID].revisions["c1"]["modeling_tiny.py"] = b"import os\n"
    done = stage(repo, hub)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the model ships code that ms-swift would run (modeling_tiny.py)" in done.stderr
    assert not (repo / "models/base").exists()
    set_model(repo, trust_remote_code=True)
    assert stage(repo, hub).returncode == 0 and (repo / "models/base/modeling_tiny.py").is_file()


@pytest.mark.slow
@pytest.mark.e2e
def test_dvc_repro_from_a_private_modelscope_model_to_the_metrics(hub, tmp_path):
    """The whole pipeline at tiny size on the downloaded model; a second `dvc repro` downloads nothing, and the
    token appears in no file of the workspace (params, dvc.lock, metrics, models, logs) nor in DVC's output."""
    from tests.workspace import ENV, clone, set_params
    hub.repos[MODEL_ID].token = TOKEN
    work = clone(tmp_path / "work")
    set_params(work, **{"model.source": "modelscope", "model.model_id": MODEL_ID, "model.revision": "c1"})
    run_env = {**ENV, **env(hub, tmp_path, token=TOKEN)}
    done = subprocess.run(["dvc", "repro"], cwd=work, env=run_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (work / "metrics/compare/parse_rate.json").is_file()
    downloaded = list(hub.downloads)
    again = subprocess.run(["dvc", "repro"], cwd=work, env=run_env, capture_output=True, text=True)
    assert again.returncode == 0 and "Stage 'model' didn't change, skipping" in again.stdout
    assert hub.downloads == downloaded
    output = done.stdout + done.stderr + again.stdout + again.stderr
    assert TOKEN not in output
    assert not [p for p in work.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def test_a_listed_path_outside_the_model_folder_is_refused(repo, hub):
    hub.repos[MODEL_ID].revisions["c1"]["../../escape.txt"] = b"x"
    done = stage(repo, hub)
    assert done.returncode == 1 and "file paths outside the model folder ('../../escape.txt')" in done.stderr
    assert not (repo / "models/base").exists() and not list(repo.parent.rglob("escape.txt"))

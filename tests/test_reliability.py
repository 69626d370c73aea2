"""Faults and bad inputs against the real pipeline in a throwaway copy (run alone: pytest -m reliability).

Each fault is a kill -9 of the whole `dvc repro` process group while a stage is mid-work. Survived means:
no half-written file is in place; the previous outputs are there byte for byte (every output is `persist`, so DVC
does not delete it before the stage runs, and the stage replaces it atomically); DVC still sees the stage as not
done; and the next `dvc repro` finishes. The summary line at the end of
the run counts faults, bad inputs and lost outputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from PIL import Image

from tests.workspace import ENV, clone, corrupt_png_pixels, commit, ran, set_params, sh, stale

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
SMALL = {"synth.num_samples": 40, "train.num_train_epochs": 1, "train.per_device_train_batch_size": 4,
         "train.eval_steps": 2, "train.logging_steps": 1, "train.tuner_type": "lora"}   # a small adapter to checkpoint
OUTS = {"model": ["models/base"], "train": ["models/adapter", "metrics/train.json"],
        "infer_finetuned": ["data/predictions/finetuned.jsonl"], "score@finetuned": ["metrics/details/finetuned.json"]}


def digest(repo: Path, paths: list[str]) -> dict[str, str]:
    files = [f for p in paths for f in ([repo / p] if (repo / p).is_file() else sorted((repo / p).rglob("*")))]
    return {str(f.relative_to(repo)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = clone(tmp_path_factory.mktemp("reliability"))
    (repo.parent / "decoy").mkdir(exist_ok=True)                 # a user's folder beside the repository
    (repo.parent / "decoy" / "precious.txt").write_text("not the pipeline's\n", encoding="utf-8")
    set_params(repo, **SMALL)
    sh("dvc", "repro", cwd=repo)
    subprocess.run(["cp", "-r", str(repo / "models/base"), str(repo.parent / "user_model")], check=True)
    commit(repo, "small pipeline, reproduced")
    return repo


def kill_during(repo: Path, module: str, fault_point: str) -> None:
    """Start `dvc repro`; once a `python -m <module>` process runs and this run has written a file
    matching `fault_point`, kill -9 the whole process group."""
    start = time.time()

    def running() -> bool:
        # A process that exits between being listed and being read is skipped, not taken as the moment to kill:
        # that race once killed dvc before the stage had started
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return False                               # dvc itself ended: proc.poll() says so next
        for k in kids:
            try:
                if module in " ".join(k.cmdline()):
                    return True
            except psutil.Error:
                continue
        return False

    def ready() -> bool:
        for p in repo.glob(fault_point):
            try:
                if p.stat().st_mtime >= start:
                    return True
            except FileNotFoundError:                  # removed since the glob listed it (checkpoint rotation)
                continue
        return False

    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"dvc repro ended ({proc.returncode}) before the fault in {module}")
            if running() and ready():
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"{module} never reached the fault point")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("stage, module, change, fault_point", [
    ("model", "stages.model", {"model.builtin.vision_depth": 3}, "models/.base.tmp-*/*"),
    ("train", "stages.train", {"lora.rank": 4}, "models/checkpoints/checkpoint-*"),
    ("infer_finetuned", "stages.infer finetuned", {"infer.max_new_tokens": 40}, "data/predictions/.finetuned.jsonl.tmp-*"),
    ("score@finetuned", "stages.score finetuned", {"score.tolerance.distance": 2}, "dvc.lock"),
])
def test_kill_9_mid_stage_loses_nothing(repo, reliability, stage, module, change, fault_point):
    original = (repo / "params.yaml").read_text(encoding="utf-8")
    before = digest(repo, OUTS[stage])
    set_params(repo, **change)
    kill_during(repo, module, fault_point)
    reliability.fault()
    left = digest(repo, OUTS[stage])
    reliability.lost(len(before.items() - left.items()))
    assert left == before, f"{stage}: the previous outputs are not in place"
    assert stage in stale(repo), f"{stage}: an interrupted run counted as done"
    (repo / "params.yaml").write_text(original, encoding="utf-8")
    out = sh("dvc", "repro", cwd=repo).stdout                     # no stale lock: the outputs in place are
    assert stage not in ran(out), f"{stage} recomputed, not kept"  # the recorded ones
    assert digest(repo, OUTS[stage]) == before, f"{stage}: outputs lost by an interrupted run"
    set_params(repo, **change)
    sh("dvc", "repro", cwd=repo)                                   # and the interrupted change completes
    assert stale(repo) == set()
    assert not list(repo.glob("**/.*.tmp-*")), "temporary folders left behind"
    (repo / "params.yaml").write_text(original, encoding="utf-8")
    sh("dvc", "repro", cwd=repo)
    reliability.survived()


ALL_OUTS = ["models/base", "models/adapter", "data/dataset", "data/predictions", "metrics"]


def outside(repo: Path) -> dict[str, str]:
    """Files no stage may touch: the repository's tracked files (params.yaml aside: the cases edit it; dvc.lock:
    DVC records there the stages that passed), the decoy folder and the user's own model beside the repository."""
    tracked = [f for f in sh("git", "ls-files", cwd=repo).stdout.splitlines() if f not in ("params.yaml", "dvc.lock")]
    return digest(repo, tracked) | {f"../{k}": v for k, v in digest(repo.parent, ["decoy", "user_model"]).items()}


def refused(repo: Path, reliability, message: str, *argv: str) -> None:
    """The command fails, says `message`, every output is as it was, and no file outside them changed."""
    before, around = digest(repo, ALL_OUTS), outside(repo)
    r = sh(*(argv or ("dvc", "repro")), cwd=repo, check=False)
    said = r.stdout + r.stderr
    ok = r.returncode != 0 and message in said
    reliability.bad_input(refused=ok)
    after = digest(repo, ALL_OUTS)
    if after != before:
        reliability.lost(len(set(before.items()) ^ set(after.items())))
    now = outside(repo)
    changed = {f for f in around.keys() | now.keys() if around.get(f) != now.get(f)}
    reliability.outside_changed(len(changed))
    assert not changed, f"files outside the outputs changed: {sorted(changed)}"
    assert ok, f"expected a failure saying {message!r}, got ({r.returncode}):\n{said[-3000:]}"
    assert after == before


@pytest.fixture
def restore(repo):
    """Put params.yaml back after a test that broke it."""
    original = (repo / "params.yaml").read_text(encoding="utf-8")
    yield repo
    (repo / "params.yaml").write_text(original, encoding="utf-8")
    sh("dvc", "repro", cwd=repo)
    assert stale(repo) == set()


@pytest.mark.parametrize("change, message", [
    ({"lora.rnak": 8}, "lora.rnak: unknown key; did you mean 'rank'?"),
    ({"train.learning_rate": "fast"}, "train.learning_rate: Input should be a valid number, got 'fast'"),
    ({"model.source": "huggingface"}, "model.source: Input should be 'builtin', 'local' or 'modelscope', got 'huggingface'"),
    ({"lora.rank": 0, "infer.max_batch_size": -1}, "infer.max_batch_size: Input should be greater than 0"),
    ({"data.val_ratio": 0.6, "data.test_ratio": 0.5}, "data.val_ratio + data.test_ratio must be < 1"),
    ({"model.source": "local", "model.local_dir": "no/such/model"}, "no/such/model is not a directory"),
    ({"synth.out_dir": "../decoy", "data.raw_dir": "../decoy"},
     "synth.out_dir: removed; the generate stage always writes data/raw"),
    ({"model.source": "modelscope", "model.revision": "../../../decoy"},
     "model.revision '../../../decoy': expected a branch, a tag or a commit id"),
    ({"model.source": "modelscope", "model.model_id": "../decoy"}, "model.model_id '../decoy': expected a ModelScope id"),
])
def test_bad_params_refused_before_work(restore, reliability, change, message):
    set_params(restore, **change)
    refused(restore, reliability, message)


def test_a_synthetic_data_folder_holding_user_files_is_not_replaced(restore, reliability):
    """data/raw, the generate stage's output, with a user's file in it: DVC sees the output changed and reruns the
    stage, which would replace the whole folder."""
    (restore / "data/raw/notes.txt").write_text("mine\n", encoding="utf-8")
    refused(restore, reliability, "data/raw holds files the generate stage did not write (notes.txt)")
    assert (restore / "data/raw/notes.txt").read_text(encoding="utf-8") == "mine\n"
    (restore / "data/raw/notes.txt").unlink()


def users_own_data(repo: Path, folder: str) -> None:
    """A user's data in the layout the README suggests (images/ + labels.csv), under names of their own."""
    (repo / folder / "images").mkdir(parents=True, exist_ok=True)
    for name in ("cell_a.png", "cell_b.png"):
        Image.new("L", (64, 64), 90).save(repo / folder / "images" / name)
    (repo / folder / "labels.csv").write_text("image_1,image_2,direction,distance\n"
                                              "images/cell_a.png,images/cell_b.png,+,3\n", encoding="utf-8")


# Every way a user runs the pipeline. synth.out_dir once named the generate stage's output folder: `dvc exp run`
# checks every output out (force) before any stage runs, and deleted the folder it named (../decoy, docs/, a user's
# data/mine) before check_params could refuse it; a queued experiment runs four levels below the repository's parent.
# The output is now always data/raw, and the key is refused (by DVC's -S, or by check_params when edited by hand).
OUT_DIR_PATHS = {
    "exp run, outside": ["dvc", "exp", "run", "-S", "synth.out_dir=../decoy", "-S", "data.raw_dir=../decoy"],
    "exp run, docs": ["dvc", "exp", "run", "-S", "synth.out_dir=docs", "-S", "data.raw_dir=docs"],
    "exp run, own data": ["dvc", "exp", "run", "-S", "synth.out_dir=data/mine", "-S", "data.raw_dir=data/mine"],
    "queued exp": ["dvc", "exp", "run", "--queue", "-S", "synth.out_dir=../../../../decoy"],
}


@pytest.mark.parametrize("case", OUT_DIR_PATHS)
def test_no_experiment_names_a_folder_for_the_generate_stage_to_replace(restore, reliability, case):
    users_own_data(restore, "data/mine")
    before = digest(restore, ["data/mine"])
    refused(restore, reliability, "Invalid `--set-param` value", *OUT_DIR_PATHS[case])
    assert digest(restore, ["data/mine"]) == before, "the user's data/mine changed"
    shutil.rmtree(restore / "data/mine")


@pytest.mark.parametrize("argv", [["dvc", "repro"], ["dvc", "repro", "build"]])
def test_the_key_edited_by_hand_is_refused_and_deletes_nothing(restore, reliability, argv):
    """params.yaml edited by hand, then `dvc repro`, or `dvc repro build`, in which check_params does not run."""
    users_own_data(restore, "data/mine")
    before = digest(restore, ["data/mine"])
    set_params(restore, **{"synth.out_dir": "data/mine"})
    refused(restore, reliability, "synth.out_dir: removed; the generate stage always writes data/raw", *argv)
    assert digest(restore, ["data/mine"]) == before, "the user's data/mine changed"
    shutil.rmtree(restore / "data/mine")


@pytest.mark.parametrize("argv", [["dvc", "repro", "generate"], ["dvc", "repro", "build"]])
def test_user_files_in_the_synthetic_folder_are_never_deleted(restore, reliability, argv):
    """The user's own data put into data/raw itself (the README says not to), then generate reruns: the stage
    refuses before it deletes anything. (`dvc exp run` first checks every output out as recorded, DVC's own
    `dvc checkout --force`, which puts data/raw back as the generate stage wrote it: the README says so.)"""
    users_own_data(restore, "data/raw")
    before = digest(restore, ["data/raw"])
    refused(restore, reliability, "data/raw holds files the generate stage did not write (images/cell_a.png", *argv)
    assert digest(restore, ["data/raw"]) == before, "data/raw changed"
    for f in ("images/cell_a.png", "images/cell_b.png"):
        (restore / "data/raw" / f).unlink()
    sh("dvc", "checkout", "--force", "data/raw", cwd=restore)   # the generated labels.csv back


def sixteen_bit(path: Path) -> None:
    """A 16-bit camera frame (the range of a real one): ms-swift once trained on it as solid white."""
    Image.fromarray(np.random.default_rng(0).integers(3341, 46003, (64, 64)).astype(np.uint16)).save(path)


def link_out(path: Path) -> None:
    """The image replaced by a symbolic link to a file outside the data folder (it passed the path check)."""
    target = path.parents[3] / "elsewhere.png"
    shutil.copy(path, target)
    path.unlink()
    path.symlink_to(target)


def last_cell(path: Path, value: str) -> None:
    """The second sample's last cell (its distance, line 3) set to `value`."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = f"{lines[2].rsplit(',', 1)[0]},{value}\n"
    path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("name, spoil, message", [
    ("16bit", lambda d: sixteen_bit(d / "images/000001_1.png"),
     "image data/mine/images/000001_1.png is 16-bit (Pillow mode I;16): ms-swift would clip it to 8 bits"),
    ("corrupt", lambda d: corrupt_png_pixels(d / "images/000001_1.png"),
     "image data/mine/images/000001_1.png is truncated or corrupt"),
    ("1x1", lambda d: Image.new("L", (1, 1)).save(d / "images/000001_1.png"),
     "image data/mine/images/000001_1.png is 1x1 px, too small to be read as an image"),
    ("aspect", lambda d: Image.new("L", (4, 1000)).save(d / "images/000001_1.png"),
     "image data/mine/images/000001_1.png has an aspect ratio of 250.0 (4x1000 px)"),
    ("link", lambda d: link_out(d / "images/000001_1.png"),
     "image data/mine/images/000001_1.png is a link to "),
    ("nan", lambda d: last_cell(d / "labels.csv", "NaN"),
     "data/mine/labels.csv: column distance holds numbers, but line(s) 3 ('NaN') hold a missing or non-finite value"),
])
def test_samples_the_trainer_cannot_use_are_refused_at_build(restore, reliability, name, spoil, message):
    """Own data with one bad sample: refused by build, before training, naming the file (it was trained on as
    white, silently replaced by another sample, or typed as text and blamed on the score params)."""
    mine = restore / "data/mine"
    shutil.rmtree(mine, ignore_errors=True)
    shutil.copytree(restore / "data/raw", mine)
    spoil(mine)
    set_params(restore, **{"data.raw_dir": "data/mine"})
    refused(restore, reliability, message)
    shutil.rmtree(mine)


def local_model(repo: Path, name: str, drop: str = "", add: dict | None = None) -> str:
    """A copy of the built base model under models/, with one file dropped (`-name`: cut short) or files added."""
    dest = repo / "models" / name
    subprocess.run(["cp", "-r", str(repo / "models/base"), str(dest)], check=True)
    if drop.startswith("-"):
        os.truncate(dest / drop[1:], (dest / drop[1:]).stat().st_size // 2)
    elif drop:
        (dest / drop).unlink()
    for f, text in (add or {}).items():
        (dest / f).write_text(text, encoding="utf-8")
    return f"models/{name}"


@pytest.mark.parametrize("name, drop, add, message", [
    ("no_weights", "model.safetensors", None, "is incomplete: missing *.safetensors (model weights)"),
    ("no_config", "config.json", None, "is incomplete: missing config.json"),
    ("remote_code", "", {"modeling_evil.py": "import os\nos.system('touch pwned')\n"},
     "the model ships code that ms-swift would run (modeling_evil.py)"),
    ("processor_auto_map", "", {"processor_config.json": '{"auto_map": {"AutoProcessor": "../evil--p.Evil"}}'},
     "the model ships code that ms-swift would run (processor_config.json: auto_map)"),
    ("tokenizer_class_ref", "", {"tokenizer_config.json": '{"tokenizer_class": "../evil--tok.EvilTokenizer"}'},
     "(tokenizer_config.json: tokenizer_class: ../evil--tok.EvilTokenizer)"),
    ("truncated_config", "", {"config.json": '{"model_type": "qwen3_vl", "text_con'},
     "config.json is not valid JSON (Unterminated string"),
    ("truncated_weights", "-model.safetensors", None, "model.safetensors is truncated or damaged: its header describes"),
])
def test_bad_model_dirs_refused(restore, reliability, name, drop, add, message):
    set_params(restore, **{"model.source": "local", "model.local_dir": local_model(restore, name, drop, add)})
    refused(restore, reliability, message)
    assert not (restore / "pwned").exists()


def test_a_write_into_models_base_never_reaches_the_users_model(restore, reliability):
    """model.source local hard-linked the user's files: truncating models/base/model.safetensors truncated the user's
    own model. Now models/base is a copy; the damaged copy is noticed by DVC and built again from the user's model."""
    user = restore.parent / "user_model"
    set_params(restore, **{"model.source": "local", "model.local_dir": str(user)})
    sh("dvc", "repro", "model", cwd=restore)
    whole, around = digest(restore, ["models/base"]), outside(restore)
    reliability.fault()
    with open(restore / "models/base/model.safetensors", "r+b") as f:
        f.truncate(1000)
    now = outside(restore)
    changed = {f for f in around.keys() | now.keys() if around.get(f) != now.get(f)}
    reliability.outside_changed(len(changed))
    assert not changed, f"files outside the outputs changed: {sorted(changed)}"
    r = sh("dvc", "repro", "model", cwd=restore)
    assert "model" in ran(r.stdout)
    restored = digest(restore, ["models/base"])
    reliability.lost(len(whole.items() - restored.items()))
    assert restored == whole
    sh("git", "checkout", "dvc.lock", cwd=restore)   # the same bytes as the builtin model: nothing to rebuild
    reliability.survived()


def test_unsafe_yaml_is_not_executed(restore, reliability):
    path = restore / "params.yaml"
    path.write_text(path.read_text() + "\nevil: !!python/object/apply:os.system ['touch pwned']\n")
    refused(restore, reliability, "python/object/apply:os.system")
    assert not (restore / "pwned").exists()


def test_shell_metacharacters_pass_literally(restore, reliability):
    prompt = "Focus? \"quoted\" 'single' ; touch pwned && $(touch pwned2) `touch pwned3`"
    set_params(restore, **{"data.prompt": prompt})
    sh("dvc", "repro", "check_params", "build", cwd=restore)
    row = json.loads((restore / "data/dataset/test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert row["messages"][0]["content"].endswith(prompt)
    assert not list(restore.glob("pwned*"))


def test_training_resumes_after_kill_9(repo, reliability):
    """train.resume: a killed run continues from its last checkpoint and ends where an uninterrupted run
    with the same params ends."""
    original = (repo / "params.yaml").read_text(encoding="utf-8")
    set_params(repo, **{"train.resume": True, "train.num_train_epochs": 2, "lora.rank": 6})
    kill_during(repo, "stages.train", "models/checkpoints/checkpoint-*/trainer_state.json")
    reliability.fault()
    left = sorted(str(f.relative_to(repo)) for f in (repo / "models/checkpoints").glob("*/trainer_state.json"))
    r = sh("dvc", "repro", cwd=repo)
    assert "resuming the interrupted run from checkpoint-" in r.stdout + r.stderr, (left, r.stderr[-3000:])
    resumed = json.loads((repo / "metrics/train.json").read_text())
    subprocess.run(["rm", "-rf", str(repo / "models/checkpoints")], check=True)
    sh("dvc", "repro", "--force", "train", cwd=repo)               # the same run, uninterrupted
    straight = json.loads((repo / "metrics/train.json").read_text())
    assert resumed["steps"] == straight["steps"] and resumed["resumed_from_step"] > 0
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], rel=0.02)
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=0.02)   # both runs' steps, not the last
    (repo / "params.yaml").write_text(original, encoding="utf-8")
    sh("dvc", "repro", cwd=repo)
    reliability.survived()


def test_resume_never_reuses_a_finished_run(restore, reliability):
    """train.resume with the data changed after a finished run: training starts afresh, and the adapter recorded
    is the new one (it once "resumed" the finished run: 0 steps, the old adapter)."""
    set_params(restore, **{"train.resume": True})
    sh("dvc", "repro", cwd=restore)
    reliability.fault()
    before = digest(restore, ["models/adapter"])
    set_params(restore, **{"train.resume": True, "synth.num_samples": 44})
    r = sh("dvc", "repro", cwd=restore)
    assert "train.resume: training afresh: the last run finished" in r.stdout + r.stderr, r.stderr[-3000:]
    summary = json.loads((restore / "metrics/train.json").read_text())
    assert summary["steps"] > 0 and summary["runtime_s"] > 0 and "resumed_from_step" not in summary
    assert digest(restore, ["models/adapter"]) != before
    reliability.survived()


def wait_for_queue(repo: Path, timeout: float = 1200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return
        time.sleep(5)
    pytest.fail(f"queue still busy after {timeout} s:\n{status}")


def test_two_queued_experiments_at_once_do_not_interfere(repo, reliability):
    """`dvc exp run --queue` + `dvc queue start -j 2`: each experiment runs in its own workspace, ends
    without error and carries its own params and a complete set of metrics."""
    committed = json.loads((repo / "metrics/headline.json").read_text(encoding="utf-8"))
    rank = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))["lora"]["rank"]
    sh("dvc", "exp", "run", "--queue", "-S", f"lora.rank={rank},{rank * 2}", cwd=repo)
    sh("dvc", "queue", "start", "-j", "2", cwd=repo)
    wait_for_queue(repo)
    rows = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    exps = [e for row in rows for e in row.get("experiments") or []]
    results = {}
    for exp in exps:
        data = exp["revs"][0]["data"]
        assert not exp["revs"][0].get("error"), exp["revs"][0]
        results[data["params"]["params.yaml"]["data"]["lora"]["rank"]] = data["metrics"]["metrics/headline.json"]["data"]
    assert set(results) == {rank, rank * 2}, results.keys()
    for metrics in results.values():
        assert sorted(metrics) == sorted(committed) and sorted(metrics["base"]) == sorted(committed["base"]), metrics
        assert all(isinstance(metrics[m], float) for m in ("parse", "exact", "direction")), metrics


def test_a_failed_training_keeps_the_last_adapter(repo, reliability):
    """ms-swift stops on a row longer than train.max_length (--strict): the adapter, its summary and curves from the
    last good run stay in place (DVC deleted them before the stage ran, until `dvc checkout`)."""
    original = (repo / "params.yaml").read_text(encoding="utf-8")
    before = digest(repo, OUTS["train"] + ["metrics/plots/train_loss.csv", "metrics/plots/eval_loss.csv"])
    set_params(repo, **{"train.max_length": 16})
    r = sh("dvc", "repro", cwd=repo, check=False)
    reliability.fault()
    assert r.returncode != 0 and "Running stage 'train'" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    left = digest(repo, OUTS["train"] + ["metrics/plots/train_loss.csv", "metrics/plots/eval_loss.csv"])
    reliability.lost(len(before.items() - left.items()))
    assert left == before, "the last adapter is not in place after a failed run"
    (repo / "params.yaml").write_text(original, encoding="utf-8")
    assert "train" not in ran(sh("dvc", "repro", cwd=repo).stdout)   # the outputs in place are the recorded ones
    reliability.survived()


def test_disk_full_while_training_is_a_clear_error(repo, reliability):
    """ms-swift writes the adapter into models/checkpoints first: a 256 KiB tmpfs there fills at the first
    checkpoint. The stage says so in one line; the last good adapter stays in place."""
    original = (repo / "params.yaml").read_text(encoding="utf-8")
    before = digest(repo, OUTS["train"])
    checkpoints = repo / "models" / "checkpoints"
    subprocess.run(["rm", "-rf", str(checkpoints)], check=True)
    checkpoints.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(checkpoints)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        set_params(repo, **{"lora.rank": 5})
        r = sh("dvc", "repro", cwd=repo, check=False)
        reliability.fault()
        said = r.stdout + r.stderr
        assert r.returncode != 0
        assert "swift sft failed with exit code" in said and "no space left on device in" in said, said[-3000:]
        assert "train" in stale(repo)
        left = digest(repo, OUTS["train"])
        reliability.lost(len(before.items() - left.items()))
        assert left == before, "the last adapter is not in place after a failed run"
    finally:
        subprocess.run(["umount", str(checkpoints)], check=True)
    (repo / "params.yaml").write_text(original, encoding="utf-8")
    out = sh("dvc", "repro", cwd=repo).stdout
    assert "train" not in ran(out)                                 # the adapter in place is the recorded one
    assert digest(repo, OUTS["train"]) == before
    reliability.survived()


def test_no_room_for_dvc_to_save_an_output_is_said_first(repo, reliability):
    """A full disk while DVC saves a stage's output into its cache showed DVC's "No possible cache link types". DVC's
    cache moved to an empty 64 KiB tmpfs (DVC then reruns the first stage whose outputs that cache lacks, generate):
    the stage says there is no room before replacing its output, and everything comes back from the real cache."""
    before = digest(repo, ["data/raw", *ALL_OUTS])
    small = repo.parent / "small_cache"
    small.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        sh("dvc", "config", "--local", "cache.dir", str(small), cwd=repo)
        r = sh("dvc", "repro", cwd=repo, check=False)
        reliability.fault()
        said = r.stdout + r.stderr
        assert r.returncode != 0 and "No possible cache link types" not in said, said[-3000:]
        assert f"no room for DVC to save data/raw into its cache {small}: it copies" in said, said[-3000:]
    finally:
        sh("dvc", "config", "--local", "--unset", "cache.dir", cwd=repo)
        subprocess.run(["umount", str(small)], check=True)
    out = sh("dvc", "repro", cwd=repo).stdout
    assert not {"generate", "build", "train"} & set(ran(out)), out   # restored from DVC's cache, not rerun
    restored = digest(repo, ["data/raw", *ALL_OUTS])
    reliability.lost(len(before.items() - restored.items()))
    assert restored == before
    reliability.survived()

"""End to end, as a new user would: a fresh copy of the repository, `dvc repro` on the embedded default,
then an experiment. Real dvc, real swift, real (tiny) model; nothing mocked."""
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.workspace import ENV, clone, commit, ran, set_params, sh
from tests.workspace import stale as would_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return clone(tmp_path_factory.mktemp("clone"))


def back_to_commit(repo: Path) -> Path:
    """The workspace as committed after `dvc repro` (an experiment leaves its params and outputs in it)."""
    sh("git", "reset", "-q", "--hard", cwd=repo)
    sh("dvc", "checkout", "--force", cwd=repo)
    return repo


@pytest.fixture(scope="module")
def reproduced(repo) -> Path:
    start = time.monotonic()
    out = sh("dvc", "repro", cwd=repo).stdout
    print(f"dvc repro: {time.monotonic() - start:.0f} s")
    assert set(ran(out)) == {"check_params", "model", "generate", "build", "train", "infer_base", "infer_finetuned",
                             "score@base", "score@finetuned", "compare"}
    commit(repo, "repro")
    return repo


def test_repro_outputs_and_metrics(reproduced):
    repo = reproduced
    for f in ("models/base/config.json", "models/adapter/adapter_model.safetensors", "data/raw/labels.csv",
              "data/dataset/train.jsonl", "data/predictions/base.jsonl", "data/predictions/finetuned.jsonl",
              "metrics/train.json", "metrics/plots/train_loss.csv", "metrics/compare.md"):
        assert (repo / f).is_file(), f
    base = json.loads((repo / "metrics/details/base.json").read_text())
    ft = json.loads((repo / "metrics/details/finetuned.json").read_text())
    assert base.keys() == ft.keys() and base["fields"].keys() == ft["fields"].keys()
    parse = json.loads((repo / "metrics/compare/parse_rate.json").read_text())
    assert parse["finetuned"] >= 0.95 and parse["base"] <= 0.05, parse
    assert parse["diff"] > 0 and parse["ci95_lower"] > 0 and parse["p_value"] < 0.05
    direction = json.loads((repo / "metrics/compare/direction_accuracy.json").read_text())
    assert direction["finetuned"] == ft["fields"]["direction"]["accuracy"] > direction["base"]
    rows = [json.loads(line) for line in (repo / "data/dataset/test.jsonl").read_text().splitlines()]
    assert all(not os.path.isabs(p) for r in rows for p in r["images"])
    headline = json.loads((repo / "metrics/headline.json").read_text())
    measures = ["parse", "exact", "analysis", "direction", "distance"]
    assert list(headline) == [*measures, "base"] and list(headline["base"]) == measures
    assert headline["direction"] == direction["finetuned"] and headline["parse"] == parse["finetuned"]
    assert headline["base"]["direction"] == direction["base"]
    shown = sh("dvc", "metrics", "show", cwd=repo).stdout
    lines = shown.splitlines()
    assert sorted(lines[0].split()) == sorted(["Path", *measures, *(f"base.{m}" for m in measures)]), shown
    assert [line.split()[0] for line in lines[1:]] == ["metrics/headline.json"], shown
    shown = sh("dvc", "metrics", "show", "metrics/compare", cwd=repo).stdout    # per measure: interval and p
    lines = shown.splitlines()
    assert lines[0].split() == ["Path", "base", "ci95_lower", "ci95_upper", "diff", "finetuned", "p_value"], shown
    assert {line.split()[0] for line in lines[1:]} == {f"metrics/compare/{m}.json" for m in (
        "parse_rate", "exact_match", "direction_accuracy", "distance_within_tol", "analysis_normalised",
        "repaired_rate", "distance_mae", "analysis_chrf")}
    assert max(map(len, lines)) <= 120, shown                         # the table fits a terminal


def test_the_default_trains_a_lora_adapter(reproduced):
    """models/adapter is a LoRA adapter at params.yaml's rank and alpha, with adapters on the language model, the
    vision tower and the merger (train.freeze_vit / freeze_aligner: false), and nothing else of the model."""
    from safetensors.torch import load_file

    p = yaml.safe_load((reproduced / "params.yaml").read_text())
    config = json.loads((reproduced / "models/adapter/adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", p["lora"]["rank"], p["lora"]["alpha"])
    weights = load_file(reproduced / "models/adapter/adapter_model.safetensors")
    assert all("lora_" in k for k in weights), [k for k in weights if "lora_" not in k][:5]
    for part in ("language_model.layers.", "visual.blocks.", "visual.merger."):
        assert any(part in k for k in weights), part
    assert not (reproduced / "models/adapter/model.safetensors").exists()


def test_second_repro_is_a_fast_no_op(reproduced):
    start = time.monotonic()
    out = sh("dvc", "repro", cwd=reproduced).stdout
    elapsed = time.monotonic() - start
    assert ran(out) == []
    assert elapsed < 10, f"no-op dvc repro took {elapsed:.1f} s"


def test_the_speed_plugins_change_no_prediction(reproduced):
    """The fine-tuned model's predictions, written through stages/speed's plugins (the test split in batches of
    32, so the next batch's encode overlaps this one's generate), are those of ms-swift's own path, row for row."""
    from stages.common import swift_env
    from stages.infer import infer_argv, plugin_argv

    p = yaml.safe_load((reproduced / "params.yaml").read_text(encoding="utf-8"))
    argv = infer_argv(p, "finetuned", "serial.jsonl")
    assert plugin_argv(p) and len(read_rows(reproduced / "data/dataset/test.jsonl")) > p["infer"]["max_batch_size"]
    cut = argv.index("--external_plugins")
    done = subprocess.run(argv[:cut] + argv[cut + len(plugin_argv(p)):], cwd=reproduced, capture_output=True, text=True,
                          env={**ENV, **swift_env(p["model"])}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    serial = read_rows(reproduced / "serial.jsonl")
    (reproduced / "serial.jsonl").unlink()
    fast = read_rows(reproduced / "data/predictions/finetuned.jsonl")
    assert len(set(r["response"] for r in fast)) > 1                  # answers that differ from image to image
    assert [r["response"] for r in fast] == [r["response"] for r in serial]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_predict_and_merge_commands(reproduced):
    repo = reproduced
    row = json.loads((repo / "data/dataset/test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    out = sh("python", "-m", "stages.commands.predict", *row["images"], cwd=repo).stdout
    answer = json.loads(out)                                         # stdout is the answer alone
    assert answer["parse_status"] in {"ok", "repaired", "failed"} and answer["response"]
    sh("python", "-m", "stages.commands.merge", cwd=repo)                      # the default's adapter -> a whole model
    assert (repo / "models/merged/model.safetensors").is_file() and (repo / "models/merged/config.json").is_file()
    assert "models/merged" not in sh("git", "status", "--porcelain", cwd=repo).stdout


def test_what_reruns_after_a_param_change(reproduced):
    repo = reproduced
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, **{"infer.max_new_tokens": 40})
        assert would_run(repo) == {"check_params", "infer_base", "infer_finetuned"}   # base predictions rerun, training does not
        (repo / "params.yaml").write_text(original)
        set_params(repo, **{"lora.rank": 4})
        assert would_run(repo) == {"check_params", "train"}
        (repo / "params.yaml").write_text(original)
        set_params(repo, **{"score.worst_n": 5})                                  # a detail: the comparison stays
        assert would_run(repo) == {"check_params", "score@base", "score@finetuned"}
        (repo / "params.yaml").write_text(original)
        set_params(repo, **{"data.prompt": "Which way is focus?"})
        assert would_run(repo) == {"check_params", "build"}
        sh("dvc", "repro", "check_params", "build", cwd=repo)                         # cheap; then everything after it is stale
        assert would_run(repo) == {"train", "infer_base", "infer_finetuned", "score@base", "score@finetuned", "compare"}
    finally:
        (repo / "params.yaml").write_text(original)
        sh("dvc", "repro", "check_params", "build", cwd=repo)         # restored from DVC's run cache
    assert would_run(repo) == set()


def test_rank_32_experiment_changes_the_adapter_and_reruns_train_onwards_only(reproduced):
    """The README's headline experiment: a new adapter at rank 32 (not the same model again), and only training,
    the fine-tuned model's inference, its scores and the comparison rerun; the base model's figures stay."""
    from safetensors.torch import load_file

    repo = reproduced
    rank8 = load_file(repo / "models/adapter/adapter_model.safetensors")
    out = sh("dvc", "exp", "run", "-S", "lora.rank=32", "-n", "rank32", cwd=repo).stdout
    assert set(ran(out)) == {"check_params", "train", "infer_finetuned", "score@finetuned", "compare"}
    assert json.loads((repo / "models/adapter/adapter_config.json").read_text())["r"] == 32
    rank32 = load_file(repo / "models/adapter/adapter_model.safetensors")
    assert rank32.keys() == rank8.keys()
    a = next(k for k in rank32 if "lora_A" in k)
    assert (rank8[a].shape[0], rank32[a].shape[0]) == (8, 32)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    text = json.dumps(shown)
    assert "rank32" in text and "metrics/headline.json" in text
    diff = json.loads(sh("dvc", "metrics", "diff", "--all", "--json", cwd=repo).stdout)   # last commit vs experiment
    assert "direction" in diff["metrics/headline.json"], diff
    rows = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    now = next(iter(rows.values()))["data"]["metrics/headline.json"]["data"]
    committed = json.loads(sh("git", "show", "HEAD:metrics/headline.json", cwd=repo).stdout)
    assert now["base"] == committed["base"]                                       # base was not rerun


def test_a_b_between_two_experiments_reads_dvc_and_tests_each_measure(reproduced):
    """The README's A/B after `dvc exp run`: the committed default against the rank-32 experiment (the test above),
    from DVC's cache, every measure with its interval and p; another test split is refused."""
    repo = reproduced
    r = sh("python", "-m", "stages.commands.ab", "HEAD", "rank32", cwd=repo)
    lines = r.stdout.splitlines()
    assert lines[:2] == ["A: HEAD", "B: rank32"], r.stdout
    rows = {line.split()[0]: line for line in lines[3:lines.index("", 3)]}       # the table, up to the verdict
    assert list(rows)[0] == "measure" and set(rows) - {"measure"} == {
        "parse_rate", "exact_match", "direction_accuracy", "distance_within_tol", "analysis_normalised",
        "repaired_rate", "distance_mae", "analysis_chrf"}, r.stdout
    head = json.loads(sh("git", "show", "HEAD:metrics/headline.json", cwd=repo).stdout)
    assert rows["direction_accuracy"].split()[1] == f"{head['direction']:.1%}", r.stdout   # A: the committed model
    for name, line in rows.items():
        if name != "measure":
            assert " .. " in line and ("McNemar" in line or "Wilcoxon" in line), r.stdout
    assert "beyond chance" in r.stdout or "p < 0.05" in r.stdout
    set_params(repo, **{"seed": 7})                   # another split: not the same items
    sh("dvc", "repro", "check_params", "generate", "build", cwd=repo)
    refused = sh("python", "-m", "stages.commands.ab", "HEAD", "workspace", cwd=repo, check=False)
    assert refused.returncode != 0 and "were tested on different test splits" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    back_to_commit(repo)


def test_plots_diff_of_two_experiments_shows_their_pictures(reproduced):
    """The example pictures are DVC image plots: `dvc plots diff HEAD rank32` puts each revision's beside the other's,
    embedded in the page (offline)."""
    repo = reproduced
    sh("dvc", "plots", "diff", "HEAD", "rank32", "-o", "plots_ab", cwd=repo)
    page = (repo / "plots_ab/index.html").read_text(encoding="utf-8")
    shown = set(re.findall(r'<img src="(static/[^"]+)"', page))
    for name in ("worst_01.png", "sample_01.png"):
        for rev in ("HEAD", "rank32"):                                # one per revision, side by side
            src = f"static/{rev}_metrics_plots_examples_{name}"
            assert src in shown and (repo / "plots_ab" / src).stat().st_size > 1000, (src, sorted(shown)[:6])
    shutil.rmtree(repo / "plots_ab")


def test_exp_show_of_three_experiments_fits_a_120_column_terminal(reproduced):
    """`dvc exp show --only-changed` once printed 35 metric columns before the one param that changed: in 120 columns
    the param was collapsed out of sight. Now every changed param and headline measure shows in full."""
    repo = reproduced
    sh("dvc", "exp", "run", "-S", "lora.rank=4", "-n", "rank4", cwd=repo)
    env = {**ENV, "COLUMNS": "120"}
    r = subprocess.run(["dvc", "exp", "show", "--only-changed", "--no-pager"], cwd=repo, env=env, text=True,
                       capture_output=True, check=True)
    lines = r.stdout.splitlines()
    print(r.stdout)
    assert max(map(len, lines)) <= 120, r.stdout
    header = next(line for line in lines if "Experiment" in line)
    for column in ("lora.rank", "direction", "distance"):
        assert column in header, r.stdout
    rows = {name: next(line.split() for line in lines if f"[{name}]" in line) for name in ("rank32", "rank4")}
    assert "32" in rows["rank32"] and "4" in rows["rank4"], r.stdout      # the param's values, not collapsed
    wide = subprocess.run(["dvc", "exp", "show", "--only-changed", "--no-pager"], cwd=repo,
                          env={**ENV, "COLUMNS": "10000"}, text=True, capture_output=True, check=True).stdout
    print(f"natural width: {max(map(len, wide.splitlines()))} columns")
    back_to_commit(repo)


def test_the_gpu_profile_after_an_experiment_leaves_params_yaml_whole(reproduced):
    """The README's order: `dvc exp run -S lora.rank=32` (the test above), then its GPU-profile command. DVC's
    rewrite of params.yaml once ran two keys onto one line here, and every later command failed on the YAML. Here
    the experiment stops at the download (no hub reachable); params.yaml parses and holds the profile's values."""
    repo = reproduced
    options = sh("python", "-m", "stages.commands.profile", "params-gpu.yaml", cwd=repo).stdout.split()
    r = sh("env", "MODELSCOPE_ENDPOINT=http://127.0.0.1:9", "MODELSCOPE_DOWNLOAD_MAX_RETRIES=0",
           "dvc", "exp", "run", *options, cwd=repo, check=False)
    said = r.stdout + r.stderr
    assert "corrupted" not in said, said[-3000:]
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    profile = yaml.safe_load((repo / "params-gpu.yaml").read_text(encoding="utf-8"))
    assert params["model"]["source"] == "modelscope"
    assert params["train"]["per_device_train_batch_size"] == profile["train"]["per_device_train_batch_size"]
    assert params["train"]["lr_scheduler_type"] == "cosine" and params["train"]["freeze_parameters"] == []
    back_to_commit(repo)


def test_full_fine_tuning_stays_an_experiment(reproduced):
    """`-S train.tuner_type=full` trains every weight (a whole model in models/adapter, no merge needed); LoRA keys
    changed alongside it are refused before any work, naming the key and what to do."""
    repo = back_to_commit(reproduced)
    refused = sh("dvc", "exp", "run", "-S", "train.tuner_type=full", "-S", "lora.rank=16", cwd=repo, check=False)
    assert refused.returncode != 0
    assert "lora.rank changed (8 -> 16) but train.tuner_type is full" in refused.stdout + refused.stderr
    back_to_commit(repo)                         # a failed experiment leaves its -S values in params.yaml
    out = sh("dvc", "exp", "run", "-S", "train.tuner_type=full", "-S", "train.learning_rate=1.0e-3", "-n", "full",
             cwd=repo).stdout
    assert set(ran(out)) == {"check_params", "train", "infer_finetuned", "score@finetuned", "compare"}
    assert (repo / "models/adapter/model.safetensors").is_file()
    assert not (repo / "models/adapter/adapter_config.json").exists()
    merge = sh("python", "-m", "stages.commands.merge", cwd=repo, check=False)
    assert merge.returncode != 0 and "already is the whole model" in merge.stdout + merge.stderr


def test_builtin_qwen2_vl_runs_end_to_end(reproduced):
    """The other code path ms-swift has for Qwen-VL: a tiny Qwen2-VL built offline, trained and scored."""
    repo = back_to_commit(reproduced)
    out = sh("dvc", "exp", "run", "-S", "model.model_type=qwen2_vl", "-S", "model.template=qwen2_vl",
             "-n", "qwen2vl", cwd=repo).stdout
    assert {"model", "train", "infer_base", "infer_finetuned", "score@finetuned"} <= set(ran(out))
    assert json.loads((repo / "models/base/config.json").read_text())["model_type"] == "qwen2_vl"
    base = json.loads((repo / "metrics/details/base.json").read_text())
    ft = json.loads((repo / "metrics/details/finetuned.json").read_text())
    print(f"qwen2_vl: parse rate base {base['parse_rate']}, fine-tuned {ft['parse_rate']}")
    assert ft["n"] == base["n"] > 0 and ft["parse_rate"] > base["parse_rate"]


def test_push_then_pull_on_another_clone_restores_results(reproduced, tmp_path):
    """A DVC remote (here a local folder) carries data, adapter, predictions; git carries metrics. The base
    model is not pushed (`cache: false`): the other clone rebuilds or re-downloads it, and since it comes
    out identical nothing after it reruns."""
    repo, remote, other = reproduced, tmp_path / "remote", tmp_path / "other"
    sh("dvc", "remote", "add", "-d", "shared", str(remote), cwd=repo)
    commit(repo, "remote")
    sh("dvc", "push", cwd=repo)
    sh("git", "clone", "-q", str(repo), str(other), cwd=tmp_path)
    sh("dvc", "pull", cwd=other)
    for f in ("data/raw/labels.csv", "data/dataset/test.jsonl", *(str(p.relative_to(repo)) for p in
              (repo / "models/adapter").glob("*.safetensors")), "data/predictions/finetuned.jsonl",
              "metrics/details/finetuned.json"):
        assert (other / f).read_bytes() == (repo / f).read_bytes(), f
    assert not (other / "models/base").exists()
    out = sh("dvc", "repro", cwd=other).stdout
    assert set(ran(out)) <= {"check_params", "model"}, ran(out)

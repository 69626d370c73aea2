"""End to end, as a new user would: a fresh copy of the repository, `dvc repro` on the embedded default,
then an experiment. Real dvc, real swift, real (tiny) model; nothing mocked."""
import json
import os
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.workspace import clone, commit, ran, set_params, sh
from tests.workspace import stale as would_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return clone(tmp_path_factory.mktemp("clone"))


@pytest.fixture(scope="module")
def reproduced(repo) -> Path:
    start = time.monotonic()
    out = sh("dvc", "repro", cwd=repo).stdout
    print(f"dvc repro: {time.monotonic() - start:.0f} s")
    assert set(ran(out)) == {"check_params", "model", "generate", "build", "train", "infer_base", "infer_finetuned",
                             "score@base", "score@finetuned"}
    commit(repo, "repro")
    return repo


def test_repro_outputs_and_metrics(reproduced):
    repo = reproduced
    for f in ("models/base/config.json", "models/adapter/model.safetensors", "data/raw/labels.csv",
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


def test_frozen_parameters_come_out_as_built(reproduced):
    """train.freeze_parameters (the default: the embedding and its tied output layer) reaches ms-swift: those
    weights are the base model's, bit for bit; so do freeze_vit and freeze_aligner (the default: false, so the
    vision blocks and the merger moved, as did the language model's layers)."""
    from safetensors.torch import load_file

    base, tuned = (load_file(reproduced / d / "model.safetensors") for d in ("models/base", "models/adapter"))
    train = yaml.safe_load((reproduced / "params.yaml").read_text())["train"]
    (prefix,) = train["freeze_parameters"]
    frozen = [k for k in base if k.startswith(prefix)]
    assert frozen and all(torch.equal(base[k], tuned[k]) for k in frozen)
    for part, kept in (("model.visual.blocks.", train["freeze_vit"]), ("model.visual.merger.", train["freeze_aligner"])):
        keys = [k for k in base if k.startswith(part)]
        assert keys and all(torch.equal(base[k], tuned[k]) for k in keys) == kept, part
    layer = "model.language_model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(base[layer], tuned[layer])


def test_second_repro_is_a_fast_no_op(reproduced):
    start = time.monotonic()
    out = sh("dvc", "repro", cwd=reproduced).stdout
    elapsed = time.monotonic() - start
    assert ran(out) == []
    assert elapsed < 10, f"no-op dvc repro took {elapsed:.1f} s"


def test_predict_and_merge_commands(reproduced):
    repo = reproduced
    row = json.loads((repo / "data/dataset/test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    out = sh("python", "-m", "stages.predict", *row["images"], cwd=repo).stdout
    answer = json.loads(out)                                         # stdout is the answer alone
    assert answer["parse_status"] in {"ok", "repaired", "failed"} and answer["response"]
    refused = sh("python", "-m", "stages.merge", cwd=repo, check=False)   # the default trains in full: no adapter
    assert refused.returncode != 0 and "already is the whole model" in refused.stdout + refused.stderr


def test_what_reruns_after_a_param_change(reproduced):
    repo = reproduced
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, **{"infer.max_new_tokens": 48})
        assert would_run(repo) == {"check_params", "infer_base", "infer_finetuned"}   # base predictions rerun, training does not
        (repo / "params.yaml").write_text(original)
        set_params(repo, **{"lora.rank": 4})
        assert would_run(repo) == {"check_params", "train"}
        (repo / "params.yaml").write_text(original)
        set_params(repo, **{"data.prompt": "Which way is focus?"})
        assert would_run(repo) == {"check_params", "build"}
        sh("dvc", "repro", "check_params", "build", cwd=repo)                         # cheap; then everything after it is stale
        assert would_run(repo) == {"train", "infer_base", "infer_finetuned", "score@base", "score@finetuned"}
    finally:
        (repo / "params.yaml").write_text(original)
        sh("dvc", "repro", "check_params", "build", cwd=repo)         # restored from DVC's run cache
    assert would_run(repo) == set()


def test_experiment_reruns_train_onwards_only(reproduced):
    """A LoRA experiment reruns training onwards only; its adapter then merges into a whole model."""
    repo = reproduced
    out = sh("dvc", "exp", "run", "-S", "train.tuner_type=lora", "-S", "lora.rank=16", "-n", "rank16", cwd=repo).stdout
    assert set(ran(out)) == {"check_params", "train", "infer_finetuned", "score@finetuned"}
    assert (repo / "models/adapter/adapter_model.safetensors").is_file()
    sh("python", "-m", "stages.merge", cwd=repo)
    assert (repo / "models/merged/model.safetensors").is_file() and (repo / "models/merged/config.json").is_file()
    assert "models/merged" not in sh("git", "status", "--porcelain", cwd=repo).stdout
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    text = json.dumps(shown)
    assert "rank16" in text and '"rank": 16' in text.replace(" ", "").replace('"rank":16', '"rank": 16')
    diff = json.loads(sh("dvc", "metrics", "diff", "--all", "--json", cwd=repo).stdout)
    assert diff["metrics/train.json"]["steps"]["old"] is not None       # the last commit vs the experiment
    assert all(v.get("diff", 0) in (0, None) for v in diff["metrics/base.json"].values())   # base was not rerun


def test_builtin_qwen2_vl_runs_end_to_end(reproduced):
    """The other code path ms-swift has for Qwen-VL: a tiny Qwen2-VL built offline, trained and scored."""
    repo = reproduced
    out = sh("dvc", "exp", "run", "-S", "model.model_type=qwen2_vl", "-S", "model.template=qwen2_vl",
             "-n", "qwen2vl", cwd=repo).stdout
    assert {"model", "train", "infer_base", "infer_finetuned", "score@finetuned"} <= set(ran(out))
    assert json.loads((repo / "models/base/config.json").read_text())["model_type"] == "qwen2_vl"
    base = json.loads((repo / "metrics/base.json").read_text())
    ft = json.loads((repo / "metrics/finetuned.json").read_text())
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
              "metrics/finetuned.json"):
        assert (other / f).read_bytes() == (repo / f).read_bytes(), f
    assert not (other / "models/base").exists()
    out = sh("dvc", "repro", cwd=other).stdout
    assert set(ran(out)) <= {"check_params", "model"}, ran(out)

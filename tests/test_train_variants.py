"""The train stage's LoRA variants through the real `swift sft` on the tiny model (CPU, about 15 s each):
what each param asks for is what ms-swift trains and saves."""
import json
import os
import shutil
import subprocess

import pytest
import torch
from safetensors import safe_open

from stages.common import ROOT, load_params, write_jsonl
from stages.dataset.records import swift_row
from stages.generate import generate
from stages.params.tree import merge
from stages.tiny_model.build import build_tiny_qwen3_vl
from stages.train import export, launch_env, sft_argv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """models/base (a random tiny Qwen3-VL) and data/dataset/{train,val}.jsonl (24 synthetic 64 px pairs) laid out
    like the repository, since the argv builders use repository-relative paths."""
    work = tmp_path_factory.mktemp("variants")
    (work / "models/base").mkdir(parents=True)
    build_tiny_qwen3_vl(work / "models/base", 42, embed_std=0.02)
    params = load_params()
    rows = generate(work / "data/raw", {**params["synth"], "num_samples": 24, "image_size": 64}, 42)
    jsonl = [swift_row(r["id"], [f"data/raw/{r['image_1']}", f"data/raw/{r['image_2']}"], params["data"]["prompt"],
                       json.dumps({k: r[k] for k in ("analysis", "direction", "distance")}, ensure_ascii=False), "")
             for r in rows]
    write_jsonl(work / "data/dataset/train.jsonl", jsonl)
    write_jsonl(work / "data/dataset/val.jsonl", jsonl[:8])
    (work / "stages").symlink_to(ROOT / "stages")          # the ms-swift plugins the argv names, repository-relative
    return work


# LoRA, as the embedded default trains, at batch 2 so that a step is cheap.
LORA = {"train": {"tuner_type": "lora", "per_device_train_batch_size": 2, "logging_steps": 1}}


def train(work, name: str, overrides: dict, steps: int = 2):
    """`steps` optimizer steps of the train stage's command line (LoRA) with `overrides`; the checkpoint it saved."""
    p = merge(load_params(), merge(LORA, overrides))
    argv = sft_argv(p, f"out/{name}") + ["--max_steps", str(steps), "--save_steps", str(steps), "--eval_strategy",
                                         "no"]
    done = subprocess.run(argv, cwd=work, env={**os.environ, **launch_env(p)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "out" / name / f"checkpoint-{steps}"


def adapter(checkpoint) -> tuple[dict, list[str]]:
    config = json.loads((checkpoint / "adapter_config.json").read_text(encoding="utf-8"))
    with safe_open(checkpoint / "adapter_model.safetensors", "pt") as f:
        return config, list(f.keys())


def test_dora_trains_magnitude_vectors(workspace):
    config, keys = adapter(train(workspace, "dora", {"lora": {"use_dora": True}}))
    assert config["use_dora"] is True
    assert any("lora_magnitude_vector" in k for k in keys)


def test_rslora_is_recorded_in_the_adapter(workspace):
    config, keys = adapter(train(workspace, "rslora", {"lora": {"use_rslora": True, "rank": 4}}))
    assert config["use_rslora"] is True and config["r"] == 4
    assert not any("lora_magnitude_vector" in k for k in keys)


def test_vision_tower_lora_when_not_frozen(workspace):
    """freeze_vit false (the default: LoRA on the vision tower too) puts adapters on the vision blocks; true (the GPU
    profile's) keeps them off."""
    _, vit = adapter(train(workspace, "vit", {"train": {"freeze_vit": False, "vit_lr": 1.0e-4}}))
    _, llm = adapter(train(workspace, "llm", {"train": {"freeze_vit": True, "freeze_aligner": True}}))
    assert any(".visual." in k and "lora_A" in k for k in vit)
    assert not any(".visual." in k for k in llm) and any("language_model" in k for k in llm)


def test_full_fine_tuning_saves_a_whole_model(workspace):
    checkpoint = train(workspace, "full", {"train": {"tuner_type": "full", "learning_rate": 1.0e-4}})
    assert not (checkpoint / "adapter_config.json").exists()
    assert (checkpoint / "config.json").is_file() and list(checkpoint.glob("model*.safetensors"))


def test_early_stopping_stops_when_eval_loss_stops_improving(workspace):
    """early_stop_interval 1 with an eval every step and a learning rate that makes training diverge: ms-swift
    stops at the first eval that is not better, long before max_steps."""
    p = merge(load_params(), {"train": {**LORA["train"], "eval_steps": 1,
                                        "early_stop_interval": 1, "learning_rate": 0.9, "lr_scheduler_type": "constant",
                                        "warmup_ratio": 0.0}})
    argv = sft_argv(p, "out/early") + ["--max_steps", "30"]
    done = subprocess.run(argv, cwd=workspace, env={**os.environ, **launch_env(p)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads((workspace / "out/early/logging.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert final["global_step"] < 30


def test_the_used_rows_plugin_trains_as_the_full_head_does(workspace):
    """The builtin model's argv takes the used-rows plugin; the same run without it (the full 151,936-row head) logs
    the same losses and token accuracies step by step, and ends with the same adapter up to float rounding."""
    def run(name: str, source: str):
        checkpoint = train(workspace, name, {"model": {"source": source}}, steps=6)
        log = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
        with safe_open(checkpoint / "adapter_model.safetensors", "pt") as f:
            return [(r["loss"], r["token_acc"]) for r in log if "loss" in r], {k: f.get_tensor(k) for k in f.keys()}

    narrow_log, narrow = run("narrow", "builtin")
    full_log, full = run("full_head", "local")
    args = json.loads((workspace / "out/narrow/checkpoint-6/args.json").read_text(encoding="utf-8"))
    assert args["loss_type"] == "used_rows" and args["callbacks"] == ["used_rows"]
    assert "used_rows" not in (workspace / "out/full_head/checkpoint-6/args.json").read_text(encoding="utf-8")
    assert len(narrow_log) == 6 and [acc for _, acc in narrow_log] == [acc for _, acc in full_log]
    assert [loss for loss, _ in narrow_log] == pytest.approx([loss for loss, _ in full_log], rel=1e-4)
    assert narrow.keys() == full.keys()
    for key in full:
        torch.testing.assert_close(narrow[key], full[key], rtol=1e-3, atol=1e-5)


def test_the_same_training_in_two_clones_exports_the_same_bytes(workspace, tmp_path):
    """dvc.lock records the adapter's hash: the same run in another folder (another clone) must export the same
    files, configs included (ms-swift writes absolute paths and a target_modules regex built from a set)."""
    other = tmp_path / "another-clone"
    shutil.copytree(workspace, other, ignore=shutil.ignore_patterns("out"))
    exported = []
    for work in (workspace, other):
        dest = work / "exported"
        dest.mkdir()
        export(train(work, "twin", {}), dest, work)
        exported.append({f.name: f.read_bytes() for f in sorted(dest.iterdir())})
    assert exported[0].keys() == exported[1].keys() and "adapter_config.json" in exported[0]
    assert [name for name in exported[0] if exported[0][name] != exported[1][name]] == []

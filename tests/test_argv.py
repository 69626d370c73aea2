"""The ms-swift command lines built from params: every knob reaches its flag."""
import json

import pytest

from stages.common import declared_params, load_params, stage_params
from stages.infer import infer_argv
from stages.params.tree import project
from stages.train import check_device, curves, export, launch_env, relocatable, sft_argv, summary
from tests.conftest import shipped


def opts(argv):
    """--flag value pairs of an argv (multi-value flags keep their first value)."""
    return {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}


def lora_params() -> dict:
    """The train stage's params as shipped: LoRA (the embedded default's tuner), whatever params.yaml holds."""
    return project(shipped(load_params()), declared_params("train"))


def test_sft_argv_maps_every_knob():
    p = lora_params()
    p["lora"].update(rank=32, alpha=64, target_modules=["q_proj", "v_proj"])
    p["train"]["freeze_vit"] = False
    argv = sft_argv(p, "models/checkpoints")
    o = opts(argv)
    assert argv[1] == "sft"
    assert o["--tuner_type"] == "lora" and o["--lora_rank"] == "32" and o["--freeze_vit"] == "false"
    assert o["--lora_alpha"] == "64"
    assert argv[argv.index("--target_modules") + 1:argv.index("--target_modules") + 3] == ["q_proj", "v_proj"]
    assert o["--learning_rate"] == str(p["train"]["learning_rate"])
    assert o["--add_version"] == "false" and o["--check_model"] == "false"
    assert o["--strict"] == "true"       # a row longer than max_length stops training instead of being swapped
    assert o["--output_dir"] == "models/checkpoints"
    conditional = {"vit_lr", "aligner_lr", "quant_bits", "early_stop_interval", "resume", "nproc_per_node", "deepspeed",
                   "freeze_parameters"}
    for key in set(p["train"]) - conditional:
        assert f"--{key}" in o, key
    assert not {f"--{k}" for k in conditional} & set(o)
    assert "--template" not in o and "--lora_dtype" not in o


def test_each_lora_knob_changes_the_command_line():
    """`dvc exp run -S lora.<key>=...` must reach ms-swift: each key changes the argv, not only the params."""
    base = sft_argv(lora_params(), "out")
    for key, value in (("rank", 32), ("alpha", 64), ("dropout", 0.0), ("target_modules", ["q_proj"]),
                       ("use_dora", True), ("use_rslora", True), ("modules_to_save", ["merger"]), ("dtype", "bfloat16")):
        p = lora_params()
        p["lora"][key] = value
        assert sft_argv(p, "out") != base, key


def test_sft_argv_variants():
    p = lora_params()
    p["lora"].update(use_dora=True, use_rslora=True, modules_to_save=["visual", "lm_head"], dtype="bfloat16")
    p["train"].update(quant_bits=4, vit_lr=1.0e-5, aligner_lr=2.0e-5, early_stop_interval=3, report_to="tensorboard")
    argv = sft_argv(p, "out")
    o = opts(argv)
    assert (o["--use_dora"], o["--use_rslora"], o["--lora_dtype"]) == ("true", "true", "bfloat16")
    assert argv[argv.index("--modules_to_save") + 1:][:2] == ["visual", "lm_head"]
    assert (o["--quant_method"], o["--quant_bits"]) == ("bnb", "4")
    assert (o["--vit_lr"], o["--aligner_lr"], o["--early_stop_interval"]) == ("1e-05", "2e-05", "3")
    assert o["--report_to"] == "tensorboard"
    p["train"].update(tuner_type="full", quant_bits=0)
    full = opts(sft_argv(p, "out"))
    assert full["--tuner_type"] == "full" and "--lora_rank" not in full


def test_freeze_parameters_reach_a_full_fine_tune_only():
    p = stage_params("train")
    p["train"].update(tuner_type="full", freeze_parameters=["model.language_model.embed_tokens", "model.visual.merger"])
    argv = sft_argv(p, "out")
    i = argv.index("--freeze_parameters")
    assert argv[i + 1:i + 3] == ["model.language_model.embed_tokens", "model.visual.merger"]
    assert argv[i + 3].startswith("--")
    p["train"]["tuner_type"] = "lora"      # ms-swift ignores it with LoRA: not passed, so args.json does not mislead
    assert "--freeze_parameters" not in sft_argv(p, "out")
    p["train"].update(tuner_type="full", freeze_parameters=[])
    assert "--freeze_parameters" not in sft_argv(p, "out")


def test_gpu_only_features_on_a_cpu_are_refused_before_starting():
    cpu = {"quant_bits": 0, "nproc_per_node": 1, "deepspeed": ""}
    check_device(cpu, gpus=0)
    with pytest.raises(SystemExit, match="4-bit QLoRA .bitsandbytes. needs a CUDA GPU and this machine has none"):
        check_device({**cpu, "quant_bits": 4}, gpus=0)
    check_device({**cpu, "quant_bits": 4}, gpus=1)
    with pytest.raises(SystemExit, match="train.nproc_per_node: 2 processes need as many CUDA GPUs; this machine has 1"):
        check_device({**cpu, "nproc_per_node": 2}, gpus=1)
    with pytest.raises(SystemExit, match="(?s)QLoRA.*train.deepspeed: zero3 needs CUDA GPUs"):
        check_device({**cpu, "quant_bits": 8, "deepspeed": "zero3"}, gpus=0)
    check_device({**cpu, "nproc_per_node": 4, "deepspeed": "zero2"}, gpus=4)


def test_multi_gpu_is_ms_swift_own_torchrun():
    p = stage_params("train")
    assert "NPROC_PER_NODE" not in launch_env(p)
    p["train"].update(nproc_per_node=2, deepspeed="zero2")
    assert launch_env(p)["NPROC_PER_NODE"] == "2"
    assert opts(sft_argv(p, "out"))["--deepspeed"] == "zero2"


def test_infer_argv_base_has_no_adapter_and_is_greedy():
    p = stage_params("infer_base")
    base, ft = infer_argv(p, "base", "r.jsonl"), infer_argv(p, "finetuned", "r.jsonl")
    assert "--adapters" not in base
    assert opts(ft)["--adapters"] == "models/adapter"
    assert opts(base)["--temperature"] == "0"
    assert opts(base)["--max_new_tokens"] == str(p["infer"]["max_new_tokens"])
    full = opts(infer_argv(p, "finetuned", "r.jsonl", full_model=True))
    assert full["--model"] == "models/adapter" and "--adapters" not in full
    p["model"]["template"] = "qwen2_vl"
    assert opts(infer_argv(p, "base", "r"))["--template"] == "qwen2_vl"


def test_values_with_spaces_and_semicolons_pass_literally():
    p = lora_params()
    p["lora"]["target_modules"] = ["a b; rm -rf /"]
    assert "a b; rm -rf /" in sft_argv(p, "out")


def test_curves_and_summary_from_trainer_log():
    history = [
        {"loss": 2.0, "learning_rate": 1e-3, "step": 5},
        {"eval_loss": 1.5, "step": 10},
        {"loss": 1.0, "learning_rate": 5e-4, "step": 10},
        {"eval_loss": 1.7, "step": 20},
        {"train_runtime": 12.34, "train_samples_per_second": 8.0, "train_loss": 1.4, "step": 20},
    ]
    train, evals = curves(history)
    assert train == [{"step": 5, "loss": 2.0, "learning_rate": 1e-3}, {"step": 10, "loss": 1.0, "learning_rate": 5e-4}]
    assert evals == [{"step": 10, "eval_loss": 1.5}, {"step": 20, "eval_loss": 1.7}]
    s = summary({"log_history": history, "global_step": 20}, evals)
    assert s == {"train_loss": 1.4, "eval_loss": 1.7, "best_eval_loss": 1.5, "best_step": 10, "steps": 20,
                 "runtime_s": 12.3, "samples_per_s": 8.0}
    # resumed at step 12 (logged up to 10): steps 1-10 at 1.5 on average, the 8 resumed ones at 1.4
    resumed = summary({"log_history": history, "global_step": 20}, evals, {"global_step": 12, "log_history": history[:3]})
    assert resumed["train_loss"] == round((1.5 * 10 + 1.4 * 8) / 18, 4) and resumed["resumed_from_step"] == 12


def test_exported_adapter_names_no_checkout_path(tmp_path):
    """The same training in two clones exports the same bytes: ms-swift's absolute paths become repo-relative,
    weights are copied as they are, trainer state is left behind."""
    root = tmp_path / "clone"
    ckpt, dest = root / "models/checkpoints/checkpoint-9", root / "models/adapter"
    ckpt.mkdir(parents=True), dest.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": f"{root}/models/base"}))
    (ckpt / "args.json").write_text(json.dumps({"output_dir": f"{root}/models/checkpoints", "cwd": str(root)}))
    (ckpt / "adapter_model.safetensors").write_bytes(b"\x00weights" + str(root).encode())
    (ckpt / "optimizer.pt").write_bytes(b"state")
    export(ckpt, dest, root)
    assert json.loads((dest / "adapter_config.json").read_text()) == {"base_model_name_or_path": "models/base"}
    assert json.loads((dest / "args.json").read_text()) == {"output_dir": "models/checkpoints", "cwd": "."}
    assert (dest / "adapter_model.safetensors").read_bytes() == b"\x00weights" + str(root).encode()
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "args.json"]
    assert relocatable("base_model: /a/b/models/base", root) == "base_model: /a/b/models/base"
    assert relocatable(f"{root}2/x {root}", root) == f"{root}2/x ."

"""Stage `train`: `swift sft --tuner_type lora` with every knob from params.yaml.

ms-swift writes checkpoints into models/checkpoints (scratch, not a DVC output); the checkpoint with the
lowest eval loss is exported to models/adapter, and the log becomes curves and a summary under metrics/.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import sys
from pathlib import Path

from stages.common import (ROOT, read_jsonl, run, setup_logging, stage_params, swift_env, to_csv,
                           swift_exe, write_atomic, write_json)
from stages.storage.atomic import atomic_dir
from stages.training.plugins import plugin_argv
from stages.training.resume import fingerprint, record, resume_from, resumed_loss, write_record

ADAPTER = ROOT / "models" / "adapter"
WORK = ROOT / "models" / "checkpoints"
TRAINER_STATE = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin",
                 "scaler.pt"}
log = logging.getLogger("train")


def flag(value) -> str:
    """ms-swift's argparse reads booleans as the words true/false."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def sft_argv(p: dict, output_dir: str) -> list[str]:
    """params -> the `swift sft` command line (argv list, never a shell string)."""
    m, lora, t = p["model"], p["lora"], p["train"]
    argv = [swift_exe(), "sft", "--model", "models/base", "--model_type", m["model_type"]]
    if m["template"]:
        argv += ["--template", m["template"]]
    argv += ["--tuner_type", t["tuner_type"]]
    if t["tuner_type"] == "lora":
        argv += ["--lora_rank", flag(lora["rank"]), "--lora_alpha", flag(lora["alpha"]),
                 "--lora_dropout", flag(lora["dropout"]), "--target_modules", *lora["target_modules"],
                 "--use_dora", flag(lora["use_dora"]), "--use_rslora", flag(lora["use_rslora"])]
        if lora["modules_to_save"]:
            argv += ["--modules_to_save", *lora["modules_to_save"]]
        if lora["dtype"]:
            argv += ["--lora_dtype", lora["dtype"]]
    argv += plugin_argv(p)
    if t["tuner_type"] == "full" and t["freeze_parameters"]:   # ms-swift reads it only when training in full
        argv += ["--freeze_parameters", *t["freeze_parameters"]]
    if t["quant_bits"]:
        argv += ["--quant_method", "bnb", "--quant_bits", flag(t["quant_bits"])]
    for key in ("vit_lr", "aligner_lr"):
        if t[key] is not None:
            argv += [f"--{key}", flag(t[key])]
    if t["deepspeed"]:
        argv += ["--deepspeed", t["deepspeed"]]
    if t["early_stop_interval"]:
        argv += ["--early_stop_interval", flag(t["early_stop_interval"])]
    for key in ("freeze_vit", "freeze_aligner", "num_train_epochs", "learning_rate", "lr_scheduler_type",
                "warmup_ratio", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                "torch_dtype", "gradient_checkpointing", "logging_steps", "eval_steps",
                "dataloader_num_workers", "use_liger_kernel", "attn_impl", "padding_free", "torch_compile"):
        argv += [f"--{key}", flag(t[key])]
    return argv + [
        "--per_device_eval_batch_size", flag(t["per_device_train_batch_size"]),
        "--save_steps", flag(t["eval_steps"]),   # a checkpoint at every eval, so the best one can be exported
        "--save_total_limit", "2",              # ms-swift keeps the best and the last
        "--dataset", "data/dataset/train.jsonl", "--val_dataset", "data/dataset/val.jsonl",
        "--split_dataset_ratio", "0", "--dataset_num_proc", "1",
        "--strict", "true",   # a row ms-swift cannot encode (longer than max_length) stops training; without it the
                              # row is silently replaced by another one (LazyLLMDataset) or dropped
        "--seed", flag(p["seed"]), "--data_seed", flag(p["seed"]),
        "--output_dir", output_dir, "--add_version", "false", "--check_model", "false", "--report_to", t["report_to"],
    ]


def empty_dir(path: Path) -> None:
    """Empty `path` but keep the folder itself: it may be a mount or a link to a bigger disk."""
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def check_device(train: dict, gpus: int) -> None:
    """What needs CUDA (bitsandbytes, several processes, DeepSpeed) says so before anything starts."""
    problems = []
    if train["quant_bits"] and not gpus:
        problems.append(f"train.quant_bits: {train['quant_bits']}-bit QLoRA (bitsandbytes) needs a CUDA GPU and "
                        "this machine has none; set train.quant_bits: 0 to train in full precision on the CPU")
    if train["nproc_per_node"] > max(gpus, 1):
        problems.append(f"train.nproc_per_node: {train['nproc_per_node']} processes need as many CUDA GPUs; "
                        f"this machine has {gpus}")
    if train["deepspeed"] and not gpus:
        problems.append(f"train.deepspeed: {train['deepspeed']} needs CUDA GPUs; this machine has none")
    if problems:
        raise SystemExit("\n".join(problems))


def launch_env(p: dict) -> dict[str, str]:
    """ms-swift starts torchrun itself when NPROC_PER_NODE is set; NNODES, NODE_RANK and MASTER_ADDR
    come from the caller's environment unchanged (multi-node), so nothing here launches processes.
    PYTHONHASHSEED: ms-swift writes target_modules as a regex joined from a set, whose order would otherwise
    change from run to run, and with it the adapter's bytes and its hash in dvc.lock."""
    n = p["train"]["nproc_per_node"]
    return {**swift_env(p["model"]), "PYTHONHASHSEED": "0", **({"NPROC_PER_NODE": str(n)} if n > 1 else {})}


def inputs(rows: list[dict]) -> list[str]:
    """What a resumed run must find unchanged besides its command line: the base model, the splits and their
    images."""
    images = sorted({i for r in rows for i in r.get("images", [])})
    return ["models/base", "data/dataset/train.jsonl", "data/dataset/val.jsonl", *images]


def curves(log_history: list[dict]) -> tuple[list[dict], list[dict]]:
    """Trainer log -> (train rows: step, loss, learning_rate; eval rows: step, eval_loss)."""
    train = [{"step": r["step"], "loss": r["loss"], "learning_rate": r.get("learning_rate")}
             for r in log_history if "loss" in r]
    evals = [{"step": r["step"], "eval_loss": r["eval_loss"]} for r in log_history if "eval_loss" in r]
    return train, evals


def summary(final: dict, evals: list[dict], start: dict | None = None) -> dict:
    """The numbers a user compares between experiments. After a resume from the trainer state `start`, the loss
    covers both runs and runtime_s the resumed part (resumed_from_step says so)."""
    end = next(r for r in reversed(final["log_history"]) if "train_runtime" in r)
    best = min(evals, key=lambda r: r["eval_loss"]) if evals else None
    loss = resumed_loss(start, final["global_step"], end["train_loss"]) if start else end["train_loss"]
    return {
        "train_loss": round(loss, 4),
        "eval_loss": round(evals[-1]["eval_loss"], 4) if evals else None,
        "best_eval_loss": round(best["eval_loss"], 4) if best else None,
        "best_step": best["step"] if best else None,
        "steps": final["global_step"],
        "runtime_s": round(end["train_runtime"], 1),
        "samples_per_s": round(end["train_samples_per_second"], 2),
        **({"resumed_from_step": start["global_step"]} if start else {}),
    }


def relocatable(text: str, root: Path) -> str:
    """ms-swift writes the checkout's absolute path into the adapter's configs (base_model_name_or_path, args.json);
    made relative to the repository, where every stage runs, the adapter is the same bytes in every clone."""
    return re.sub(re.escape(str(root)) + r"(?![\w.-])", ".", text.replace(f"{root}/", ""))


def export(checkpoint: Path, dest: Path, root: Path = ROOT) -> None:
    """Copy what inference needs (the adapter, or the whole model for full fine-tuning), not the
    optimizer and trainer state that only resuming needs; the configs' paths made relative to the repository."""
    for f in checkpoint.iterdir():
        if f.is_file() and f.name not in TRAINER_STATE:
            if f.suffix in (".json", ".md"):
                (dest / f.name).write_text(relocatable(f.read_text(encoding="utf-8"), root), encoding="utf-8")
            else:
                shutil.copy2(f, dest / f.name)


def main() -> None:
    setup_logging()
    p = stage_params("train")
    argv, env = sft_argv(p, str(WORK.relative_to(ROOT))), launch_env(p)
    if "--dry-run" in sys.argv[1:]:   # the exact command, for a GPU machine or a cluster job script
        print(shlex.join([f"{k}={v}" for k, v in env.items()] + ["swift", *argv[1:]]))
        return
    import torch
    check_device(p["train"], torch.cuda.device_count())
    splits = [r for split in ("train", "val") for r in read_jsonl(ROOT / f"data/dataset/{split}.jsonl")]
    this = record(argv, env, fingerprint(ROOT, inputs(splits)))
    checkpoint, why_not = resume_from(WORK, this) if p["train"]["resume"] else (None, "")
    start = None
    if checkpoint:
        log.info("resuming the interrupted run from %s", checkpoint.name)
        start = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    else:
        if why_not:
            log.info("train.resume: training afresh: %s", why_not)
        empty_dir(WORK)
        write_record(WORK, this)
    run(argv + (["--resume_from_checkpoint", str(checkpoint.relative_to(ROOT))] if checkpoint else []),
        env=env, writes=(WORK, ADAPTER.parent))
    write_record(WORK, {**this, "finished": True})
    final = read_jsonl(WORK / "logging.jsonl")[-1]
    train_rows, eval_rows = curves(final["log_history"])
    best = Path(final["best_model_checkpoint"] or final["last_model_checkpoint"])
    with atomic_dir(ADAPTER) as tmp:
        export(ROOT / best, tmp)
    write_atomic(ROOT / "metrics/plots/train_loss.csv", to_csv(train_rows, ["step", "loss", "learning_rate"]))
    write_atomic(ROOT / "metrics/plots/eval_loss.csv", to_csv(eval_rows, ["step", "eval_loss"]))
    write_json(ROOT / "metrics/train.json", {**summary(final, eval_rows, start), "exported": best.name})
    log.info("adapter from %s exported to %s", best.name, ADAPTER.relative_to(ROOT))


if __name__ == "__main__":
    main()

"""Stages `infer_base` / `infer_finetuned`: `swift infer` on the test split, greedy, batched.

`swift infer --result_path` appends to an existing file, so ms-swift writes a fresh temp file that
replaces data/predictions/<which>.jsonl in one rename once it is complete.
"""
from __future__ import annotations

import logging
import sys

from stages.common import ROOT, count, read_jsonl, run, setup_logging, stage_params, swift_env, swift_exe
from stages.speed import plugin_files
from stages.storage.atomic import atomic_file

TEST = "data/dataset/test.jsonl"
log = logging.getLogger("infer")
WHICH = ("base", "finetuned")


def adapter_trained() -> bool:
    """models/adapter holds a LoRA adapter (False: full fine-tuning exported a whole model there)."""
    return (ROOT / "models" / "adapter" / "adapter_config.json").is_file()


def model_argv(p: dict, which: str, full_model: bool = False) -> list[str]:
    """The model half of `swift infer` / `swift deploy` / `swift export`: the fine-tuned model adds the adapter
    to the same base (or, after full fine-tuning, loads the trained model in its place); `merged` is the
    output of `python -m stages.commands.merge`."""
    m = p["model"]
    model = "models/adapter" if which == "finetuned" and full_model else "models/base"
    if which == "merged":
        model, full_model = "models/merged", True
    argv = ["--model", model, "--model_type", m["model_type"]]
    if m["template"]:
        argv += ["--template", m["template"]]
    if which == "finetuned" and not full_model:
        argv += ["--adapters", "models/adapter"]
    return argv


PLUGINS = plugin_files("packed_vision", "vision_rope", "stop_words", "kv_cache", "prefetch")


def generation_argv(p: dict) -> list[str]:
    """Greedy, with the infer stage's token limit and batch size: what the scored predictions were made with."""
    i = p["infer"]
    return ["--infer_backend", i["infer_backend"], "--max_batch_size", str(i["max_batch_size"]),
            "--max_new_tokens", str(i["max_new_tokens"]), "--temperature", "0"]


def plugin_argv(p: dict) -> list[str]:
    """The transformers backend's speed plugins (stages/speed/): the vision tower's attention in one call per
    image size (and on a GPU its rotary embedding in one kernel), the stop-word check on the host, the next batch
    prepared while this one generates, and (on a GPU) a KV cache that decoding appends to without copying it. The
    same predictions (up to bf16 rounding on a GPU), in less time. The overlap is within one call of ms-swift's
    engine, which `swift infer` makes per --write_batch_size rows (default 1,000: 512 + 488 at batch 512, each
    shard's first encode waited for): 0 makes it one call."""
    if p["infer"]["infer_backend"] != "transformers":
        return []
    return ["--external_plugins", *PLUGINS, "--write_batch_size", "0"]


def infer_argv(p: dict, which: str, result_path: str, full_model: bool = False, dataset: str = TEST) -> list[str]:
    """params -> the `swift infer` command line."""
    return [swift_exe(), "infer", *model_argv(p, which, full_model), "--val_dataset", dataset,
            "--result_path", result_path, *generation_argv(p), *plugin_argv(p), "--dataset_num_proc", "1",
            "--strict", "true"]   # a test row ms-swift cannot encode stops it, never dropped or replaced unnoticed


def main() -> None:
    setup_logging()
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which not in WHICH:
        raise SystemExit(f"usage: python -m stages.infer {{{'|'.join(WHICH)}}}, got {which!r}")
    p = stage_params(f"infer_{which}")
    dest = ROOT / "data" / "predictions" / f"{which}.jsonl"
    with atomic_file(dest) as result:   # a fresh path: swift infer appends to an existing file
        full = which == "finetuned" and not adapter_trained()
        run(infer_argv(p, which, str(result), full), env=swift_env(p["model"]), writes=(dest.parent,))
        n, expected = len(read_jsonl(result)), len(read_jsonl(ROOT / TEST))
        if n != expected:   # atomic_file leaves the previous predictions in place
            raise SystemExit(f"swift infer wrote {count(n, 'prediction')} for {count(expected, 'test row')} of {TEST}")
    log.info("%s written to %s", count(n, "prediction"), dest.relative_to(ROOT))


if __name__ == "__main__":
    main()

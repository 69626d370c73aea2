"""Stages `infer_base` / `infer_finetuned`: `swift infer` on the test split, greedy, batched.

`swift infer --result_path` appends to an existing file, so ms-swift writes into a fresh temp dir and
the finished file replaces data/predictions/<which>.jsonl in one rename.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile

from stages.common import ROOT, count, read_jsonl, run, setup_logging, stage_params, swift_env, swift_exe

TEST = "data/dataset/test.jsonl"
log = logging.getLogger("infer")
WHICH = ("base", "finetuned")


def infer_argv(p: dict, which: str, result_path: str) -> list[str]:
    """params -> the `swift infer` command line; the fine-tuned run adds the adapter to the same base."""
    m, i = p["model"], p["infer"]
    argv = [swift_exe(), "infer", "--model", "models/base", "--model_type", m["model_type"]]
    if m["template"]:
        argv += ["--template", m["template"]]
    if which == "finetuned":
        argv += ["--adapters", "models/adapter"]
    return argv + [
        "--val_dataset", TEST, "--result_path", result_path,
        "--infer_backend", i["infer_backend"], "--max_batch_size", str(i["max_batch_size"]),
        "--max_new_tokens", str(i["max_new_tokens"]), "--temperature", "0",  # greedy
        "--dataset_num_proc", "1",
    ]


def main() -> None:
    setup_logging()
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which not in WHICH:
        raise SystemExit(f"usage: python -m stages.infer {{{'|'.join(WHICH)}}}, got {which!r}")
    p = stage_params(f"infer_{which}")
    dest = ROOT / "data" / "predictions" / f"{which}.jsonl"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{which}.tmp-", dir=dest.parent) as tmp:
        result = os.path.join(tmp, "result.jsonl")
        run(infer_argv(p, which, result), env=swift_env(p["model"]))
        n = len(read_jsonl(result))
        os.replace(result, dest)
    log.info("%s written to %s", count(n, "prediction"), dest.relative_to(ROOT))


if __name__ == "__main__":
    main()

"""Command (not a DVC stage): serve the fine-tuned model as an OpenAI-compatible API (`swift deploy`).

    python -m stages.commands.serve [--base | --merged] [--host 127.0.0.1] [--port 8000]

The model, template, image token budget (IMAGE_MAX_TOKEN_NUM), the test set's system prompt and the greedy
generation of the infer stage, so a served answer is the answer the pipeline scored. It listens on this machine
only unless --host says otherwise, and then only with an API key from the environment (SERVE_API_KEY).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile

from stages.common import ROOT, read_jsonl, setup_logging, stage_params, swift_env
from stages.infer import TEST, adapter_trained, generation_argv, model_argv
from stages.dataset.checks import pixel_budget
from stages.serving.checks import KEY_ENV, LOCAL_HOSTS, bind_problem, dataset_shape, max_pixels

MODELS = {"finetuned": "models/adapter", "base": "models/base", "merged": "models/merged"}


def port_problem(host: str, port: int) -> str | None:
    """ms-swift moves to the next free port when one is taken; a client configured for this one would then
    reach another server or nothing, so a taken port is refused instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            return f"cannot listen on {host}:{port} ({e.strerror}): choose another --port"
    return None


def deploy_argv(p: dict, which: str, full: bool, host: str, port: int, system: str | None,
                max_length: int) -> list[str]:
    """--max_length: a prompt longer than training's limit is refused (ms-swift's strict server: a 400),
    not answered from a truncated prompt."""
    return [*model_argv(p, which, full), *generation_argv(p), "--max_length", str(max_length),
            "--host", host, "--port", str(port),
            "--served_model_name", which, "--verbose", "false",
            *(["--system", system] if system else [])]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.commands.serve", description=__doc__.split("\n\n")[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--base", dest="which", action="store_const", const="base", help="the base model alone")
    which.add_argument("--merged", dest="which", action="store_const", const="merged",
                       help="models/merged (python -m stages.commands.merge) instead of base + adapter")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max_request_mb", type=float, default=32, help="largest request body accepted")
    args = ap.parse_args(argv)
    which = args.which or "finetuned"
    key = os.environ.get(KEY_ENV) or None
    os.chdir(ROOT)   # the model paths are the pipeline's, relative to the repository
    missing = [f for f in (MODELS[which], "models/base", TEST) if not (ROOT / f).exists()]
    if missing:
        hint = "python -m stages.commands.merge" if which == "merged" else "dvc repro"
        ap.exit(1, f"serve: {', '.join(missing)} not found: run `{hint}` first\n")
    if problem := bind_problem(args.host, key) or port_problem(args.host, args.port):
        ap.exit(1, f"serve: {problem}\n")
    p = stage_params("infer_finetuned")
    system, counts = dataset_shape(read_jsonl(ROOT / TEST))
    os.environ.update(swift_env(p["model"]))
    setup_logging()
    from stages.serving.server import Server   # ms-swift loads in seconds: not for --help or a refusal
    max_length = stage_params("train")["train"]["max_length"]
    full = which == "finetuned" and not adapter_trained()   # after train.tuner_type: full
    # uvicorn stops gracefully on SIGTERM, then raises it again with the handler it found: this one, so that
    # a clean stop exits 0 (and the temporary folder below is removed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="serve-no-files-") as empty:
        if args.host not in LOCAL_HOSTS:   # other machines' requests may not name files on this one
            os.environ.setdefault("SWIFT_MEDIA_ALLOWED_DIRS", empty)
        Server(deploy_argv(p, which, full, args.host, args.port, system, max_length), key, counts,
               int(args.max_request_mb * 2**20), p["model"]["model_type"], max_pixels(pixel_budget(p["model"]))).main()


if __name__ == "__main__":
    main()

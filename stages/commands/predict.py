"""Command (not a DVC stage): the model's answer for one set of images, from the command line.

    python -m stages.commands.predict data/raw/images/000017_1.png data/raw/images/000017_2.png [--base]

Same prompt (data.prompt / data.system), same `swift infer` flags and the same answer parsing as the
pipeline, so what it prints is what the test-set scoring would have seen.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from stages.common import load_params, read_jsonl, run, swift_env, write_jsonl
from stages.dataset.images import inspect_image
from stages.dataset.records import swift_row
from stages.infer import adapter_trained, infer_argv
from stages.scoring.answers import parse_answer


def request(images: list[Path], question: str, system: str) -> dict:
    """One ms-swift row with no answer yet: swift infer generates the assistant turn."""
    row = swift_row("predict", [str(i.resolve()) for i in images], question, "", system)
    row["messages"] = row["messages"][:-1]
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.commands.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", type=Path, help="image files, in the order the prompt expects")
    ap.add_argument("--base", action="store_true", help="ask the base model, without the adapter")
    ap.add_argument("--question", help="instead of data.prompt from params.yaml")
    args = ap.parse_args(argv)
    if missing := [str(i) for i in args.images if not i.is_file()]:
        ap.error(f"image not found: {', '.join(missing)}")
    p = load_params()
    checked = {str(i): inspect_image(i, p["model"]["model_type"]) for i in args.images}   # the build stage's checks
    if bad := [f"{i} {problem}" for i, problem in checked.items() if isinstance(problem, str)]:
        ap.error("; ".join(bad))
    which = "base" if args.base else "finetuned"
    with tempfile.TemporaryDirectory(prefix="predict-") as tmp:   # nothing left in the repository
        one, result = Path(tmp) / "request.jsonl", Path(tmp) / "result.jsonl"
        write_jsonl(one, [request(args.images, args.question or p["data"]["prompt"], p["data"]["system"])])
        full = which == "finetuned" and not adapter_trained()
        run(infer_argv(p, which, str(result), full, dataset=str(one)), env=swift_env(p["model"]),
            stdout=sys.stderr)   # stdout carries only the answer, for scripts
        response = read_jsonl(result)[0]["response"]
    answer, status = parse_answer(response)
    json.dump({"answer": answer, "parse_status": status, "response": response}, sys.stdout, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()

"""Command (not a DVC stage): experiment A against experiment B, on the same test items, from what DVC stored.

    python -m stages.commands.ab <rev-or-exp-a> <rev-or-exp-b> [--model finetuned|base]

Each side is a git revision (HEAD, a branch, a commit), an experiment name from `dvc exp show`, or `workspace`. Its
predictions, test split and scored fields are read from DVC's cache at that revision (dvc.api): nothing is rerun.
Per measure: A, B, the difference B - A, its 95 % paired-bootstrap interval and the paired test that the compare
stage uses (McNemar's exact test for right/wrong, Wilcoxon signed-rank for errors and chrF). Two revisions whose test
splits differ (another seed, other data) are refused: a paired test needs the same items.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

from stages.common import ROOT
from stages.compare import compare
from stages.scoring.answers import parse_response
from stages.scoring.fields import check_predictions, reference

WORKSPACE = "workspace"


def read(path: str, rev: str) -> str:
    """A file at `rev` (`workspace`: as it is on disk), through DVC: a git file, or a DVC output from the cache."""
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc.scm import SCMError

    try:
        return dvc.api.read(path, repo=str(ROOT), rev=None if rev == WORKSPACE else rev, encoding="utf-8")
    except (DvcException, SCMError, FileNotFoundError) as e:
        raise SystemExit(f"{rev}: cannot read {path} ({type(e).__name__}: {e}); name a git revision, an experiment "
                         f"from `dvc exp show`, or {WORKSPACE!r}, where `dvc repro` has run (`dvc push`/`dvc pull` "
                         "share the cache)") from None


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def same_items_problem(a: str, b: str, test: dict[str, str], fields: dict[str, str]) -> str | None:
    """Why the two sides cannot be paired: another test split (items or answers), or other scored fields."""
    if test[a] != test[b]:
        return (f"{a} and {b} were tested on different test splits (data/dataset/test.jsonl differs: another seed, "
                "other data or another split): a paired comparison needs the same items. Compare experiments that "
                "differ in training or inference params only; for seeds, use python -m stages.commands.seeds")
    if fields[a] != fields[b]:
        return f"{a} and {b} score different fields (data/dataset/fields.json differs): score.* params changed"
    return None


def parsed_side(preds: list[dict], test_rows: list[dict], kind: str, rev: str) -> list[tuple[dict | None, str]]:
    if problems := check_predictions(preds, test_rows):
        raise SystemExit(f"{rev}: the predictions are not of its test split ({problems[0]}): run `dvc repro` there")
    return [parse_response(r["response"] or "", kind) for r in preds]


def table(result: dict[str, tuple], a: str, b: str) -> str:
    """One row per measure, B against A, as a terminal reads it."""
    fmt = lambda x, spec: "-" if x is None else spec.format(x)   # noqa: E731
    head = ("measure", "A", "B", "B - A", "95 % interval", "p", "test", "items")
    rows = [head]
    for name, (r, info) in result.items():
        mae = name.endswith("_mae") or name.endswith("_chrf")
        spec, signed = ("{:.3f}", "{:+.3f}") if mae else ("{:.1%}", "{:+.1%}")
        interval = ("-" if r["ci95_lower"] is None
                    else f"{fmt(r['ci95_lower'], signed)} .. {fmt(r['ci95_upper'], signed)}")
        rows.append((name, fmt(r["base"], spec), fmt(r["finetuned"], spec), fmt(r["diff"], signed), interval,
                     fmt(r["p_value"], "{:.3g}"), info["test"], f"{info['n']:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"A: {a}", f"B: {b}", ""]
    lines += ["  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    return "\n".join(lines)


def verdict(result: dict[str, tuple], alpha: float = 0.05) -> str:
    """Which measures differ beyond chance, and which way; `_mae` is lower-is-better."""
    better, worse = [], []
    for name, (r, _) in result.items():   # repaired_rate: up from failed answers or down from valid ones, no side
        if name == "repaired_rate" or r["p_value"] is None or r["p_value"] >= alpha or not r["diff"]:
            continue
        (better if (r["diff"] > 0) != name.endswith("_mae") else worse).append(name)
    if not better and not worse:
        return (f"No measure differs beyond chance (every p >= {alpha}): on these items B is not shown to beat A, "
                "nor A to beat B.")
    return (f"p < {alpha}: B better on {', '.join(better) or 'none'}; B worse on {', '.join(worse) or 'none'}. "
            f"{len(result)} measures were tested: about {alpha * len(result):.1f} would pass by chance alone if no "
            "difference were real, so read a single p near the threshold with care.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.commands.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="git revision, experiment name, or 'workspace'")
    ap.add_argument("b", help="git revision, experiment name, or 'workspace'")
    ap.add_argument("--model", choices=("finetuned", "base"), default="finetuned",
                    help="whose predictions to compare (default: the fine-tuned model's)")
    args = ap.parse_args(argv)
    sides = (args.a, args.b)
    test = {rev: read("data/dataset/test.jsonl", rev) for rev in sides}
    fields = {rev: read("data/dataset/fields.json", rev) for rev in sides}
    if problem := same_items_problem(args.a, args.b, test, fields):
        raise SystemExit(problem)
    test_rows, schema = jsonl(test[args.a]), json.loads(fields[args.a])
    kind, specs = schema["answer_kind"], schema["fields"]
    parsed = [parsed_side(jsonl(read(f"data/predictions/{args.model}.jsonl", rev)), test_rows, kind, rev)
              for rev in sides]
    refs = [reference(t["messages"][-1]["content"], kind) for t in test_rows]
    result = compare(refs, parsed[0], parsed[1], specs)
    print(table(result, args.a, args.b))
    print()
    print(textwrap.fill(verdict(result), 118))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

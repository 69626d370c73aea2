"""Stage `compare`: base against fine-tuned on the same test items, with the difference's 95 % interval and a
paired test.

  metrics/headline.json            `dvc metrics show` and `dvc exp show`: the fine-tuned model's strict parse rate,
                                   exact match and each field's main score, then the base model's (base.*), one short
                                   column each
  metrics/compare/<measure>.json   base, finetuned, diff, ci95_lower, ci95_upper, p_value: one row each of
                                   `dvc metrics show metrics/compare` (parse_rate, exact_match, each field's main
                                   score, repaired_rate, the mean absolute error of each numeric field and the chrF
                                   of each text field)
  metrics/compare.md               the same as a table, with the test and the number of items behind each row
  metrics/plots/examples/          pictures (DVC image plots) of the fine-tuned model's worst items and of the first
                                   items of the test split: the images beside the expected, base and fine-tuned answers

Right/wrong measures are paired per item and tested with McNemar's exact test (only the items on which the two
models disagree carry information); a numeric field's absolute errors, on the items both models answered with a
number, and a text field's per-item chrF, with the Wilcoxon signed-rank test. The interval is a paired bootstrap (BCa) of the mean per-item
difference, seeded, so the same predictions give the same figures.
"""
from __future__ import annotations

import json
import logging
import re
import sys

from stages.common import ROOT, drop_stale, read_jsonl, setup_logging, stage_params, test_set_marker, write_json
from stages.scoring.answers import parse_response, value
from stages.scoring.cards import card, picked
from stages.scoring.fields import check_predictions, headline_names, reference
from stages.scoring.measures import abs_errors, outcomes, text_scores, worst
from stages.scoring.paired import paired_binary, paired_errors
from stages.storage.atomic import atomic_dir, write_atomic

log = logging.getLogger("compare")


def compare(refs: list[dict], base: list[tuple[dict | None, str]], tuned: list[tuple[dict | None, str]],
            specs: dict) -> dict[str, tuple]:
    """measure -> (row, test info), for the (parsed answer, parse status) of both models against the same references."""
    pb, pt = [(r, p) for r, (p, _) in zip(refs, base)], [(r, p) for r, (p, _) in zip(refs, tuned)]
    ob, ot = outcomes(pb, specs, [s for _, s in base]), outcomes(pt, specs, [s for _, s in tuned])
    base, tuned = [p for p, _ in base], [p for p, _ in tuned]
    out = {name: paired_binary(ob[name], ot[name]) for name in ob}
    for f in (f for f, s in specs.items() if s["type"] == "numeric"):
        out[f"{f}_mae"] = paired_errors(abs_errors(pb, f), abs_errors(pt, f))
    for f in (f for f, s in specs.items() if s["type"] == "text"):
        chrf = [text_scores([r[f] for r in refs], [value(p, f) for p in answers])["chrf"] for answers in (base, tuned)]
        out[f"{f}_chrf"] = paired_errors(*chrf)
    return out


HEADLINE = {"parse_rate": "parse", "exact_match": "exact"}   # short names: `dvc exp show` prints one column each


def headline(result: dict[str, tuple], specs: dict) -> dict:
    """metrics/headline.json, the one metrics file declared in dvc.yaml: the fine-tuned model's strict parse rate,
    exact match and each field's main score under the field's own name, then the base model's under `base`, so that
    `dvc exp show` has one short column per measure (`direction`, `base.direction`; a field named parse, exact or
    base keeps its long name). The intervals and tests are in metrics/compare/."""
    taken = {*HEADLINE.values(), "base"}
    names = {**HEADLINE, **{m: f if f not in taken else m for f, m in headline_names(specs).items()}}
    return {**{short: result[name][0]["finetuned"] for name, short in names.items()},
            "base": {short: result[name][0]["base"] for name, short in names.items()}}


def file_stem(name: str) -> str:
    """A measure's file name: field names are user data, so no path separators or leading dots."""
    return re.sub(r"[^\w.-]", "_", name).lstrip(".") or "_"


def markdown(result: dict[str, tuple]) -> str:
    fmt = lambda x, spec="{:.1%}": "-" if x is None else spec.format(x)   # noqa: E731
    lines = ["# Base against fine-tuned, on the same test items", "",
             "`_mae` rows are mean absolute errors (lower is better) over the items both models answered with a "
             "number (each model's own, with no difference, where no item has both); `_chrf` rows mean chrF (0..1, "
             "character n-gram F-score); the other rows are shares of items right. `parse_rate` counts answers that are "
             "valid JSON as they stand with every field; `repaired_rate` those valid only after repair (junk tokens, "
             "prose, broken quotes or a truncated object fixed). The interval is the difference's (paired bootstrap).",
             "", "| measure | base | fine-tuned | difference | 95 % interval | p | test | items |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (r, info) in result.items():
        spec = "{:.3f}" if name.endswith("_mae") else "{:.1%}"
        signed = "{:+.3f}" if name.endswith("_mae") else "{:+.1%}"
        interval = "-" if r["ci95_lower"] is None else f"{fmt(r['ci95_lower'], signed)} .. {fmt(r['ci95_upper'], signed)}"
        lines.append(f"| {name} | {fmt(r['base'], spec)} | {fmt(r['finetuned'], spec)} | {fmt(r['diff'], signed)} "
                     f"| {interval} | {fmt(r['p_value'], '{:.3g}')} | {info['test']} | {info['n']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    setup_logging()
    dataset = ROOT / "data" / "dataset"
    test_rows, marker = read_jsonl(dataset / "test.jsonl"), test_set_marker(dataset)
    schema = json.loads((dataset / "fields.json").read_text(encoding="utf-8"))
    preds = {w: read_jsonl(ROOT / "data" / "predictions" / f"{w}.jsonl") for w in ("base", "finetuned")}
    problems = [f"{w}: {p}" for w, rows in preds.items() for p in check_predictions(rows, test_rows)]
    if problems:   # nothing written: previous outputs of this test set stay
        drop_stale([ROOT / "metrics" / f for f in ("compare", "headline.json", "plots/examples", "compare.md")],
                   ROOT / "metrics" / "compare.md", marker)
        log.error("%s test rows cannot be compared:\n  %s", f"{len(problems):,}", "\n  ".join(problems[:20]))
        sys.exit(1)
    kind, specs = schema["answer_kind"], schema["fields"]
    refs = [reference(t["messages"][-1]["content"], kind) for t in test_rows]
    parsed = {w: [parse_response(r["response"] or "", kind) for r in rows] for w, rows in preds.items()}
    result = compare(refs, parsed["base"], parsed["finetuned"], specs)
    k = stage_params("compare")["score"]["examples"]
    worst_items = worst([(r, p, s) for r, (p, s) in zip(refs, parsed["finetuned"])], specs, k)
    with atomic_dir(ROOT / "metrics" / "plots" / "examples", cached=False) as tmp:   # drawn first: a missing image
        for name, i in picked(worst_items, len(refs), k).items():                   # stops the stage before writing
            answers = {"base": parsed["base"][i], "fine-tuned": parsed["finetuned"][i]}
            card([ROOT / im for im in test_rows[i]["images"]], f"test item {test_rows[i]['id']} ({name[:-4]})",
                 refs[i], answers, specs).save(tmp / name)

    with atomic_dir(ROOT / "metrics" / "compare", cached=False) as tmp:   # cache: false in dvc.yaml
        for name, (r, _) in result.items():
            write_json(tmp / f"{file_stem(name)}.json", r)
    write_json(ROOT / "metrics" / "headline.json", headline(result, specs))
    write_atomic(ROOT / "metrics" / "compare.md", markdown(result) + "\n" + marker + "\n")
    for name, (r, info) in result.items():
        log.info("%-22s base %s  fine-tuned %s  diff %s [%s, %s]  p %s (%s, %s items)", name, r["base"],
                 r["finetuned"], r["diff"], r["ci95_lower"], r["ci95_upper"], r["p_value"], info["test"], info["n"])


if __name__ == "__main__":
    main()

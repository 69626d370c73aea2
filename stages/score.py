"""Stage `score`: per-field scores of one prediction set, with 95 % intervals.

  metrics/details/<which>.json               parse rate, all-fields exact match, per field by type, intervals
                                             and per class (same keys for both models; the headline comparison
                                             of the two is stage `compare`)
  metrics/plots/<which>/confusion.csv        actual, predicted per test sample and categorical field
  metrics/plots/<which>/errors.csv           predicted - expected per numeric prediction and numeric field
  metrics/worst_<which>.md                   the worst predictions, with links to their images

The scoring itself (parsing, field types, Wilson intervals) is in stages/scoring/.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from stages.common import ROOT, count, read_jsonl, setup_logging, stage_params, to_csv, write_atomic, write_json
from stages.scoring.answers import is_number, label, parse_answer, value
from stages.scoring.fields import scored_fields
from stages.scoring.measures import score, worst, wrong_fields

log = logging.getLogger("score")


def plot_tables(ids: list[str], pairs: list[tuple[dict, dict | None]], specs: dict) -> dict[str, str]:
    """CSV text of confusion.csv (a row per sample and categorical field) and errors.csv (a row per numeric
    prediction: predicted - expected), long format with an `answer_field` column; header only when empty."""
    confusion, errors = [], []
    for f, spec in specs.items():
        if spec["type"] == "categorical":
            confusion += [{"answer_field": f, "actual": label(r[f]), "predicted": label(value(p, f))} for r, p in pairs]
        elif spec["type"] == "numeric":
            errors += [{"answer_field": f, "id": i, "expected": r[f], "predicted": p[f], "error": p[f] - r[f]}
                       for i, (r, p) in zip(ids, pairs) if is_number(value(p, f))]
    return {"confusion.csv": to_csv(confusion, ["answer_field", "actual", "predicted"]),
            "errors.csv": to_csv(errors, ["answer_field", "id", "expected", "predicted", "error"])}


def worst_table(test_rows: list[dict], responses: list[str], refs: list[dict],
                parsed: list[tuple[dict | None, str]], specs: dict, k: int) -> list[dict]:
    """The `k` worst predictions as table rows: id, images, parse status, wrong fields, expected, predicted
    (the parsed answer, or the raw response when it did not parse)."""
    rows = [(r, pred, status) for r, (pred, status) in zip(refs, parsed)]
    return [{"id": test_rows[i]["id"], "images": test_rows[i]["images"], "status": rows[i][2],
             "wrong": wrong_fields(refs[i], rows[i][1], specs), "expected": refs[i],
             "predicted": rows[i][1] if rows[i][1] is not None else responses[i]}
            for i in worst(rows, specs, k)]


def _cell(value, limit: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|")


def worst_markdown(which: str, table: list[dict], n: int) -> str:
    """The worst predictions as a Markdown table; image links are relative to metrics/."""
    lines = [f"# Worst predictions: {which} ({len(table):,} shown of {n:,})", "",
             "Failed parses first, then more wrong fields, then larger numeric errors. `predicted` is the parsed",
             "answer, or the raw response (a JSON string) when it did not parse.", ""]
    if not table:
        return "\n".join(lines + ["Every prediction is right.", ""])
    lines += ["| # | id | parse | wrong | expected | predicted | images |", "|---|---|---|---|---|---|---|"]
    for rank, r in enumerate(table, 1):
        links = " ".join(f"[{Path(im).name}]({im if os.path.isabs(im) else '../' + im})" for im in r["images"])
        lines.append(f"| {rank} | {r['id']} | {r['status']} | {', '.join(r['wrong'])} | {_cell(r['expected'])} "
                     f"| {_cell(r['predicted'])} | {links} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    setup_logging()
    which = sys.argv[1]
    p = stage_params("score")["score"]
    pred_rows = read_jsonl(ROOT / "data" / "predictions" / f"{which}.jsonl")
    test_rows = read_jsonl(ROOT / "data" / "dataset" / "test.jsonl")
    try:
        refs, specs = scored_fields(pred_rows, test_rows, p)
    except ValueError as e:   # nothing written yet: the previous outputs stay
        log.error("%s: %s", which, e)
        sys.exit(1)
    responses = [row["response"] or "" for row in pred_rows]
    parsed = [parse_answer(text) for text in responses]
    log.info("fields: %s%s", ", ".join(f"{f} ({s['type']})" for f, s in specs.items()),
             "" if p["fields"] else ", derived from the reference answers")

    pairs = [(r, pred) for r, (pred, _) in zip(refs, parsed)]
    metrics = score(pairs, specs)
    metrics["parse_status"] = {s: sum(st == s for _, st in parsed) for s in ("ok", "repaired", "failed")}
    tables = plot_tables([t["id"] for t in test_rows], pairs, specs)
    worst_md = worst_markdown(which, worst_table(test_rows, responses, refs, parsed, specs, p["worst_n"]), len(refs))

    # everything is computed: write it in one go, each output whole or not at all
    write_json(ROOT / "metrics" / "details" / f"{which}.json", metrics)
    for name, text in tables.items():
        write_atomic(ROOT / "metrics" / "plots" / which / name, text)
    write_atomic(ROOT / "metrics" / f"worst_{which}.md", worst_md)

    log.info("%s: %s, parse rate %.1f%% %s, all fields exact %.1f%%", which, count(len(refs), "prediction"),
             100 * metrics["parse_rate"], metrics["parse_status"], 100 * metrics["exact_match"])
    for f, m in metrics["fields"].items():
        key = "accuracy" if "accuracy" in m else "exact"
        ci = m[f"{key}_ci95"]
        log.info("  %-12s %s %.1f%% (95%% CI %.1f-%.1f%%), missing in %s", f, key, 100 * m[key],
                 100 * ci["lower"], 100 * ci["upper"], count(m["missing"], "prediction"))


if __name__ == "__main__":
    main()

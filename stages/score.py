"""Stage `score`: per-field scores of one prediction set, with 95 % intervals.

  metrics/details/<which>.json               parse rate, all-fields exact match, per field by type, intervals
                                             and per class (same keys for both models; the headline comparison
                                             of the two is stage `compare`)
  metrics/plots/<which>/confusion.csv        actual, predicted per test sample and categorical field
  metrics/plots/<which>/errors.csv           predicted - expected per numeric prediction and numeric field
  metrics/worst_<which>.md                   the worst predictions, with links to their images

What is scored (the answer kind, each field's type and tolerance) was decided by the build stage, from the whole
data set: data/dataset/fields.json. The scoring itself (parsing, Wilson and bootstrap intervals, text metrics) is in
stages/scoring/.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from stages.common import (ROOT, count, drop_stale, read_jsonl, setup_logging, stage_params, test_set_marker, to_csv,
                           write_atomic, write_json)
from stages.scoring.answers import is_number, label, parse_response, value
from stages.scoring.fields import check_predictions, reference
from stages.scoring.measures import score, text_scores, worst, wrong_fields

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
    text = {f: text_scores([r[f] for r in refs], [value(p, f) for p, _ in parsed])
            for f, s in specs.items() if s["type"] == "text"}
    return [{"id": test_rows[i]["id"], "images": test_rows[i]["images"], "status": rows[i][2],
             "wrong": wrong_fields(refs[i], rows[i][1], specs), "expected": refs[i],
             "predicted": rows[i][1] if rows[i][1] is not None else responses[i],
             "text": {f: {m: round(v[i], 3) for m, v in t.items()} for f, t in text.items()}}
            for i in worst(rows, specs, k, text)]


def _text_cell(scores: dict) -> str:
    return "; ".join(f"{f}: chrF {s['chrf']:.0%}, BLEU {s['bleu']:.0%}, ROUGE-L {s['rouge_l']:.0%}, CER {s['cer']:.0%}"
                     for f, s in scores.items())


def _cell(value, limit: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|")


def worst_markdown(which: str, table: list[dict], n: int, marker: str = "") -> str:
    """The worst predictions as a Markdown table; image links are relative to metrics/ (in <...>, so that paths
    with spaces stay links). `marker` names the test set, so that a later failed run can tell these apart."""
    lines = [f"# Worst predictions: {which} ({len(table):,} shown of {n:,})", "",
             "Failed parses first, then more wrong fields, then larger numeric errors, then lower chrF of text fields.",
             "`predicted` is the parsed answer, or the raw response (a JSON string) when it did not parse.", ""]
    end = [marker] if marker else []
    if not table:
        return "\n".join(lines + ["Every prediction is right.", *end, ""])
    texts = any(r.get("text") for r in table)
    lines += ["| # | id | parse | wrong | expected | predicted |" + (" text scores |" if texts else "") + " images |",
              "|---|---|---|---|---|---|" + ("---|" if texts else "") + "---|"]
    for rank, r in enumerate(table, 1):
        links = " ".join(f"[{Path(im).name}](<{im if os.path.isabs(im) else '../' + im}>)" for im in r["images"])
        lines.append(f"| {rank} | {r['id']} | {r['status']} | {', '.join(r['wrong'])} | {_cell(r['expected'])} "
                     f"| {_cell(r['predicted'])} |" + (f" {_text_cell(r['text'])} |" if texts else "") + f" {links} |")
    return "\n".join(lines + ["", *end]) + "\n"


def outputs(which: str) -> list[Path]:
    """details, worst-predictions report, confusion.csv, errors.csv"""
    return [ROOT / "metrics" / "details" / f"{which}.json", ROOT / "metrics" / f"worst_{which}.md",
            *(ROOT / "metrics" / "plots" / which / name for name in ("confusion.csv", "errors.csv"))]


def main() -> None:
    setup_logging()
    which = sys.argv[1]
    p = stage_params("score")["score"]
    dataset = ROOT / "data" / "dataset"
    pred_rows, test_rows = read_jsonl(ROOT / "data" / "predictions" / f"{which}.jsonl"), read_jsonl(dataset / "test.jsonl")
    schema, marker = json.loads((dataset / "fields.json").read_text(encoding="utf-8")), test_set_marker(dataset)
    if problems := check_predictions(pred_rows, test_rows):   # nothing written: previous outputs of this test set stay
        drop_stale(outputs(which), outputs(which)[1], marker)
        log.error("%s: %s test rows cannot be scored:\n  %s", which, f"{len(problems):,}", "\n  ".join(problems[:20]))
        sys.exit(1)
    kind, specs = schema["answer_kind"], schema["fields"]
    refs = [reference(t["messages"][-1]["content"], kind) for t in test_rows]
    responses = [row["response"] or "" for row in pred_rows]
    parsed = [parse_response(text, kind) for text in responses]
    log.info("answers: %s; fields: %s (data/dataset/fields.json, from the build stage)", kind,
             ", ".join(f"{f} ({s['type']})" for f, s in specs.items()))

    pairs = [(r, pred) for r, (pred, _) in zip(refs, parsed)]
    metrics = score(pairs, specs, [status for _, status in parsed])
    metrics["parse_status"] = {s: sum(st == s for _, st in parsed) for s in ("ok", "repaired", "failed")}
    tables = plot_tables([t["id"] for t in test_rows], pairs, specs)
    worst_md = worst_markdown(which, worst_table(test_rows, responses, refs, parsed, specs, p["worst_n"]), len(refs),
                              marker)

    # everything is computed: write it in one go, each output whole or not at all
    details, report, *plots = outputs(which)
    write_json(details, metrics)
    for path in plots:
        write_atomic(path, tables[path.name])
    write_atomic(report, worst_md)

    log.info("%s: %s, strictly valid %.1f%% (repaired %.1f%%; %s), all fields exact %.1f%%", which,
             count(len(refs), "prediction"), 100 * metrics["parse_rate"], 100 * metrics["repaired_rate"],
             metrics["parse_status"], 100 * metrics["exact_match"])
    for f, m in metrics["fields"].items():
        key = "accuracy" if "accuracy" in m else "exact"
        ci = m[f"{key}_ci95"]
        log.info("  %-12s %s %.1f%% (95%% CI %.1f-%.1f%%), missing in %s%s", f, key, 100 * m[key],
                 100 * ci["lower"], 100 * ci["upper"], count(m["missing"], "prediction"),
                 f", chrF {m['chrf']:.3f}, BLEU {m['bleu']:.3f}, ROUGE-L {m['rouge_l']:.3f}, CER {m['cer']:.3f}"
                 if "chrf" in m else "")


if __name__ == "__main__":
    main()

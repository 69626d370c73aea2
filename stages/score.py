"""Stage `score`: JSON-field accuracy of one prediction set -> metrics/<which>.json.

Both models' files have the same keys, so `dvc metrics show` prints them side by side. A response that
is not JSON is counted as a parse failure (and every field wrong), never a crash.
"""
from __future__ import annotations

import json
import logging
import re
import sys

import json_repair

from stages.common import ROOT, count, read_jsonl, setup_logging, stage_params, write_json

log = logging.getLogger("score")
FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.S)


def parse_answer(text: str) -> tuple[dict | None, str]:
    """Model output -> (JSON object or None, status `ok` | `repaired` | `failed`).

    `ok`: the response (code fences aside) is one valid JSON object; `repaired`: json-repair had to cut
    prose, fix quotes/commas or pick the first of several objects; `failed`: no object at all."""
    body = (m.group(1) if (m := FENCE.search(text)) else text).strip()
    try:
        obj = json.loads(body)
        if isinstance(obj, dict):
            return obj, "ok"
    except json.JSONDecodeError:
        pass
    start = body.find("{")
    if start < 0:
        return None, "failed"
    try:  # the first complete object, with prose or more objects after it
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
        if isinstance(obj, dict):
            return obj, "repaired"
    except json.JSONDecodeError:
        pass
    repaired = json_repair.loads(body[start:])
    if isinstance(repaired, list):
        repaired = next((o for o in repaired if isinstance(o, dict) and o), None)
    return (repaired, "repaired") if isinstance(repaired, dict) and repaired else (None, "failed")


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def score(pairs: list[tuple[dict, dict | None]], tolerance: float) -> dict:
    """(reference, parsed prediction or None) pairs -> metrics. Fields and their types come from the
    references: numbers get exact / within-tolerance / mean absolute error, everything else accuracy."""
    n = len(pairs)
    fields = list(pairs[0][0]) if pairs else []
    out: dict = {"n": n, "parse_rate": _rate(sum(p is not None for _, p in pairs), n),
                 "exact_match": _rate(sum(p is not None and all(p.get(f) == r[f] for f in r) for r, p in pairs), n),
                 "fields": {}}
    for f in fields:
        got = [(r[f], p.get(f) if p else None) for r, p in pairs]
        if all(is_number(r) for r, _ in got):
            errors = [abs(g - r) for r, g in got if is_number(g)]
            out["fields"][f] = {
                "exact": _rate(sum(is_number(g) and g == r for r, g in got), n),
                "within_tol": _rate(sum(is_number(g) and abs(g - r) <= tolerance for r, g in got), n),
                "mae": round(sum(errors) / len(errors), 3) if errors else None,
            }
        else:
            out["fields"][f] = {"accuracy": _rate(sum(g == r for r, g in got), n)}
    return out


def _rate(k: int, n: int) -> float:
    return round(k / n, 4) if n else 0.0


def main() -> None:
    setup_logging()
    which = sys.argv[1]
    p = stage_params("score")
    rows = read_jsonl(ROOT / "data" / "predictions" / f"{which}.jsonl")
    pairs, statuses = [], {"ok": 0, "repaired": 0, "failed": 0}
    for row in rows:
        pred, status = parse_answer(row["response"] or "")
        statuses[status] += 1
        pairs.append((json.loads(row["labels"]), pred))
    metrics = score(pairs, p["score"]["distance_tolerance"])
    metrics["parse_status"] = statuses
    write_json(ROOT / "metrics" / f"{which}.json", metrics)
    log.info("%s: %s, parse rate %.1f%%, exact match %.1f%%", which, count(len(rows), "prediction"),
             100 * metrics["parse_rate"], 100 * metrics["exact_match"])


if __name__ == "__main__":
    main()

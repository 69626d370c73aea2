"""What is scored: the reference answers, checked against the test split, and each field's type (categorical,
numeric or text) with its tolerance, from `score.fields` or derived from the references."""
from __future__ import annotations

import json

from stages.scoring.answers import is_number, label

def references(pred_rows: list[dict], test_rows: list[dict]) -> list[dict]:
    """The reference answers, checked against the test split: same length, same images, JSON objects.
    Raises ValueError listing every bad row."""
    if len(pred_rows) != len(test_rows):
        raise ValueError(f"{len(pred_rows):,} predictions for {len(test_rows):,} test samples: rerun inference")
    refs, problems = [], []
    for i, (p, t) in enumerate(zip(pred_rows, test_rows), 1):
        if [im["path"] if isinstance(im, dict) else im for im in p.get("images", [])] != t["images"]:
            problems.append(f"row {i} (id {t['id']}): prediction's images differ from the test split's")
        try:
            ref = json.loads(p["labels"])
        except (ValueError, TypeError):
            ref = None
        if not isinstance(ref, dict):
            problems.append(f"row {i} (id {t['id']}): reference answer is not a JSON object: {p['labels']!r:.80}")
        refs.append(ref)
    if problems:
        hint = ("\n  the score and compare stages compare JSON answers field by field, so every answer in "
                "data/dataset/test.jsonl must be a JSON object" if any("not a JSON object" in q for q in problems) else "")
        raise ValueError(f"{len(problems):,} test rows cannot be scored:\n  " + "\n  ".join(problems[:20])
                         + ("\n  ..." if len(problems) > 20 else "") + hint)
    return refs


def derive_fields(refs: list[dict], max_classes: int) -> dict[str, str]:
    """Field -> type from the reference answers: all numbers -> numeric, at most `max_classes` distinct
    values -> categorical, else text."""
    out = {}
    for f in dict.fromkeys(k for r in refs for k in r):
        values = [r[f] for r in refs if r.get(f) is not None]
        if values and all(is_number(v) for v in values):
            out[f] = "numeric"
        else:
            out[f] = "categorical" if len({label(v) for v in values}) <= max_classes else "text"
    return out


def resolve_fields(refs: list[dict], fields: dict[str, str], tolerance: dict[str, float],
                   max_classes: int) -> dict[str, dict]:
    """The fields to score: field -> {type, tolerance}, from `score.fields` or derived when that is empty.
    Raises ValueError naming every problem: a field some references lack, a numeric field with
    non-numbers, a tolerance for a field that is not numeric."""
    if not refs:
        raise ValueError("no reference answers to score against")
    types = dict(fields) or derive_fields(refs, max_classes)
    problems = []
    for f, kind in types.items():
        lacking = [i + 1 for i, r in enumerate(refs) if r.get(f) is None]
        if lacking:
            problems.append(f"score.fields.{f}: {len(lacking):,} of {len(refs):,} reference answers have no value "
                            f"(rows {', '.join(map(str, lacking[:5]))}{', ...' if len(lacking) > 5 else ''})")
        elif kind == "numeric" and not all(is_number(r[f]) for r in refs):
            bad = next(r[f] for r in refs if not is_number(r[f]))
            problems.append(f"score.fields.{f}: numeric, but reference answers hold non-numbers, e.g. {bad!r}; "
                            f"use categorical or text")
    for f in tolerance:
        if types.get(f) != "numeric":
            numeric = [k for k, t in types.items() if t == "numeric"]
            problems.append(f"score.tolerance.{f}: not a numeric field; numeric fields: {', '.join(numeric) or 'none'} "
                            "(set score.tolerance in params.yaml to {} or to numeric fields of your answers)")
    if problems:
        raise ValueError("score params do not fit the reference answers:\n  " + "\n  ".join(problems))
    return {f: {"type": kind, "tolerance": tolerance.get(f, 0)} for f, kind in types.items()}


def headline_names(specs: dict[str, dict]) -> dict[str, str]:
    """Each field's main score, named for `metrics/compare/`: accuracy (categorical), within tolerance (numeric),
    normalised match (text)."""
    main = {"categorical": "accuracy", "numeric": "within_tol", "text": "normalised"}
    return {f: f"{f}_{main[s['type']]}" for f, s in specs.items()}


def scored_fields(pred_rows: list[dict], test_rows: list[dict], score_params: dict) -> tuple[list[dict], dict]:
    """The reference answers and the fields to score, checked against the test split and the score params.
    Raises ValueError naming every problem."""
    refs = references(pred_rows, test_rows)
    return refs, resolve_fields(refs, score_params["fields"], score_params["tolerance"], score_params["max_classes"])

"""What is scored, decided by the build stage from the whole data set (before training) and written to
data/dataset/fields.json: the answer kind - JSON objects, scored field by field, or plain text, scored as one field
`answer` - and each field's type (categorical, numeric or text) with its tolerance. Score and compare read that
file and only check that the predictions belong to the test split."""
from __future__ import annotations

import json
import math

from stages.scoring.answers import TEXT_FIELD, is_number, label
KINDS = ("json", "text")


def non_finite(obj, path: str = "") -> list[str]:
    """Dotted keys of the NaN / Infinity values in a parsed answer (Python's json reads them; JSON has none)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return [path or "(the answer)"]
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    return [bad for k, v in items for bad in non_finite(v, f"{path}.{k}" if path else str(k))]


def as_object(text: str) -> dict | None:
    """The answer as a JSON object, or None when it is not one."""
    try:
        obj = json.loads(text)
    except (ValueError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def reference(text: str, kind: str) -> dict:
    """A reference answer as the fields scoring compares: the JSON object, or {"answer": text}."""
    return as_object(text) if kind == "json" else {TEXT_FIELD: text.strip()}


def not_object(where: str, text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            json.loads(stripped)
            why = "not an object"
        except ValueError as e:
            why = f"it looks like one but is not valid JSON: {e.msg} at column {e.colno}"
        return (f"{where}: the answer is not a JSON object ({why}): {stripped!r:.80}; expected JSON, with "
                "double-quoted keys and strings (a Python dict printed as text is not JSON)")
    return (f"{where}: the answer is not a JSON object: {stripped!r:.80}; expected a JSON object "
            "(data.answer_kind: json), or set data.answer_kind: text to score answers as plain text")


def answer_kind(answers: list[tuple[str, str]], requested: str) -> tuple[str, list[str], list[str]]:
    """(kind, problems, warnings) of the answers, given as (where, text). `auto`: json when every answer is a JSON
    object or the others look like broken objects (then reported), text when none is; a mix of objects and plain
    text is text, with a warning."""
    objects = [as_object(text) is not None for _, text in answers]
    kind = requested
    if requested == "auto":
        broken = any(not ok and text.lstrip().startswith("{") for ok, (_, text) in zip(objects, answers))
        kind = "json" if objects and (all(objects) or broken) else "text"
    if kind == "json":
        parsed = [(w, as_object(t)) for ok, (w, t) in zip(objects, answers) if ok]
        return kind, [not_object(w, t) for ok, (w, t) in zip(objects, answers) if not ok] + [
            f"{w}: the answer's field(s) {', '.join(bad)} are NaN or Infinity, which JSON does not allow and no "
            "model answer can match; expected a finite number" for w, obj in parsed if (bad := non_finite(obj))], []
    warnings = []
    if requested == "auto" and any(objects):
        first_obj = next(w for ok, (w, _) in zip(objects, answers) if ok)
        first_text = next(w for ok, (w, _) in zip(objects, answers) if not ok)
        warnings.append(f"{sum(objects):,} of {len(answers):,} answers are JSON objects (first at {first_obj}) and the "
                        f"others plain text (first at {first_text}): all are scored as plain text; set "
                        "data.answer_kind: json to score JSON fields (the plain-text answers are then reported)")
    return kind, [], warnings


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


def resolve_fields(refs: list[dict], fields: dict[str, str], tolerance: dict[str, float], max_classes: int,
                   where: list[str] | None = None) -> tuple[dict[str, dict], list[str], list[str]]:
    """The fields to score, field -> {type, tolerance}, from `score.fields` or derived when that is empty, with the
    problems (a field some answers lack, a numeric field with non-numbers, a tolerance for a field that is not
    numeric) and warnings (a tolerance for a field no answer has: ignored, so the default fits any data)."""
    if not refs:
        return {}, ["no reference answers to score against"], []
    where = where or [f"row {i}" for i in range(1, len(refs) + 1)]
    types = dict(fields) or derive_fields(refs, max_classes)
    present = list(dict.fromkeys(k for r in refs for k in r))
    problems, warnings = [], []
    for f, kind in types.items():
        lacking = [w for w, r in zip(where, refs) if r.get(f) is None]
        if lacking:
            problems.append(f"answer field {f}: {len(lacking):,} of {len(refs):,} answers have no value (at "
                            f"{', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}); expected a value in "
                            f"every answer, or list the fields to score in score.fields (fields: {', '.join(present)})")
        elif kind == "numeric" and not all(is_number(r[f]) for r in refs):
            w, bad = next((w, r[f]) for w, r in zip(where, refs) if not is_number(r[f]))
            problems.append(f"score.fields.{f}: numeric, but answers hold non-numbers, e.g. {bad!r} at {w}; "
                            f"use categorical or text")
    numeric = [k for k, t in types.items() if t == "numeric"]
    for f in tolerance:
        if f not in present:
            warnings.append(f"score.tolerance.{f}: no answer has a field {f!r}, so it is not used (answer fields: "
                            f"{', '.join(present)})")
        elif types.get(f) != "numeric":
            problems.append(f"score.tolerance.{f}: not a numeric field; numeric fields: {', '.join(numeric) or 'none'} "
                            "(set score.tolerance in params.yaml to {} or to numeric fields of your answers)")
    specs = {f: {"type": kind, "tolerance": tolerance.get(f, 0)} for f, kind in types.items()}
    return specs, problems, warnings


def headline_names(specs: dict[str, dict]) -> dict[str, str]:
    """Each field's main score, named for `metrics/compare/`: accuracy (categorical), within tolerance (numeric),
    normalised match (text)."""
    main = {"categorical": "accuracy", "numeric": "within_tol", "text": "normalised"}
    return {f: f"{f}_{main[s['type']]}" for f, s in specs.items()}


def check_predictions(pred_rows: list[dict], test_rows: list[dict]) -> list[str]:
    """Problems that show the predictions are not of this test split: another length, other images or answers."""
    if len(pred_rows) != len(test_rows):
        return [f"{len(pred_rows):,} predictions for {len(test_rows):,} test samples: rerun inference"]
    problems = []
    for i, (p, t) in enumerate(zip(pred_rows, test_rows), 1):
        if [im["path"] if isinstance(im, dict) else im for im in p.get("images", [])] != t["images"]:
            problems.append(f"row {i} (id {t['id']}): prediction's images differ from the test split's")
        elif p.get("labels") != t["messages"][-1]["content"]:
            problems.append(f"row {i} (id {t['id']}): prediction's reference answer differs from the test split's")
    return problems

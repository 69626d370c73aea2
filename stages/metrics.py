"""Pure helpers of stage `score`: parse a model's answer, decide how each field is scored, score it.

No I/O here: `stages/score.py` reads the predictions and writes what these functions return.
A predicted field that is absent, null or "" (or the whole answer unparseable) is `missing`: wrong, and counted.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata

import json_repair

MISSING = "(missing)"          # the predicted class of a missing value, in confusion matrices
Z95 = 1.959963984540054        # standard normal quantile at 0.975: two-sided 95 %
FENCE = re.compile(r"```(?i:json)?\s*(.*?)(?:```|$)", re.S)
JUNK = re.compile(r"<\|[^<>|\s]{1,64}\|>")    # special tokens leaking into the text: <|unused_123|>, <|im_end|>


def parse_answer(text: str) -> tuple[dict | None, str]:
    """Model output -> (JSON object or None, status `ok` | `repaired` | `failed`).

    `ok`: the response is one valid JSON object, at most inside a code fence; `repaired`: junk tokens
    removed, prose cut, quotes/commas fixed, a truncated object closed, or the first of several objects
    taken; `failed`: no object at all."""
    cleaned = JUNK.sub("", text)
    fenced = FENCE.search(cleaned)
    body = (fenced.group(1) if fenced else cleaned).strip()
    untouched = cleaned == text and (not fenced or FENCE.fullmatch(cleaned.strip()) is not None)
    try:
        obj = json.loads(body)
        if isinstance(obj, dict):
            return obj, "ok" if untouched else "repaired"
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


def value(pred: dict | None, field: str):
    """The predicted value of `field`, None when missing: no answer, no such key, null or ""."""
    v = pred.get(field) if pred else None
    return None if v == "" else v


def is_number(v) -> bool:
    """A finite int or float (not a bool, NaN, or an integer too large for a float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def label(v) -> str:
    """A value as a class name: strings as they are, anything else as compact JSON, None as MISSING."""
    if v is None:
        return MISSING
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)


def normalise_text(s: str) -> str:
    """Width, case, whitespace and punctuation normalised: '电机向-方向移动７步。 ' == '电机向-方向移动7步'.
    Dashes stay: they carry signs (向-方向 is not 向+方向)."""
    return "".join(c for c in unicodedata.normalize("NFKC", s).casefold() if _kept(c))


def _kept(c: str) -> bool:
    cat = unicodedata.category(c)
    return not (c.isspace() or cat[0] in "ZC" or (cat[0] == "P" and cat != "Pd"))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials; (0, 1) when n is 0 (nothing known)."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(name: str, k: int, n: int) -> dict:
    """{name: k/n, name_ci95: {lower, upper}}; numbers, so `dvc metrics show/diff` print and compare them."""
    lower, upper = wilson(k, n)
    return {name: round(k / n, 4) if n else None,
            f"{name}_ci95": {"lower": round(lower, 4), "upper": round(upper, 4)}}


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
        raise ValueError(f"{len(problems):,} bad prediction rows:\n  " + "\n  ".join(problems[:20])
                         + ("\n  ..." if len(problems) > 20 else ""))
    return refs


def headline_names(specs: dict[str, dict]) -> dict[str, str]:
    """Each field's main score, named for `metrics/compare/`: accuracy (categorical), within tolerance (numeric),
    normalised match (text)."""
    main = {"categorical": "accuracy", "numeric": "within_tol", "text": "normalised"}
    return {f: f"{f}_{main[s['type']]}" for f, s in specs.items()}


def outcomes(pairs: list[tuple[dict, dict | None]], specs: dict[str, dict]) -> dict[str, list[bool]]:
    """Per test item, right or wrong by each headline measure: parse rate, exact match, each field's main score.
    The same lists for two models on the same items are what a paired test compares."""
    out = {"parse_rate": [p is not None for _, p in pairs],
           "exact_match": [p is not None and all(correct(s, r[f], value(p, f)) for f, s in specs.items())
                           for r, p in pairs]}
    for f, name in headline_names(specs).items():
        spec = specs[f]
        if spec["type"] == "numeric":
            out[name] = [is_number(value(p, f)) and abs(value(p, f) - r[f]) <= spec["tolerance"] + 1e-9
                         for r, p in pairs]
        elif spec["type"] == "text":
            out[name] = [value(p, f) is not None and normalise_text(label(value(p, f))) == normalise_text(label(r[f]))
                         for r, p in pairs]
        else:
            out[name] = [correct(spec, r[f], value(p, f)) for r, p in pairs]
    return out


def abs_errors(pairs: list[tuple[dict, dict | None]], field: str) -> list[float | None]:
    """|predicted - expected| of a numeric field per item; None where the prediction is not a number."""
    return [abs(value(p, field) - r[field]) if is_number(value(p, field)) else None for r, p in pairs]


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
            problems.append(f"score.tolerance.{f}: not a numeric field; numeric fields: {', '.join(numeric) or 'none'}")
    if problems:
        raise ValueError("score params do not fit the reference answers:\n  " + "\n  ".join(problems))
    return {f: {"type": kind, "tolerance": tolerance.get(f, 0)} for f, kind in types.items()}


def correct(spec: dict, ref, pred) -> bool:
    """Exactly right: categorical and text equal, numeric an equal number (a string "7" is not 7)."""
    if pred is None:
        return False
    if spec["type"] == "numeric":
        return is_number(pred) and pred == ref
    if spec["type"] == "categorical":
        return label(pred) == label(ref)
    return pred == ref


def confusion_matrix(actual: list[str], predicted: list[str]) -> dict[str, dict[str, int]]:
    """actual -> predicted -> count, over every label seen (MISSING last), zeros included."""
    labels = sorted(set(actual) | set(predicted), key=lambda s: (s == MISSING, s))
    matrix = {a: dict.fromkeys(labels, 0) for a in labels}
    for a, p in zip(actual, predicted):
        matrix[a][p] += 1
    return matrix


def score_categorical(refs: list, preds: list) -> dict:
    actual, predicted = [label(r) for r in refs], [label(p) for p in preds]
    m = confusion_matrix(actual, predicted)
    per_class = {}
    for c in sorted(set(actual)):  # the reference classes: the same keys for every model
        per_class[c] = {**rate("precision", m[c][c], sum(row[c] for row in m.values())),
                        **rate("recall", m[c][c], sum(m[c].values())), "support": actual.count(c)}
    return {**rate("accuracy", sum(a == p for a, p in zip(actual, predicted)), len(refs)),
            "missing": predicted.count(MISSING), "per_class": per_class}


def score_numeric(refs: list, preds: list, tolerance: float) -> dict:
    errors = [abs(p - r) for r, p in zip(refs, preds) if is_number(p)]
    return {**rate("exact", sum(e == 0 for e in errors), len(refs)),
            **rate("within_tol", sum(e <= tolerance + 1e-9 for e in errors), len(refs)),
            "mae": round(sum(errors) / len(errors), 4) if errors else None,
            "mae_n": len(errors),                     # predictions that were numbers at all
            "missing": sum(p is None for p in preds)}


def score_text(refs: list, preds: list) -> dict:
    norm = [p is not None and normalise_text(label(p)) == normalise_text(label(r)) for r, p in zip(refs, preds)]
    return {**rate("exact", sum(p == r for r, p in zip(refs, preds)), len(refs)),
            **rate("normalised", sum(norm), len(refs)), "missing": sum(p is None for p in preds)}


def score(pairs: list[tuple[dict, dict | None]], specs: dict[str, dict]) -> dict:
    """(reference, parsed prediction or None) pairs -> metrics with the same keys for every model."""
    n = len(pairs)
    exact = sum(p is not None and all(correct(s, r[f], value(p, f)) for f, s in specs.items()) for r, p in pairs)
    out = {"n": n, **rate("parse_rate", sum(p is not None for _, p in pairs), n),
           **rate("exact_match", exact, n), "fields": {}}
    for f, spec in specs.items():
        refs, preds = [r[f] for r, _ in pairs], [value(p, f) for _, p in pairs]
        if spec["type"] == "categorical":
            out["fields"][f] = score_categorical(refs, preds)
        elif spec["type"] == "numeric":
            out["fields"][f] = score_numeric(refs, preds, spec["tolerance"])
        else:
            out["fields"][f] = score_text(refs, preds)
    return out


def wrong_fields(ref: dict, pred: dict | None, specs: dict[str, dict]) -> list[str]:
    return [f for f, s in specs.items() if not correct(s, ref[f], value(pred, f))]


def worst(rows: list[tuple[dict, dict | None, str]], specs: dict[str, dict], k: int) -> list[int]:
    """Indices of the `k` worst (reference, prediction, parse status) rows, worst first: failed parses,
    then more wrong fields, then larger numeric errors; rows with nothing wrong never appear."""
    def badness(i: int) -> tuple:
        ref, pred, status = rows[i]
        err = sum(abs(value(pred, f) - ref[f]) for f, s in specs.items()
                  if s["type"] == "numeric" and is_number(value(pred, f)))
        return status == "failed", len(wrong_fields(ref, pred, specs)), err
    bad = [i for i in range(len(rows)) if badness(i)[:2] != (False, 0)]
    return sorted(bad, key=lambda i: tuple(-x for x in badness(i)))[:k]

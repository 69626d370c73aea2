"""Scores of one model's parsed answers against the references: rates with 95 % Wilson intervals, per class and
per field, the per-item outcomes a paired test compares, and the worst predictions. Pure: no I/O."""
from __future__ import annotations

import math

import numpy as np

from stages.scoring.answers import MISSING, is_number, label, normalise_text, repaired_only, strictly_valid, value
from stages.scoring.fields import headline_names
from stages.scoring.paired import mean_interval
from stages.scoring.text import MEASURES, per_item

Z95 = 1.959963984540054        # standard normal quantile at 0.975: two-sided 95 %


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


def outcomes(pairs: list[tuple[dict, dict | None]], specs: dict[str, dict], statuses: list[str]) -> dict[str, list[bool]]:
    """Per test item, right or wrong by each headline measure: parse rate (strictly valid: no repair, every field),
    exact match, each field's main score, then the share valid only after repair. The same lists for two models on
    the same items are what a paired test compares."""
    strict, repaired = parse_outcomes(pairs, specs, statuses)
    out = {"parse_rate": strict,
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
    out["repaired_rate"] = repaired
    return out


def parse_outcomes(pairs: list[tuple[dict, dict | None]], specs: dict[str, dict],
                   statuses: list[str]) -> tuple[list[bool], list[bool]]:
    """Per item: strictly valid (no repair, every field), and valid only after repair."""
    return ([strictly_valid(p, st, specs) for (_, p), st in zip(pairs, statuses)],
            [repaired_only(p, st, specs) for (_, p), st in zip(pairs, statuses)])


def abs_errors(pairs: list[tuple[dict, dict | None]], field: str) -> list[float | None]:
    """|predicted - expected| of a numeric field per item; None where the prediction is not a number."""
    return [abs(value(p, field) - r[field]) if is_number(value(p, field)) else None for r, p in pairs]


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


def text_scores(refs: list, preds: list) -> dict[str, list[float]]:
    """BLEU, chrF, ROUGE-L and CER per item of a text field (stages/scoring/text.py)."""
    return per_item([label(r) for r in refs], [None if p is None else label(p) for p in preds])


def mean_with_interval(name: str, values: list[float]) -> dict:
    """{name: mean, name_ci95: {lower, upper}}: the 95 % bootstrap interval over the test items."""
    if not values:
        return {name: None, f"{name}_ci95": {"lower": None, "upper": None}}
    lower, upper = mean_interval(np.asarray(values, float))
    return {name: round(float(np.mean(values)), 4), f"{name}_ci95": {"lower": round(lower, 4), "upper": round(upper, 4)}}


def score_text(refs: list, preds: list) -> dict:
    norm = [p is not None and normalise_text(label(p)) == normalise_text(label(r)) for r, p in zip(refs, preds)]
    scores = text_scores(refs, preds)
    return {**rate("exact", sum(p == r for r, p in zip(refs, preds)), len(refs)),
            **rate("normalised", sum(norm), len(refs)), "missing": sum(p is None for p in preds),
            **{k: v for m in MEASURES for k, v in mean_with_interval(m, scores[m]).items()}}


def score(pairs: list[tuple[dict, dict | None]], specs: dict[str, dict], statuses: list[str]) -> dict:
    """(reference, parsed prediction or None) pairs and their parse statuses -> metrics with the same keys for every
    model. parse_rate counts the strictly valid answers (no repair, every field); repaired_rate those with every
    field only after repair; the fields are scored on the parsed answers, repaired or not."""
    n = len(pairs)
    exact = sum(p is not None and all(correct(s, r[f], value(p, f)) for f, s in specs.items()) for r, p in pairs)
    strict, repaired = parse_outcomes(pairs, specs, statuses)
    out = {"n": n, **rate("parse_rate", sum(strict), n), **rate("repaired_rate", sum(repaired), n),
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


def worst(rows: list[tuple[dict, dict | None, str]], specs: dict[str, dict], k: int,
          text: dict[str, dict[str, list[float]]] | None = None) -> list[int]:
    """Indices of the `k` worst (reference, prediction, parse status) rows, worst first: failed parses,
    then more wrong fields, then larger numeric errors, then lower chrF of the text fields; rows with nothing wrong
    never appear. `text`: each text field's `text_scores`, when the caller has them already."""
    text = text if text is not None else {f: text_scores([r[f] for r, _, _ in rows], [value(p, f) for _, p, _ in rows])
                                          for f, s in specs.items() if s["type"] == "text"}
    chrf = {f: scores["chrf"] for f, scores in text.items()}

    def badness(i: int) -> tuple:
        ref, pred, status = rows[i]
        err = sum(abs(value(pred, f) - ref[f]) for f, s in specs.items()
                  if s["type"] == "numeric" and is_number(value(pred, f)))
        return status == "failed", len(wrong_fields(ref, pred, specs)), err, sum(1 - c[i] for c in chrf.values())
    bad = [i for i in range(len(rows)) if badness(i)[:2] != (False, 0)]
    return sorted(bad, key=lambda i: tuple(-x for x in badness(i)))[:k]

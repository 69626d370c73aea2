"""A model's answer as data: the JSON object cut out of its text (repaired where it can be), a field's value,
and the normal forms that scoring compares. A predicted field that is absent, null or "" is `missing`."""
from __future__ import annotations

import json
import math
import re
import unicodedata

import json_repair

TEXT_FIELD = "answer"          # the one field of a plain-text answer
MISSING = "(missing)"          # the predicted class of a missing value, in confusion matrices
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


def parse_response(text: str, kind: str) -> tuple[dict | None, str]:
    """A model's response as the fields scoring compares: the JSON object (`parse_answer`) for JSON answers; for
    plain-text answers {"answer": the text} without junk tokens and surrounding space (`failed` when empty)."""
    if kind == "json":
        return parse_answer(text)
    cleaned = JUNK.sub("", text).strip()
    return ({TEXT_FIELD: cleaned}, "ok" if cleaned == text.strip() else "repaired") if cleaned else (None, "failed")


def complete(pred: dict | None, fields) -> bool:
    """Every field has a value (`value`): not missing, null or ""."""
    return all(value(pred, f) is not None for f in fields)


def strictly_valid(pred: dict | None, status: str, fields) -> bool:
    """The response was the answer as it stands (status `ok`: no repair) and it gives every field a value; an
    object with a field missing, or one json-repair rebuilt (`{"direction":}` -> {"direction": ""}), is not."""
    return status == "ok" and complete(pred, fields)


def repaired_only(pred: dict | None, status: str, fields) -> bool:
    """Every field has a value, but only after repair: valid had the model's text been cleaned up."""
    return status == "repaired" and complete(pred, fields)


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

"""Splits of the build stage: seeded, optionally stratified by an answer field, into train/val/test index lists."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from stages.common import count
from stages.validate import DataError


def split(n: int, val_ratio: float, test_ratio: float, seed: int) -> dict[str, list[int]]:
    """Seeded split into index lists; test and (if asked) val get at least one sample each; test_ratio 0 = none."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_ratio)) if test_ratio > 0 else 0
    n_val = max(1, round(n * val_ratio)) if val_ratio > 0 else 0
    if n - n_test - n_val < 1:
        raise DataError(f"{count(n, 'sample')} is too few to split into train/val/test "
                        f"(val_ratio {val_ratio}, test_ratio {test_ratio})")
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {k: sorted(int(i) for i in v) for k, v in parts.items()}


def stratified_split(labels: list[str], val_ratio: float, test_ratio: float, seed: int, field: str) -> dict[str, list[int]]:
    """`split` within each class, so that every part has each class in about the same proportion."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    rng, parts, small = np.random.default_rng(seed), {"test": [], "val": [], "train": []}, []
    for label in sorted(groups):
        try:
            for name, idx in split(len(groups[label]), val_ratio, test_ratio, int(rng.integers(2**31))).items():
                parts[name] += [groups[label][i] for i in idx]
        except DataError:
            small.append(f"class {label} has {count(len(groups[label]), 'sample')}")
    if small:
        names = "train/val/test" if val_ratio > 0 else "train/test" if test_ratio > 0 else "train/val"
        raise DataError(f"data.stratify {field!r}: too few samples to split every class into {names} (val_ratio "
                        f"{val_ratio}, test_ratio {test_ratio}), each part needs one: {'; '.join(small)}; "
                        "add samples, merge classes, or set data.stratify: \"\"")
    return {k: sorted(v) for k, v in parts.items()}


def class_labels(rows: list[dict], wheres: list[str], field: str) -> tuple[list[str], list[str]]:
    """Each row's value of answer field `field` (as JSON text), and the rows whose answer lacks it."""
    labels, problems = [], []
    for row, where in zip(rows, wheres):
        try:
            answer = json.loads(row["messages"][-1]["content"])
        except (ValueError, TypeError, KeyError, IndexError):
            answer = None
        if not isinstance(answer, dict) or field not in answer:
            problems.append(f"{where}: the answer has no field {field!r} (data.stratify); expected a JSON object with it")
        labels.append(json.dumps(answer.get(field) if isinstance(answer, dict) else None, ensure_ascii=False))
    return labels, problems

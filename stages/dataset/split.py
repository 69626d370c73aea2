"""Splits of the build stage: seeded, optionally stratified by an answer field, into train/val/test index lists;
and the warnings about them (class imbalance, the same image bytes in two splits)."""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np

from stages.common import count
from stages.dataset.checks import DataError
from stages.dataset.images import ImageInfo
from stages.dataset.rows import last_content


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


def stratified_split(labels: list[str], val_ratio: float, test_ratio: float, seed: int,
                     field: str) -> dict[str, list[int]]:
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


def class_label(row: dict, field: str) -> str | None:
    """The class a row is stratified by: its answer's field `field` as JSON text; a plain-text answer (not JSON) is
    its own class (as JSON text too); None when the answer is a JSON object without that field."""
    content = last_content(row)
    if not content.strip():
        return None
    try:
        answer = json.loads(content)
    except ValueError:
        return json.dumps(content, ensure_ascii=False)
    if not isinstance(answer, dict):
        return json.dumps(content, ensure_ascii=False)
    return json.dumps(answer[field], ensure_ascii=False) if field in answer else None


def imbalance_warning(labels: list[str], field: str, ratio: float) -> str | None:
    counts = Counter(labels).most_common()
    if len(counts) < 2 or counts[0][1] <= ratio * counts[-1][1]:
        return None
    shown = ", ".join(f"{k} {n:,}" for k, n in counts[:10]) + (", ..." if len(counts) > 10 else "")
    return (f"class imbalance in {field!r}: {counts[0][0]} has {counts[0][1] / counts[-1][1]:.1f}x the samples of "
            f"{counts[-1][0]} (over data.imbalance_ratio {ratio}); counts: {shown}")


def leakage_warning(parts: dict[str, list[int]], digests: list[tuple[bytes, ...]],
                    images: dict[str, ImageInfo | str]) -> str | None:
    """Identical image bytes in more than one split: the test score would reward memorising."""
    splits: dict[bytes, set[str]] = defaultdict(set)
    for name, idx in parts.items():
        for i in idx:
            for digest in digests[i]:
                splits[digest].add(name)
    shared = {d: sorted(s) for d, s in splits.items() if len(s) > 1 and d}
    if not shared:
        return None
    names = defaultdict(list)
    for path, info in images.items():
        if isinstance(info, ImageInfo) and info.digest in shared:
            names[info.digest].append(path)
    examples = "; ".join(f"{', '.join(sorted(names[d]))} in {' and '.join(s)}" for d, s in list(shared.items())[:3])
    return (f"{len(shared):,} image(s) appear in more than one split (identical bytes), so test results may be "
            f"optimistic: {examples}{'; ...' if len(shared) > 3 else ''}")

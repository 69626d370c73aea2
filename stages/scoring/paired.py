"""Two models on the same items: the difference of their means, its 95 % paired-bootstrap interval (BCa, seeded,
so the same predictions give the same figures) and a paired test (McNemar exact for right/wrong, Wilcoxon
signed-rank for absolute errors)."""
from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

RESAMPLES = 9999


def mean_interval(d: np.ndarray) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of per-item values `d` (scores, or two models' differences); a point when
    every value is equal."""
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # BCa warns on nearly constant data; it is then replaced below
        ci = stats.bootstrap((d,), np.mean, n_resamples=RESAMPLES, method="BCa", random_state=0).confidence_interval
        if not np.isfinite([ci.low, ci.high]).all():
            ci = stats.bootstrap((d,), np.mean, n_resamples=RESAMPLES, method="percentile",
                                 random_state=0).confidence_interval
    return float(ci.low), float(ci.high)


def row(base: float | None, tuned: float | None, d: np.ndarray | None, p: float | None) -> dict:
    lo, hi = mean_interval(d) if d is not None and len(d) else (None, None)
    r4 = lambda x: None if x is None else round(float(x), 4)   # noqa: E731
    return {"base": r4(base), "finetuned": r4(tuned), "diff": r4(None if base is None or tuned is None else tuned - base),
            "ci95_lower": r4(lo), "ci95_upper": r4(hi), "p_value": None if p is None else float(f"{p:.3g}")}


def paired_binary(base: list[bool], tuned: list[bool]) -> tuple[dict, dict]:
    """Two models' right/wrong on the same items -> the comparison row and what the test saw."""
    b, t = np.asarray(base, bool), np.asarray(tuned, bool)
    table = [[int(np.sum(b & t)), int(np.sum(b & ~t))], [int(np.sum(~b & t)), int(np.sum(~b & ~t))]]
    p = mcnemar(table, exact=True).pvalue
    info = {"test": "McNemar exact", "n": len(b), "only_base": table[0][1], "only_finetuned": table[1][0]}
    return row(b.mean(), t.mean(), t.astype(float) - b.astype(float), p), info


def paired_errors(base: list[float | None], tuned: list[float | None]) -> tuple[dict, dict]:
    """Two models' absolute errors on the same items, over the items where both answered with a number. Where no
    item has both (a base model that answers no number), each model's own mean is given, with no difference."""
    both = [(b, t) for b, t in zip(base, tuned) if b is not None and t is not None]
    info = {"test": "Wilcoxon signed-rank", "n": len(both)}
    if not both:
        own = [[x for x in xs if x is not None] for xs in (base, tuned)]
        return row(*(float(np.mean(x)) if x else None for x in own), None, None), info
    b, t = (np.array(x, float) for x in zip(*both))
    p = 1.0 if np.all(t == b) else stats.wilcoxon(t, b).pvalue
    return row(b.mean(), t.mean(), t - b, p), info

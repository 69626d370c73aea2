"""Stage `compare`: base against fine-tuned on the same test items, with the difference's 95 % interval and a
paired test.

  metrics/compare/<measure>.json   base, finetuned, diff, ci95_lower, ci95_upper, p_value: one row each of
                                   `dvc metrics show` (parse_rate, exact_match, each field's main score, and the
                                   mean absolute error of each numeric field)
  metrics/compare.md               the same as a table, with the test and the number of items behind each row

Right/wrong measures are paired per item and tested with McNemar's exact test (only the items on which the two
models disagree carry information); a numeric field's absolute errors, on the items both models answered with a
number, with the Wilcoxon signed-rank test. The interval is a paired bootstrap (BCa) of the mean per-item
difference, seeded, so the same predictions give the same figures.
"""
from __future__ import annotations

import logging
import re
import warnings

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from stages.common import ROOT, atomic_dir, read_jsonl, setup_logging, stage_params, write_atomic, write_json
from stages.metrics import abs_errors, outcomes, parse_answer, references, resolve_fields

log = logging.getLogger("compare")
RESAMPLES = 9999


def diff_interval(d: np.ndarray) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of per-item differences `d`; a point when every difference is equal."""
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
    lo, hi = diff_interval(d) if d is not None and len(d) else (None, None)
    r4 = lambda x: None if x is None else round(float(x), 4)   # noqa: E731
    return {"base": r4(base), "finetuned": r4(tuned), "diff": r4(None if base is None else tuned - base),
            "ci95_lower": r4(lo), "ci95_upper": r4(hi), "p_value": None if p is None else float(f"{p:.3g}")}


def paired_binary(base: list[bool], tuned: list[bool]) -> tuple[dict, dict]:
    """Two models' right/wrong on the same items -> the comparison row and what the test saw."""
    b, t = np.asarray(base, bool), np.asarray(tuned, bool)
    table = [[int(np.sum(b & t)), int(np.sum(b & ~t))], [int(np.sum(~b & t)), int(np.sum(~b & ~t))]]
    p = mcnemar(table, exact=True).pvalue
    info = {"test": "McNemar exact", "n": len(b), "only_base": table[0][1], "only_finetuned": table[1][0]}
    return row(b.mean(), t.mean(), t.astype(float) - b.astype(float), p), info


def paired_errors(base: list[float | None], tuned: list[float | None]) -> tuple[dict, dict]:
    """Two models' absolute errors on the same items, over the items where both answered with a number."""
    both = [(b, t) for b, t in zip(base, tuned) if b is not None and t is not None]
    info = {"test": "Wilcoxon signed-rank", "n": len(both)}
    if not both:
        return row(None, None, None, None), info
    b, t = (np.array(x, float) for x in zip(*both))
    p = 1.0 if np.all(t == b) else stats.wilcoxon(t, b).pvalue
    return row(b.mean(), t.mean(), t - b, p), info


def compare(refs: list[dict], base: list[dict | None], tuned: list[dict | None], specs: dict) -> dict[str, tuple]:
    """measure -> (row, test info), for the parsed answers of both models against the same references."""
    ob, ot = outcomes(list(zip(refs, base)), specs), outcomes(list(zip(refs, tuned)), specs)
    out = {name: paired_binary(ob[name], ot[name]) for name in ob}
    for f in (f for f, s in specs.items() if s["type"] == "numeric"):
        out[f"{f}_mae"] = paired_errors(abs_errors(list(zip(refs, base)), f), abs_errors(list(zip(refs, tuned)), f))
    return out


def file_stem(name: str) -> str:
    """A measure's file name: field names are user data, so no path separators or leading dots."""
    return re.sub(r"[^\w.-]", "_", name).lstrip(".") or "_"


def markdown(result: dict[str, tuple]) -> str:
    fmt = lambda x, spec="{:.1%}": "-" if x is None else spec.format(x)   # noqa: E731
    lines = ["# Base against fine-tuned, on the same test items", "",
             "`_mae` rows are mean absolute errors (lower is better) over the items both models answered with a "
             "number; the other rows are shares of items right. The interval is the difference's (paired bootstrap).",
             "", "| measure | base | fine-tuned | difference | 95 % interval | p | test | items |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (r, info) in result.items():
        spec = "{:.3f}" if name.endswith("_mae") else "{:.1%}"
        signed = "{:+.3f}" if name.endswith("_mae") else "{:+.1%}"
        interval = "-" if r["ci95_lower"] is None else f"{fmt(r['ci95_lower'], signed)} .. {fmt(r['ci95_upper'], signed)}"
        lines.append(f"| {name} | {fmt(r['base'], spec)} | {fmt(r['finetuned'], spec)} | {fmt(r['diff'], signed)} "
                     f"| {interval} | {fmt(r['p_value'], '{:.3g}')} | {info['test']} | {info['n']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    setup_logging()
    p = stage_params("compare")["score"]
    test_rows = read_jsonl(ROOT / "data" / "dataset" / "test.jsonl")
    preds = {w: read_jsonl(ROOT / "data" / "predictions" / f"{w}.jsonl") for w in ("base", "finetuned")}
    refs = references(preds["finetuned"], test_rows)
    references(preds["base"], test_rows)
    specs = resolve_fields(refs, p["fields"], p["tolerance"], p["max_classes"])
    parsed = {w: [parse_answer(r["response"] or "")[0] for r in rows] for w, rows in preds.items()}
    result = compare(refs, parsed["base"], parsed["finetuned"], specs)

    with atomic_dir(ROOT / "metrics" / "compare") as tmp:
        for name, (r, _) in result.items():
            write_json(tmp / f"{file_stem(name)}.json", r)
    write_atomic(ROOT / "metrics" / "compare.md", markdown(result))
    for name, (r, info) in result.items():
        log.info("%-22s base %s  fine-tuned %s  diff %s [%s, %s]  p %s (%s, %s items)", name, r["base"],
                 r["finetuned"], r["diff"], r["ci95_lower"], r["ci95_upper"], r["p_value"], info["test"], info["n"])


if __name__ == "__main__":
    main()

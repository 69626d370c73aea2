"""Command (not a DVC stage): seed noise. Experiments grouped by their params other than `seed`; per configuration and
measure the mean and spread over seeds, and whether two configurations differ by more than that spread.

    dvc exp run --queue -S seed=1,2,3 -S lora.rank=8,32 && dvc queue start      # each configuration on 3 seeds
    python -m stages.commands.seeds

`seed` drives everything random in the pipeline (the synthetic data, the split, the builtin model, LoRA's start and
the batch order), so each seed is an independent replicate, tested on its own items: configurations are compared
unpaired, by Welch's t-test on the per-seed values of the fine-tuned model's headline measures
(metrics/headline.json). The smallest difference N seeds per configuration tell apart (two-sided 5 %, power 80 %) is
about 2.8 * sd * sqrt(2 / N), sd the spread within a configuration. Experiments on one seed: compare them item by item
with python -m stages.commands.ab, which has far more power.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
from statistics import mean, stdev

from scipy.stats import ttest_ind

from stages.common import ROOT
from stages.params.tree import flatten

POWER_FACTOR = 2.8   # z(0.975) + z(0.80) = 1.96 + 0.84: the difference detected 80 % of the time at the 5 % level


def runs(show: list[dict]) -> list[dict]:
    """Every finished experiment and baseline commit of `dvc exp show --json` as {params, metrics}; the workspace
    is left out (it repeats the last experiment run in it)."""
    found = []
    revs = [r for row in show for r in ([row] + [e["revs"][0] for e in row.get("experiments") or []])]
    for rev in revs:
        data = rev.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
        metrics = ((data.get("metrics") or {}).get("metrics/headline.json") or {}).get("data")
        if rev.get("rev") != "workspace" and not rev.get("error") and params and metrics:
            found.append({"name": rev.get("name") or rev.get("rev", "")[:7], "params": flatten(params),
                          "metrics": {k: v for k, v in metrics.items() if k != "base"}})   # the fine-tuned model's
    return found


def configurations(found: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their params other than `seed`, each group named by the params that differ between groups
    (`lora.rank=32`); one seed per group (the same seed twice is the same run)."""
    keys = lambda r: tuple(sorted((k, json.dumps(v)) for k, v in r["params"].items() if k != "seed"))  # noqa: E731
    groups: dict[tuple, dict] = {}
    for r in found:
        groups.setdefault(keys(r), {}).setdefault(r["params"].get("seed"), r)
    varying = sorted({k for g in groups for k, v in g if any(dict(h).get(k) != v for h in groups)})
    named = {}
    for g, by_seed in groups.items():
        name = ", ".join(f"{k}={json.loads(dict(g)[k]) if k in dict(g) else '-'}" for k in varying) or "the default"
        named[name] = list(by_seed.values())
    return named


def spread(values: list[float]) -> dict:
    sd = stdev(values) if len(values) > 1 else None
    return {"n": len(values), "mean": mean(values), "sd": sd, "min": min(values), "max": max(values)}


def summary(named: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """configuration -> measure -> n, mean, sd, min, max over its seeds."""
    out = {}
    for name, group in named.items():
        measures = [m for m in group[0]["metrics"] if all(isinstance(r["metrics"].get(m), (int, float)) for r in group)]
        out[name] = {m: spread([r["metrics"][m] for r in group]) for m in measures}
    return out


def welch(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of Welch's t-test; None with fewer than 2 seeds a side, or no spread at all."""
    if len(a) < 2 or len(b) < 2 or (stdev(a) == 0 and stdev(b) == 0):
        return None
    return float(ttest_ind(b, a, equal_var=False).pvalue)


def report(named: dict[str, list[dict]]) -> str:
    """Per configuration, a row per measure: mean, spread and range over its seeds (%), the smallest difference its
    number of seeds tells apart, and against the first configuration the difference of means and Welch's p."""
    stats = summary(named)
    first = next(iter(named))
    pct = lambda x: "-" if x is None else f"{100 * x:.2f}"   # noqa: E731
    lines = []
    for name, per in stats.items():
        seeds = ", ".join(str(r["params"].get("seed")) for r in named[name])
        lines += ["", f"{name}: {len(named[name])} seed(s) ({seeds})"]
        rows = [("measure", "mean %", "sd", "min .. max", "tells apart", f"vs {first}", "Welch p")]
        for m, st in per.items():
            detect = None if st["sd"] is None else POWER_FACTOR * st["sd"] * math.sqrt(2 / st["n"])
            diff = p = None
            if name != first and m in stats[first]:
                a, b = ([r["metrics"][m] for r in named[c]] for c in (first, name))
                diff, p = mean(b) - mean(a), welch(a, b)
            rows.append((m, pct(st["mean"]), pct(st["sd"]), f"{pct(st['min'])} .. {pct(st['max'])}", pct(detect),
                         "-" if diff is None else f"{100 * diff:+.2f}",
                         "-" if p is None else f"{p:.3g}" + (" *" if p < 0.05 else "")))
        rows = [r[:5] for r in rows] if name == first else rows
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  .rstrip() for r in rows]
    return "\n".join(lines[1:] + ["", "sd: the spread over seeds, in points. tells apart: the smallest difference of "
                                   "means that this many seeds", "detect (5 % level, power 80 %). * Welch p < 0.05."])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.commands.seeds", description=__doc__.split("\n\n")[0])
    ap.parse_args(argv)
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode:
        raise SystemExit(f"dvc exp show failed: {shown.stderr.strip()[-2000:]}")
    found = runs(json.loads(shown.stdout))
    if not found:
        raise SystemExit("no finished experiment with metrics/headline.json: run some first, e.g. "
                         "dvc exp run --queue -S seed=1,2,3 && dvc queue start")
    print(report(configurations(found)))


if __name__ == "__main__":
    main()

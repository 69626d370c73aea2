"""The embedded default's recipe through ms-swift itself, several fine-tunes at once on one GPU.

A recipe search through the pipeline's own training command (bench/FINDINGS.md, runs 19-21): for each seed, the
`model`, `generate` and `build` stages in a scratch copy of the repository (`<work>/seed<N>`), then for each
variant the train stage's `swift sft` command (`stages.train.sft_argv`) with the variant's params, and scores the
checkpoint the train stage would export (the best eval loss) on the seed's test split with the pipeline's own
`infer finetuned` and `score finetuned` stages (greedy `swift infer`, the metrics `dvc repro` reports; runs up to 19
scored the direction token and the distance's first digit teacher-forced instead).

    python -m bench.swift_sweep --seeds 42 1 2 --parallel 9 --out rows.jsonl \\
        --variants '{"default": {}, "b4": {"train.per_device_train_batch_size": 4, "train.eval_steps": 600}}'

A variant maps dotted params.yaml keys to values; `swift.<flag>` keys are passed to `swift sft` as they are (for
flags the pipeline does not expose, e.g. `swift.adam_beta2`). ms-swift trains a float32 model in fp16 autocast on a
GPU; `--fp32` (the default) turns that off so the numbers match the CPU's float32.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml

from stages.common import ROOT, load_params, read_jsonl
from stages.params.tree import set_dotted


def variant_params(base: dict, variant: dict) -> tuple[dict, list[str]]:
    """params.yaml with the variant's keys set, and the extra `swift sft` flags of its `swift.` keys."""
    params, extra = json.loads(json.dumps(base)), []
    for key, value in variant.items():
        if key.startswith("swift."):
            extra += [f"--{key[len('swift.'):]}", str(value).lower() if isinstance(value, bool) else str(value)]
        else:
            set_dotted(params, key, value, strict=True)
    return params, extra


def copy_code(dst: Path, params: dict) -> None:
    """What the stages need to run in `dst` as their ROOT: their code, dvc.yaml (declared params) and params."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "stages", dst / "stages", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", dst / "dvc.yaml")
    (dst / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


def prepare(work: Path, seed: int, overrides: dict, threads: int) -> Path:
    """The seed's base model and dataset, made by the pipeline's own stages (params.yaml with `overrides`), on
    `threads` CPU threads (several seeds at once on torch's default thread count oversubscribe the cores)."""
    d = work / f"seed{seed}"
    if not (d / "data/dataset/test.jsonl").is_file():
        params, _ = variant_params(load_params(), {**overrides, "seed": seed})
        copy_code(d, params)
        for stage in ("model", "generate", "build"):
            t0 = time.perf_counter()
            with open(d / f"{stage}.log", "w") as log:
                subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=d, check=True, stdout=log, stderr=log,
                               env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            print(f"seed {seed}: {stage} stage {time.perf_counter() - t0:.0f} s", flush=True)
    return d


def fine_tune(base: Path, name: str, variant: dict, fp32: bool, threads: int, reuse: bool) -> dict:
    """One variant on one seed's data: `swift sft` as the train stage calls it, then the infer and score stages.
    `reuse`: score the finished fine-tune already in the variant's directory instead of running it again."""
    from stages.train import curves, launch_env, sft_argv

    params, extra = variant_params(load_params(base / "params.yaml"), variant)
    d = base.parent / f"{name}-{base.name}"
    row = {"variant": name, "seed": params["seed"], "params": variant}
    if not (reuse and "last_model_checkpoint" in last_log(d)):
        shutil.rmtree(d, ignore_errors=True)
        copy_code(d, params)
        (d / "models").mkdir()
        (d / "models/base").symlink_to(base / "models/base")
        for part in ("raw", "dataset"):   # the seed's inputs are shared; predictions and metrics are the variant's
            (d / "data").mkdir(exist_ok=True)
            (d / "data" / part).symlink_to(base / "data" / part)
        argv = sft_argv(params, "models/checkpoints") + extra + (["--fp16", "false", "--bf16", "false"] if fp32 else [])
        t0 = time.perf_counter()
        with open(d / "sft.log", "w") as log:
            done = subprocess.run(argv, cwd=d, stdout=log, stderr=log,
                                  env={**os.environ, **launch_env(params), "OMP_NUM_THREADS": str(threads)})
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        if done.returncode:
            return {**row, "error": f"swift sft exited {done.returncode}, see {d / 'sft.log'}"}
    final = last_log(d)
    best = d / (final["best_model_checkpoint"] or final["last_model_checkpoint"])
    return {**row, "checkpoint": best.name, "eval_loss": [(e["step"], round(e["eval_loss"], 4))
                                                          for e in curves(final["log_history"])[1]],
            "train_runtime_s": next((h["train_runtime"] for h in final["log_history"] if "train_runtime" in h), None),
            **score(d, best, threads)}


def last_log(d: Path) -> dict:
    """ms-swift's last log line of the variant's run: once the run has finished, it names its checkpoints."""
    log = d / "models/checkpoints/logging.jsonl"
    return read_jsonl(log)[-1] if log.is_file() else {}


def score(d: Path, checkpoint: Path, threads: int) -> dict:
    """The checkpoint exported as the train stage exports it, then the pipeline's `infer finetuned` and
    `score finetuned` stages in the variant's directory: the main scores of metrics/details/finetuned.json."""
    from stages.train import export

    adapter = d / "models/adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    adapter.mkdir(parents=True)
    export(checkpoint, adapter)
    with open(d / "score.log", "w") as log:
        for stage in (["stages.infer", "finetuned"], ["stages.score", "finetuned"]):
            subprocess.run([sys.executable, "-m", *stage], cwd=d, check=True, stdout=log, stderr=log,
                           env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return headline(json.loads((d / "metrics/details/finetuned.json").read_text(encoding="utf-8")))


def headline(metrics: dict) -> dict:
    """parse rate, exact match and each field's main score (accuracy, within tolerance, normalised match)."""
    out = {k: metrics[k] for k in ("parse_rate", "exact_match")}
    for f, m in metrics["fields"].items():
        out[f] = next(m[k] for k in ("accuracy", "within_tol", "normalised") if k in m)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    ap.add_argument("--variants", type=json.loads, default={"default": {}}, help="JSON: name -> {dotted key: value}")
    ap.add_argument("--base", type=json.loads, default={}, help="JSON: params.yaml keys set for every seed's stages")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "swift_sweep")
    ap.add_argument("--parallel", type=int, default=4, help="fine-tunes at once")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of each fine-tune")
    ap.add_argument("--reuse", action="store_true", help="score fine-tunes already finished in --work again")
    ap.add_argument("--fp32", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", type=Path, required=True, help="one JSON line per fine-tune, appended")
    a = ap.parse_args(argv)
    with ThreadPoolExecutor(len(a.seeds)) as pool:
        threads = max(1, (os.cpu_count() or 2) // len(a.seeds))
        bases = list(pool.map(lambda s: prepare(a.work, s, a.base, threads), a.seeds))
    print(f"prepared seeds {a.seeds} in {a.work}", flush=True)
    jobs = [(b, name, v) for name, v in a.variants.items() for b in bases]
    with ThreadPoolExecutor(a.parallel) as pool:
        for done in as_completed([pool.submit(fine_tune, *j, a.fp32, a.threads, a.reuse) for j in jobs]):
            row = done.result()
            print(json.dumps(row), flush=True)
            with open(a.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

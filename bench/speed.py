"""Training and batch-inference speed: the plain-transformers baseline (bench/seeds_way.py) against the pipeline's stages, same model, same data.

    python -m bench.speed                 # Qwen3-VL-2B's shape on the GPU -> bench/results.json, bench/RESULTS.md
    python -m bench.speed --smoke         # the tiny shape on the CPU, a few steps (tests/test_bench.py)
    python -m bench.speed --report bench/results.json    # RESULTS.md again from saved figures

One run builds a randomly initialised model of the shape (bench/shapes.py) and synthetic microscope pairs
(stages/generate.py at 448x448), then times, with LoRA r64 on the language model's linear layers:
  seeds_train  (a) transformers Trainer + PEFT, batch 4 x accumulation 4, gradient checkpointing
  swift_slow   the train stage's `swift sft` with (a)'s batch, accumulation and checkpointing
  swift_gpu    (b) the train stage's `swift sft` with params-gpu.yaml, the GPU profile
  seeds_infer  (c) a one-sample `generate` loop
  hf_batch_infer  (c)'s code batched: how the time splits between the processor (CPU) and generate (GPU)
  swift_infer  (d) the infer stage's `swift infer`, batched
  profile_infer  (d) over two batches, a torch profiler on the second one's generate
and any --variants (the GPU profile with some keys changed).
Rates exclude warm-up: training from the step times after the first `warmup` steps (bench/time_train.py clocks
`swift sft`'s steps), inference from the batch times after the first batch (bench/time_infer.py clocks `swift
infer`'s batches). The training rows are the `samples` pairs repeated to `train_rows`, so that the timed window lies
in one epoch: each new epoch's first batch waits for a dataloader worker to build it (2-3 s at batch 32, run 13),
which a dataset of 640 rows would pay every 20 steps and a user's dataset once per epoch.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import shapes
from stages.common import PARAMS_FILE, ROOT, load_params, read_jsonl, write_jsonl
from stages.params.load import read_yaml
from stages.infer import infer_argv, plugin_argv
from stages.params.tree import flatten, merge
from stages.train import launch_env, sft_argv

PARTS = ("swift_gpu", "seeds_train", "swift_infer", "swift_infer_serial", "seeds_infer", "swift_slow", "hf_batch_infer")
FULL = dict(shape="2b", image_size=448, samples=640, train_rows=12800, warmup=3, seeds_steps=8, slow_steps=8,
            gpu_steps=200, seeds_infer=16, infer_batches=4, serial_batches=2, new_tokens=32, embed_std=0.02,
            seeds_dropout=0.05)
SMOKE = dict(shape="tiny", image_size=64, samples=24, train_rows=24, warmup=1, seeds_steps=3, slow_steps=3,
             gpu_steps=3, seeds_infer=3, infer_batches=3, serial_batches=3, new_tokens=8, batch=4, infer_batch=4,
             embed_std=0.02, seeds_dropout=0.05, seeds_batch=(2, 2))


def steady_rate(times: list[float], per_step: float, warmup: int) -> float:
    """Items per second after the first `warmup` steps, from the wall-clock time at each step's end."""
    if len(times) <= warmup:
        raise ValueError(f"{len(times)} step(s) timed; need more than the {warmup} warm-up step(s)")
    return per_step * (len(times) - warmup) / (times[-1] - times[warmup - 1])


def median_rate(times: list[float], per_step: float, warmup: int) -> float:
    """Items per second at the median step after warm-up: the steady state of a long run. A short window also
    holds one-time stalls (such as a new epoch's dataloader workers, or kernels compiled for a new sequence
    length) that a long run pays once; `steady_rate` keeps them, this leaves them out."""
    steps = [b - a for a, b in zip(times[warmup - 1:], times[warmup:])]
    if not steps:
        raise ValueError(f"{len(times)} step(s) timed; need more than the {warmup} warm-up step(s)")
    return per_step / statistics.median(steps)


def train_rates(times: list[float], per_step: float, warmup: int) -> dict:
    """A training part's figures from the wall-clock time at each step's end: the window's mean, the median
    step, and every step's duration."""
    return {"samples_per_s": steady_rate(times, per_step, warmup),
            "median_samples_per_s": median_rate(times, per_step, warmup),
            "step_s": [round(b - a, 3) for a, b in zip(times, times[1:])]}


def batch_rate(times: list[float], sizes: list[int]) -> float:
    """Samples per second after the first batch. Batches differ in size: `swift infer` cuts the dataset into
    chunks of --write_batch_size (1000) before batching, so 1024 samples at batch 512 run as 512+488+24."""
    if len(times) < 2:
        raise ValueError(f"{len(times)} batch(es) timed; need at least 2")
    return sum(sizes[1:]) / (times[-1] - times[0])


def swift_usage(log: str) -> dict | None:
    """The usage line `swift infer` logs at the end: {'num_prompt_tokens': .., 'num_generated_tokens': ..,
    'num_samples': .., 'runtime': .., 'samples/s': .., 'tokens/s': ..}."""
    found = re.findall(r"\{'num_prompt_tokens'.*?\}", log)
    return ast.literal_eval(found[-1]) if found else None


def bench_params(profile: dict, cfg: dict, slow: bool) -> dict:
    """params.yaml + the GPU profile + what the benchmark fixes (LoRA r64 on the language model, constant lr,
    a log row per step); `slow` keeps the profile but with the baseline's batch 4, accumulation, checkpointing."""
    p = merge(load_params(PARAMS_FILE), profile)
    patches = shapes.patches(cfg["image_size"])
    t = p["train"]
    if "batch" in cfg:
        t["per_device_train_batch_size"], t["gradient_accumulation_steps"] = cfg["batch"], 1
    global_batch = t["per_device_train_batch_size"] * t["gradient_accumulation_steps"]
    fixed = {"model": {"image_max_token_num": patches // (shapes.MERGE ** 2)},
             "lora": {"rank": 64, "alpha": 128, "target_modules": ["all-linear"]},
             "train": {"tuner_type": "lora", "freeze_vit": True, "freeze_aligner": True, "learning_rate": 1e-4,
                       "warmup_ratio": 0.0, "lr_scheduler_type": "constant", "resume": False, "quant_bits": 0}}
    if slow or cfg["shape"] == "tiny":   # a loss row per step for the loss curves; a timed run logs as the stage does
        fixed["train"]["logging_steps"] = 1
    if cfg["shape"] == "tiny":   # a CPU: no bf16, no Triton kernels
        fixed["train"].update(torch_dtype="float32", use_liger_kernel=False, dataloader_num_workers=0)
    if slow:
        micro = min(4, global_batch)
        fixed["train"].update(per_device_train_batch_size=micro, gradient_accumulation_steps=global_batch // micro,
                              gradient_checkpointing=True, use_liger_kernel=False, dataloader_num_workers=0)
    p = merge(p, fixed)
    p["infer"]["max_new_tokens"] = cfg["new_tokens"]
    if "infer_batch" in cfg:
        p["infer"]["max_batch_size"] = cfg["infer_batch"]
    return p


def prepare(work: Path, cfg: dict, seed: int) -> dict:
    """models/base and data/dataset/*.jsonl inside `work`, laid out like the repository (the stages' argv
    builders use repository-relative paths); kept between runs of the same shape."""
    import torch

    from stages.generate import generate
    from stages.dataset.records import swift_row
    from stages.tiny_model.build import build_tiny_qwen3_vl

    base, raw, dataset = work / "models/base", work / "data/raw", work / "data/dataset"
    stamp = json.dumps({**cfg, "seed": seed}, sort_keys=True)
    if (work / "prepared.json").is_file() and (work / "prepared.json").read_text() == stamp:
        return json.loads(stamp)
    for d in (base, raw, dataset):
        shutil.rmtree(d, ignore_errors=True)
    base.mkdir(parents=True)
    gpu = torch.cuda.is_available()
    build_tiny_qwen3_vl(base, seed, **shapes.SHAPES[cfg["shape"]], embed_std=cfg["embed_std"],
                        dtype="bfloat16" if gpu else "float32", device="cuda" if gpu else "cpu")
    params = load_params(PARAMS_FILE)
    synth = {**params["synth"], "num_samples": cfg["samples"], "image_size": cfg["image_size"]}
    rows = generate(raw, synth, seed)
    jsonl = [swift_row(r["id"], [f"data/raw/{r['image_1']}", f"data/raw/{r['image_2']}"], params["data"]["prompt"],
                       json.dumps({k: r[k] for k in ("analysis", "direction", "distance")}, ensure_ascii=False), "")
             for r in rows]
    dataset.mkdir(parents=True)
    write_jsonl(dataset / "train.jsonl", repeated(jsonl, cfg["train_rows"]))
    write_jsonl(dataset / "val.jsonl", jsonl[:8])
    (work / "prepared.json").write_text(stamp)
    return json.loads(stamp)


def repeated(rows: list, n: int) -> list:
    """`rows` over and over, cut to `n` (at least `rows` once)."""
    return (rows * -(-n // len(rows)))[:max(n, len(rows))]


def token_counts(work: Path) -> dict:
    """Tokens of one training sample (prompt + answer) and of its prompt, as the model's processor counts."""
    from PIL import Image
    from transformers import AutoProcessor

    from bench.seeds_way import hf_messages

    processor = AutoProcessor.from_pretrained(work / "models/base")
    row = read_jsonl(work / "data/dataset/train.jsonl")[0]
    images = [Image.open(work / p).convert("RGB") for p in row["images"]]

    def n(messages, gen):
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        return int(processor(text=[text], images=images, return_tensors="pt")["input_ids"].shape[1])
    return {"train": n(hf_messages(row), False), "prompt": n(hf_messages(row, with_answer=False), True)}


def matmul_tflops() -> float | None:
    """This card's bf16 matrix-product rate (8192^3, mean of 20 after warm-up): the MFU denominator."""
    import torch

    if not torch.cuda.is_available():
        return None
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    return round(20 * 2 * 8192 ** 3 / (time.perf_counter() - start) / 1e12, 1)


def release_gpu() -> None:
    """Give back what building the model and the matmul left in this process's CUDA cache (about 10 GiB at the
    2B shape), so that the measured runs, which are child processes, have the whole card."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_repo() -> dict[str, str]:
    """PYTHONPATH for `python -m bench.seeds_way` run from the workspace, keeping what is set (carried wheels)."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def timed(argv: list[str], env: dict, cwd: Path, log_path: Path) -> float:
    """Run a command with its output in `log_path`; its wall time in seconds."""
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        done = subprocess.run(argv, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(argv[:3])} failed with exit code {done.returncode}; {log_path}:\n{tail}")
    return time.perf_counter() - start


def seeds_train(work: Path, cfg: dict, p: dict, logs: Path) -> dict:
    out = logs / "seeds_train.json"
    batch, accum = cfg.get("seeds_batch", (4, 4))
    wall = timed([sys.executable, "-m", "bench.seeds_way", "train", "--model", "models/base",
                  "--data", "data/dataset/train.jsonl", "--steps", str(cfg["seeds_steps"]), "--batch", str(batch),
                  "--accum", str(accum), "--rank", "64", "--lr", "1e-4", "--dropout", str(cfg["seeds_dropout"]),
                  "--out", str(out),
                  "--work", str(work / "out/seeds")], with_repo(), work, logs / "seeds_train.log")
    r = json.loads(out.read_text())
    return {**train_rates(r["steps"], r["global_batch"], cfg["warmup"]), "peak_gib": r["peak_gib"], "wall_s": wall,
            "losses": r["losses"], "global_batch": r["global_batch"]}


def timed_sft_argv(p: dict, name: str, steps: int) -> list[str]:
    """The train stage's `swift sft` command line, cut to `steps` steps with no eval and no checkpoint."""
    return sft_argv(p, f"out/{name}") + ["--max_steps", str(steps), "--eval_strategy", "no", "--save_strategy", "no"]


def swift_train(work: Path, cfg: dict, p: dict, logs: Path, name: str, steps: int) -> dict:
    """The train stage's `swift sft` cut to `steps` steps, run through bench/time_train.py for per-step times."""
    argv = timed_sft_argv(p, name, steps)
    shutil.rmtree(work / "out" / name, ignore_errors=True)
    clock = logs / f"{name}_times.json"
    wall = timed([sys.executable, "-m", "bench.time_train", str(clock), "--warmup", str(cfg["warmup"]), "--",
                  *argv[2:]],
                 {**launch_env(p), **with_repo()}, work, logs / f"{name}.log")
    rows = read_jsonl(work / "out" / name / "logging.jsonl")
    t = p["train"]
    global_batch = t["per_device_train_batch_size"] * t["gradient_accumulation_steps"]
    return {**train_rates(json.loads(clock.read_text())["times"], global_batch, cfg["warmup"]),
            "peak_gib": max((r["memory(GiB)"] for r in rows if "memory(GiB)" in r), default=None), "wall_s": wall,
            "losses": [{"step": int(r["global_step/max_steps"].split("/")[0]), "loss": r["loss"]}
                       for r in rows if "loss" in r],
            "global_batch": global_batch, "argv": argv[1:]}


def hf_infer(work: Path, cfg: dict, logs: Path, name: str, batch: int, samples: int, warmup: int,
             cache: str = "") -> dict:
    """bench/seeds_way.py's transformers `generate`: batch 1 is (c), the baseline's loop; a larger batch shows where
    the time goes (processor on the CPU vs generate on the GPU). `warmup` calls are left out."""
    out = logs / f"{name}.json"
    wall = timed([sys.executable, "-m", "bench.seeds_way", "infer", "--model", "models/base",
                  "--data", "data/dataset/train.jsonl", "--samples", str(samples), "--batch", str(batch),
                  "--max_new_tokens", str(cfg["new_tokens"]), "--warmup", str(warmup), "--cache", cache,
                  "--out", str(out)], with_repo(), work, logs / f"{name}.log")
    r = json.loads(out.read_text())
    split = {"processor_s": r["processor_s"], "generate_s": r["generate_s"]} if batch > 1 else {}
    return {"samples_per_s": steady_rate(r["times"], batch, warmup), "peak_gib": r["peak_gib"], "wall_s": wall,
            "new_tokens": statistics.mean(r["new_tokens"][warmup * batch:]), **split}


def without(argv: list[str], part: list[str]) -> list[str]:
    """`argv` with the contiguous run `part` taken out (the infer stage's speed plugins: ms-swift's own path)."""
    for i in range(len(argv) - len(part) + 1):
        if part and argv[i:i + len(part)] == part:
            return argv[:i] + argv[i + len(part):]
    return argv


def differing(work: Path, a: str, b: str) -> dict:
    """How many of two infer parts' answers differ, row by row (same samples, same order; the first rows of the
    longer one)."""
    x, y = (read_jsonl(work / "out" / f"{n}.jsonl") for n in (a, b))
    return {"rows": min(len(x), len(y)), "differing": sum(r["response"] != q["response"] for r, q in zip(x, y))}


def swift_infer(work: Path, cfg: dict, p: dict, logs: Path, name: str, plugins: bool = True,
                profile: bool = False) -> dict:
    """The infer stage's `swift infer` command line on `infer_batches` batches of the training rows (speed does
    not depend on whether a sample was trained on), run through bench/time_infer.py for per-batch times;
    `plugins=False`: without the stage's speed plugins (stages/speed/), as ms-swift runs alone, on
    `serial_batches` batches in one engine call (--write_batch_size 0, as with the plugins); `profile`: two
    batches, the second one's generate under torch's profiler (logs/NAME.txt, also in the result)."""
    rows, batch = read_jsonl(work / "data/dataset/train.jsonl"), p["infer"]["max_batch_size"]
    batches = 2 if profile else cfg["infer_batches"] if plugins else cfg["serial_batches"]
    n = batch * batches
    write_jsonl(work / f"data/dataset/test_{n}.jsonl", (rows * n)[:n])
    result, clock = work / "out" / f"{name}.jsonl", logs / f"{name}_times.json"
    result.unlink(missing_ok=True)   # swift infer appends
    argv = infer_argv(p, "base", str(result.relative_to(work)), dataset=f"data/dataset/test_{n}.jsonl")
    argv = argv if plugins else without(argv, plugin_argv(p)) + ["--write_batch_size", "0"]
    report = logs / f"{name}.txt"
    wall = timed([sys.executable, "-m", "bench.time_infer", str(clock),
                  *(["--profile", str(report)] if profile else []), "--", *argv[2:]],
                 {**launch_env(p), **with_repo()}, work, logs / f"{name}.log")
    if (written := len(read_jsonl(result))) != n:
        raise SystemExit(f"swift infer wrote {written} rows for {n} samples")
    clocked = json.loads(clock.read_text())
    usage = swift_usage((logs / f"{name}.log").read_text(encoding="utf-8", errors="replace"))
    # seconds per batch in each phase, the first (warm-up) batch left out
    phases = {k: statistics.mean(v[1:]) for k, v in clocked.get("phases", {}).items() if len(v) > 1}
    return {"samples_per_s": batch_rate(clocked["times"], clocked["sizes"]), "wall_s": wall, "phases_s": phases,
            "new_tokens": usage["num_generated_tokens"] / usage["num_samples"] if usage else None,
            "argv": argv[1:], "peak_gib": None,
            **({"report": report.read_text(encoding="utf-8")[:30000]} if profile else {})}


def profile_train(work: Path, p: dict, logs: Path) -> dict:
    """bench/profile_train.py over the GPU profile's `swift sft`: top operators -> logs/profile_train.txt."""
    from bench.profile_train import STEPS, WARMUP

    argv = timed_sft_argv(p, "profile", WARMUP + STEPS + 1)
    wall = timed([sys.executable, "-m", "bench.profile_train", str(logs / "profile_train.txt"), "--", *argv[2:]],
                 {**launch_env(p), **with_repo()}, work, logs / "profile_train.log")
    return {"wall_s": wall, "report": (logs / "profile_train.txt").read_text(encoding="utf-8")[:20000]}


def versions() -> dict:
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available()
           else f"none (CPU, {platform.processor() or platform.machine()})"}
    for name in ("torch", "transformers", "peft", "ms-swift", "liger-kernel", "accelerate"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def flops_figures(results: dict) -> None:
    """Tokens/s and MFU for every part, from the shape's FLOP count (bench/shapes.py) and the tokens measured."""
    s, cfg, tok = shapes.SHAPES[results["config"]["shape"]], results["config"], results["tokens"]
    patches, peak = shapes.patches(cfg["image_size"]), results["matmul_tflops"]
    for r in results["parts"].values():
        if r["kind"] == "profile":
            continue
        if r["kind"] == "infer" and r["new_tokens"] is None:   # swift infer does not report them
            r["new_tokens"] = next((q["new_tokens"] for q in results["parts"].values()
                                    if q["kind"] == "infer" and q["new_tokens"] is not None), cfg["new_tokens"])
        if r["kind"] == "train":
            flop = shapes.train_flops(s, tok["train"], patches, 2)
            r["tokens_per_s"] = r["samples_per_s"] * tok["train"]
        else:
            flop = shapes.infer_flops(s, tok["prompt"], r["new_tokens"], patches, 2)
            r["tokens_per_s"] = r["samples_per_s"] * r["new_tokens"]
        r["tflop_per_sample"] = flop / 1e12
        r["mfu"] = r["samples_per_s"] * flop / (peak * 1e12) if peak else None


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def report(results: dict) -> str:
    """bench/RESULTS.md: the table, the loss curves side by side, and how the figures were taken."""
    v, cfg, tok, parts = results["versions"], results["config"], results["tokens"], results["parts"]
    lines = [f"# Speed: {v['gpu']}, Qwen3-VL `{cfg['shape']}` shape", "",
             f"`{results['command']}` on {results['date']}; python {v['python']}, torch {v['torch']}, transformers "
             f"{v['transformers']}, peft {v['peft']}, ms-swift {v['ms-swift']}, liger-kernel {v['liger-kernel']}.",
             "",
             f"Random-init model of the shape, {cfg['image_size']}x{cfg['image_size']} synthetic microscope pairs "
             f"(2 images, {tok['train']} tokens per training sample, {tok['prompt']} in an inference prompt), "
             f"LoRA r64 on the language model's linear layers, {results['dtype']}, sdpa attention, up to "
             f"{cfg['new_tokens']} new tokens, greedy. Training rows: the {cfg['samples']} pairs repeated to "
             f"{cfg.get('train_rows', cfg['samples'])}, so that the timed window lies in one epoch. Warm-up excluded "
             f"(training: the first {cfg['warmup']} "
             f"optimizer steps; inference: the first sample or batch of {cfg['infer_batches']}). "
             "MFU = samples/s x model FLOPs per sample / the "
             f"card's measured bf16 matrix-product rate ({fmt(results['matmul_tflops'], '.0f')} TFLOP/s, 8192^3); "
             "FLOPs per sample from bench/shapes.py (training: language model forward + input-gradient backward, "
             "frozen ViT forward; inference: ViT + prompt forward + one forward per new token).", "",
             "| what | samples/s | tokens/s | peak GPU memory (GiB, reserved) | TFLOP/sample | MFU "
             "| whole command (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in parts.values():
        if r["kind"] == "profile":
            continue
        lines.append(f"| {r['label']} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
                     f"{fmt(r['peak_gib'], '.1f')} | {r['tflop_per_sample']:.2f} | {fmt(r['mfu'], '.1%')} | "
                     f"{r['wall_s']:.0f} |")
    lines += ["", "Tokens/s: training, all tokens of a sample; inference, generated tokens (`swift infer`: from "
              "the usage line it logs; it reports no GPU memory).", ""]
    medians = {n: r["median_samples_per_s"] for n, r in parts.items() if r.get("median_samples_per_s")}
    if medians:
        lines += ["Training at the median step after warm-up, i.e. without one-time stalls (such as a new epoch's "
                  "dataloader workers, or kernels compiled for a new sequence length) that a short window holds and "
                  "a long run pays once: " + ", ".join(f"{n} {v:.1f}" for n, v in medians.items()) + " samples/s.", ""]
    split = {n: r for n, r in parts.items() if "processor_s" in r}
    for n, r in split.items():
        lines += [f"{n}: processor (CPU) {r['processor_s']:.1f} s, generate (GPU) {r['generate_s']:.1f} s "
                  "over the timed batches.", ""]
    for n, r in parts.items():
        if r.get("phases_s") and r["kind"] != "profile":
            ph = r["phases_s"]
            split = ", ".join(f"{k} {ph[k]:.2f} s" for k in ("rope_index", "vision", "prefill") if k in ph)
            serial = n.endswith("serial")
            phrases = [f"encode (template + image processor, CPU threads) {ph['encode']:.2f} s" if "encode" in ph
                      else f"prepare (encoding processes, collate, copy to the GPU) {ph.get('prepare', 0):.2f} s",
                      f"collate (as `_infer` waits for it) {ph.get('collate', 0):.2f} s",
                      f"generate (GPU) {ph['generate']:.2f} s" + (f" (of which {split})" if split else "")]
            if "infer" in ph:
                phrases.append(f"the rest of ms-swift's `_infer` {ph['infer'] - ph['generate']:.2f} s"
                              + (" (encode and collate among it)" if serial else ""))
            how = ("run one after the other (ms-swift alone)." if serial else
                   "the next batch's encode (in processes of its own on a GPU), collate and copy to the GPU run on a "
                   "worker thread during this batch's generate (stages/speed/prefetch.py).")
            lines += [f"{n}: per batch after the first, {', '.join(phrases)}; {how}", ""]
    if results.get("parity"):
        q = results["parity"]
        lines += [f"Answers of swift_infer against swift_infer_serial (greedy, same {q['rows']} samples): "
                  f"{q['differing']} differ.", ""]
    curves = [n for n, r in parts.items() if "losses" in r]
    if curves:
        lines += ["## Loss per optimizer step (same data order, constant lr 1e-4; global batch in brackets)", "",
                  "| step | " + " | ".join(f"{n} ({parts[n]['global_batch']})" for n in curves) + " |",
                  "|---" * (len(curves) + 1) + "|"]
        by = {n: {r["step"]: r["loss"] for r in parts[n]["losses"]} for n in curves}
        for step in sorted(set().union(*by.values())):
            lines.append(f"| {step} | " + " | ".join(fmt(by[n].get(step), ".4f") for n in curves) + " |")
    lines += ["", "## Commands", ""]
    lines += [f"- {n}: `swift {' '.join(r['argv'])}`" for n, r in parts.items() if "argv" in r]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shape, a few steps, CPU")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--variants", default="{}", help='more swift runs: JSON {"swift_gpu_b32": {"train": '
                    '{"per_device_train_batch_size": 32}}, "swift_infer_b256": {"infer": {...}}}, over the profile')
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "qwen_vl_bench")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results.json")
    ap.add_argument("--profile", type=Path, default=ROOT / "params-gpu.yaml")
    ap.add_argument("--report", type=Path, help="write RESULTS.md beside this results.json and stop")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--gpu_steps", type=int, help="optimizer steps of each (b) run and its variants (full: 30)")
    a = ap.parse_args(argv)
    if a.report:
        (a.report.parent / "RESULTS.md").write_text(report(json.loads(a.report.read_text())), encoding="utf-8")
        return
    cfg = dict(SMOKE if a.smoke else FULL, **({"gpu_steps": a.gpu_steps} if a.gpu_steps else {}))
    profile = read_yaml(a.profile) or {}
    logs = a.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    command = ["python -m bench.speed", *(["--smoke"] if a.smoke else []),
               *([f"--parts {a.parts}"] if a.parts != ",".join(PARTS) else []),
               *([f"--variants '{a.variants}'"] if a.variants != "{}" else []),
               *([f"--gpu_steps {a.gpu_steps}"] if a.gpu_steps else [])]
    results = {"command": " ".join(command), "config": cfg,
               "date": time.strftime("%Y-%m-%d"), "versions": versions(), "matmul_tflops": matmul_tflops(), "parts": {}}
    t0 = time.perf_counter()
    prepare(a.work, cfg, a.seed)
    if not (a.work / "stages").exists():   # the stages' plugin paths (--external_plugins) are repository-relative
        (a.work / "stages").symlink_to(ROOT / "stages")
    results["prepare_s"], results["tokens"] = time.perf_counter() - t0, token_counts(a.work)
    release_gpu()
    fast, slow = bench_params(profile, cfg, slow=False), bench_params(profile, cfg, slow=True)
    results["dtype"] = fast["train"]["torch_dtype"]
    micro, infer_batch = slow["train"]["per_device_train_batch_size"], fast["infer"]["max_batch_size"]
    plan = {
        "seeds_train": ("train", "(a) baseline: Trainer + PEFT, batch {} x accum {}, grad. checkpointing, LoRA "
                        "dropout {}".format(*cfg.get("seeds_batch", (4, 4)), cfg["seeds_dropout"]),
                        lambda: seeds_train(a.work, cfg, fast, logs)),
        "swift_slow": ("train", f"train stage, `swift sft`, (b) but batch {micro} x accum "
                       f"{slow['train']['gradient_accumulation_steps']} with grad. checkpointing, no liger",
                       lambda: swift_train(a.work, cfg, slow, logs, "swift_slow", cfg["slow_steps"])),
        "swift_gpu": ("train", f"(b) train stage, `swift sft` with params-gpu.yaml (batch "
                      f"{fast['train']['per_device_train_batch_size']})",
                      lambda: swift_train(a.work, cfg, fast, logs, "swift_gpu", cfg["gpu_steps"])),
        "seeds_infer": ("infer", "(c) baseline: one-sample `generate` loop",
                        lambda: hf_infer(a.work, cfg, logs, "seeds_infer", 1, cfg["seeds_infer"], cfg["warmup"])),
        "hf_batch_infer": ("infer", f"(c) batched: the same transformers code, {fast['infer']['max_batch_size']} "
                           "samples per `generate`", lambda: hf_infer(a.work, cfg, logs, "hf_batch_infer", infer_batch,
                                                                      infer_batch * cfg["infer_batches"], 1)),
        "swift_infer": ("infer", f"(d) infer stage, `swift infer` batch {fast['infer']['max_batch_size']}",
                        lambda: swift_infer(a.work, cfg, fast, logs, "swift_infer")),
        "swift_infer_serial": ("infer", f"(d) without the speed plugins: ms-swift's own `swift infer`, batch "
                               f"{fast['infer']['max_batch_size']}, encode then generate",
                               lambda: swift_infer(a.work, cfg, fast, logs, "swift_infer_serial", plugins=False)),
    }
    plan["hf_batch_static"] = ("infer", "(c) batched, static KV cache (`generate(cache_implementation='static')`)",
                               lambda: hf_infer(a.work, cfg, logs, "hf_batch_infer_static", infer_batch,
                                                infer_batch * cfg["infer_batches"], 1, cache="static"))
    plan["profile_train"] = ("profile", "torch profiler over (b)", lambda: profile_train(a.work, fast, logs))
    plan["profile_infer"] = ("profile", "torch profiler over (d)'s second batch",
                             lambda: swift_infer(a.work, cfg, fast, logs, "profile_infer", profile=True))
    for name, overrides in json.loads(a.variants).items():
        q = merge(fast, overrides)
        what = ", ".join(f"{k}={v}" for k, v in flatten(overrides).items())
        if name.startswith("swift_infer"):
            plan[name] = ("infer", f"(d) with {what}", lambda q=q, name=name: swift_infer(a.work, cfg, q, logs, name))
        else:
            plan[name] = ("train", f"(b) with {what}",
                          lambda q=q, name=name: swift_train(a.work, cfg, q, logs, name, cfg["gpu_steps"]))
    for name in [*a.parts.split(","), *json.loads(a.variants)]:
        kind, label, measure = plan[name]
        print(f"bench: {name} ...", flush=True)
        try:
            results["parts"][name] = {"kind": kind, "label": label, **measure()}
        except SystemExit as e:     # one failed configuration must not lose the others' figures
            print(f"bench: {name} FAILED: {e}", flush=True)
            results.setdefault("failed", {})[name] = str(e)[-2000:]
            continue
        flops_figures(results)
        pair = {"swift_infer", "swift_infer_serial"}
        if name in pair and pair <= results["parts"].keys():   # once, when the second of the two has run
            results["parity"] = differing(a.work, "swift_infer", "swift_infer_serial")
            print(f"bench: parity {results['parity']}", flush=True)
        a.out.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
        r = results["parts"][name]
        if kind != "profile":
            print(f"bench: {name}: {r['samples_per_s']:.2f} samples/s, peak {r['peak_gib']} GiB, "
                  f"MFU {fmt(r['mfu'], '.1%')}" + (f", {r['phases_s']}" if r.get("phases_s") else "")
                  + (f", median {r['median_samples_per_s']:.2f}" if r.get("median_samples_per_s") else ""), flush=True)
    a.out.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    (a.out.parent / "RESULTS.md").write_text(report(results), encoding="utf-8")


if __name__ == "__main__":
    main()

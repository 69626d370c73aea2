"""Where a `swift sft` training step spends its time: runs ms-swift's sft in this process with a torch
profiler over a few steps after warm-up, and writes the top operators by GPU and by CPU time.

    python -m bench.profile_train OUT.txt -- <swift sft arguments...>
"""
from __future__ import annotations

import sys
import time

from bench.time_train import add_to_every_trainer

WARMUP, STEPS = 4, 3


def gpu_seconds(events) -> float:
    """The profiled GPU kernels' time in all (self time, so nothing counted twice)."""
    return sum(e.self_device_time_total for e in events) / 1e6


def tables(events, rows: int) -> str:
    """A profiler's top operators by GPU time, then by CPU time."""
    return "\n\n".join(events.table(sort_by=key, row_limit=rows, max_name_column_width=70)
                       for key in ("self_device_time_total", "cpu_time_total"))


def main() -> None:
    import torch
    import transformers
    from torch.profiler import ProfilerActivity, profile

    out, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    gpu_present = torch.cuda.is_available()
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu_present else []))
    marks = {}

    class Window(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if gpu_present:
                torch.cuda.synchronize()
            if state.global_step == WARMUP:
                marks["start"] = time.perf_counter()
                prof.__enter__()
            elif state.global_step == WARMUP + STEPS:
                prof.__exit__(None, None, None)
                marks["end"] = time.perf_counter()

    add_to_every_trainer(Window())
    from swift.pipelines import sft_main
    sft_main(argv)
    events = prof.key_averages()
    gpu = gpu_seconds(events)
    wall = marks["end"] - marks["start"]
    with open(out, "w", encoding="utf-8") as f:
        f.write(f"{STEPS} steps after {WARMUP}: wall {wall:.3f} s, GPU kernels {gpu:.3f} s "
                f"({gpu / wall:.0%} busy if serial)\n\n")
        f.write(tables(events, 30))


if __name__ == "__main__":
    main()

"""`swift infer` as the infer stage runs it, with a clock on each batch: runs ms-swift's infer in this
process and records the time at which every batch's generation returns (GPU synchronised), so the steady
rate leaves out start-up, loading and the first batch. Each batch's time is also split into its phases:
`encode` (the template and image processor on the CPU, ms-swift's thread pool), `pre_forward` (the
template's hook before generate) and `generate` (the vision tower, prefill and decoding on the GPU).

    python -m bench.time_infer TIMES.json -- <swift infer arguments...>
"""
from __future__ import annotations

import functools
import json
import sys
import time


def main() -> None:
    import torch
    from swift.infer_engine import TransformersEngine

    out, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    times, sizes = [], []
    phases: dict[str, list[float]] = {"encode": [], "pre_forward": [], "generate": []}

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def clock(fn, phase: str, gpu: bool = True):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            if gpu:
                sync()
            t0 = time.perf_counter()
            result = fn(*a, **k)
            if gpu:
                sync()
            phases[phase].append(time.perf_counter() - t0)
            return result
        return wrapper

    infer_batch = TransformersEngine._infer
    TransformersEngine._batch_encode = clock(TransformersEngine._batch_encode, "encode", gpu=False)   # CPU; may overlap generate

    @functools.wraps(infer_batch)
    def clocked(self, infer_requests, *a, **k):
        if not getattr(self.template, "_bench_clocked", False):   # the template exists once the engine does
            self.template.pre_forward_hook = clock(self.template.pre_forward_hook, "pre_forward")
            self.template.generate = clock(self.template.generate, "generate")
            self.template._bench_clocked = True
        result = infer_batch(self, infer_requests, *a, **k)
        sync()
        times.append(time.perf_counter())
        sizes.append(len(infer_requests))
        return result
    TransformersEngine._infer = clocked

    from swift.pipelines import infer_main
    infer_main(argv)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"times": times, "sizes": sizes, "phases": phases}, f)


if __name__ == "__main__":
    main()

"""`swift infer` as the infer stage runs it, with a clock on each batch: runs ms-swift's infer in this
process and records the time at which every batch's generation returns (GPU synchronised), so the steady
rate leaves out start-up, loading and the first batch.

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
    infer_batch = TransformersEngine._infer

    @functools.wraps(infer_batch)
    def clocked(self, infer_requests, *a, **k):
        result = infer_batch(self, infer_requests, *a, **k)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        sizes.append(len(infer_requests))
        return result
    TransformersEngine._infer = clocked

    from swift.pipelines import infer_main
    infer_main(argv)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"times": times, "sizes": sizes}, f)


if __name__ == "__main__":
    main()

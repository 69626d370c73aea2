"""`swift sft` as the train stage runs it, with a clock on each optimizer step: runs ms-swift's sft in this process
and records the time at which every step ends, without synchronising the GPU (the stage's own logging, every
`logging_steps`, is the only sync, as in a real run) except at the end of the warm-up step and of the last step,
so that the window between them is exact.

    python -m bench.time_train TIMES.json --warmup N -- <swift sft arguments...>
"""
from __future__ import annotations

import functools
import json
import sys
import time


def add_to_every_trainer(callback) -> None:
    """Give `callback` to every transformers Trainer made from now on in this process (ms-swift's included)."""
    import transformers

    init = transformers.Trainer.__init__

    @functools.wraps(init)      # ms-swift reads the signature to choose its keyword arguments
    def with_callback(self, *a, **k):
        init(self, *a, **k)
        self.add_callback(callback)
    transformers.Trainer.__init__ = with_callback


def main() -> None:
    import torch
    import transformers

    out, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    head = sys.argv[2:sys.argv.index("--")]
    warmup = int(head[head.index("--warmup") + 1]) if "--warmup" in head else 1
    times: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step in (warmup, state.max_steps) and torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    add_to_every_trainer(Clock())
    from swift.pipelines import sft_main
    sft_main(argv)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"times": times, "warmup": warmup}, f)


if __name__ == "__main__":
    main()

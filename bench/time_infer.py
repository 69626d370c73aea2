"""`swift infer` as the infer stage runs it, with a clock on each batch: runs ms-swift's infer in this
process and records the time at which every batch's generation returns (GPU synchronised), so the steady
rate leaves out start-up, loading and the first batch. Each batch's time is also split into its phases:
`encode` (the template and image processor on the CPU, ms-swift's thread pool; with stages/speed/prefetch.py
on its worker thread, where it overlaps generate; on a GPU the plugin's processes encode instead), `prepare` (the
plugin's worker thread: its wait for the encoding, then collate and copy to the GPU; `receive`, the part of it that
takes the encoding processes' slices), `handover` (`_infer` taking the prepared batch: its wait for the worker),
`collate` (the template's data_collator as `_infer` calls it;
near 0 when the prefetch plugin hands over a batch it collated), `pre_forward` (the template's hook before
generate) and `generate`, itself split into `rope_index` (the multimodal position ids, once per batch),
`vision` (the vision tower's forward), `prefill` (the language model's first forward) and the rest, decoding;
`infer`, the whole of ms-swift's `_infer` for the batch (generate and what ms-swift does before and after it).

    python -m bench.time_infer TIMES.json [--profile PROFILE.txt] -- <swift infer arguments...>

--profile: a torch profiler over the second batch's generate; its top operators by GPU and by CPU time.
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
    head = sys.argv[2:sys.argv.index("--")]
    profile_path = head[head.index("--profile") + 1] if "--profile" in head else None
    times, sizes = [], []
    phases: dict[str, list[float]] = {"encode": [], "prepare": [], "receive": [], "handover": [], "collate": [],
                                      "pre_forward": [], "generate": [], "vision": [], "prefill": [], "rope_index": [],
                                      "infer": []}
    gpu = torch.cuda.is_available()

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    def clock(fn, phase: str, sync_gpu: bool = True):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            if sync_gpu:
                sync()
            t0 = time.perf_counter()
            result = fn(*a, **k)
            if sync_gpu:
                sync()
            phases[phase].append(time.perf_counter() - t0)
            return result
        return wrapper

    state = {"prefill": False, "t0": 0.0, "batch": 0}

    def start(phase):
        def hook(module, args, kwargs=None):
            if phase == "prefill" and not state["prefill"]:
                return
            sync()
            state["t0"] = time.perf_counter()
        return hook

    def stop(phase):
        def hook(module, args, output):
            if phase == "prefill":
                if not state["prefill"]:
                    return
                state["prefill"] = False
            sync()
            phases[phase].append(time.perf_counter() - state["t0"])
        return hook

    def submodule(model, suffix: str):
        return next((m for n, m in model.named_modules() if n.endswith(suffix)), None)

    def generate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            state["prefill"] = True
            state["batch"] += 1
            if profile_path and state["batch"] == 2:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
                    result = fn(*a, **k)
                    sync()
                from bench.profile_train import gpu_seconds, tables

                events = prof.key_averages()
                with open(profile_path, "w", encoding="utf-8") as f:
                    f.write(f"batch 2's generate: GPU kernels {gpu_seconds(events):.3f} s\n\n{tables(events, 40)}")
                return result
            return fn(*a, **k)
        return wrapper

    infer_batch = TransformersEngine._infer
    TransformersEngine._batch_encode = clock(TransformersEngine._batch_encode, "encode", sync_gpu=False)
    plugins = argv[argv.index("--external_plugins") + 1:] if "--external_plugins" in argv else []
    if prefetch := next((a for a in plugins if a.endswith("prefetch.py")), None):
        from swift.utils import import_external_file

        # imported here first, so that infer_main's import finds this module and its clocked worker
        module = import_external_file(prefetch)
        module.prepare = clock(module.prepare, "prepare", sync_gpu=False)
        module.Encoders.encode = clock(module.Encoders.encode, "receive", sync_gpu=False)
        TransformersEngine._batch_encode = clock(TransformersEngine._batch_encode, "handover", sync_gpu=False)

    @functools.wraps(infer_batch)
    def clocked(self, infer_requests, *a, **k):
        template = self.template
        if not getattr(template, "_bench_clocked", False):   # the template exists once the engine does
            template.data_collator = clock(template.data_collator, "collate", sync_gpu=False)
            template.pre_forward_hook = clock(template.pre_forward_hook, "pre_forward")
            template.generate = clock(generate(template.generate), "generate")
            base = next((m for m in self.model.modules() if hasattr(type(m), "get_rope_index")), None)
            if base is not None:
                type(base).get_rope_index = clock(type(base).get_rope_index, "rope_index")
            for suffix, phase in (("visual", "vision"), ("language_model", "prefill")):
                if (m := submodule(self.model, suffix)) is not None:
                    m.register_forward_pre_hook(start(phase))
                    m.register_forward_hook(stop(phase))
            template._bench_clocked = True
        t0 = time.perf_counter()
        result = infer_batch(self, infer_requests, *a, **k)
        sync()
        times.append(time.perf_counter())
        phases["infer"].append(times[-1] - t0)
        sizes.append(len(infer_requests))
        return result
    TransformersEngine._infer = clocked

    from swift.pipelines import infer_main
    infer_main(argv)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"times": times, "sizes": sizes, "phases": phases}, f)


if __name__ == "__main__":
    main()

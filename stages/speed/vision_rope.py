"""An ms-swift plugin (`--external_plugins`): on a GPU, the Qwen-VL vision towers' rotary embedding as one
compiled kernel per call, where transformers runs it as several float32 passes over the queries and keys.

`apply_rotary_pos_emb_vision` casts q and k to float32 and computes `q * cos + rotate_half(q) * sin` one
operation at a time, each a full pass over a float32 copy (by count, not measured: at batch 512 of two-image
prompts at Qwen3-VL-2B's 448 px, 803,000 patches of 16 heads of 64, each of q and k is 3.3 GB in float32).
Here `torch.compile` (dynamic shapes: one kernel for every number of patches) fuses the same float32 arithmetic
into one pass; the result is the same up to the rounding of a fused multiply-add before the cast to bf16.
Measured: the vision tower 1.66-1.73 s a batch of 512 against 2.29-2.42 s, and 28 of 1,024 answers differ from
ms-swift's own path against 7 without it (H100, runs 15 and 16, bench/FINDINGS.md 3.3). If compiling fails, the
plugin says so once and uses transformers' function. CPU tensors take transformers' function, so the CPU default
computes what it always did.
"""
from __future__ import annotations

import functools
import importlib
import logging

import torch

logger = logging.getLogger(__name__)

MODULES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


def compiles(q: torch.Tensor) -> bool:
    return q.is_cuda


def fused(eager):
    """`eager`, compiled for GPU tensors; `eager` itself from the first compile error on."""
    compiled = torch.compile(eager, dynamic=True)
    failed = []

    @functools.wraps(eager)
    def apply(q, k, cos, sin):
        if not compiles(q) or failed:
            return eager(q, k, cos, sin)
        try:
            return compiled(q, k, cos, sin)
        except Exception as e:   # a missing compiler or Triton: slower, never wrong
            failed.append(e)
            logger.warning("vision_rope: torch.compile failed (%s: %s); using transformers' function",
                           type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return eager(q, k, cos, sin)
    apply._fused = True
    return apply


def install() -> None:
    for name in MODULES:
        try:
            module = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
        except ImportError:
            continue
        eager = getattr(module, "apply_rotary_pos_emb_vision", None)
        if eager is not None and not getattr(eager, "_fused", False):
            module.apply_rotary_pos_emb_vision = fused(eager)


install()

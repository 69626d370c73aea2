"""An ms-swift plugin (`--external_plugins`): on a GPU, the Qwen-VL vision towers' rotary embedding as one
compiled kernel per call, where transformers runs it as a dozen float32 passes over the queries and keys.

`apply_rotary_pos_emb_vision` casts q and k to float32 and computes `q * cos + rotate_half(q) * sin` one
operation at a time, each a full pass over a float32 copy: for a batch of 512 two-image prompts at Qwen3-VL-2B's
448 px (803,000 patches, 16 heads of 64) each of q and k is 3.3 GB in float32, about 40 GB of memory traffic a
tensor and 2 TB a forward of the tower's 24 layers, against 3 GB a tensor read once and written once in bf16.
Here `torch.compile` (dynamic shapes: one kernel for every number of patches) fuses the same float32 arithmetic
into one pass; the result is the same up to the rounding of a fused multiply-add before the cast to bf16. CPU
tensors take transformers' function, so the CPU default computes what it always did.
"""
from __future__ import annotations

import functools
import importlib

import torch

MODULES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


def compiles(q: torch.Tensor) -> bool:
    return q.is_cuda


def fused(eager):
    """`eager`, compiled for GPU tensors."""
    compiled = torch.compile(eager, dynamic=True, fullgraph=True)

    @functools.wraps(eager)
    def apply(q, k, cos, sin):
        return compiled(q, k, cos, sin) if compiles(q) else eager(q, k, cos, sin)
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

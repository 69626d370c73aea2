"""An ms-swift plugin (`--external_plugins`): the Qwen-VL vision towers' attention as one batched call per run of
equal-length images, where transformers makes one call per image.

Without flash-attn, transformers' Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision attention splits the packed sequence
of all images at `cu_seqlens` and calls SDPA once per image and layer: 1,024 images of 784 patches (a batch of
512 two-image prompts) are 24,576 calls per forward of Qwen3-VL-2B's 24 layers, each too small to fill a GPU.
Images side by side in the packed sequence with the same length are the same shape, so a run of them is a
batch: `(1, heads, n * L, d)` viewed as `(n, heads, L, d)` is one SDPA call with the same per-image result.

The plugin registers that attention function under a name with "flash" in it (transformers takes its
`cu_seqlens` branch only for such names) and, for the duration of each vision attention forward whose model
asked for "sdpa", points the vision config at it. The language model's attention is untouched.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

NAME = "flash_packed_sdpa"   # "flash" routes transformers' vision attention through its cu_seqlens branch
MAX_SCORES = 2 ** 30         # attention scores per call: bounds the memory of a math (non-fused) SDPA kernel


def equal_runs(bounds: list[int], heads: int, max_scores: int = MAX_SCORES) -> list[tuple[int, int, int]]:
    """Cumulative sequence bounds [0, b1, b2, ...] -> (start, stop, length) of runs of consecutive sequences
    of one length, each run at most `max_scores // (heads * length**2)` sequences (at least one)."""
    runs: list[tuple[int, int, int]] = []
    for a, b in zip(bounds, bounds[1:]):
        length = b - a
        if length <= 0:
            continue
        if runs and runs[-1][2] == length and runs[-1][1] == a and \
                (runs[-1][1] - runs[-1][0]) // length < max(1, max_scores // (heads * length * length)):
            runs[-1] = (runs[-1][0], b, length)
        else:
            runs.append((a, b, length))
    return runs


def packed_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                cu_seq_lens_q=None, **kwargs):
    """transformers' attention-function signature over a packed `(1, heads, total, d)` query: SDPA within
    each sequence of `cu_seq_lens_q`, returned as `(1, total, heads, d)` like transformers' sdpa."""
    heads, total, dim = query.shape[1:]
    outputs = []
    for start, stop, length in equal_runs(cu_seq_lens_q.tolist(), heads):
        n = (stop - start) // length
        q, k, v = (t[0, :, start:stop].unflatten(1, (n, length)).transpose(0, 1) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)   # (n, heads, L, d)
        outputs.append(out.transpose(1, 2).reshape(stop - start, heads, dim))
    return torch.cat(outputs)[None], None


def packed(forward):
    """A vision attention forward that, when its model asked for "sdpa", runs with the packed function."""
    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        config = self.config
        if config._attn_implementation != "sdpa":
            return forward(self, *args, **kwargs)
        config._attn_implementation_internal = NAME   # the attribute, not the setter: no sub-config walk
        try:
            return forward(self, *args, **kwargs)
        finally:
            config._attn_implementation_internal = "sdpa"
    return wrapper


def install() -> None:
    """Register the function and wrap every Qwen-VL vision attention class this transformers has."""
    import importlib

    AttentionInterface.register(NAME, packed_sdpa)
    for module, cls in (("qwen2_vl", "VisionAttention"), ("qwen2_5_vl", "Qwen2_5_VLVisionAttention"),
                        ("qwen3_vl", "Qwen3VLVisionAttention"), ("qwen3_vl_moe", "Qwen3VLMoeVisionAttention")):
        try:
            c = getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), cls)
        except (ImportError, AttributeError):
            continue
        if not getattr(c.forward, "_packed", False):
            c.forward = packed(c.forward)
            c.forward._packed = True


install()

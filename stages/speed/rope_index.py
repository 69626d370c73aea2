"""An ms-swift plugin (`--external_plugins`): the Qwen-VL models' multimodal rope index (`get_rope_index`) is
computed on host copies of its inputs and handed back on the model's device.

transformers computes it once per `generate`, sample by sample in a Python loop, on the prompts' own device: for
a GPU batch of 512 two-image prompts that is thousands of one-element reads (`.item()`, `.tolist()`, boolean
masks), each a wait for an otherwise idle GPU, and as many tiny kernels. The indices are integers derived from
token types and image grids: the same function on host copies gives the same tensors. CPU inputs take
transformers' path untouched.
"""
from __future__ import annotations

import functools
import importlib

import torch

MODELS = (("qwen2_vl", "Qwen2VLModel"), ("qwen2_5_vl", "Qwen2_5_VLModel"), ("qwen3_vl", "Qwen3VLModel"),
          ("qwen3_vl_moe", "Qwen3VLMoeModel"))


def to_host(value):
    return value.cpu() if isinstance(value, torch.Tensor) else value


def needs_host(input_ids: torch.Tensor) -> bool:
    return input_ids.device.type != "cpu"


def on_host(get_rope_index):
    """`get_rope_index` run on host copies when the inputs are elsewhere; its tensors back on their device."""
    @functools.wraps(get_rope_index)
    def wrapper(self, input_ids, *args, **kwargs):
        if not needs_host(input_ids):
            return get_rope_index(self, input_ids, *args, **kwargs)
        device = input_ids.device
        out = get_rope_index(self, to_host(input_ids), *map(to_host, args),
                             **{k: to_host(v) for k, v in kwargs.items()})
        return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in out)
    wrapper._on_host = True
    return wrapper


def install() -> None:
    for module, name in MODELS:
        try:
            cls = getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), name)
        except (ImportError, AttributeError):
            continue
        if not getattr(cls.get_rope_index, "_on_host", False):
            cls.get_rope_index = on_host(cls.get_rope_index)


install()

"""An ms-swift plugin (`--external_plugins`): on a GPU, transformers' dynamic KV cache writes each decoding step's
keys and values into room it keeps at the end, instead of concatenating the whole cache into a new tensor.

`DynamicLayer.update` runs `torch.cat([cache, new])` for the keys and for the values of every layer at every step:
at batch 512 with Qwen3-VL-2B (28 layers, 8 KV heads of 128, ~460 cached positions) each call copies about 0.5 GB,
1,736 calls a batch of 31 decoding steps, 0.58 s of the 5.5 s of GPU time in a batch's generate (torch profiler,
H100, bench/runs/14-h100-profile_infer.txt). Here the layer keeps its keys and values in a buffer with `ROOM`
spare positions, writes the new ones after the cached ones, and returns the filled prefix: the same numbers (the
prefix is a view whose batch and head strides skip the spare positions; the prompt's forward gets its own tensors
back). When the room runs out, or another method replaced the tensors (cropping, beam reordering, reset), the
buffer is made again. CPU tensors take transformers' own path, so the CPU default computes what it always did.
Measured with the stop-word plugin (stop_words.py) and not split between the two: the decoding left in a
batch's generate (31 steps) took 0.36 s in run 15 against 1.59 s in run 14, on two H100 machines
(bench/FINDINGS.md, 3.3). tests/test_speed.py shows the same tokens with it forced on.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

ROOM = 32   # spare positions: params.yaml's 32 new tokens fit (the prompt's forward fills the first buffer)
CONCATENATE = DynamicLayer.update


def within(view: torch.Tensor, buffer: torch.Tensor) -> bool:
    """Whether `view` is the leading positions of `buffer` (dim -2), as `update` returns them."""
    return (view.data_ptr() == buffer.data_ptr() and view.shape[:-2] == buffer.shape[:-2]
            and view.shape[-1] == buffer.shape[-1] and view.stride() == buffer.stride())


def append(cached: torch.Tensor, buffer: torch.Tensor | None, new: torch.Tensor,
           room: int = ROOM) -> tuple[torch.Tensor, torch.Tensor]:
    """`cached` (a prefix of `buffer`, or any tensor) followed by `new` along dim -2, as (the filled prefix, the
    buffer it lives in). Equal to `torch.cat([cached, new], dim=-2)`."""
    length = cached.shape[-2] if cached.numel() else 0
    total = length + new.shape[-2]
    if buffer is None or not within(cached, buffer) or buffer.shape[-2] < total or \
            (length == 0 and buffer.shape[:-2] != new.shape[:-2]):
        fresh = new.new_empty((*new.shape[:-2], total + room, new.shape[-1]))
        if length:
            fresh[..., :length, :].copy_(cached)
        buffer = fresh
    buffer[..., length:total, :].copy_(new)
    return buffer[..., :total, :], buffer


def takes_room(layer, key_states: torch.Tensor) -> bool:
    """A plain dynamic layer (not a sliding-window one) caching GPU tensors."""
    return type(layer) is DynamicLayer and key_states.is_cuda


def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
    if not takes_room(self, key_states):
        return CONCATENATE(self, key_states, value_states, *args, **kwargs)
    if not self.is_initialized:
        self.lazy_initialization(key_states, value_states)
    prompt = self.get_seq_length() == 0
    self.keys, self._key_room = append(self.keys, getattr(self, "_key_room", None), key_states)
    self.values, self._value_room = append(self.values, getattr(self, "_value_room", None), value_states)
    if prompt:   # the prompt's forward attends over the new, contiguous tensors, as after transformers' cat
        return key_states, value_states
    return self.keys, self.values


DynamicLayer.update = update

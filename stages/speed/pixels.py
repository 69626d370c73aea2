"""Images' pixels in the vision tower's dtype, which it casts them to first thing (`patch_embed`): the same numbers
in half the bytes (bf16) wherever they are cast earlier. Shared by the prefetch plugin (prefetch.py, encoders.py)
and the training plugin (batch_copy.py); ms-swift loads those by their paths, with this folder on `sys.path`.
"""
from __future__ import annotations

import torch


def pixel_dtype(model) -> torch.dtype | None:
    """The dtype of the vision tower's patch embedding (None: no model, or no such tower: leave pixels as they are)."""
    if model is None:
        return None
    return next((p.dtype for n, p in model.named_parameters() if n.endswith("patch_embed.proj.weight")), None)


def cast_pixels(data: dict, dtype: torch.dtype | None) -> dict:
    """`data` with its floating `pixel_values*` tensors in `dtype` (as they are when `dtype` is None)."""
    if dtype is not None:
        data.update({k: v.to(dtype) for k, v in data.items()
                     if k.startswith("pixel_values") and isinstance(v, torch.Tensor) and v.is_floating_point()})
    return data

"""An ms-swift plugin (`--external_plugins`) for `swift sft`: each training batch reaches the GPU in half the bytes
and without the host waiting for the copy.

With params-gpu.yaml (batch 48, 2 x 448 px images a sample) a batch carries 924 MB of float32 pixels. ms-swift's
`DataLoaderShard` copies it to the GPU synchronously: the host waits for the GPU to finish the previous step and
then for the copy (about 37 ms at 25 GB/s from pinned memory), before it launches the next step's first kernel;
a step took 0.81 s (H100, bench/FINDINGS.md, 3.3) and is partly bound by the host launching LoRA's small
operations. Here the template's collate (in the dataloader's worker processes) casts the pixels to the vision
tower's dtype, which the tower casts them to first thing (`patch_embed`): the same numbers in half the bytes, to
pin and to copy. The copy to the GPU is `non_blocking`: from the pinned memory the dataloader gives, it is queued
on the GPU before the step's kernels and the host goes on launching them (torch keeps the pinned block until the
copy is done). A batch in pageable memory is copied as before. On a CPU both are no-ops.
"""
from __future__ import annotations

import torch
from swift.dataloader.shard import DataLoaderShard
from swift.template import Template
from swift.utils import to_device
from torch.utils.data import DataLoader

OWN_COLLATE = Template.data_collator


def vision_dtype(model) -> torch.dtype | None:
    """The dtype of the vision tower's patch embedding, which it casts pixels to (None: no such tower, or no model)."""
    if model is None:
        return None
    return next((p.dtype for n, p in model.named_parameters() if n.endswith("patch_embed.proj.weight")), None)


def cast_pixels(batch: dict, dtype: torch.dtype | None) -> dict:
    """`batch` with its floating `pixel_values*` tensors in `dtype` (as they are when `dtype` is None)."""
    if dtype is not None:
        batch.update({k: v.to(dtype) for k, v in batch.items()
                      if k.startswith("pixel_values") and isinstance(v, torch.Tensor) and v.is_floating_point()})
    return batch


def data_collator(self, batch, *, padding_to=None):
    collated = OWN_COLLATE(self, batch, padding_to=padding_to)
    model = getattr(self, "model", None)   # None while ms-swift encodes the dataset: ask again at the next batch
    if not hasattr(self, "_pixel_dtype") and model is not None:   # once per worker process
        self._pixel_dtype = vision_dtype(model)
    return cast_pixels(collated, getattr(self, "_pixel_dtype", None))


def __iter__(self):
    for item in DataLoader.__iter__(self):
        yield to_device(item, self.device, non_blocking=True) if self.device else item


Template.data_collator = data_collator
DataLoaderShard.__iter__ = __iter__

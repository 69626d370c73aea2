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

from swift.dataloader.shard import DataLoaderShard
from swift.template import Template
from swift.utils import to_device
from torch.utils.data import DataLoader

try:   # imported as a module of this repository (tests)
    from stages.speed.pixels import cast_pixels, pixel_dtype
except ModuleNotFoundError:   # loaded by ms-swift from its path, with this folder on sys.path
    from pixels import cast_pixels, pixel_dtype

OWN_COLLATE = Template.data_collator


def data_collator(self, batch, *, padding_to=None):
    collated = OWN_COLLATE(self, batch, padding_to=padding_to)
    model = getattr(self, "model", None)   # None while ms-swift encodes the dataset: ask again at the next batch
    if not hasattr(self, "_pixel_dtype") and model is not None:   # once per worker process
        self._pixel_dtype = pixel_dtype(model)
    return cast_pixels(collated, getattr(self, "_pixel_dtype", None))


def __iter__(self):
    for item in DataLoader.__iter__(self):
        yield to_device(item, self.device, non_blocking=True) if self.device else item


Template.data_collator = data_collator
DataLoaderShard.__iter__ = __iter__

"""The encoding processes of the prefetch plugin (prefetch.py) on a GPU: forked DataLoader workers that run the
template's own encode for each request of one engine call, ahead of their batches, and hand the samples over
through shared memory. ms-swift loads prefetch.py by its path, with this folder on `sys.path`; tests and the
bench import both as `stages.speed` modules.
"""
from __future__ import annotations

import math
import os
import pickle
import shutil
import traceback
from itertools import accumulate

import torch
from torch.utils.data import DataLoader, Dataset

try:   # imported as a module of this repository (tests, bench)
    from stages.speed.pixels import cast_pixels
except ModuleNotFoundError:   # imported by prefetch.py as ms-swift loads it, with this folder on sys.path
    from pixels import cast_pixels

# Each encoding process keeps this many slices of the coming requests ready (DataLoader's prefetch_factor)
AHEAD = 2
# Shared memory the encoding processes need free: up to three batches' pixels live there at once (the one that
# generates, the next, the one being encoded), 2.45 GB each in bf16 at batch 512 and 2 x 448 px
SHM_NEEDED = 8 * 2 ** 30
# A slice that has not come back in this long means a worker is stuck: an error, not a wait (a slice is 32 requests)
SLICE_TIMEOUT_S = 600


def encoding_processes(device: str, cpus: int, gpus_here: int, shm_free: int) -> int:
    """Processes that encode for a model on a GPU: half the cores this process may use (`cpus`, shared among the
    `gpus_here` processes of a multi-GPU run), at most 8. The other half is left to this process's threads (the one
    that launches the GPU's work, the worker that collates and copies). 8 of them kept a batch of 512 ready ahead
    of the H100's 4.6 s generate (taking it: 0.28-0.31 s; bench/FINDINGS.md, 3.4). 0 (ms-swift's threads): on a
    CPU, whose cores generate; below 4 cores; or with less than `SHM_NEEDED` of shared memory free (a container's
    default /dev/shm is 64 MB)."""
    cpus = cpus // max(1, gpus_here)
    ok = device == "cuda" and cpus >= 4 and shm_free >= SHM_NEEDED
    return min(8, cpus // 2) if ok else 0


def machine() -> tuple[int, int, int]:
    """What `encoding_processes` weighs: the cores this process may run on, the processes of a multi-GPU run on this
    machine (torchrun's LOCAL_WORLD_SIZE), and the free bytes of /dev/shm (0 where there is none)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        shm_free = shutil.disk_usage("/dev/shm").free
    except OSError:
        shm_free = 0
    return cpus, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), shm_free


def slices(sizes: list[int], parts: int) -> tuple[list[list[int]], list[int]]:
    """The requests of consecutive batches of `sizes`, numbered from 0 across them, cut into slices of at most
    ceil(size / parts) within each batch (so `parts` slices hold a whole batch), and how many slices each batch
    has."""
    out, counts, start = [], [], 0
    for size in sizes:
        step = max(1, math.ceil(size / parts))
        cut = [list(range(i, min(i + step, start + size))) for i in range(start, start + size, step)]
        out += cut
        counts.append(len(cut))
        start += size
    return out, counts


def pack(samples: list[dict]) -> tuple[list[dict], dict[str, tuple[torch.Tensor, list[int]]]]:
    """The samples without their tensors, and each tensor key's tensors concatenated along the first dimension with
    the samples' lengths there: one shared-memory block per key and slice for the encoding process to hand over,
    rather than one per tensor (a slice of 32 samples carries 96). Keys whose tensors cannot be concatenated (not
    in every sample, scalars, other trailing shapes or dtypes) stay in the samples."""
    keys = {k for s in samples for k, v in s.items() if isinstance(v, torch.Tensor)}
    packed = {}
    for k in sorted(keys):
        ts = [s.get(k) for s in samples]
        if all(isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[1:] == ts[0].shape[1:]
               and t.dtype == ts[0].dtype for t in ts):
            packed[k] = (torch.cat(ts), [t.shape[0] for t in ts])
    return [{k: v for k, v in s.items() if k not in packed} for s in samples], packed


def unpack(samples: list[dict], packed: dict[str, tuple[torch.Tensor, list[int]]]) -> list[dict]:
    """`pack`'s samples with their tensors back, as views of the concatenated ones."""
    for k, (whole, lengths) in packed.items():
        for s, t in zip(samples, torch.split(whole, lengths)):
            s[k] = t
    return samples


class Encoding(Dataset):
    """The requests of one engine call, encoded one by one by the template (what ms-swift's `_batch_encode` does for
    each), in a DataLoader's worker process. A request that fails gives its exception, for the worker thread to
    raise or report as ms-swift would. Pixels come in `dtype` (the vision tower's; `on_device` would cast them on
    the GPU to the same numbers), half the bytes to hand over. Unless the caller asked for details (which report
    the images' sizes), the encoded images are given back as the request named them, not as decoded pixels that
    would be copied back through a pipe (1.2 MB a sample at 2 x 448 px); the answer is made from the tokens only."""

    def __init__(self, template, requests: list, dtype: torch.dtype | None, keep_images: bool):
        self.template, self.requests, self.dtype, self.keep_images = template, requests, dtype, keep_images

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> tuple[int, dict | Exception]:
        try:
            encoded = self.template.encode(self.requests[i], return_template_inputs=True)
        except Exception as e:   # noqa: BLE001 - handed back; ms-swift's strict mode raises it, else reports it
            return i, handed_back(e)
        cast_pixels(encoded, self.dtype)
        if not self.keep_images:
            encoded["template_inputs"].images = named_images(self.requests[i])
        return i, encoded


def named_images(request) -> list:
    """The images a request names in its `images` (an InferRequest, or a dataset row as `swift infer` passes them);
    images inside its messages are not listed."""
    images = request.get("images") if isinstance(request, dict) else request.images
    return [images] if isinstance(images, str) else list(images or [])


def handed_back(error: Exception) -> Exception:
    """`error` with the worker's traceback as a note, as it can cross to this process: one that cannot be pickled
    (holding a lock or a socket) would be dropped by the DataLoader's queue, and the batch waited for in vain, so
    it comes as a RuntimeError with its type and message."""
    note = "in an encoding process:\n" + "".join(traceback.format_exception(error))
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:   # noqa: BLE001 - any failure to cross is replaced
        error = RuntimeError(f"{type(error).__name__}: {error}")
    error.add_note(note)
    return error


def pack_slice(items: list[tuple[int, dict | Exception]]):
    """The DataLoader's collate, in the worker process: a slice's encoded samples `pack`ed, errors as they are."""
    samples, packed = pack([x for _, x in items if isinstance(x, dict)])
    it = iter(samples)
    return [(i, next(it) if isinstance(x, dict) else x) for i, x in items], packed


class Encoders:
    """Processes (a DataLoader's workers, forked from this one; they use only the CPU) that encode the requests of
    one engine call ahead of their batches, `AHEAD` slices each, so that a whole batch waits in shared memory when
    the worker thread asks for it. On a GPU, ms-swift's threads did the encoding in this process, where
    they and the thread that launches the GPU's work take turns at the interpreter lock: beside them, prefill took
    3.2-3.5 s instead of 2.05 s and decoding 2.1-2.4 s instead of 0.18 s (H100, bench/FINDINGS.md, 3.3). Forked,
    not spawned: the template (with its tokenizer and processor) is the engine's, not a copy to pickle; the workers
    never touch the GPU."""

    def __init__(self, template, chunks: list[list], dtype: torch.dtype | None, keep_images: bool, processes: int):
        requests = [r for c in chunks for r in c]
        order, self.counts = slices([len(c) for c in chunks], processes * AHEAD)
        self.starts = list(accumulate((len(c) for c in chunks[:-1]), initial=0))
        # forked tokenizers would warn and turn their parallelism off; this turns it off here too, where the
        # tokenizer only decodes answers
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # its own generator: the workers' seeds are not drawn from torch's global one, which ms-swift alone leaves be
        self.slices = iter(DataLoader(Encoding(template, requests, dtype, keep_images), batch_sampler=order,
                                      num_workers=processes, prefetch_factor=AHEAD, collate_fn=pack_slice,
                                      multiprocessing_context="fork", generator=torch.Generator(),
                                      timeout=SLICE_TIMEOUT_S))

    def encode(self, k: int, strict: bool) -> tuple[list[dict], list[tuple[int, Exception]]]:
        """Batch k's encoded samples and errors, as ms-swift's `_batch_encode` gives them (errors numbered within
        the batch; with `strict`, the first one raised). Batches are asked for in order."""
        batched, errors = [], []
        for _ in range(self.counts[k]):   # all of the batch's slices, so that the next batch starts at its own
            items, packed = next(self.slices)
            unpack([x for _, x in items if isinstance(x, dict)], packed)
            for i, x in items:
                if isinstance(x, Exception):
                    errors.append((i - self.starts[k], x))
                else:
                    batched.append(x)
        if strict and errors:
            raise errors[0][1]
        return batched, errors

    def close(self) -> None:
        """Stop the workers now, rather than when the iterator is collected (a traceback may hold it)."""
        if self.slices is not None:
            self.slices._shutdown_workers()
            self.slices = None

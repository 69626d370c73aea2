"""An ms-swift plugin (`--external_plugins`): `swift infer` with the transformers backend prepares the next batch
(encode; on a GPU also collate and copy there) on a worker thread while the model generates the current one.

ms-swift's `TransformersEngine._infer` runs each batch's preparation and its generation one after the other: on an
H100 with Qwen3-VL-2B at batch 512, 3.3 s of encode (template and image processor), then 2-6 s of collating 4.9 GB
of float32 pixels and copying them to the GPU, then 6.2-6.9 s of generate (bench/FINDINGS.md, 3.1). Here a worker
thread runs ms-swift's own `_batch_encode` and the template's own `data_collator` for batch k+1 as soon as batch
k's generation begins, and copies the collated tensors to the GPU on a stream of its own; `_infer` takes them when
it asks for them. On a GPU the worker starts once the current batch's vision tower is done (`vision_gate`), and
the encoding itself runs ahead in processes of its own (`Encoders`), not in ms-swift's threads. On a CPU the worker
thread only encodes, with ms-swift's threads: collating there competed with generate for the same 2 cores (the default pipeline's 480 test
rows: 22.3 s against 20.6 s, mean of 3; encoding only: 21.8 against 21.1, within the runs' spread). The batches,
their order, the encoding, collating and generation code are ms-swift's, so the predictions are the same; only
the waiting overlaps. Streaming requests (`swift deploy`) take ms-swift's path unchanged.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset
from swift.infer_engine import TransformersEngine
from swift.utils import to_device
from tqdm import tqdm

SERIAL_INFER = TransformersEngine.infer
SERIAL_ENCODE = TransformersEngine._batch_encode


def batches(items: list, size: int) -> list[list]:
    """`items` in consecutive slices of `size` (all of them at once when size <= 0), as ms-swift batches them."""
    size = size if size > 0 else len(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def on_device(data: dict, device: torch.device, pixel_dtype: torch.dtype | None) -> dict:
    """A sample or batch on `device`, as ms-swift's `to_device` puts it, with the images' pixels cast to the vision
    tower's dtype: the tower casts them first thing (`patch_embed`), so the cast gives the same numbers in half the
    memory while the next batch waits on the GPU."""
    data = to_device(data, device)
    if pixel_dtype is not None:
        data.update({k: v.to(pixel_dtype) for k, v in data.items()
                     if k.startswith("pixel_values") and isinstance(v, torch.Tensor) and v.is_floating_point()})
    return data


def pixel_dtype(model) -> torch.dtype | None:
    """The dtype the vision tower casts pixels to: its patch embedding's weights (None: leave them as they are)."""
    for name, param in model.named_parameters():
        if name.endswith("patch_embed.proj.weight"):
            return param.dtype
    return None


# Each encoding process keeps this many slices of the coming requests ready (DataLoader's prefetch_factor)
AHEAD = 2


def encoding_processes(cpus: int | None, device: str) -> int:
    """Processes that encode for a model on a GPU: half the machine's cores, at most 8. The other half is left to
    this process's threads (the one that launches the GPU's work, the worker that collates and copies); 8 of them,
    at about 20 ms a sample (2 x 448 px, one core), encode a batch of 512 in about 1.3 s, under the 4.8 s the H100
    took to generate it (bench/FINDINGS.md, 3.3). 0 (ms-swift's threads) on a CPU, whose cores generate, or below
    4 cores."""
    cpus = cpus or 1
    return min(8, cpus // 2) if device == "cuda" and cpus >= 4 else 0


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
            return i, e
        if self.dtype is not None:
            encoded.update({k: v.to(self.dtype) for k, v in encoded.items()
                            if k.startswith("pixel_values") and isinstance(v, torch.Tensor) and v.is_floating_point()})
        if not self.keep_images:
            request = self.requests[i]   # an InferRequest, or a dataset row as `swift infer` passes them
            encoded["template_inputs"].images = list(request.get("images") or [] if isinstance(request, dict)
                                                      else request.images)
        return i, encoded


def pack_slice(items: list[tuple[int, dict | Exception]]):
    """The DataLoader's collate, in the worker process: a slice's encoded samples `pack`ed, errors as they are."""
    samples, packed = pack([x for _, x in items if isinstance(x, dict)])
    it = iter(samples)
    return [(i, next(it) if isinstance(x, dict) else x) for i, x in items], packed


class Encoders:
    """Processes (a DataLoader's workers, forked from this one, which only they use the CPU in) that encode the
    requests of one engine call ahead of their batches, `AHEAD` slices each, so that a whole batch waits in shared
    memory when the worker thread asks for it. On a GPU, ms-swift's threads did the encoding in this process, where
    they and the thread that launches the GPU's work take turns at the interpreter lock: beside them, prefill took
    3.2-3.5 s instead of 2.05 s and decoding 2.1-2.4 s instead of 0.18 s (H100, bench/FINDINGS.md, 3.3). Forked,
    not spawned: the template (with its tokenizer and processor) is the engine's, not a copy to pickle; the workers
    never touch the GPU."""

    def __init__(self, template, chunks: list[list], dtype: torch.dtype | None, keep_images: bool, processes: int):
        requests = [r for c in chunks for r in c]
        order, self.counts = slices([len(c) for c in chunks], processes * AHEAD)
        self.starts = [sum(len(c) for c in chunks[:k]) for k in range(len(chunks))]
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")   # forked tokenizers would warn, then turn it off
        self.slices = iter(DataLoader(Encoding(template, requests, dtype, keep_images), batch_sampler=order,
                                      num_workers=processes, prefetch_factor=AHEAD, collate_fn=pack_slice,
                                      multiprocessing_context="fork"))

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
        self.slices = None   # the DataLoader iterator's finaliser stops its workers


def prepare(self, encode, stream: torch.cuda.Stream | None, dtype: torch.dtype | None):
    """What `_infer` does before generate, on the worker thread: `encode()` (ms-swift's, or the encoding
    processes'), then on a GPU (`stream` given) the template's collate and the copy to the model's device, on that
    stream and finished before the batch is handed over. Each sample's pixels go to the GPU (cast to `dtype`) before
    the collate, so that the template concatenates them there rather than in host memory (4.9 GB a batch of 512 at
    Qwen3-VL-2B's 2 x 448 px)."""
    batched, errors = encode()
    if not batched or stream is None:   # on a CPU the collate competes with generate for the same cores
        return batched, errors, None
    device = self.model.device
    samples = [{k: v for k, v in b.items() if k != "template_inputs"} for b in batched]
    with torch.cuda.stream(stream):
        for sample in samples:
            sample.update(on_device({k: v for k, v in sample.items() if k.startswith("pixel_values")}, device, dtype))
        # the class's collate: the instance's is collator()'s wrapper, which hands batches over to _infer
        collated = to_device(type(self.template).data_collator(self.template, samples), device)
    stream.synchronize()
    return batched, errors, collated


def after(gate: threading.Event | None, fn, *args):
    """`fn(*args)` once `gate` is set (at once when there is no gate)."""
    if gate is not None:
        gate.wait()
    return fn(*args)


def vision_gate(self) -> threading.Event | None:
    """On a GPU, an event the vision tower sets at the end of each forward, so that the next batch's preparation
    starts once this batch's images are encoded: with the worker running alongside, the tower took 4.8-5.9 s
    against 2.3 s without (H100, run 14), while prefill and decoding were unaffected; the likely cause, not
    measured, is the interpreter lock that ms-swift's pool of encoding threads holds and the tower's many small
    steps wait for. With the gate: 2.31-2.42 s against 2.29 s alone (H100, run 15); the slowdown moved to the
    prefill and decoding that now run beside the encoding (bench/FINDINGS.md, 3.3). None on a CPU or for a model
    without a vision tower: the preparation starts with the batch."""
    if self.model.device.type != "cuda":
        return None
    if not hasattr(self, "_vision_gate"):
        tower = next((m for name, m in self.model.named_modules() if name.endswith("visual")), None)
        self._vision_gate = None if tower is None else threading.Event()
        if tower is not None:
            tower.register_forward_hook(lambda *_: self._vision_gate.set())
    return self._vision_gate


def _batch_encode(self, infer_requests, strict):
    prefetched = getattr(self, "_prefetched", None)
    if prefetched is not None and prefetched[0] is infer_requests:
        self._prefetched = None
        batched, errors, collated = prefetched[1].result()   # an encoding error is raised here, as ms-swift would
        if collated is not None:
            self.template._collated = (batched, collated)
        return batched, errors
    return SERIAL_ENCODE(self, infer_requests, strict)


def handed_over(tensors) -> None:
    """Tell the CUDA caching allocator that the current stream uses tensors the worker's stream allocated."""
    for t in tensors.values() if isinstance(tensors, dict) else tensors:
        if isinstance(t, torch.Tensor) and t.is_cuda:
            t.record_stream(torch.cuda.current_stream(t.device))
        elif isinstance(t, (dict, list, tuple)):
            handed_over(t)


def collator(template):
    """The template's `data_collator`, returning the worker's collated batch when `_infer` asks for that batch."""
    own = template.data_collator

    def data_collator(batch, *args, **kwargs):
        collated = getattr(template, "_collated", None)
        if collated is not None and collated[0] is batch and not args and not kwargs:
            template._collated = None
            handed_over(collated[1])
            return collated[1]
        return own(batch, *args, **kwargs)
    data_collator._prefetch = True
    return data_collator


def infer(self, infer_requests, request_config=None, metrics=None, *, use_tqdm=None, adapter_request=None):
    if request_config is not None and request_config.stream or len(infer_requests) <= self.max_batch_size:
        return SERIAL_INFER(self, infer_requests, request_config, metrics, use_tqdm=use_tqdm,
                            adapter_request=adapter_request)
    from swift.infer_engine import RequestConfig

    request_config = request_config or RequestConfig()
    # what ms-swift's _infer sets before encoding, set here because the first encode starts before it runs
    if self.template.use_model:
        self.template.model = self.model
    if self.model_info.task_type == "causal_lm":
        self.template.set_mode("transformers")
    if not getattr(self.template.data_collator, "_prefetch", False):
        self.template.data_collator = collator(self.template)
    strict, chunks, results = getattr(self, "strict", True), batches(infer_requests, self.max_batch_size), []
    gate = vision_gate(self)
    device = self.model.device   # the worker's copy stream and pixel dtype, once for all batches
    copy = (torch.cuda.Stream(device), pixel_dtype(self.model)) if device.type == "cuda" else (None, None)
    # forked here, before the worker thread exists and while no generate runs
    processes = encoding_processes(os.cpu_count(), device.type)
    encoders = Encoders(self.template, chunks, copy[1], bool(request_config.return_details),
                        processes) if processes else None

    def encode(k: int):
        return encoders.encode(k, strict) if encoders else SERIAL_ENCODE(self, chunks[k], strict)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, \
                tqdm(total=len(infer_requests), dynamic_ncols=True, disable=use_tqdm is False) as bar:
            ready: Future = pool.submit(prepare, self, partial(encode, 0), *copy)
            for k, chunk in enumerate(chunks):
                self._prefetched = (chunk, ready)
                if gate is not None:
                    gate.clear()   # the worker's next preparation waits for this batch's vision tower
                if k + 1 < len(chunks):   # queued behind this batch's preparation
                    ready = pool.submit(after, gate, prepare, self, partial(encode, k + 1), *copy)
                try:
                    results += self._infer(chunk, request_config, adapter_request=adapter_request)
                finally:
                    if gate is not None:
                        gate.set()   # text-only batches, and errors: never leave the worker waiting
                bar.update(len(chunk))
    finally:
        if encoders is not None:
            encoders.close()
    self._update_metrics(results, metrics)
    return results


TransformersEngine.infer = infer
TransformersEngine._batch_encode = _batch_encode

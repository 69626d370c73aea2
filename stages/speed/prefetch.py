"""An ms-swift plugin (`--external_plugins`): `swift infer` with the transformers backend prepares the next batch
(encode; on a GPU also collate and copy there) on a worker thread while the model generates the current one.

ms-swift's `TransformersEngine._infer` runs each batch's preparation and its generation one after the other: on an
H100 with Qwen3-VL-2B at batch 512, 3.3 s of encode (template and image processor), then 2-6 s of collating 4.9 GB
of float32 pixels and copying them to the GPU, then 6.2-6.9 s of generate (bench/FINDINGS.md, 3.1). Here a worker
thread runs ms-swift's own `_batch_encode` and the template's own `data_collator` for batch k+1 as soon as batch
k's generation begins, and copies the collated tensors to the GPU on a stream of its own; `_infer` takes them when
it asks for them. On a GPU the worker starts once the current batch's vision tower is done (`vision_gate`), and
the encoding itself runs ahead in processes of its own (`Encoders`), not in ms-swift's threads. On a CPU the worker
thread only encodes, with ms-swift's threads: collating there competed with generate for the same 2 cores (the
default pipeline's 480 test rows: 22.3 s against 20.6 s, mean of 3; encoding only: 21.8 against 21.1, within the
runs' spread). The batches, their order, the encoding, collating and generation code are ms-swift's, so the
predictions are the same; only the waiting overlaps. Streaming requests (`swift deploy`) take ms-swift's path unchanged.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import torch
from swift.infer_engine import TransformersEngine
from swift.utils import to_device
from tqdm import tqdm

try:   # imported as a module of this repository (tests, bench)
    from stages.speed.encoders import Encoders, encoding_processes, machine
    from stages.speed.pixels import cast_pixels, pixel_dtype
except ModuleNotFoundError:   # loaded by ms-swift from its path, with this folder on sys.path
    from encoders import Encoders, encoding_processes, machine
    from pixels import cast_pixels, pixel_dtype

SERIAL_INFER = TransformersEngine.infer
SERIAL_ENCODE = TransformersEngine._batch_encode


def batches(items: list, size: int) -> list[list]:
    """`items` in consecutive slices of `size` (all of them at once when size <= 0), as ms-swift batches them."""
    size = size if size > 0 else len(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def on_device(data: dict, device: torch.device, dtype: torch.dtype | None) -> dict:
    """A sample or batch on `device`, as ms-swift's `to_device` puts it, with the images' pixels in the vision
    tower's `dtype` (pixels.py): half the memory while the next batch waits on the GPU."""
    return cast_pixels(to_device(data, device), dtype)


def prepare(self, encode, stream: torch.cuda.Stream | None, dtype: torch.dtype | None):
    """What `_infer` does before generate, on the worker thread: `encode()` (ms-swift's, or the encoding
    processes'), then on a GPU (`stream` given) the template's collate and the copy to the model's device, on that
    stream and finished before the batch is handed over. Each sample's pixels go to the GPU (cast to `dtype`) before
    the collate, so that the template concatenates them there rather than in host memory (4.9 GB a batch of 512 at
    Qwen3-VL-2B's 2 x 448 px). The encoded samples keep their host tensors until `_infer` is done with the batch,
    whose end frees them (2.5 GB of shared memory, 0.2 s). Freeing them on this thread instead cost generate as
    much or more: here, during the decoding, 0.7 s (H100, run 22 against 23); before the encode, during the prefill,
    0.18 s (run 25; bench/FINDINGS.md, 3.4)."""
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
    stream, dtype = (torch.cuda.Stream(device), pixel_dtype(self.model)) if device.type == "cuda" else (None, None)
    # forked here, before this call's worker thread exists and while no generate runs
    processes = encoding_processes(device.type, *machine())
    encoders = Encoders(self.template, chunks, dtype, bool(request_config.return_details),
                        processes) if processes else None

    def encode(k: int):
        return encoders.encode(k, strict) if encoders else SERIAL_ENCODE(self, chunks[k], strict)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, \
                tqdm(total=len(infer_requests), dynamic_ncols=True, disable=use_tqdm is False) as bar:
            ready: Future = pool.submit(prepare, self, partial(encode, 0), stream, dtype)
            for k, chunk in enumerate(chunks):
                self._prefetched = (chunk, ready)
                if gate is not None:
                    gate.clear()   # the worker's next preparation waits for this batch's vision tower
                if k + 1 < len(chunks):   # queued behind this batch's preparation
                    ready = pool.submit(after, gate, prepare, self, partial(encode, k + 1), stream, dtype)
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

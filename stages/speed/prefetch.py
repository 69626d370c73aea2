"""An ms-swift plugin (`--external_plugins`): `swift infer` with the transformers backend encodes the next batch
(template and image processor, on CPU threads) while the GPU generates the current one.

ms-swift's `TransformersEngine.infer` runs each batch's encode and generate one after the other: on an H200 with
Qwen3-VL-2B at batch 512, 2.2 s of CPU encode then 5.8 s of GPU generate (bench/FINDINGS.md). Here a worker
thread runs ms-swift's own `_batch_encode` for batch k+1 as soon as batch k's generation begins, and `_infer`
takes the encoded batch when it asks for it. The batches, their order, the encoding and generation code are
ms-swift's, so the predictions are the same; only the waiting overlaps. Streaming requests (`swift deploy`)
take ms-swift's path unchanged.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from swift.infer_engine import TransformersEngine
from tqdm import tqdm

SERIAL_INFER = TransformersEngine.infer
SERIAL_ENCODE = TransformersEngine._batch_encode


def batches(items: list, size: int) -> list[list]:
    """`items` in consecutive slices of `size` (all of them at once when size <= 0), as ms-swift batches them."""
    size = size if size > 0 else len(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _batch_encode(self, infer_requests, strict):
    prefetched = getattr(self, "_prefetched", None)
    if prefetched is not None and prefetched[0] is infer_requests:
        self._prefetched = None
        return prefetched[1].result()   # an encoding error is raised here, for this batch, as ms-swift would
    return SERIAL_ENCODE(self, infer_requests, strict)


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
    strict, chunks, results = getattr(self, "strict", True), batches(infer_requests, self.max_batch_size), []
    with ThreadPoolExecutor(max_workers=1) as pool, \
            tqdm(total=len(infer_requests), dynamic_ncols=True, disable=use_tqdm is False) as bar:
        encoded: Future = pool.submit(SERIAL_ENCODE, self, chunks[0], strict)
        for k, chunk in enumerate(chunks):
            self._prefetched = (chunk, encoded)
            if k + 1 < len(chunks):   # queued behind this batch's encode: it starts as this batch's generate does
                encoded = pool.submit(SERIAL_ENCODE, self, chunks[k + 1], strict)
            results += self._infer(chunk, request_config, adapter_request=adapter_request)
            bar.update(len(chunk))
    self._update_metrics(results, metrics)
    return results


TransformersEngine.infer = infer
TransformersEngine._batch_encode = _batch_encode

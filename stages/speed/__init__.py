"""ms-swift plugins (`--external_plugins`) that make the same computation faster: one attention call per image size in
the vision tower (packed_vision.py), its rotary embedding in one compiled kernel (vision_rope.py, GPU only), the
stop-word check on the host (stop_words.py), the next batch prepared while the model generates (prefetch.py; on a
GPU encoded by the processes of encoders.py, which it imports), a KV cache that decoding appends to without copying
it (kv_cache.py, GPU only), and in training each batch's pixels sent to the GPU in the tower's dtype, the host not
waiting for the copy (batch_copy.py). tests/test_speed.py checks their outputs against transformers' and ms-swift's
own paths; on a GPU, bf16 rounding changes a few answers (bench/FINDINGS.md, 3.3-3.4)."""


def plugin_files(*names: str) -> tuple[str, ...]:
    """The named plugins as `--external_plugins` takes them: paths relative to the repository, where the stages run."""
    return tuple(f"stages/speed/{name}.py" for name in names)

"""ms-swift plugins (`--external_plugins`) that make the same computation faster: one attention call per image
size in the vision tower (packed_vision.py), the next batch prepared while the model generates (prefetch.py), and
a KV cache that decoding appends to without copying it (kv_cache.py, GPU only). None changes what is computed:
tests/test_speed.py checks their outputs against transformers' and ms-swift's own paths."""

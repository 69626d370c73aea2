"""ms-swift plugins (`--external_plugins`) that make the same computation faster: one attention call per image
size in the vision tower (packed_vision.py), and the next batch encoded while the GPU generates (prefetch.py).
Neither changes what is computed: tests/test_speed.py checks their outputs against ms-swift's own path."""

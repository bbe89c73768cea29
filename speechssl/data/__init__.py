"""Audio I/O, manifests, batching, and the corpora (synthesized and real)."""

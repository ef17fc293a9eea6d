"""Benchmarks that measure the product: the batched warm-start benchmark (:mod:`.batch_warmstart`)."""

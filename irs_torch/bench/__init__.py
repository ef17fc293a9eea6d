"""Benchmarks that measure the product.

- :mod:`.quality`: the solution-quality suite (best-known designs; each solver effort's ratio to them).
- :mod:`.warmstart`: the warm-start benchmark (the network against the non-learned starts at equal refinement, per
  regime), with :mod:`.warmstart_methods` (methods, instances, starts) and :mod:`.warmstart_report` (summary,
  targets, table, plot).
- :mod:`.batch_warmstart`: the batched warm-start benchmark (every start through the same batched refiner).
"""

"""The paper's figures (``irs-torch reproduce``).

- :mod:`.sweeps`: the figures' curves and axes, their tasks and how each is solved (monotone budget sweeps).
- :mod:`.storage`: the resumable point store (``points.jsonl``) and the figure CSVs.
- :mod:`.plots`: the PNGs.
- :mod:`.claims`: the paper's qualitative claims checked on the points.
- :mod:`.reproduce`: one figure end to end (:func:`~.reproduce.run_figure`).
"""

"""Designs beyond a known target position.

- :mod:`.mismatch`: a scenario with the target moved (:func:`~.mismatch.move_target`) and the CRB of a design
  under position mismatch (:func:`~.mismatch.run_mismatch`, :func:`~.mismatch.mismatch_map`).
- :mod:`.robust`: designs robust over a region (:func:`~.robust.solve_robust`), built from :mod:`.region` (where
  the target may be), :mod:`.robust_problem` (candidates, objectives, feasibility at every candidate),
  :mod:`.robust_transmit` (robust P2) and :mod:`.robust_reflect` (robust P3, power balance, the joint screen).
"""

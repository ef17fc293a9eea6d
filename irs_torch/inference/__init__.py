"""The learned warm start at run time: the network proposes, the exact solver refines.

- :mod:`.checkpoints`: which shipped model serves a scenario (:func:`find_checkpoint`, :func:`checkpoint_dirs`).
- :mod:`.starts`: the network's designs (:func:`predict_batch`, :func:`network_hypotheses`, :func:`network_starts`,
  the network-only :func:`network_result`).
- :mod:`.refine`: refinement by the AO (:func:`refine_starts`) or the batched first-order method
  (:func:`refine_fo`, on the solvers' batched portfolio :mod:`irs_torch.solvers.portfolio`), then one P2 solve
  (:func:`polish_transmit`, from there).
- :mod:`.learned`: one learned solve (:func:`solve_learned`).
- :mod:`.batch`: many scenarios in one call (:func:`solve_batch`, :func:`load_scenarios`, :class:`BatchResult`).

The warm-start benchmarks live in :mod:`irs_torch.bench`.
"""
from irs_torch.inference.batch import BatchResult, load_scenarios, solve_batch
from irs_torch.inference.checkpoints import budget_preference, checkpoint_dirs, find_checkpoint, shipped_checkpoints
from irs_torch.inference.learned import DEFAULT_REFINE, REFINE, solve_learned
from irs_torch.inference.refine import (
    FO_HYPOTHESES,
    FO_STEPS,
    REFINE_ITER,
    refine_fo,
    refine_starts,
    warm_start_options,
)
from irs_torch.inference.starts import network_hypotheses, network_result, network_starts, predict_batch
from irs_torch.solvers.portfolio import FirstOrderBatch, polish_transmit

__all__ = [
    "solve_learned", "solve_batch", "BatchResult", "load_scenarios", "network_hypotheses", "network_result",
    "network_starts", "refine_starts", "refine_fo", "polish_transmit", "FirstOrderBatch", "find_checkpoint",
    "checkpoint_dirs", "shipped_checkpoints", "budget_preference", "predict_batch", "warm_start_options",
    "REFINE_ITER", "REFINE", "DEFAULT_REFINE", "FO_STEPS", "FO_HYPOTHESES",
]

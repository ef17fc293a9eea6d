"""Regimes and budget buckets used to break the warm-start metrics down, so a model's weak regime shows.

One definition for the TensorBoard logs of training (:mod:`irs_torch.learn.module`), the warm-start
benchmark (:mod:`irs_torch.bench.warmstart`) and the model card (``scripts/model_card.py``):

- **C1 regime** of an instance, at a *reference* design (the label, or the best-known design):
  ``"c1-binding"`` when the IRS power constraint C1 (eq. (7), (17a)) is active, i.e. its relative
  margin ``1 - P_irs / P_s`` is below :data:`C1_TOL` (0.1 %), for the IRS that attains the max-CRB
  (the one that sets the objective); else ``"standard"``. The same rule as
  :func:`irs_torch.bench.quality.regime`, which tags the quality suite.
- **P_s bucket**: the decade of the IRS budget P_s [W]: ``"P_s <1e-3"``, ``"P_s 1e-3..1e-2"``,
  ``"P_s 1e-2..0.1"``, ``"P_s >=0.1"`` (TensorBoard tags ``P_s_lt1e-3``, ``P_s_1e-3-1e-2``, ``P_s_1e-2-0p1``,
  ``P_s_ge0p1``) (:data:`PS_EDGES`; the budget-conditioned training range is
  1e-4..1 W).
- **P_t bucket**: ``"P_t low"`` below :data:`PT_SPLIT` W, else ``"P_t high"``; 6.32 W = sqrt(1 * 40) is
  the geometric middle of the 1..40 W training range (equal mass under log-uniform sampling).
"""
from __future__ import annotations

import math

import torch

REGIMES = ("standard", "c1-binding")
C1_TOL = 1e-3
PS_EDGES = (1e-3, 1e-2, 0.1)
PS_BUCKETS = ("P_s <1e-3", "P_s 1e-3..1e-2", "P_s 1e-2..0.1", "P_s >=0.1")
PT_SPLIT = math.sqrt(40.0)
PT_BUCKETS = ("P_t low", "P_t high")


def c1_binding(scenario, R_s: torch.Tensor, psi: torch.Tensor, tol: float = C1_TOL) -> torch.Tensor:
    """Whether C1 binds at ``(R_s, psi)`` for the IRS attaining the max-CRB (module docstring).

    Shapes: scenario batch ``(...)``, R_s ``(..., L, M, M)``, psi ``(..., L, N)`` -> bool ``(...)``.
    A passive scenario (no C1) gives False."""
    if not scenario.active:
        return torch.zeros(tuple(scenario.batch_shape), dtype=torch.bool)
    with torch.no_grad():
        m = scenario.constraint_margins(R_s, psi)["irs"]  # (..., L)
        worst = scenario.crb(R_s, psi, validate=False).total.argmax(-1, keepdim=True)  # (..., 1)
        return m.gather(-1, worst).squeeze(-1) < tol


def regime_names(binding: torch.Tensor) -> list[str]:
    """``"c1-binding"`` / ``"standard"`` per element of a flat bool tensor."""
    return [REGIMES[int(b)] for b in binding.reshape(-1).tolist()]


def ps_bucket(P_s: float) -> str:
    """The P_s decade bucket (module docstring) of an IRS budget P_s [W]."""
    i = sum(float(P_s) >= e for e in PS_EDGES)
    return PS_BUCKETS[i]


def pt_bucket(P_t: float) -> str:
    """``"P_t low"`` (P_t < :data:`PT_SPLIT` W) or ``"P_t high"``."""
    return PT_BUCKETS[int(float(P_t) >= PT_SPLIT)]


def bucket_index(values: torch.Tensor, edges) -> torch.Tensor:
    """Bucket index per element: the number of ``edges`` at or below each value (long tensor)."""
    e = torch.as_tensor(edges, dtype=values.dtype, device=values.device)
    return (values.unsqueeze(-1) >= e).sum(-1)


def tag(name: str) -> str:
    """A bucket or regime name as a TensorBoard tag component (no spaces, dots or '<>=')."""
    out = name.replace(" ", "_").replace("..", "-").replace("<", "lt").replace(">=", "ge").replace("=", "")
    return out.replace(".", "p")

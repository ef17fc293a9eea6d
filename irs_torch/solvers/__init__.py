"""The exact solver of the paper's Section IV: alternating optimisation (AO) of the transmit
covariances R_s (P2, an SDP) and the IRS reflection vectors psi (P3, SCA + SDR, or a first-order
method on the torch CRB), and the paper's benchmarks.

Entry point: :func:`solve` (``scenario, method, init, options`` -> :class:`SolveResult`).

- ``method="ao"``: the proposed joint design (Algorithm 1).
- ``"transmit-only"``: random IRS phases at a C1-feasible amplitude, then P2 for R_s.
- ``"reflective-only"``: ``R_s = P_t / M I``, then P3 for psi.
- ``"passive"``: passive IRSs (|psi_n| = 1, sigma_r = 0, no C1), AO with P3 under
  ``diag(Theta) = 1``; ``options.passive_fair`` gives the BS ``P_t + P_s``.

Defaults chosen by measurement (scripts/bench_solver.py, paper scenario, 5 channel seeds):

- P2 is solved by Clarabel (SCS selectable) over a k = 8 dimensional subspace per slot that
  provably contains the optimum's range for the right multiplier ratio, with a weak-duality
  certificate in the full space (:func:`.transmit.solve_transmit_sdp`); ~0.1 s per re-solve.
  SCS needed 10^4-10^5 iterations (median 6 s) and stopped up to 7e-4 above the optimum.
- P3 is the first-order method: AO max-CRB 0.0169-0.0215 rad^2 against 0.020-0.175 with SCA + SDR
  (whose relaxation is far from rank one, so the randomised candidates rarely improve).

Effort levels (:mod:`.strategy`): ``SolverOptions(effort=...)`` chooses how method "ao" with
``init=None`` searches: "default" (a batched joint first-order screen of 8 diverse starts, then the AO
from the best), "fast", "thorough" (the best-known search) or "legacy" (one random start; data-set
labels use it). Measured against the best-known designs of the quality suite:
``irs-torch bench quality`` (:mod:`irs_torch.bench.quality`).

Building blocks: :mod:`.transmit` (P2), :mod:`.reflect` (P3 by first order; :mod:`.reflect_sdr` by SCA + SDR
on the Theta model :mod:`.theta_model`), :mod:`.ao` (the AO loop), :mod:`.starts`
(starting points), :mod:`.screen` (the joint first-order screen), :mod:`.strategy` (``solve`` and the
effort levels), :mod:`.baselines`.
"""
from irs_torch.solvers.result import (  # noqa: F401
    EFFORTS,
    INIT_KINDS,
    METHODS,
    P2_SOLVERS,
    P3_METHODS,
    SolveResult,
    SolverOptions,
)


def __getattr__(name):  # lazy: `from irs_torch.solvers import SolverOptions` imports no cvxpy (fast start-up)
    if name == "solve":
        from irs_torch.solvers.strategy import solve

        return solve
    if name == "initial_point":
        from irs_torch.solvers.starts import initial_point

        return initial_point
    raise AttributeError(f"module 'irs_torch.solvers' has no attribute {name!r}")


__all__ = ["SolverOptions", "SolveResult", "solve", "initial_point", "METHODS", "P2_SOLVERS", "P3_METHODS",
           "INIT_KINDS", "EFFORTS"]

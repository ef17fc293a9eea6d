"""Calling the conic solvers (SCS, Clarabel) on compiled cvxpy problems, with a fallback chain.

docs/assumptions.md ("Numerical experience"): SCS at its default tolerance returns ``optimal_inaccurate``
with suboptimal points, so SCS runs with tightened ``eps_abs = eps_rel``; Clarabel 0.11 stops at
its first iteration on many scaled SDPs unless equilibration is off, so it runs with
``equilibrate_enable=False``. A status is never trusted alone: callers check the returned point
with the torch model.
"""
from __future__ import annotations

import time
import warnings

import cvxpy as cp

OK_STATUSES = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)


def solver_kwargs(solver: str, eps: float, small: bool = True, fallback: bool = False) -> dict:
    """Settings passed to ``cvxpy.Problem.solve`` for ``solver`` ("SCS" or "CLARABEL").

    Clarabel runs single-threaded (data-set generation runs many solver processes) with the QDLDL
    factorisation on small problems (``small``; faster than faer below ~20 x 20 PSD blocks).
    As a fallback (``fallback``) SCS gets 5000 iterations (it is slow on these SDPs), else 50000.
    No warm start (``warm_start=False`` for both, so cvxpy never reads the solver state it caches
    on a compiled problem): a solve must not depend on what the process solved before (data-set labels).
    """
    if solver == "SCS":
        return dict(solver=cp.SCS, eps_abs=eps, eps_rel=eps, max_iters=5_000 if fallback else 50_000,
                    acceleration_lookback=10, warm_start=False)
    if solver in ("CLARABEL", "CLARABEL-EQ"):
        # "CLARABEL-EQ": equilibration on, the retry of the P2 polish (measured on 8 first-order labels at
        # P_s <= 2e-3 W where Clarabel without it failed or called the SDP unbounded: 8 of 8 solved, 0.7 CPU s each)
        kw = dict(solver=cp.CLARABEL, equilibrate_enable=solver == "CLARABEL-EQ", tol_gap_abs=1e-9,
                  tol_gap_rel=1e-9, tol_feas=1e-9, max_iter=300, max_threads=1, warm_start=False)
        if small:
            kw["direct_solve_method"] = "qdldl"
        return kw
    raise ValueError(f"p2_solver must be 'SCS' or 'CLARABEL' (or 'CLARABEL-EQ'), got {solver!r}")


def run(prob: cp.Problem, solver: str, eps: float, verbose: bool = False, small: bool = True,
        fallback: bool = False) -> tuple[str, float]:
    """Solve ``prob`` (already built; DPP re-solve) with ``solver``. Returns (status, seconds).

    Solver exceptions are caught and reported as status ``"error: <message>"``.
    """
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prob.solve(verbose=verbose, **solver_kwargs(solver, eps, small, fallback))
        status = str(prob.status)
    except (cp.error.SolverError, ValueError, ArithmeticError) as e:  # pragma: no cover - solver specific
        status = f"error: {type(e).__name__}: {e}".splitlines()[0][:200]
    return status, time.perf_counter() - t0


def fallback_order(primary: str) -> list[str]:
    """The primary solver first, then the other one."""
    other = "SCS" if primary.startswith("CLARABEL") else "CLARABEL"
    return [primary, other]

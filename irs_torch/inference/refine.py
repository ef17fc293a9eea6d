"""Refinement of the network's designs by the exact solver: the AO from each start
(:func:`refine_starts`, settings :func:`warm_start_options`), or the batched first-order method for many
scenarios at once (:func:`refine_fo`), followed by one P2 solve per instance
(:func:`irs_torch.solvers.portfolio.polish_transmit`).
"""
from __future__ import annotations

import time

import torch

from irs_torch.scenario import Scenario
from irs_torch.solvers.portfolio import FirstOrderBatch, refine_portfolio

#: AO iterations of the refinement stage by default (measured on the shipped model's test split: the
#: first 2-3 warm iterations bring the network's design to the cold AO's level; later ones add about
#: 1% each at 0.1-0.15x of a cold solve's time each; see docs/learned.md).
REFINE_ITER = 3


def warm_start_options(options=None, refine_iter: int | None = REFINE_ITER):
    """The AO settings of the refinement stage: ``options`` (default :class:`SolverOptions`) with the
    first reflective step (P3) run like the AO's later ones - one start (the current psi, i.e. the
    network's), ``p3_warm_steps`` Adam steps - instead of the cold solve's multi-start
    (``p3_starts`` x ``p3_steps``, whose random restarts are what a good start makes unnecessary).
    Measured on the paper data set: the cold first P3 is most of a warm AO's time. ``refine_iter``:
    cap on the AO iterations (``min(options.max_iter, refine_iter)``; None: ``options.max_iter``)."""
    import dataclasses

    from irs_torch.solvers import SolverOptions

    opts = options or SolverOptions()
    if refine_iter is not None and (isinstance(refine_iter, bool) or not isinstance(refine_iter, int)
                                    or refine_iter < 1):
        raise ValueError(f"refine_iter must be None or an integer >= 1, got {refine_iter!r}")
    it = opts.max_iter if refine_iter is None else min(opts.max_iter, refine_iter)
    return dataclasses.replace(opts, p3_starts=1, p3_steps=opts.p3_warm_steps, max_iter=it)


def refine_starts(scenario: Scenario, starts, options=None, refine_iter: int | None = REFINE_ITER):
    """The refinement stage from several starts, keeping the best: the AO with
    :func:`warm_start_options` from each ``(R_s, psi)`` in ``starts`` (run one after another), then the
    successful run with the smallest max-CRB (the best run if none succeeded). Returns
    ``(best SolveResult, runs)`` with ``runs`` one dict per start: ``start_max_crb``, ``max_crb``,
    ``nit``, ``success``, ``seconds``. The same function refines network hypotheses and heuristic
    starts in ``irs-torch bench warmstart`` (equal refinement budgets)."""
    from irs_torch.solvers import SolverOptions, solve

    opts = warm_start_options(options or SolverOptions(), refine_iter)
    best, runs = None, []
    for R, psi in starts:
        t = time.perf_counter()
        r = solve(scenario, method="ao", init={"R_s": R, "psi": psi}, options=opts)
        runs.append({"start_max_crb": float(r.init_max_crb), "max_crb": float(r.max_crb), "nit": int(r.nit),
                     "success": bool(r.success), "seconds": time.perf_counter() - t})
        if best is None or (r.success, -r.max_crb) > (best.success, -best.max_crb):
            best = r
    if best is None:
        raise ValueError("refine_starts needs at least one start")
    return best, runs


#: First-order refinement (``refine="fo"``): at most this many Adam steps (each instance stops earlier when its
#: iterates gain < 0.1% in :data:`FO_PATIENCE` steps: ``stall="trajectory"`` of
#: :func:`irs_torch.solvers.first_order.refine_batch`), then one P2 solve per instance unless ``polish=False``.
FO_STEPS = 400
FO_PATIENCE = 25
#: Network hypotheses refined by ``refine="fo"`` by default (the combined design and the next best singles).
FO_HYPOTHESES = 4


def refine_fo(scenarios: Scenario, R0: torch.Tensor, psi0: torch.Tensor, *, options=None, steps: int = FO_STEPS,
              patience: int = FO_PATIENCE, polish: bool = True, extra_starts: int = 0, device=None,
              progress: bool = False, start_names=None, relaxed: int | None = None,
              stall: str = "trajectory") -> FirstOrderBatch:
    """The first-order refinement stage for B scenarios (batch ``(B,)``) from K starts each (R0 ``(K, B, L, M,
    M)``, psi0 ``(K, B, L, N)``, e.g. :func:`irs_torch.inference.network_starts`, named ``start_names``, default
    ``network#j``), plus ``extra_starts`` diverse heuristic starts per instance (the first ``relaxed`` of them, by
    default half, also from 10 P_s: a continuation inside the run, for C1-binding instances; measured on 1000 draws,
    4 of them with the network's 4 designs cut the p90 from 1.72x to 1.00x the best found, docs/learned.md): the
    solvers' batched portfolio
    (:func:`irs_torch.solvers.portfolio.refine_portfolio`: all instances together, feasible at every iterate,
    per-instance early stopping, then with ``polish`` one P2 solve per instance, :func:`polish_transmit`).
    ``stall``: the early-stopping rule (default ``"trajectory"``: an instance stops when its iterates stop improving,
    not when they fail to beat the start within ``patience`` steps; from the network's designs, which sit at the edge
    of the feasible set, Adam's first steps are often worse than the start, and the old rule ``"best"`` stopped
    there: it left 57 of 169 held-out draws within 0.1% of the network's own design).
    Status per item: ``"first-order+p2"``, ``"first-order"`` (no polish) or ``"first-order (P2 polish
    failed)"`` (the first-order point is kept; counted in the failures as the AO counts its P2 steps)."""
    names = list(start_names) if start_names is not None else [f"network#{j}" for j in range(int(R0.shape[0]))]
    return refine_portfolio(scenarios, R0, psi0, names=names, options=options, steps=steps, patience=patience,
                            polish=polish, extra_starts=extra_starts,
                            relaxed=int(extra_starts) // 2 if relaxed is None else relaxed, device=device,
                            progress=progress, stall=stall)

"""Batched first-order portfolios: many starts of many scenarios refined together, then one P2 solve each.

:func:`refine_portfolio` is the one engine behind

* the learned pipeline's ``refine="fo"`` (the network's hypotheses, optionally with heuristic starts), and
* the ``first-order`` effort (:func:`first_order_portfolio`): diverse heuristic starts, some of them also from a
  relaxed IRS budget (a continuation inside the run), with no network at all. It labels data sets in batches:
  measured on the quality suite's 24 paper-size instances (one thread, one batch of 24, loaded 2-core VM), median
  1.0000x, p90 1.009x the best-known max-CRB at 1.9-2.2 CPU s per label (1650-1900 labels per core-hour in two
  runs), against
  1.0028x / 1.14x at 8.2 s for the ``portfolio`` effort and 1.0056x / 1.06x at 11.3 s for ``default``, both
  solved one instance at a time (``scripts/bench_labels.py``).

Each design comes from :func:`irs_torch.solvers.first_order.refine_batch` (feasible at every iterate) and, unless
``polish=False``, :func:`polish_transmit`: the transmit SDP (P2) for the found psi, so R_s is certified optimal for
that psi up to the certificate's gap, and the max-CRB never rises.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from irs_torch.scenario import Scenario

#: The ``first-order`` effort: diverse starts, the first FO_RELAXED of them a second time from 10 P_s, at most
#: FO_LABEL_STEPS Adam steps (each instance stops when its best start gains < 0.1% in FO_LABEL_PATIENCE steps),
#: then one P2 solve. Measured on the quality suite's 24 paper-size instances in one batch, the three step caps
#: back to back (one thread, 2-core VM at load ~4; ratio to best-known median / p90 / max, CPU s per label):
#: 600 steps 1.0001 / 1.033 / 1.155, 1.55 s; 800: 1.0004 / 1.024 / 1.115, 1.70 s; 1000: 1.0000 / 1.009 / 1.016,
#: 1.89 s. Longer runs help the C1-binding tail (the first-order method moves slowly along the C1 boundary);
#: 1000 keeps it within 2%.
FO_STARTS, FO_RELAXED, FO_LABEL_STEPS, FO_LABEL_PATIENCE = 6, 2, 1000, 100
#: The IRS budget factor the relaxed starts begin from (moved geometrically to P_s over the first half of the run).
RELAX_P_S = 10.0


def polish_transmit(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, options=None) -> tuple:
    """One P2 solve (the transmit SDP, :func:`irs_torch.solvers.transmit.solve_transmit_sdp`) for the given psi of
    one unbatched scenario, from ``R_s``: returns ``(R, history_entry, certified)`` where R is P2's point if it
    lowers the max-CRB (it is then optimal for psi up to the certificate's gap) and ``R_s`` otherwise (never
    worse); ``history_entry`` carries the P2 status, failure counts and ``p2_gap_bound`` as the AO's history
    entries do; ``certified``: P2 returned a point whose full-space duality gap bound is within its tolerance.
    Shapes: R_s ``(L, M, M)`` [W], psi ``(L, N)``."""
    from irs_torch.solvers.ao import STEP_ERRORS, p2_record
    from irs_torch.solvers.result import SolverOptions
    from irs_torch.solvers.transmit import TransmitResult, solve_transmit_sdp

    opts = options or SolverOptions()
    scn = scenario.to(torch.complex128)
    R_s, psi = R_s.to(torch.complex128), psi.to(torch.complex128)
    c0 = scn.crb(R_s, psi, validate=False).total
    before = float(c0.max())
    t0 = time.perf_counter()
    # No SCS fallback: it took 20-45 s per instance on the points where Clarabel fails, 20x the whole refinement.
    # Clarabel with equilibration is the retry instead (those failures come at low P_s; see conic.solver_kwargs).
    # Where both fail, the first-order point is kept.
    tries = [opts.p2_solver] + (["CLARABEL-EQ"] if opts.p2_solver.upper() == "CLARABEL" else [])
    failures = []
    for name in tries:
        try:
            p2 = solve_transmit_sdp(scn, psi, R_ref=R_s, solver=name.upper(), eps=opts.p2_eps,
                                    subspace=opts.p2_subspace, fallback=False)
        except STEP_ERRORS as e:
            p2 = TransmitResult(R_s=R_s, crb=c0, max_crb=before, status=f"error: {type(e).__name__}: {e}"[:200],
                                solver="none", sdp_bound=float("nan"), failed=True, solver_failures=1,
                                times={"total": time.perf_counter() - t0})
        if not p2.failed:
            break
        failures.append(f"{name}: {str(p2.status)[:160]}")
    if failures and not p2.failed:  # the retry solved it: say so, and count the failed try as the AO counts its
        p2.status = f"{p2.status} (after {'; '.join(failures)})"[:400]  # solver fallbacks
        p2.solver_failures = int(p2.solver_failures) + len(failures)
    rec = {"it": 1, "step": "p2-polish", "max_crb": before, "p2_gap_bound": float(p2.gap_bound), **p2_record(p2)}
    ok = not p2.failed and math.isfinite(p2.max_crb) and p2.max_crb <= before
    certified = bool(ok and not p2.inexact and p2.gap_bound <= 1e-4 * max(p2.max_crb, 1e-300))
    R = p2.R_s.to(torch.complex128) if ok else R_s
    c = scn.crb(R, psi, validate=False).total
    rec.update(max_crb=float(c.max()), crb=c.tolist(), t_p2=float(p2.times.get("total", 0.0)))
    return R, rec, certified


@dataclass
class FirstOrderBatch:
    """Designs of :func:`refine_portfolio` for B scenarios: R_s ``(B, L, M, M)`` [W], psi ``(B, L, N)``
    complex128; crb ``(B, L)`` [rad^2]; max_crb, start_max_crb (the winning start's, before refinement) ``(B,)``;
    success ``(B,)`` bool (feasible with finite CRBs; a failed P2 polish keeps the first-order point and says so in
    ``status``, ``history`` and ``item_result(i).message``); status, history (one list of entries per item: the P2
    polish), certified ``(B,)`` bool; init_R_s, init_psi: the winning start of each item (``(B, ...)``);
    steps ``(B,)`` first-order steps; found_by: the winning start's name per item; times [s] and settings."""

    scenarios: Scenario
    R_s: torch.Tensor
    psi: torch.Tensor
    crb: torch.Tensor
    max_crb: torch.Tensor
    start_max_crb: torch.Tensor
    success: torch.Tensor
    status: list
    history: list
    certified: torch.Tensor
    steps: torch.Tensor
    found_by: list
    times: dict
    settings: dict
    init_R_s: torch.Tensor | None = None
    init_psi: torch.Tensor | None = None

    def item_result(self, i: int, options=None):
        """Item ``i`` as a :class:`~irs_torch.solvers.SolveResult` (``nit``: 1 with the P2 polish, else 0; the
        winning start's design as ``init_*``; failure counts from the polish's history entry)."""
        from irs_torch.solvers.result import SolveResult, SolverOptions, failure_counts

        opts = options or SolverOptions()
        scn = self.scenarios[i]
        R, psi = self.R_s[i], self.psi[i]
        c = scn.crb(R, psi, validate=False)
        hist = list(self.history[i])
        fails = failure_counts(hist)
        init = (None, None) if self.init_R_s is None else (self.init_R_s[i], self.init_psi[i])
        c0 = None if init[0] is None else scn.crb(init[0], init[1], validate=False).total
        msg = ""
        if fails["p2_failed"]:
            msg = ("warning: the P2 polish failed (" + str(hist[-1].get("p2_status", ""))[:120] + "): the design is "
                   "the first-order point, feasible but R_s not certified optimal for psi")
        return SolveResult(R_s=R, psi=psi, crb=c.total, max_crb=float(c.total.max()),
                           margins={k: v for k, v in scn.constraint_margins(R, psi).items()}, history=hist,
                           status=self.status[i], success=bool(self.success[i]), nit=len(hist),
                           times={"p2": float(sum(h.get("t_p2", 0.0) for h in hist)), "p3": 0.0,
                                  "first_order": float(self.times.get("first_order", 0.0)),
                                  "total": float(sum(self.times.values())) / max(len(self.found_by), 1)},
                           options={**opts.to_dict(), **self.settings, "found_by": self.found_by[i],
                                    "p2_certified": bool(self.certified[i]), "fo_steps": int(self.steps[i])},
                           init_R_s=init[0], init_psi=init[1], init_crb=None if init[0] is None else c0,
                           init_max_crb=float(self.start_max_crb[i]), crb_theta=c.theta, crb_phi=c.phi,
                           message=msg, failures=fails)


def refine_portfolio(scenarios: Scenario, R0: torch.Tensor | None = None, psi0: torch.Tensor | None = None, *,
                     names=None, options=None, steps: int = FO_LABEL_STEPS, patience: int = FO_LABEL_PATIENCE,
                     polish: bool = True, extra_starts: int = 0, relaxed: int = 0, lr: float | None = None,
                     decay: float | None = None, seeds=None, device=None, progress: bool = False,
                     stall: str = "best") -> FirstOrderBatch:
    """Refine K given starts (R0 ``(K, B, L, M, M)`` [W], psi0 ``(K, B, L, N)``, named ``names``; both may be None
    for K = 0) plus ``extra_starts`` diverse heuristic starts per instance
    (:func:`irs_torch.solvers.starts.diverse_starts`, seeded by ``seeds[i]`` for item i, default
    ``options.seed`` for all), the first ``relaxed`` of those
    a second time from a relaxed IRS budget (:data:`RELAX_P_S` P_s; active IRSs only) of B scenarios (batch
    ``(B,)``) together by :func:`irs_torch.solvers.first_order.refine_batch` (feasible at every iterate,
    per-instance early stopping after ``patience`` steps without a 0.1% gain), then with ``polish`` one P2 solve
    per instance (:func:`polish_transmit`). ``lr``/``decay``: the Adam schedule (default: refine_batch's, which
    are the default screen's).

    Status per item: ``"first-order+p2"``, ``"first-order"`` (no polish) or ``"first-order (P2 polish failed)"``
    (the conic solver failed or returned an inexact point: the first-order point is kept, and counted in the
    failures as the AO counts its P2 steps); ``"infeasible"`` where the design is not feasible."""
    from irs_torch.solvers.first_order import refine_batch
    from irs_torch.solvers.result import SolverOptions
    from irs_torch.solvers.starts import diverse_starts

    opts = options or SolverOptions()
    t0 = time.perf_counter()
    scn = scenarios.to(torch.complex128)
    if not scn.batch_shape:
        raise ValueError("refine_portfolio needs a batched scenario (B,); use Scenario.stack([scenario])")
    B = int(scn.batch_shape[0])
    if seeds is not None and len(seeds) != B:
        raise ValueError(f"seeds must hold one seed per scenario ({B}), got {len(seeds)}")
    starts_R, starts_psi = [], []
    item_names = [[] for _ in range(B)]  # per item: the name of each start
    if R0 is not None:
        starts_R.append(R0.to(torch.complex128))
        starts_psi.append(psi0.to(torch.complex128))
        given = list(names) if names is not None else [f"start#{j}" for j in range(int(R0.shape[0]))]
        item_names = [list(given) for _ in range(B)]
    n_extra, n_rel = int(extra_starts), min(int(relaxed), int(extra_starts)) if scn.active else 0
    if n_extra:
        ds = [diverse_starts(scn[i], n_extra, seed=opts.seed if seeds is None else int(seeds[i])) for i in range(B)]
        dR = torch.stack([torch.stack([d[1] for d in di]) for di in ds], 1).to(torch.complex128)  # (n, B, ...)
        dpsi = torch.stack([torch.stack([d[2] for d in di]) for di in ds], 1).to(torch.complex128)
        starts_R += [dR, dR[:n_rel]]
        starts_psi += [dpsi, dpsi[:n_rel]]
        for i, di in enumerate(ds):
            kinds = [d[0] for d in di]
            item_names[i] += kinds + [f"{k} from {RELAX_P_S:g} P_s" for k in kinds[:n_rel]]
    if not starts_R:
        raise ValueError("refine_portfolio needs starts: pass R0/psi0 or extra_starts >= 1")
    R_all, psi_all = torch.cat(starts_R), torch.cat(starts_psi)
    K = int(R_all.shape[0])
    relax = None
    if n_rel:
        relax = torch.ones(K, 2, dtype=torch.float64)
        relax[K - n_rel:, 1] = RELAX_P_S
    sched = {k: v for k, v in (("lr", lr), ("decay", decay)) if v is not None}  # default: refine_batch's
    fo = refine_batch(scn, R_all, psi_all, steps=steps, patience=patience, relax=relax, device=device,
                      progress=progress, stall=stall, **sched)
    t1 = time.perf_counter()
    R, psi = fo.R_s, fo.psi
    history = [[] for _ in range(B)]
    certified = torch.zeros(B, dtype=torch.bool)
    if polish:
        Rp = []
        items = range(B)
        if progress:
            from tqdm.auto import tqdm

            items = tqdm(items, desc="P2 polish", unit="scenario")
        for i in items:
            Ri, rec, cert = polish_transmit(scn[i], R[i], psi[i], opts)
            Rp.append(Ri)
            history[i].append(rec)
            certified[i] = cert
        R = torch.stack(Rp)
    t2 = time.perf_counter()
    c = scn.crb(R, psi, validate=False).total
    feas = scn.is_feasible(R, psi, rtol=opts.feas_rtol) & torch.isfinite(c).all(-1)
    failed = [bool(h and h[-1].get("p2_failed")) for h in history]
    status = [("first-order (P2 polish failed)" if failed[i] else "first-order+p2" if polish else "first-order")
              if bool(feas[i]) else "infeasible" for i in range(B)]
    ar = torch.arange(B)
    R_init = R_all[fo.start, ar]
    psi_init = scn.scale_psi_to_feasible(R_init, psi_all[fo.start, ar])
    return FirstOrderBatch(init_R_s=R_init, init_psi=psi_init, scenarios=scn, R_s=R, psi=psi, crb=c,
                           max_crb=c.amax(-1), start_max_crb=fo.start_max_crb[fo.start, ar],
                           success=feas.clone(), status=status, history=history, certified=certified,
                           steps=fo.steps, found_by=[item_names[i][int(j)] for i, j in enumerate(fo.start)],
                           times={"first_order": t1 - t0, "polish": t2 - t1},
                           settings={"refine": "fo", "fo": fo.settings, "polish": bool(polish),
                                     "extra_starts": n_extra, "relaxed_starts": n_rel})


def first_order_portfolio(scenarios: Scenario, options=None, seeds=None, progress: bool = False) -> FirstOrderBatch:
    """The ``first-order`` effort for B scenarios at once (batch ``(B,)``): :data:`FO_STARTS` diverse starts,
    :data:`FO_RELAXED` of them also from 10 P_s, :data:`FO_LABEL_STEPS` steps at most, one P2 solve each
    (:func:`refine_portfolio`). ``FirstOrderBatch.item_result(i)`` gives instance i as a ``SolveResult`` whose
    ``options["found_by"]`` names the winning start. ``seeds``: one start seed per scenario (default
    ``options.seed`` for all)."""
    res = refine_portfolio(scenarios, options=options, seeds=seeds, extra_starts=FO_STARTS, relaxed=FO_RELAXED,
                           steps=FO_LABEL_STEPS, patience=FO_LABEL_PATIENCE, progress=progress)
    res.settings["effort"] = "first-order"
    return res

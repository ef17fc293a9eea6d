"""Alternating optimisation (Algorithm of Section IV): P2 (transmit SDP) and P3 (reflect) in turn.

:func:`solve_direct` runs a method (the AO, or one step of a benchmark) from the given start, or from
``options.n_starts`` starts; it is a plain function: :func:`irs_torch.solvers.solve`
(:mod:`irs_torch.solvers.strategy`) decides the strategy and calls it for each start.

The max-CRB is non-increasing by construction: a P2 result is accepted only if its torch-model
max-CRB is not above the current one, and P3 never returns a worse psi_l. Stops when the relative
improvement of an iteration is below ``rtol`` or after ``max_iter`` iterations.

Failures are counted, never hidden: a P2 step fails when no conic solve returned a point
(:class:`~irs_torch.solvers.transmit.TransmitResult` ``failed``) or it raised (a returned point
that fails the constraint check is repaired and counted as ``inexact``, not failed); a P3 step fails
when psi of some IRS could not be optimised at all
(:class:`~irs_torch.solvers.reflect.ReflectResult` ``failed``) or it raised. A failed P2 step's
point is never accepted (R_s stays), a failed IRS keeps its psi; each history entry records
``p2_failed`` / ``p3_failed`` and the solver failure counts, and :func:`_result` turns them into
``failures``, ``success``, ``status`` and ``message`` (the rule is in :class:`SolveResult`).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from cvxpy.error import SolverError

from irs_torch.scenario import Scenario
from irs_torch.solvers.baselines import passive_scenario
from irs_torch.solvers.reflect import ReflectResult, solve_reflect_first_order
from irs_torch.solvers.reflect_sdr import solve_reflect_sca
from irs_torch.solvers.result import METHODS, SolveResult, SolverOptions, failure_counts
from irs_torch.solvers.starts import amax_start, balance_power, initial_point
from irs_torch.solvers.transmit import TransmitResult, solve_transmit_sdp


# ----------------------------------------------------------------------------- the steps
def _p2(scn, psi, R, options, t_hint):
    return solve_transmit_sdp(scn, psi, R_ref=R, solver=options.p2_solver, eps=options.p2_eps,
                              subspace=options.p2_subspace, t_hint=t_hint, verbose=options.verbose)


def _p3(scn, R, psi, options, it):
    if options.p3 == "sca-sdr":
        return solve_reflect_sca(scn, R, psi, max_iter=options.sca_iter, n_randomizations=options.n_randomizations,
                                 seed=options.seed * 1000 + it, solver=options.p2_solver, eps=options.p2_eps,
                                 verbose=options.verbose)
    if it == 0:
        return solve_reflect_first_order(scn, R, psi, steps=options.p3_steps, n_starts=options.p3_starts,
                                         seed=options.seed * 1000 + it)
    return solve_reflect_first_order(scn, R, psi, steps=options.p3_warm_steps, n_starts=1,
                                     seed=options.seed * 1000 + it)


#: Exceptions of a P2 / P3 step that count as a failed step (the run goes on from the current point);
#: anything else (ValueError for bad input, bugs) propagates.
STEP_ERRORS = (SolverError, RuntimeError, ArithmeticError, np.linalg.LinAlgError)


def _error_text(e: Exception) -> str:
    return f"error: {type(e).__name__}: {e}".splitlines()[0][:200]


def p2_step(scn, psi, R, options, t_hint=None) -> TransmitResult:
    """:func:`_p2`, with a raised solver error turned into a failed :class:`TransmitResult` at R."""
    t0 = time.perf_counter()
    try:
        return _p2(scn, psi, R, options, t_hint)
    except STEP_ERRORS as e:
        c = scn.crb(R, psi).total
        return TransmitResult(R_s=R, crb=c, max_crb=float(c.max()), status=_error_text(e), solver="none",
                              sdp_bound=float("nan"), failed=True, solver_failures=1,
                              times={"total": time.perf_counter() - t0})


def _p3_step(scn, R, psi, options, it) -> ReflectResult:
    """:func:`_p3`, with a raised error turned into a failed :class:`ReflectResult` keeping psi."""
    t0 = time.perf_counter()
    try:
        return _p3(scn, R, psi, options, it)
    except STEP_ERRORS as e:
        c = scn.crb(R, psi).total
        r = ReflectResult(psi=psi, crb=c, max_crb=float(c.max()), improved=[False] * scn.L, method=options.p3,
                          times={"total": time.perf_counter() - t0}, failed=[True] * scn.L, solver_failures=1)
        r.steps = [{"error": _error_text(e)}]
        return r


def p2_record(p2: TransmitResult) -> dict:
    """The failure fields of a history entry for a P2 step."""
    return {"p2_status": p2.status, "p2_failed": bool(p2.failed), "p2_inexact": bool(getattr(p2, "inexact", False)),
            "p2_solver_failures": int(p2.solver_failures)}


def _p3_record(p3: ReflectResult) -> dict:
    """The failure fields of a history entry for a P3 step."""
    rec = {"p3_failed": bool(p3.any_failed), "p3_failed_irs": [bool(x) for x in p3.failed],
           "p3_solver_failures": int(p3.solver_failures)}
    if p3.steps and isinstance(p3.steps[0], dict) and "error" in p3.steps[0]:
        rec["p3_error"] = p3.steps[0]["error"]
    elif p3.any_failed and p3.method == "sca-sdr":  # the last SDR status of a failed IRS
        sts = [r.get("status", "") for l, hist in enumerate(p3.steps) if p3.failed[l] for r in hist]
        if sts:
            rec["p3_status"] = f"SDR: {sts[-1]}"
    return rec


def _result(scn, R, psi, *, method, options, history, status, nit, times, R0, psi0, info, message=""):
    c = scn.crb(R, psi)
    ok = bool(scn.is_feasible(R, psi, rtol=options.feas_rtol)) and bool(torch.isfinite(c.total).all())
    c0 = scn.crb(R0, psi0).total
    if scn.active and float(psi.abs().max()) < 1.0:
        floor = 2.0 * float(scn.sigma_r2) * scn.N
        why = (f"a_max = {float(scn.a_max):.3g} < 1" if float(scn.a_max) < 1 else
               f"P_s = {float(scn.P_s):.3g} W is near the IRS noise floor (2 sigma_r2 N |psi|^2 = {floor:.3g} W "
               f"at |psi| = 1) or the echo power")
        message = (message + "; " if message else "") + (
            f"C1 limits max|psi| to {float(psi.abs().max()):.3g} < 1 (the active IRS attenuates): {why}")
    # failure accounting (the rule: SolveResult's docstring)
    fail = failure_counts(history)
    notes, failed_all = [], []
    for step, name in (("p2", "P2 (transmit SDP)"), ("p3", "P3 (reflective design)")):
        n, k = fail[f"{step}_steps"], fail[f"{step}_failed"]
        if k:
            last = next(h for h in reversed(history) if h.get(f"{step}_failed"))
            why = last.get("p2_status", "") if step == "p2" else last.get("p3_error") or (
                "no usable solve for IRS "
                + ", ".join(str(i + 1) for i, x in enumerate(last.get("p3_failed_irs", [])) if x)
                + (f" ({last['p3_status']})" if "p3_status" in last else ""))
            notes.append(f"{name} failed in {k} of {n} steps (last: {why})")
            if k == n:
                failed_all.append(step.upper())
    if not ok:
        status = "infeasible"
    elif failed_all:
        status, ok = "solver-failed", False
    if fail.get("p2_inexact"):
        message = (message + "; " if message else "") + (
            f"note: {fail['p2_inexact']} of {fail['p2_steps']} P2 steps returned only inexact points (constraint "
            f"violation above the check's tolerance), repaired to exact feasibility and used")
    if notes:
        what = (
            ("FAILED: " if failed_all else "warning: ")
            + "; ".join(notes)
            + (
                f"; the returned design is feasible but was not optimised by {' or '.join(failed_all)}"
                if failed_all
                else "; the returned point comes from the steps that succeeded"
            )
        )
        message = what + ("; " + message if message else "")
    opts = {**options.to_dict(), "method": method, "init": info}
    if method == "passive":
        opts["passive_scenario"] = {"active": False, "sigma_r2": float(scn.sigma_r2), "P_t": float(scn.P_t)}
    return SolveResult(R_s=R.detach(), psi=psi.detach(), crb=c.total.detach(), max_crb=float(c.total.max()),
                       margins={k: v.detach() for k, v in scn.constraint_margins(R, psi).items()}, history=history,
                       status=status, success=ok, nit=nit, times=times, options=opts, init_R_s=R0.detach(),
                       init_psi=psi0.detach(), init_crb=c0.detach(), init_max_crb=float(c0.max()),
                       crb_theta=c.theta.detach(), crb_phi=c.phi.detach(), message=message, failures=fail)


def _ao(scn, R, psi, options, progress, label=""):
    """The AO loop from (R, psi). Returns (R, psi, history, status, nit, t_p2, t_p3)."""
    cur = float(scn.max_crb(R, psi))
    history = []
    t_p2 = t_p3 = 0.0
    t_hint = None
    status = "max-iter"
    bar = None
    if progress:
        from irs_torch.outputs import progress_bar

        bar = progress_bar(total=options.max_iter, desc=f"AO{label}", unit="it", leave=False)
    nit = 0
    for it in range(options.max_iter):
        nit = it + 1
        prev = cur
        p2 = p2_step(scn, psi, R, options, t_hint)
        t_p2 += p2.times["total"]
        p2_accepted = not p2.failed and p2.max_crb <= cur  # a failed step's point is never taken
        if p2_accepted:
            R, cur, t_hint = p2.R_s, p2.max_crb, p2.t
        p3 = _p3_step(scn, R, psi, options, it)
        t_p3 += p3.times["total"]
        psi = p3.psi
        R, psi, rho = balance_power(scn, R, psi)
        c = scn.crb(R, psi).total
        cur = float(c.max())
        history.append({"iter": it, "max_crb": cur, "crb": c.tolist(), "t_p2": p2.times["total"],
                        "t_p3": p3.times["total"], "p2_status": p2.status, "p2_solver": p2.solver,
                        "p2_accepted": p2_accepted, "p2_gap_bound": p2.gap_bound, "p2_rounds": p2.rounds,
                        "p3_improved": list(p3.improved), "balance_rho": rho.tolist(),
                        **p2_record(p2), **_p3_record(p3)})
        if bar is not None:
            bar.set_postfix(max_crb=f"{cur:.4e}")
            bar.update(1)
        if prev - cur <= options.rtol * abs(prev):
            status = "converged"
            break
    if bar is not None:
        bar.close()
    return R, psi, history, status, nit, t_p2, t_p3


def solve_direct(
    scenario: Scenario, method: str, init: dict | None, options: SolverOptions, progress: bool
) -> SolveResult:
    """:func:`irs_torch.solvers.solve` without the effort strategy (:mod:`irs_torch.solvers.strategy`): ``method`` from
    ``init`` (and, for "ao" with ``init=None``, ``options.n_starts`` starts), with the caller's torch
    threads. The strategy's AO runs and the best-known search call it for each start."""
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be a Scenario, got {type(scenario).__name__}")
    if scenario.batch_shape:
        raise ValueError(
            f"solve needs an unbatched scenario, got batch shape {tuple(scenario.batch_shape)}; index it (scenario[i])"
        )
    scn = scenario.to(torch.complex128)
    if method == "passive":
        scn = passive_scenario(scn, fair=options.passive_fair)
    R0, psi0, info = initial_point(scn, init, options)
    times = {"p2": 0.0, "p3": 0.0}
    if method == "transmit-only":
        p2 = p2_step(scn, psi0, R0, options)
        R = p2.R_s if not p2.failed and p2.max_crb <= float(scn.max_crb(R0, psi0)) else R0
        c = scn.crb(R, psi0).total
        hist = [{"iter": 0, "max_crb": float(c.max()), "crb": c.tolist(), "t_p2": p2.times["total"], "t_p3": 0.0,
                 "p2_gap_bound": p2.gap_bound, **p2_record(p2)}]
        times.update(p2=p2.times["total"], total=time.perf_counter() - t0)
        return _result(scn, R, psi0, method=method, options=options, history=hist, status="single-step", nit=1,
                       times=times, R0=R0, psi0=psi0, info=info)
    if method == "reflective-only":
        R = scn.isotropic_design()
        psi_s = psi0 if init and init.get("psi") is not None else scn.scale_psi_to_feasible(R, psi0)
        p3 = _p3_step(scn, R, psi_s, options, 0)
        c = scn.crb(R, p3.psi).total
        hist = [{"iter": 0, "max_crb": float(c.max()), "crb": c.tolist(), "t_p2": 0.0, "t_p3": p3.times["total"],
                 "p3_improved": list(p3.improved), **_p3_record(p3)}]
        times.update(p3=p3.times["total"], total=time.perf_counter() - t0)
        return _result(scn, R, p3.psi, method=method, options=options, history=hist, status="single-step", nit=1,
                       times=times, R0=R, psi0=psi_s, info=info)
    # AO (also for the passive benchmark, on the passive scenario)
    starts = [(R0, psi0, "")]
    if init is None and options.n_starts > 1:
        starts.append((*amax_start(scn, options.seed), " (a_max start)"))
        for k in range(2, options.n_starts):
            opt_k = SolverOptions(**{**options.to_dict(), "seed": options.seed + k})
            Rk, pk, _ = initial_point(scn, None, opt_k)
            starts.append((Rk, pk, f" (start {k + 1})"))
    best = None
    all_hist = []
    for si, (Rs, ps, label) in enumerate(starts):
        R, psi, hist, status, nit, t2, t3 = _ao(scn, Rs, ps, options, progress, label)
        times["p2"] += t2
        times["p3"] += t3
        for h in hist:
            h["start"] = si
        all_hist.append(hist)
        mx = float(scn.max_crb(R, psi))
        f = failure_counts(hist)  # prefer starts whose P2 and P3 did not fail throughout
        bad = any(f[f"{k}_steps"] and f[f"{k}_failed"] == f[f"{k}_steps"] for k in ("p2", "p3"))
        if best is None or (bad, mx) < (best[9], best[0]):
            best = (mx, R, psi, hist, status, nit, si, Rs, ps, bad)
    mx, R, psi, hist, status, nit, si, Rs, ps, _ = best
    times["total"] = time.perf_counter() - t0
    msg = f"best of {len(starts)} starts: start {si}" if len(starts) > 1 else ""
    res = _result(scn, R, psi, method=method, options=options, history=hist, status=status, nit=nit, times=times,
                  R0=Rs, psi0=ps, info=info, message=msg)
    if len(starts) > 1:
        res.options["starts_max_crb"] = [h[-1]["max_crb"] if h else float("nan") for h in all_hist]
    return res

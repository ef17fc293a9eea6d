"""Designs robust to where the target is.

The paper designs (R_s, psi) for the true target angles. A tracker only knows a region where the
target probably is. :func:`solve_robust` designs for a :class:`Region` (a box or a covariance
ellipse in the plane the IRSs see) represented by K candidate positions x_1..x_K (the region's
:meth:`Region.points`). With the BS and IRSs static, position x_k changes only the IRS-target
angles and beta (:func:`irs_torch.design.mismatch.move_target`), so every candidate has its own per-IRS
CRB ``c_kl(R_l, psi_l) = tr(F_kl^-1)`` (the paper's objective, mixed units as in the paper).
Objectives (``objective=``), each ``max_l j_l`` over the IRSs like the paper's:

* ``"worst"`` (default): ``j_l = max_k c_kl``, the worst case over the K candidates;
* ``"average"``: ``j_l = sum_k pi_k c_kl`` (equal weights pi_k = 1/K over the K points, i.e. the
  average over the region's prior when the points are draws from it, ``points_kind="sample"``);
* ``"bayesian"``: the posterior (Bayesian, Van Trees) CRB ``j_l = tr((Fbar_l + J_P,l)^-1)`` with
  ``Fbar_l = sum_k pi_k F_kl`` the prior-averaged SI FIM of (theta_l, phi_l, Re beta_l, Im beta_l) and
  ``J_P,l`` the prior's own information on the angles (zero on beta: no prior on the coefficient),
  as in ISAC designs that exploit the target-location distribution (posterior CRB with a location
  prior: Hou and Zhang, 2023; Xu and Zhang, "MIMO ISAC exploiting prior information", 2023).
  What is added, exactly: the position prior is Gaussian with covariance ``Sigma_x``
  (:meth:`Region.prior_covariance`: the ellipse's covariance; for a box the uniform box's,
  ``diag(dx^2, dy^2) / 3``), extended to 3-D with a vertical variance ``sigma_z^2`` (default 0: the
  target moves in the plane). Linearising the angles at the centre, ``xi_l = (theta_l, phi_l) ~
  N(., A_l Sigma_x A_l^T)`` with ``A_l = d(theta_l, phi_l) / d(x, y, z)`` (2 x 3, by autograd of
  :func:`irs_torch.physics.target_angles`), so ``J_P,l = (A_l Sigma_x A_l^T)^-1``, the angle block of
  the 4 x 4 prior information. A direction the prior fixes exactly (in the paper's geometry every
  node is at z = 0, so theta_l = pi/2 for every target in the plane and ``A Sigma A^T`` is singular)
  gets a prior standard deviation of ``PRIOR_FLOOR_RAD`` = 1 micro-rad, the numerical stand-in for
  infinite prior information: that angle's posterior bound is then <= 1e-12 rad^2 and the design
  concentrates on what the prior leaves unknown.

Constraints are exact: BS power (average over slots, (6)), R_s,l PSD, |psi_n| <= a_max, and the IRS
power C1 (7) **at every candidate position**: C1's echo terms ``|beta|^2 (u^T R u^*) ||psi||^2`` and
``sigma_r2 |beta|^2 ||psi||^4`` depend on the target through beta and the steering vector a(theta,
phi) in u (its other terms, ``sum |psi_n|^2 [G R G^H]_nn + 2 sigma_r2 ||psi||^2``, do not). In the
paper's scenario the echo terms are ~1e-10 of P_s, but they are enforced anyway (K C1 rows per IRS).

The solver (alternating optimisation, like :func:`irs_torch.solvers.solve`):

* start: the point design at the region's centre (:func:`irs_torch.solvers.solve` with the same
  options; or ``init``), its psi scaled to meet C1 at every candidate; then a joint first-order
  screen of the smoothed robust objective over (R_s, psi) from that start and diverse starts
  (the point design's narrow beams are a poor local optimum for a large region: without the screen
  the AO from the centre design improved the paper's 2 m box by 1%); the best screened point is
  taken only if it beats the centre design;
* P2 (R_s for fixed psi): the SDP ``min kappa`` with, per slot l and candidate k, the
  Schur-complement LMI ``[[Fbar_kl, I], [I, U_kl]] >= 0`` (so ``U_kl >= Fbar_kl^-1``) and
  ``w_kl . diag(U_kl) <= kappa`` (worst: K x L epigraph rows; average: ``sum_k`` of them per l;
  bayesian: one LMI per l on the averaged FIM plus the prior), K C1 rows per slot, the BS budget;
  the building blocks of :mod:`irs_torch.solvers.transmit` (FIM coefficient matrices of
  :func:`irs_torch.crb.fim_coefficient_matrices`, Jacobi scaling, the same real coordinates);
  full space (the point P2's rank-3 subspace argument does not hold for K > 1). The point is
  repaired to exact feasibility and accepted only if the torch-model objective does not rise;
* P3 (psi for fixed R_s): first order over the max: multi-start Adam on ``sum_l log`` of a smooth
  max (log-sum-exp over k of ``log c_kl`` for "worst") in the exact feasibility layer of
  :func:`irs_torch.solvers.reflect.solve_reflect_first_order` (``sigmoid`` amplitudes, then the
  closed-form largest real scale meeting C1 and a_max, here the smallest such scale over the K
  candidates, so C1 holds at every one); psi_l is taken only if the exact objective j_l falls;
* a power balance per slot (``R_l -> rho R_l``, psi re-scaled; never worse), as in the point AO.

The objective never rises, so the returned design's worst case over the K points is <= that of
the centre design it starts from. K = 1 with the point at the centre (and objective "worst" or
"average") is the point problem: :func:`solve_robust` then returns the point solver's result.

Example::

    from irs_torch.scenario import Scenario
    from irs_torch.design.robust import Region, solve_robust
    s = paper_scenario(seed=0)
    reg = Region.ellipse([5.0, 15.0, 0.0], [[0.5, 0.1], [0.1, 0.3]], k_sigma=2.0)  # m^2
    res = solve_robust(s, reg, K=9)        # SolveResult; res.R_s (L, M, M), res.psi (L, N)
    res.max_crb                            # worst-case max-CRB over the 9 points [rad^2 + beta units]
"""
from __future__ import annotations

import math
import time

import cvxpy as cp
import numpy as np
import torch

from irs_torch import crb as crb_model
from irs_torch.design.region import POINT_KINDS, Region, parse_region_spec
from irs_torch.design.robust_problem import (
    OBJECTIVES,
    PRIOR_FLOOR_RAD,
    RobustProblem,
    angle_prior_information,
    feasible_psi,
    region_crb,
    region_feasible,
    region_margins,
    robust_objective,
    robust_problem,
)
from irs_torch.design.robust_reflect import balance_region_power, robust_reflect, robust_screen
from irs_torch.design.robust_transmit import solve_robust_transmit
from irs_torch.errors import InputError
from irs_torch.scenario import Scenario
from irs_torch.solvers.result import SolveResult, SolverOptions, failure_counts

__all__ = ["Region", "RobustProblem", "robust_problem", "parse_region_spec", "solve_robust", "region_crb",
           "robust_objective", "angle_prior_information",
           "solve_robust_transmit", "OBJECTIVES", "POINT_KINDS", "PRIOR_FLOOR_RAD"]


def solve_robust(scenario: Scenario, region: Region, *, K: int = 9, objective: str = "worst",
                 options: SolverOptions | None = None, init: dict | None = None, points=None,
                 points_kind: str = "ring", sigma_z: float = 0.0, smooth: float = 30.0,
                 screen_starts: int = 8, screen_steps: int = 300, progress: bool = False) -> SolveResult:
    """A design (R_s, psi) for a target anywhere in ``region`` (module docstring).

    scenario: unbatched, with geometry (its own target position is not used: the candidates are
    ``region.points(K, options.seed, points_kind)``, or ``points`` ``(K, 3)`` [m] if given).
    objective: "worst" (default), "average" or "bayesian" (needs a region of positive size).
    options: :class:`~irs_torch.solvers.SolverOptions` (AO iterations ``max_iter``, ``rtol``, P2 solver,
    P3 steps / starts, seed, feasibility tolerance; also for the centre design). init: None (start from
    the point design at the centre) or ``{"R_s": ..., "psi": ...}`` (a warm start; made feasible).
    sigma_z: vertical prior std [m] (bayesian). smooth: log-sum-exp sharpness of the smooth max.
    screen_starts, screen_steps: the joint robust screen before the AO (0: off): Adam on the smoothed
    robust objective over (R_s, psi) from the start and ``screen_starts - 1`` diverse starts
    (:func:`irs_torch.solvers.starts.diverse_starts` at the centre), at most ``screen_steps`` steps;
    the AO continues from the best (kept only if it beats the start).

    Returns a :class:`~irs_torch.solvers.SolveResult`: R_s ``(L, M, M)`` [W], psi ``(L, N)``; ``crb``
    ``(L,)`` the per-IRS objective ``j_l`` and ``max_crb = max_l j_l`` (for "worst": the worst-case
    max-CRB over the K points); ``crb_theta``/``crb_phi`` ``(L,)``: the worst / average over the points
    of the theta / phi CRBs (bayesian: the posterior bounds); margins: constraint margins with C1 the
    worst over the points; history, status, success, failures as the AO's; ``options["robust"]``:
    objective, K, points, region, the centre design's objective and the CRB of the design at the centre.
    Raises :class:`~irs_torch.errors.InputError` for bad input (naming the field).
    """
    t0 = time.perf_counter()
    options = options or SolverOptions()
    if not isinstance(options, SolverOptions):
        raise InputError(f"options must be a SolverOptions, got {type(options).__name__}")
    if not isinstance(scenario, Scenario):
        raise InputError(f"scenario must be a Scenario, got {type(scenario).__name__}")
    if scenario.batch_shape:
        raise InputError(f"solve_robust needs an unbatched scenario, got batch shape {tuple(scenario.batch_shape)}")
    if not isinstance(region, Region):
        raise InputError(f"region must be a Region (Region.box / Region.ellipse), got {type(region).__name__}")
    if objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    for name, v in (("screen_starts", screen_starts), ("screen_steps", screen_steps)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name} must be an integer >= 0, got {v!r}")
    if not (isinstance(smooth, (int, float)) and math.isfinite(smooth) and smooth > 0):
        raise InputError(f"smooth must be a finite number > 0, got {smooth!r}")
    if points is None:
        pts = region.points(K, seed=options.seed, kind=points_kind)
    else:
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        if pts.dim() != 2 or pts.shape[-1] != 3 or pts.shape[0] < 1:
            raise InputError(f"points must have shape (K, 3) with K >= 1, got {tuple(pts.shape)}")
        if not bool(torch.isfinite(pts).all()):
            raise InputError("points must be finite")
    if objective == "bayesian" and region.size == 0:
        raise InputError("objective 'bayesian' needs a region of positive size (a point prior has "
                         "infinite information)")
    n0 = torch.get_num_threads()
    if options.torch_threads is not None and options.torch_threads != n0:
        torch.set_num_threads(options.torch_threads)
    try:
        return _solve_robust(scenario.to(torch.complex128), region, pts, objective, options, init, sigma_z,
                             smooth, progress, t0, int(screen_starts), int(screen_steps))
    finally:
        if torch.get_num_threads() != n0:
            torch.set_num_threads(n0)


def _solve_robust(scn, region, pts, objective, options, init, sigma_z, smooth, progress, t0, screen_starts,
                  screen_steps):
    from irs_torch.solvers import solve

    prob = robust_problem(scn, region, pts, objective, sigma_z, smooth)
    centre = prob.centre
    K = pts.shape[0]
    info = {"objective": objective, "K": K, "region": region.to_dict(), "points": pts.tolist(),
            "sigma_z": float(sigma_z), "smooth": float(smooth)}
    at_centre = bool(torch.allclose(pts, torch.tensor(region.centre, dtype=torch.float64).expand_as(pts),
                                    rtol=0, atol=0))
    if at_centre and objective != "bayesian":
        res = solve(centre, "ao", init, options, progress)  # K = 1 (or all points at the centre): the point problem
        info.update(reduced_to_point=True, centre_design_objective=float(res.max_crb),
                    centre_crb=res.crb.tolist())
        res.options["robust"] = info
        return res
    # start: the point design at the centre (or init)
    if init is None or (isinstance(init, dict) and init.get("R_s") is None and init.get("psi") is None):
        start = solve(centre, "ao", init, options, progress)
        R, psi = start.R_s, start.psi
        info["start"] = f"centre design ({start.status}, max-CRB at the centre {start.max_crb:.6g})"
    else:
        from irs_torch.solvers import initial_point

        R, psi, _ = initial_point(centre, init, options)
        info["start"] = "init"
    psi = feasible_psi(prob, R, psi)
    info["centre_design_objective"] = float(robust_objective(prob, R, psi).max())
    if screen_starts > 0:  # joint robust screen from the start and diverse starts; continue from the best
        from irs_torch.solvers.starts import diverse_starts

        t_s = time.perf_counter()
        st = [("start", R, psi)] + diverse_starts(centre, screen_starts - 1, seed=options.seed)[: screen_starts - 1]
        Rs, ps, Js = robust_screen(prob, torch.stack([x[1] for x in st]), torch.stack([x[2] for x in st]),
                                    steps=screen_steps)
        b = int(torch.argmin(Js))
        if float(Js[b]) < info["centre_design_objective"]:
            R, psi = Rs[b], ps[b]
        info.update(screen_found_by=st[b][0], screen_objective=Js.tolist(), screen_seconds=time.perf_counter() - t_s)
    R0, psi0 = R, psi
    cur = float(robust_objective(prob, R, psi).max())
    history, status, nit = [], "max-iter", 0
    t_p2 = t_p3 = 0.0
    for it in range(options.max_iter):
        nit = it + 1
        prev = cur
        try:
            p2 = solve_robust_transmit(prob, psi, R, solver=options.p2_solver, eps=options.p2_eps)
        except (RuntimeError, ArithmeticError, np.linalg.LinAlgError, cp.error.SolverError) as e:
            p2 = {"failed": True, "status": f"error: {type(e).__name__}: {e}"[:200], "time": 0.0}
        t_p2 += p2["time"]
        acc = (not p2["failed"]) and float(p2["j"].max()) <= cur
        if acc:
            R = p2["R_s"]
            cur = float(p2["j"].max())
        steps = options.p3_steps if it == 0 else options.p3_warm_steps
        p3 = robust_reflect(prob, R, psi, steps=steps, n_starts=options.p3_starts if it == 0 else 1,
                        seed=options.seed * 1000 + it)
        t_p3 += p3["time"]
        psi = p3["psi"]
        R, psi, rho = balance_region_power(prob, R, psi)
        j = robust_objective(prob, R, psi)
        cur = float(j.max())
        history.append({"iter": it, "max_crb": cur, "crb": j.tolist(), "t_p2": p2["time"], "t_p3": p3["time"],
                        "p2_status": p2["status"], "p2_accepted": acc, "p2_bound": p2.get("bound", float("nan")),
                        "p2_failed": bool(p2["failed"]),
                        "p2_inexact": bool(not p2["failed"] and p2["violation"] > 1e-4),
                        "p2_solver_failures": int(p2["status"].count("error") + p2["status"].count("infeasible")),
                        "p3_improved": p3["improved"], "p3_failed": any(p3["failed"]), "p3_failed_irs": p3["failed"],
                        "p3_solver_failures": 0, "balance_rho": rho.tolist()})
        if progress:
            print(f"robust AO it {it}: objective {cur:.6g}", flush=True)
        if prev - cur <= options.rtol * abs(prev):
            status = "converged"
            break
    return _result(prob, R, psi, R0, psi0, history, status, nit, options, info,
                   {"p2": t_p2, "p3": t_p3, "total": time.perf_counter() - t0})


def _result(prob, R, psi, R0, psi0, history, status, nit, options, info, times) -> SolveResult:
    j = robust_objective(prob, R, psi)
    c = prob.scnK.crb(R.unsqueeze(-4), psi.unsqueeze(-3), validate=False)  # (K, L)
    if prob.objective == "average":
        th, ph = (prob.weights[:, None] * c.theta).sum(0), (prob.weights[:, None] * c.phi).sum(0)
    elif prob.objective == "worst":
        th, ph = c.theta.amax(0), c.phi.amax(0)
    else:
        F = prob.scnK.fisher_information(R.unsqueeze(-4), psi.unsqueeze(-3))
        d, _ = crb_model.inverse_diagonal((prob.weights[:, None, None, None] * F).sum(0) + prob.prior)
        th, ph = d[..., 0], d[..., 1]
    ok = region_feasible(prob, R, psi, options.feas_rtol) and bool(torch.isfinite(j).all())
    fail = failure_counts(history)
    msg = ""
    if not ok:
        status = "infeasible"
    elif fail["p2_steps"] and fail["p2_failed"] == fail["p2_steps"]:
        status, ok = "solver-failed", False
        msg = "FAILED: every robust P2 step failed (last: " + history[-1]["p2_status"] + ")"
    elif fail["p2_failed"]:
        msg = f"warning: robust P2 failed in {fail['p2_failed']} of {fail['p2_steps']} steps"
    cc = prob.centre.crb(R, psi).total
    info.update(objective_value=float(j.max()), centre_crb=cc.tolist(), centre_max_crb=float(cc.max()),
                worst_max_crb=float(c.total.amax()), average_max_crb=float((prob.weights * c.total.amax(-1)).sum()))
    opts = {**options.to_dict(), "method": f"robust-{prob.objective}", "robust": info}
    j0 = robust_objective(prob, R0, psi0)
    return SolveResult(R_s=R.detach(), psi=psi.detach(), crb=j.detach(), max_crb=float(j.max()),
                       margins={k: v.detach() for k, v in region_margins(prob, R, psi).items()}, history=history,
                       status=status, success=ok, nit=nit, times=times, options=opts, init_R_s=R0.detach(),
                       init_psi=psi0.detach(), init_crb=j0.detach(), init_max_crb=float(j0.max()),
                       crb_theta=th.detach(), crb_phi=ph.detach(), message=msg, failures=fail)

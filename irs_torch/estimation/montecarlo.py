"""Monte Carlo study: simulate echoes, estimate directions and position, compare with the bounds.

:func:`run_monte_carlo` draws K independent echo sets of every IRS slot (eqs. (5)-(9)), estimates
(theta_l, phi_l, beta_l) per IRS (ML or MUSIC), localises the target by Stansfield's weighted
least squares and reports, per IRS, the empirical MSE of theta and phi beside their CRBs, and the
position RMSE beside the PEB.

Threshold effect. The CRB is a small-error (local) bound. Below some SNR, a fraction of trials
picks a wrong lobe of the likelihood (an *outlier*) and the MSE leaves the bound. The report
counts outliers as trials whose angle error exceeds ``outlier_sigma`` (default 4) root-CRBs in
theta or phi (for Gaussian errors at the bound this happens with probability ~1e-4), and gives
the MSE with outliers removed beside the full MSE, so a user can see which regime a design is in.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from irs_torch.errors import InputError
from irs_torch.estimation.echo import simulate_echoes, waveform, z1_noise_ratio
from irs_torch.estimation.estimators import (
    ESTIMATORS,
    estimate_directions,
    ml_criterion,
)
from irs_torch.estimation.localisation import (
    angle_covariance_bound,
    position_error_bound,
    stansfield,
)


@dataclass
class MonteCarloResult:
    """Outcome of :func:`run_monte_carlo`. Arrays (``arrays``): theta_hat, phi_hat ``(K, L)`` [rad],
    beta_hat ``(K, L)`` complex, position_hat ``(K, 3)`` [m], position_error ``(K,)`` [m] (3-D),
    position_error_2d ``(K,)`` [m]. ``summary``: JSON-ready dict (see :meth:`summary_dict`)."""

    summary: dict
    arrays: dict = field(default_factory=dict)


# Relative tolerance of the feasibility check of a simulated design (see design_violations).
FEASIBILITY_RTOL = 1e-5


def _quantile(x, q):
    return float(torch.quantile(x, q)) if x.numel() else float("nan")


def design_violations(scenario, R_s, psi, rtol: float = FEASIBILITY_RTOL) -> list[str]:
    """The constraints of problem (17) that a design breaks beyond relative tolerance ``rtol``.

    Checks R_s,l Hermitian PSD (smallest eigenvalue >= -rtol P_t), the average BS power (17b)
    <= P_t (1 + rtol), and for an active IRS C1 (7) <= P_s (1 + rtol) and max|psi_l| <= a_max
    (1 + rtol) (a passive IRS: ||psi_n| - 1| <= rtol). Shapes: R_s ``(L, M, M)`` [W], psi ``(L, N)``.
    Returns one-line descriptions naming the field (empty if the design is feasible).
    """
    cdt = scenario.G.dtype
    R_s, psi = R_s.to(cdt), psi.to(cdt)
    P_t, P_s, a_max = float(scenario.P_t), float(scenario.P_s), float(scenario.a_max)
    out = []
    herm = (R_s - R_s.conj().transpose(-1, -2)).abs().amax((-1, -2))
    for l in torch.nonzero(herm > rtol * P_t).flatten().tolist():
        out.append(f"R_s of slot {l + 1} is not Hermitian (max |R - R^H| {float(herm[l]):.3g} W)")
    m = scenario.constraint_margins(R_s, psi)
    for l in torch.nonzero(m["psd"] < -rtol).flatten().tolist():
        out.append(f"R_s of slot {l + 1} is not PSD (smallest eigenvalue {float(m['psd'][l]) * P_t:.3g} W; "
                   f"it would be simulated by its PSD projection)")
    if float(m["bs"]) < -rtol:
        out.append(f"R_s: BS power {float(scenario.bs_power(R_s)):.4g} W exceeds P_t = {P_t:g} W")
    if scenario.active:
        p_irs = scenario.irs_power(R_s, psi)
        for l in torch.nonzero(m["irs"] < -rtol).flatten().tolist():
            out.append(f"psi: IRS {l + 1} power {float(p_irs[l]):.4g} W exceeds P_s = {P_s:g} W (C1)")
        amp = psi.abs().amax(-1)
        for l in torch.nonzero(m["amp"] < -rtol).flatten().tolist():
            out.append(f"psi: IRS {l + 1} amplitude {float(amp[l]):.4g} exceeds a_max = {a_max:g}")
    else:
        for l in torch.nonzero(m["amp"] < -rtol).flatten().tolist():
            out.append(f"psi: passive IRS {l + 1} has |psi_n| != 1 (off by up to {-float(m['amp'][l]):.3g})")
    return out


def run_monte_carlo(scenario, R_s, psi, trials: int, seed: int = 0, *, estimator: str = "ml",
                    include_z1: bool = True, chunk: int = 500, outlier_sigma: float = 4.0,
                    progress: bool = True, estimator_options: dict | None = None,
                    allow_infeasible: bool = False) -> MonteCarloResult:
    """Monte Carlo of direction and position estimation for one scenario and design.

    Shapes: scenario unbatched with geometry; R_s ``(L, M, M)`` [W]; psi ``(L, N)``.
    Randomness: one ``torch.Generator`` seeded with ``seed`` draws first the waveform (one per slot,
    fixed over trials: the CRB conditions on a known waveform with sample covariance R_s,l) and then
    the noises of the trials, ``chunk`` trials at a time (results depend on (seed, trials, chunk)).

    Returns a :class:`MonteCarloResult` whose summary holds, per IRS (lists of length L):
    ``mse_theta``, ``mse_phi``, ``crb_theta``, ``crb_phi`` [rad^2], ``bias_theta``, ``bias_phi`` [rad],
    ``outlier_fraction``, ``mse_theta_inliers``, ``mse_phi_inliers``, ``z1_noise_ratio``,
    ``search_failure_fraction`` (ML only: trials whose likelihood is higher at the true direction
    than at the estimate, i.e. the grid + refinement missed the global maximum); and
    ``position_rmse``, ``peb`` [m] (3-D), ``position_rmse_2d``, ``peb_2d`` [m] (z known; the 2-D
    RMSE is of the 3-D estimate's horizontal error), ``position_error_median`` / ``_p90`` [m],
    plus ``seed``, ``trials``, ``chunk``, ``estimator``, ``include_z1``, ``seconds``, ``feasible``
    and ``violations`` (:func:`design_violations`).

    An infeasible design (:func:`design_violations` not empty) raises
    :class:`irs_torch.errors.InputError` unless ``allow_infeasible`` (then it is simulated, a
    non-PSD R_s by its PSD projection, and the summary says so). A zero psi_l (the IRS reflects
    nothing: no echo, infinite CRB) always raises InputError.
    """
    if scenario.batch_shape:
        raise ValueError(f"montecarlo takes one scenario, got a batch of shape {tuple(scenario.batch_shape)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
    if int(trials) < 1:
        raise ValueError(f"trials must be a positive integer, got {trials}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    if scenario.irs_pos is None or scenario.target_pos is None:
        raise ValueError("montecarlo needs the scenario geometry (irs_pos, target_pos) to localise the target")
    trials, chunk = int(trials), int(chunk)
    cdt = scenario.G.dtype
    R_s, psi = R_s.to(cdt), psi.to(cdt)
    scenario.check_design(R_s, psi)
    zero = psi.abs().amax(-1) == 0
    if zero.any():
        l = int(torch.nonzero(zero)[0])
        raise InputError(f"psi of IRS {l + 1} is zero: that IRS reflects nothing, so there is no echo to estimate "
                         f"its direction from (its CRB is infinite)")
    violations = design_violations(scenario, R_s, psi)
    if violations and not allow_infeasible:
        raise InputError("the design is infeasible: " + "; ".join(violations)
                         + " (allow_infeasible=True, or --allow-infeasible, simulates it anyway)")
    t0 = time.perf_counter()
    c = scenario.crb(R_s, psi)
    C = angle_covariance_bound(scenario, R_s, psi)  # (L, 2, 2)
    peb = position_error_bound(scenario, R_s, psi)
    peb2 = position_error_bound(scenario, R_s, psi, known_height=True)
    yaw = scenario.irs_yaw if scenario.irs_yaw is not None else torch.zeros(scenario.L, dtype=torch.float64)
    var_t = torch.where(torch.isfinite(C[:, 0, 0]), C[:, 0, 0], torch.ones_like(C[:, 0, 0]))
    var_p = torch.where(torch.isfinite(C[:, 1, 1]), C[:, 1, 1], torch.ones_like(C[:, 1, 1]))

    gen = torch.Generator().manual_seed(int(seed))
    T_L = int(round(scenario.T_L))
    S = waveform(R_s, T_L, gen)
    th_l, ph_l, be_l, conv_l, fail_l = [], [], [], [], []
    it = range(0, trials, chunk)
    if progress:
        from irs_torch.outputs import progress_bar

        it = progress_bar(it, total=math.ceil(trials / chunk), desc=f"montecarlo ({estimator})", unit="chunk",
                          leave=False)
    for start in it:
        k = min(chunk, trials - start)
        ech = simulate_echoes(scenario, R_s, psi, k, generator=gen, S=S, include_z1=include_z1)
        est = estimate_directions(scenario, psi, ech, estimator, **(estimator_options or {}))
        th_l.append(est["theta"])
        ph_l.append(est["phi"])
        be_l.append(est["beta"])
        conv_l.append(est["converged"])
        if estimator == "ml":  # search failure: the likelihood is higher at the truth than at the estimate
            jt = torch.stack([ml_criterion(ech.Y[:, l], S[l], scenario.G[l], psi[l], float(scenario.sigma_r2),
                                           float(scenario.sigma_b2), scenario.N_h, scenario.N_v, scenario.d_h,
                                           scenario.d_v, theta=scenario.theta[l], phi=scenario.phi[l])
                              for l in range(scenario.L)], -1)
            fail_l.append(jt > est["objective"] * (1 + 1e-9))
    th, ph, be = torch.cat(th_l), torch.cat(ph_l), torch.cat(be_l)
    conv = torch.cat(conv_l)
    x = stansfield(scenario.irs_pos, yaw, th, ph, var_t, var_p, iterations=1)
    dx = x - scenario.target_pos
    err = dx.norm(dim=-1)
    err2 = dx[:, :2].norm(dim=-1)
    et, ep = th - scenario.theta, ph - scenario.phi
    out = (et.abs() > outlier_sigma * c.theta.sqrt()) | (ep.abs() > outlier_sigma * c.phi.sqrt())
    inl = (~out).to(et.dtype)
    n_in = inl.sum(0).clamp_min(1)
    tl = lambda t: [float(v) for v in t]  # noqa: E731
    summary = {
        "estimator": estimator,
        "trials": trials,
        "seed": int(seed),
        "chunk": chunk,
        "include_z1": bool(include_z1),
        "mse_theta": tl((et ** 2).mean(0)),
        "mse_phi": tl((ep ** 2).mean(0)),
        "crb_theta": tl(c.theta),
        "crb_phi": tl(c.phi),
        "mse_over_crb_theta": tl((et ** 2).mean(0) / c.theta),
        "mse_over_crb_phi": tl((ep ** 2).mean(0) / c.phi),
        "bias_theta": tl(et.mean(0)),
        "bias_phi": tl(ep.mean(0)),
        "outlier_sigma": float(outlier_sigma),
        "outlier_fraction": tl(out.to(et.dtype).mean(0)),
        "mse_theta_inliers": tl((et ** 2 * inl).sum(0) / n_in),
        "mse_phi_inliers": tl((ep ** 2 * inl).sum(0) / n_in),
        "z1_noise_ratio": tl(z1_noise_ratio(scenario, psi)),
        "refinement_converged": tl(conv.to(et.dtype).mean(0)),
        "search_failure_fraction": tl(torch.cat(fail_l).to(et.dtype).mean(0)) if fail_l else None,
        "position_rmse": float(err.pow(2).mean().sqrt()),
        "peb": peb,
        "position_rmse_2d": float(err2.pow(2).mean().sqrt()),
        "peb_2d": peb2,
        "position_error_median": _quantile(err, 0.5),
        "position_error_p90": _quantile(err, 0.9),
        "seconds": time.perf_counter() - t0,
        "feasible": not violations,
        "violations": violations,
    }
    arrays = {"theta_hat": th, "phi_hat": ph, "beta_hat": be, "position_hat": x,
              "position_error": err, "position_error_2d": err2}
    return MonteCarloResult(summary=summary, arrays=arrays)

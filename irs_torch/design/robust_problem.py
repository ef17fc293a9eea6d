"""The robust problem over a region's K candidates: the per-candidate CRB
(:func:`region_crb`), the objectives ``worst`` / ``average`` / ``bayesian`` (:func:`robust_objective`, with the
position prior's angle information :func:`angle_prior_information`), and feasibility with C1 at every candidate
(:func:`region_scale`, :func:`region_feasible`). The design method is described in :mod:`irs_torch.design.robust`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from irs_torch import crb as crb_model
from irs_torch.design.mismatch import move_target
from irs_torch.design.region import Region
from irs_torch.errors import InputError
from irs_torch.physics.geometry import target_angles
from irs_torch.scenario import Scenario

OBJECTIVES = ("worst", "average", "bayesian")
PRIOR_FLOOR_RAD = 1e-6


# ----------------------------------------------------------------------------- objectives
def region_crb(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, positions) -> "crb_model.CRBResult":
    """Per-IRS CRB of the design (R_s, psi) for targets at ``positions``.

    Shapes: unbatched scenario, R_s ``(L, M, M)`` [W], psi ``(L, N)`` (or leading batch dims ``(S, ...)``
    which broadcast before the position dim), positions ``(P, 3)`` [m] -> CRBResult fields ``(..., P, L)``.
    """
    scnP = move_target(scenario, positions)
    if psi.dim() > 2:
        psi = psi.unsqueeze(-3)
    if R_s.dim() > 3:
        R_s = R_s.unsqueeze(-4)
    return scnP.crb(R_s, psi, validate=False)


def angle_prior_information(scenario: Scenario, region: Region, sigma_z: float = 0.0) -> torch.Tensor:
    """Prior information on (theta_l, phi_l) per IRS, ``(L, 2, 2)`` [rad^-2] (module docstring):
    ``(A_l Sigma_x A_l^T)^-1`` with ``A_l = d(theta_l, phi_l) / d(x, y, z)`` at the region's centre,
    ``Sigma_x = blockdiag(region.prior_covariance(), sigma_z^2)``, eigenvalues of the angle covariance
    floored at ``PRIOR_FLOOR_RAD^2``."""
    if not (isinstance(sigma_z, (int, float)) and math.isfinite(sigma_z) and sigma_z >= 0):
        raise InputError(f"sigma_z must be a finite number >= 0 m, got {sigma_z!r}")
    irs = torch.as_tensor(scenario.irs_pos, dtype=torch.float64)
    yaw = torch.zeros(irs.shape[:-1], dtype=torch.float64) if scenario.irs_yaw is None else \
        torch.as_tensor(scenario.irs_yaw, dtype=torch.float64)
    c = torch.tensor(region.centre, dtype=torch.float64)

    def angles(x):
        th, ph, _, _ = target_angles(irs, yaw, x)
        return torch.stack([th, ph], -1)  # (L, 2)

    A = torch.autograd.functional.jacobian(angles, c)  # (L, 2, 3)
    S = torch.zeros(3, 3, dtype=torch.float64)
    S[:2, :2] = torch.from_numpy(region.prior_covariance())
    S[2, 2] = float(sigma_z) ** 2
    C = A @ S @ A.transpose(-1, -2)
    lam, V = torch.linalg.eigh(0.5 * (C + C.transpose(-1, -2)))
    lam = lam.clamp(min=PRIOR_FLOOR_RAD ** 2)
    return (V / lam.unsqueeze(-2)) @ V.transpose(-1, -2)


@dataclass
class RobustProblem:
    """A robust problem (built by :func:`robust_problem`): ``centre`` (the scenario at the region's centre),
    ``scnK`` (batch K: one scenario per candidate, :func:`move_target`), ``points`` (K, 3) [m], ``weights``
    (K,), ``objective``, ``prior`` (L, 4, 4) SI prior information (bayesian; angle block only), ``smooth``."""

    centre: Scenario
    scnK: Scenario
    points: torch.Tensor
    weights: torch.Tensor  # (K,)
    objective: str
    prior: torch.Tensor | None  # (L, 4, 4) SI information (bayesian), angles block only
    smooth: float = 30.0


def robust_objective(prob: RobustProblem, R: torch.Tensor, psi: torch.Tensor, smooth: bool = False):
    """Per-IRS objective ``j_l`` ``(..., L)`` (module docstring) of R ``(..., L, M, M)``, psi
    ``(..., L, N)``; ``smooth``: log-sum-exp instead of the max over candidates (worst)."""
    scnK = prob.scnK
    Rk = R.unsqueeze(-4)
    pk = psi.unsqueeze(-3)
    if prob.objective == "bayesian":
        F = scnK.fisher_information(Rk, pk)  # (..., K, L, 4, 4) SI
        Fb = (prob.weights[:, None, None, None] * F).sum(-4) + prob.prior
        d, _ = crb_model.inverse_diagonal(Fb)
        return d.sum(-1)
    c = scnK.crb(Rk, pk, validate=False).total  # (..., K, L)
    if prob.objective == "average":
        return (prob.weights[:, None] * c).sum(-2)
    if smooth:
        lc = torch.log(torch.where(torch.isfinite(c) & (c > 0), c, torch.full_like(c, 1e300)))
        return torch.exp(torch.logsumexp(prob.smooth * lc, -2) / prob.smooth)
    return c.amax(-2)


def region_scale(prob: RobustProblem, R: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Largest real scale per IRS ``(..., L)`` meeting C1 at every candidate and |psi| <= a_max."""
    scnK = prob.scnK
    P4, P2 = crb_model.irs_power_coefficients(scnK.G, psi.unsqueeze(-3), R.unsqueeze(-4).to(psi.dtype), scnK.theta,
                                         scnK.phi, scnK.beta, scnK.budget_broadcast("sigma_r2"), scnK.N_h, scnK.N_v,
                                         scnK.d_h, scnK.d_v)  # (..., K, L)
    s = crb_model.c1_max_scale(P4, P2, scnK.budget_broadcast("P_s")).amin(-2)
    amax = psi.abs().amax(-1)
    s = torch.minimum(s, prob.centre.budget_broadcast("a_max") / torch.where(amax > 0, amax, torch.ones_like(amax)))
    return torch.where(torch.isfinite(s), s, torch.ones_like(s))


def feasible_psi(prob, R, psi):
    if not prob.centre.active:
        return torch.sgn(psi) + (psi == 0).to(psi.dtype)
    return psi * region_scale(prob, R, psi).unsqueeze(-1).to(psi.dtype)


def region_margins(prob: RobustProblem, R, psi) -> dict:
    """Constraint margins (>= 0 satisfied) with C1 the worst over the candidates."""
    m = prob.centre.constraint_margins(R, psi)
    if prob.centre.active:
        p = prob.scnK.irs_power(R.unsqueeze(-4), psi.unsqueeze(-3))  # (K, L)
        m["irs"] = (1.0 - p / prob.scnK.budget_broadcast("P_s")).amin(-2)
    return m


def region_feasible(prob, R, psi, rtol) -> bool:
    m = region_margins(prob, R, psi)
    return bool((m["bs"] >= -rtol).all() and (m["irs"] >= -rtol).all() and (m["amp"] >= -rtol).all()
                and (m["psd"] >= -rtol).all())


# ----------------------------------------------------------------------------- the solver
def robust_problem(scenario, region, points, objective="worst", sigma_z=0.0, smooth=30.0) -> RobustProblem:
    """The :class:`RobustProblem` of ``scenario`` for candidate ``points`` (K, 3) [m] of ``region``."""
    centre = move_target(scenario, torch.tensor(region.centre, dtype=torch.float64))
    scnK = move_target(scenario, points)
    K = points.shape[0]
    weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
    prior = None
    if objective == "bayesian":
        Jp = angle_prior_information(centre, region, sigma_z)  # (L, 2, 2)
        prior = torch.zeros(scenario.L, 4, 4, dtype=torch.float64)
        prior[:, :2, :2] = Jp
    return RobustProblem(centre=centre, scnK=scnK, points=points, weights=weights, objective=objective, prior=prior,
                    smooth=float(smooth))

"""One block's position measurement: ML angles -> Stansfield fix in the target's plane, with the
covariance the tracker uses for it.

Known height. The target moves in the plane ``z = z0`` (known), so the fix is Stansfield's weighted
least-squares point (:func:`irs_torch.estimation.stansfield`, same weights) restricted to that plane:
with ``W_l`` the bearing-line weight of IRS l (``e_theta e_theta^T / var_theta + e_phi e_phi^T /
(sin^2 theta var_phi)``, divided by the squared range d_l^2), the cost
``sum_l (x - p_l)^T W_l (x - p_l)`` with ``x = (x_xy, z0)`` is minimised by

    A_xy,xy x_xy = sum_l [W_l p_l]_xy - A_xy,z z0,      A = sum_l W_l,

iterated once with the ranges of the first pass (as :func:`~irs_torch.estimation.stansfield` does).

Measurement covariance R (2 x 2, m^2): the inverse of the 2-D position Fisher information of the
design used, ``F_xy = sum_l J_l^T C_l^-1 J_l`` with ``J_l = d(theta_l, phi_l)/d(x, y)`` and ``C_l``
the per-IRS angle CRB (:func:`~irs_torch.estimation.angle_position_jacobian`,
:func:`~irs_torch.estimation.angle_covariance_bound`). The tracker does not know the true position,
so R is evaluated at the predicted position it designed for (a plug-in approximation: the bound
changes little over the prediction's uncertainty of about a metre at 10 m range). The same F_xy at
the *true* position gives the 2-D PEB ``sqrt(tr F_xy^-1)`` the report shows beside the RMSE
(:func:`irs_torch.estimation.position_error_bound` with ``known_height=True``).
"""
from __future__ import annotations

import numpy as np
import torch

from irs_torch.estimation.localisation import (
    angle_covariance_bound,
    angle_position_jacobian,
    bearing_vectors,
    position_fim,
)


def stansfield_in_plane(irs_pos, irs_yaw, theta, phi, z0: float, var_theta=None, var_phi=None,
                        iterations: int = 1) -> np.ndarray:
    """Stansfield's fix in the plane ``z = z0`` (module docstring).

    Shapes: irs_pos (L, 3) [m], irs_yaw (L,) [rad], theta/phi (L,) [rad], var_theta/var_phi (L,)
    [rad^2] (default: equal) -> (2,) [m]; NaN if the bearings do not fix a point (parallel lines).
    """
    p = torch.as_tensor(np.asarray(irs_pos), dtype=torch.float64)
    th = torch.as_tensor(np.asarray(theta), dtype=torch.float64)
    ph = torch.as_tensor(np.asarray(phi), dtype=torch.float64)
    one = torch.ones_like(th)
    vt = one if var_theta is None else torch.as_tensor(np.asarray(var_theta), dtype=torch.float64) * one
    vp = one if var_phi is None else torch.as_tensor(np.asarray(var_phi), dtype=torch.float64) * one
    _, e_t, e_p = bearing_vectors(th, ph, torch.as_tensor(np.asarray(irs_yaw), dtype=torch.float64))
    s2 = torch.sin(th).pow(2).clamp_min(1e-12)
    Wd = (e_t[:, :, None] * e_t[:, None, :]) / vt[:, None, None] + \
         (e_p[:, :, None] * e_p[:, None, :]) / (s2 * vp)[:, None, None]  # (L, 3, 3)
    d2 = torch.ones_like(th)
    xy = torch.full((2,), float("nan"), dtype=torch.float64)
    for _ in range(int(iterations) + 1):
        W = Wd / d2[:, None, None]
        A = W.sum(0)
        b = (W @ p.unsqueeze(-1)).squeeze(-1).sum(0)
        Axy = A[:2, :2]
        ev = torch.linalg.eigvalsh(0.5 * (Axy + Axy.T))
        if not bool(torch.isfinite(ev).all()) or ev[0] <= 1e-12 * ev[-1].abs().clamp_min(1e-300):
            return np.full(2, np.nan)
        xy = torch.linalg.solve(Axy, b[:2] - A[:2, 2] * float(z0))
        x = torch.cat([xy, torch.tensor([float(z0)], dtype=torch.float64)])
        d2 = ((x - p) ** 2).sum(-1).clamp_min(1e-12)
    return xy.numpy()


def position_information(scenario, R_s, psi) -> np.ndarray:
    """2-D position FIM ``F_xy`` (2, 2) [1/m^2] of design (R_s, psi) at ``scenario.target_pos``
    (z known); zeros if some IRS's angle CRB is infinite (no information from that slot is not
    modelled: the whole FIM is then treated as unusable by the callers through its eigenvalues)."""
    yaw = scenario.irs_yaw if scenario.irs_yaw is not None else torch.zeros(scenario.L, dtype=torch.float64)
    J = angle_position_jacobian(scenario.irs_pos, yaw, scenario.target_pos)[..., :2]
    C = angle_covariance_bound(scenario, R_s, psi)
    if not torch.isfinite(C).all():
        return np.zeros((2, 2))
    return position_fim(J, C.to(torch.float64)).numpy()


def position_covariance(scenario, R_s, psi) -> np.ndarray:
    """``F_xy^-1`` (2, 2) [m^2] (the 2-D position CRB); inf entries if F_xy is singular."""
    F = position_information(scenario, R_s, psi)
    ev = np.linalg.eigvalsh(F)
    if not np.isfinite(ev).all() or ev[0] <= 1e-12 * max(abs(ev[-1]), 1e-300):
        return np.full((2, 2), np.inf)
    return np.linalg.inv(F)


def peb_2d(scenario, R_s, psi) -> float:
    """``sqrt(tr F_xy^-1)`` [m] at ``scenario.target_pos`` (inf if singular)."""
    C = position_covariance(scenario, R_s, psi)
    return float(np.sqrt(np.trace(C))) if np.isfinite(C).all() else float("inf")


def angle_variances(scenario, R_s, psi):
    """Per-IRS CRB of theta and of phi, ``(L,)`` each [rad^2] (Stansfield's weights)."""
    C = angle_covariance_bound(scenario, R_s, psi)
    return C[:, 0, 0].numpy(), C[:, 1, 1].numpy()

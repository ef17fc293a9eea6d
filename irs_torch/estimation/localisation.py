"""Target localisation from the per-IRS direction estimates, and the position error bound (PEB).

Bearings. IRS l at ``p_l`` with local frame (h_l, v_l, n_l) (:func:`irs_torch.physics.irs_frames`)
sees the target along the unit vector
``k_l = sin(theta_l) cos(phi_l) h_l + cos(theta_l) v_l + sin(theta_l) sin(phi_l) n_l``.

Stansfield's estimator (paper ref. [15]). The bearing line of IRS l is ``p_l + r k_l``; a point x
deviates from it by ``(I - k_l k_l^T)(x - p_l)``. A direction error (d theta, d phi) moves the line,
at range d_l, by ``d_l (e_theta d theta + sin(theta) e_phi d phi)`` with the unit vectors
``e_theta = dk/dtheta``, ``e_phi = dk/dphi / sin(theta)`` (both orthogonal to k). The weighted least
squares point, with the inverse of that displacement covariance as weight,

    x_hat = (sum_l W_l)^-1 sum_l W_l p_l,
    W_l = (1 / d_l^2) (e_theta e_theta^T / var_theta_l + e_phi e_phi^T / (sin^2 theta_l var_phi_l)),

is closed form (W_l annihilates k_l). The ranges d_l are unknown at first: the first pass uses
d_l = 1, then ``iterations`` more passes use ``d_l = ||x_hat - p_l||`` (one is enough in practice).
With equal angle variances and isotropic weights this is the classical Stansfield estimator.

PEB. The direction estimates of different IRSs are independent (different slots). With the
per-IRS angle covariance bound ``C_l`` (the (theta, phi) block of F_l^-1, beta a nuisance) and
the Jacobian ``J_l = d(theta_l, phi_l)/dx`` (2 x 3),

    F_x = sum_l J_l^T C_l^-1 J_l,      PEB = sqrt(tr(F_x^-1))  [m],

and, if the target height is known, the 2-D PEB uses the (x, y) columns of J_l only. Analytic
Jacobian (r = x - p_l, d = ||r||):
``d theta/dx = -(v - cos(theta) k) / (d sin(theta))``, ``d phi/dx = (cos(phi) n - sin(phi) h) / (d sin(theta))``.
"""
from __future__ import annotations

import torch

from irs_torch import crb as crb_model
from irs_torch.physics.geometry import irs_frames, target_angles


def bearing_vectors(theta, phi, irs_yaw):
    """Unit directions k_l (world frame) for angles seen from IRSs with yaw ``irs_yaw``.

    Shapes: theta, phi ``(..., L)`` [rad], irs_yaw ``(L,)`` -> ``(k, e_theta, e_phi)`` each
    ``(..., L, 3)``: the bearing and the unit vectors of increasing theta and phi.
    """
    h, v, n = irs_frames(torch.as_tensor(irs_yaw, dtype=torch.float64))
    st, ct = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    sp, cp = torch.sin(phi)[..., None], torch.cos(phi)[..., None]
    k = st * cp * h + ct * v + st * sp * n
    e_t = ct * cp * h - st * v + ct * sp * n
    e_p = -sp * h + cp * n
    return k, e_t, e_p


def stansfield(irs_pos, irs_yaw, theta, phi, var_theta=None, var_phi=None, iterations: int = 1):
    """Weighted least-squares intersection of the bearing lines (Stansfield), see module docstring.

    Shapes: irs_pos ``(L, 3)`` [m], irs_yaw ``(L,)`` [rad], theta/phi ``(..., L)`` [rad],
    var_theta/var_phi ``(L,)`` or ``(..., L)`` [rad^2] (default: equal) -> x_hat ``(..., 3)`` [m].
    Raises ValueError if fewer than two IRSs are given (one bearing does not fix a point).
    """
    irs_pos = torch.as_tensor(irs_pos, dtype=torch.float64)
    L = irs_pos.shape[0]
    if L < 2:
        raise ValueError(f"Stansfield localisation needs at least 2 IRSs, got L={L}")
    theta = torch.as_tensor(theta, dtype=torch.float64)
    phi = torch.as_tensor(phi, dtype=torch.float64)
    one = torch.ones_like(theta)
    vt = one if var_theta is None else torch.as_tensor(var_theta, dtype=torch.float64) * one
    vp = one if var_phi is None else torch.as_tensor(var_phi, dtype=torch.float64) * one
    _, e_t, e_p = bearing_vectors(theta, phi, irs_yaw)
    s2 = torch.sin(theta).pow(2).clamp_min(1e-12)
    Wd = (e_t[..., :, None] * e_t[..., None, :]) / vt[..., None, None] + \
         (e_p[..., :, None] * e_p[..., None, :]) / (s2 * vp)[..., None, None]  # (..., L, 3, 3)
    d2 = torch.ones_like(theta)
    for _ in range(int(iterations) + 1):
        W = Wd / d2[..., None, None]
        A = W.sum(-3)
        b = (W @ irs_pos.unsqueeze(-1)).squeeze(-1).sum(-2)
        x = torch.linalg.solve(A, b.unsqueeze(-1)).squeeze(-1)
        d2 = ((x.unsqueeze(-2) - irs_pos) ** 2).sum(-1).clamp_min(1e-12)
    return x


def angle_position_jacobian(irs_pos, irs_yaw, target_pos):
    """``d(theta_l, phi_l) / d(x, y, z)`` of the target, analytic (module docstring).

    Shapes: irs_pos ``(L, 3)``, irs_yaw ``(L,)``, target_pos ``(3,)`` -> ``(L, 2, 3)`` [rad/m].
    """
    irs_pos = torch.as_tensor(irs_pos, dtype=torch.float64)
    yaw = torch.as_tensor(irs_yaw, dtype=torch.float64)
    tgt = torch.as_tensor(target_pos, dtype=torch.float64)
    theta, phi, d, _ = target_angles(irs_pos, yaw, tgt)
    h, v, n = irs_frames(yaw)
    k, _, _ = bearing_vectors(theta, phi, yaw)
    st = torch.sin(theta)[:, None]
    dth = -(v - torch.cos(theta)[:, None] * k) / (d[:, None] * st)
    dph = (torch.cos(phi)[:, None] * n - torch.sin(phi)[:, None] * h) / (d[:, None] * st)
    return torch.stack([dth, dph], -2)


def angle_covariance_bound(scenario, R_s, psi) -> torch.Tensor:
    """Per-IRS CRB matrix of (theta_l, phi_l) with beta_l a nuisance: the angle block of F_l^-1.

    Computed from the dimensionless FIM (``F_SI = c J Fhat J``, :mod:`irs_torch.crb`) so that the
    ill-conditioning in SI units never enters: ``C_l = [Fhat_l^-1]_{0:2,0:2} / c_l``.
    Shapes: R_s ``(L, M, M)``, psi ``(L, N)`` -> ``(L, 2, 2)`` [rad^2]; inf if F is singular.
    """
    cdt = scenario.G.dtype
    Fh = crb_model.fim_normalized(
        scenario.G,
        psi.to(cdt),
        R_s.to(cdt),
        scenario.theta,
        scenario.phi,
        scenario.beta,
        scenario.budget_broadcast("sigma_r2"),
        scenario.budget_broadcast("sigma_b2"),
        scenario.N_h,
        scenario.N_v,
        scenario.d_h,
        scenario.d_v,
    )
    d = torch.diagonal(Fh, dim1=-2, dim2=-1).clamp_min(1e-300).rsqrt()
    Fb = d[..., :, None] * Fh * d[..., None, :]
    Lc, info = torch.linalg.cholesky_ex(Fb)
    eye = torch.eye(4, dtype=Fh.dtype)
    Finv = torch.cholesky_solve(eye.expand_as(Fb), Lc) * d[..., :, None] * d[..., None, :]
    c = crb_model.fim_scale(scenario.beta, scenario.budget_broadcast("sigma_b2"), scenario.T_L).to(Fh.dtype)
    C = Finv[..., :2, :2] / c[..., None, None]
    bad = (info != 0)[..., None, None].expand_as(C)
    return torch.where(bad, torch.full_like(C, float("inf")), C)


def position_fim(J, C):
    """``F_x = sum_l J_l^T C_l^-1 J_l``. Shapes: J ``(L, 2, D)``, C ``(L, 2, 2)`` -> ``(D, D)``."""
    Ci = torch.linalg.inv(C)
    return (J.transpose(-1, -2) @ Ci @ J).sum(0)


def position_error_bound(scenario, R_s, psi, known_height: bool = False) -> float:
    """PEB [m] of the target position from all IRSs' direction information (module docstring).

    ``known_height=True``: 2-D PEB over (x, y) with z known. Returns ``inf`` if the position is
    not identifiable from the bearings (singular F_x).
    """
    if scenario.irs_pos is None or scenario.target_pos is None:
        raise ValueError(
            "the PEB needs the scenario geometry (irs_pos, irs_yaw, target_pos), which this scenario does not have"
        )
    yaw = scenario.irs_yaw if scenario.irs_yaw is not None else torch.zeros(scenario.L, dtype=torch.float64)
    J = angle_position_jacobian(scenario.irs_pos, yaw, scenario.target_pos)
    if known_height:
        J = J[..., :2]
    C = angle_covariance_bound(scenario, R_s, psi)
    if not torch.isfinite(C).all():
        return float("inf")
    Fx = position_fim(J, C)
    ev = torch.linalg.eigvalsh(Fx)
    if ev[0] <= 1e-12 * ev[-1]:
        return float("inf")
    return float(torch.linalg.inv(Fx).diagonal().sum().sqrt())

"""Array responses: the IRS uniform planar array (paper eqs. (1)-(3)) and its derivatives
(eqs. (26)-(27), with the d_h correction of docs/assumptions.md item 3), and the BS uniform linear array.

Element ordering follows (1): a = a_v(theta) kron a_h(theta, phi), i.e. element n = v * N_h + h
with v = 0..N_v-1 the vertical index and h = 0..N_h-1 the horizontal index.
"""
from __future__ import annotations

import math

import torch

TWO_PI = 2.0 * math.pi


def element_indices(N_h: int, N_v: int, *, dtype=torch.float64, device=None):
    """Horizontal and vertical element indices of the UPA in the order of eq. (1).

    Returns ``(h_idx, v_idx)``, each of shape ``(N,)`` with ``N = N_h * N_v``:
    ``h_idx = 1_{N_v} kron d_{N_h}`` and ``v_idx = d_{N_v} kron 1_{N_h}``.
    """
    h = torch.arange(N_h, dtype=dtype, device=device)
    v = torch.arange(N_v, dtype=dtype, device=device)
    h_idx = h.repeat(N_v)
    v_idx = v.repeat_interleave(N_h)
    return h_idx, v_idx


def _phase(theta, phi, N_h, N_v, d_h, d_v):
    h_idx, v_idx = element_indices(N_h, N_v, dtype=theta.dtype, device=theta.device)
    th = theta.unsqueeze(-1)
    ph = phi.unsqueeze(-1)
    return TWO_PI * (d_v * v_idx * torch.cos(th) + d_h * h_idx * torch.sin(th) * torch.cos(ph)), h_idx, v_idx


def upa_steering(theta: torch.Tensor, phi: torch.Tensor, N_h: int, N_v: int,
                 d_h: float = 0.5, d_v: float = 0.5) -> torch.Tensor:
    """UPA steering vector a(theta, phi) of eqs. (1)-(3).

    Shapes: theta, phi ``(...)`` real [rad] -> a ``(..., N)`` complex, N = N_h * N_v.
    ``d_h``, ``d_v``: element spacings in wavelengths. theta is measured from the IRS vertical
    axis, phi from its horizontal axis.
    """
    theta, phi = torch.broadcast_tensors(torch.as_tensor(theta), torch.as_tensor(phi))
    ph, _, _ = _phase(theta, phi, N_h, N_v, d_h, d_v)
    return torch.polar(torch.ones_like(ph), ph)


def cophasing_psi(scenario, w: torch.Tensor) -> torch.Tensor:
    """Unit-modulus reflection ``psi_l,n = e^{-j arg(a_n [G_l w_l]_n)}`` (1 where that product is 0).

    It co-phases the BS -> IRS -> target cascade of the BS beam ``w_l``: it maximises
    ``|a^T diag(psi) G_l w_l|`` over unit-modulus psi (every term becomes ``|a_n [G_l w_l]_n|``), the
    classic reflect-beamforming rule. ``a = a(theta_l, phi_l)`` is eq. (1). The one definition behind
    every "aligned" psi in irs-torch (AO start, learned model's reference frame, aligned designs).

    scenario: an :class:`irs_torch.Scenario` (uses G, theta, phi, N_h, N_v, d_h, d_v).
    Shapes: w ``(..., L, M)`` -> psi ``(..., L, N)`` complex, G's dtype.
    """
    G = scenario.G
    a = upa_steering(scenario.theta, scenario.phi, scenario.N_h, scenario.N_v,
                     scenario.d_h, scenario.d_v).to(G.dtype)
    c = a * (G @ w.to(G.dtype).unsqueeze(-1)).squeeze(-1)
    r = torch.sgn(c).conj()
    return torch.where(c == 0, torch.ones_like(r), r)


def upa_steering_derivatives(theta: torch.Tensor, phi: torch.Tensor, N_h: int, N_v: int,
                             d_h: float = 0.5, d_v: float = 0.5):
    """Steering vector and its derivatives with respect to theta and phi, eqs. (26)-(27).

    ``da/dtheta = zeta_theta * a`` with
    ``zeta_theta = j 2 pi d_h cos(theta) cos(phi) h_idx - j 2 pi d_v sin(theta) v_idx``
    (docs/assumptions.md item 3: the paper prints d_v in the horizontal term), and
    ``da/dphi = zeta_phi * a`` with ``zeta_phi = -j 2 pi d_h sin(theta) sin(phi) h_idx``.

    Shapes: theta, phi ``(...)`` -> ``(a, da_dtheta, da_dphi)``, each ``(..., N)`` complex.
    """
    theta, phi = torch.broadcast_tensors(torch.as_tensor(theta), torch.as_tensor(phi))
    ph, h_idx, v_idx = _phase(theta, phi, N_h, N_v, d_h, d_v)
    a = torch.polar(torch.ones_like(ph), ph)
    th = theta.unsqueeze(-1)
    p = phi.unsqueeze(-1)
    z_theta = TWO_PI * (d_h * torch.cos(th) * torch.cos(p) * h_idx - d_v * torch.sin(th) * v_idx)
    z_phi = -TWO_PI * d_h * torch.sin(th) * torch.sin(p) * h_idx
    da_dtheta = 1j * z_theta * a
    da_dphi = 1j * z_phi * a
    return a, da_dtheta, da_dphi


def ula_steering(cos_angle: torch.Tensor, M: int, d: float = 0.5) -> torch.Tensor:
    """ULA steering vector ``[exp(j 2 pi d m cos_angle)]_{m=0..M-1}``.

    Shapes: cos_angle ``(...)`` (cosine of the angle to the array axis) -> ``(..., M)`` complex.
    """
    cos_angle = torch.as_tensor(cos_angle)
    m = torch.arange(M, dtype=cos_angle.dtype, device=cos_angle.device)
    ph = TWO_PI * d * m * cos_angle.unsqueeze(-1)
    return torch.polar(torch.ones_like(ph), ph)


def cophasing_beam(scenario, iters: int = 10):
    """BS beam ``w_l`` and unit-modulus IRS vector ``psi_l`` jointly co-phasing the BS -> IRS l -> target
    cascade: a local maximiser of the two-hop gain ``|a^T diag(psi_l) G_l w_l|`` over unit-norm w_l and
    unit-modulus psi_l, by alternating the two closed-form steps (each never lowers the gain):
    psi_l = :func:`cophasing_psi` of w_l, and ``w_l = (a^T diag(psi_l) G_l)^H`` normalised.
    Starts from the top right singular vector of ``diag(a) G_l`` (the beam with the most power on the
    IRS's target-weighted elements), so the result does not depend on an arbitrary eigenvector choice.

    scenario: an :class:`irs_torch.Scenario`. Shapes: -> ``(w (..., L, M), psi (..., L, N))`` complex.
    """
    G = scenario.G
    a = upa_steering(scenario.theta, scenario.phi, scenario.N_h, scenario.N_v,
                     scenario.d_h, scenario.d_v).to(G.dtype)
    A = a.unsqueeze(-1) * G  # diag(a) G, (..., L, N, M)
    w = torch.linalg.svd(A)[2][..., 0, :].conj()  # top right singular vector, (..., L, M)
    for _ in range(max(int(iters), 1)):
        psi = cophasing_psi(scenario, w)
        h = ((a * psi).unsqueeze(-2) @ G).squeeze(-2)  # a^T diag(psi) G, (..., L, M)
        w = h.conj() / torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp(min=1e-300)
    return w, cophasing_psi(scenario, w)

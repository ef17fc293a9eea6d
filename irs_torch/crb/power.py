"""The IRS power constraint C1 (paper eq. (7)) and the BS power budget: dense transmit covariances R_s and factors
``R_s = B B^H`` (no M x M product), its split by homogeneity in psi, the closed-form scaling that meets it, and its
affine form in R_s for the P2 SDP.
"""
from __future__ import annotations

import torch

from irs_torch.crb.grams import matmul_shared, real_dtype
from irs_torch.physics.steering import upa_steering


def irs_power_terms(G, psi, R_s, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                    d_h: float = 0.5, d_v: float = 0.5):
    """The four terms of C1 (eq. (7)) [W], each ``(...)`` real, in the order
    ``(echo signal |beta|^2 (u^T R_s u^*) ||psi||^2, echo noise sigma_r2 |beta|^2 ||psi||^4,
    direct signal sum_n |psi_n|^2 [G R_s G^H]_nn, direct noise 2 sigma_r2 ||psi||^2)``,
    with ``u = G^T (psi * a)``. Shapes as :func:`irs_power`.
    """
    rdt = real_dtype(psi.dtype)
    a = upa_steering(torch.as_tensor(theta, dtype=rdt), torch.as_tensor(phi, dtype=rdt),
                     N_h, N_v, d_h, d_v).to(psi.dtype)
    R = R_s.to(psi.dtype)
    u = (G.transpose(-1, -2) @ (psi * a).unsqueeze(-1)).squeeze(-1)  # (..., M)
    uRu = ((R @ u.conj().unsqueeze(-1)).squeeze(-1) * u).sum(-1).real  # u^T R u^*
    pa = psi.abs() ** 2
    p2 = pa.sum(-1)
    b2 = torch.as_tensor(beta).abs().to(rdt) ** 2
    sr = torch.as_tensor(sigma_r2, dtype=rdt)
    GRG = ((G @ R) * G.conj()).sum(-1).real  # diag(G R G^H), (..., N)
    return b2 * uRu * p2, sr * b2 * p2 ** 2, (pa * GRG).sum(-1), 2.0 * sr * p2


def irs_power(G, psi, R_s, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
              d_h: float = 0.5, d_v: float = 0.5):
    """IRS transmit power, left-hand side of C1 (eq. (7)) [W].

    ``|beta|^2 (u^T R_s u^*) ||psi||^2 + sigma_r2 |beta|^2 ||psi||^4
    + sum_n |psi_n|^2 [G R_s G^H]_nn + 2 sigma_r2 ||psi||^2`` with ``u = G^T (psi * a)``.

    Shapes: G ``(..., N, M)``, psi ``(..., N)``, R_s ``(..., M, M)``, theta/phi/beta ``(...)``
    -> ``(...)`` real.
    """
    t1, t2, t3, t4 = irs_power_terms(G, psi, R_s, theta, phi, beta, sigma_r2, N_h, N_v, d_h, d_v)
    return t1 + t2 + t3 + t4


def bs_power(R_s):
    """Average BS transmit power over the L slots, ``(1/L) sum_l tr(R_s,l)`` (eq. (17b)) [W].

    Shapes: R_s ``(..., L, M, M)`` -> ``(...)`` real.
    """
    return torch.diagonal(R_s, dim1=-2, dim2=-1).real.sum(-1).mean(-1)


def irs_power_coefficients(G, psi, R_s, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                           d_h: float = 0.5, d_v: float = 0.5):
    """Split C1 by homogeneity in psi: ``P(s psi) = s^4 P4 + s^2 P2`` for a real scale s.

    ``P4 = |beta|^2 (u^T R u^*) ||psi||^2 + sigma_r2 |beta|^2 ||psi||^4`` (the echo terms) and
    ``P2 = sum_n |psi_n|^2 [G R G^H]_nn + 2 sigma_r2 ||psi||^2``. Shapes -> ``(P4, P2)`` ``(...)``.
    """
    t1, t2, t3, t4 = irs_power_terms(G, psi, R_s, theta, phi, beta, sigma_r2, N_h, N_v, d_h, d_v)
    return t1 + t2, t3 + t4


def irs_power_terms_factored(G, psi, B, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                             d_h: float = 0.5, d_v: float = 0.5):
    """:func:`irs_power_terms` for ``R_s = B B^H`` with B ``(..., M, r)`` [sqrt(W)]: the same four terms [W],
    each ``(...)`` real, from ``u^T R_s u^* = ||B^T u||^2`` and ``[G R_s G^H]_nn = ||(G B)_n||^2`` (``N M r``
    multiply-adds instead of ``N M^2``)."""
    rdt = real_dtype(psi.dtype)
    a = upa_steering(torch.as_tensor(theta, dtype=rdt), torch.as_tensor(phi, dtype=rdt),
                     N_h, N_v, d_h, d_v).to(psi.dtype)
    F = B.to(psi.dtype)
    u = matmul_shared((psi * a).unsqueeze(-2), G).squeeze(-2)  # u^T = (psi * a)^T G, (..., M)
    uF = (u.unsqueeze(-2) @ F).squeeze(-2)  # u^T B, (..., r)
    uRu = (uF.real ** 2 + uF.imag ** 2).sum(-1)  # u^T R u^*
    pa = psi.real ** 2 + psi.imag ** 2
    p2 = pa.sum(-1)
    b2 = torch.as_tensor(beta).abs().to(rdt) ** 2
    sr = torch.as_tensor(sigma_r2, dtype=rdt)
    if G.shape[-1] > 32:  # large arrays: one GEMM per distinct G, not G copied for every design sharing it
        GF = matmul_shared(F.mT, G.mT)  # (G B)^T, (..., r, N)
        GRG = (GF.real ** 2 + GF.imag ** 2).sum(-2)  # diag(G R G^H)
    else:
        GF = G @ F  # (..., N, r)
        GRG = (GF.real ** 2 + GF.imag ** 2).sum(-1)
    return b2 * uRu * p2, sr * b2 * p2 ** 2, (pa * GRG).sum(-1), 2.0 * sr * p2


def irs_power_factored(G, psi, B, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                       d_h: float = 0.5, d_v: float = 0.5):
    """:func:`irs_power` (C1 left-hand side [W], ``(...)``) for ``R_s = B B^H``, B ``(..., M, r)``."""
    t1, t2, t3, t4 = irs_power_terms_factored(G, psi, B, theta, phi, beta, sigma_r2, N_h, N_v, d_h, d_v)
    return t1 + t2 + t3 + t4


def irs_power_coefficients_factored(G, psi, B, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                                    d_h: float = 0.5, d_v: float = 0.5):
    """:func:`irs_power_coefficients` ``(P4, P2)`` [W] for ``R_s = B B^H``, B ``(..., M, r)``."""
    t1, t2, t3, t4 = irs_power_terms_factored(G, psi, B, theta, phi, beta, sigma_r2, N_h, N_v, d_h, d_v)
    return t1 + t2, t3 + t4


def c1_max_scale(P4, P2, P_s):
    """Largest ``s >= 0`` with ``s^4 P4 + s^2 P2 <= P_s`` (closed form; inf if P4 = P2 = 0)."""
    P4 = torch.as_tensor(P4)
    P2 = torch.as_tensor(P2)
    P_s = torch.as_tensor(P_s, dtype=P4.dtype)
    disc = torch.sqrt(P2 * P2 + 4.0 * P4 * P_s)
    # s^2 = 2 P_s / (P2 + sqrt(P2^2 + 4 P4 P_s))  (stable form of the quadratic root)
    den = P2 + disc
    s2 = torch.where(den > 0, 2.0 * P_s / torch.where(den > 0, den, torch.ones_like(den)),
                     torch.full_like(den, float("inf")))
    return s2.sqrt()


def irs_power_matrix(G, psi, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                     d_h: float = 0.5, d_v: float = 0.5):
    """C1 (eq. (7)) as an affine function of R_s for fixed psi: ``irs_power = tr(Q R_s) + c0``.

    ``Q = |beta|^2 ||psi||^2 u^* u^T + G^H diag(|psi|^2) G`` (Hermitian PSD, (..., M, M)) and
    ``c0 = sigma_r2 |beta|^2 ||psi||^4 + 2 sigma_r2 ||psi||^2`` ((...), W), u = G^T (psi * a).
    """
    rdt = real_dtype(psi.dtype)
    a = upa_steering(torch.as_tensor(theta, dtype=rdt), torch.as_tensor(phi, dtype=rdt),
                     N_h, N_v, d_h, d_v).to(psi.dtype)
    u = (G.transpose(-1, -2) @ (psi * a).unsqueeze(-1)).squeeze(-1)  # (..., M)
    p2 = (psi.abs() ** 2).sum(-1)
    b2 = torch.as_tensor(beta).abs().to(rdt) ** 2
    sr = torch.as_tensor(sigma_r2, dtype=rdt)
    Q = (b2 * p2)[..., None, None].to(psi.dtype) * (u.conj().unsqueeze(-1) * u.unsqueeze(-2))
    Q = Q + G.conj().transpose(-1, -2) @ ((psi.abs() ** 2).to(psi.dtype).unsqueeze(-1) * G)
    c0 = sr * b2 * p2 ** 2 + 2.0 * sr * p2
    return Q, c0

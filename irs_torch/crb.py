"""Fisher information, Cramer-Rao bound and power budgets of the multi-active-IRS sensing model.

This is the one implementation of the physics that everything else (solvers, data, learning)
uses. All functions are batched over arbitrary leading dimensions ``...`` (which broadcast),
work in complex128 or complex64, and are differentiable with respect to ``R_s``, ``psi`` and
``G`` (and theta, phi).

Model (paper eqs. (8)-(16), NOTES.md corrections 1-2). For IRS l with ``u = G^T (psi * a)``,
``u_theta = G^T (psi * da/dtheta)``, ``u_phi = G^T (psi * da/dphi)`` the echo mean per snapshot is
``beta u u^T s`` (so ``H = u u^T``, ``C_theta = u_theta u^T + u u_theta^T``), the noise covariance
``R_w = sigma_r2 G^T Psi Psi^H G^* + sigma_b2 I`` and, with ``T_L = T_c / L``,

    F_pq = 2 T_L Re tr(D_p^H R_w^-1 D_q R_s),   D_theta = beta C_theta, D_phi = beta C_phi,
                                                 D_Re(beta) = H,       D_Im(beta) = j H.

Rank-one structure. With ``X = [u, u_theta, u_phi]`` (M x 3) every ``C`` is ``X K X^T`` for a
fixed symmetric 3x3 selector ``K``, hence ``tr(C_p^H W C_q R) = tr(K_p A K_q B)`` with the 3x3
Gram matrices ``A = X^H W X`` and ``B = X^T R X^*``. The M x M work is one Cholesky of R_w and a
triangular solve with three right-hand sides.

Rescaling. Entries of F in SI units span ~1e9 (|beta|^2 ~ 1e-11). We compute the
dimensionless ``Fhat`` in the parameterisation ``xi' = (theta, phi, Re beta/|beta|, Im beta/|beta|)``
with ``R_w`` normalised by ``sigma_b2``:

    F_SI = c * J Fhat J,   c = 2 T_L |beta|^2 / sigma_b2,   J = diag(1, 1, 1/|beta|, 1/|beta|),

so ``CRB_theta = [Fhat^-1]_00 / c`` and ``CRB_Re(beta) = [Fhat^-1]_22 sigma_b2 / (2 T_L)``. Fhat is
inverted after a Jacobi (unit-diagonal) congruence, by Cholesky.

Singular FIM. If Fhat is not positive definite (e.g. ``psi = 0``, ``R_s = 0``), the CRB is
``+inf`` (never NaN) and its gradient there is zero.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from irs_torch.physics.steering import upa_steering, upa_steering_derivatives

# Selectors K_p with C_p = X K_p X^T for X = [u, u_theta, u_phi]:  p = theta, phi, H.
_K = torch.tensor(
    [
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # C_theta = u_th u^T + u u_th^T
        [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],  # C_phi
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # H = u u^T
    ],
    dtype=torch.float64,
)


class CRBResult(NamedTuple):
    """Per-IRS CRBs. Every field has shape ``(...)`` (real).

    total: tr(F^-1) in mixed units (rad^2 + |beta|^2 units), the paper's objective.
    theta, phi: CRB of theta and phi [rad^2].  angles = theta + phi [rad^2].
    beta: CRB of Re(beta) + Im(beta) [|beta|^2 units].
    """

    total: torch.Tensor
    theta: torch.Tensor
    phi: torch.Tensor
    beta: torch.Tensor

    @property
    def angles(self) -> torch.Tensor:
        return self.theta + self.phi


def _real_dtype(cdtype):
    return torch.float32 if cdtype == torch.complex64 else torch.float64


def _complex_dtype(*tensors):
    for t in tensors:
        if torch.is_tensor(t) and t.dtype in (torch.complex64, torch.float32):
            return torch.complex64
    return torch.complex128


def echo_vectors(G, psi, theta, phi, N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5):
    """``X = [u, u_theta, u_phi]`` with ``u = G^T (psi * a)`` and its theta/phi derivatives.

    Shapes: G ``(..., N, M)``, psi ``(..., N)``, theta/phi ``(...)`` -> X ``(..., M, 3)`` complex.
    """
    rdt = _real_dtype(psi.dtype)
    a, da_t, da_p = upa_steering_derivatives(torch.as_tensor(theta, dtype=rdt),
                                             torch.as_tensor(phi, dtype=rdt), N_h, N_v, d_h, d_v)
    V = torch.stack([a, da_t, da_p], dim=-1).to(psi.dtype) * psi.unsqueeze(-1)  # (..., N, 3)
    return G.transpose(-1, -2) @ V  # (..., M, 3)


def noise_covariance(G, psi, sigma_r2, sigma_b2, normalized: bool = False):
    """``R_w = sigma_r2 G^T Psi Psi^H G^* + sigma_b2 I`` (paper after (13)); W.

    With ``normalized=True`` returns ``R_w / sigma_b2``. Shapes: G ``(..., N, M)``, psi ``(..., N)``
    -> ``(..., M, M)`` complex.
    """
    B = G.transpose(-1, -2) * psi.unsqueeze(-2)  # (..., M, N) = G^T Psi
    sr = torch.as_tensor(sigma_r2, dtype=_real_dtype(psi.dtype))
    sb = torch.as_tensor(sigma_b2, dtype=_real_dtype(psi.dtype))
    M = G.shape[-1]
    eye = torch.eye(M, dtype=psi.dtype, device=psi.device)
    BBh = B @ B.conj().transpose(-1, -2)
    if normalized:
        return eye + (sr / sb)[..., None, None] * BBh
    return sr[..., None, None] * BBh + sb[..., None, None] * eye


def fim_normalized(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2,
                   N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5):
    """Dimensionless FIM ``Fhat`` (see module docstring): ``F_SI = c J Fhat J``.

    Shapes: G ``(..., N, M)``, psi ``(..., N)``, R_s ``(..., M, M)`` Hermitian PSD [W],
    theta, phi ``(...)`` [rad], beta ``(...)`` complex, sigma_r2, sigma_b2 ``(...)`` or scalars [W]
    -> Fhat ``(..., 4, 4)`` real symmetric, ordered (theta, phi, Re beta, Im beta).
    """
    X = echo_vectors(G, psi, theta, phi, N_h, N_v, d_h, d_v)  # (..., M, 3)
    Rw = noise_covariance(G, psi, sigma_r2, sigma_b2, normalized=True)
    Lc = torch.linalg.cholesky(Rw)
    Y = torch.linalg.solve_triangular(Lc, X, upper=False)
    A = Y.conj().transpose(-1, -2) @ Y  # X^H W X, (..., 3, 3)
    B = X.transpose(-1, -2) @ (R_s.to(X.dtype) @ X.conj())  # X^T R X^*, (..., 3, 3)
    K = _K.to(dtype=X.dtype, device=X.device)
    # T[p, q] = tr(K_p A K_q B)
    KA = torch.einsum("pij,...jk->...pik", K, A)
    KB = torch.einsum("qkl,...li->...qki", K, B)
    T = torch.einsum("...pik,...qki->...pq", KA, KB)  # (..., 3, 3) complex
    bt = torch.as_tensor(beta, dtype=X.dtype)
    e = torch.sgn(bt).conj()  # e^{-j arg beta}
    e = torch.where(bt == 0, torch.ones_like(e), e)
    eT_th = e * T[..., 0, 2]
    eT_ph = e * T[..., 1, 2]
    z = torch.zeros_like(T[..., 0, 0].real)
    rows = [
        [T[..., 0, 0].real, T[..., 0, 1].real, eT_th.real, -eT_th.imag],
        [T[..., 1, 0].real, T[..., 1, 1].real, eT_ph.real, -eT_ph.imag],
        [eT_th.real, eT_ph.real, T[..., 2, 2].real, z],
        [-eT_th.imag, -eT_ph.imag, z, T[..., 2, 2].real],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def fim_scale(beta, sigma_b2, T_L):
    """``c = 2 T_L |beta|^2 / sigma_b2``, the factor between ``Fhat`` and the SI FIM. Shape ``(...)``."""
    return 2.0 * torch.as_tensor(T_L) * torch.as_tensor(beta).abs() ** 2 / torch.as_tensor(sigma_b2)


def fisher_information(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, T_L,
                       N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5):
    """FIM of Proposition 1 (eq. (15)-(16) with NOTES.md corrections) in SI units.

    Parameters ordered (theta [rad], phi [rad], Re beta, Im beta). Ill-conditioned by nature;
    prefer :func:`crb` for the bound. Shapes as :func:`fim_normalized` -> ``(..., 4, 4)`` real.
    """
    Fh = fim_normalized(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v)
    c = fim_scale(beta, sigma_b2, T_L).to(Fh.dtype)
    babs = torch.as_tensor(beta).abs().to(Fh.dtype)
    one = torch.ones_like(babs)
    jd = torch.stack([one, one, 1.0 / babs, 1.0 / babs], dim=-1)
    return c[..., None, None] * jd[..., :, None] * Fh * jd[..., None, :]


def inverse_diagonal(F):
    """Diagonal of ``F^-1`` for symmetric ``F`` ``(..., k, k)``; ``+inf`` where F is not PD.

    Uses a Jacobi congruence then Cholesky. Returns ``(diag, ok)`` with diag ``(..., k)`` and the
    boolean mask ``ok`` ``(...)``. Gradients are finite (zero where not PD).
    """
    d = torch.diagonal(F, dim1=-2, dim2=-1)
    finite = torch.isfinite(F).all(-1).all(-1)
    pos = (d > 0).all(-1) & finite
    k = F.shape[-1]
    eye = torch.eye(k, dtype=F.dtype, device=F.device)
    dsafe = torch.where(pos.unsqueeze(-1), d, torch.ones_like(d))
    s = dsafe.rsqrt()
    Fbar = s.unsqueeze(-1) * torch.where(pos[..., None, None], F, eye) * s.unsqueeze(-2)
    Lc, info = torch.linalg.cholesky_ex(Fbar)
    ok = pos & (info == 0)
    # Also reject numerically singular matrices (condition ~ 1/eps): smallest pivot^2 tiny.
    piv = torch.diagonal(Lc, dim1=-2, dim2=-1)
    tiny = torch.finfo(F.dtype).eps * 10
    ok = ok & (piv.abs().amin(-1) ** 2 > tiny)
    Lc = torch.where(ok[..., None, None], Lc, eye)
    Linv = torch.linalg.solve_triangular(Lc, eye.expand_as(Lc), upper=False)
    inv_diag = (Linv * Linv).sum(-2) * s * s  # diag(L^-T L^-1) scaled back
    inf = torch.full_like(inv_diag, float("inf"))
    return torch.where(ok.unsqueeze(-1), inv_diag, inf), ok


def crb(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, T_L,
        N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5) -> CRBResult:
    """Per-IRS Cramer-Rao bound ``tr(F_l^-1)`` and its parts (paper Section III).

    Shapes: G ``(..., N, M)`` complex, psi ``(..., N)`` complex, R_s ``(..., M, M)`` complex
    Hermitian PSD [W], theta, phi ``(...)`` [rad], beta ``(...)`` complex, sigma_r2, sigma_b2 [W],
    T_L [symbols] -> :class:`CRBResult` of ``(...)`` real tensors (rad^2 for the angles).
    A singular FIM gives ``+inf``.
    """
    Fh = fim_normalized(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v)
    dinv, _ = inverse_diagonal(Fh)
    rdt = Fh.dtype
    babs2 = torch.as_tensor(beta).abs().to(rdt) ** 2
    sb = torch.as_tensor(sigma_b2, dtype=rdt)
    tl = torch.as_tensor(T_L, dtype=rdt)
    k_ang = sb / (2.0 * tl * babs2)  # 1 / c
    k_beta = sb / (2.0 * tl)
    th = dinv[..., 0] * k_ang
    ph = dinv[..., 1] * k_ang
    bb = (dinv[..., 2] + dinv[..., 3]) * k_beta
    return CRBResult(total=th + ph + bb, theta=th, phi=ph, beta=bb)


def irs_power(G, psi, R_s, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
              d_h: float = 0.5, d_v: float = 0.5):
    """IRS transmit power, left-hand side of C1 (eq. (7)) [W].

    ``|beta|^2 (u^T R_s u^*) ||psi||^2 + sigma_r2 |beta|^2 ||psi||^4
    + sum_n |psi_n|^2 [G R_s G^H]_nn + 2 sigma_r2 ||psi||^2`` with ``u = G^T (psi * a)``.

    Shapes: G ``(..., N, M)``, psi ``(..., N)``, R_s ``(..., M, M)``, theta/phi/beta ``(...)``
    -> ``(...)`` real.
    """
    rdt = _real_dtype(psi.dtype)
    a = upa_steering(torch.as_tensor(theta, dtype=rdt), torch.as_tensor(phi, dtype=rdt),
                     N_h, N_v, d_h, d_v).to(psi.dtype)
    R = R_s.to(psi.dtype)
    u = (G.transpose(-1, -2) @ (psi * a).unsqueeze(-1)).squeeze(-1)  # (..., M)
    uRu = torch.einsum("...m,...mn,...n->...", u, R, u.conj()).real
    p2 = (psi.abs() ** 2).sum(-1)
    b2 = torch.as_tensor(beta).abs().to(rdt) ** 2
    sr = torch.as_tensor(sigma_r2, dtype=rdt)
    GRG = torch.einsum("...nm,...mk,...nk->...n", G, R, G.conj()).real  # diag(G R G^H)
    t1 = b2 * uRu * p2
    t2 = sr * b2 * p2 ** 2
    t3 = ((psi.abs() ** 2) * GRG).sum(-1)
    t4 = 2.0 * sr * p2
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
    P2 = irs_power(G, psi, R_s, theta, phi, torch.zeros_like(torch.as_tensor(beta)), sigma_r2,
                   N_h, N_v, d_h, d_v)
    total = irs_power(G, psi, R_s, theta, phi, beta, sigma_r2, N_h, N_v, d_h, d_v)
    return total - P2, P2


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

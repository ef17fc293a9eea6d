"""The Fisher information matrix of one IRS's echo and its CRB (paper Section III): the rescaled FIM ``Fhat`` from the
Gram matrices of :mod:`irs_torch.crb.grams`, the SI-unit FIM, :func:`crb` and :func:`crb_factored`, and the linear
map ``R_s -> Fhat`` used by the P2 SDP. The model and the rescaling are described in :mod:`irs_torch.crb`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from irs_torch.crb.grams import echo_grams, fused_grams, real_dtype
from irs_torch.crb.inverse import FIM_SELECTORS, crb_from_grams, inverse_diagonal_structured
from irs_torch.physics.steering import upa_steering_derivatives


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


def echo_vectors(G, psi, theta, phi, N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5):
    """``X = [u, u_theta, u_phi]`` with ``u = G^T (psi * a)`` and its theta/phi derivatives.

    Shapes: G ``(..., N, M)``, psi ``(..., N)``, theta/phi ``(...)`` -> X ``(..., M, 3)`` complex.
    """
    rdt = real_dtype(psi.dtype)
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
    sr = torch.as_tensor(sigma_r2, dtype=real_dtype(psi.dtype))
    sb = torch.as_tensor(sigma_b2, dtype=real_dtype(psi.dtype))
    M = G.shape[-1]
    eye = torch.eye(M, dtype=psi.dtype, device=psi.device)
    BBh = B @ B.conj().transpose(-1, -2)
    if normalized:
        return eye + (sr / sb)[..., None, None] * BBh
    return sr[..., None, None] * BBh + sb[..., None, None] * eye


def _fim_terms(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v, twice=False, factor=None):
    """The distinct entries of Fhat: :func:`_terms_from_grams` of :func:`_fim_grams` (same arguments)."""
    return _terms_from_grams(*_fim_grams(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v,
                                         twice, factor))


def _fim_grams(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v, twice=False, factor=None):
    """``(A, B, e)``: the 3 x 3 Gram matrices ``A = X^H W X``, ``B = X^T R_s X^*`` (..., 3, 3) and
    ``e = e^{-j arg beta}`` (...) that Fhat is built from (:func:`_terms_from_grams`).

    The distinct entries of ``Fhat`` (see :func:`fim_normalized`), each ``(...)`` real:
    ``(F_tt, F_tp, F_pp, F_t_re, F_t_im, F_p_re, F_p_im, F_bb)`` with ``F_t_re = Fhat[0, 2]``,
    ``F_t_im = Fhat[0, 3]`` etc. and ``Fhat[2:, 2:] = F_bb I_2``.

    With ``A = X^H W X`` and ``B = X^T R X^*`` (3 x 3) and the selectors K_p of the module docstring,
    ``T_pq = tr(K_p A K_q B)`` expands to (index 0 = u, a in {1: theta, 2: phi}):
    ``T_ab = A_a0 B_b0 + A_ab B_00 + A_00 B_ba + A_0b B_0a``, ``T_aH = A_a0 B_00 + A_00 B_0a``,
    ``T_HH = A_00 B_00``. ``factor``: a transmit factor F (..., M, r) used instead of R_s (= F F^H).
    """
    rdt = real_dtype(psi.dtype)
    a, da_t, da_p = upa_steering_derivatives(torch.as_tensor(theta, dtype=rdt),
                                             torch.as_tensor(phi, dtype=rdt), N_h, N_v, d_h, d_v)
    Z = torch.stack([a, da_t, da_p], dim=-2).to(G.dtype).mT  # (..., N, 3)
    rho = (torch.as_tensor(sigma_r2, dtype=rdt, device=psi.device)
           / torch.as_tensor(sigma_b2, dtype=rdt, device=psi.device))
    if factor is None and not twice and R_s.dim() >= 2:
        fused = fused_grams(G, psi, Z, rho, R_s)
        if fused is not None:
            A, B = fused
            return A, B, _phase_conj(beta, A.dtype)
    X, A = echo_grams(G, psi, Z, rho, twice)
    if factor is None:
        B = (X.mT @ R_s.to(X.dtype)) @ X.conj()  # X^T R X^*
        # Hermitian part: equals X^T herm(R_s) X^*, so F and its gradient only see the Hermitian part of R_s.
        B = 0.5 * (B + B.mH)
    else:  # R_s = F F^H: X^T R X^* = (X^T F) (X^T F)^H, no M x M product
        XF = X.mT @ factor.to(X.dtype)  # (..., 3, r)
        B = XF @ XF.mH
    return A, B, _phase_conj(beta, X.dtype)


def _phase_conj(beta, dtype):
    """``e = e^{-j arg beta}`` (1 where beta = 0), complex ``dtype``, shape of beta."""
    bt = torch.as_tensor(beta, dtype=dtype)
    e = torch.sgn(bt).conj()
    return torch.where(bt == 0, torch.ones_like(e), e)


def _terms_from_grams(A, B, e):
    """The eight distinct entries of Fhat (:func:`_fim_terms`) from the Gram matrices A, B and
    ``e = e^{-j arg beta}``."""
    A00, B00 = A[..., 0, 0], B[..., 0, 0]

    def t_ang(i, j):
        return A[..., i, 0] * B[..., j, 0] + A[..., i, j] * B00 + A00 * B[..., j, i] + A[..., 0, j] * B[..., 0, i]

    eT_th = e * (A[..., 1, 0] * B00 + A00 * B[..., 0, 1])
    eT_ph = e * (A[..., 2, 0] * B00 + A00 * B[..., 0, 2])
    return (t_ang(1, 1).real, t_ang(1, 2).real, t_ang(2, 2).real, eT_th.real, -eT_th.imag,
            eT_ph.real, -eT_ph.imag, (A00 * B00).real)


def fim_normalized(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2,
                   N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5):
    """Dimensionless FIM ``Fhat`` (see module docstring): ``F_SI = c J Fhat J``.

    Shapes: G ``(..., N, M)``, psi ``(..., N)``, R_s ``(..., M, M)`` Hermitian PSD [W],
    theta, phi ``(...)`` [rad], beta ``(...)`` complex, sigma_r2, sigma_b2 ``(...)`` or scalars [W]
    -> Fhat ``(..., 4, 4)`` real symmetric, ordered (theta, phi, Re beta, Im beta).
    Differentiable once (the whitened Gram matrix has a hand-written backward, see ``_EchoGrams``).
    """
    Ftt, Ftp, Fpp, Ftr, Fti, Fpr, Fpi, Fbb = _fim_terms(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2,
                                                        N_h, N_v, d_h, d_v)
    z = torch.zeros_like(Fbb)
    rows = [
        [Ftt, Ftp, Ftr, Fti],
        [Ftp, Fpp, Fpr, Fpi],
        [Ftr, Fpr, Fbb, z],
        [Fti, Fpi, z, Fbb],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def fim_scale(beta, sigma_b2, T_L):
    """``c = 2 T_L |beta|^2 / sigma_b2``, the factor between ``Fhat`` and the SI FIM. Shape ``(...)``."""
    return 2.0 * torch.as_tensor(T_L) * torch.as_tensor(beta).abs() ** 2 / torch.as_tensor(sigma_b2)


def fisher_information(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, T_L,
                       N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5):
    """FIM of Proposition 1 (eq. (15)-(16) with the corrections of docs/assumptions.md, items 1-2) in SI units.

    Parameters ordered (theta [rad], phi [rad], Re beta, Im beta). Ill-conditioned by nature;
    prefer :func:`crb` for the bound. Shapes as :func:`fim_normalized` -> ``(..., 4, 4)`` real.
    """
    Fh = fim_normalized(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v)
    c = fim_scale(beta, sigma_b2, T_L).to(Fh.dtype)
    babs = torch.as_tensor(beta).abs().to(Fh.dtype)
    one = torch.ones_like(babs)
    jd = torch.stack([one, one, 1.0 / babs, 1.0 / babs], dim=-1)
    return c[..., None, None] * jd[..., :, None] * Fh * jd[..., None, :]


def crb(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, T_L,
        N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5, twice_differentiable: bool = False) -> CRBResult:
    """Per-IRS Cramer-Rao bound ``tr(F_l^-1)`` and its parts (paper Section III).

    Shapes: G ``(..., N, M)`` complex, psi ``(..., N)`` complex, R_s ``(..., M, M)`` complex
    Hermitian PSD [W], theta, phi ``(...)`` [rad], beta ``(...)`` complex, sigma_r2, sigma_b2 [W],
    T_L [symbols] -> :class:`CRBResult` of ``(...)`` real tensors (rad^2 for the angles).
    A singular FIM gives ``+inf``. Differentiable once w.r.t. G, psi, R_s, theta, phi, sigma_r2;
    ``twice_differentiable=True`` builds the echo Gram matrices from plain autograd operations
    (:func:`echo_grams_autograd`, slower) so that gradients can be differentiated again (unrolled training).
    """
    grams = _fim_grams(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v, twice_differentiable)
    if twice_differentiable:
        dinv, _ = inverse_diagonal_structured(*_terms_from_grams(*grams))
    else:
        dinv = crb_from_grams(*grams)
    return _crb_from_dinv(dinv, beta, sigma_b2, T_L)


def crb_factored(G, psi, B, theta, phi, beta, sigma_r2, sigma_b2, T_L,
                 N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5) -> CRBResult:
    """:func:`crb` for a transmit covariance given by a factor: ``R_s = B B^H``, no M x M matrix formed.

    Shapes: G ``(..., N, M)`` complex, psi ``(..., N)`` complex, B ``(..., M, r)`` complex [sqrt(W)] (any
    rank r >= 1; ``B B^H`` is the covariance [W], ``tr(B B^H) = ||B||_F^2`` its power), theta, phi ``(...)``
    [rad], beta ``(...)`` complex, sigma_r2, sigma_b2 [W], T_L [symbols] -> :class:`CRBResult` of ``(...)``
    real tensors (rad^2 for the angles). Equal to ``crb(G, psi, B @ B.mH, ...)``; the transmit side costs
    ``3 M r`` instead of ``3 M^2`` multiply-adds per problem. Differentiable once w.r.t. G, psi, B, theta,
    phi, sigma_r2. A singular FIM (e.g. B = 0) gives ``+inf``.
    """
    grams = _fim_grams(G, psi, None, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v, factor=B)
    return _crb_from_dinv(crb_from_grams(*grams), beta, sigma_b2, T_L)


def _crb_from_dinv(dinv, beta, sigma_b2, T_L) -> CRBResult:
    """The SI-unit CRBs from ``diag(Fhat^-1)`` (..., 4)."""
    rdt = dinv.dtype
    babs2 = torch.as_tensor(beta).abs().to(rdt) ** 2
    sb = torch.as_tensor(sigma_b2, dtype=rdt)
    tl = torch.as_tensor(T_L, dtype=rdt)
    k_ang = sb / (2.0 * tl * babs2)  # 1 / c
    k_beta = sb / (2.0 * tl)
    th = dinv[..., 0] * k_ang
    ph = dinv[..., 1] * k_ang
    bb = (dinv[..., 2] + dinv[..., 3]) * k_beta
    return CRBResult(total=th + ph + bb, theta=th, phi=ph, beta=bb)


def fim_coefficient_matrices(G, psi, theta, phi, beta, sigma_r2, sigma_b2,
                             N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5):
    """The linear map ``R_s -> Fhat`` of :func:`fim_normalized` for fixed psi (used by the P2 SDP).

    Fhat is linear in R_s: with ``T_pq = tr(K_p A K_q B)``, ``B = X^T R X^*`` one has
    ``T_pq = tr(C_pq R)`` with ``C_pq = X^* M_pq X^T`` for ``M_pq = K_p A K_q``. Every entry of Fhat is
    ``Re(w T_pq)`` for a
    unit complex weight w, so ``Fhat_ij(R) = tr(H_ij R)`` for Hermitian R with the Hermitian
    ``H_ij = (w C + (w C)^H) / 2``.

    Shapes: G ``(..., N, M)``, psi ``(..., N)``, theta/phi/beta ``(...)`` -> H ``(..., 4, 4, M, M)``
    complex Hermitian, ordered (theta, phi, Re beta, Im beta) like Fhat (dimensionless per W of R).
    """
    X = echo_vectors(G, psi, theta, phi, N_h, N_v, d_h, d_v)  # (..., M, 3)
    Rw = noise_covariance(G, psi, sigma_r2, sigma_b2, normalized=True)
    Lc = torch.linalg.cholesky(Rw)
    Y = torch.linalg.solve_triangular(Lc, X, upper=False)
    A = Y.conj().transpose(-1, -2) @ Y  # (..., 3, 3)
    K = FIM_SELECTORS.to(dtype=X.dtype, device=X.device)
    Mpq = torch.einsum("pij,...jk,qkl->...pqil", K, A, K)  # (..., 3, 3, 3, 3)
    # C_pq = X^* Mpq X^T  (so that tr(C_pq R) = tr(Mpq B))
    C = torch.einsum("...mi,...pqil,...nl->...pqmn", X.conj(), Mpq, X)  # (..., 3, 3, M, M)
    bt = torch.as_tensor(beta, dtype=X.dtype)
    e = torch.sgn(bt).conj()
    e = torch.where(bt == 0, torch.ones_like(e), e)[..., None, None]
    one = torch.ones_like(e)
    j = 1j * one
    # Fhat entry = Re(w * T) with (p, q, w):
    spec = [
        [(0, 0, one), (0, 1, one), (0, 2, e), (0, 2, j * e)],
        [(1, 0, one), (1, 1, one), (1, 2, e), (1, 2, j * e)],
        [(0, 2, e), (1, 2, e), (2, 2, one), (2, 2, 0 * one)],
        [(0, 2, j * e), (1, 2, j * e), (2, 2, 0 * one), (2, 2, one)],
    ]
    rows = []
    for r in spec:
        cols = []
        for p, q, w in r:
            Wc = w * C[..., p, q, :, :]
            cols.append(0.5 * (Wc + Wc.conj().transpose(-1, -2)))
        rows.append(torch.stack(cols, dim=-3))
    return torch.stack(rows, dim=-4)

"""Fisher information, Cramer-Rao bound and power budgets of the multi-active-IRS sensing model.

This is the one implementation of the physics that everything else (solvers, data, learning)
uses. All functions are batched over arbitrary leading dimensions ``...`` (which broadcast),
work in complex128 or complex64, and are differentiable with respect to ``R_s``, ``psi`` and
``G`` (and theta, phi).

Model (paper eqs. (8)-(16), docs/assumptions.md "Corrections to the paper" items 1-2). For IRS l with
``u = G^T (psi * a)``, ``u_theta = G^T (psi * da/dtheta)``, ``u_phi = G^T (psi * da/dphi)`` the echo mean per
snapshot is ``beta u u^T s`` (so ``H = u u^T``, ``C_theta = u_theta u^T + u u_theta^T``), the noise covariance
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

Speed. The Gram matrix, R_w's Cholesky factor, X and ``A`` come from one batched product
``[rho |psi|^2 (.) G^H ; (psi (.) Z)^T] G`` per cache-sized chunk of the batch, factored in place
(``_EchoGrams``, with a hand-written, rank-<=6 backward), and the CRB inverts Fhat in closed form
(Schur complement of its beta block). Functions here are differentiable once (no double backward,
no torch.func transforms through ``_EchoGrams``).

Singular FIM. If Fhat is not positive definite (e.g. ``psi = 0``, ``R_s = 0``), the CRB is
``+inf`` (never NaN) and its gradient there is zero.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from irs_torch.physics.steering import upa_steering, upa_steering_derivatives


def broadcast_shapes(*shapes) -> torch.Size:
    """The broadcast of batch shapes, in plain Python: ``torch.broadcast_shapes`` without its cost.

    Same result and errors as :func:`torch.broadcast_shapes` for concrete shapes (ints, tuples, lists,
    ``torch.Size``; an int ``n`` is the shape ``(n,)``, ``None`` is skipped, no shapes give ``()``),
    but ``torch.broadcast_shapes`` imports sympy through ``torch.fx`` on its first call (~0.4 s, the
    larger part of a one-shot network-only solve's CRB evaluation). Shapes are aligned at the right; a
    dimension of size 1 stretches to the other size. Raises RuntimeError for incompatible shapes or a
    shape that is not a sequence, ValueError for a negative size. Returns a ``torch.Size``.
    """
    dims = [(s,) if isinstance(s, int) else s for s in shapes if s is not None]
    for s in dims:
        if not isinstance(s, Sequence):
            raise RuntimeError(f"Input shapes should be of type ints, a tuple of ints, or a list of ints, got {s}")
    out = [1] * max((len(s) for s in dims), default=0)
    for k, s in enumerate(dims):
        for i in range(-1, -1 - len(s), -1):
            d = s[i]
            if d == out[i] or d == 1:
                continue
            if out[i] != 1:
                raise RuntimeError(f"Attempting to broadcast a dimension of length {d} at {i}! Mismatching argument "
                                   f"at index {k} had {tuple(s)}; but expected shape should be broadcastable to "
                                   f"{tuple(out)}")
            if d < 0:
                raise ValueError("Attempting to broadcast a dimension with negative length!")
            out[i] = d
    return torch.Size(out)

# Selectors K_p with C_p = X K_p X^T for X = [u, u_theta, u_phi]:  p = theta, phi, H.
FIM_SELECTORS = torch.tensor(
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


def _sum_to(t, shape):
    """Sum a broadcast gradient ``t`` back to ``shape`` (leading dims and size-1 dims)."""
    if t is None or tuple(t.shape) == tuple(shape):
        return t
    lead = t.dim() - len(shape)
    if lead > 0:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


# Batch chunk of the forward of _EchoGrams, in complex elements of its work buffers (4 MiB in complex128,
# ~430 problems at M = N = 16): the Gram products, Cholesky factors and solves of one chunk stay in
# cache and the buffers are reused, instead of M x M temporaries spanning the batch (memory traffic and
# page faults). Measured on 2 cores: 2^16 to 2^18 are equally fast, 2^19 and more slower.
_CHUNK_ELEMENTS = 1 << 18


class _EchoGrams(torch.autograd.Function):
    """``X = P^T Z`` and ``A = X^H W X`` for ``P = Psi G`` and ``W = (I + rho P^T P^*)^{-1}``, thin backward.

    Inputs: G (..., N, M), psi (..., N), ``Z = [a, da/dtheta, da/dphi]`` (..., N, 3) and
    ``rho = sigma_r2 / sigma_b2`` (real, broadcastable to ``(...)``). Then ``X = G^T Psi Z`` (..., M, 3)
    holds the echo vectors ``[u, u_theta, u_phi]`` and ``I + rho P^T P^* = R_w / sigma_b2`` (paper
    after (13)), so ``A`` (..., 3, 3) is the whitened Gram matrix of the echo vectors. Returns ``(X, A)``.

    Forward, per chunk of the flattened batch (buffers reused and cache-resident): one batched
    product ``[rho |psi|^2 (.) G^H ; (psi (.) Z)^T] G = [rho P^H P ; X^T]``. Since R_w is Hermitian,
    ``I + rho P^H P`` stored row-major is ``R_w / sigma_b2`` stored column-major, the layout LAPACK
    factors in place: Cholesky ``L L^H = R_w / sigma_b2``, ``Y = L^-1 X``, ``A = Y^H Y``; when a
    gradient is needed also ``V = W X = L^-H Y`` (saved instead of L). Besides the product, the only
    pass over an N x M block is writing the scaled ``G^H``; no M x M temporary spans the batch.

    Backward (derived by hand for PyTorch's convention ``dl = Re <g, dz>``, checked by gradcheck in
    tests/test_crb.py): with ``S = gA + gA^H`` and ``gX' = gX + V S``:
    ``gP = conj(Z) gX'^T - rho (P conj(V)) conj(S) V^T``, ``gZ = conj(P) gX'``,
    ``grho = -Re sum(gA (.) (P conj(V))^H (P conj(V)))``, ``gG = conj(psi) (.) gP`` and
    ``gpsi_n = sum_m gP_nm conj(G_nm) = sum_k left_nk conj((G right^H)_nk)`` for ``gP = left right``.
    All of it comes from one thin product ``G conj([V | gX'])`` (N x 6); gP (N x M) is formed only
    when G needs a gradient. No Cholesky backward. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, G, psi, Z, rho):
        N, M = G.shape[-2:]
        shape = broadcast_shapes(G.shape[:-2], psi.shape[:-1], Z.shape[:-2], rho.shape)
        # Flat batch (views, unless an input is broadcast along some but not all batch dims).
        Gf = G.expand(shape + (N, M)).reshape(-1, N, M)
        Zt = Z.mT.expand(shape + (3, N)).reshape(-1, 3, N)  # Z^T
        pf = psi.unsqueeze(-2).expand(shape + (1, N)).reshape(-1, 1, N)
        s = rho.unsqueeze(-1) * (psi * psi.conj()).real  # rho |psi_n|^2
        sf = s.unsqueeze(-2).expand(shape + (1, N)).reshape(-1, 1, N)
        n = Gf.shape[0]
        keep = any(ctx.needs_input_grad)
        c = max(1, min(n, _CHUNK_ELEMENTS // ((M + 3) * (M + N))))
        kw = dict(dtype=G.dtype, device=G.device)
        H = torch.empty((c, M + 3, N), **kw)
        Q = torch.empty((c, M + 3, M), **kw)
        Lt = torch.empty((c, M, M), **kw)  # L^T row-major = L column-major
        Xt = torch.empty((n, 3, M), **kw)
        Yt = torch.empty((n, 3, M), **kw)
        Vt = torch.empty((n, 3, M), **kw) if keep else None
        info = torch.empty((n,), dtype=torch.int32, device=G.device)
        eye = torch.eye(M, **kw)
        for i in range(0, n, c):
            j = min(i + c, n)
            h, q, lt = H[:j - i], Q[:j - i], Lt[:j - i]
            torch.mul(Gf[i:j].mT, sf[i:j], out=h[:, :M])
            torch.conj_physical(h[:, :M], out=h[:, :M])  # rho |psi|^2 (.) G^H
            torch.mul(Zt[i:j], pf[i:j], out=h[:, M:])  # (psi (.) Z)^T
            torch.bmm(h, Gf[i:j], out=q)  # [rho P^H P ; X^T]
            torch.add(q[:, :M], eye, out=lt)
            Xt[i:j] = q[:, M:]
            L = lt.mT
            torch.linalg.cholesky_ex(L, out=(L, info[i:j]))
            torch.linalg.solve_triangular(L, Xt[i:j].mT, upper=False, out=Yt[i:j].mT)
            if keep:
                torch.linalg.solve_triangular(L.mH, Yt[i:j].mT, upper=True, out=Vt[i:j].mT)
        if bool((info != 0).any()):
            raise ValueError("R_w is not positive definite (non-finite G, psi or sigma_r2?)")
        A = Yt.conj() @ Yt.mT  # Y^H Y
        if keep:
            ctx.save_for_backward(G, psi, Z, rho, Vt.mT.reshape(shape + (M, 3)))
        return Xt.mT.reshape(shape + (M, 3)), A.reshape(shape + (3, 3))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gX, gA):
        G, psi, Z, rho, V = ctx.saved_tensors
        shape = V.shape[:-2]
        if gA is None:
            gA = torch.zeros(shape + (3, 3), dtype=V.dtype, device=V.device)
        S = gA + gA.mH
        gXt = V @ S if gX is None else gX + V @ S  # gX'
        GW = G @ torch.cat([V, gXt], dim=-1).conj()  # (..., N, 6) = [G conj(V) | G conj(gX')]
        GV, GgX = GW[..., :3], GW[..., 3:]
        PV = psi.unsqueeze(-1) * GV  # P conj(V)
        r = rho[..., None, None].to(V.dtype)
        gG = gpsi = gZ = grho = None
        if ctx.needs_input_grad[0]:
            left = torch.cat([Z.conj().expand(shape + Z.shape[-2:]), -r * PV], dim=-1)  # (..., N, 6)
            right = torch.cat([gXt.mT, S.conj() @ V.mT], dim=-2)  # (..., 6, M)
            gG = _sum_to(psi.conj().unsqueeze(-1) * (left @ right), G.shape)
        if ctx.needs_input_grad[1]:
            # G right^H = [G conj(gX') | G conj(V) S^T]
            t = (Z * GgX).conj().sum(-1) - (r * PV * (GV @ S.mT).conj()).sum(-1)
            gpsi = _sum_to(t, psi.shape)
        if ctx.needs_input_grad[2]:
            gZ = _sum_to((psi.unsqueeze(-1) * GgX).conj(), Z.shape)
        if ctx.needs_input_grad[3]:
            grho = _sum_to(-(gA * (PV.mH @ PV)).real.sum((-1, -2)), rho.shape)
        return gG, gpsi, gZ, grho


def _fim_terms(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v):
    """The distinct entries of ``Fhat`` (see :func:`fim_normalized`), each ``(...)`` real:
    ``(F_tt, F_tp, F_pp, F_t_re, F_t_im, F_p_re, F_p_im, F_bb)`` with ``F_t_re = Fhat[0, 2]``,
    ``F_t_im = Fhat[0, 3]`` etc. and ``Fhat[2:, 2:] = F_bb I_2``.

    With ``A = X^H W X`` and ``B = X^T R X^*`` (3 x 3) and the selectors K_p of the module docstring,
    ``T_pq = tr(K_p A K_q B)`` expands to (index 0 = u, a in {1: theta, 2: phi}):
    ``T_ab = A_a0 B_b0 + A_ab B_00 + A_00 B_ba + A_0b B_0a``, ``T_aH = A_a0 B_00 + A_00 B_0a``,
    ``T_HH = A_00 B_00``.
    """
    rdt = _real_dtype(psi.dtype)
    a, da_t, da_p = upa_steering_derivatives(torch.as_tensor(theta, dtype=rdt),
                                             torch.as_tensor(phi, dtype=rdt), N_h, N_v, d_h, d_v)
    Z = torch.stack([a, da_t, da_p], dim=-2).to(G.dtype).mT  # (..., N, 3)
    rho = (torch.as_tensor(sigma_r2, dtype=rdt, device=psi.device)
           / torch.as_tensor(sigma_b2, dtype=rdt, device=psi.device))
    X, A = _EchoGrams.apply(G, psi, Z, rho)
    B = (X.mT @ R_s.to(X.dtype)) @ X.conj()  # X^T R X^*
    # Hermitian part: equals X^T herm(R_s) X^*, so F and its gradient only see the Hermitian part of R_s.
    B = 0.5 * (B + B.mH)
    A00, B00 = A[..., 0, 0], B[..., 0, 0]

    def t_ang(i, j):
        return A[..., i, 0] * B[..., j, 0] + A[..., i, j] * B00 + A00 * B[..., j, i] + A[..., 0, j] * B[..., 0, i]

    bt = torch.as_tensor(beta, dtype=X.dtype)
    e = torch.sgn(bt).conj()  # e^{-j arg beta}
    e = torch.where(bt == 0, torch.ones_like(e), e)
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


def _inverse_diagonal_structured(Ftt, Ftp, Fpp, Ftr, Fti, Fpr, Fpi, Fbb):
    """``diag(Fhat^{-1})`` for ``Fhat = [[P, Q], [Q^T, F_bb I_2]]`` (the FIM's pattern), closed form.

    Jacobi scaling to a unit diagonal, then the Schur complement of the beta block,
    ``S = Pbar - Qbar Qbar^T`` (2 x 2): ``[Fbar^-1]_angles = S^-1``, ``[Fbar^-1]_beta = I + Qbar^T S^-1 Qbar``.
    Same acceptance rule as :func:`inverse_diagonal`: finite, positive diagonal and elimination
    pivots > 10 eps. Returns ``(diag (..., 4), ok (...))``; ``+inf`` where not PD, with finite (zero)
    gradients there.
    """
    rdt = Ftt.dtype
    tiny = torch.finfo(rdt).eps * 10
    d = torch.stack([Ftt, Fpp, Fbb], dim=-1)
    off = torch.stack([Ftp, Ftr, Fti, Fpr, Fpi], dim=-1)
    ok = (d > 0).all(-1) & torch.isfinite(d).all(-1) & torch.isfinite(off).all(-1)
    one, zero = torch.ones_like(Ftt), torch.zeros_like(Ftt)
    st, sp, sb = (torch.where(ok, x, one).rsqrt() for x in (Ftt, Fpp, Fbb))
    r = torch.where(ok, Ftp, zero) * st * sp
    qt0, qt1 = (torch.where(ok, x, zero) * st * sb for x in (Ftr, Fti))
    qp0, qp1 = (torch.where(ok, x, zero) * sp * sb for x in (Fpr, Fpi))
    S00 = 1.0 - qt0 * qt0 - qt1 * qt1
    S11 = 1.0 - qp0 * qp0 - qp1 * qp1
    S01 = r - qt0 * qp0 - qt1 * qp1
    det = S00 * S11 - S01 * S01
    ok = ok & (S00 > tiny) & (det > tiny * S00)  # pivots S00 and det / S00
    det = torch.where(ok, det, one)
    I00, I11, I01 = S11 / det, S00 / det, -S01 / det
    b0 = 1.0 + I00 * qt0 * qt0 + 2.0 * I01 * qt0 * qp0 + I11 * qp0 * qp0
    b1 = 1.0 + I00 * qt1 * qt1 + 2.0 * I01 * qt1 * qp1 + I11 * qp1 * qp1
    diag = torch.stack([I00 * st * st, I11 * sp * sp, b0 * sb * sb, b1 * sb * sb], dim=-1)
    return torch.where(ok.unsqueeze(-1), diag, torch.full_like(diag, float("inf"))), ok


def crb(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, T_L,
        N_h: int, N_v: int, d_h: float = 0.5, d_v: float = 0.5) -> CRBResult:
    """Per-IRS Cramer-Rao bound ``tr(F_l^-1)`` and its parts (paper Section III).

    Shapes: G ``(..., N, M)`` complex, psi ``(..., N)`` complex, R_s ``(..., M, M)`` complex
    Hermitian PSD [W], theta, phi ``(...)`` [rad], beta ``(...)`` complex, sigma_r2, sigma_b2 [W],
    T_L [symbols] -> :class:`CRBResult` of ``(...)`` real tensors (rad^2 for the angles).
    A singular FIM gives ``+inf``. Differentiable once w.r.t. G, psi, R_s, theta, phi, sigma_r2.
    """
    terms = _fim_terms(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, N_h, N_v, d_h, d_v)
    dinv, _ = _inverse_diagonal_structured(*terms)
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


def irs_power_terms(G, psi, R_s, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                    d_h: float = 0.5, d_v: float = 0.5):
    """The four terms of C1 (eq. (7)) [W], each ``(...)`` real, in the order
    ``(echo signal |beta|^2 (u^T R_s u^*) ||psi||^2, echo noise sigma_r2 |beta|^2 ||psi||^4,
    direct signal sum_n |psi_n|^2 [G R_s G^H]_nn, direct noise 2 sigma_r2 ||psi||^2)``,
    with ``u = G^T (psi * a)``. Shapes as :func:`irs_power`.
    """
    rdt = _real_dtype(psi.dtype)
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


def irs_power_matrix(G, psi, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                     d_h: float = 0.5, d_v: float = 0.5):
    """C1 (eq. (7)) as an affine function of R_s for fixed psi: ``irs_power = tr(Q R_s) + c0``.

    ``Q = |beta|^2 ||psi||^2 u^* u^T + G^H diag(|psi|^2) G`` (Hermitian PSD, (..., M, M)) and
    ``c0 = sigma_r2 |beta|^2 ||psi||^4 + 2 sigma_r2 ||psi||^2`` ((...), W), u = G^T (psi * a).
    """
    rdt = _real_dtype(psi.dtype)
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

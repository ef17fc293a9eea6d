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

When the IRS has fewer elements than the BS antennas (N < M) the whitened Gram comes from the element
space instead (``_EchoGramsN``): ``A = Z^H K (I + rho K)^-1 Z`` with ``K = Psi^* G^* G^T Psi`` (push-through
identity), one N x N Cholesky and ``G^* G^T`` formed once per distinct G, with an O(N^2) hand-written
backward. The CRB's last stage (``_CRBFromGrams``) builds the six traces ``tr(K_p A K_q B)`` as one product,
inverts Fhat in closed form and has a hand-written backward (``gF = -Fhat^-1 diag(g) Fhat^-1``), so a
forward + backward is a few dozen batched operations whatever the batch size (the first-order screens
call it with batches of ~16).

Low-rank transmit path: :func:`crb_factored`, :func:`irs_power_factored` and
:func:`irs_power_coefficients_factored` take ``B`` (..., M, r) with ``R_s = B B^H`` and never form an M x M
matrix (``X^T R X^* = (X^T B)(X^T B)^H``, ``u^T R u^* = ||B^T u||^2``, ``[G R G^H]_nn = ||(G B)_n||^2``).

Precision: complex64 inputs run the same code in single precision; against complex128 the CRB is then
within ~1e-4 relative (worst measured 8e-5 over M in {4..128}, N in {4..256}; the float32 steering phase
of a 16-element row alone costs ~3e-6, and correlated angle/beta entries amplify it in the Schur
complement), so complex64 suits screening, not reported values.

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


def echo_grams_autograd(G, psi, Z, rho):
    """``(X, A)`` of :class:`_EchoGrams` (same inputs, same outputs) from plain, twice-differentiable torch
    operations: ``P = Psi G``, ``X = P^T Z``, ``L L^H = I + rho conj(P^H P)`` (= R_w / sigma_b2), ``Y = L^-1 X``,
    ``A = Y^H Y``. Slower than the fused forward; used where a gradient must itself be differentiated.
    Shapes: G ``(..., N, M)``, psi ``(..., N)``, Z ``(..., N, 3)``, rho ``(...)`` -> X ``(..., M, 3)``,
    A ``(..., 3, 3)``."""
    M = G.shape[-1]
    P = psi.unsqueeze(-1) * G
    X = P.mT @ Z
    r = torch.as_tensor(rho, dtype=G.real.dtype, device=G.device)[..., None, None].to(G.dtype)
    Rn = torch.eye(M, dtype=G.dtype, device=G.device) + r * (P.mH @ P).conj()
    Lc = torch.linalg.cholesky(Rn)
    Y = torch.linalg.solve_triangular(Lc, X, upper=False)
    return X, Y.mH @ Y


class _EchoGramsN(torch.autograd.Function):
    """``A = X^H W X`` computed in the IRS-element space (N x N): the cheaper route when N < M or when many
    problems share one G.

    Inputs: ``Gam = G^* G^T`` (..., N, N) (Hermitian PSD; computed once per distinct G by the caller),
    psi (..., N), ``Z = [a, da/dtheta, da/dphi]`` (..., N, 3), ``rho = sigma_r2 / sigma_b2`` (real). With
    ``T = G^T Psi`` (M x N) the echo vectors are ``X = T Z`` and ``R_w / sigma_b2 = I_M + rho T T^H``; by the
    push-through identity ``T^H (I_M + rho T T^H)^-1 T = K (I_N + rho K)^-1`` with ``K = T^H T = Psi^* Gam Psi``
    (``K_nm = conj(psi_n) Gam_nm psi_m``, no product with G per problem), so
    ``A = Z^H K S`` with ``S = (I_N + rho K)^-1 Z`` (one N x N Cholesky). Returns A (..., 3, 3), Hermitian.

    Backward (hand-written, ``dl = Re <g, dz>``; ``H = (gA + gA^H) / 2``, ``F = K (I + rho K)^-1`` so that
    ``dF = (I + rho K)^-1 dK (I + rho K)^-1`` and ``dF/drho = -F^2``): ``gK = S H S^H``,
    ``gGam = gK (.) psi conj(psi)^T``, ``gpsi = 2 (gK (.) conj(Gam))^T psi``, ``gZ = 2 (K S) H``,
    ``grho = -Re tr(H (K S)^H (K S))``. O(N^2) per problem, no Cholesky backward. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, Gam, psi, Z, rho):
        r = rho.to(Gam.dtype)[..., None, None]
        N = Gam.shape[-1]
        shape = broadcast_shapes(Gam.shape[:-2], psi.shape[:-1], Z.shape[:-2], rho.shape)
        K = (psi.conj().unsqueeze(-1) * Gam * psi.unsqueeze(-2)).expand(shape + (N, N))  # Psi^* Gam Psi
        C = r * K
        C.diagonal(dim1=-2, dim2=-1).add_(1.0)  # I + rho K
        Lc, info = torch.linalg.cholesky_ex(C)
        if bool((info != 0).any()):
            raise ValueError("R_w is not positive definite (non-finite G, psi or sigma_r2?)")
        S = torch.cholesky_solve(Z.expand(Lc.shape[:-2] + Z.shape[-2:]), Lc)  # (I + rho K)^-1 Z
        KS = K @ S
        A = Z.mH @ KS
        A = 0.5 * (A + A.mH)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(Gam, psi, Z, rho, S, KS)
        return A

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gA):
        Gam, psi, Z, rho, S, KS = ctx.saved_tensors
        H = 0.5 * (gA + gA.mH)
        gGam = gpsi = gZ = grho = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            gK = (S @ H) @ S.mH
            if ctx.needs_input_grad[0]:
                gGam = _sum_to(gK * (psi.unsqueeze(-1) * psi.conj().unsqueeze(-2)), Gam.shape)
            if ctx.needs_input_grad[1]:
                gpsi = _sum_to(2.0 * ((gK * Gam.conj()).mT @ psi.unsqueeze(-1)).squeeze(-1), psi.shape)
        if ctx.needs_input_grad[2]:
            gZ = _sum_to(2.0 * (KS @ H), Z.shape)
        if ctx.needs_input_grad[3]:
            grho = _sum_to(-(H * (KS.mH @ KS).conj()).real.sum((-1, -2)), rho.shape)
        return gGam, gpsi, gZ, grho


# Which route computes (X, A): "auto" (the element space when N < M), "array" (M x M, _EchoGrams) or
# "element" (N x N, _EchoGramsN). Tests set it to check both routes against the reference.
_GRAM_ROUTE = "auto"


def _use_element_space(N: int, M: int) -> bool:
    """True for the N x N route. Per problem the array route costs a Gram product (``M^2 N``) and an M x M
    Cholesky, the element route ``N^2`` element-wise work, an N x N Cholesky and ``Gam = G^* G^T`` (``N^2 M``,
    once per distinct G). Measured (one thread, complex128): the element route is 2-20x faster for N < M; at
    N = M = 16 the array route's fused, cache-resident chunks win by 1.3-2x even with one G for the whole
    batch, and at N = 256, M = 128 by 3x (a 256 x 256 Cholesky against a 128 x 256 x 128 product)."""
    if _GRAM_ROUTE != "auto":
        return _GRAM_ROUTE == "element"
    return N < M


def _matmul_shared(V, W):
    """``V @ W`` for V ``(..., k, n)`` and W ``(..., n, m)`` whose batch dims broadcast, with the batch dims
    along which W is broadcast folded into V's rows: one GEMM per distinct W instead of W copied per problem
    (``torch.matmul`` expands W). Differentiable (plain operations). Returns ``(..., k, m)``."""
    full = broadcast_shapes(V.shape[:-2], W.shape[:-2])
    nd = len(full)
    bw = (1,) * (nd - (W.dim() - 2)) + tuple(W.shape[:-2])
    fold = [i for i in range(nd) if bw[i] == 1 and full[i] != 1]
    if not fold:
        return V @ W
    keep = [i for i in range(nd) if i not in fold]
    k, n = V.shape[-2:]
    m = W.shape[-1]
    Vp = V.expand(full + (k, n)).permute(*keep, *fold, nd, nd + 1)
    kshape = [full[i] for i in keep]
    fshape = [full[i] for i in fold]
    out = Vp.reshape(*kshape, -1, n) @ W.reshape([bw[i] for i in keep] + [n, m])
    out = out.reshape(*kshape, *fshape, k, m)
    inv = [0] * nd
    for pos, i in enumerate(keep + fold):
        inv[i] = pos
    return out.permute(*inv, nd, nd + 1)


def _echo_grams(G, psi, Z, rho, twice=False):
    """``(X, A)``: echo vectors ``X = G^T Psi Z`` (..., M, 3) and their whitened Gram ``A = X^H W X`` (..., 3, 3),
    by the cheaper of the array-space (:class:`_EchoGrams`) and element-space (:class:`_EchoGramsN`) routes.
    ``twice``: plain autograd operations (:func:`echo_grams_autograd`), differentiable twice."""
    if twice:
        return echo_grams_autograd(G, psi, Z, rho)
    N, M = G.shape[-2:]
    if not _use_element_space(N, M):
        return _EchoGrams.apply(G, psi, Z, rho)
    A = _EchoGramsN.apply(G.conj() @ G.mT, psi, Z, rho)
    X = _matmul_shared((psi.unsqueeze(-1) * Z).mT, G).mT  # (G^T Psi Z), one GEMM per distinct G
    return X, A


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
    rdt = _real_dtype(psi.dtype)
    a, da_t, da_p = upa_steering_derivatives(torch.as_tensor(theta, dtype=rdt),
                                             torch.as_tensor(phi, dtype=rdt), N_h, N_v, d_h, d_v)
    Z = torch.stack([a, da_t, da_p], dim=-2).to(G.dtype).mT  # (..., N, 3)
    rho = (torch.as_tensor(sigma_r2, dtype=rdt, device=psi.device)
           / torch.as_tensor(sigma_b2, dtype=rdt, device=psi.device))
    X, A = _echo_grams(G, psi, Z, rho, twice)
    if factor is None:
        B = (X.mT @ R_s.to(X.dtype)) @ X.conj()  # X^T R X^*
        # Hermitian part: equals X^T herm(R_s) X^*, so F and its gradient only see the Hermitian part of R_s.
        B = 0.5 * (B + B.mH)
    else:  # R_s = F F^H: X^T R X^* = (X^T F) (X^T F)^H, no M x M product
        XF = X.mT @ factor.to(X.dtype)  # (..., 3, r)
        B = XF @ XF.mH
    bt = torch.as_tensor(beta, dtype=X.dtype)
    e = torch.sgn(bt).conj()  # e^{-j arg beta}
    e = torch.where(bt == 0, torch.ones_like(e), e)
    return A, B, e


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


# Pairs (p, q) of selectors whose T_pq = tr(K_p A K_q B) enter Fhat: theta-theta, theta-phi, phi-phi, theta-H,
# phi-H, H-H (FIM_SELECTORS order: 0 theta, 1 phi, 2 H).
_T_PAIRS = ((0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2))
_T_MATRIX = {}


def _t_matrix(dtype, device):
    """``Tm`` (81, 6) real (in ``dtype``) with ``T = (vec A (x) vec B) Tm``:
    ``Tm[(j, k), (l, i), n] = K_p[i, j] K_q[k, l]`` for the n-th pair (p, q) of ``_T_PAIRS``, A and B flattened
    row-major. Cached per dtype and device."""
    key = (dtype, str(device))
    if key not in _T_MATRIX:
        K = FIM_SELECTORS
        Tm = torch.stack([torch.einsum("ij,kl->jkli", K[p], K[q]).reshape(81) for p, q in _T_PAIRS], dim=-1)
        _T_MATRIX[key] = Tm.to(dtype=dtype, device=device)
    return _T_MATRIX[key]


class _CRBFromGrams(torch.autograd.Function):
    """``diag(Fhat^-1)`` (..., 4) from the Gram matrices A, B (..., 3, 3) and ``e = e^{-j arg beta}`` (...), fused.

    Forward: ``T_pq = tr(K_p A K_q B)`` for the six pairs of ``_T_PAIRS`` as one product
    ``(vec A (x) vec B) Tm``; ``Fhat`` from T as :func:`_terms_from_grams`; its inverse in closed form as
    :func:`_inverse_diagonal_structured` (Jacobi scaling ``D``, Schur complement ``S`` of the beta block:
    ``Fbar^-1 = [[S^-1, -S^-1 Q], [-Q^T S^-1, I + Q^T S^-1 Q]]``, ``Fhat^-1 = D Fbar^-1 D``), with the same
    acceptance rule (``+inf`` where not positive definite). Backward (by hand, a few batched operations
    instead of ~100 per-entry autograd nodes): ``gF = -Fhat^-1 diag(g) Fhat^-1``; ``gT`` from the entries of
    ``gF`` (``Fhat_ij = Re(w T)`` gives ``gT += gF_ij conj(w)``, w in {1, e, j e}); ``g(A (x) B) = gT Tm^T``,
    ``gA = g(A (x) B) conj(vec B)``, ``gB = conj(vec A)^T g(A (x) B)``; ``ge = sum gF_ij conj(T) / w * e``
    for the e-weighted entries. Zero gradient where Fhat is not positive definite. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, A, B, e):
        shape = broadcast_shapes(A.shape[:-2], B.shape[:-2], e.shape)
        n = shape.numel()
        Af = A.expand(shape + (3, 3)).reshape(n, 9)
        Bf = B.expand(shape + (3, 3)).reshape(n, 9)
        ef = e.expand(shape).reshape(n)
        Tm = _t_matrix(A.dtype, A.device)
        T = (Af.unsqueeze(-1) * Bf.unsqueeze(-2)).reshape(n, 81) @ Tm  # (n, 6)
        eT = ef.unsqueeze(-1) * T[:, 3:5]  # e T_thetaH, e T_phiH
        Tr = T.real
        Ftt, Ftp, Fpp, Fbb = Tr[:, 0], Tr[:, 1], Tr[:, 2], Tr[:, 5]
        q = torch.stack([eT.real, -eT.imag], dim=-1)  # (n, 2 angles, 2 beta parts): Fhat[:2, 2:]
        rdt = Tr.dtype
        tiny = torch.finfo(rdt).eps * 10
        d = torch.stack([Ftt, Fpp, Fbb], dim=-1)
        ok = (d > 0).all(-1) & torch.isfinite(d).all(-1) & torch.isfinite(Ftp) & torch.isfinite(q).all(-1).all(-1)
        one = torch.ones_like(Ftt)
        sc = torch.where(ok.unsqueeze(-1), d, one.unsqueeze(-1)).rsqrt()  # (st, sp, sb)
        sa = sc[:, :2]
        sb = sc[:, 2]
        r = torch.where(ok, Ftp, torch.zeros_like(Ftp)) * sa[:, 0] * sa[:, 1]
        Q = torch.where(ok[:, None, None], q, torch.zeros_like(q)) * (sa * sb.unsqueeze(-1)).unsqueeze(-1)
        QQ = Q @ Q.mT  # (n, 2, 2)
        S00 = 1.0 - QQ[:, 0, 0]
        S11 = 1.0 - QQ[:, 1, 1]
        S01 = r - QQ[:, 0, 1]
        det = S00 * S11 - S01 * S01
        ok = ok & (S00 > tiny) & (det > tiny * S00)
        det = torch.where(ok, det, one)
        Si = torch.stack([torch.stack([S11, -S01], -1), torch.stack([-S01, S00], -1)], -2) / det[:, None, None]
        SiQ = Si @ Q
        TR = -SiQ
        BR = torch.eye(2, dtype=rdt, device=Tr.device) + Q.mT @ SiQ
        Fbi = torch.cat([torch.cat([Si, TR], -1), torch.cat([TR.mT, BR], -1)], -2)  # Fbar^-1
        D = torch.cat([sa, sb.unsqueeze(-1), sb.unsqueeze(-1)], -1)
        Finv = D.unsqueeze(-1) * Fbi * D.unsqueeze(-2)
        Finv = torch.where(ok[:, None, None], Finv, torch.zeros_like(Finv))
        dinv = torch.diagonal(Finv, dim1=-2, dim2=-1)
        dinv = torch.where(ok.unsqueeze(-1), dinv, torch.full_like(dinv, float("inf")))
        ctx.save_for_backward(A, B, e, Af, Bf, ef, T, Finv)
        ctx.shape = shape
        return dinv.reshape(shape + (4,))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gd):
        A, B, e, Af, Bf, ef, T, Finv = ctx.saved_tensors
        n = Af.shape[0]
        g = gd.reshape(n, 4)
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))  # rows with Finv = 0 give gF = 0 anyway
        gF = -(Finv * g.unsqueeze(-2)) @ Finv  # -Finv diag(g) Finv, symmetric
        gs = gF + gF.mT
        # gradients of the distinct entries (off-diagonal entries appear twice)
        g_tt, g_pp = gF[:, 0, 0], gF[:, 1, 1]
        g_tp = gs[:, 0, 1]
        g_t = torch.complex(gs[:, 0, 2], -gs[:, 0, 3])  # g_tr - j g_ti
        g_p = torch.complex(gs[:, 1, 2], -gs[:, 1, 3])
        g_bb = gF[:, 2, 2] + gF[:, 3, 3]
        ec = ef.conj()
        z = torch.zeros_like(g_tt)
        gT = torch.stack([torch.complex(g_tt, z), torch.complex(g_tp, z), torch.complex(g_pp, z), ec * g_t,
                          ec * g_p, torch.complex(g_bb, z)], dim=-1).to(T.dtype)
        gA = gB = ge = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            gAB = (gT @ _t_matrix(T.dtype, T.device).mT).reshape(n, 9, 9)
            if ctx.needs_input_grad[0]:
                gA = _sum_to((gAB @ Bf.conj().unsqueeze(-1)).reshape(ctx.shape + (3, 3)), A.shape)
            if ctx.needs_input_grad[1]:
                gB = _sum_to((Af.conj().unsqueeze(-2) @ gAB).reshape(ctx.shape + (3, 3)), B.shape)
        if ctx.needs_input_grad[2]:
            ge = _sum_to((T[:, 3].conj() * g_t + T[:, 4].conj() * g_p).reshape(ctx.shape), e.shape)
        return gA, gB, ge


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
        dinv, _ = _inverse_diagonal_structured(*_terms_from_grams(*grams))
    else:
        dinv = _CRBFromGrams.apply(*grams)
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
    return _crb_from_dinv(_CRBFromGrams.apply(*grams), beta, sigma_b2, T_L)


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


def irs_power_terms_factored(G, psi, B, theta, phi, beta, sigma_r2, N_h: int, N_v: int,
                             d_h: float = 0.5, d_v: float = 0.5):
    """:func:`irs_power_terms` for ``R_s = B B^H`` with B ``(..., M, r)`` [sqrt(W)]: the same four terms [W],
    each ``(...)`` real, from ``u^T R_s u^* = ||B^T u||^2`` and ``[G R_s G^H]_nn = ||(G B)_n||^2`` (``N M r``
    multiply-adds instead of ``N M^2``)."""
    rdt = _real_dtype(psi.dtype)
    a = upa_steering(torch.as_tensor(theta, dtype=rdt), torch.as_tensor(phi, dtype=rdt),
                     N_h, N_v, d_h, d_v).to(psi.dtype)
    F = B.to(psi.dtype)
    u = _matmul_shared((psi * a).unsqueeze(-2), G).squeeze(-2)  # u^T = (psi * a)^T G, (..., M)
    uF = (u.unsqueeze(-2) @ F).squeeze(-2)  # u^T B, (..., r)
    uRu = (uF.real ** 2 + uF.imag ** 2).sum(-1)  # u^T R u^*
    pa = psi.real ** 2 + psi.imag ** 2
    p2 = pa.sum(-1)
    b2 = torch.as_tensor(beta).abs().to(rdt) ** 2
    sr = torch.as_tensor(sigma_r2, dtype=rdt)
    GF = G @ F  # (..., N, r)
    GRG = (GF.real ** 2 + GF.imag ** 2).sum(-1)  # diag(G R G^H)
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

"""The CRB's heavy stage: the echo vectors ``X = G^T Psi Z`` and their whitened Gram ``A = X^H W X`` (3 x 3), by
routes chosen by size (the array space, one M x M Cholesky of R_w per problem in cache-sized chunks; for large arrays
with several problems per channel the same with R_w's noise part from one real GEMM per channel; the IRS-element
space, one N x N Cholesky, when N < M), and fused with the transmit Gram ``B = X^T R X^*`` for large batches of
problems with one R each. Every route has a hand-written backward (see each class). Shared helpers for batch shapes
and dtypes live here too.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch


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

def real_dtype(cdtype):
    return torch.float32 if cdtype == torch.complex64 else torch.float64


def sum_to(t, shape):
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
            gG = sum_to(psi.conj().unsqueeze(-1) * (left @ right), G.shape)
        if ctx.needs_input_grad[1]:
            # G right^H = [G conj(gX') | G conj(V) S^T]
            t = (Z * GgX).conj().sum(-1) - (r * PV * (GV @ S.mT).conj()).sum(-1)
            gpsi = sum_to(t, psi.shape)
        if ctx.needs_input_grad[2]:
            gZ = sum_to((psi.unsqueeze(-1) * GgX).conj(), Z.shape)
        if ctx.needs_input_grad[3]:
            grho = sum_to(-(gA * (PV.mH @ PV)).real.sum((-1, -2)), rho.shape)
        return gG, gpsi, gZ, grho


class _EchoGramsR(torch.autograd.Function):
    """``(A, B)``: the whitened echo Gram ``A = X^H W X`` of :class:`_EchoGrams` and the transmit Gram
    ``B = X^T herm(R) X^*`` (both (n, 3, 3), Hermitian) for a flat batch with one R per problem, fused.

    Inputs: G (n, N, M), psi (n, N), ``Z`` (n, N, 3), ``rho`` (n,) as :class:`_EchoGrams` and R (n, M, M) (only
    its Hermitian part ``Rh`` matters). Forward, per cache-sized chunk: the product and Cholesky factor of
    :class:`_EchoGrams`; without gradients ``Y = L^-1 X``, ``A = Y^H Y``; with gradients
    ``V = W X`` (one ``cholesky_solve``) and ``A = X^H V``; ``U = X^T R`` and ``B = herm(U X^*)``
    (``= X^T Rh X^*``). Products take contiguous or plainly transposed operands (batched BLAS slows down
    several-fold on lazily conjugated ones).

    Backward (``dl = Re <g, dz>``, ``H = herm(gB)``, ``S = gA + gA^H``): ``gR = X^* H X^T`` (Hermitian),
    the gradient on ``X^T`` from B is ``H X^T (R + R^H)``, so that :class:`_EchoGrams`'s
    ``gX'^T = H X^T (R + R^H) + S^T V^T``; the
    rest (one product ``conj([V | gX']^T) G^T``, then ``gG``, ``gpsi``, ``gZ``, ``grho``) as
    :class:`_EchoGrams`. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, G, psi, Z, rho, R):
        n, N, M = G.shape
        keep = any(ctx.needs_input_grad)
        Zt = Z.mT
        pf = psi.unsqueeze(-2)
        sf = (rho.unsqueeze(-1) * (psi * psi.conj()).real).unsqueeze(-2)  # rho |psi_n|^2, (n, 1, N)
        c = max(1, min(n, _CHUNK_ELEMENTS // ((M + 3) * (M + N))))
        kw = dict(dtype=G.dtype, device=G.device)
        H = torch.empty((c, M + 3, N), **kw)
        Q = torch.empty((c, M + 3, M), **kw)
        Lt = torch.empty((c, M, M), **kw)  # L^T row-major = L column-major
        Xt = torch.empty((n, 3, M), **kw)
        Yt = torch.empty((c, 3, M), **kw)
        Vt = torch.empty((n, 3, M), **kw) if keep else None
        Ut = torch.empty((n, 3, M), **kw)
        A = torch.empty((n, 3, 3), **kw)
        B = torch.empty((n, 3, 3), **kw)
        info = torch.empty((n,), dtype=torch.int32, device=G.device)
        eye = torch.eye(M, **kw)
        for i in range(0, n, c):
            j = min(i + c, n)
            h, q, lt = H[:j - i], Q[:j - i], Lt[:j - i]
            torch.mul(G[i:j].mT, sf[i:j], out=h[:, :M])
            torch.conj_physical(h[:, :M], out=h[:, :M])  # rho |psi|^2 (.) G^H
            torch.mul(Zt[i:j], pf[i:j], out=h[:, M:])  # (psi (.) Z)^T
            torch.bmm(h, G[i:j], out=q)  # [rho P^H P ; X^T]
            torch.add(q[:, :M], eye, out=lt)
            xt = Xt[i:j]
            xt.copy_(q[:, M:])
            L = lt.mT
            torch.linalg.cholesky_ex(L, out=(L, info[i:j]))
            if keep:
                torch.cholesky_solve(xt.mT, L, out=Vt[i:j].mT)  # V = W X
                torch.bmm(xt.conj(), Vt[i:j].mT, out=A[i:j])  # X^H V
            else:
                yt = Yt[:j - i]
                torch.linalg.solve_triangular(L, xt.mT, upper=False, out=yt.mT)
                torch.bmm(yt.conj(), yt.mT, out=A[i:j])  # Y^H Y
            torch.bmm(xt, R[i:j], out=Ut[i:j])  # X^T R
            torch.bmm(Ut[i:j], xt.mH, out=B[i:j])  # X^T R X^*
        if bool((info != 0).any()):
            raise ValueError("R_w is not positive definite (non-finite G, psi or sigma_r2?)")
        A = 0.5 * (A + A.mH)
        B = 0.5 * (B + B.mH)
        if keep:
            ctx.save_for_backward(G, psi, Z, rho, R, Xt, Vt, Ut)
        return A, B

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gA, gB):
        # Every product below takes contiguous or plainly transposed operands without a lazy conjugate: batched
        # BLAS is fast on those and falls back to slow paths (or copies) otherwise.
        G, psi, Z, rho, R, Xt, Vt, Ut = ctx.saved_tensors
        n, N, M = G.shape
        kw = dict(dtype=G.dtype, device=G.device)
        gA = torch.zeros((n, 3, 3), **kw) if gA is None else gA
        gB = torch.zeros((n, 3, 3), **kw) if gB is None else gB
        Hb = 0.5 * (gB + gB.mH)
        S = gA + gA.mH
        gR = None
        if ctx.needs_input_grad[4]:
            gR = torch.bmm(torch.conj_physical(Xt).mT, torch.bmm(Hb, Xt))  # X^* H X^T
        # X^T (R + R^H) = U + conj(conj(X^T) R^T): only the Hermitian part of R enters B
        Ur = Ut + torch.bmm(torch.conj_physical(Xt), R.mT).conj_physical_()
        gXt = torch.bmm(S.mT, Vt).baddbmm_(Hb, Ur)  # gX'^T = S^T V^T + H X^T (R + R^H)
        Wt = torch.cat([Vt, gXt], dim=-2).conj_physical_()  # (n, 6, M) = conj([V | gX'])^T
        GWt = torch.bmm(Wt, G.mT)  # (n, 6, N) = [G conj(V) | G conj(gX')]^T
        GVt, GgXt = GWt[:, :3], GWt[:, 3:]
        PVt = psi.unsqueeze(-2) * GVt  # (P conj(V))^T
        r = rho[:, None, None].to(G.dtype)
        Zt = Z.mT
        gG = gpsi = gZ = grho = None
        if ctx.needs_input_grad[0]:
            left = torch.cat([torch.conj_physical(Zt), -r * PVt], dim=-2)  # (n, 6, N) = [Z^* | -rho P conj(V)]^T
            right = torch.cat([gXt, torch.bmm(torch.conj_physical(S), Vt)], dim=-2)  # (n, 6, M)
            gG = psi.conj().unsqueeze(-1) * torch.bmm(left.mT, right)
        if ctx.needs_input_grad[1]:
            gpsi = (Zt * GgXt).sum(-2).conj() - (r * PVt * torch.bmm(S, GVt).conj()).sum(-2)
        if ctx.needs_input_grad[2]:
            gZ = (psi.unsqueeze(-2) * GgXt).conj().mT
        if ctx.needs_input_grad[3]:
            grho = -(gA * torch.bmm(torch.conj_physical(PVt), PVt.mT)).real.sum((-1, -2))
        return gG, gpsi, gZ, grho, gR


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
                gGam = sum_to(gK * (psi.unsqueeze(-1) * psi.conj().unsqueeze(-2)), Gam.shape)
            if ctx.needs_input_grad[1]:
                gpsi = sum_to(2.0 * ((gK * Gam.conj()).mT @ psi.unsqueeze(-1)).squeeze(-1), psi.shape)
        if ctx.needs_input_grad[2]:
            gZ = sum_to(2.0 * (KS @ H), Z.shape)
        if ctx.needs_input_grad[3]:
            grho = sum_to(-(H * (KS.mH @ KS).conj()).real.sum((-1, -2)), rho.shape)
        return gGam, gpsi, gZ, grho


# Which route computes (X, A): "auto" (the element space when N < M, the shared-channel route for large arrays
# with several designs per channel, else the array route), "array" (M x M, _EchoGrams), "shared" (M x M from one
# real GEMM per channel, _EchoGramsShared, wherever G needs no gradient) or "element" (N x N, _EchoGramsN). Tests
# set it to check every route against the reference.
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


def matmul_shared(V, W):
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


def echo_grams(G, psi, Z, rho, twice=False):
    """``(X, A)``: echo vectors ``X = G^T Psi Z`` (..., M, 3) and their whitened Gram ``A = X^H W X`` (..., 3, 3),
    by the cheapest of the array-space (:class:`_EchoGrams`), shared-channel (:class:`_EchoGramsShared`, large
    arrays with many designs per channel) and element-space (:class:`_EchoGramsN`) routes.
    ``twice``: plain autograd operations (:func:`echo_grams_autograd`), differentiable twice."""
    if twice:
        return echo_grams_autograd(G, psi, Z, rho)
    N, M = G.shape[-2:]
    if not _use_element_space(N, M):
        shape = broadcast_shapes(G.shape[:-2], psi.shape[:-1], Z.shape[:-2], rho.shape)
        if _use_shared_gram(G, shape):
            return _echo_grams_shared(G, psi, Z, rho, shape)
        return _EchoGrams.apply(G, psi, Z, rho)
    A = _EchoGramsN.apply(G.conj() @ G.mT, psi, Z, rho)
    X = matmul_shared((psi.unsqueeze(-1) * Z).mT, G).mT  # (G^T Psi Z), one GEMM per distinct G
    return X, A


def fused_grams(G, psi, Z, rho, R_s):
    """``(A, B)`` from :class:`_EchoGramsR` when it applies, else None: the array route, one transmit covariance
    per problem (R_s spans the whole batch shape, so flattening copies nothing) and a batch large enough that
    the fused chunks pay (measured: from about 128 problems on; below that both cost the same)."""
    N, M = G.shape[-2:]
    if _use_element_space(N, M) or _GRAM_ROUTE == "element":
        return None
    shape = broadcast_shapes(G.shape[:-2], psi.shape[:-1], Z.shape[:-2], rho.shape, R_s.shape[:-2])
    if tuple(R_s.shape[:-2]) != tuple(shape) or shape.numel() < _FUSED_MIN_BATCH:
        return None
    n = shape.numel()

    def flat(t, tail):
        return t.expand(shape + tail).reshape((n,) + tail)

    R = R_s.to(G.dtype).reshape(n, M, M)
    A, B = _EchoGramsR.apply(flat(G, (N, M)), flat(psi, (N,)), flat(Z, (N, 3)),
                             flat(rho.to(real_dtype(G.dtype)), ()), R)
    return A.reshape(shape + (3, 3)), B.reshape(shape + (3, 3))


# Smallest batch for which the fused Gram path (_EchoGramsR) is used.
_FUSED_MIN_BATCH = 128



# The shared-channel route (_EchoGramsShared): used by "auto" from this many BS antennas on (below it the default
# solver's numbers stay those of the array route, bit for bit), with at least _SHARED_MIN_DESIGNS designs per
# distinct channel G, and while the real kernels of all distinct channels (M^2 N reals each) stay under
# _SHARED_MAX_KERNEL (a batch of many scenarios, e.g. a batched refinement, takes the array route instead).
_SHARED_MIN_M = 33
_SHARED_MIN_DESIGNS = 2
_SHARED_MAX_KERNEL = 1 << 25  # reals in all (256 MiB in float64)
# Kernels of recently used channels: id(G) -> (weakref to G, G._version, (Kt, pos)); an entry leaves when its G is
# freed or when newer channels need the room.
_KERNEL_CACHE: dict = {}
_KERNEL_CACHE_SIZE = 2


def _use_shared_gram(G, shape) -> bool:
    """True for :class:`_EchoGramsShared`: G needs no gradient and (``"auto"``) the array is large (M >=
    :data:`_SHARED_MIN_M`), each distinct G serves at least :data:`_SHARED_MIN_DESIGNS` problems of the broadcast
    batch ``shape`` and the kernels are not too large. Forced on by ``_GRAM_ROUTE = "shared"`` (tests)."""
    if G.requires_grad or G.dtype not in (torch.complex64, torch.complex128) or shape.numel() == 0:
        return False
    if _GRAM_ROUTE == "shared":
        return True
    if _GRAM_ROUTE != "auto":
        return False
    N, M = G.shape[-2:]
    distinct = max(1, G.shape[:-2].numel())
    return (M >= _SHARED_MIN_M and shape.numel() >= _SHARED_MIN_DESIGNS * distinct
            and distinct * M * M * N <= _SHARED_MAX_KERNEL)


def _gram_kernel(G):
    """``(K, pos)``: the real kernel of the amplified-noise Gram for the channels G (..., N, M), g = the number of
    distinct channels (``G.shape[:-2].numel()``), and where its columns go.

    ``D = G^T diag(s) G^*`` (M x M Hermitian, ``D_ij = sum_n s_n G_ni conj(G_nj)``) is linear in the real
    weights s (N): with ``K[c, n]`` (g, M^2, N) the real or imaginary part of ``G_ni conj(G_nj)`` for the c-th
    entry of D's lower triangle (real parts for ``i >= j``, imaginary parts for ``i > j``: M^2 rows in all), the
    lower triangles of many designs' D are ONE real GEMM ``K (M^2, N) @ s^T (N, k)`` per channel, a quarter of
    the multiply-adds of the complex products ``(s (.) G^H) G`` (but it streams K from memory: measured on
    2 cores, at M = 64-128 and k = 8 designs per channel it takes about as long as the complex products; the
    gain of the route is that G is not copied per design). ``pos`` (M^2,) int64: the position of each row in
    ``view_as_real`` of a row-major M x M buffer read column-major, i.e. entry (i, j) of D
    goes to element ``(j, i)`` of the buffer (the layout LAPACK factors in place). Cached per channel tensor
    (identity and version) for repeated calls with the same G (the steps of a first-order run)."""
    key = id(G)
    hit = _KERNEL_CACHE.get(key)
    if hit is not None and hit[0]() is G and hit[1] == G._version:
        return hit[2]
    N, M = G.shape[-2:]
    g = max(1, G.shape[:-2].numel())
    i, j = torch.tril_indices(M, M, device=G.device)  # i >= j
    strict = i > j
    flat = i * M + j
    Gd = G.detach().reshape(g, N, M)
    P = (Gd.unsqueeze(-1) * Gd.conj().unsqueeze(-2)).reshape(g, N, M * M)  # G_ni conj(G_nj)
    Kt = torch.cat([P.real[..., flat], P.imag[..., flat[strict]]], dim=-1).mT.contiguous()  # (g, M^2, N)
    tpos = j * M + i  # (i, j) of D -> (j, i) of the row-major buffer
    pos = torch.cat([2 * tpos, 2 * tpos[strict] + 1])
    out = (Kt, pos)
    if len(_KERNEL_CACHE) >= _KERNEL_CACHE_SIZE:
        _KERNEL_CACHE.pop(next(iter(_KERNEL_CACHE)))
    _KERNEL_CACHE[key] = (weakref.ref(G, lambda _r, key=key: _drop_kernel(key, _r)), G._version, out)
    return out


def _drop_kernel(key, ref):
    """Weakref callback: forget the kernel of a freed channel (unless the slot was reused for another G)."""
    hit = _KERNEL_CACHE.get(key)
    if hit is not None and hit[0] is ref:
        del _KERNEL_CACHE[key]


class _EchoGramsShared(torch.autograd.Function):
    """``(X, A)`` of :class:`_EchoGrams` for g channels each shared by k problems (a first-order run's starts):
    the amplified-noise Gram from one real GEMM per channel (:func:`_gram_kernel`) instead of one complex
    ``M x N x M`` product per problem, and no copy of G per problem (forward or backward).

    Inputs: G (g, N, M) (no gradient), its kernel ``K`` (g, M^2, N) real and ``pos`` (:func:`_gram_kernel`),
    psi (g, k, N), Z (g, k, N, 3), rho (g, k) real. Forward: ``s = rho |psi|^2``, the lower triangle of
    ``R_w / sigma_b2 = I + G^T diag(s) G^*`` from ``K @ s^T`` scattered into a zeroed buffer (Cholesky reads
    only that triangle), ``X^T = (psi (.) Z)^T G`` (one GEMM per channel), ``L L^H = R_w / sigma_b2``,
    ``Y = L^-1 X``, ``A = Y^H Y`` and, when a gradient is needed, ``V = L^-H Y``. Returns X (g, k, M, 3) and A
    (g, k, 3, 3).

    Backward: the formulas of :class:`_EchoGrams` (``S = gA + gA^H``, ``gX' = gX + V S``, everything from the
    thin ``G conj([V | gX'])``, here one GEMM per channel over its k problems): ``gpsi``, ``gZ``, ``grho``; no
    gradient for G. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, G, Kt, pos, psi, Z, rho):
        g, N, M = G.shape
        k = psi.shape[1]
        n = g * k
        rdt = Kt.dtype
        s = rho.unsqueeze(-1) * (psi.real ** 2 + psi.imag ** 2)  # (g, k, N)
        D = torch.bmm(Kt, s.mT).mT.reshape(n, -1)  # lower triangle of G^T diag(s) G^*, (n, M^2)
        buf = torch.zeros((n, 2 * M * M), dtype=rdt, device=G.device)
        buf.index_copy_(1, pos, D)
        C = torch.view_as_complex(buf.view(n, M, M, 2))
        C.diagonal(dim1=-2, dim2=-1).real.add_(1.0)
        L = C.mT  # column-major: the lower triangle holds I + D
        info = torch.empty((n,), dtype=torch.int32, device=G.device)
        torch.linalg.cholesky_ex(L, out=(L, info))
        if bool((info != 0).any()):
            raise ValueError("R_w is not positive definite (non-finite G, psi or sigma_r2?)")
        Xt = torch.bmm((psi.unsqueeze(-2) * Z.mT).reshape(g, k * 3, N), G)  # (psi (.) Z)^T G, (g, 3k, M)
        X = Xt.reshape(n, 3, M).mT
        Y = torch.linalg.solve_triangular(L, X, upper=False)
        A = Y.mH @ Y
        if any(ctx.needs_input_grad):
            V = torch.linalg.solve_triangular(L.mH, Y, upper=True)
            ctx.save_for_backward(G, psi, Z, rho, V.reshape(g, k, M, 3))
        return X.reshape(g, k, M, 3), A.reshape(g, k, 3, 3)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gX, gA):
        G, psi, Z, rho, V = ctx.saved_tensors
        g, k, M, _ = V.shape
        N = G.shape[1]
        if gA is None:
            gA = torch.zeros((g, k, 3, 3), dtype=V.dtype, device=V.device)
        S = gA + gA.mH
        gXt = V @ S if gX is None else gX + V @ S  # gX'
        W = torch.cat([V, gXt], dim=-1).conj().permute(0, 2, 1, 3).reshape(g, M, k * 6)
        GW = torch.bmm(G, W).reshape(g, N, k, 6).permute(0, 2, 1, 3)  # (g, k, N, 6) = [G conj(V) | G conj(gX')]
        GV, GgX = GW[..., :3], GW[..., 3:]
        PV = psi.unsqueeze(-1) * GV  # P conj(V)
        r = rho[..., None, None].to(V.dtype)
        gpsi = gZ = grho = None
        if ctx.needs_input_grad[3]:
            gpsi = (Z * GgX).conj().sum(-1) - (r * PV * (GV @ S.mT).conj()).sum(-1)
        if ctx.needs_input_grad[4]:
            gZ = (psi.unsqueeze(-1) * GgX).conj()
        if ctx.needs_input_grad[5]:
            grho = -(gA * (PV.mH @ PV)).real.sum((-1, -2))
        return None, None, None, gpsi, gZ, grho


def _echo_grams_shared(G, psi, Z, rho, shape):
    """:class:`_EchoGramsShared` for inputs broadcasting to the batch ``shape``: the batch dims along which G is
    broadcast are gathered as the k problems of each distinct G (as :func:`matmul_shared` does), and the
    results are put back in ``shape`` order. Returns ``(X, A)`` as :func:`echo_grams`."""
    N, M = G.shape[-2:]
    nd = len(shape)
    bg = (1,) * (nd - (G.dim() - 2)) + tuple(G.shape[:-2])
    fold = [i for i in range(nd) if bg[i] == 1 and shape[i] != 1]
    keep = [i for i in range(nd) if i not in fold]
    perm = keep + fold
    g = max(1, G.shape[:-2].numel())
    k = shape.numel() // g if g else 0

    def lay(t, tail):
        t = t.expand(shape + tail).permute(*perm, *range(nd, nd + len(tail)))
        return t.reshape((g, k) + tail)

    Kt, pos = _gram_kernel(G)
    Gd = G.reshape(g, N, M)
    rho = torch.as_tensor(rho, dtype=real_dtype(G.dtype), device=G.device)
    X, A = _EchoGramsShared.apply(Gd, Kt, pos, lay(psi.to(G.dtype), (N,)), lay(Z.to(G.dtype), (N, 3)),
                                  lay(rho, ()))
    inv = [0] * nd
    for p_, i in enumerate(perm):
        inv[i] = p_
    lead = [shape[i] for i in perm]

    def back(t):
        return t.reshape(lead + list(t.shape[2:])).permute(*inv, nd, nd + 1)

    return back(X), back(A)

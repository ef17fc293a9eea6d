"""The CRB's last stage: ``diag(Fhat^-1)`` from the 3 x 3 Gram matrices in closed form (:func:`crb_from_grams`,
hand-written backward), the generic :func:`inverse_diagonal` and the structured inverse of the FIM's pattern.
"""
from __future__ import annotations

import torch

from irs_torch.crb.grams import broadcast_shapes, sum_to

# Selectors K_p with C_p = X K_p X^T for X = [u, u_theta, u_phi]:  p = theta, phi, H.
FIM_SELECTORS = torch.tensor(
    [
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # C_theta = u_th u^T + u u_th^T
        [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],  # C_phi
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # H = u u^T
    ],
    dtype=torch.float64,
)


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


def inverse_diagonal_structured(Ftt, Ftp, Fpp, Ftr, Fti, Fpr, Fpi, Fbb):
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


# The six traces T_pq = tr(K_p A K_q B) that enter Fhat (theta-theta, theta-phi, phi-phi, theta-H, phi-H, H-H;
# FIM_SELECTORS order 0 theta, 1 phi, 2 H) as sums of four products A[i] B[j] of the row-major flattened Gram
# matrices (index 9 is a zero entry): T_ab = A_a0 B_b0 + A_ab B_00 + A_00 B_ba + A_0b B_0a,
# T_aH = A_a0 B_00 + A_00 B_0a, T_HH = A_00 B_00 (see _fim_grams).
_T_IA = (3, 4, 0, 1), (3, 5, 0, 2), (6, 8, 0, 2), (3, 0, 9, 9), (6, 0, 9, 9), (0, 9, 9, 9)
_T_IB = (3, 0, 4, 1), (6, 0, 7, 1), (6, 0, 8, 2), (0, 1, 9, 9), (0, 2, 9, 9), (0, 9, 9, 9)
_T_INDEX = {}


def _t_index(dtype, device):
    """``(IA, IB, SA, SB)``: the index tensors (24,) of ``_T_IA`` / ``_T_IB``, flattened, and their one-hot
    matrices (10, 24) in ``dtype`` (``SA[i, k] = 1`` where ``IA[k] = i``: the scatter-add of the backward as one
    matrix product). Cached per dtype and device."""
    key = (dtype, str(device))
    if key not in _T_INDEX:
        idx = tuple(torch.tensor(t, dtype=torch.long, device=device).reshape(24) for t in (_T_IA, _T_IB))
        onehot = tuple(torch.nn.functional.one_hot(i, 10).mT.to(dtype) for i in idx)
        _T_INDEX[key] = idx + onehot
    return _T_INDEX[key]


def _planes(t, n):
    """Gram matrices ``t`` (n, 3, 3) as ten planes (10, n): the nine entries row-major, then a zero plane (the
    zero entry of the trace tables). Entry-major ("batch-last") so that every element-wise operation below runs
    over contiguous length-n vectors."""
    return torch.cat([t.reshape(n, 9).mT, torch.zeros((1, n), dtype=t.dtype, device=t.device)], dim=0)


def _mul_sum(a, b, dim):
    """``(a * b).sum(dim)``: a 2 x 2 or 4 x 4 matrix product over entry-major planes, without per-matrix BLAS."""
    return (a * b).sum(dim)


class _CRBFromGramsEntryMajor(torch.autograd.Function):
    """``diag(Fhat^-1)`` (..., 4) from the Gram matrices A, B (..., 3, 3) and ``e = e^{-j arg beta}`` (...), fused,
    entry-major: the form :func:`crb_from_grams` uses for large batches (2-3x faster than the batch-major form at
    4096 problems, equal to it up to rounding).

    Forward: the six traces ``T_pq = tr(K_p A K_q B)`` as one gather-multiply-sum over the four-product tables
    ``_T_IA`` / ``_T_IB``; ``Fhat`` from T as :func:`_terms_from_grams`; its inverse in closed form as
    :func:`inverse_diagonal_structured` (Jacobi scaling ``D``, Schur complement ``S`` of the beta block:
    ``Fbar^-1 = [[S^-1, -S^-1 Q], [-Q^T S^-1, I + Q^T S^-1 Q]]``, ``Fhat^-1 = D Fbar^-1 D``), with the same
    acceptance rule (``+inf`` where not positive definite). Everything runs on entry-major planes (k, n), and the
    2 x 2 / 4 x 4 products are broadcast multiply-sums (no per-matrix BLAS calls), so the cost is a few dozen
    vectorised operations whatever the batch size. Backward (by hand): ``gF = -Fhat^-1 diag(g) Fhat^-1``; ``gT``
    from the entries of ``gF`` (``Fhat_ij = Re(w T)`` gives ``gT += gF_ij conj(w)``, w in {1, e, j e}); for
    ``T_k = sum A[ia] B[ib]`` (bilinear) ``gA[ia] += gT_k conj(B[ib])`` and ``gB[ib] += gT_k conj(A[ia])``
    (index-adds over the tables); ``ge = sum gF_ij conj(T) / w * e`` for the e-weighted entries. Zero gradient
    where Fhat is not positive definite. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, A, B, e):
        shape = broadcast_shapes(A.shape[:-2], B.shape[:-2], e.shape)
        n = shape.numel()
        Af = _planes(A.expand(shape + (3, 3)), n)
        Bf = _planes(B.expand(shape + (3, 3)), n)
        ef = e.expand(shape).reshape(n)
        IA, IB = _t_index(A.dtype, A.device)[:2]
        T = (Af.index_select(0, IA) * Bf.index_select(0, IB)).reshape(6, 4, n).sum(1)  # (6, n)
        eT = ef * T[3:5]  # e T_thetaH, e T_phiH
        Tr = T.real
        rdt = Tr.dtype
        tiny = torch.finfo(rdt).eps * 10
        q = torch.stack([eT.real, -eT.imag], dim=1)  # (2 angles, 2 beta parts, n): Fhat[:2, 2:]
        d = Tr[(0, 2, 5), :]  # F_tt, F_pp, F_bb
        Ftp = Tr[1]
        ok = (d > 0).all(0) & torch.isfinite(d).all(0) & torch.isfinite(Ftp) & torch.isfinite(q).all(0).all(0)
        sc = torch.where(ok, d, 1.0).rsqrt()  # (st, sp, sb)
        sa = sc[:2]
        sb = sc[2]
        r = torch.where(ok, Ftp, 0.0) * sa[0] * sa[1]
        Q = torch.where(ok, q, 0.0) * (sa * sb).unsqueeze(1)  # (2, 2, n)
        QQ = _mul_sum(Q.unsqueeze(1), Q.unsqueeze(0), 2)  # Q Q^T
        S00 = 1.0 - QQ[0, 0]
        S11 = 1.0 - QQ[1, 1]
        S01 = r - QQ[0, 1]
        det = S00 * S11 - S01 * S01
        ok = ok & (S00 > tiny) & (det > tiny * S00)
        det = torch.where(ok, det, 1.0)
        Si = torch.stack([S11, -S01, -S01, S00]).reshape(2, 2, n) / det
        TR = -_mul_sum(Si.unsqueeze(2), Q.unsqueeze(0), 1)  # -S^-1 Q
        BR = -_mul_sum(Q.unsqueeze(2), TR.unsqueeze(1), 0)  # Q^T S^-1 Q
        BR[0, 0] += 1.0
        BR[1, 1] += 1.0
        Fbi = torch.cat([torch.cat([Si, TR], 1), torch.cat([TR.transpose(0, 1), BR], 1)], 0)  # Fbar^-1, (4, 4, n)
        D = torch.cat([sa, sb.unsqueeze(0), sb.unsqueeze(0)], 0)
        Finv = torch.where(ok, D.unsqueeze(1) * Fbi * D.unsqueeze(0), 0.0)
        dinv = torch.where(ok, torch.diagonal(Finv, dim1=0, dim2=1).mT, float("inf"))  # (4, n)
        ctx.save_for_backward(A, B, e, Af, Bf, ef, T, Finv)
        ctx.shape = shape
        return dinv.mT.reshape(shape + (4,))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gd):
        A, B, e, Af, Bf, ef, T, Finv = ctx.saved_tensors
        n = Af.shape[1]
        g = gd.reshape(n, 4).mT
        g = torch.where(torch.isfinite(g), g, 0.0)  # rows with Finv = 0 give gF = 0 anyway
        gF = -_mul_sum((Finv * g).unsqueeze(2), Finv.unsqueeze(0), 1)  # -Finv diag(g) Finv, (4, 4, n)
        gs = gF + gF.transpose(0, 1)
        # gradients of the distinct entries (off-diagonal entries appear twice)
        g_t = torch.complex(gs[0, 2], -gs[0, 3])  # g_tr - j g_ti
        g_p = torch.complex(gs[1, 2], -gs[1, 3])
        ec = ef.conj()
        z = torch.zeros_like(g_t.real)
        gT = torch.stack([torch.complex(gF[0, 0], z), torch.complex(gs[0, 1], z), torch.complex(gF[1, 1], z),
                          ec * g_t, ec * g_p, torch.complex(gF[2, 2] + gF[3, 3], z)]).to(T.dtype)  # (6, n)
        gA = gB = ge = None
        IA, IB, SA, SB = _t_index(T.dtype, T.device)
        gT4 = gT.unsqueeze(1).expand(6, 4, n).reshape(24, n)
        if ctx.needs_input_grad[0]:
            gAf = SA[:9] @ (gT4 * Bf.index_select(0, IB).conj())  # (9, n)
            gA = sum_to(gAf.mT.reshape(ctx.shape + (3, 3)), A.shape)
        if ctx.needs_input_grad[1]:
            gBf = SB[:9] @ (gT4 * Af.index_select(0, IA).conj())
            gB = sum_to(gBf.mT.reshape(ctx.shape + (3, 3)), B.shape)
        if ctx.needs_input_grad[2]:
            ge = sum_to((T[3].conj() * g_t + T[4].conj() * g_p).reshape(ctx.shape), e.shape)
        return gA, gB, ge


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


class _CRBFromGramsBatchMajor(torch.autograd.Function):
    """``diag(Fhat^-1)`` (..., 4) from the Gram matrices A, B (..., 3, 3) and ``e = e^{-j arg beta}`` (...), fused,
    batch-major: the form :func:`crb_from_grams` uses below ``_ENTRY_MAJOR_MIN_BATCH`` problems (every solver call
    at the paper's sizes), kept unchanged so that those results stay bit-identical.

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
                gA = sum_to((gAB @ Bf.conj().unsqueeze(-1)).reshape(ctx.shape + (3, 3)), A.shape)
            if ctx.needs_input_grad[1]:
                gB = sum_to((Af.conj().unsqueeze(-2) @ gAB).reshape(ctx.shape + (3, 3)), B.shape)
        if ctx.needs_input_grad[2]:
            ge = sum_to((T[:, 3].conj() * g_t + T[:, 4].conj() * g_p).reshape(ctx.shape), e.shape)
        return gA, gB, ge


# Smallest batch for which crb_from_grams takes the entry-major form.
_ENTRY_MAJOR_MIN_BATCH = 128


def crb_from_grams(A, B, e):
    """``diag(Fhat^-1)`` (..., 4) from the Gram matrices A, B (..., 3, 3) and ``e = e^{-j arg beta}`` (...), with a
    hand-written backward: the entry-major form for batches of at least ``_ENTRY_MAJOR_MIN_BATCH`` problems, the
    batch-major one below (the default solver's calls, whose results therefore do not change)."""
    n = broadcast_shapes(A.shape[:-2], B.shape[:-2], e.shape).numel()
    form = _CRBFromGramsEntryMajor if n >= _ENTRY_MAJOR_MIN_BATCH else _CRBFromGramsBatchMajor
    return form.apply(A, B, e)

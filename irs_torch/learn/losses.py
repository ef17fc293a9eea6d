"""Losses of the warm-start model: a smooth log max-CRB and phase-invariant supervised terms.

All functions are batched over ``...`` and differentiable; they return per-instance values
``(...)`` (average them yourself).
"""
from __future__ import annotations

import math

import torch

#: CRBs are clamped to this before the log: an infinite CRB (singular FIM) then has a finite loss
#: and a zero gradient instead of NaN.
CRB_CLAMP = 1e30


def log_smooth_max(crb_total: torch.Tensor, tau: float) -> torch.Tensor:
    """``tau * logsumexp(log CRB_l / tau)`` over the IRS dim: a smooth upper bound of
    ``log max_l CRB_l`` (the paper's objective (P1) in log form), within ``tau log L`` of it.

    Shapes: crb_total ``(..., L)`` -> ``(...)``. ``tau`` > 0 (in log units; 0.05 ~ 5 %).
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    tiny = torch.finfo(crb_total.dtype).tiny
    lc = torch.log(crb_total.clamp(min=tiny, max=CRB_CLAMP))
    return tau * torch.logsumexp(lc / tau, dim=-1)


def psi_label_loss(psi: torch.Tensor, psi_label: torch.Tensor, a_max) -> torch.Tensor:
    """Distance of psi to the label that ignores each IRS's common phase (the CRB does too).

    Per IRS: ``1 - |psi^H psi*| / (||psi|| ||psi*||)`` (0 iff equal up to a common phase and a
    positive scale) plus ``((||psi|| - ||psi*||) / (sqrt(N) a_max))^2`` (the amplitude level);
    averaged over the IRSs. Shapes: psi, psi_label ``(..., L, N)`` complex, a_max ``(...)`` or
    scalar -> ``(...)``.
    """
    N = psi.shape[-1]
    n1 = torch.linalg.vector_norm(psi, dim=-1)
    n2 = torch.linalg.vector_norm(psi_label, dim=-1)
    inner = (psi.conj() * psi_label).sum(-1).abs()
    den = (n1 * n2).clamp_min(torch.finfo(n1.dtype).tiny)
    direction = 1.0 - inner / den
    amax = torch.as_tensor(a_max, dtype=n1.dtype, device=n1.device)
    amax = amax.unsqueeze(-1) if amax.dim() else amax
    level = ((n1 - n2) / (math.sqrt(N) * amax)) ** 2
    return (direction + level).mean(-1)


def transmit_label_loss(R_s: torch.Tensor, R_label: torch.Tensor) -> torch.Tensor:
    """Normalised Frobenius distance ``sum_l ||R_l - R*_l||_F^2 / sum_l ||R*_l||_F^2``.

    Shapes: ``(..., L, M, M)`` complex -> ``(...)``.
    """
    num = ((R_s - R_label).abs() ** 2).sum(dim=(-3, -2, -1))
    den = (R_label.abs() ** 2).sum(dim=(-3, -2, -1)).clamp_min(torch.finfo(num.dtype).tiny)
    return num / den


def refined_log_max(scenario, design, steps: int, tau: float, d_all=None, c_all=None, hypotheses: int = 1,
                    exact: bool = False) -> torch.Tensor:
    """The loss of a start by what the refiner makes of it: per instance, the smallest :func:`log_smooth_max`
    over the unrolled starts after ``steps`` first-order steps (:func:`irs_torch.solvers.first_order.unrolled_refine`,
    the arithmetic of the runtime's ``refine="fo"``). The starts: ``design`` (the network's own, a
    :class:`~irs_torch.learn.feasibility.FeasibleDesign` of batch ``(B,)``) and, with ``hypotheses`` > 1, the next
    best single hypotheses of ``d_all`` (``(B, K, ...)``) by their max-CRB ``c_all`` ``(B, K, L)``. R_s enters by its
    Cholesky factor, so the start is exactly the network's design and no eigendecomposition is differentiated.
    ``exact=False``: first-order unrolling (truncated backpropagation, cheap). Shape ``(B,)``."""
    from irs_torch.solvers.first_order import unrolled_refine

    Rs, ps = [design.R_s], [design.psi]
    k = int(hypotheses) - 1
    if k > 0 and d_all is not None:
        order = torch.argsort(c_all.detach().amax(-1), dim=-1)[:, :k]  # (B, k)
        ar = torch.arange(order.shape[0], device=order.device).unsqueeze(-1)
        Rs += list(d_all.R_s[ar, order].movedim(1, 0))
        ps += list(d_all.psi[ar, order].movedim(1, 0))
    R0, p0 = torch.stack(Rs), torch.stack(ps)  # (k, B, ...)
    M = R0.shape[-1]
    eye = torch.eye(M, dtype=R0.dtype, device=R0.device)
    tr = torch.diagonal(R0, dim1=-2, dim2=-1).real.sum(-1)[..., None, None]
    B0 = torch.linalg.cholesky(R0 + (1e-9 * tr / M).to(R0.dtype) * eye)
    R, psi = unrolled_refine(scenario, B0, p0, int(steps), exact=bool(exact))
    return log_smooth_max(scenario.crb(R, psi, validate=False).total, tau).amin(0)


def slot_label_loss(psi: torch.Tensor, R_s: torch.Tensor, psi_label: torch.Tensor, R_label: torch.Tensor, a_max,
                    w_psi: float = 1.0, w_R: float = 1.0) -> torch.Tensor:
    """Supervised distance of K candidate designs to a label, slot by slot, winner takes all.

    For each IRS slot l the candidate closest to the label's slot (``w_psi`` times the phase-invariant distance of
    :func:`psi_label_loss` for that slot plus ``w_R`` times ``||R_l - R*_l||_F^2 / (sum_k ||R*_k||_F^2 / L)``) is the
    one that counts; the result is the mean over slots of those smallest distances. Only the closest candidate of
    each slot is pulled towards the label, so the other candidates stay free to cover other basins (the runtime
    assembles its design slot by slot from the candidates, :func:`irs_torch.learn.nets.combine_slots`). With K = 1
    it equals ``w_psi * psi_label_loss + w_R * transmit_label_loss``.

    Shapes: psi ``(..., K, L, N)``, R_s ``(..., K, L, M, M)`` complex; psi_label ``(..., L, N)``, R_label
    ``(..., L, M, M)``; a_max ``(...)`` or scalar -> ``(...)``.
    """
    N, L = psi.shape[-1], psi.shape[-2]
    pl = psi_label.unsqueeze(-3)
    n1 = torch.linalg.vector_norm(psi, dim=-1)  # (..., K, L)
    n2 = torch.linalg.vector_norm(pl, dim=-1)
    inner = (psi.conj() * pl).sum(-1).abs()
    direction = 1.0 - inner / (n1 * n2).clamp_min(torch.finfo(n1.dtype).tiny)
    amax = torch.as_tensor(a_max, dtype=n1.dtype, device=n1.device)
    amax = amax[..., None, None] if amax.dim() else amax
    d_psi = direction + ((n1 - n2) / (math.sqrt(N) * amax)) ** 2
    num = ((R_s - R_label.unsqueeze(-4)).abs() ** 2).sum(dim=(-2, -1))  # (..., K, L)
    den = (R_label.abs() ** 2).sum(dim=(-3, -2, -1)).clamp_min(torch.finfo(num.dtype).tiny) / L  # (...)
    d_R = num / den[..., None, None]
    return (w_psi * d_psi + w_R * d_R).amin(-2).mean(-1)

"""Robust P2: the transmit covariances R_s for fixed psi over a region's K
candidates, one compiled SDP (:class:`RobustTransmitSDP`, Schur-complement LMIs per slot and candidate, K C1 rows
per slot), the point repaired to exact feasibility (:func:`solve_robust_transmit`).
"""
from __future__ import annotations

import time
import warnings

import cvxpy as cp
import numpy as np
import torch

from irs_torch import crb as crb_model
from irs_torch.design.robust_problem import RobustProblem, robust_objective
from irs_torch.solvers.conic import OK_STATUSES, solver_kwargs
from irs_torch.solvers.transmit import FIM_ENTRIES, assembly_matrix, real_coefficients


# ----------------------------------------------------------------------------- P2
class RobustTransmitSDP:
    """Compiled (DPP) robust P2 for L slots, B FIM blocks and C C1 rows per slot, M antennas.

    ``R_l = P_t Y_l``. Per slot l and block b: ``Fbar_lb = assemble(W[l][b] @ x_l + f0[l][b])`` (8 distinct
    entries; ``f0`` the scaled prior, zero unless bayesian), ``[[Fbar, I], [I, U_lb]] >= 0``; epigraph
    ``w[l][b] . diag(U_lb) <= kappa`` (``mode="max"``) or ``sum_b w[l][b] . diag(U_lb) <= kappa``
    (``"sum"``); C1 rows ``q[l] @ x_l <= rhs[l]`` (C, ); ``sum_l tr Y_l <= L``; ``Y_l >= 0``.
    """

    def __init__(self, L: int, B: int, C: int, M: int, mode: str):
        n = 2 * M * M
        S = assembly_matrix()
        eye4 = np.eye(4)
        self.W = [[cp.Parameter((8, n)) for _ in range(B)] for _ in range(L)]
        self.f0 = [[cp.Parameter(8) for _ in range(B)] for _ in range(L)]
        self.w = [[cp.Parameter(4, nonneg=True) for _ in range(B)] for _ in range(L)]
        self.q = [cp.Parameter((C, n)) for _ in range(L)]
        self.rhs = [cp.Parameter(C) for _ in range(L)]
        self.Y = [cp.Variable((M, M), hermitian=True) for _ in range(L)]
        self.U = [[cp.Variable((4, 4), symmetric=True) for _ in range(B)] for _ in range(L)]
        self.kappa = cp.Variable()
        cons = []
        for l in range(L):
            x = cp.hstack([cp.vec(cp.real(self.Y[l]), order="F"), cp.vec(cp.imag(self.Y[l]), order="F")])
            terms = []
            for b in range(B):
                Fbar = cp.reshape(S @ (self.W[l][b] @ x + self.f0[l][b]), (4, 4), order="C")
                cons.append(cp.bmat([[Fbar, eye4], [eye4, self.U[l][b]]]) >> 0)
                terms.append(self.w[l][b] @ cp.diag(self.U[l][b]))
            if mode == "max":
                cons += [t <= self.kappa for t in terms]
            else:
                cons.append(sum(terms) <= self.kappa)
            cons += [self.Y[l] >> 0, self.q[l] @ x <= self.rhs[l]]
        cons.append(sum(cp.real(cp.trace(self.Y[l])) for l in range(L)) <= L)
        self.problem = cp.Problem(cp.Minimize(self.kappa), cons)


_SDP_CACHE: dict = {}


def _sdp(L, B, C, M, mode) -> RobustTransmitSDP:
    key = (L, B, C, M, mode)
    if key not in _SDP_CACHE:
        _SDP_CACHE[key] = RobustTransmitSDP(*key)
    return _SDP_CACHE[key]


def _conic_solve(problem: cp.Problem, solver: str, eps: float) -> str:
    """Solve with Clarabel (one thread, its default equilibration: the point P2's setting
    ``equilibrate_enable=False`` failed on the paper's robust P2 with K = 9, where the default solved it)
    or SCS (:func:`irs_torch.solvers.conic.solver_kwargs`). Returns the status ("error: ..." on errors)."""
    kw = dict(solver=cp.CLARABEL, max_iter=300, max_threads=1) if solver == "CLARABEL" else \
        solver_kwargs("SCS", eps, fallback=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem.solve(**kw)
        return str(problem.status)
    except (cp.error.SolverError, ValueError, ArithmeticError) as e:
        return f"error: {type(e).__name__}: {e}".splitlines()[0][:200]


def _repair(prob: RobustProblem, psi, R):
    """PSD, C1 at every candidate (scale R_l by the worst candidate), BS budget. Returns (R, viol)."""
    scn = prob.centre
    L, P_t = scn.L, float(scn.P_t)
    R = 0.5 * (R + R.conj().transpose(-1, -2))
    lam, V = torch.linalg.eigh(R)
    viol = float((-lam.min() / P_t).clamp(min=0))
    R = (V * lam.clamp(min=0).to(R.dtype).unsqueeze(-2)) @ V.conj().transpose(-1, -2)
    R = 0.5 * (R + R.conj().transpose(-1, -2))
    if scn.active:
        Q, c0 = crb_model.irs_power_matrix(prob.scnK.G, psi, prob.scnK.theta, prob.scnK.phi, prob.scnK.beta,
                                      prob.scnK.budget_broadcast("sigma_r2"), scn.N_h, scn.N_v, scn.d_h,
                                      scn.d_v)  # (K, L, M, M)
        qr = torch.einsum("klmn,lnm->kl", Q, R).real
        avail = float(scn.P_s) - c0
        viol = max(viol, float((qr / avail.clamp(min=1e-300) - 1).max()))
        sc = torch.where(qr > avail, avail.clamp(min=0) / qr.clamp(min=1e-300), torch.ones_like(qr)).amin(0)
        R = R * sc.to(R.dtype)[:, None, None]
    bs = float(torch.diagonal(R, dim1=-2, dim2=-1).real.sum()) / (L * P_t)
    viol = max(viol, bs - 1.0)
    if bs > 1:
        R = R / bs
    return R, viol


def solve_robust_transmit(prob: RobustProblem, psi: torch.Tensor, R_ref: torch.Tensor, solver: str = "CLARABEL",
                          eps: float = 1e-8) -> dict:
    """Robust P2 for fixed psi ``(L, N)``: returns ``{"R_s" (L, M, M), "j" (L,), "status", "failed",
    "bound", "time", "violation"}`` (R_s repaired to exact feasibility; j the torch-model objective).
    ``R_ref`` ``(L, M, M)``: the current design (scaling reference). See the module docstring."""
    t0 = time.perf_counter()
    scn, scnK = prob.centre, prob.scnK
    L, M, K = scn.L, scn.M, scnK.batch_shape[0]
    cdt = scn.G.dtype
    P_t, P_s = float(scn.P_t), float(scn.P_s)
    sr, sb = scnK.budget_broadcast("sigma_r2"), scnK.budget_broadcast("sigma_b2")
    H = crb_model.fim_coefficient_matrices(scnK.G, psi, scnK.theta, scnK.phi, scnK.beta, sr, sb, scn.N_h, scn.N_v,
                                      scn.d_h, scn.d_v)  # (K, L, 4, 4, M, M)
    babs = scnK.beta.abs()  # (K, L)
    c = crb_model.fim_scale(scnK.beta, sb, scn.T_L)  # (K, L)
    bayes = prob.objective == "bayesian"
    if bayes:
        bref, cref_l = scn.beta.abs(), crb_model.fim_scale(scn.beta, scn.budget_broadcast("sigma_b2"), scn.T_L)  # (L,)
        dsc = torch.stack([torch.ones_like(babs), torch.ones_like(babs), bref / babs, bref / babs], -1)  # (K,L,4)
        fac = (prob.weights[:, None] * c / cref_l)[..., None, None] * dsc[..., :, None] * dsc[..., None, :]
        H = (fac.to(cdt)[..., None, None] * H).sum(0, keepdim=True)  # (1, L, 4, 4, M, M)
        P_hat = (prob.prior / cref_l[:, None, None]).unsqueeze(0)  # (1, L, 4, 4)
        g = torch.stack([torch.ones_like(bref), torch.ones_like(bref), bref ** 2, bref ** 2], -1) / cref_l[:, None]
        g = g.unsqueeze(0)
    else:
        P_hat = torch.zeros(1, L, 4, 4, dtype=torch.float64)
        g = torch.stack([torch.ones_like(babs), torch.ones_like(babs), babs ** 2, babs ** 2], -1) / c[..., None]
    Fref = torch.einsum("blpqmn,lnm->blpq", H, R_ref.to(cdt)).real + P_hat
    d = torch.diagonal(Fref, dim1=-2, dim2=-1)
    if not bool((d > 0).all()):
        raise RuntimeError("robust P2: the reference design gives a singular FIM")
    sc = d.rsqrt()  # (B, L, 4)
    j_ref = robust_objective(prob, R_ref.to(cdt), psi)
    cref = float(j_ref.max())
    w = g * sc * sc / cref
    if prob.objective == "average":
        w = w * prob.weights[:, None, None]
    B = H.shape[0]
    Q, c0 = crb_model.irs_power_matrix(scnK.G, psi, scnK.theta, scnK.phi, scnK.beta, sr, scn.N_h, scn.N_v,
                                  scn.d_h, scn.d_v)  # (K, L, M, M), (K, L)
    rhs = 1.0 - c0 / P_s
    if scn.active and bool((rhs <= 0).any()):
        raise RuntimeError("robust P2: the IRS's amplified noise alone exceeds P_s at some candidate")
    sdp = _sdp(L, B, K, M, "max" if prob.objective == "worst" else "sum")
    Hn = H.numpy()
    for l in range(L):
        for b in range(B):
            s = sc[b, l].numpy()
            sdp.W[l][b].value = np.stack([P_t * s[p] * s[q] * real_coefficients(Hn[b, l, p, q])
                                          for p, q in FIM_ENTRIES])
            Ph = P_hat[min(b, P_hat.shape[0] - 1), l].numpy()
            sdp.f0[l][b].value = np.array([s[p] * s[q] * Ph[p, q] for p, q in FIM_ENTRIES])
            sdp.w[l][b].value = w[b, l].clamp(min=0).numpy()
        if scn.active:
            sdp.q[l].value = (P_t / P_s) * real_coefficients(Q[:, l].numpy())
            sdp.rhs[l].value = rhs[:, l].numpy()
        else:
            sdp.q[l].value = np.zeros((K, 2 * M * M))
            sdp.rhs[l].value = np.ones(K)
    out = {"status": "", "failed": True, "R_s": R_ref, "j": j_ref, "bound": float("nan"), "violation": float("nan")}
    for name in ([solver, "SCS" if solver == "CLARABEL" else "CLARABEL"]):
        status = _conic_solve(sdp.problem, name, eps)
        out["status"] = (out["status"] + "; " if out["status"] else "") + f"{name}: {status}"
        if status not in OK_STATUSES or sdp.Y[0].value is None:
            continue
        Rt = torch.stack([torch.from_numpy(np.asarray(sdp.Y[l].value)).to(cdt) for l in range(L)]) * P_t
        if not bool(torch.isfinite(Rt).all()):
            continue
        R, viol = _repair(prob, psi, Rt)
        out.update(R_s=R, j=robust_objective(prob, R, psi), failed=False, bound=float(sdp.kappa.value) * cref,
                   violation=viol)
        if viol <= 1e-4:
            break
    out["time"] = time.perf_counter() - t0
    return out

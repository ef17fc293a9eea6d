"""Robust P3 and the first-order steps of the robust design: psi for fixed
R_s by multi-start Adam on a smooth max over candidates (:func:`robust_reflect`), the per-slot power balance
(:func:`balance_region_power`) and the joint (R_s, psi) screen of the starting points (:func:`robust_screen`).
"""
from __future__ import annotations

import math
import time

import torch

from irs_torch.design.robust_problem import RobustProblem, feasible_psi, robust_objective
from irs_torch.solvers.screen import decode_design, encode_start


# ----------------------------------------------------------------------------- P3 and balance
def robust_reflect(prob: RobustProblem, R, psi, *, steps: int, n_starts: int, seed: int, lr: float = 0.05,
               rtol: float = 1e-4) -> dict:
    """Multi-start Adam on ``sum_l log j_l`` (smooth max over candidates) in the exact feasibility
    layer; psi_l taken where it lowers the exact j_l by rtol. Returns {"psi", "j", "improved", "time"}."""
    t0 = time.perf_counter()
    scn = prob.centre
    L, N, cdt = scn.L, scn.N, scn.G.dtype
    psi = feasible_psi(prob, R, psi)
    cur = robust_objective(prob, R, psi)
    gen = torch.Generator().manual_seed(int(seed))
    amp0 = (psi.abs() / psi.abs().amax(-1, keepdim=True).clamp(min=1e-300)).clamp(1e-3, 1 - 1e-3)
    from irs_torch.solvers.baselines import aligned_phases

    phs = [torch.angle(psi), torch.angle(aligned_phases(scn, R))]
    rhos = [torch.log(amp0 / (1 - amp0)), torch.full((L, N), 3.0, dtype=torch.float64)]
    while len(phs) < n_starts:
        phs.append(2 * math.pi * torch.rand(L, N, generator=gen, dtype=torch.float64))
        rhos.append(torch.full((L, N), 3.0, dtype=torch.float64))
    ph = torch.stack(phs[:max(n_starts, 1)]).requires_grad_(True)
    rho = torch.stack(rhos[:max(n_starts, 1)]).requires_grad_(True)
    opt = torch.optim.Adam([ph, rho] if scn.active else [ph], lr=lr)

    def make():
        raw = torch.polar(torch.sigmoid(rho) if scn.active else torch.ones_like(rho), ph).to(cdt)
        return feasible_psi(prob, R, raw)

    for _ in range(steps):
        opt.zero_grad()
        j = robust_objective(prob, R, make(), smooth=True)  # (S, L)
        j = torch.where(torch.isfinite(j) & (j > 0), j, torch.ones_like(j))
        torch.log(j).sum().backward()
        opt.step()
    with torch.no_grad():
        cand = make()
        jc = robust_objective(prob, R, cand)
        jc = torch.where(torch.isfinite(jc), jc, torch.full_like(jc, float("inf")))
        k = jc.argmin(0)
        best, bj = cand[k, torch.arange(L)], jc[k, torch.arange(L)]
        take = bj < cur * (1 - rtol)
        psi_new = torch.where(take.unsqueeze(-1), best, psi)
    return {"psi": psi_new, "j": robust_objective(prob, R, psi_new), "improved": take.tolist(),
            "failed": (~torch.isfinite(bj)).tolist(), "time": time.perf_counter() - t0}


def balance_region_power(prob: RobustProblem, R, psi, n_grid: int = 41):
    """Per slot, ``R_l -> rho R_l`` with psi_l re-scaled (C1 at every candidate), the rho with the
    lowest j_l (rho = 1 unchanged is a candidate: never worse). Returns (R, psi, rho)."""
    if not prob.centre.active:
        return R, psi, torch.ones(R.shape[0], dtype=torch.float64)
    rho = torch.logspace(-4, 0, n_grid, dtype=torch.float64)
    Rb = rho.to(R.dtype)[:, None, None, None] * R
    psib = feasible_psi(prob, Rb, psi.expand(n_grid, *psi.shape))
    with torch.no_grad():
        j = robust_objective(prob, Rb, psib)
        j = torch.where(torch.isfinite(j), j, torch.full_like(j, float("inf")))
        now = robust_objective(prob, R, psi)
    best = j.argmin(0)
    idx = torch.arange(R.shape[0])
    better = j[best, idx] < now
    return (torch.where(better[:, None, None], Rb[best, idx], R), torch.where(better[:, None], psib[best, idx], psi),
            torch.where(better, rho[best], torch.ones_like(rho[best])))


# ----------------------------------------------------------------------------- joint screen
def robust_screen(prob: RobustProblem, R0: torch.Tensor, psi0: torch.Tensor, *, steps: int = 300, lr: float = 0.1,
                   decay: float = 0.05, patience: int = 50):
    """Adam on ``smoothmax_l log j_l`` (j_l with the smooth max over candidates) over (R_s, psi) jointly,
    batched over S starts, in the feasible-by-construction parameterisation of
    :func:`irs_torch.solvers.screen.joint_first_order` (:func:`~irs_torch.solvers.screen.encode_start`,
    :func:`~irs_torch.solvers.screen.decode_design`: BS budget by a softmax/sigmoid split of
    ``L P_t``, ``R_l ~ B_l B_l^H``; psi at the largest scale meeting a_max and C1 at every candidate).
    The point screen optimises one position; this one the region. Shapes: R0 ``(S, L, M, M)``, psi0
    ``(S, L, N)`` -> ``(R (S, L, M, M), psi (S, L, N), J (S,))``: each start's best iterate (exact objective)."""
    scn = prob.centre
    params = encode_start(scn, R0, psi0)
    opt = torch.optim.Adam(params.trainable(scn.active), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(int(steps), 1), eta_min=lr * decay)

    def make():
        R, raw = decode_design(scn, params)
        return R, feasible_psi(prob, R, raw)

    with torch.no_grad():
        best_R, best_psi = R0.clone(), feasible_psi(prob, R0, psi0)
        best = robust_objective(prob, best_R, best_psi).amax(-1)
        best = torch.where(torch.isfinite(best), best, torch.full_like(best, float("inf")))
    mark = float(best.min())
    for it in range(steps):
        if patience and it and it % patience == 0:
            if float(best.min()) > mark * (1 - 1e-3):
                break
            mark = float(best.min())
        opt.zero_grad()
        R, psi = make()
        j = robust_objective(prob, R, psi, smooth=True)  # (S, L)
        with torch.no_grad():
            jx = robust_objective(prob, R, psi).amax(-1) if prob.objective == "worst" else j.amax(-1)
            jx = torch.where(torch.isfinite(jx), jx, torch.full_like(jx, float("inf")))
            imp = jx < best
            if imp.any():
                best_R = torch.where(imp[:, None, None, None], R.detach(), best_R)
                best_psi = torch.where(imp[:, None, None], psi.detach(), best_psi)
                best = torch.where(imp, jx, best)
        lj = torch.log(torch.where(torch.isfinite(j) & (j > 0), j, torch.ones_like(j)))
        (torch.logsumexp(prob.smooth * lj, -1) / prob.smooth).sum().backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        best_psi = feasible_psi(prob, best_R, best_psi)
        J = robust_objective(prob, best_R, best_psi).amax(-1)
    return best_R, best_psi, torch.where(torch.isfinite(J), J, torch.full_like(J, float("inf")))

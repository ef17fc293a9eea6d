"""P3 by the paper's SCA + SDR (Section IV-B): :func:`solve_reflect_sca`.

With ``Theta = psi psi^H`` the FIM and C1 are linearised at the current point (Lemma 1, (24);
:class:`~irs_torch.solvers.theta_model.IRSModel`), the SDP (SDR3.l.3) with ``diag(Theta) <= a_max^2``
(:class:`ReflectSDR`, :class:`LinearizedSDR`, :func:`sdr_step`) is solved, Gaussian randomisation (seeded,
:func:`gaussian_randomization`) draws rank-one candidates, each is brought to the largest scale meeting a_max and
C1 exactly, the best is kept, and a step is accepted only if the exact (torch-model) CRB improves. A trust region
keeps the SDP where the linearisation is meaningful (docs/assumptions.md "Numerical experience"). Passive IRSs:
``diag(Theta) = 1`` and candidates projected to unit modulus. Never returns a psi worse than its start.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from irs_torch.scenario import Scenario
from irs_torch.solvers import conic
from irs_torch.solvers.reflect import ReflectResult, irs_crb, seeded_generator
from irs_torch.solvers.theta_model import IRSModel, vec_real
from irs_torch.solvers.transmit import FIM_ENTRIES, assembly_matrix


# ----------------------------------------------------------------------------- the SDR problem
class ReflectSDR:
    """The compiled (DPP) SDR (SDR3.l.3) for one IRS with N elements, with a trust region.

    Variables: ``T`` (N x N Hermitian PSD) = Theta / a_max^2 (active) or Theta (passive),
    ``U`` (4 x 4). Parameters: ``Wf`` (8, 2 N^2), ``f0`` (8,) the linearised Jacobi-scaled FIM
    ``Fbar = f0 + Wf x(T)``; ``qc`` (2 N^2,), ``rc`` the linearised C1 ``qc . x <= rc`` (scaled by
    P_s); ``lb``, ``ub`` (N,) bounds on diag(T); ``w`` (4,) objective weights; ``x0``, ``delta``: the
    trust region ``||x(T) - x0||_2 <= delta``. Objective ``w . diag(U)`` with
    ``[[Fbar, I], [I, U]] >= 0``.
    """

    def __init__(self, N: int):
        n = 2 * N * N
        S = assembly_matrix()
        eye4 = np.eye(4)
        self.N = N
        self.Wf = cp.Parameter((8, n), name="Wf")
        self.f0 = cp.Parameter(8, name="f0")
        self.qc = cp.Parameter(n, name="qc")
        self.rc = cp.Parameter(name="rc")
        self.lb = cp.Parameter(N, name="lb")
        self.ub = cp.Parameter(N, name="ub")
        self.w = cp.Parameter(4, nonneg=True, name="w")
        self.x0 = cp.Parameter(n, name="x0")
        self.delta = cp.Parameter(nonneg=True, name="delta")
        self.T = cp.Variable((N, N), hermitian=True, name="T")
        self.U = cp.Variable((4, 4), symmetric=True, name="U")
        x = cp.hstack([cp.vec(cp.real(self.T), order="F"), cp.vec(cp.imag(self.T), order="F")])
        Fbar = cp.reshape(S @ (self.f0 + self.Wf @ x), (4, 4), order="C")
        d = cp.real(cp.diag(self.T))
        cons = [self.T >> 0, cp.bmat([[Fbar, eye4], [eye4, self.U]]) >> 0, self.qc @ x <= self.rc,
                d <= self.ub, d >= self.lb, cp.norm(x - self.x0, 2) <= self.delta]
        self.problem = cp.Problem(cp.Minimize(self.w @ cp.diag(self.U)), cons)
        assert self.problem.is_dpp()


_SDR_CACHE: dict[int, ReflectSDR] = {}


def reflect_sdr(N: int) -> ReflectSDR:
    """The cached compiled SDR for N elements."""
    if N not in _SDR_CACHE:
        _SDR_CACHE[N] = ReflectSDR(N)
    return _SDR_CACHE[N]


@dataclass
class LinearizedSDR:
    """One SDR instance (what :func:`sdr_step` solved): the Taylor model and its scaling, so that
    the linearised objective of any Theta can be evaluated (:meth:`objective`)."""

    f0: torch.Tensor      # (9,) model values at Theta0 (8 FIM entries, C1 [W])
    J: torch.Tensor       # (9, 2 N^2)
    x0: torch.Tensor      # (2 N^2,)
    s: torch.Tensor       # (4,) Jacobi scaling
    w: torch.Tensor       # (4,) objective weights (scaled)
    scale_T: float        # Theta = scale_T * T
    crb0: float           # CRB at Theta0 (objective unit)
    value: float = float("nan")   # SDP optimum (scaled objective, in units of crb0)
    Theta: torch.Tensor | None = None  # SDP solution Theta (N, N)
    status: str = ""
    failed_solves: int = 0  # conic solves that returned no point (the fallback may have recovered)

    def fim(self, Theta: torch.Tensor) -> torch.Tensor:
        """Linearised Fbar (Jacobi-scaled) at Theta ``(..., N, N)`` -> ``(..., 4, 4)``."""
        x = torch.stack([vec_real(t) for t in Theta.reshape(-1, *Theta.shape[-2:])])
        f = self.f0[:8] + (x - self.x0) @ self.J[:8].T
        S = torch.from_numpy(assembly_matrix())
        F = (f @ S.T).reshape(*Theta.shape[:-2], 4, 4)
        return self.s[:, None] * F * self.s[None, :]

    def irs_power(self, Theta: torch.Tensor) -> torch.Tensor:
        x = torch.stack([vec_real(t) for t in Theta.reshape(-1, *Theta.shape[-2:])])
        return (self.f0[8] + (x - self.x0) @ self.J[8]).reshape(Theta.shape[:-2])

    def objective(self, Theta: torch.Tensor) -> torch.Tensor:
        """Linearised objective ``sum_i w_i [Fbar_lin(Theta)^-1]_ii`` (the SDP's objective at its
        optimum over U); ``+inf`` where the linearised FIM is not positive definite."""
        F = self.fim(Theta)
        ok = torch.linalg.eigvalsh(F)[..., 0] > 0
        dinv = torch.diagonal(torch.linalg.inv(torch.where(ok[..., None, None], F, torch.eye(4, dtype=F.dtype))),
                              dim1=-2, dim2=-1)
        val = (dinv * self.w).sum(-1)
        return torch.where(ok, val, torch.full_like(val, float("inf")))


def sdr_step(model: IRSModel, psi0: torch.Tensor, delta_rel: float, solver: str = "CLARABEL",
             eps: float = 1e-8, verbose: bool = False) -> LinearizedSDR:
    """Linearise at ``Theta0 = psi0 psi0^H`` and solve the SDR with trust radius
    ``delta_rel * ||Theta0||_F`` (in the scaled variable). Returns the :class:`LinearizedSDR`
    with the SDP solution (``Theta`` None if the solver failed)."""
    N = model.N
    Theta0 = torch.outer(psi0, psi0.conj())
    f0, J, x0 = model.linearize(Theta0)
    scale_T = model.a_max**2 if model.active else 1.0
    F0 = model.fim(Theta0)
    d = torch.diagonal(F0).clamp(min=1e-300)
    s = d.rsqrt()
    crb0 = float(model.crb(Theta0))
    if not math.isfinite(crb0):
        raise ValueError("the FIM is singular at the current psi: the SCA cannot linearise there")
    w = model.g * s * s / crb0
    prob = reflect_sdr(N)
    ent = torch.tensor([s[p] * s[q] for p, q in FIM_ENTRIES], dtype=torch.float64)
    # Fbar_k(T) = s_p s_q (f0_k + J_k (scale_T x(T) - x0))
    prob.Wf.value = (ent[:, None] * J[:8] * scale_T).numpy()
    prob.f0.value = (ent * (f0[:8] - J[:8] @ x0)).numpy()
    if model.active:
        prob.qc.value = (J[8] * scale_T / model.P_s).numpy()
        prob.rc.value = float((model.P_s - f0[8] + J[8] @ x0) / model.P_s)
        prob.lb.value = np.zeros(N)
        prob.ub.value = np.ones(N)
    else:
        prob.qc.value = np.zeros(2 * N * N)
        prob.rc.value = 1.0
        prob.lb.value = np.ones(N)
        prob.ub.value = np.ones(N)
    prob.w.value = w.clamp(min=0).numpy()
    xs = x0 / scale_T
    prob.x0.value = xs.numpy()
    prob.delta.value = float(delta_rel * xs.norm())
    lin = LinearizedSDR(f0=f0, J=J, x0=x0, s=s, w=w, scale_T=scale_T, crb0=crb0)
    for name in conic.fallback_order(solver):
        status, _ = conic.run(prob.problem, name, eps, verbose, small=N <= 10, fallback=name != solver)
        lin.status = status
        if status in conic.OK_STATUSES and prob.T.value is not None:
            T = torch.from_numpy(np.asarray(prob.T.value)).to(Theta0.dtype)
            if bool(torch.isfinite(T).all()):
                lin.Theta = scale_T * 0.5 * (T + T.conj().T)
                lin.value = float(prob.problem.value)
                break
            lin.status = f"{status} (non-finite point)"
        lin.failed_solves += 1
    return lin


def gaussian_randomization(Theta: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` candidates ``Theta^{1/2} r``, ``r ~ CN(0, I)``, plus the principal eigenvector
    direction (first row). Shapes: Theta ``(N, N)`` -> ``(n + 1, N)``."""
    lam, U = torch.linalg.eigh(0.5 * (Theta + Theta.conj().T))
    lam = lam.clamp(min=0)
    root = (U * lam.sqrt().to(U.dtype)) @ U.conj().T
    N = Theta.shape[-1]
    r = torch.complex(torch.randn(n, N, generator=gen, dtype=torch.float64),
                      torch.randn(n, N, generator=gen, dtype=torch.float64)) / math.sqrt(2)
    cands = r.to(Theta.dtype) @ root.T
    top = (U[:, -1] * lam[-1].sqrt()).unsqueeze(0)
    return torch.cat([top, cands], 0)


def solve_reflect_sca(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, *, max_iter: int = 10,
                      n_randomizations: int = 50, seed: int = 0, solver: str = "CLARABEL", eps: float = 1e-8,
                      rtol: float = 1e-4, delta0: float = 0.5, verbose: bool = False) -> ReflectResult:
    """SCA + SDR + Gaussian randomisation for every IRS (Section IV-B), trust-region safeguarded.

    Per IRS and SCA iteration: linearise at the current psi, solve the SDR within the trust radius
    ``delta * ||Theta0||``, draw ``n_randomizations`` candidates (seeded by ``seed``, the IRS and
    the iteration), scale each to meet a_max and C1 exactly (unit modulus if passive), evaluate the
    exact CRB, and accept the best if it improves on the current psi by more than ``rtol``
    (relative); then the radius doubles, otherwise it is quartered. Stops after ``max_iter``
    iterations or when the radius falls below 1e-3. Shapes: R_s ``(L, M, M)``, psi ``(L, N)``.
    """
    t0 = time.perf_counter()
    psi = scenario.scale_psi_to_feasible(R_s, psi.to(scenario.G.dtype))
    out, crbs, improved, steps, failed = [], [], [], [], []
    n_fail = 0
    for l in range(scenario.L):
        model = IRSModel.from_scenario(scenario, R_s, l)
        cur = psi[l]
        cur_crb = float(irs_crb(scenario, R_s, cur, l))
        delta = delta0
        hist = []
        changed = False
        solved = False  # some SDR solve of this IRS returned a point
        for it in range(max_iter):
            lin = sdr_step(model, cur, delta, solver, eps, verbose)
            n_fail += lin.failed_solves
            solved = solved or lin.Theta is not None
            rec = {"iter": it, "delta": delta, "status": lin.status, "sdp_value": lin.value * lin.crb0
                   if lin.Theta is not None else float("nan"), "crb_before": cur_crb}
            if lin.Theta is None:
                hist.append(rec)
                delta *= 0.25
                if delta < 1e-3:
                    break
                continue
            gen = seeded_generator(seed * 1_000_003 + 7919 * l + it)
            cands = gaussian_randomization(lin.Theta, n_randomizations, gen)
            cands = scenario.scale_psi_to_feasible(R_s, cands, irs=l)
            vals = irs_crb(scenario, R_s, cands, l)
            vals = torch.where(torch.isfinite(vals), vals, torch.full_like(vals, float("inf")))
            j = int(torch.argmin(vals))
            rec.update(best_candidate=float(vals[j]), sdr_rank1_ratio=float(
                torch.linalg.eigvalsh(lin.Theta)[-1] / torch.diagonal(lin.Theta).real.sum().clamp(min=1e-300)))
            if float(vals[j]) < cur_crb * (1 - rtol):
                cur, cur_crb = cands[j], float(vals[j])
                changed = True
                rec["accepted"] = True
                delta = min(2 * delta, 4.0)
            else:
                rec["accepted"] = False
                delta *= 0.25
            hist.append(rec)
            if delta < 1e-3:
                break
        out.append(cur)
        crbs.append(cur_crb)
        improved.append(changed)
        steps.append(hist)
        failed.append(not solved)
    psi_new = torch.stack(out)
    crb_t = scenario.crb(R_s, psi_new).total
    return ReflectResult(psi=psi_new, crb=crb_t, max_crb=float(crb_t.max()), improved=improved, method="sca-sdr",
                         steps=steps, times={"total": time.perf_counter() - t0}, failed=failed,
                         solver_failures=n_fail)

"""Reflective beamforming (P3): the IRS reflection vectors psi_l for given R_s.

Given R_s the problem decouples per IRS (P3.l.1): ``min tr(F_l^-1)`` s.t. C1 (17a), |psi_n| <= a_max
(17d). Two methods:

* :func:`solve_reflect_sca` - the paper's SCA + SDR (Section IV-B): with ``Theta = psi psi^H`` the
  FIM and C1 are linearised at the current point (Lemma 1, (24)), the SDP (SDR3.l.3) with
  ``diag(Theta) <= a_max^2`` is solved, Gaussian randomisation (seeded) draws rank-one candidates,
  each is brought to the largest scale meeting a_max and C1 exactly, the best is kept, and a step
  is accepted only if the exact (torch-model) CRB improves. A trust region keeps the SDP where the linearisation is
  meaningful (docs/assumptions.md "Numerical experience": the linearisation is neither an upper nor a lower bound, and
  the SDP exploits it).
* :func:`solve_reflect_first_order` - gradient descent (Adam) on the torch CRB, multi-start,
  ``psi = sigmoid(rho) exp(j phase)`` (amplitude limit in the parameterisation) followed by the
  closed-form largest real scale meeting C1 and a_max (C1 met exactly, and the scale is
  differentiable), from the current psi, a phase-aligned start and random phases.

Passive IRSs (``scenario.active`` False): ``|psi_n| = 1``, no C1; SDR with ``diag(Theta) = 1`` and
randomised candidates projected to unit modulus; the first-order method optimises the phases.

Both never return a psi worse (by the torch model) than the one they start from.

The Theta-extension of the model (our derivation; docs/assumptions.md item 4: Appendix B has misprints). With
``V = [a, da/dtheta, da/dphi]`` (N x 3) and ``E_i = G^T diag(V_i)`` (M x N) the echo vectors of
``irs_torch.crb`` are ``x_i = E_i psi``, so for ``Theta = psi psi^H``::

    B_ij = x_i^T R x_j^*   = sum_ab [E_i^T R E_j^*]_ab Theta_ab                  (linear in Theta)
    A_ij = x_i^H W x_j     = sum_ab [E_i^H W E_j]_ab conj(Theta_ab),
    W    = (I + sigma_r2/sigma_b2 G^T diag(diag Theta) G^*)^-1                   (R_w / sigma_b2)^-1
    T_pq = tr(K_p A K_q B),  Fhat from T exactly as in irs_torch.crb.fim_normalized,
    C1   = |beta|^2 tr(Theta) B_00 + sigma_r2 |beta|^2 tr(Theta)^2
           + sum_n Theta_nn [G R G^H]_nn + 2 sigma_r2 tr(Theta)                  (22a)-(22d)

Both agree with the psi-model at rank one (tested). Fhat is a product of two Theta-linear Gram
matrices (and W depends on diag Theta), C1 a quadratic; SCA uses their first-order Taylor
expansion at Theta0 (the Jacobian is taken by autograd of these expressions, including the
dependence of W on diag Theta that the paper's Appendix B freezes), checked against finite
differences and a hand derivation in tests/test_solvers_reflect.py.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import torch

from irs_torch import crb as crb_model
from irs_torch.physics.steering import upa_steering_derivatives
from irs_torch.scenario import Scenario
from irs_torch.solvers import conic
from irs_torch.solvers.baselines import aligned_phases
from irs_torch.solvers.transmit import FIM_ENTRIES, assembly_matrix


# ----------------------------------------------------------------------------- the Theta model
@dataclass
class IRSModel:
    """The model of one IRS l for fixed R_l, as a function of Theta (N x N Hermitian).

    Fields: E ``(3, M, N)`` (E_i = G^T diag(V_i)), NB ``(3, 3, N, N)`` (B_ij coefficient
    matrices), G ``(N, M)``, R ``(M, M)`` [W], beta (complex), rho = sigma_r2 / sigma_b2,
    sigma_r2 [W], gRg ``(N,)`` = diag(G R G^H) [W], P_s [W], a_max, active, g ``(4,)`` the weights
    with ``tr(F^-1) = sum_i g_i [Fhat^-1]_ii``.
    """

    E: torch.Tensor
    NB: torch.Tensor
    G: torch.Tensor
    R: torch.Tensor
    beta: torch.Tensor
    rho: float
    sigma_r2: float
    gRg: torch.Tensor
    P_s: float
    a_max: float
    active: bool
    g: torch.Tensor

    @classmethod
    def from_scenario(cls, scenario: Scenario, R_s: torch.Tensor, l: int) -> "IRSModel":
        cdt = scenario.G.dtype
        G = scenario.G[l]
        R = R_s[l].to(cdt)
        a, dt, dp = upa_steering_derivatives(scenario.theta[l], scenario.phi[l], scenario.N_h, scenario.N_v,
                                             scenario.d_h, scenario.d_v)
        V = torch.stack([a, dt, dp], 0).to(cdt)  # (3, N)
        E = G.transpose(0, 1).unsqueeze(0) * V.unsqueeze(1)  # (3, M, N)
        NB = torch.einsum("ima,mk,jkb->ijab", E, R, E.conj())
        sr = float(scenario.budget("sigma_r2"))
        sb = float(scenario.budget("sigma_b2"))
        gRg = torch.einsum("nm,mk,nk->n", G, R, G.conj()).real
        b2 = float(scenario.beta[l].abs() ** 2)
        c = 2.0 * scenario.T_L * b2 / sb
        g = torch.tensor([1.0, 1.0, b2, b2], dtype=torch.float64) / c
        return cls(E=E, NB=NB, G=G, R=R, beta=scenario.beta[l], rho=sr / sb, sigma_r2=sr, gRg=gRg,
                   P_s=float(scenario.P_s), a_max=float(scenario.a_max), active=bool(scenario.active), g=g)

    @property
    def N(self) -> int:
        return self.E.shape[-1]

    def fim(self, Theta: torch.Tensor) -> torch.Tensor:
        """Fhat(Theta) ``(..., 4, 4)`` for Theta ``(..., N, N)`` (equals fim_normalized at rank one)."""
        Theta = Theta.to(self.E.dtype)
        M = self.G.shape[-1]
        dg = torch.diagonal(Theta, dim1=-2, dim2=-1).real.to(self.E.dtype)
        Rw = torch.eye(M, dtype=self.E.dtype) + self.rho * torch.einsum("nm,...n,nk->...mk", self.G, dg, self.G.conj())
        W = torch.linalg.inv(Rw)
        NA = torch.einsum("ima,...mk,jkb->...ijab", self.E.conj(), W, self.E)
        A = torch.einsum("...ijab,...ab->...ij", NA, Theta.conj())
        B = torch.einsum("ijab,...ab->...ij", self.NB, Theta)
        K = crb_model.FIM_SELECTORS.to(dtype=self.E.dtype)
        T = torch.einsum("pij,...jk,qkl,...li->...pq", K, A, K, B)
        e = torch.sgn(self.beta).conj()
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

    def irs_power(self, Theta: torch.Tensor) -> torch.Tensor:
        """C1 left-hand side (22a)-(22d) [W] for Theta ``(..., N, N)`` -> ``(...)``."""
        Theta = Theta.to(self.E.dtype)
        tr = torch.diagonal(Theta, dim1=-2, dim2=-1).real.sum(-1)
        B00 = torch.einsum("ab,...ab->...", self.NB[0, 0], Theta).real
        b2 = float(self.beta.abs() ** 2)
        dg = torch.diagonal(Theta, dim1=-2, dim2=-1).real
        return b2 * tr * B00 + self.sigma_r2 * b2 * tr ** 2 + (dg * self.gRg).sum(-1) + 2 * self.sigma_r2 * tr

    def crb(self, Theta: torch.Tensor) -> torch.Tensor:
        """``tr(F^-1) = sum_i g_i [Fhat(Theta)^-1]_ii`` (``+inf`` if singular) -> ``(...)``."""
        dinv, _ = crb_model.inverse_diagonal(self.fim(Theta))
        return (dinv * self.g).sum(-1)

    def linearize(self, Theta0: torch.Tensor):
        """First-order Taylor model at Theta0 (Hermitian, (N, N)) of the 8 distinct Fhat entries
        and of C1, in the real coordinates ``x = [vec_F(Re Theta); vec_F(Im Theta)]``:
        ``f(Theta) ~ f0 + J (x - x0)``. Returns ``(f0 (9,), J (9, 2 N^2), x0 (2 N^2,))`` as float64
        tensors, rows = FIM_ENTRIES then C1 [W]."""
        Tr = Theta0.real.detach().clone().requires_grad_(True)
        Ti = Theta0.imag.detach().clone().requires_grad_(True)

        def f(tr, ti):
            Th = torch.complex(tr, ti)
            F = self.fim(Th)
            ent = torch.stack([F[p, q] for p, q in FIM_ENTRIES] + [self.irs_power(Th)])
            return ent

        f0 = f(Tr, Ti).detach()
        Jr, Ji = torch.autograd.functional.jacobian(f, (Tr, Ti), vectorize=True)
        n = self.N
        # vec_F of an (N, N) matrix = transpose then flatten (row-major)
        J = torch.cat([Jr.transpose(-1, -2).reshape(9, n * n), Ji.transpose(-1, -2).reshape(9, n * n)], -1)
        x0 = vec_real(Theta0.detach())
        return f0, J, x0


def vec_real(Theta: torch.Tensor) -> torch.Tensor:
    """``[vec_F(Re Theta); vec_F(Im Theta)]`` (the cvxpy ``vec(order='F')`` layout) ``(2 N^2,)``."""
    return torch.cat([Theta.real.transpose(-1, -2).reshape(-1), Theta.imag.transpose(-1, -2).reshape(-1)])


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


# ----------------------------------------------------------------------------- feasibility
def irs_crb(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, l: int) -> torch.Tensor:
    """tr(F_l^-1) of IRS l for psi ``(..., N)`` (batched candidates) -> ``(...)``."""
    per = scenario.budget  # one value for all IRSs of an unbatched scenario
    return crb_model.crb(
        scenario.G[l],
        psi,
        R_s[l].to(psi.dtype),
        scenario.theta[l],
        scenario.phi[l],
        scenario.beta[l],
        per("sigma_r2"),
        per("sigma_b2"),
        scenario.T_L,
        scenario.N_h,
        scenario.N_v,
        scenario.d_h,
        scenario.d_v,
    ).total


# ----------------------------------------------------------------------------- results
@dataclass
class ReflectResult:
    """Outcome of a P3 solve. psi ``(L, N)``; crb ``(L,)`` torch-model tr(F_l^-1); improved ``(L,)``
    bool (psi_l changed); steps: per IRS a list of dicts (SCA: sdp value, best candidate CRB,
    accepted, trust radius; first-order: loss per start); times ``total`` [s].

    failed ``(L,)`` bool: the method could not optimise psi_l at all (SCA: every SDR solve of IRS l
    returned no point; first-order: no start gave a finite CRB); psi_l is then the one it started
    from. solver_failures: conic solves that returned no point (SCA; 0 for first-order)."""

    psi: torch.Tensor
    crb: torch.Tensor
    max_crb: float
    improved: list
    method: str
    steps: list = field(default_factory=list)
    times: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    solver_failures: int = 0

    @property
    def any_failed(self) -> bool:
        """True if psi of some IRS could not be optimised (see ``failed``)."""
        return any(self.failed)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


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
            gen = _generator(seed * 1_000_003 + 7919 * l + it)
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


def solve_reflect_first_order(
    scenario: Scenario,
    R_s: torch.Tensor,
    psi: torch.Tensor,
    *,
    steps: int = 150,
    n_starts: int = 4,
    seed: int = 0,
    lr: float = 0.05,
    rtol: float = 1e-4,
) -> ReflectResult:
    """Multi-start Adam on ``sum_l log tr(F_l^-1)`` of the torch model (IRSs are independent given
    R_s, so each IRS keeps its best start).

    Parameterisation: active ``psi = scale(sigmoid(rho) exp(j phase))`` with the closed-form
    largest scale meeting a_max and C1 (differentiable; C1 holds exactly, |psi_n| <= a_max);
    passive ``psi = exp(j phase)``. Starts: the current psi, phase-aligned
    (:func:`irs_torch.solvers.baselines.aligned_phases`)
    and ``n_starts - 2`` random phase vectors from ``seed``. Shapes: R_s ``(L, M, M)``,
    psi ``(L, N)``. Returns psi_l only where it beats the current one by ``rtol`` (relative).
    """
    t0 = time.perf_counter()
    L, N = scenario.L, scenario.N
    cdt = scenario.G.dtype
    R_s = R_s.to(cdt)
    psi = scenario.scale_psi_to_feasible(R_s, psi.to(cdt))
    cur_crb = scenario.crb(R_s, psi).total
    gen = _generator(seed)
    amp0 = (psi.abs() / psi.abs().amax(-1, keepdim=True).clamp(min=1e-300)).clamp(1e-3, 1 - 1e-3)
    starts_ph = [torch.angle(psi), torch.angle(aligned_phases(scenario, R_s))]
    starts_rho = [torch.log(amp0 / (1 - amp0)), torch.full((L, N), 3.0, dtype=torch.float64)]
    for _ in range(max(n_starts - 2, 0)):
        starts_ph.append(2 * math.pi * torch.rand(L, N, generator=gen, dtype=torch.float64))
        starts_rho.append(torch.full((L, N), 3.0, dtype=torch.float64))
    ph = torch.stack(starts_ph[: max(n_starts, 1)]).requires_grad_(True)  # (S, L, N)
    rho = torch.stack(starts_rho[: max(n_starts, 1)]).requires_grad_(True)
    params = [ph, rho] if scenario.active else [ph]
    opt = torch.optim.Adam(params, lr=lr)

    def make(ph, rho):
        if scenario.active:
            raw = torch.polar(torch.sigmoid(rho), ph).to(cdt)
            return scenario.scale_psi_to_feasible(R_s, raw)
        return torch.polar(torch.ones_like(ph), ph).to(cdt)

    losses = []
    for _ in range(steps):
        opt.zero_grad()
        c = scenario.crb(R_s, make(ph, rho), validate=False).total  # (S, L)
        loss = torch.log(c).sum()
        if not torch.isfinite(loss):
            c = torch.where(torch.isfinite(c), c, torch.ones_like(c))
            loss = torch.log(c).sum()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        cand = make(ph, rho)  # (S, L, N)
        cand = scenario.scale_psi_to_feasible(R_s, cand)  # exact re-scaling (no-op up to rounding)
        c = scenario.crb(R_s, cand).total
        c = torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf")))
        j = torch.argmin(c, 0)  # (L,)
        best = cand[j, torch.arange(L)]
        best_c = c[j, torch.arange(L)]
        take = best_c < cur_crb * (1 - rtol)
        psi_new = torch.where(take.unsqueeze(-1), best, psi)
    crb_t = scenario.crb(R_s, psi_new).total
    return ReflectResult(psi=psi_new, crb=crb_t, max_crb=float(crb_t.max()), improved=take.tolist(),
                         method="first-order", steps=[{"loss_first": losses[0], "loss_last": losses[-1],
                                                       "best_start": j.tolist()}],
                         times={"total": time.perf_counter() - t0},
                         failed=(~torch.isfinite(best_c)).tolist())

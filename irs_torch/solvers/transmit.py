"""Transmit beamforming (P2): the max-CRB SDP over the BS covariances {R_s,l} for given psi.

Problem (P2.1) of Section IV-A::

    min_{R_l, kappa} kappa   s.t.  tr(F_l(R_l)^-1) <= kappa  (18a),  C1 (17a),
                                   (1/L) sum_l tr(R_l) <= P_t  (17b),  R_l >= 0  (17c).

Formulation (scaled so the solver sees numbers near 1; docs/assumptions.md "Numerical experience"):

* ``R_l = P_t R~_l``; the FIM is linear in R (:func:`irs_torch.crb.fim_coefficient_matrices`):
  ``Fhat_l(R) = [tr(H_l,pq R)]_pq`` in the dimensionless parameterisation of ``irs_torch.crb``, and
  ``F_SI = c_l J Fhat J`` so ``tr(F_l^-1) = sum_i g_i [Fhat^-1]_ii`` with
  ``g = (1, 1, |beta|^2, |beta|^2) / c_l``.
* Jacobi congruence at a reference design R_ref: ``Fbar = S Fhat(R) S``, ``S = diag(Fhat(R_ref))^-1/2``.
* (18a) by Schur complement: ``[[Fbar_l, I], [I, U_l]] >= 0`` (so ``U_l >= Fbar_l^-1``) and
  ``sum_i w_i [U_l]_ii <= kappa`` with ``w_i = g_i s_i^2 / crb_ref`` (crb_ref: max-CRB at R_ref).
* C1 is affine in R (:func:`irs_torch.crb.irs_power_matrix`): ``tr(Q_l R) + c0_l <= P_s`` becomes
  ``(P_t / P_s) tr(Q_l R~_l) <= 1 - c0_l / P_s``.

The cvxpy problem is built once per ``(L, M)`` with Parameters (DPP) for everything that changes
between AO iterations and instances (the coefficient rows, C1 rows, weights), then re-solved.
After every solve the point is checked with the torch model (PSD, BS power, C1), small violations
are repaired by scaling R back, and the CRB reported is the torch model's for the returned R.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import torch

from irs_torch import crb as crb_model
from irs_torch.scenario import Scenario
from irs_torch.solvers import conic

# The 8 distinct entries of Fhat (Fhat_33 = Fhat_22, Fhat_23 = 0 by structure).
FIM_ENTRIES = ((0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (2, 2))


def assembly_matrix() -> np.ndarray:
    """(16, 8) matrix S with vec_C(Fhat) = S @ f for the 8 distinct entries f (row-major vec)."""
    S = np.zeros((16, 8))
    for k, (p, q) in enumerate(FIM_ENTRIES):
        S[4 * p + q, k] = 1.0
        S[4 * q + p, k] = 1.0
    S[4 * 3 + 3, FIM_ENTRIES.index((2, 2))] = 1.0
    return S


def real_coefficients(H: np.ndarray) -> np.ndarray:
    """Rows ``c`` with ``Re tr(H R) = c @ [vec_F(Re R); vec_F(Im R)]`` for any R.

    ``Re tr(H R) = sum_ab Re(H_ba) Re(R_ab) - Im(H_ba) Im(R_ab)``. Shapes: H ``(..., M, M)``
    -> ``(..., 2 M^2)`` real.
    """
    Ht = np.swapaxes(H, -1, -2)
    lead = H.shape[:-2]
    M = H.shape[-1]
    re = np.reshape(np.swapaxes(Ht.real, -1, -2), lead + (M * M,))  # F-order vec of Ht.real
    im = np.reshape(np.swapaxes(-Ht.imag, -1, -2), lead + (M * M,))
    return np.concatenate([re, im], axis=-1)


class TransmitSDP:
    """The compiled (DPP) P2 problem for L IRS slots, R_l restricted to a k-dimensional subspace.

    ``R_l = P_t V_l Y_l V_l^H`` with ``V_l`` (M x k) orthonormal (``k = M``, ``V = I``: the full
    problem). Parameters (per slot l): ``W[l]`` (8, 2 k^2) rows of Fbar's distinct entries in the
    real coordinates of Y_l, ``q[l]`` (2 k^2,) the C1 row, ``rhs[l]`` its right-hand side, ``w[l]``
    (4,) the objective weights. Variables: ``Y[l]`` (k, k) Hermitian, ``U[l]`` (4, 4) symmetric,
    kappa. Constraint handles (for the duals): ``c_kappa[l]``, ``c_c1[l]``, ``c_bs``.
    """

    def __init__(self, L: int, k: int):
        self.L, self.k = L, k
        n = 2 * k * k
        S = assembly_matrix()
        eye4 = np.eye(4)
        self.W = [cp.Parameter((8, n), name=f"W{l}") for l in range(L)]
        self.q = [cp.Parameter(n, name=f"q{l}") for l in range(L)]
        self.rhs = [cp.Parameter(name=f"rhs{l}") for l in range(L)]
        self.w = [cp.Parameter(4, nonneg=True, name=f"w{l}") for l in range(L)]
        self.Y = [cp.Variable((k, k), hermitian=True, name=f"Y{l}") for l in range(L)]
        self.U = [cp.Variable((4, 4), symmetric=True, name=f"U{l}") for l in range(L)]
        self.kappa = cp.Variable(name="kappa")
        cons = []
        self.c_kappa, self.c_c1 = [], []
        for l in range(L):
            x = cp.hstack([cp.vec(cp.real(self.Y[l]), order="F"), cp.vec(cp.imag(self.Y[l]), order="F")])
            Fbar = cp.reshape(S @ (self.W[l] @ x), (4, 4), order="C")
            self.c_kappa.append(self.w[l] @ cp.diag(self.U[l]) <= self.kappa)
            self.c_c1.append(self.q[l] @ x <= self.rhs[l])
            cons += [self.Y[l] >> 0, cp.bmat([[Fbar, eye4], [eye4, self.U[l]]]) >> 0,
                     self.c_kappa[l], self.c_c1[l]]
        self.c_bs = sum(cp.real(cp.trace(self.Y[l])) for l in range(L)) <= L
        cons.append(self.c_bs)
        self.problem = cp.Problem(cp.Minimize(self.kappa), cons)
        assert self.problem.is_dpp()


_CACHE: dict[tuple[int, int], TransmitSDP] = {}


def transmit_sdp(L: int, k: int) -> TransmitSDP:
    """The cached compiled P2 problem for ``L`` slots and subspace dimension ``k``."""
    key = (int(L), int(k))
    if key not in _CACHE:
        _CACHE[key] = TransmitSDP(*key)
    return _CACHE[key]


@dataclass
class TransmitResult:
    """Outcome of :func:`solve_transmit_sdp`.

    R_s ``(L, M, M)`` [W] checked and repaired; crb ``(L,)`` torch-model tr(F^-1) of (R_s, psi);
    max_crb; status of the accepted solve; solver; sdp_bound: the solver's own max-CRB value
    (diagnostics only); gap_bound: certified bound on ``max_crb - optimum`` of (P2) from the KKT
    check in the full space (inf if no certificate); rounds: subspace rounds used; t: per-slot
    ratio of the C1 and BS multipliers (a hint for the next call); repair: scale factors and the
    violations found; attempts: one dict per solve (``failed``: it returned no point - a status
    other than optimal / optimal_inaccurate, or an error - or its point failed the torch-model
    check); times: ``setup``, ``solve``, ``total`` [s].

    failed: True if no conic solve returned a (finite) point at all; then R_s is R_ref (status
    "failed: ...") and callers must not treat it as a P2 solution.
    inexact: True if points were returned but none passed the check (constraint violation before
    repair <= ``check_rtol``; an "optimal_inaccurate" status is accepted when its point passes:
    Clarabel reports it on about half of the paper's P2 solves, and those points pass). Then R_s is
    the better of those points, repaired to exact feasibility (status "inexact, repaired: ..."):
    a feasible design whose CRB is the torch model's, usable (the AO keeps it only if it lowers the
    max-CRB), but not a certified P2 optimum.
    solver_failures: number of conic solves that failed (including ones the fallback recovered).
    """

    R_s: torch.Tensor
    crb: torch.Tensor
    max_crb: float
    status: str
    solver: str
    sdp_bound: float
    gap_bound: float = float("inf")
    rounds: int = 0
    t: list | None = None
    repair: dict = field(default_factory=dict)
    attempts: list = field(default_factory=list)
    times: dict = field(default_factory=dict)
    failed: bool = False
    inexact: bool = False
    solver_failures: int = 0


def c1_rhs(scenario: Scenario, psi: torch.Tensor):
    """``(Q (L, M, M), 1 - c0 / P_s (L,))`` of C1 in R for fixed psi (zeros / ones when passive)."""
    Q, c0 = crb_model.irs_power_matrix(scenario.G, psi, scenario.theta, scenario.phi, scenario.beta,
                                  scenario.budget_broadcast("sigma_r2"), scenario.N_h, scenario.N_v,
                                  scenario.d_h, scenario.d_v)
    if not scenario.active:
        return torch.zeros_like(Q), torch.ones_like(c0)
    return Q, 1.0 - c0 / scenario.budget_broadcast("P_s")


def project_psd(R: torch.Tensor):
    """The Hermitian part of R with its negative eigenvalues clipped to 0. Shapes: ``(..., M, M)`` ->
    ``(R, lam_min (...))``: the projected matrices and the smallest eigenvalue before clipping."""
    R = 0.5 * (R + R.conj().transpose(-1, -2))
    lam, V = torch.linalg.eigh(R)
    R = (V * lam.clamp(min=0).to(R.dtype).unsqueeze(-2)) @ V.conj().transpose(-1, -2)
    return 0.5 * (R + R.conj().transpose(-1, -2)), lam[..., 0]


def repair_transmit(scenario: Scenario, psi: torch.Tensor | None, R: torch.Tensor):
    """The one repair of R_s: make R exactly feasible for (17a)-(17c). Hermitian part, negative
    eigenvalues clipped (:func:`project_psd`), then each R_l scaled back to meet C1 for ``psi`` (skipped
    when ``psi`` is None, or passive: C1 is then met by scaling psi) and all scaled to meet the BS budget.
    Shapes: psi ``(L, N)``, R ``(L, M, M)`` [W]. Returns (R, info) with the relative violations found
    before repair (``psd``, ``bs``, ``c1`` (L,)) and ``scale`` (L,)."""
    L = R.shape[-3]
    P_t = float(scenario.P_t)
    R, lam_min = project_psd(R)
    psd_viol = float((-lam_min.min() / P_t).clamp(min=0))
    info = {"psd": psd_viol}
    scale = torch.ones(L, dtype=torch.float64)
    if scenario.active and psi is not None:
        Q, rhs = c1_rhs(scenario, psi)
        P_s = float(scenario.P_s)
        qr = torch.einsum("lmn,lnm->l", Q, R).real  # tr(Q R) [W]
        avail = rhs * P_s  # P_s - c0
        info["c1"] = (qr / avail.clamp(min=1e-300) - 1.0).tolist()
        scale = torch.where(qr > avail, avail.clamp(min=0) / qr.clamp(min=1e-300), scale)
    else:
        info["c1"] = [0.0] * L
    info["bs"] = float(torch.diagonal(R, dim1=-2, dim2=-1).real.sum()) / (L * P_t) - 1.0
    R = R * scale.to(R.dtype)[:, None, None]
    bs2 = float(torch.diagonal(R, dim1=-2, dim2=-1).real.sum()) / (L * P_t)
    if bs2 > 1.0:
        R = R / bs2
    info["scale"] = (scale * min(1.0, 1.0 / max(bs2, 1e-300))).tolist()
    return R, info


def crb_gradient(H: torch.Tensor, R: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Hermitian gradient of ``tr(F^-1) = sum_i g_i [Fhat^-1]_ii`` with respect to R.

    ``d tr(F^-1) = -tr(Fhat^-1 diag(g) Fhat^-1 dFhat)`` and ``dFhat_pq = tr(H_pq dR)``, so
    ``grad = -sum_pq Omega_pq H_pq`` with ``Omega = Fhat^-1 diag(g) Fhat^-1``.
    Shapes: H ``(..., 4, 4, M, M)``, R ``(..., M, M)``, g ``(..., 4)`` -> ``(..., M, M)``.
    """
    F = torch.einsum("...pqmn,...nm->...pq", H, R).real
    Fi = torch.linalg.inv(F)
    Om = Fi @ torch.diag_embed(g) @ Fi
    return -torch.einsum("...pq,...pqmn->...mn", Om.to(H.dtype), H)


def _orth(cols: list, k: int, M: int, dtype) -> torch.Tensor:
    """Greedy orthonormal basis (M x k) of the columns in priority order (Gram-Schmidt with
    re-orthogonalisation; near-dependent columns are skipped); filled up with unit vectors."""
    V = torch.zeros(M, 0, dtype=dtype)
    cand = [c for blk in cols for c in blk.T] + list(torch.eye(M, dtype=dtype))
    for c in cand:
        if V.shape[1] >= k:
            break
        nc = c.norm()
        if not torch.isfinite(nc) or nc == 0:
            continue
        v = c / nc
        for _ in range(2):
            v = v - V @ (V.conj().T @ v)
        if v.norm() > 1e-6:
            V = torch.cat([V, (v / v.norm()).unsqueeze(1)], 1)
    return V


def _basis(X_l, Q_l, t_l, R_l, S_l, k, M, dtype, extra=None):
    """Subspace for R_l: range of the current R_l, the improving directions of the KKT check,
    ``(I + t Q)^-1 X^*`` at the multiplier ratio t (where the optimal range lies, see
    :func:`solve_transmit_sdp`), X^* (t = 0), then neighbouring t values."""
    eye = torch.eye(M, dtype=dtype)
    cols = []
    if R_l is not None:
        lam, U = torch.linalg.eigh(0.5 * (R_l + R_l.conj().T))
        keep = lam > lam.max() * 1e-8
        cols.append(U[:, keep].flip(1)[:, :3])
    if S_l is not None:
        lam, U = torch.linalg.eigh(S_l)
        cols.append(U[:, lam < 0][:, :3])
    Xc = X_l.conj()
    if t_l is not None and t_l > 0:
        cols.append(torch.linalg.solve(eye + t_l * Q_l, Xc))
    cols.append(Xc)
    if extra is not None:
        cols.append(extra)
    qmax = float(torch.linalg.eigvalsh(Q_l)[-1]) if Q_l.abs().max() > 0 else 0.0
    if qmax > 0:
        base = t_l if (t_l is not None and t_l > 0) else 1.0 / qmax
        for f in (10.0, 0.1, 100.0, 0.01, 1000.0):
            cols.append(torch.linalg.solve(eye + base * f * Q_l, Xc))
    return _orth(cols, k, M, dtype)


def _duality_gap(duals, Rt, obj, A, B, rhs, cref):
    """Weak-duality bound on ``max_l obj_l(Rt) - optimum`` of the scaled P2, in rad^2.

    For multipliers lambda >= 0 (normalised to sum 1), mu >= 0, nu >= 0 and any feasible R':
    ``max_l obj_l(R') >= phi(R') >= phi(Rt) + sum_l <S_l, R'_l - Rt_l>`` with the convex Lagrangian
    phi and its gradient ``S_l = lambda_l A_l + mu_l B_l + nu I``; ``<S_l, R'_l> >=
    min(0, lambda_min(S_l)) L`` since ``sum_l tr R'_l <= L``. Shapes: Rt, A, B ``(L, M, M)``
    (scaled R, objective gradient, C1 matrix), obj, rhs ``(L,)``. Returns (gap, S).
    """
    lam, mu, nu = duals
    lam = np.clip(np.nan_to_num(np.asarray(lam, dtype=float)), 0, None)
    mu = np.clip(np.nan_to_num(np.asarray(mu, dtype=float)), 0, None)
    nu = max(float(np.nan_to_num(nu)), 0.0)
    L, M = Rt.shape[0], Rt.shape[-1]
    if lam.sum() <= 0:
        return float("inf"), None
    lam = lam / lam.sum()
    eye = torch.eye(M, dtype=Rt.dtype)
    S = [lam[l] * A[l] + mu[l] * B[l] + nu * eye for l in range(L)]
    S = [0.5 * (x + x.conj().T) for x in S]
    c1 = torch.einsum("lmn,lnm->l", B, Rt).real - rhs
    bs = float(torch.diagonal(Rt, dim1=-2, dim2=-1).real.sum()) - L
    phi = float((torch.from_numpy(lam) * obj).sum() + (torch.from_numpy(mu) * c1).sum()) + nu * bs
    lin = sum(float(torch.einsum("mn,nm->", S[l], Rt[l]).real) for l in range(L))
    neg = sum(min(0.0, float(torch.linalg.eigvalsh(S[l])[0])) for l in range(L))
    lb = phi - lin + neg * L
    return max(float(obj.max()) - lb, 0.0) * cref, S


def _refit_multipliers(Rt, obj, A, B, rhs, active):
    """KKT multipliers fitted to a primal point: nonnegative least squares of
    ``(lambda_l A_l + mu_l B_l + nu I) Rt_l = 0`` with ``sum lambda = 1``, lambda_l = 0 for slots
    below the max, mu_l = 0 where C1 is slack, nu = 0 where the BS budget is slack."""
    from scipy.optimize import nnls

    L, M = Rt.shape[0], Rt.shape[-1]
    eye = torch.eye(M, dtype=Rt.dtype)
    act_l = (obj >= obj.max() * (1 - 1e-4)).numpy()
    c1 = (torch.einsum("lmn,lnm->l", B, Rt).real - rhs).numpy()
    act_c1 = (c1 >= -1e-4 * np.maximum(np.abs(rhs.numpy()), 1e-12)) & bool(active)
    act_bs = float(torch.diagonal(Rt, dim1=-2, dim2=-1).real.sum()) >= L * (1 - 1e-4)
    cols, names = [], []
    nrm = float(max(Rt.abs().max(), 1e-300))
    for kind, l in [("lam", l) for l in range(L)] + [("mu", l) for l in range(L)] + [("nu", -1)]:
        if (kind == "lam" and not act_l[l]) or (kind == "mu" and not act_c1[l]) or (kind == "nu" and not act_bs):
            continue
        blocks = []
        for j in range(L):
            if kind == "nu":
                Mx = eye @ Rt[j]
            elif j != l:
                Mx = torch.zeros_like(Rt[j])
            else:
                Mx = (A[j] if kind == "lam" else B[j]) @ Rt[j]
            blocks.append(torch.cat([Mx.real.flatten(), Mx.imag.flatten()]) / nrm)
        col = torch.cat(blocks).numpy()
        cols.append(np.concatenate([col, [1.0e3 if kind == "lam" else 0.0]]))
        names.append((kind, l))
    lam, mu, nu = np.zeros(L), np.zeros(L), 0.0
    if not cols:
        return lam, mu, nu
    Amat = np.stack(cols, 1)
    scale = np.linalg.norm(Amat, axis=0)
    scale[scale == 0] = 1.0
    b = np.zeros(Amat.shape[0])
    b[-1] = 1.0e3
    z, _ = nnls(Amat / scale, b)
    z = z / scale
    for (kind, l), v in zip(names, z):
        if kind == "lam":
            lam[l] = v
        elif kind == "mu":
            mu[l] = v
        else:
            nu = v
    return lam, mu, nu


@dataclass
class TransmitProblem:
    """The data of one (P2) instance, built once per call (:func:`build_transmit_problem`).

    psi ``(L, N)``; X ``(L, M, 3)`` echo vectors; H ``(L, 4, 4, M, M)`` FIM coefficient matrices; Q
    ``(L, M, M)``, rhs ``(L,)`` C1 (``tr(Q R) <= rhs P_s``); R_ref ``(L, M, M)`` [W] the scaling reference
    (the isotropic design if the given one has a singular FIM); sc ``(L, 4)`` Jacobi scaling at R_ref;
    g ``(L, 4)`` the weights of ``tr(F^-1) = sum_i g_i [Fhat^-1]_ii``; cref the max-CRB at R_ref
    [rad^2]; w ``(L, 4)`` the scaled objective weights; P_t, P_s [W]; setup: seconds to build.
    """

    scenario: Scenario
    psi: torch.Tensor
    X: torch.Tensor
    H: torch.Tensor
    Q: torch.Tensor
    rhs: torch.Tensor
    R_ref: torch.Tensor
    sc: torch.Tensor
    g: torch.Tensor
    cref: float
    w: np.ndarray
    P_t: float
    P_s: float
    setup: float = 0.0


def build_transmit_problem(scenario: Scenario, psi: torch.Tensor, R_ref: torch.Tensor | None = None) -> TransmitProblem:
    """Build (P2) for psi (unbatched scenario): coefficient matrices, C1, scaling reference and
    weights (module docstring). Raises ValueError if C1 cannot hold for any R_s with this psi or the FIM
    is singular for every R_s (see :func:`solve_transmit_sdp`)."""
    t0 = time.perf_counter()
    if scenario.batch_shape:
        raise ValueError(f"solve_transmit_sdp needs an unbatched scenario, got batch shape "
                         f"{tuple(scenario.batch_shape)}")
    cdt = scenario.G.dtype
    psi = psi.to(cdt)
    scenario.check_design(psi=psi)
    P_t, P_s = float(scenario.P_t), float(scenario.P_s)
    R_iso = scenario.isotropic_design()
    R_ref = R_iso if R_ref is None else R_ref.to(cdt)
    sr, sb = scenario.budget_broadcast("sigma_r2"), scenario.budget_broadcast("sigma_b2")
    X = crb_model.echo_vectors(scenario.G, psi, scenario.theta, scenario.phi, scenario.N_h, scenario.N_v,
                               scenario.d_h, scenario.d_v)
    H = crb_model.fim_coefficient_matrices(scenario.G, psi, scenario.theta, scenario.phi, scenario.beta, sr, sb,
                                           scenario.N_h, scenario.N_v, scenario.d_h, scenario.d_v)  # (L,4,4,M,M)
    Q, rhs = c1_rhs(scenario, psi)
    if (rhs <= 0).any():
        l = int(torch.nonzero(rhs <= 0)[0])
        raise ValueError(f"C1 cannot be met for any R_s: the amplified noise of IRS {l + 1} alone uses "
                         f"{(1 - float(rhs[l])) * P_s:.4g} W > P_s = {P_s:.4g} W (reduce |psi| or raise P_s)")
    # Scaling reference (fall back to isotropic if R_ref is singular for the FIM).
    crb_ref = scenario.crb(R_ref, psi).total
    if not torch.isfinite(crb_ref).all():
        R_ref = R_iso
        crb_ref = scenario.crb(R_ref, psi).total
    if not torch.isfinite(crb_ref).all():
        raise ValueError("the FIM is singular for every R_s with this psi (is some psi_l zero?): "
                         "P2 has no finite CRB")
    d = torch.diagonal(torch.einsum("lpqmn,lnm->lpq", H, R_ref).real, dim1=-2, dim2=-1)
    sc = d.rsqrt()  # Jacobi scaling (L, 4)
    babs2 = scenario.beta.abs() ** 2
    c = crb_model.fim_scale(scenario.beta, sb, scenario.T_L)
    g = torch.stack([torch.ones_like(babs2), torch.ones_like(babs2), babs2, babs2], -1) / c.unsqueeze(-1)
    cref = float(crb_ref.max())
    w = (g * sc * sc / cref).clamp(min=0).numpy()
    return TransmitProblem(scenario=scenario, psi=psi, X=X, H=H, Q=Q, rhs=rhs, R_ref=R_ref, sc=sc, g=g, cref=cref,
                           w=w, P_t=P_t, P_s=P_s, setup=time.perf_counter() - t0)


def solve_in_subspace(pb: TransmitProblem, V: list, k: int, rnd: int, solver: str, eps: float, fallback: bool,
                      check_rtol: float, verbose: bool, attempts: list):
    """Solve (P2) over ``R_l = P_t V_l Y_l V_l^H`` (V_l ``(M, k)``), with the solver fallback chain.

    Every solve is appended to ``attempts``; a returned point is repaired (:func:`repair_transmit`) and
    checked (violation before repair <= ``check_rtol``). Returns ``(candidate, seconds)``: the better
    attempt - one that passed the check first, then the lower max-CRB - as ``(max_crb, R, crb, status,
    solver, sdp_bound, repair_info, passed, duals)``, or None if no solve returned a finite point.
    """
    scenario, L, cdt = pb.scenario, pb.scenario.L, pb.scenario.G.dtype
    prob = transmit_sdp(L, k)
    for l in range(L):
        Hr = V[l].conj().T @ pb.H[l] @ V[l]  # (4, 4, k, k)
        Hn = Hr.numpy()
        sn = pb.sc[l].numpy()
        prob.W[l].value = np.stack([pb.P_t * sn[p] * sn[q] * real_coefficients(Hn[p, q]) for p, q in FIM_ENTRIES])
        prob.q[l].value = (pb.P_t / pb.P_s) * real_coefficients((V[l].conj().T @ pb.Q[l] @ V[l]).numpy()) \
            if scenario.active else np.zeros(2 * k * k)
        prob.rhs[l].value = float(pb.rhs[l])
        prob.w[l].value = pb.w[l]
    res, t_solve = None, 0.0
    for name in (conic.fallback_order(solver) if fallback else [solver]):
        status, dt = conic.run(prob.problem, name, eps, verbose, small=k <= 10, fallback=name != solver)
        t_solve += dt
        att = {"solver": name, "status": status, "time": dt, "k": k, "round": rnd, "failed": True}
        attempts.append(att)
        if status not in conic.OK_STATUSES or prob.Y[0].value is None:
            continue
        Rt = torch.stack([V[l] @ torch.from_numpy(np.asarray(prob.Y[l].value)).to(cdt) @ V[l].conj().T
                          for l in range(L)])
        if not bool(torch.isfinite(Rt).all()):
            att["status"] = f"{status} (non-finite point)"
            continue
        R, rep = repair_transmit(scenario, pb.psi, pb.P_t * Rt)
        cr = scenario.crb(R, pb.psi).total
        viol = max(rep["psd"], rep["bs"], *rep["c1"])
        passed = viol <= check_rtol  # "optimal_inaccurate" is accepted when its point passes the check
        att.update(max_crb=float(cr.max()), bound=float(prob.kappa.value) * pb.cref, violation=viol,
                   failed=not passed)
        duals0 = (np.array([float(prob.c_kappa[l].dual_value) for l in range(L)]),
                  np.array([float(prob.c_c1[l].dual_value) for l in range(L)]),
                  float(prob.c_bs.dual_value))
        cand = (float(cr.max()), R, cr, status, name, att["bound"], rep, passed, duals0)
        # keep the better attempt, not the last: one that passed the check first, then the lower max-CRB
        if res is None or (passed, -cand[0]) > (res[7], -res[0]):
            res = cand
        if passed:
            break  # the point passed the torch-model check (the certificate follows)
    return res, t_solve


def certify_transmit(pb: TransmitProblem, R: torch.Tensor, cr: torch.Tensor, duals0):
    """Weak-duality certificate of a (P2) point in the full space (:func:`_duality_gap`) from the
    solver's duals ``duals0`` and from multipliers re-fitted to the point (:func:`_refit_multipliers`);
    the better bound is kept. Shapes: R ``(L, M, M)`` [W], cr ``(L,)``. Returns ``(gap [rad^2], S (the
    dual slacks, list of (M, M)), t (per-slot C1/BS multiplier ratio, the next subspace's hint))``."""
    P_t, P_s, cref = pb.P_t, pb.P_s, pb.cref
    grad = crb_gradient(pb.H, R, pb.g)  # (L, M, M) d crb / dR  [rad^2 / W]
    duals = [duals0, _refit_multipliers(R / P_t, cr / cref, grad * (P_t / cref), pb.Q * (P_t / P_s),
                                        pb.rhs, pb.scenario.active)]
    gap, S, (lam, mu, nu) = min((_duality_gap(dl, R / P_t, cr / cref, grad * (P_t / cref), pb.Q * (P_t / P_s),
                                              pb.rhs, cref) + (dl,) for dl in duals), key=lambda z: z[0])
    t_new = [float(mu[l] * P_t / (P_s * nu)) if nu > 0 else None for l in range(pb.scenario.L)]
    return gap, S, t_new


#: Largest conic-solver working set [bytes] for which a subspace P2 may fall back to the full space (k = M): the
#: interior-point scaling of each of the L PSD blocks (2M x 2M real) is a dense svec x svec matrix, about
#: L (M (2M + 1))^2 8 bytes: 1 GiB at M = 64, 16 GiB at M = 128 (L = 2), where Clarabel aborted the process on an 8.6 GB
#: allocation. Above the bound the subspace result is kept, with its certificate's gap (not certified).
FULL_SPACE_MAX_BYTES = 4 << 30


def full_space_bytes(M: int, L: int) -> int:
    """Estimated bytes of the conic solver's dense PSD scalings for the full-space P2 (see
    :data:`FULL_SPACE_MAX_BYTES`)."""
    n = 2 * int(M)
    return int(L) * (n * (n + 1) // 2) ** 2 * 8


def solve_transmit_sdp(scenario: Scenario, psi: torch.Tensor, R_ref: torch.Tensor | None = None,
                       solver: str = "CLARABEL", eps: float = 1e-8, fallback: bool = True,
                       subspace: int | None = 8, max_rounds: int = 4, cert_rtol: float = 1e-4,
                       t_hint: list | None = None, check_rtol: float = 1e-4,
                       verbose: bool = False) -> TransmitResult:
    """Solve (P2) for the given psi (unbatched scenario); the torch model checks the result.

    Shapes: psi ``(L, N)``; R_ref ``(L, M, M)`` [W]: the current design, used for scaling and as
    the first subspace (default ``P_t / M I``).

    Subspace solve with a certificate. By the KKT conditions of (P2) the dual slack of R_l is
    ``S_l = nu I + mu_l Q_l - X_l^* Z_l X_l^T`` (nu, mu_l: multipliers of the BS budget and C1), so
    the optimal R_l has rank <= 3 and lies in ``span((I + t_l Q_l)^-1 X_l^*)`` with
    ``t_l = mu_l / nu``. With ``subspace = k < M`` the SDP is solved over ``R_l = V_l Y_l V_l^H``
    with a k-dimensional V_l holding that family and the current range; then the full-space slack
    ``S_l = lambda_l grad tr(F_l^-1) + mu_l Q_l + nu I`` is formed from the duals and the exact
    gradient. Weak duality gives ``max_crb - optimum <= L max_l(-lambda_min(S_l))`` (scaled back to
    rad^2): if that bound is <= ``cert_rtol * max_crb`` the result is certified optimal; otherwise
    the negative eigenvectors of S_l and the updated t_l enter the subspace and it is solved again,
    up to ``max_rounds``, then once in the full space (k = M). A round that improves the max-CRB
    by less than 1e-7 (relative) ends the loop uncertified: on some instances the bound stays
    ~1e-3 loose even for the full SDP while subspace and full solutions agree to ~1e-6 (the
    bound is limited by the accuracy of the multipliers). ``gap_bound`` reports what was proven.
    ``subspace=None`` solves the full problem.

    ``solver``: "CLARABEL" (default; equilibration off) or "SCS" (``eps_abs = eps_rel = eps``).
    On a failed status or a violation above ``check_rtol`` the other solver is tried
    (``fallback``); if both points fail the check, the better one (lower torch-model max-CRB after
    repair) is kept, not the last, and the result is marked ``inexact``. Every returned point is
    repaired to exact feasibility (:func:`repair_transmit`) and its CRB is the torch model's.

    Raises ValueError if C1 cannot hold for any R_s with this psi (the IRS's own amplified noise
    ``sigma_r2 (|beta|^2 ||psi||^4 + 2 ||psi||^2)`` already exceeds P_s) or if the FIM is singular
    for every R_s (e.g. psi_l = 0).
    """
    t0 = time.perf_counter()
    pb = build_transmit_problem(scenario, psi, R_ref)  # build
    psi, R_ref = pb.psi, pb.R_ref
    L, M, cdt = scenario.L, scenario.M, scenario.G.dtype
    k = M if (subspace is None or subspace >= M) else max(int(subspace), 4)
    full_ok = k == M or full_space_bytes(M, L) <= FULL_SPACE_MAX_BYTES  # may the subspace rounds go to k = M?
    t_l = list(t_hint) if t_hint is not None else [None] * L
    S_prev = [None] * L
    R_cur = R_ref
    attempts, best, t_solve = [], None, 0.0
    setup = time.perf_counter() - t0
    rounds = 0
    prev_mx = None
    while True:
        rounds += 1
        if k == M:
            V = [torch.eye(M, dtype=cdt)] * L
        else:
            V = [_basis(pb.X[l], pb.Q[l], t_l[l], R_cur[l], S_prev[l], k, M, cdt) for l in range(L)]
        res, dt = solve_in_subspace(pb, V, k, rounds, solver, eps, fallback, check_rtol, verbose, attempts)  # solve
        t_solve += dt
        if res is None:
            if k < M and full_ok:  # the subspace problem failed: go to the full space
                k = M
                continue
            break
        mx, R, cr, status, name, bound, rep, passed, duals0 = res
        gap, S, t_new = certify_transmit(pb, R, cr, duals0)  # certify
        attempts[-1]["gap_bound"] = gap  # the last solve of this round
        cand = (mx, R, cr, status, name, bound, rep, gap, t_new, passed)
        if best is None or (passed and not best[9]) or (passed == best[9] and (
                mx < best[0] - 1e-12 * abs(best[0]) or (mx <= best[0] and gap < best[7]))):
            best = cand
        stalled = prev_mx is not None and mx >= prev_mx * (1 - 1e-7)
        prev_mx = mx if prev_mx is None else min(prev_mx, mx)
        if gap <= cert_rtol * mx or k == M or stalled or rounds >= max_rounds:
            if gap > cert_rtol * mx and k < M and not stalled and full_ok:
                k = M  # not certified in the subspace: solve the full problem once
                R_cur = best[1]
                continue
            break
        R_cur, S_prev, t_l = R, S, t_new
    times = {"setup": setup, "solve": t_solve, "total": time.perf_counter() - t0}
    n_bad = sum(bool(a["failed"]) for a in attempts)
    if best is None:
        cr = scenario.crb(R_ref, psi).total
        return TransmitResult(R_s=R_ref, crb=cr, max_crb=float(cr.max()),
                              status="failed: " + "; ".join(f"{a['solver']}: {a['status']}" for a in attempts),
                              solver="none", sdp_bound=float("nan"), rounds=rounds, attempts=attempts, times=times,
                              failed=True, solver_failures=n_bad)
    mx, R, cr, status, name, bound, rep, gap, t_new, passed = best
    if not passed:
        bad = [a for a in attempts if "violation" in a]
        status = ("inexact, repaired: " + "; ".join(f"{a['solver']}: {a['status']}, violation {a['violation']:.2g}"
                                                    for a in bad) + f" (check_rtol {check_rtol:g})")
    return TransmitResult(R_s=R, crb=cr, max_crb=mx, status=status, solver=name, sdp_bound=bound, gap_bound=gap,
                          rounds=rounds, t=t_new, repair=rep, attempts=attempts, times=times,
                          failed=False, inexact=not passed, solver_failures=n_bad)

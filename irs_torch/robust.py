"""Designs robust to where the target is.

The paper designs (R_s, psi) for the true target angles. A tracker only knows a region where the
target probably is. :func:`solve_robust` designs for a :class:`Region` (a box or a covariance
ellipse in the plane the IRSs see) represented by K candidate positions x_1..x_K (the region's
:meth:`Region.points`). With the BS and IRSs static, position x_k changes only the IRS-target
angles and beta (:func:`irs_torch.mismatch.move_target`), so every candidate has its own per-IRS
CRB ``c_kl(R_l, psi_l) = tr(F_kl^-1)`` (the paper's objective, mixed units as in the paper).
Objectives (``objective=``), each ``max_l j_l`` over the IRSs like the paper's:

* ``"worst"`` (default): ``j_l = max_k c_kl``, the worst case over the K candidates;
* ``"average"``: ``j_l = sum_k pi_k c_kl`` (equal weights pi_k = 1/K over the K points, i.e. the
  average over the region's prior when the points are draws from it, ``points_kind="sample"``);
* ``"bayesian"``: the posterior (Bayesian, Van Trees) CRB ``j_l = tr((Fbar_l + J_P,l)^-1)`` with
  ``Fbar_l = sum_k pi_k F_kl`` the prior-averaged SI FIM of (theta_l, phi_l, Re beta_l, Im beta_l) and
  ``J_P,l`` the prior's own information on the angles (zero on beta: no prior on the coefficient),
  as in ISAC designs that exploit the target-location distribution (posterior CRB with a location
  prior: Hou and Zhang, 2023; Xu and Zhang, "MIMO ISAC exploiting prior information", 2023).
  What is added, exactly: the position prior is Gaussian with covariance ``Sigma_x``
  (:meth:`Region.prior_covariance`: the ellipse's covariance; for a box the uniform box's,
  ``diag(dx^2, dy^2) / 3``), extended to 3-D with a vertical variance ``sigma_z^2`` (default 0: the
  target moves in the plane). Linearising the angles at the centre, ``xi_l = (theta_l, phi_l) ~
  N(., A_l Sigma_x A_l^T)`` with ``A_l = d(theta_l, phi_l) / d(x, y, z)`` (2 x 3, by autograd of
  :func:`irs_torch.physics.target_angles`), so ``J_P,l = (A_l Sigma_x A_l^T)^-1``, the angle block of
  the 4 x 4 prior information. A direction the prior fixes exactly (in the paper's geometry every
  node is at z = 0, so theta_l = pi/2 for every target in the plane and ``A Sigma A^T`` is singular)
  gets a prior standard deviation of ``PRIOR_FLOOR_RAD`` = 1 micro-rad, the numerical stand-in for
  infinite prior information: that angle's posterior bound is then <= 1e-12 rad^2 and the design
  concentrates on what the prior leaves unknown.

Constraints are exact: BS power (average over slots, (6)), R_s,l PSD, |psi_n| <= a_max, and the IRS
power C1 (7) **at every candidate position**: C1's echo terms ``|beta|^2 (u^T R u^*) ||psi||^2`` and
``sigma_r2 |beta|^2 ||psi||^4`` depend on the target through beta and the steering vector a(theta,
phi) in u (its other terms, ``sum |psi_n|^2 [G R G^H]_nn + 2 sigma_r2 ||psi||^2``, do not). In the
paper's scenario the echo terms are ~1e-10 of P_s, but they are enforced anyway (K C1 rows per IRS).

The solver (alternating optimisation, like :func:`irs_torch.solvers.solve`):

* start: the point design at the region's centre (:func:`irs_torch.solvers.solve` with the same
  options; or ``init``), its psi scaled to meet C1 at every candidate; then a joint first-order
  screen of the smoothed robust objective over (R_s, psi) from that start and diverse starts
  (the point design's narrow beams are a poor local optimum for a large region: without the screen
  the AO from the centre design improved the paper's 2 m box by 1%); the best screened point is
  taken only if it beats the centre design;
* P2 (R_s for fixed psi): the SDP ``min kappa`` with, per slot l and candidate k, the
  Schur-complement LMI ``[[Fbar_kl, I], [I, U_kl]] >= 0`` (so ``U_kl >= Fbar_kl^-1``) and
  ``w_kl . diag(U_kl) <= kappa`` (worst: K x L epigraph rows; average: ``sum_k`` of them per l;
  bayesian: one LMI per l on the averaged FIM plus the prior), K C1 rows per slot, the BS budget;
  the building blocks of :mod:`irs_torch.solvers.transmit` (FIM coefficient matrices of
  :func:`irs_torch.crb.fim_coefficient_matrices`, Jacobi scaling, the same real coordinates);
  full space (the point P2's rank-3 subspace argument does not hold for K > 1). The point is
  repaired to exact feasibility and accepted only if the torch-model objective does not rise;
* P3 (psi for fixed R_s): first order over the max: multi-start Adam on ``sum_l log`` of a smooth
  max (log-sum-exp over k of ``log c_kl`` for "worst") in the exact feasibility layer of
  :func:`irs_torch.solvers.reflect.solve_reflect_first_order` (``sigmoid`` amplitudes, then the
  closed-form largest real scale meeting C1 and a_max, here the smallest such scale over the K
  candidates, so C1 holds at every one); psi_l is taken only if the exact objective j_l falls;
* a power balance per slot (``R_l -> rho R_l``, psi re-scaled; never worse), as in the point AO.

The objective never rises, so the returned design's worst case over the K points is <= that of
the centre design it starts from. K = 1 with the point at the centre (and objective "worst" or
"average") is the point problem: :func:`solve_robust` then returns the point solver's result.

Example::

    from irs_torch.scenario import Scenario
    from irs_torch.robust import Region, solve_robust
    s = Scenario.paper(seed=0)
    reg = Region.ellipse([5.0, 15.0, 0.0], [[0.5, 0.1], [0.1, 0.3]], k_sigma=2.0)  # m^2
    res = solve_robust(s, reg, K=9)        # SolveResult; res.R_s (L, M, M), res.psi (L, N)
    res.max_crb                            # worst-case max-CRB over the 9 points [rad^2 + beta units]
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from irs_torch import crb as crb_model
from irs_torch.errors import InputError
from irs_torch.mismatch import move_target
from irs_torch.physics.geometry import target_angles
from irs_torch.scenario import Scenario
from irs_torch.solvers.conic import OK_STATUSES, solver_kwargs
from irs_torch.solvers.result import SolveResult, SolverOptions, failure_counts
from irs_torch.solvers.strategy import decode_design, encode_start
from irs_torch.solvers.transmit import FIM_ENTRIES, assembly_matrix, real_coefficients

OBJECTIVES = ("worst", "average", "bayesian")
POINT_KINDS = ("ring", "sample")
REGION_KINDS = ("box", "ellipse")
PRIOR_FLOOR_RAD = 1e-6

__all__ = ["Region", "RobustProblem", "robust_problem", "parse_region_spec", "solve_robust", "region_crb",
           "robust_objective", "angle_prior_information",
           "solve_robust_transmit", "OBJECTIVES", "POINT_KINDS", "PRIOR_FLOOR_RAD"]


# ----------------------------------------------------------------------------- the region
def _finite_array(name, v, shape):
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a real array of shape {shape}, got {v!r}") from None
    if a.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} must be finite, got {a.tolist()}")
    return a


@dataclass(frozen=True)
class Region:
    """Where the target may be: a box or an ellipse in the horizontal plane ``z = centre[2]``
    (the plane the IRSs see in the paper's geometry), in m.

    * ``Region.box(centre_xyz, (dx, dy))``: ``|x - cx| <= dx``, ``|y - cy| <= dy`` (half-widths, m);
    * ``Region.ellipse(centre_xyz, cov, k_sigma=2)``: ``p^T cov^-1 p <= k_sigma^2`` for the offset
      ``p = (x - cx, y - cy)`` (cov ``(2, 2)`` symmetric PSD in m^2, e.g. a position estimate's
      covariance; k_sigma = 2: the 2-sigma ellipse).

    Both are ``{centre + A u}`` for ``u`` in the unit square (box) or the unit disk (ellipse), with
    the shape matrix ``A`` (:attr:`shape_matrix`, 2 x 2, m). Zero sizes are allowed (a point).
    Invalid values raise :class:`~irs_torch.errors.InputError` naming the field.
    """

    kind: str
    centre: tuple
    half_widths: tuple | None = None
    cov: tuple | None = None
    k_sigma: float = 2.0

    def __post_init__(self):
        if self.kind not in REGION_KINDS:
            raise InputError(f"region kind must be one of {REGION_KINDS}, got {self.kind!r}")
        c = _finite_array("centre", self.centre, (3,))
        object.__setattr__(self, "centre", tuple(float(x) for x in c))
        if self.kind == "box":
            hw = _finite_array("half_widths", self.half_widths, (2,))
            if (hw < 0).any():
                raise InputError(f"half_widths must be >= 0 m, got {hw.tolist()}")
            object.__setattr__(self, "half_widths", tuple(float(x) for x in hw))
        else:
            C = _finite_array("cov", self.cov, (2, 2))
            if abs(C[0, 1] - C[1, 0]) > 1e-12 * max(abs(C).max(), 1e-300):
                raise InputError(f"cov must be symmetric, got {C.tolist()}")
            lam = np.linalg.eigvalsh(0.5 * (C + C.T))
            if (np.diag(C) < 0).any() or lam[0] < -1e-12 * max(lam[-1], 1e-300):
                raise InputError(f"cov must be positive semidefinite (variances >= 0 m^2), got {C.tolist()} "
                                 f"(eigenvalues {lam.tolist()})")
            object.__setattr__(self, "cov", tuple(tuple(float(x) for x in row) for row in 0.5 * (C + C.T)))
            k = self.k_sigma
            if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k <= 0:
                raise InputError(f"k_sigma must be a finite number > 0, got {k!r}")
            object.__setattr__(self, "k_sigma", float(k))

    @classmethod
    def box(cls, centre_xyz, half_widths_xy) -> "Region":
        """A box with half-widths ``(dx, dy)`` [m] around ``centre_xyz`` ``(3,)`` [m]."""
        return cls("box", centre_xyz, half_widths=half_widths_xy)

    @classmethod
    def ellipse(cls, centre_xyz, cov_2x2, k_sigma: float = 2.0) -> "Region":
        """The ``k_sigma`` ellipse of the x-y covariance ``cov_2x2`` [m^2] around ``centre_xyz`` [m]."""
        return cls("ellipse", centre_xyz, cov=cov_2x2, k_sigma=k_sigma)

    # -- geometry
    @property
    def shape_matrix(self) -> np.ndarray:
        """``A`` (2, 2) [m]: the region is ``centre + A u`` for u in the unit square / disk."""
        if self.kind == "box":
            return np.diag(self.half_widths)
        lam, V = np.linalg.eigh(np.asarray(self.cov))
        return self.k_sigma * V * np.sqrt(np.clip(lam, 0, None))

    @property
    def size(self) -> float:
        """Largest distance from the centre to the boundary [m]."""
        return float(np.linalg.norm(self.shape_matrix, 2)) if self.kind == "ellipse" else \
            float(np.hypot(*self.half_widths))

    def prior_covariance(self) -> np.ndarray:
        """Position covariance of the prior (2, 2) [m^2]: the ellipse's ``cov``; for a box the uniform
        box's ``diag(dx^2, dy^2) / 3``."""
        if self.kind == "box":
            return np.diag(np.asarray(self.half_widths) ** 2 / 3.0)
        return np.asarray(self.cov)

    def _xyz(self, u: np.ndarray) -> torch.Tensor:
        p = u @ self.shape_matrix.T
        out = np.repeat(np.asarray(self.centre)[None], len(u), 0)
        out[:, :2] += p
        return torch.from_numpy(out)

    def _boundary_u(self, n: int) -> np.ndarray:
        t = np.arange(n) / max(n, 1)
        if self.kind == "ellipse":
            return np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], -1)
        # square perimeter from the corner (1, 1), counter-clockwise, arc-length uniform
        s = 8.0 * t
        u = np.empty((n, 2))
        for i, si in enumerate(s):
            side, f = int(si // 2) % 4, (si % 2)
            u[i] = [(1 - f, 1), (-1, 1 - f), (-1 + f, -1), (1, -1 + f)][side]
        return u

    def points(self, K: int, seed: int = 0, kind: str = "ring") -> torch.Tensor:
        """K candidate positions ``(K, 3)`` float64 [m]; the first is the centre.

        ``kind="ring"`` (deterministic): the centre and K - 1 points evenly spaced along the boundary
        (box: by arc length from a corner, so K = 5 gives the corners and K = 9 the 3 x 3 grid;
        ellipse: evenly in the angle of ``u``). ``kind="sample"``: the centre and K - 1 points drawn
        uniformly in the region from ``seed``. K = 1: the centre.
        """
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise InputError(f"K (number of region points) must be an integer >= 1, got {K!r}")
        if kind not in POINT_KINDS:
            raise InputError(f"points kind must be one of {POINT_KINDS}, got {kind!r}")
        K = int(K)
        if kind == "ring":
            u = np.vstack([np.zeros((1, 2)), self._boundary_u(K - 1)])
        else:
            rng = np.random.default_rng(int(seed))
            if self.kind == "box":
                v = rng.uniform(-1, 1, (K - 1, 2))
            else:
                r, a = np.sqrt(rng.uniform(0, 1, K - 1)), rng.uniform(0, 2 * np.pi, K - 1)
                v = np.stack([r * np.cos(a), r * np.sin(a)], -1)
            u = np.vstack([np.zeros((1, 2)), v])
        return self._xyz(u[:K])

    def grid(self, n: int = 11) -> torch.Tensor:
        """Evaluation points ``(P, 3)`` [m]: the ``n x n`` lattice of the bounding square of ``u``
        (kept where inside the region) plus ``4 (n - 1)`` boundary points."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise InputError(f"grid size n must be an integer >= 2, got {n!r}")
        g = np.linspace(-1, 1, int(n))
        u = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        if self.kind == "ellipse":
            u = u[(u ** 2).sum(-1) <= 1 + 1e-12]
            u = np.vstack([u, self._boundary_u(4 * (int(n) - 1))])
        return self._xyz(u)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "centre": list(self.centre)}
        if self.kind == "box":
            d["half_widths"] = list(self.half_widths)
        else:
            d["cov"] = [list(r) for r in self.cov]
            d["k_sigma"] = self.k_sigma
        d["size_m"] = self.size
        return d


def parse_region_spec(spec: str, centre_xyz) -> Region:
    """A :class:`Region` around ``centre_xyz`` [m] from a command-line spec:
    ``box:D`` or ``box:DX,DY`` (half-widths, m) or ``ellipse:SXX,SXY,SYY[,K]`` (x-y covariance in m^2,
    K: k_sigma, default 2). Raises :class:`~irs_torch.errors.InputError` naming ``--region``."""
    kind, _, rest = str(spec).partition(":")
    try:
        vals = [float(v) for v in rest.split(",")] if rest else []
    except ValueError:
        raise InputError(f"--region {spec!r}: values must be numbers (box:DX,DY or ellipse:SXX,SXY,SYY[,K])") from None
    try:
        if kind == "box" and len(vals) in (1, 2):
            return Region.box(centre_xyz, vals * 2 if len(vals) == 1 else vals)
        if kind == "ellipse" and len(vals) in (3, 4):
            cov = [[vals[0], vals[1]], [vals[1], vals[2]]]
            return Region.ellipse(centre_xyz, cov, k_sigma=vals[3] if len(vals) == 4 else 2.0)
    except InputError as e:
        raise InputError(f"--region {spec!r}: {e}") from None
    raise InputError(f"--region must be box:D, box:DX,DY or ellipse:SXX,SXY,SYY[,K], got {spec!r}")


# ----------------------------------------------------------------------------- objectives
def region_crb(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, positions) -> "crb_model.CRBResult":
    """Per-IRS CRB of the design (R_s, psi) for targets at ``positions``.

    Shapes: unbatched scenario, R_s ``(L, M, M)`` [W], psi ``(L, N)`` (or leading batch dims ``(S, ...)``
    which broadcast before the position dim), positions ``(P, 3)`` [m] -> CRBResult fields ``(..., P, L)``.
    """
    scnP = move_target(scenario, positions)
    if psi.dim() > 2:
        psi = psi.unsqueeze(-3)
    if R_s.dim() > 3:
        R_s = R_s.unsqueeze(-4)
    return scnP.crb(R_s, psi, validate=False)


def angle_prior_information(scenario: Scenario, region: Region, sigma_z: float = 0.0) -> torch.Tensor:
    """Prior information on (theta_l, phi_l) per IRS, ``(L, 2, 2)`` [rad^-2] (module docstring):
    ``(A_l Sigma_x A_l^T)^-1`` with ``A_l = d(theta_l, phi_l) / d(x, y, z)`` at the region's centre,
    ``Sigma_x = blockdiag(region.prior_covariance(), sigma_z^2)``, eigenvalues of the angle covariance
    floored at ``PRIOR_FLOOR_RAD^2``."""
    if not (isinstance(sigma_z, (int, float)) and math.isfinite(sigma_z) and sigma_z >= 0):
        raise InputError(f"sigma_z must be a finite number >= 0 m, got {sigma_z!r}")
    irs = torch.as_tensor(scenario.irs_pos, dtype=torch.float64)
    yaw = torch.zeros(irs.shape[:-1], dtype=torch.float64) if scenario.irs_yaw is None else \
        torch.as_tensor(scenario.irs_yaw, dtype=torch.float64)
    c = torch.tensor(region.centre, dtype=torch.float64)

    def angles(x):
        th, ph, _, _ = target_angles(irs, yaw, x)
        return torch.stack([th, ph], -1)  # (L, 2)

    A = torch.autograd.functional.jacobian(angles, c)  # (L, 2, 3)
    S = torch.zeros(3, 3, dtype=torch.float64)
    S[:2, :2] = torch.from_numpy(region.prior_covariance())
    S[2, 2] = float(sigma_z) ** 2
    C = A @ S @ A.transpose(-1, -2)
    lam, V = torch.linalg.eigh(0.5 * (C + C.transpose(-1, -2)))
    lam = lam.clamp(min=PRIOR_FLOOR_RAD ** 2)
    return (V / lam.unsqueeze(-2)) @ V.transpose(-1, -2)


@dataclass
class RobustProblem:
    """A robust problem (built by :func:`robust_problem`): ``centre`` (the scenario at the region's centre),
    ``scnK`` (batch K: one scenario per candidate, :func:`move_target`), ``points`` (K, 3) [m], ``weights``
    (K,), ``objective``, ``prior`` (L, 4, 4) SI prior information (bayesian; angle block only), ``smooth``."""

    centre: Scenario
    scnK: Scenario
    points: torch.Tensor
    weights: torch.Tensor  # (K,)
    objective: str
    prior: torch.Tensor | None  # (L, 4, 4) SI information (bayesian), angles block only
    smooth: float = 30.0


def robust_objective(prob: RobustProblem, R: torch.Tensor, psi: torch.Tensor, smooth: bool = False):
    """Per-IRS objective ``j_l`` ``(..., L)`` (module docstring) of R ``(..., L, M, M)``, psi
    ``(..., L, N)``; ``smooth``: log-sum-exp instead of the max over candidates (worst)."""
    scnK = prob.scnK
    Rk = R.unsqueeze(-4)
    pk = psi.unsqueeze(-3)
    if prob.objective == "bayesian":
        F = scnK.fisher_information(Rk, pk)  # (..., K, L, 4, 4) SI
        Fb = (prob.weights[:, None, None, None] * F).sum(-4) + prob.prior
        d, _ = crb_model.inverse_diagonal(Fb)
        return d.sum(-1)
    c = scnK.crb(Rk, pk, validate=False).total  # (..., K, L)
    if prob.objective == "average":
        return (prob.weights[:, None] * c).sum(-2)
    if smooth:
        lc = torch.log(torch.where(torch.isfinite(c) & (c > 0), c, torch.full_like(c, 1e300)))
        return torch.exp(torch.logsumexp(prob.smooth * lc, -2) / prob.smooth)
    return c.amax(-2)


def _region_scale(prob: RobustProblem, R: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Largest real scale per IRS ``(..., L)`` meeting C1 at every candidate and |psi| <= a_max."""
    scnK = prob.scnK
    P4, P2 = crb_model.irs_power_coefficients(scnK.G, psi.unsqueeze(-3), R.unsqueeze(-4).to(psi.dtype), scnK.theta,
                                         scnK.phi, scnK.beta, scnK.budget_broadcast("sigma_r2"), scnK.N_h, scnK.N_v,
                                         scnK.d_h, scnK.d_v)  # (..., K, L)
    s = crb_model.c1_max_scale(P4, P2, scnK.budget_broadcast("P_s")).amin(-2)
    amax = psi.abs().amax(-1)
    s = torch.minimum(s, prob.centre.budget_broadcast("a_max") / torch.where(amax > 0, amax, torch.ones_like(amax)))
    return torch.where(torch.isfinite(s), s, torch.ones_like(s))


def _feasible_psi(prob, R, psi):
    if not prob.centre.active:
        return torch.sgn(psi) + (psi == 0).to(psi.dtype)
    return psi * _region_scale(prob, R, psi).unsqueeze(-1).to(psi.dtype)


def _margins(prob: RobustProblem, R, psi) -> dict:
    """Constraint margins (>= 0 satisfied) with C1 the worst over the candidates."""
    m = prob.centre.constraint_margins(R, psi)
    if prob.centre.active:
        p = prob.scnK.irs_power(R.unsqueeze(-4), psi.unsqueeze(-3))  # (K, L)
        m["irs"] = (1.0 - p / prob.scnK.budget_broadcast("P_s")).amin(-2)
    return m


def _feasible(prob, R, psi, rtol) -> bool:
    m = _margins(prob, R, psi)
    return bool((m["bs"] >= -rtol).all() and (m["irs"] >= -rtol).all() and (m["amp"] >= -rtol).all()
                and (m["psd"] >= -rtol).all())


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


# ----------------------------------------------------------------------------- P3 and balance
def _robust_p3(prob: RobustProblem, R, psi, *, steps: int, n_starts: int, seed: int, lr: float = 0.05,
               rtol: float = 1e-4) -> dict:
    """Multi-start Adam on ``sum_l log j_l`` (smooth max over candidates) in the exact feasibility
    layer; psi_l taken where it lowers the exact j_l by rtol. Returns {"psi", "j", "improved", "time"}."""
    t0 = time.perf_counter()
    scn = prob.centre
    L, N, cdt = scn.L, scn.N, scn.G.dtype
    psi = _feasible_psi(prob, R, psi)
    cur = robust_objective(prob, R, psi)
    gen = torch.Generator().manual_seed(int(seed))
    amp0 = (psi.abs() / psi.abs().amax(-1, keepdim=True).clamp(min=1e-300)).clamp(1e-3, 1 - 1e-3)
    from irs_torch.solvers.reflect import aligned_phases

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
        return _feasible_psi(prob, R, raw)

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


def _balance(prob: RobustProblem, R, psi, n_grid: int = 41):
    """Per slot, ``R_l -> rho R_l`` with psi_l re-scaled (C1 at every candidate), the rho with the
    lowest j_l (rho = 1 unchanged is a candidate: never worse). Returns (R, psi, rho)."""
    if not prob.centre.active:
        return R, psi, torch.ones(R.shape[0], dtype=torch.float64)
    rho = torch.logspace(-4, 0, n_grid, dtype=torch.float64)
    Rb = rho.to(R.dtype)[:, None, None, None] * R
    psib = _feasible_psi(prob, Rb, psi.expand(n_grid, *psi.shape))
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
def _robust_screen(prob: RobustProblem, R0: torch.Tensor, psi0: torch.Tensor, *, steps: int = 300, lr: float = 0.1,
                   decay: float = 0.05, patience: int = 50):
    """Adam on ``smoothmax_l log j_l`` (j_l with the smooth max over candidates) over (R_s, psi) jointly,
    batched over S starts, in the feasible-by-construction parameterisation of
    :func:`irs_torch.solvers.strategy.joint_first_order` (:func:`~irs_torch.solvers.strategy.encode_start`,
    :func:`~irs_torch.solvers.strategy.decode_design`: BS budget by a softmax/sigmoid split of
    ``L P_t``, ``R_l ~ B_l B_l^H``; psi at the largest scale meeting a_max and C1 at every candidate).
    The point screen optimises one position; this one the region. Shapes: R0 ``(S, L, M, M)``, psi0
    ``(S, L, N)`` -> ``(R (S, L, M, M), psi (S, L, N), J (S,))``: each start's best iterate (exact objective)."""
    scn = prob.centre
    params = encode_start(scn, R0, psi0)
    opt = torch.optim.Adam(params.trainable(scn.active), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(int(steps), 1), eta_min=lr * decay)

    def make():
        R, raw = decode_design(scn, params)
        return R, _feasible_psi(prob, R, raw)

    with torch.no_grad():
        best_R, best_psi = R0.clone(), _feasible_psi(prob, R0, psi0)
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
        best_psi = _feasible_psi(prob, best_R, best_psi)
        J = robust_objective(prob, best_R, best_psi).amax(-1)
    return best_R, best_psi, torch.where(torch.isfinite(J), J, torch.full_like(J, float("inf")))


# ----------------------------------------------------------------------------- the solver
def robust_problem(scenario, region, points, objective="worst", sigma_z=0.0, smooth=30.0) -> RobustProblem:
    """The :class:`RobustProblem` of ``scenario`` for candidate ``points`` (K, 3) [m] of ``region``."""
    centre = move_target(scenario, torch.tensor(region.centre, dtype=torch.float64))
    scnK = move_target(scenario, points)
    K = points.shape[0]
    weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
    prior = None
    if objective == "bayesian":
        Jp = angle_prior_information(centre, region, sigma_z)  # (L, 2, 2)
        prior = torch.zeros(scenario.L, 4, 4, dtype=torch.float64)
        prior[:, :2, :2] = Jp
    return RobustProblem(centre=centre, scnK=scnK, points=points, weights=weights, objective=objective, prior=prior,
                    smooth=float(smooth))


def solve_robust(scenario: Scenario, region: Region, *, K: int = 9, objective: str = "worst",
                 options: SolverOptions | None = None, init: dict | None = None, points=None,
                 points_kind: str = "ring", sigma_z: float = 0.0, smooth: float = 30.0,
                 screen_starts: int = 8, screen_steps: int = 300, progress: bool = False) -> SolveResult:
    """A design (R_s, psi) for a target anywhere in ``region`` (module docstring).

    scenario: unbatched, with geometry (its own target position is not used: the candidates are
    ``region.points(K, options.seed, points_kind)``, or ``points`` ``(K, 3)`` [m] if given).
    objective: "worst" (default), "average" or "bayesian" (needs a region of positive size).
    options: :class:`~irs_torch.solvers.SolverOptions` (AO iterations ``max_iter``, ``rtol``, P2 solver,
    P3 steps / starts, seed, feasibility tolerance; also for the centre design). init: None (start from
    the point design at the centre) or ``{"R_s": ..., "psi": ...}`` (a warm start; made feasible).
    sigma_z: vertical prior std [m] (bayesian). smooth: log-sum-exp sharpness of the smooth max.
    screen_starts, screen_steps: the joint robust screen before the AO (0: off): Adam on the smoothed
    robust objective over (R_s, psi) from the start and ``screen_starts - 1`` diverse starts
    (:func:`irs_torch.solvers.strategy.diverse_starts` at the centre), at most ``screen_steps`` steps;
    the AO continues from the best (kept only if it beats the start).

    Returns a :class:`~irs_torch.solvers.SolveResult`: R_s ``(L, M, M)`` [W], psi ``(L, N)``; ``crb``
    ``(L,)`` the per-IRS objective ``j_l`` and ``max_crb = max_l j_l`` (for "worst": the worst-case
    max-CRB over the K points); ``crb_theta``/``crb_phi`` ``(L,)``: the worst / average over the points
    of the theta / phi CRBs (bayesian: the posterior bounds); margins: constraint margins with C1 the
    worst over the points; history, status, success, failures as the AO's; ``options["robust"]``:
    objective, K, points, region, the centre design's objective and the CRB of the design at the centre.
    Raises :class:`~irs_torch.errors.InputError` for bad input (naming the field).
    """
    t0 = time.perf_counter()
    options = options or SolverOptions()
    if not isinstance(options, SolverOptions):
        raise InputError(f"options must be a SolverOptions, got {type(options).__name__}")
    if not isinstance(scenario, Scenario):
        raise InputError(f"scenario must be a Scenario, got {type(scenario).__name__}")
    if scenario.batch_shape:
        raise InputError(f"solve_robust needs an unbatched scenario, got batch shape {tuple(scenario.batch_shape)}")
    if not isinstance(region, Region):
        raise InputError(f"region must be a Region (Region.box / Region.ellipse), got {type(region).__name__}")
    if objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    for name, v in (("screen_starts", screen_starts), ("screen_steps", screen_steps)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name} must be an integer >= 0, got {v!r}")
    if not (isinstance(smooth, (int, float)) and math.isfinite(smooth) and smooth > 0):
        raise InputError(f"smooth must be a finite number > 0, got {smooth!r}")
    if points is None:
        pts = region.points(K, seed=options.seed, kind=points_kind)
    else:
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        if pts.dim() != 2 or pts.shape[-1] != 3 or pts.shape[0] < 1:
            raise InputError(f"points must have shape (K, 3) with K >= 1, got {tuple(pts.shape)}")
        if not bool(torch.isfinite(pts).all()):
            raise InputError("points must be finite")
    if objective == "bayesian" and region.size == 0:
        raise InputError("objective 'bayesian' needs a region of positive size (a point prior has "
                         "infinite information)")
    n0 = torch.get_num_threads()
    if options.torch_threads is not None and options.torch_threads != n0:
        torch.set_num_threads(options.torch_threads)
    try:
        return _solve_robust(scenario.to(torch.complex128), region, pts, objective, options, init, sigma_z,
                             smooth, progress, t0, int(screen_starts), int(screen_steps))
    finally:
        if torch.get_num_threads() != n0:
            torch.set_num_threads(n0)


def _solve_robust(scn, region, pts, objective, options, init, sigma_z, smooth, progress, t0, screen_starts,
                  screen_steps):
    from irs_torch.solvers import solve

    prob = robust_problem(scn, region, pts, objective, sigma_z, smooth)
    centre = prob.centre
    K = pts.shape[0]
    info = {"objective": objective, "K": K, "region": region.to_dict(), "points": pts.tolist(),
            "sigma_z": float(sigma_z), "smooth": float(smooth)}
    at_centre = bool(torch.allclose(pts, torch.tensor(region.centre, dtype=torch.float64).expand_as(pts),
                                    rtol=0, atol=0))
    if at_centre and objective != "bayesian":
        res = solve(centre, "ao", init, options, progress)  # K = 1 (or all points at the centre): the point problem
        info.update(reduced_to_point=True, centre_design_objective=float(res.max_crb),
                    centre_crb=res.crb.tolist())
        res.options["robust"] = info
        return res
    # start: the point design at the centre (or init)
    if init is None or (isinstance(init, dict) and init.get("R_s") is None and init.get("psi") is None):
        start = solve(centre, "ao", init, options, progress)
        R, psi = start.R_s, start.psi
        info["start"] = f"centre design ({start.status}, max-CRB at the centre {start.max_crb:.6g})"
    else:
        from irs_torch.solvers import initial_point

        R, psi, _ = initial_point(centre, init, options)
        info["start"] = "init"
    psi = _feasible_psi(prob, R, psi)
    info["centre_design_objective"] = float(robust_objective(prob, R, psi).max())
    if screen_starts > 0:  # joint robust screen from the start and diverse starts; continue from the best
        from irs_torch.solvers.strategy import diverse_starts

        t_s = time.perf_counter()
        st = [("start", R, psi)] + diverse_starts(centre, screen_starts - 1, seed=options.seed)[: screen_starts - 1]
        Rs, ps, Js = _robust_screen(prob, torch.stack([x[1] for x in st]), torch.stack([x[2] for x in st]),
                                    steps=screen_steps)
        b = int(torch.argmin(Js))
        if float(Js[b]) < info["centre_design_objective"]:
            R, psi = Rs[b], ps[b]
        info.update(screen_found_by=st[b][0], screen_objective=Js.tolist(), screen_seconds=time.perf_counter() - t_s)
    R0, psi0 = R, psi
    cur = float(robust_objective(prob, R, psi).max())
    history, status, nit = [], "max-iter", 0
    t_p2 = t_p3 = 0.0
    for it in range(options.max_iter):
        nit = it + 1
        prev = cur
        try:
            p2 = solve_robust_transmit(prob, psi, R, solver=options.p2_solver, eps=options.p2_eps)
        except (RuntimeError, ArithmeticError, np.linalg.LinAlgError, cp.error.SolverError) as e:
            p2 = {"failed": True, "status": f"error: {type(e).__name__}: {e}"[:200], "time": 0.0}
        t_p2 += p2["time"]
        acc = (not p2["failed"]) and float(p2["j"].max()) <= cur
        if acc:
            R = p2["R_s"]
            cur = float(p2["j"].max())
        steps = options.p3_steps if it == 0 else options.p3_warm_steps
        p3 = _robust_p3(prob, R, psi, steps=steps, n_starts=options.p3_starts if it == 0 else 1,
                        seed=options.seed * 1000 + it)
        t_p3 += p3["time"]
        psi = p3["psi"]
        R, psi, rho = _balance(prob, R, psi)
        j = robust_objective(prob, R, psi)
        cur = float(j.max())
        history.append({"iter": it, "max_crb": cur, "crb": j.tolist(), "t_p2": p2["time"], "t_p3": p3["time"],
                        "p2_status": p2["status"], "p2_accepted": acc, "p2_bound": p2.get("bound", float("nan")),
                        "p2_failed": bool(p2["failed"]),
                        "p2_inexact": bool(not p2["failed"] and p2["violation"] > 1e-4),
                        "p2_solver_failures": int(p2["status"].count("error") + p2["status"].count("infeasible")),
                        "p3_improved": p3["improved"], "p3_failed": any(p3["failed"]), "p3_failed_irs": p3["failed"],
                        "p3_solver_failures": 0, "balance_rho": rho.tolist()})
        if progress:
            print(f"robust AO it {it}: objective {cur:.6g}", flush=True)
        if prev - cur <= options.rtol * abs(prev):
            status = "converged"
            break
    return _result(prob, R, psi, R0, psi0, history, status, nit, options, info,
                   {"p2": t_p2, "p3": t_p3, "total": time.perf_counter() - t0})


def _result(prob, R, psi, R0, psi0, history, status, nit, options, info, times) -> SolveResult:
    j = robust_objective(prob, R, psi)
    c = prob.scnK.crb(R.unsqueeze(-4), psi.unsqueeze(-3), validate=False)  # (K, L)
    if prob.objective == "average":
        th, ph = (prob.weights[:, None] * c.theta).sum(0), (prob.weights[:, None] * c.phi).sum(0)
    elif prob.objective == "worst":
        th, ph = c.theta.amax(0), c.phi.amax(0)
    else:
        F = prob.scnK.fisher_information(R.unsqueeze(-4), psi.unsqueeze(-3))
        d, _ = crb_model.inverse_diagonal((prob.weights[:, None, None, None] * F).sum(0) + prob.prior)
        th, ph = d[..., 0], d[..., 1]
    ok = _feasible(prob, R, psi, options.feas_rtol) and bool(torch.isfinite(j).all())
    fail = failure_counts(history)
    msg = ""
    if not ok:
        status = "infeasible"
    elif fail["p2_steps"] and fail["p2_failed"] == fail["p2_steps"]:
        status, ok = "solver-failed", False
        msg = "FAILED: every robust P2 step failed (last: " + history[-1]["p2_status"] + ")"
    elif fail["p2_failed"]:
        msg = f"warning: robust P2 failed in {fail['p2_failed']} of {fail['p2_steps']} steps"
    cc = prob.centre.crb(R, psi).total
    info.update(objective_value=float(j.max()), centre_crb=cc.tolist(), centre_max_crb=float(cc.max()),
                worst_max_crb=float(c.total.amax()), average_max_crb=float((prob.weights * c.total.amax(-1)).sum()))
    opts = {**options.to_dict(), "method": f"robust-{prob.objective}", "robust": info}
    j0 = robust_objective(prob, R0, psi0)
    return SolveResult(R_s=R.detach(), psi=psi.detach(), crb=j.detach(), max_crb=float(j.max()),
                       margins={k: v.detach() for k, v in _margins(prob, R, psi).items()}, history=history,
                       status=status, success=ok, nit=nit, times=times, options=opts, init_R_s=R0.detach(),
                       init_psi=psi0.detach(), init_crb=j0.detach(), init_max_crb=float(j0.max()),
                       crb_theta=th.detach(), crb_phi=ph.detach(), message=msg, failures=fail)

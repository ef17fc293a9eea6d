"""Independent brute-force global optimum of (P1) on tiny instances (M = 2, 2 x 2 elements, L = 1).

Nothing here imports irs_torch: the FIM and the IRS power come from :mod:`reference` (dense numpy
re-derivations of (15)-(16) and (7)). Used by tests/test_quality.py.

Inner problem (psi fixed) - exact. For M = 2 every R_s (Hermitian PSD) is ``R = t (I + v . sigma) / 2``
with ``t = tr R >= 0`` and v in the unit ball (sigma: Pauli matrices). F and the C1 left-hand side are
affine in R (F linear, C1 = c0 + t q(v)), so for a direction v the best t is the largest feasible
one, ``t(v) = min(P_t, (P_s - c0) / q(v))`` (tr F^-1 scales as 1/t), and the inner optimum is
``min_v tr(F(v)^-1) / t(v)`` over the ball: a grid over the ball, then a local polish (SLSQP) from
the best grid point. The problem in R is convex, and optimising t exactly for each v keeps a local
minimum in v a local (hence global) minimum in R, so the polish returns the inner optimum to the
optimiser's tolerance (1e-10 relative).

Outer problem (psi) - grid + polish. The CRB is invariant to a common phase of psi (docs/assumptions.md "Modelling
facts"), so psi_0 is real >= 0. The grid: K phase levels for psi_1..psi_3 times ``n_s`` common amplitudes in
(0, a_max] (geometric), each with the inner optimum of the ball grid; then L-BFGS-B (numerical gradients) and
Nelder-Mead, twice, over all 7 real parameters (4 amplitudes in (0, a_max], 3 phases) from the best
grid points, and the
exact inner solve at the result. The value is an upper bound on the global optimum (every point is
feasible) and the global optimum up to the grid's resolution and the polish.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

import reference as ref

PAULI = [np.eye(2, dtype=complex), np.array([[0, 1], [1, 0]], dtype=complex),
         np.array([[0, -1j], [1j, 0]], dtype=complex), np.array([[1, 0], [0, -1]], dtype=complex)]


class TinyProblem:
    """Numpy copy of a tiny scenario: G (N, M=2), theta, phi, beta, noises, T_L, budgets (L = 1)."""

    def __init__(self, G, theta, phi, beta, sigma_r2, sigma_b2, T_L, N_h, N_v, d_h, d_v, P_t, P_s, a_max,
                 n_ball=300):
        self.G, self.theta, self.phi, self.beta = np.asarray(G), float(theta), float(phi), complex(beta)
        self.sigma_r2, self.sigma_b2, self.T_L = float(sigma_r2), float(sigma_b2), float(T_L)
        self.N_h, self.N_v, self.d_h, self.d_v = N_h, N_v, d_h, d_v
        self.P_t, self.P_s, self.a_max = float(P_t), float(P_s), float(a_max)
        assert self.G.shape[1] == 2, "the ball parameterisation needs M = 2"
        rng = np.random.default_rng(0)
        v = rng.normal(size=(n_ball, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        r = rng.uniform(size=(n_ball, 1)) ** (1 / 3)
        self.ball = np.vstack([np.zeros((1, 3)), v * r, v])  # interior and sphere points

    def _parts(self, psi):
        """F_k = F(sigma_k / 2) (4, 4, 4) and C1 = c0 + sum_k x_k q_k (x = t (1, v)), psi fixed."""
        args = (self.G, psi)
        F = np.stack([ref.closed_form_fim(*args, P / 2, self.theta, self.phi, self.beta, self.sigma_r2,
                                          self.sigma_b2, self.T_L, self.N_h, self.N_v, self.d_h, self.d_v)
                      for P in PAULI])
        zero = np.zeros((2, 2), dtype=complex)
        c0 = ref.irs_power_dense(*args, zero, self.theta, self.phi, self.beta, self.sigma_r2, self.N_h, self.N_v,
                                 self.d_h, self.d_v).sum()
        q = np.array([ref.irs_power_dense(*args, P / 2, self.theta, self.phi, self.beta, self.sigma_r2, self.N_h,
                                          self.N_v, self.d_h, self.d_v).sum() - c0 for P in PAULI])
        return F, c0, q

    @staticmethod
    def _trinv(F):
        d = 1.0 / np.sqrt(np.einsum("...ii->...i", F))
        Fb = d[..., :, None] * F * d[..., None, :]
        return (np.einsum("...ii->...i", np.linalg.inv(Fb)) * d * d).sum(-1)

    def _f(self, V, F, c0, q):
        """Inner objective per ball point V (K, 3): tr(F^-1) at the largest feasible t."""
        X = np.concatenate([np.ones((len(V), 1)), V], 1)
        Fv = np.einsum("kj,jab->kab", X, F)
        qv = X @ q
        t = np.where(qv > 0, (self.P_s - c0) / np.where(qv > 0, qv, 1.0), np.inf)
        t = np.minimum(self.P_t, t)
        with np.errstate(all="ignore"):
            val = self._trinv(Fv) / t
        return np.where(np.isfinite(val) & (val > 0) & (t > 0), val, np.inf)

    def _f_grad(self, v, F, c0, q):
        """Value and gradient of the inner objective at one ball point v (3,): with
        ``g = tr(F(v)^-1)``, ``dg/dv_k = -tr(F^-1 F_k F^-1)``; ``t`` = P_t or (P_s - c0) / q(v)."""
        x = np.concatenate([[1.0], v])
        Fv = np.einsum("j,jab->ab", x, F)
        if not (np.diag(Fv) > 0).all():  # outside the ball (an SLSQP trial step): a wall
            return 1e30, np.zeros(3)
        d = 1.0 / np.sqrt(np.diag(Fv))
        Finv = d[:, None] * np.linalg.inv(d[:, None] * Fv * d[None, :]) * d[None, :]
        g = np.trace(Finv)
        dg = -np.einsum("ab,kbc,ca->k", Finv, F[1:], Finv)
        qv = x @ q
        if qv > 0 and (self.P_s - c0) / qv < self.P_t:
            s = 1.0 / (self.P_s - c0)
            return g * qv * s, (dg * qv + g * q[1:]) * s
        return g / self.P_t, dg / self.P_t

    def inner(self, psi, polish=True, n_starts=2):
        """``(min over R of tr(F^-1), R)`` for fixed psi (N,); inf if C1 cannot hold (c0 >= P_s)."""
        if np.abs(psi).max() > self.a_max * (1 + 1e-12):
            return np.inf, None
        F, c0, q = self._parts(psi)
        if c0 >= self.P_s:
            return np.inf, None
        vals = self._f(self.ball, F, c0, q)
        order = np.argsort(vals)
        best, v = vals[order[0]], self.ball[order[0]]
        for k in order[:n_starts] if polish and np.isfinite(best) else []:
            scale = vals[k]
            def fg(x, scale=scale):
                f, g = self._f_grad(x, F, c0, q)
                return f / scale, g / scale

            res = minimize(fg, self.ball[k], jac=True, method="SLSQP",
                           constraints=[{"type": "ineq", "fun": lambda x: 1.0 - x @ x, "jac": lambda x: -2 * x}],
                           options={"ftol": 1e-14, "maxiter": 300})
            if res.x @ res.x <= 1 + 1e-12:
                val = self._f(res.x[None], F, c0, q)[0]
                if val < best:
                    best, v = val, res.x
        if not np.isfinite(best):
            return np.inf, None
        x = np.concatenate([[1.0], v])
        qv = x @ q
        t = min(self.P_t, (self.P_s - c0) / qv) if qv > 0 else self.P_t
        R = t * sum(xk * P for xk, P in zip(x, PAULI)) / 2
        return float(best), R

    @staticmethod
    def psi_of(p, N):
        """7 (N = 4) real parameters -> psi: amplitudes p[:N] (>= 0), phases p[N:] of elements 1..N-1."""
        amp = np.abs(p[:N])
        ph = np.concatenate([[0.0], p[N:]])
        return amp * np.exp(1j * ph)

    def solve(self, K=6, n_s=6, n_polish=2, maxfev=300):
        """Grid + polish (module docstring). Returns ``(value, psi, R)``."""
        N = self.G.shape[0]
        phases = 2 * np.pi * np.arange(K) / K
        scales = self.a_max * np.geomspace(1.0, 0.05, n_s)
        grid = []
        for ph in itertools.product(phases, repeat=N - 1):
            for s in scales:
                p = np.concatenate([np.full(N, s), ph])
                grid.append((self.inner(self.psi_of(p, N), n_starts=1)[0], p))
        grid.sort(key=lambda x: x[0])
        best_val, best_p = np.inf, None
        for val0, p0 in grid[:n_polish]:
            if not np.isfinite(val0):
                continue

            def obj(p, val0=val0):
                v = self.inner(self.psi_of(p, N), n_starts=1)[0] / val0
                return v if np.isfinite(v) else 1e6

            bounds = [(1e-6 * self.a_max, self.a_max)] * N + [(None, None)] * (N - 1)
            p = p0
            for _ in range(2):  # L-BFGS-B (numerical gradients), then Nelder-Mead from its end point
                p = minimize(obj, p, method="L-BFGS-B", bounds=bounds,
                             options={"maxfun": maxfev, "ftol": 1e-12, "eps": 1e-7}).x
                q = minimize(lambda x: obj(np.concatenate([np.clip(x[:N], 1e-6 * self.a_max, self.a_max), x[N:]])),
                             p, method="Nelder-Mead", options={"maxfev": maxfev, "xatol": 1e-7, "fatol": 1e-11}).x
                p = np.concatenate([np.clip(q[:N], 1e-6 * self.a_max, self.a_max), q[N:]])
            val, _ = self.inner(self.psi_of(p, N))
            if val < best_val:
                best_val, best_p = val, p
        psi = self.psi_of(best_p, N)
        val, R = self.inner(psi)
        return val, psi, R

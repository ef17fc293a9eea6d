"""Independent reference implementations of the sensing model, in plain numpy.

Nothing here imports irs_torch: every formula is written again from the paper (Fang, Yu, Xu,
"Joint transmit and reflective beamforming for multi-active-IRS-assisted cooperative sensing")
so that the tests compare two derivations, not one derivation with itself.

* :func:`steering` - eqs. (1)-(3), ``a = a_v(theta) kron a_h(theta, phi)``.
* :func:`steering_derivatives_fd` - d a / d theta, d a / d phi by Richardson-extrapolated central
  differences of (1)-(3) (no use of (26)-(27)).
* :func:`slepian_bangs_fim` - the generic Slepian-Bangs FIM (14) of the vectorised echo model
  (8)-(13): echo mean ``eta = vec(G^T Psi E Psi G S)`` for an explicit waveform S with
  ``S S^H / T_L = R_s``, noise covariance ``R_y = I_{T_L} kron R_w``, derivatives of eta by finite
  differences in ``xi = (theta, phi, Re beta, Im beta)``. No closed form (16) is used.
* :func:`closed_form_fim` - the closed form (15)-(16) built densely from the M x M matrices
  C_theta, C_phi, H with an explicit R_w^{-1}; ``conj_beta=False`` reproduces the paper's print
  of (16e)-(16f) (docs/assumptions.md item 1), ``True`` the corrected form.
* :func:`trace_inverse` - a careful tr(F^{-1}) (Jacobi scaling, then inverse) of an
  ill-conditioned FIM.
* :func:`irs_power_monte_carlo` - a Monte Carlo of (5)-(6) for C1 (7).

Units: angles in rad, powers in W, element spacings in wavelengths. Shapes are per IRS
(no batch): G (N, M), psi (N,), R_s (M, M).
"""
from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- eqs. (1)-(3)
def steering(theta: float, phi: float, N_h: int, N_v: int, d_h: float, d_v: float) -> np.ndarray:
    """``a = a_v(theta) kron a_h(theta, phi)`` (eqs. (1)-(3)); shape (N_h * N_v,) complex128."""
    n_v = np.arange(N_v)
    n_h = np.arange(N_h)
    a_v = np.exp(1j * 2 * np.pi * d_v * n_v * np.cos(theta))
    a_h = np.exp(1j * 2 * np.pi * d_h * n_h * np.sin(theta) * np.cos(phi))
    return np.kron(a_v, a_h)


def richardson_derivative(f, x: float, h: float):
    """d f / d x at x by central differences with one Richardson step (error O(h^4))."""
    d1 = (f(x + h) - f(x - h)) / (2 * h)
    d2 = (f(x + h / 2) - f(x - h / 2)) / h
    return (4 * d2 - d1) / 3


def steering_derivatives_fd(theta, phi, N_h, N_v, d_h, d_v, h=1e-3):
    """(d a/d theta, d a/d phi) by finite differences of :func:`steering`; each (N,) complex."""
    da_t = richardson_derivative(lambda t: steering(t, phi, N_h, N_v, d_h, d_v), theta, h)
    da_p = richardson_derivative(lambda p: steering(theta, p, N_h, N_v, d_h, d_v), phi, h)
    return da_t, da_p


def steering_derivatives_analytic(theta, phi, N_h, N_v, d_h, d_v):
    """(26)-(27) with the horizontal coefficient 2 pi d_h (docs/assumptions.md item 3), differentiated by hand:
    d/dtheta of the phase ``2 pi (d_v v cos(theta) + d_h h sin(theta) cos(phi))``."""
    a = steering(theta, phi, N_h, N_v, d_h, d_v)
    v = np.kron(np.arange(N_v), np.ones(N_h))
    hh = np.kron(np.ones(N_v), np.arange(N_h))
    dph_t = 2 * np.pi * (-d_v * v * np.sin(theta) + d_h * hh * np.cos(theta) * np.cos(phi))
    dph_p = 2 * np.pi * (-d_h * hh * np.sin(theta) * np.sin(phi))
    return 1j * dph_t * a, 1j * dph_p * a


# ----------------------------------------------------------------------------- eqs. (8)-(13)
def waveform(R_s: np.ndarray, T_L: int, rng: np.random.Generator) -> np.ndarray:
    """An explicit waveform S (M x T_L) with ``S S^H / T_L = R_s`` exactly.

    ``S = R_s^{1/2} Q sqrt(T_L)`` with Q (M x T_L) having orthonormal rows (needs T_L >= M).
    """
    M = R_s.shape[0]
    if T_L < M:
        raise ValueError(f"T_L={T_L} must be >= M={M} for a full-rank waveform")
    Z = rng.standard_normal((T_L, M)) + 1j * rng.standard_normal((T_L, M))
    Q, _ = np.linalg.qr(Z)  # (T_L, M), orthonormal columns
    w, V = np.linalg.eigh(0.5 * (R_s + R_s.conj().T))
    sqrtR = (V * np.sqrt(np.clip(w, 0, None))) @ V.conj().T
    return sqrtR @ Q.conj().T * np.sqrt(T_L)


def echo_mean(xi, G, psi, S, N_h, N_v, d_h, d_v) -> np.ndarray:
    """``eta(xi) = vec(G^T Psi E Psi G S)``, ``E = beta a a^T`` (eqs. (4), (9)-(11)).

    xi = (theta, phi, Re beta, Im beta). Column-major vec: shape (M * T_L,) complex.
    """
    theta, phi, br, bi = xi
    a = steering(theta, phi, N_h, N_v, d_h, d_v)
    E = (br + 1j * bi) * np.outer(a, a)
    Psi = np.diag(psi)
    Y = G.T @ Psi @ E @ Psi @ G @ S
    return Y.reshape(-1, order="F")


def noise_covariance_rw(G, psi, sigma_r2, sigma_b2) -> np.ndarray:
    """``R_w = sigma_r2 G^T Psi Psi^H G^* + sigma_b2 I`` (after eq. (13)); (M, M)."""
    Psi = np.diag(psi)
    M = G.shape[1]
    return sigma_r2 * G.T @ Psi @ Psi.conj().T @ G.conj() + sigma_b2 * np.eye(M)


def slepian_bangs_fim(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, T_L, N_h, N_v, d_h, d_v,
                      rng=None, angle_step=1e-3):
    """Generic Slepian-Bangs FIM (eq. (14)) of the echo model (8)-(13), computed numerically.

    ``F_pq = 2 Re(d eta^H/d xi_p  R_y^{-1}  d eta/d xi_q)`` with ``R_y = I_{T_L} kron R_w`` formed
    explicitly; the covariance term of (14) is zero because R_y does not depend on xi.
    d eta / d xi by Richardson central differences: step ``angle_step`` rad for theta, phi and
    ``1e-3 |beta|`` for Re beta, Im beta (eta is linear in beta, so that difference is exact).
    Returns F (4, 4) in SI units, ordered (theta, phi, Re beta, Im beta).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    T_L = int(round(T_L))
    S = waveform(R_s, T_L, rng)
    xi0 = np.array([theta, phi, beta.real, beta.imag], dtype=float)
    steps = [angle_step, angle_step, 1e-3 * abs(beta), 1e-3 * abs(beta)]
    D = []
    for p in range(4):
        def f(x, p=p):
            xi = xi0.copy()
            xi[p] = x
            return echo_mean(xi, G, psi, S, N_h, N_v, d_h, d_v)
        D.append(richardson_derivative(f, xi0[p], steps[p]))
    D = np.stack(D, axis=1)  # (M T_L, 4)
    Rw = noise_covariance_rw(G, psi, sigma_r2, sigma_b2)
    Ry = np.kron(np.eye(T_L), Rw)
    RinvD = np.linalg.solve(Ry, D)
    F = 2 * np.real(D.conj().T @ RinvD)
    return 0.5 * (F + F.T)


def closed_form_fim(G, psi, R_s, theta, phi, beta, sigma_r2, sigma_b2, T_L, N_h, N_v, d_h, d_v,
                    conj_beta=True):
    """Closed form (15)-(16) built densely: C_theta, C_phi, H as M x M matrices, explicit R_w^{-1}.

    ``conj_beta=True``: the cross terms (16e)-(16f) carry conj(beta) (docs/assumptions.md item 1);
    ``False``: as printed in the paper (beta). F_theta,phi is the real part (docs/assumptions.md item 2).
    Uses the analytic derivatives of :func:`steering_derivatives_analytic`. Returns (4, 4).
    """
    a = steering(theta, phi, N_h, N_v, d_h, d_v)
    da_t, da_p = steering_derivatives_analytic(theta, phi, N_h, N_v, d_h, d_v)
    Psi = np.diag(psi)
    L_, R_ = G.T @ Psi, Psi @ G
    C_t = L_ @ (np.outer(da_t, a) + np.outer(a, da_t)) @ R_
    C_p = L_ @ (np.outer(da_p, a) + np.outer(a, da_p)) @ R_
    H = L_ @ np.outer(a, a) @ R_
    W = np.linalg.inv(noise_covariance_rw(G, psi, sigma_r2, sigma_b2))
    tr = lambda X, Y: np.trace(X.conj().T @ W @ Y @ R_s)  # noqa: E731
    b2 = abs(beta) ** 2
    bc = np.conj(beta) if conj_beta else beta
    F = np.zeros((4, 4))
    F[0, 0] = b2 * tr(C_t, C_t).real
    F[1, 1] = b2 * tr(C_p, C_p).real
    F[0, 1] = F[1, 0] = b2 * tr(C_t, C_p).real
    for i, C in ((0, C_t), (1, C_p)):
        t = bc * tr(C, H)
        F[i, 2] = F[2, i] = np.real(t * 1.0)
        F[i, 3] = F[3, i] = np.real(t * 1j)
    F[2, 2] = F[3, 3] = tr(H, H).real
    return 2 * T_L * F


def trace_inverse(F: np.ndarray):
    """Careful ``diag(F^{-1})`` of a symmetric PD (4, 4) F spanning many decades.

    Jacobi scaling ``Fbar = D F D`` with ``D = diag(F)^{-1/2}`` (unit diagonal), inverted, scaled back.
    Returns the diagonal of F^{-1} (4,) (its sum is the CRB tr(F^{-1})).
    """
    d = 1.0 / np.sqrt(np.diag(F))
    Fbar = d[:, None] * F * d[None, :]
    return np.diag(np.linalg.inv(Fbar)) * d * d


# ----------------------------------------------------------------------------- eqs. (5)-(7)
def crandn(rng, shape):
    """i.i.d. CN(0, 1) samples."""
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)


def irs_power_monte_carlo(G, psi, R_s, theta, phi, beta, sigma_r2, N_h, N_v, d_h, d_v, n, rng):
    """Samples of ``||x_1||^2 + ||x_2||^2`` from (5)-(6) with s ~ CN(0, R_s), z_1, z_2 ~ CN(0, sigma_r2 I).

    x_1 = Psi G s + Psi z_1;  x_2 = Psi (E x_1 + z_2), E = beta a a^T. Returns (n,) real samples;
    their mean estimates the C1 left-hand side (7).
    """
    N, M = G.shape
    a = steering(theta, phi, N_h, N_v, d_h, d_v)
    E = beta * np.outer(a, a)
    w, V = np.linalg.eigh(0.5 * (R_s + R_s.conj().T))
    sqrtR = (V * np.sqrt(np.clip(w, 0, None))) @ V.conj().T
    s = sqrtR @ crandn(rng, (M, n))
    z1 = np.sqrt(sigma_r2) * crandn(rng, (N, n))
    z2 = np.sqrt(sigma_r2) * crandn(rng, (N, n))
    x1 = psi[:, None] * (G @ s + z1)
    x2 = psi[:, None] * (E @ x1 + z2)
    return (np.abs(x1) ** 2).sum(0) + (np.abs(x2) ** 2).sum(0)


def random_psd(rng, M, trace=1.0, rank=None) -> np.ndarray:
    """A random Hermitian PSD matrix (M, M) of the given rank (default full) and trace."""
    r = M if rank is None else rank
    A = crandn(rng, (M, r))
    R = A @ A.conj().T
    return R * (trace / np.trace(R).real)


def irs_power_dense(G, psi, R_s, theta, phi, beta, sigma_r2, N_h, N_v, d_h, d_v):
    """The four terms of the C1 left-hand side (7), as dense traces; returns a (4,) real array
    (signal echo, amplified-noise echo, first-hop signal, 2 sigma_r2 tr(Psi Psi^H))."""
    a = steering(theta, phi, N_h, N_v, d_h, d_v)
    E = beta * np.outer(a, a)
    Psi = np.diag(psi)
    Ph = Psi.conj().T
    PEP = Psi @ E @ Psi
    t1 = np.trace(PEP @ G @ R_s @ G.conj().T @ PEP.conj().T)
    t2 = sigma_r2 * np.trace(PEP @ Ph @ E.conj().T @ Ph)
    t3 = np.trace(Psi @ G @ R_s @ G.conj().T @ Ph)
    t4 = 2 * sigma_r2 * np.trace(Psi @ Ph)
    return np.real(np.array([t1, t2, t3, t4]))


def random_design(L, M, N, P_t, seed, psi_scale=3.0, rank=None):
    """A random design: R_s (L, M, M) PSD with trace P_t per slot (given rank, default full) and
    psi (L, N) i.i.d. CN(0, psi_scale^2). numpy complex128; reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    R = np.stack([random_psd(rng, M, P_t, rank) for _ in range(L)])
    psi = psi_scale * crandn(rng, (L, N))
    return R, psi

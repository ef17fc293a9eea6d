"""Echo simulator of the multi-active-IRS sensing model, paper eqs. (5)-(9).

For IRS l (active during its slot of ``T_L = T_c / L`` symbols) and BS snapshot ``s[t]`` (M,):

    x_1[t] = Psi (G s[t] + z_1[t])                                    (5)
    x_2[t] = Psi (E x_1[t] + z_2[t]),  E = beta a a^T                 (4), (6)
    y[t]   = G^T x_2[t] + z[t]                                        (8)

with ``z_1, z_2 ~ CN(0, sigma_r2 I_N)`` (IRS amplification noises) and ``z ~ CN(0, sigma_b2 I_M)``
(BS noise), all independent over t, l and trials. Stacking the T_L snapshots gives (9):
``Y = beta u u^T S + beta u (psi * a)^T Z_1 + G^T Psi Z_2 + Z`` with ``u = G^T (psi * a)``.

Hence, per snapshot, ``E[y] = beta u u^T s`` and

    Cov[y] = R_w + sigma_r2 |beta|^2 ||psi||^2 u u^H,
    R_w    = sigma_r2 G^T Psi Psi^H G^* + sigma_b2 I       (the CRB's noise model, (12)-(13)).

The CRB model drops the z_1 term (rank one, ~|beta|^2 ~ 1e-11 smaller); the simulator keeps it
unless ``include_z1=False``.

The waveform: the CRB (15)-(16) conditions on a known waveform whose *sample* covariance is R_s,l,
``S S^H / T_L = R_s,l``. :func:`waveform` builds such an S exactly (``S = sqrt(T_L) R^{1/2} Q^H``
with Q a random T_L x M matrix with orthonormal columns), which needs ``T_L >= rank(R_s,l)``.

Randomness only through explicit ``torch.Generator`` objects / integer seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from irs_torch.physics.steering import upa_steering


def _crandn(shape, generator, dtype=torch.complex128):
    """i.i.d. CN(0, 1) samples of ``shape`` (real and imaginary parts N(0, 1/2))."""
    rdt = torch.float32 if dtype == torch.complex64 else torch.float64
    x = torch.randn(tuple(shape) + (2,), generator=generator, dtype=rdt)
    return torch.view_as_complex(x) / math.sqrt(2.0)


def psd_sqrt(R: torch.Tensor, rtol: float = 1e-12):
    """Hermitian PSD square root and numerical rank of ``R`` ``(..., M, M)``.

    Eigenvalues below ``rtol * max eigenvalue`` are set to zero. Returns ``(R^{1/2}, rank)`` with
    ``rank`` of shape ``(...)`` (int64).
    """
    Rh = 0.5 * (R + R.conj().transpose(-1, -2))
    w, V = torch.linalg.eigh(Rh)
    wmax = w.amax(-1, keepdim=True).clamp_min(0)
    keep = w > rtol * wmax
    w = torch.where(keep, w, torch.zeros_like(w))
    root = (V * w.sqrt().to(V.dtype).unsqueeze(-2)) @ V.conj().transpose(-1, -2)
    return root, keep.sum(-1)


def waveform(R_s: torch.Tensor, T_L: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A BS waveform S whose sample covariance equals R_s exactly: ``S S^H / T_L = R_s``.

    Shapes: R_s ``(..., M, M)`` Hermitian PSD [W] -> S ``(..., M, T_L)`` complex [sqrt(W)].
    ``S = sqrt(T_L) R_s^{1/2} Q^H`` with Q ``(T_L, M)`` having orthonormal columns (QR of a complex
    Gaussian matrix drawn from ``generator``). Raises ValueError if ``T_L < rank(R_s)``.
    """
    T_L = int(T_L)
    M = R_s.shape[-1]
    root, rank = psd_sqrt(R_s)
    if T_L < M and (rank > T_L).any():
        raise ValueError(f"T_L = T_c/L = {T_L} symbols per IRS slot is smaller than rank(R_s,l) = "
                         f"{int(rank.max())}: no waveform of T_L snapshots has sample covariance R_s")
    Q = _crandn(R_s.shape[:-2] + (T_L, M), generator, R_s.dtype)
    if T_L >= M:
        Q, _ = torch.linalg.qr(Q)  # (..., T_L, M), Q^H Q = I_M
        return math.sqrt(T_L) * root @ Q.conj().transpose(-1, -2)
    # T_L < M but rank(R) <= T_L: use the range of R only.
    w, V = torch.linalg.eigh(0.5 * (R_s + R_s.conj().transpose(-1, -2)))
    Vr = V[..., -T_L:]  # (..., M, T_L) top eigenvectors (the range of R)
    wr = w[..., -T_L:].clamp_min(0).sqrt().to(R_s.dtype)
    Qt, _ = torch.linalg.qr(Q[..., :T_L, :T_L])  # (..., T_L, T_L) unitary
    return math.sqrt(T_L) * (Vr * wr.unsqueeze(-2)) @ Qt.conj().transpose(-1, -2)


@dataclass(frozen=True)
class Echoes:
    """Simulated echoes of every IRS slot.

    Y: ``(K, L, M, T_L)`` complex [sqrt(W)], K Monte Carlo trials (eq. (9) per slot).
    S: ``(L, M, T_L)`` the known BS waveform of each slot (``S_l S_l^H / T_L = R_s,l``).
    seed: the integer seed of the noise draws (None if a generator was passed).
    include_z1: whether the first-hop amplification noise z_1 was simulated.
    """

    Y: torch.Tensor
    S: torch.Tensor
    seed: int | None
    include_z1: bool


def _scenario_parts(scenario, R_s, psi):
    if scenario.batch_shape:
        raise ValueError(f"the echo simulator takes one scenario, got a batch of shape "
                         f"{tuple(scenario.batch_shape)}; index it (scenario[i])")
    scenario.check_design(R_s, psi)
    if R_s.dim() != 3 or psi.dim() != 2:
        raise ValueError(f"R_s must have shape (L, M, M) and psi (L, N), got {tuple(R_s.shape)} and "
                         f"{tuple(psi.shape)}")
    cdt = scenario.G.dtype
    a = upa_steering(scenario.theta, scenario.phi, scenario.N_h, scenario.N_v, scenario.d_h,
                     scenario.d_v).to(cdt)  # (L, N)
    return R_s.to(cdt), psi.to(cdt), a


def simulate_echoes(scenario, R_s: torch.Tensor, psi: torch.Tensor, trials: int, seed: int | None = 0, *,
                    generator: torch.Generator | None = None, S: torch.Tensor | None = None,
                    include_z1: bool = True, noise: bool = True) -> Echoes:
    """Simulate ``trials`` independent echo matrices Y_l of every IRS slot, eqs. (5)-(9).

    Shapes: scenario unbatched (L IRSs, N elements, M antennas); R_s ``(L, M, M)`` [W];
    psi ``(L, N)`` -> :class:`Echoes` with Y ``(trials, L, M, T_L)``.

    ``seed`` seeds a ``torch.Generator`` used, in this order, for the waveform (unless ``S`` is
    given) and then the noises z_1, z_2, z of all trials. Pass ``generator`` instead to continue a
    stream (then ``seed`` is ignored and recorded as None). ``noise=False`` gives the noiseless
    echo ``beta u u^T S``. ``T_L = T_c / L`` must be an integer number of symbols.
    """
    if int(trials) < 1:
        raise ValueError(f"trials must be a positive integer, got {trials}")
    trials = int(trials)
    T_L = scenario.T_L
    if abs(T_L - round(T_L)) > 1e-9:
        raise ValueError(f"T_c / L must be an integer number of symbols per IRS slot, got "
                         f"T_c={scenario.T_c}, L={scenario.L}")
    T_L = int(round(T_L))
    R_s, psi, a = _scenario_parts(scenario, R_s, psi)
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed if seed is not None else 0))
        used_seed = int(seed if seed is not None else 0)
    else:
        used_seed = None
    L, N, M = scenario.L, scenario.N, scenario.M
    if S is None:
        S = waveform(R_s, T_L, generator)
    elif tuple(S.shape) != (L, M, T_L):
        raise ValueError(f"S must have shape (L={L}, M={M}, T_L={T_L}), got {tuple(S.shape)}")
    S = S.to(R_s.dtype)
    G = scenario.G  # (L, N, M)
    beta = scenario.beta  # (L,)
    sr = math.sqrt(float(scenario.sigma_r2))
    sb = math.sqrt(float(scenario.sigma_b2))
    x1 = (G @ S).unsqueeze(0).expand(trials, L, N, T_L)  # G s[t]
    if noise and include_z1:
        x1 = x1 + sr * _crandn((trials, L, N, T_L), generator, S.dtype)
    x1 = psi[..., :, None] * x1  # (5)
    # E x_1 = beta a (a^T x_1)
    echo = beta[:, None, None] * a[..., :, None] * (a[..., None, :] @ x1)  # (K, L, N, T_L)
    if noise:
        echo = echo + sr * _crandn((trials, L, N, T_L), generator, S.dtype)
    x2 = psi[..., :, None] * echo  # (6)
    Y = G.transpose(-1, -2) @ x2  # (8)
    if noise:
        Y = Y + sb * _crandn((trials, L, M, T_L), generator, S.dtype)
    return Echoes(Y=Y, S=S, seed=used_seed, include_z1=bool(include_z1 and noise))


def echo_mean(scenario, R_s, psi, S):
    """Noise-free echo ``beta u u^T S`` per slot, eq. (9) first term. Shapes: S ``(L, M, T_L)``
    -> ``(L, M, T_L)``."""
    R_s, psi, a = _scenario_parts(scenario, R_s, psi)
    u = (scenario.G.transpose(-1, -2) @ (psi * a).unsqueeze(-1))  # (L, M, 1)
    return scenario.beta[:, None, None] * u @ (u.transpose(-1, -2) @ S.to(u.dtype))


def echo_covariance(scenario, psi, include_z1: bool = True):
    """Per-snapshot covariance of the simulated echo, ``R_w + sigma_r2 |beta|^2 ||psi||^2 u u^H``.

    Shapes: psi ``(L, N)`` -> ``(L, M, M)`` [W]. With ``include_z1=False`` it is the CRB's R_w.
    """
    from irs_torch.crb import noise_covariance

    dummy_R = torch.zeros(scenario.L, scenario.M, scenario.M, dtype=scenario.G.dtype)
    _, psi, a = _scenario_parts(scenario, dummy_R, psi)
    Rw = noise_covariance(scenario.G, psi, float(scenario.sigma_r2), float(scenario.sigma_b2))
    if not include_z1:
        return Rw
    u = (scenario.G.transpose(-1, -2) @ (psi * a).unsqueeze(-1)).squeeze(-1)  # (L, M)
    g = float(scenario.sigma_r2) * scenario.beta.abs() ** 2 * (psi.abs() ** 2).sum(-1)  # (L,)
    return Rw + g[:, None, None].to(u.dtype) * (u.unsqueeze(-1) @ u.conj().unsqueeze(-2))


def z1_noise_ratio(scenario, psi) -> torch.Tensor:
    """Size of the z_1 noise the CRB model drops, relative to the modelled noise, per IRS.

    ``sigma_r2 |beta|^2 ||psi||^2 u^H R_w^{-1} u``: the extra (rank-one) noise power in the
    direction of the signal, after whitening by R_w. The angle CRB with z_1 included is larger
    by a relative amount of this order. Shape ``(L,)`` (dimensionless).
    """
    from irs_torch.crb import noise_covariance

    dummy_R = torch.zeros(scenario.L, scenario.M, scenario.M, dtype=scenario.G.dtype)
    _, psi, a = _scenario_parts(scenario, dummy_R, psi)
    Rw = noise_covariance(scenario.G, psi, float(scenario.sigma_r2), float(scenario.sigma_b2))
    u = (scenario.G.transpose(-1, -2) @ (psi * a).unsqueeze(-1))  # (L, M, 1)
    q = (u.conj().transpose(-1, -2) @ torch.linalg.solve(Rw, u)).real.squeeze(-1).squeeze(-1)
    return float(scenario.sigma_r2) * scenario.beta.abs() ** 2 * (psi.abs() ** 2).sum(-1) * q

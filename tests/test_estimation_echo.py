"""Echo simulator (irs_torch.estimation.echo) against eqs. (5)-(9) written densely in numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irs_torch import Scenario, paper_scenario
from irs_torch.estimation.echo import echo_covariance, simulate_echoes, waveform, z1_noise_ratio

import reference as ref


def _small_scenario(seed=3, sigma_r2=0.5, sigma_b2=1.0, T_L=25):
    """A small system (M = 4, 2 x 2 IRS, L = 2) where all three noises and z_1 are comparable."""
    g = np.random.default_rng(seed)
    G = torch.from_numpy(ref.crandn(g, (2, 4, 4)))
    return Scenario(G=G, theta=torch.tensor([1.2, 1.9]), phi=torch.tensor([0.7, 2.1]),
                    beta=torch.tensor([0.8 * np.exp(0.4j), 0.6 * np.exp(-2.0j)]), M=4, N_h=2, N_v=2,
                    sigma_r2=sigma_r2, sigma_b2=sigma_b2, T_c=2 * T_L, P_t=2.0, P_s=100.0, a_max=4.0)


def _design(s, seed=4):
    g = np.random.default_rng(seed)
    R = torch.from_numpy(np.stack([ref.random_psd(g, s.M, 2.0) for _ in range(s.L)]))
    psi = torch.from_numpy(ref.crandn(g, (s.L, s.N)))
    return R, psi


def _dense_mean_and_cov(s, psi, S, l, include_z1=True):
    """Mean G^T Psi E Psi G S and per-snapshot covariance of (9), built from dense matrices."""
    G = s.G[l].numpy()
    p = psi[l].numpy()
    a = ref.steering(float(s.theta[l]), float(s.phi[l]), s.N_h, s.N_v, s.d_h, s.d_v)
    E = complex(s.beta[l]) * np.outer(a, a)
    Psi = np.diag(p)
    A1 = G.T @ Psi @ E @ Psi  # maps z_1
    mean = A1 @ G @ S[l].numpy()
    cov = ref.noise_covariance_rw(G, p, s.sigma_r2, s.sigma_b2)
    if include_z1:
        cov = cov + s.sigma_r2 * A1 @ A1.conj().T
    return mean, cov


def test_waveform_has_exact_sample_covariance():
    g = np.random.default_rng(1)
    R = torch.from_numpy(np.stack([ref.random_psd(g, 6, 3.0), ref.random_psd(g, 6, 2.0, rank=2)]))
    S = waveform(R, 10, torch.Generator().manual_seed(0))
    assert S.shape == (2, 6, 10)
    torch.testing.assert_close(S @ S.conj().transpose(-1, -2) / 10, R, atol=1e-12, rtol=1e-9)
    # fewer snapshots than antennas works when rank(R) <= T_L ...
    S2 = waveform(R[1:], 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(S2 @ S2.conj().transpose(-1, -2) / 3, R[1:], atol=1e-12, rtol=1e-9)
    # ... and is refused otherwise, naming T_L and the rank
    with pytest.raises(ValueError, match=r"T_L = T_c/L = 4 .* rank\(R_s,l\) = 6"):
        waveform(R[:1], 4, torch.Generator().manual_seed(0))


def test_noiseless_echo_is_the_model_mean():
    s = _small_scenario()
    R, psi = _design(s)
    e = simulate_echoes(s, R, psi, 2, seed=5, noise=False)
    assert e.Y.shape == (2, s.L, s.M, 25)
    for l in range(s.L):
        mean, _ = _dense_mean_and_cov(s, psi, e.S, l)
        np.testing.assert_allclose(e.Y[0, l].numpy(), mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(e.Y[1, l].numpy(), mean, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("include_z1", [True, False])
def test_empirical_mean_and_covariance_match_eq9(include_z1):
    s = _small_scenario()
    R, psi = _design(s)
    K = 4000
    e = simulate_echoes(s, R, psi, K, seed=11, include_z1=include_z1)
    for l in range(s.L):
        mean, cov = _dense_mean_and_cov(s, psi, e.S, l, include_z1)
        Y = e.Y[:, l].numpy()  # (K, M, T)
        # mean: every entry within 5 standard errors (2 x 100 entries; a false alarm has p ~ 1e-4)
        se = np.sqrt(np.real(np.diag(cov)) / K)[:, None]
        z = np.abs(Y.mean(0) - mean) / se
        assert z.max() < 5.0, z.max()
        # covariance of the residual over all K * T snapshots: relative error ~ sqrt(M / n) ~ 0.006
        W = (Y - mean).transpose(1, 0, 2).reshape(s.M, -1)
        C = W @ W.conj().T / W.shape[1]
        rel = np.linalg.norm(C - cov) / np.linalg.norm(cov)
        assert rel < 0.03, rel
        # the test can tell z_1 from no z_1: the two covariances differ by much more than the tolerance
        _, other = _dense_mean_and_cov(s, psi, e.S, l, not include_z1)
        assert np.linalg.norm(C - other) / np.linalg.norm(other) > 0.1
        # and echo_covariance returns the same matrix as the dense (9)
        np.testing.assert_allclose(echo_covariance(s, psi, include_z1)[l].numpy(), cov, rtol=1e-10, atol=1e-12)


def test_seeds_are_reproducible_and_distinct():
    s = _small_scenario()
    R, psi = _design(s)
    a = simulate_echoes(s, R, psi, 3, seed=7)
    b = simulate_echoes(s, R, psi, 3, seed=7)
    c = simulate_echoes(s, R, psi, 3, seed=8)
    assert a.seed == 7
    assert torch.equal(a.Y, b.Y) and torch.equal(a.S, b.S)
    assert not torch.allclose(a.Y, c.Y)


def test_z1_noise_is_negligible_on_the_paper_scenario():
    s = paper_scenario(0)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=0)
    r = z1_noise_ratio(s, psi)
    # independent: sigma_r2 |beta|^2 ||psi||^2 u^H R_w^-1 u with dense numpy
    for l in range(s.L):
        a = ref.steering(float(s.theta[l]), float(s.phi[l]), s.N_h, s.N_v, s.d_h, s.d_v)
        u = s.G[l].numpy().T @ (psi[l].numpy() * a)
        Rw = ref.noise_covariance_rw(s.G[l].numpy(), psi[l].numpy(), s.sigma_r2, s.sigma_b2)
        q = np.real(u.conj() @ np.linalg.solve(Rw, u))
        want = s.sigma_r2 * abs(complex(s.beta[l])) ** 2 * np.sum(np.abs(psi[l].numpy()) ** 2) * q
        assert math.isclose(float(r[l]), want, rel_tol=1e-9)
    assert (r > 0).all() and (r < 1e-6).all()


def test_simulator_errors_name_the_field():
    s = _small_scenario()
    R, psi = _design(s)
    with pytest.raises(ValueError, match="trials must be a positive integer, got 0"):
        simulate_echoes(s, R, psi, 0)
    with pytest.raises(ValueError, match="psi must have shape"):
        simulate_echoes(s, R, psi[:, :3], 2)
    with pytest.raises(ValueError, match="T_c / L must be an integer"):
        simulate_echoes(s.replace(T_c=51.0), R, psi, 2)

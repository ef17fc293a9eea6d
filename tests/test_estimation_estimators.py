"""Direction estimators (ML, MUSIC): exact recovery without noise, the concentrated likelihood
against a direct least-squares derivation, the identifiability region, and the search grid."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irs_torch import paper_scenario, random_scenario
from irs_torch.estimation.echo import simulate_echoes
from irs_torch.estimation.estimators import (
    canonical_angles,
    direction_grid,
    estimate_directions,
    ml_criterion,
    ml_estimate,
)
from irs_torch.physics.steering import upa_steering
from irs_torch.solvers.baselines import aligned_psi

import reference as ref


def _scenarios():
    s = paper_scenario(0)
    yield "paper-aligned", s, aligned_psi(s, s.isotropic_design())
    for seed in (1, 2):
        r = random_scenario(seed)  # yawed IRSs, target anywhere in front
        yield f"random-{seed}", r, r.random_phase_design(r.isotropic_design(), seed=seed)


@pytest.mark.parametrize("method", ["ml", "music"])
def test_noiseless_echo_recovers_the_target_exactly(method):
    for name, s, psi in _scenarios():
        e = simulate_echoes(s, s.isotropic_design(), psi, 3, seed=0, noise=False)
        est = estimate_directions(s, psi, e, method)
        assert (est["theta"] - s.theta).abs().max() < 1e-7, name
        assert (est["phi"] - s.phi).abs().max() < 1e-7, name
        assert ((est["beta"] - s.beta).abs() / s.beta.abs()).max() < 1e-6, name


def test_ml_criterion_equals_direct_least_squares():
    """J(theta, phi) = ||Yw||^2 - min_beta ||Yw - beta Hw||^2 (whitened, dense numpy) and beta_hat is
    that least-squares beta."""
    s = paper_scenario(1)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=3)
    e = simulate_echoes(s, R, psi, 2, seed=9)
    l = 1
    G, p = s.G[l].numpy(), psi[l].numpy()
    S = e.S[l].numpy()
    Lc = np.linalg.cholesky(ref.noise_covariance_rw(G, p, s.sigma_r2, s.sigma_b2))
    for th, ph in [(float(s.theta[l]), float(s.phi[l])), (1.3, 2.4), (0.6, 0.9)]:
        J = ml_criterion(e.Y[:, l], e.S[l], s.G[l], psi[l], s.sigma_r2, s.sigma_b2, s.N_h, s.N_v,
                         theta=th, phi=ph)
        H = ref.echo_mean((th, ph, 1.0, 0.0), G, p, S, s.N_h, s.N_v, s.d_h, s.d_v).reshape(s.M, -1, order="F")
        Hw = np.linalg.solve(Lc, H).ravel()
        for k in range(2):
            Yw = np.linalg.solve(Lc, e.Y[k, l].numpy()).ravel()
            b = (Hw.conj() @ Yw) / (Hw.conj() @ Hw)
            want = np.linalg.norm(Yw) ** 2 - np.linalg.norm(Yw - b * Hw) ** 2
            assert math.isclose(float(J[k]), want, rel_tol=1e-8)
    # beta_hat at the ML estimate is the least-squares beta there
    est = ml_estimate(e.Y[:, l], e.S[l], s.G[l], psi[l], s.sigma_r2, s.sigma_b2, s.N_h, s.N_v)
    for k in range(2):
        H = ref.echo_mean((float(est.theta[k]), float(est.phi[k]), 1.0, 0.0), G, p, S, s.N_h, s.N_v,
                          s.d_h, s.d_v).reshape(s.M, -1, order="F")
        Hw = np.linalg.solve(Lc, H).ravel()
        Yw = np.linalg.solve(Lc, e.Y[k, l].numpy()).ravel()
        b = (Hw.conj() @ Yw) / (Hw.conj() @ Hw)
        assert abs(complex(est.beta[k]) - b) < 1e-9 * abs(b)
        # and the estimate is a maximum: J there >= J at the truth and at nearby points
        J0 = float(est.objective[k])
        for dth, dph in [(0, 0), (1e-3, 0), (0, 1e-3), (-1e-3, 0), (0, -1e-3)]:
            th = float(s.theta[l]) if (dth, dph) == (0, 0) else float(est.theta[k]) + dth
            ph = float(s.phi[l]) if (dth, dph) == (0, 0) else float(est.phi[k]) + dph
            Jx = ml_criterion(e.Y[k:k + 1, l], e.S[l], s.G[l], psi[l], s.sigma_r2, s.sigma_b2, s.N_h,
                              s.N_v, theta=th, phi=ph)
            assert float(Jx) <= J0 * (1 + 1e-12)


def test_canonical_angles_keep_the_response_and_land_in_the_front_half_space():
    g = torch.Generator().manual_seed(0)
    th = (torch.rand(500, generator=g, dtype=torch.float64) - 0.5) * 4 * math.pi
    ph = (torch.rand(500, generator=g, dtype=torch.float64) - 0.5) * 4 * math.pi
    ct, cp = canonical_angles(th, ph)
    assert ((ct >= 0) & (ct <= math.pi) & (cp >= 0) & (cp <= math.pi)).all()
    torch.testing.assert_close(upa_steering(ct, cp, 4, 3), upa_steering(th, ph, 4, 3), atol=1e-12, rtol=0)


def test_mirror_direction_behind_the_irs_is_not_identifiable():
    """phi and -phi (behind the IRS) give the same response: the reason for the half-space."""
    a1 = upa_steering(torch.tensor(1.1), torch.tensor(0.8), 4, 4)
    a2 = upa_steering(torch.tensor(1.1), torch.tensor(-0.8), 4, 4)
    torch.testing.assert_close(a1, a2)


def test_direction_grid_covers_the_front_half_space():
    step = 1 / 16
    th, ph = direction_grid(step)
    assert ((th >= 0) & (th <= math.pi) & (ph >= 0) & (ph <= math.pi)).all()
    kh, kv = (torch.sin(th) * torch.cos(ph)).numpy(), torch.cos(th).numpy()
    g = np.random.default_rng(0)
    # random directions with k_n >= 1e-3 (incl. grazing): nearest grid point within half a lattice diagonal
    v = g.standard_normal((5000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v = v[np.abs(v[:, 2]) >= 1e-3]
    d = np.sqrt((v[:, None, 0] - kh) ** 2 + (v[:, None, 1] - kv) ** 2).min(1)
    assert d.max() <= step / math.sqrt(2) + 1e-12
    with pytest.raises(ValueError, match="grid step must be in"):
        direction_grid(0.0)


def test_estimate_directions_rejects_unknown_estimator():
    s = paper_scenario(0)
    R = s.isotropic_design()
    psi = s.random_phase_design(R)
    e = simulate_echoes(s, R, psi, 1, seed=0)
    with pytest.raises(ValueError, match="estimator must be one of .* got 'esprit'"):
        estimate_directions(s, psi, e, "esprit")

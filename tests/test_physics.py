"""Steering vectors (eqs. (1)-(3), (26)-(27)), geometry and channels against independent numpy code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irs_torch import paper_scenario, random_scenario
from irs_torch.physics import direction_angles, path_loss, target_angles, upa_steering, upa_steering_derivatives

import reference as ref

# Non-square array and unequal spacings, so that swapping N_h/N_v or d_h/d_v shows.
SHAPES = [(5, 3, 0.37, 0.61), (2, 4, 0.5, 0.25), (4, 4, 0.5, 0.5)]


def _angles(seed, n=6):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, math.pi - 0.05, n), rng.uniform(0.05, math.pi - 0.05, n)


@pytest.mark.parametrize("N_h,N_v,d_h,d_v", SHAPES)
def test_steering_matches_eqs_1_3(N_h, N_v, d_h, d_v):
    th, ph = _angles(1)
    a = upa_steering(torch.from_numpy(th), torch.from_numpy(ph), N_h, N_v, d_h, d_v).numpy()
    assert a.shape == (len(th), N_h * N_v)
    for i in range(len(th)):
        np.testing.assert_allclose(a[i], ref.steering(th[i], ph[i], N_h, N_v, d_h, d_v), rtol=0, atol=1e-13)


@pytest.mark.parametrize("N_h,N_v,d_h,d_v", SHAPES)
def test_steering_derivatives_match_finite_differences(N_h, N_v, d_h, d_v):
    th, ph = _angles(2)
    a, da_t, da_p = (x.numpy() for x in upa_steering_derivatives(torch.from_numpy(th), torch.from_numpy(ph),
                                                                  N_h, N_v, d_h, d_v))
    for i in range(len(th)):
        fd_t, fd_p = ref.steering_derivatives_fd(th[i], ph[i], N_h, N_v, d_h, d_v)
        scale = 2 * math.pi * max(d_h * N_h, d_v * N_v)  # |da| is at most ~ this
        np.testing.assert_allclose(a[i], ref.steering(th[i], ph[i], N_h, N_v, d_h, d_v), atol=1e-13)
        np.testing.assert_allclose(da_t[i], fd_t, rtol=0, atol=1e-8 * scale)
        np.testing.assert_allclose(da_p[i], fd_p, rtol=0, atol=1e-8 * scale)


def test_finite_differences_detect_the_printed_d_v_misprint():
    """The paper's (26) prints d_v in the horizontal term; with d_h != d_v that derivative is wrong
    by far more than the tolerance used above, so the test above would catch it."""
    N_h, N_v, d_h, d_v = 5, 3, 0.37, 0.61
    th, ph = 1.1, 0.7
    a = ref.steering(th, ph, N_h, N_v, d_h, d_v)
    hh = np.kron(np.ones(N_v), np.arange(N_h))
    v = np.kron(np.arange(N_v), np.ones(N_h))
    misprint = 1j * 2 * np.pi * (d_v * np.cos(th) * np.cos(ph) * hh - d_v * np.sin(th) * v) * a
    fd_t, _ = ref.steering_derivatives_fd(th, ph, N_h, N_v, d_h, d_v)
    tol = 1e-8 * 2 * math.pi * max(d_h * N_h, d_v * N_v)  # the tolerance of the test above
    assert np.abs(misprint - fd_t).max() > 1e4 * tol


def test_steering_batched_broadcasts():
    th = torch.rand(3, 1, dtype=torch.float64) + 0.5
    ph = torch.rand(1, 4, dtype=torch.float64) + 0.5
    a, da_t, da_p = upa_steering_derivatives(th, ph, 3, 2, 0.5, 0.4)
    assert a.shape == da_t.shape == da_p.shape == (3, 4, 6)
    i, j = 2, 3
    np.testing.assert_allclose(a[i, j].numpy(), ref.steering(th[i, 0].item(), ph[0, j].item(), 3, 2, 0.5, 0.4),
                               atol=1e-13)


# ----------------------------------------------------------------------------- geometry
def test_paper_preset_angles():
    """docs/assumptions.md "Geometry and angles": target (5,15,0) seen from IRS 1 at (-5,10,0) and IRS 2 at (-5,20,0),
    both facing +x: theta = 90 deg, phi = atan2(10, 5) = 63.43 deg and 180 - 63.43 = 116.57 deg."""
    s = paper_scenario(seed=0)
    np.testing.assert_allclose(np.degrees(s.theta.numpy()), [90.0, 90.0], atol=1e-10)
    phi1 = math.degrees(math.acos(5 / math.sqrt(125)))  # cos(phi) = k . h, h = +y
    np.testing.assert_allclose(np.degrees(s.phi.numpy()), [phi1, 180 - phi1], atol=1e-10)
    assert abs(phi1 - 63.4) < 0.05
    # |beta|^2 = PL(d_IT)^2 with PL(d) = 1e-3 d^-2.2 and d_IT = sqrt(125) m (docs/assumptions.md "Defaults where the
    # paper is silent").
    pl = 1e-3 * math.sqrt(125) ** -2.2
    np.testing.assert_allclose(s.beta.abs().numpy(), [pl, pl], rtol=1e-12)


def test_direction_angles_against_independent_frames():
    """theta from the vertical axis (+z), phi from the horizontal axis h = (-sin yaw, cos yaw, 0),
    positive side n = (cos yaw, sin yaw, 0); check a random set of points and yaws."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        o = rng.uniform(-5, 5, 3)
        yaw = rng.uniform(-1, 1)
        n = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        h = np.array([-math.sin(yaw), math.cos(yaw), 0.0])
        # a point in front of the surface
        p = o + rng.uniform(1, 5) * n + rng.uniform(-3, 3) * h + rng.uniform(-3, 3) * np.array([0, 0, 1.0])
        k = (p - o) / np.linalg.norm(p - o)
        th, ph, d, front = (x.item() for x in direction_angles(torch.tensor(o), torch.tensor(yaw, dtype=torch.float64),
                                                               torch.tensor(p)))
        assert abs(d - np.linalg.norm(p - o)) < 1e-12
        assert abs(front - k @ n) < 1e-12 and front > 0
        # reconstruct the direction from the angles in the local frame
        k_rec = math.cos(th) * np.array([0, 0, 1.0]) + math.sin(th) * (math.cos(ph) * h + math.sin(ph) * n)
        np.testing.assert_allclose(k_rec, k, atol=1e-12)
        assert 0 < ph < math.pi


def test_target_angles_batched():
    irs = torch.tensor([[[-5.0, 10, 0], [-5, 20, 0]]] * 3)
    yaw = torch.zeros(3, 2, dtype=torch.float64)
    tgt = torch.tensor([[5.0, 15, 0], [5, 15, 3], [2, 12, -1]])
    th, ph, d, _ = target_angles(irs, yaw, tgt)
    assert th.shape == (3, 2)
    for b in range(3):
        for l in range(2):
            t1, p1, d1, _ = direction_angles(irs[b, l], yaw[b, l], tgt[b])
            assert torch.allclose(torch.stack([th[b, l], ph[b, l], d[b, l]]), torch.stack([t1, p1, d1]))


def test_path_loss_and_channel_power():
    """PL(d) = C0 d^-alpha; the Rician channel's mean entry power is PL(d_BI) (K/(K+1) + 1/(K+1))."""
    assert abs(path_loss(torch.tensor(10.0, dtype=torch.float64), -30.0, 2.2).item() - 1e-3 * 10**-2.2) < 1e-18
    s = paper_scenario(seed=3, M=32, N_h=8, N_v=8)
    d = np.linalg.norm(s.irs_pos.numpy() - s.bs_pos.numpy()[None], axis=-1)
    pl = 1e-3 * d**-2.2
    p = (s.G.abs() ** 2).mean(dim=(-1, -2)).numpy() / pl
    # NLoS part: 2048 i.i.d. entries of variance 1/(K+1) ~ 0.24 -> std of the mean ~0.01 (plus LoS cross terms)
    np.testing.assert_allclose(p, 1.0, atol=0.08)
    # The LoS part is rank one: the leading singular value carries >= K/(K+1) of the energy (minus noise).
    sv = torch.linalg.svdvals(s.G)
    frac = (sv[:, 0] ** 2 / (sv**2).sum(-1)).numpy()
    K = 10**0.5
    assert (frac > 0.9 * K / (K + 1)).all()


def test_channels_reproducible_from_seed():
    a, b, c = paper_scenario(seed=7), paper_scenario(seed=7), paper_scenario(seed=8)
    assert torch.equal(a.G, b.G) and torch.equal(a.beta, b.beta)
    assert not torch.equal(a.G, c.G)
    r1, r2 = random_scenario(11), random_scenario(11)
    assert torch.equal(r1.G, r2.G) and torch.equal(r1.target_pos, r2.target_pos)
    assert r1.seed == 11 and r1.preset == "random"


def test_cophasing_psi_maximises_the_cascade_gain_and_backs_every_aligned_psi():
    """|a^T diag(psi) G w| <= sum_n |a_n (G w)_n| for unit-modulus psi (triangle inequality); the
    co-phasing psi attains it, random phases do not, and the three "aligned" helpers are built on it."""
    from irs_torch.learn.feasibility import aligned_reference
    from irs_torch.physics import cophasing_psi
    from irs_torch.solvers.baselines import aligned_phases, aligned_psi

    s = random_scenario(seed=5).to(torch.complex128)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(s.L, s.M, 2, dtype=torch.float64, generator=g)
    w = torch.complex(w[..., 0], w[..., 1])
    psi = cophasing_psi(s, w)
    assert psi.shape == (s.L, s.N) and torch.allclose(psi.abs(), torch.ones(()).double())
    a = torch.from_numpy(np.stack([ref.steering(float(s.theta[l]), float(s.phi[l]), s.N_h, s.N_v, s.d_h, s.d_v)
                                   for l in range(s.L)]))
    Gw = (s.G @ w.unsqueeze(-1)).squeeze(-1)
    bound = (a * Gw).abs().sum(-1)
    gain = lambda p: (a * p * Gw).sum(-1).abs()  # noqa: E731
    torch.testing.assert_close(gain(psi), bound, rtol=1e-12, atol=0.0)
    for _ in range(20):
        ph = 2 * math.pi * torch.rand(s.L, s.N, dtype=torch.float64, generator=g)
        assert (gain(torch.polar(torch.ones_like(ph), ph)) < bound).all()
    # the helpers: AO start (principal eigenvector of R_s), learned reference and aligned design
    # (principal right singular vector of G); a common phase per IRS is free (docs/assumptions.md "Modelling facts")
    R = w.unsqueeze(-1) @ w.conj().unsqueeze(-2)  # rank one: principal eigenvector = w / |w|

    def same(p, q):  # equal up to one common phase per IRS
        torch.testing.assert_close((p * q.conj()).sum(-1).abs(), torch.full((s.L,), float(s.N), dtype=torch.float64),
                                   rtol=1e-10, atol=0.0)

    same(aligned_phases(s, R), psi)
    v1 = torch.linalg.svd(s.G)[2][..., 0, :].conj()
    same(aligned_reference(s), cophasing_psi(s, v1))
    p3 = aligned_psi(s, s.isotropic_design())
    same(p3 / p3.abs(), cophasing_psi(s, v1))

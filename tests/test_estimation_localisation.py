"""Localisation: Stansfield intersection, the angle/position Jacobian and the PEB, checked against
an independent Slepian-Bangs FIM in the position parameterisation (finite differences of the echo
mean, numpy)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irs_torch import from_geometry, paper_scenario
from irs_torch.estimation.localisation import (
    angle_covariance_bound,
    angle_position_jacobian,
    position_error_bound,
    stansfield,
)
from irs_torch.solvers.baselines import aligned_psi

import reference as ref


def _angles_np(p, yaw, x):
    """theta from the IRS vertical axis, phi from its horizontal axis (docs/assumptions.md "Geometry and angles")."""
    h = np.array([-math.sin(yaw), math.cos(yaw), 0.0])
    v = np.array([0.0, 0.0, 1.0])
    n = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    k = (x - p) / np.linalg.norm(x - p)
    return math.acos(k @ v), math.atan2(k @ n, k @ h)


def _geometry_3d(seed):
    """Three yawed IRSs at different heights, target off their common plane (theta != 90 deg)."""
    g = np.random.default_rng(seed)
    irs = np.array([[-5.0, 8.0, 1.0], [-5.5, 16.0, -0.5], [-4.0, 24.0, 2.0]]) + g.uniform(-1, 1, (3, 3))
    yaw = g.uniform(-0.3, 0.3, 3)
    tgt = np.array([4.0, 15.0, 1.5]) + g.uniform(-2, 2, 3)
    return irs, yaw, tgt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jacobian_matches_finite_differences(seed):
    irs, yaw, tgt = _geometry_3d(seed)
    J = angle_position_jacobian(torch.from_numpy(irs), torch.from_numpy(yaw), torch.from_numpy(tgt)).numpy()
    for l in range(3):
        for i in range(3):
            e = np.zeros(3)
            e[i] = 1e-4
            fd = ref.richardson_derivative(lambda t: np.array(_angles_np(irs[l], yaw[l], tgt + t * e / 1e-4)),
                                           0.0, 1e-4)
            np.testing.assert_allclose(J[l, :, i], fd, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stansfield_recovers_exact_bearings(seed):
    irs, yaw, tgt = _geometry_3d(seed)
    ang = np.array([_angles_np(irs[l], yaw[l], tgt) for l in range(3)])
    for var in (None, torch.tensor([1e-4, 4e-4, 2e-4])):
        x = stansfield(torch.from_numpy(irs), torch.from_numpy(yaw), torch.from_numpy(ang[:, 0]),
                       torch.from_numpy(ang[:, 1]), var, var)
        np.testing.assert_allclose(x.numpy(), tgt, atol=1e-9)
    # two IRSs are enough; one is refused
    x2 = stansfield(torch.from_numpy(irs[:2]), torch.from_numpy(yaw[:2]), torch.from_numpy(ang[:2, 0]),
                    torch.from_numpy(ang[:2, 1]))
    np.testing.assert_allclose(x2.numpy(), tgt, atol=1e-9)
    with pytest.raises(ValueError, match="at least 2 IRSs, got L=1"):
        stansfield(torch.from_numpy(irs[:1]), torch.from_numpy(yaw[:1]), torch.tensor([1.0]), torch.tensor([1.0]))


def test_stansfield_minimises_the_weighted_line_distances():
    """With perturbed bearings the estimate is the minimiser of sum_l w_l dist_l(x)^2 (scipy check)."""
    from scipy.optimize import minimize

    irs, yaw, tgt = _geometry_3d(5)
    noise = 0.02 * np.random.default_rng(0).standard_normal((3, 2))
    ang = np.array([_angles_np(irs[l], yaw[l], tgt) for l in range(3)]) + noise
    x = stansfield(torch.from_numpy(irs), torch.from_numpy(yaw), torch.from_numpy(ang[:, 0]),
                   torch.from_numpy(ang[:, 1]), iterations=0).numpy()

    def cost(y):
        c = 0.0
        for l in range(3):
            th, ph = ang[l]
            h = np.array([-math.sin(yaw[l]), math.cos(yaw[l]), 0.0])
            n = np.array([math.cos(yaw[l]), math.sin(yaw[l]), 0.0])
            v = np.array([0.0, 0.0, 1.0])
            k = math.sin(th) * math.cos(ph) * h + math.cos(th) * v + math.sin(th) * math.sin(ph) * n
            e_t = math.cos(th) * math.cos(ph) * h - math.sin(th) * v + math.cos(th) * math.sin(ph) * n
            e_p = np.cross(k, e_t)  # unit, orthogonal to k and e_theta
            r = y - irs[l]
            c += (r @ e_t) ** 2 + (r @ e_p) ** 2 / math.sin(th) ** 2  # equal unit variances, d = 1
        return c

    y = minimize(cost, tgt, method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose(x, y, atol=1e-6)


def _peb_reference(s, R, psi, known_height=False, step=1e-4):
    """PEB from the Slepian-Bangs FIM of all IRSs' echoes in (x, y, z, Re b_l, Im b_l): the echo mean
    of IRS l is beta_l G^T Psi a(x) a(x)^T Psi G S with (theta_l, phi_l) computed from the position,
    derivatives by Richardson central differences, beta_l = |beta_l0| (b_r + j b_i)."""
    irs, yaw, tgt = s.irs_pos.numpy(), s.irs_yaw.numpy(), s.target_pos.numpy()
    L = s.L
    D = 2 if known_height else 3
    P = D + 2 * L
    F = np.zeros((P, P))
    rng = np.random.default_rng(0)
    for l in range(L):
        G, p = s.G[l].numpy(), psi[l].numpy()
        S = ref.waveform(R[l].numpy(), int(s.T_L), rng)
        b0 = complex(s.beta[l])
        Lc = np.linalg.cholesky(ref.noise_covariance_rw(G, p, s.sigma_r2, s.sigma_b2))

        def mean(x, b):
            th, ph = _angles_np(irs[l], yaw[l], x)
            return ref.echo_mean((th, ph, b.real, b.imag), G, p, S, s.N_h, s.N_v, s.d_h, s.d_v)

        cols = []
        for i in range(D):
            e = np.zeros(3)
            e[i] = 1.0
            cols.append(ref.richardson_derivative(lambda t: mean(tgt + t * e, b0), 0.0, step))
        dcols = [np.zeros_like(cols[0])] * (2 * L)
        dcols[2 * l] = mean(tgt, abs(b0) + 0j) / 1.0  # d/d b_r of |b0|(b_r + j b_i) (linear in beta)
        dcols[2 * l + 1] = mean(tgt, 1j * abs(b0))
        Dm = np.stack(cols + dcols, 1)  # (M T_L, P)
        T = int(s.T_L)
        Dw = np.linalg.solve(Lc, Dm.reshape(s.M, T, P, order="F").reshape(s.M, T * P)).reshape(s.M, T, P)
        Dw = Dw.reshape(s.M * T, P)
        F += 2 * np.real(Dw.conj().T @ Dw)
    d = 1 / np.sqrt(np.diag(F))
    Finv = np.linalg.inv(d[:, None] * F * d[None, :]) * d[:, None] * d[None, :]
    return math.sqrt(np.trace(Finv[:D, :D]))


def _cases():
    s = paper_scenario(0)  # target in the IRSs' plane z = 0: theta = 90 deg
    R = s.isotropic_design()
    yield "paper", s, R, aligned_psi(s, R)
    irs, yaw, tgt = _geometry_3d(3)
    s3 = from_geometry(bs_pos=[0.0, 0.0, 0.0], irs_pos=irs, irs_yaw=yaw, target_pos=tgt,
                                M=8, N_h=3, N_v=4, seed=4, T_c=60)
    R3 = s3.isotropic_design()
    yield "3-d", s3, R3, s3.random_phase_design(R3, seed=2)


@pytest.mark.parametrize("known_height", [False, True])
def test_peb_equals_finite_difference_slepian_bangs(known_height):
    for name, s, R, psi in _cases():
        peb = position_error_bound(s, R, psi, known_height=known_height)
        want = _peb_reference(s, R, psi, known_height)
        assert math.isfinite(peb) and peb > 0, name
        assert math.isclose(peb, want, rel_tol=1e-5), (name, peb, want)


def test_angle_covariance_diagonal_is_the_crb():
    s = paper_scenario(2)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=1)
    C = angle_covariance_bound(s, R, psi)
    c = s.crb(R, psi)
    torch.testing.assert_close(C[:, 0, 0], c.theta, rtol=1e-9, atol=0)
    torch.testing.assert_close(C[:, 1, 1], c.phi, rtol=1e-9, atol=0)
    torch.testing.assert_close(C, C.transpose(-1, -2))


def test_peb_on_the_paper_scenario_is_finite_and_2d_is_smaller():
    s = paper_scenario(0)
    R = s.isotropic_design()
    psi = aligned_psi(s, R)
    p3 = position_error_bound(s, R, psi)
    p2 = position_error_bound(s, R, psi, known_height=True)
    assert math.isfinite(p3) and 0 < p2 < p3
    with pytest.raises(ValueError, match="needs the scenario geometry"):
        position_error_bound(s.replace(irs_pos=None, target_pos=None), R, psi)

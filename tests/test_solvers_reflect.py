"""P3: the Theta-model and its linearisation (our derivation, docs/assumptions.md item 4), the SDR and its
rounding, and both reflective methods.

Independent references: tests/reference.py (closed-form FIM and dense C1 in numpy) and a hand
derivation, here, of the directional derivatives of Fhat and C1 in Theta.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from irs_torch import paper_scenario
from irs_torch.solvers import reflect as P
from irs_torch.solvers import reflect_sdr as S
from irs_torch.solvers import theta_model as T
from irs_torch.solvers.transmit import FIM_ENTRIES

import reference as ref


@pytest.fixture(scope="module")
def small():
    return paper_scenario(2, M=4, N_h=2, N_v=2)


def _herm(gen, n, like):
    D = torch.randn(n, n, dtype=torch.complex128, generator=gen)
    D = 0.5 * (D + D.conj().T)
    return D / D.norm() * like.norm()


def _ref_fhat(s, l, psi, R):
    """Fhat from the reference closed-form SI FIM: Fhat = J^-1 F J^-1 / c."""
    b = complex(s.beta[l])
    F = ref.closed_form_fim(s.G[l].numpy(), psi, R, float(s.theta[l]), float(s.phi[l]), b, s.sigma_r2,
                            s.sigma_b2, s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
    c = 2 * s.T_L * abs(b) ** 2 / s.sigma_b2
    Ji = np.diag([1, 1, abs(b), abs(b)])
    return Ji @ F @ Ji / c


def test_theta_model_equals_reference_at_rank_one(small):
    s = small
    rng = np.random.default_rng(1)
    R = np.stack([ref.random_psd(rng, s.M, trace=float(s.P_t)) for _ in range(s.L)])
    psi = ref.crandn(rng, (s.L, s.N)) * 3.0
    for l in range(s.L):
        m = T.IRSModel.from_scenario(s, torch.from_numpy(R), l)
        Th = torch.from_numpy(np.outer(psi[l], psi[l].conj()))
        F_ref = _ref_fhat(s, l, psi[l], R[l])
        assert np.allclose(m.fim(Th).numpy(), F_ref, rtol=1e-10, atol=1e-12 * np.abs(F_ref).max())
        p_ref = ref.irs_power_dense(s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]),
                                    complex(s.beta[l]), s.sigma_r2, s.N_h, s.N_v, s.d_h, s.d_v).sum()
        assert float(m.irs_power(Th)) == pytest.approx(p_ref, rel=1e-12)


def test_linearisation_error_is_second_order(small):
    """|f(Theta0 + t D) - lin(Theta0 + t D)| shrinks like t^2 along random Hermitian directions."""
    s = small
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=3)
    gen = torch.Generator().manual_seed(0)
    for l in range(s.L):
        m = T.IRSModel.from_scenario(s, R, l)
        Th0 = torch.outer(psi[l], psi[l].conj())
        f0, J, x0 = m.linearize(Th0)
        D = _herm(gen, s.N, Th0)

        def err(t):
            Th = Th0 + t * D
            ex = torch.stack([m.fim(Th)[p, q] for p, q in FIM_ENTRIES] + [m.irs_power(Th)])
            return (ex - (f0 + J @ (T.vec_real(Th) - x0))).abs() / f0.abs().max()

        e1, e2 = err(1e-2), err(5e-3)
        big = e1 > 1e-12
        assert big.any()
        ratio = (e1[big] / e2[big])
        assert ((ratio > 3.5) & (ratio < 4.5)).all(), ratio


def _hand_derivatives(s, l, R, psi, D):
    """Directional derivatives of Fhat_00 (theta-theta) and of C1 at Theta0 = psi psi^H along D,
    derived by hand with the product rule, for sigma_r2 = 0 (W = I):
    Fhat_00 = Re tr(K A K B) with K = [[0,1,0],[1,0,0],[0,0,0]], A_ij = x_i^H x_j, B_ij = x_i^T R x_j^*,
    dA_ij = sum_ab conj(E_i)_ma E_j,mb conj(D_ab), dB_ij = sum_ab (E_i^T R E_j^*)_ab D_ab;
    C1 = |b|^2 tr(Th) B_00 + sum_n Th_nn [G R G^H]_nn  (sigma_r2 = 0)."""
    G = s.G[l].numpy()
    a = ref.steering(float(s.theta[l]), float(s.phi[l]), s.N_h, s.N_v, s.d_h, s.d_v)
    dt, dp = ref.steering_derivatives_analytic(float(s.theta[l]), float(s.phi[l]), s.N_h, s.N_v, s.d_h, s.d_v)
    E = [G.T @ np.diag(v) for v in (a, dt, dp)]
    Th0 = np.outer(psi, psi.conj())
    A = np.array([[np.sum(E[i].conj().T @ E[j] * Th0.conj()) for j in range(3)] for i in range(3)])
    B = np.array([[np.sum(E[i].T @ R @ E[j].conj() * Th0) for j in range(3)] for i in range(3)])
    dA = np.array([[np.sum(E[i].conj().T @ E[j] * D.conj()) for j in range(3)] for i in range(3)])
    dB = np.array([[np.sum(E[i].T @ R @ E[j].conj() * D) for j in range(3)] for i in range(3)])
    K = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    dF00 = np.trace(K @ dA @ K @ B + K @ A @ K @ dB).real
    b2 = abs(complex(s.beta[l])) ** 2
    gRg = np.real(np.diag(G @ R @ G.conj().T))
    dC1 = b2 * (np.trace(D).real * B[0, 0].real + np.trace(Th0).real * dB[0, 0].real) + np.sum(np.diag(D).real * gRg)
    return dF00, dC1


def test_linearisation_matches_hand_derivation(small):
    s = small.replace(sigma_r2=0.0)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=5)
    gen = torch.Generator().manual_seed(2)
    for l in range(s.L):
        m = T.IRSModel.from_scenario(s, R, l)
        Th0 = torch.outer(psi[l], psi[l].conj())
        _, J, _ = m.linearize(Th0)
        for _ in range(3):
            D = _herm(gen, s.N, Th0)
            dF00, dC1 = _hand_derivatives(s, l, R[l].numpy(), psi[l].numpy(), D.numpy())
            x = T.vec_real(D)
            assert float(J[0] @ x) == pytest.approx(dF00, rel=1e-9)
            assert float(J[8] @ x) == pytest.approx(dC1, rel=1e-9)


def test_sdr_value_never_exceeds_rounded_linearised_value(small):
    """The SDR optimum is a lower bound of the linearised problem: every rank-one candidate that
    is feasible for the linearised constraints (and the linearisation point itself) has a
    linearised objective >= the SDP value."""
    s = small
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=1)
    for l in range(s.L):
        m = T.IRSModel.from_scenario(s, R, l)
        lin = S.sdr_step(m, psi[l], delta_rel=0.5)
        assert lin.Theta is not None
        tol = 1e-6 * max(1.0, abs(lin.value))
        Th0 = torch.outer(psi[l], psi[l].conj())
        assert lin.value <= float(lin.objective(Th0.unsqueeze(0))[0]) + tol
        gen = torch.Generator().manual_seed(l)
        cands = S.gaussian_randomization(lin.Theta, 200, gen)
        # normalise the amplitude as in the paper (max |psi_n| = a_max) and keep those feasible
        # for the linearised problem: diag <= a_max^2, linearised C1 <= P_s, trust region
        cands = cands * (s.a_max / cands.abs().amax(-1, keepdim=True))
        checked = 0
        for f in (1.0, 0.7, 0.5, 0.3):
            Th = torch.einsum("kn,km->knm", f * cands, (f * cands).conj())
            c1 = lin.irs_power(Th)
            x = torch.stack([T.vec_real(t) for t in Th]) / lin.scale_T
            tr_ok = (x - lin.x0 / lin.scale_T).norm(dim=-1) <= 0.5 * (lin.x0 / lin.scale_T).norm() * (1 - 1e-9)
            ok = (c1 <= s.P_s) & tr_ok
            if ok.any():
                vals = lin.objective(Th[ok])
                assert (lin.value <= vals + tol).all()
                checked += int(ok.sum())
        assert checked > 0


@pytest.mark.parametrize("method", ["first-order", "sca-sdr"])
def test_p3_never_worse_and_feasible(small, method):
    s = small
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=0)
    before = s.crb(R, psi).total
    if method == "first-order":
        res = P.solve_reflect_first_order(s, R, psi, steps=40, n_starts=3)
    else:
        res = S.solve_reflect_sca(s, R, psi, max_iter=4, n_randomizations=20)
    assert (res.crb <= before * (1 + 1e-12)).all()
    assert (res.crb < before).any()
    assert bool(s.is_feasible(R, res.psi, rtol=1e-9))


def test_p3_passive_keeps_unit_modulus(small):
    from irs_torch.solvers.baselines import passive_scenario

    s = passive_scenario(small)
    R = s.isotropic_design()
    psi = torch.polar(torch.ones(s.L, s.N, dtype=torch.float64),
                      torch.rand(s.L, s.N, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    before = s.crb(R, psi.to(torch.complex128)).total
    for res in (P.solve_reflect_first_order(s, R, psi, steps=30, n_starts=2),
                S.solve_reflect_sca(s, R, psi, max_iter=3, n_randomizations=20)):
        assert torch.allclose(res.psi.abs(), torch.ones(s.L, s.N, dtype=torch.float64), atol=1e-12)
        assert (res.crb <= before * (1 + 1e-12)).all()


def test_gaussian_randomization_is_seeded(small):
    Th = torch.eye(small.N, dtype=torch.complex128)
    a = S.gaussian_randomization(Th, 5, torch.Generator().manual_seed(3))
    b = S.gaussian_randomization(Th, 5, torch.Generator().manual_seed(3))
    c = S.gaussian_randomization(Th, 5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)

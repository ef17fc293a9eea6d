"""P2 (transmit SDP): the linear maps it is built from, optimality, feasibility, solver agreement.

Reference values come from tests/reference.py (numpy, written from the paper independently of
irs_torch) or from properties (random feasible designs never beat the SDP optimum).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from irs_torch import crb as crb_mod
from irs_torch import paper_scenario
from irs_torch.solvers import transmit as T

import reference as ref


@pytest.fixture(scope="module")
def small():
    return paper_scenario(3, M=4, N_h=2, N_v=2)


def _psi(s, seed=0, scale=1.0):
    return s.random_phase_design(seed=seed) * scale


def test_fim_coefficient_matrices_match_closed_form_fim(small):
    """Fhat(R) = [tr(H_pq R)] reproduces the dense closed-form FIM (15)-(16) of the reference."""
    s = small
    rng = np.random.default_rng(5)
    R = np.stack([ref.random_psd(rng, s.M, trace=float(s.P_t)) for _ in range(s.L)])
    psi = ref.crandn(rng, (s.L, s.N)) * 2.0
    H = crb_mod.fim_coefficient_matrices(s.G, torch.from_numpy(psi), s.theta, s.phi, s.beta, s.sigma_r2,
                                         s.sigma_b2, s.N_h, s.N_v, s.d_h, s.d_v)
    for l in range(s.L):
        Fh = torch.einsum("pqmn,nm->pq", H[l], torch.from_numpy(R[l])).real.numpy()
        b = complex(s.beta[l])
        c = 2 * s.T_L * abs(b) ** 2 / s.sigma_b2
        J = np.diag([1, 1, 1 / abs(b), 1 / abs(b)])
        F_si = c * J @ Fh @ J
        F_ref = ref.closed_form_fim(s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]), b,
                                    s.sigma_r2, s.sigma_b2, s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
        d = np.sqrt(np.outer(np.diag(F_ref), np.diag(F_ref)))
        assert np.max(np.abs(F_si - F_ref) / d) < 1e-10
        # H_pq Hermitian
        Hl = H[l]
        assert torch.allclose(Hl, Hl.conj().transpose(-1, -2), atol=1e-12 * float(Hl.abs().max()))


def test_irs_power_matrix_matches_dense_c1(small):
    s = small
    rng = np.random.default_rng(6)
    R = np.stack([ref.random_psd(rng, s.M, trace=float(s.P_t)) for _ in range(s.L)])
    psi = ref.crandn(rng, (s.L, s.N)) * 3.0
    Q, c0 = crb_mod.irs_power_matrix(s.G, torch.from_numpy(psi), s.theta, s.phi, s.beta, s.sigma_r2, s.N_h, s.N_v)
    for l in range(s.L):
        dense = ref.irs_power_dense(s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]),
                                    complex(s.beta[l]), s.sigma_r2, s.N_h, s.N_v, s.d_h, s.d_v).sum()
        ours = float(torch.einsum("mn,nm->", Q[l], torch.from_numpy(R[l])).real + c0[l])
        assert ours == pytest.approx(dense, rel=1e-12)


def test_real_coefficients_layout():
    """c @ [vec_F(Re R); vec_F(Im R)] = Re tr(H R) for arbitrary complex H and R."""
    rng = np.random.default_rng(0)
    H = ref.crandn(rng, (5, 5))
    R = ref.crandn(rng, (5, 5))
    x = np.concatenate([R.real.reshape(-1, order="F"), R.imag.reshape(-1, order="F")])
    assert T.real_coefficients(H) @ x == pytest.approx(np.trace(H @ R).real, rel=1e-12)


def test_crb_gradient_matches_finite_differences(small):
    s = small
    psi = _psi(s)
    R = s.isotropic_design()
    H = crb_mod.fim_coefficient_matrices(s.G, psi, s.theta, s.phi, s.beta, s.sigma_r2, s.sigma_b2, s.N_h, s.N_v)
    b2 = s.beta.abs() ** 2
    c = crb_mod.fim_scale(s.beta, s.sigma_b2, s.T_L)
    g = torch.stack([torch.ones_like(b2), torch.ones_like(b2), b2, b2], -1) / c[:, None]
    G = T.crb_gradient(H, R, g)
    gen = torch.Generator().manual_seed(1)
    D = torch.randn(s.L, s.M, s.M, dtype=torch.complex128, generator=gen)
    D = 0.5 * (D + D.conj().transpose(-1, -2))
    h = 1e-4 * float(s.P_t)
    fd = (s.crb(R + h * D, psi).total - s.crb(R - h * D, psi).total) / (2 * h)
    an = torch.einsum("lmn,lnm->l", G, D).real
    assert torch.allclose(fd, an, rtol=1e-6)


@pytest.mark.parametrize("subspace", [None, 3])
def test_p2_feasible_and_beats_random_feasible_designs(small, subspace):
    """The SDP optimum is feasible by the torch model's own check and no random feasible R_s
    (PSD, scaled into the BS budget and C1) does better."""
    s = small
    psi = _psi(s, seed=2)
    res = T.solve_transmit_sdp(s, psi, subspace=subspace)
    assert bool(s.is_feasible(res.R_s, psi, rtol=1e-6))
    assert torch.allclose(res.crb, s.crb(res.R_s, psi).total)
    assert res.gap_bound <= 1e-4 * res.max_crb
    rng = np.random.default_rng(0)
    best_random = np.inf
    for k in range(200):
        rank = 1 + k % s.M
        R = torch.from_numpy(np.stack([ref.random_psd(rng, s.M, trace=float(s.P_t), rank=rank)
                                       for _ in range(s.L)]))
        R, _ = T.repair_transmit(s, psi, R)
        best_random = min(best_random, float(s.max_crb(R, psi)))
    assert res.max_crb <= best_random
    assert res.max_crb <= float(s.max_crb(s.isotropic_design(), psi))


def test_p2_is_locally_optimal(small):
    """Feasible perturbations of the P2 point (then repaired to feasibility) never improve it."""
    s = small
    psi = _psi(s, seed=4)
    res = T.solve_transmit_sdp(s, psi)
    gen = torch.Generator().manual_seed(3)
    for _ in range(30):
        D = torch.randn(s.L, s.M, s.M, dtype=torch.complex128, generator=gen)
        D = D @ D.conj().transpose(-1, -2) - 0.5 * torch.eye(s.M, dtype=torch.complex128)
        R2, _ = T.repair_transmit(s, psi, res.R_s + 1e-3 * float(s.P_t) / s.M * D)
        assert float(s.max_crb(R2, psi)) >= res.max_crb * (1 - 1e-6)


def test_subspace_p2_matches_full_p2(small):
    s = paper_scenario(1, M=6, N_h=2, N_v=2)
    psi = _psi(s, seed=1)
    full = T.solve_transmit_sdp(s, psi, subspace=None)
    sub = T.solve_transmit_sdp(s, psi, subspace=4)
    assert sub.max_crb == pytest.approx(full.max_crb, rel=1e-4)


def test_scs_and_clarabel_agree_on_p2(small):
    s = small
    psi = _psi(s, seed=7)
    a = T.solve_transmit_sdp(s, psi, solver="CLARABEL", fallback=False, subspace=None)
    b = T.solve_transmit_sdp(s, psi, solver="SCS", eps=1e-8, fallback=False, subspace=None)
    assert a.solver == "CLARABEL" and b.solver == "SCS"
    assert b.max_crb == pytest.approx(a.max_crb, rel=1e-3)


def test_p2_rejects_c1_impossible_psi(small):
    """psi so large that the IRS's own amplified noise exceeds P_s: clear error naming P_s."""
    s = small.replace(P_s=1e-9)
    psi = torch.full((s.L, s.N), 8.0, dtype=torch.complex128)
    with pytest.raises(ValueError, match="P_s"):
        T.solve_transmit_sdp(s, psi)


def test_p2_rejects_zero_psi(small):
    psi = torch.zeros(small.L, small.N, dtype=torch.complex128)
    with pytest.raises(ValueError, match="singular"):
        T.solve_transmit_sdp(small, psi)


def test_repair_scales_back_violations(small):
    s = small
    psi = _psi(s, seed=3)
    R = 3.0 * s.isotropic_design()  # violates the BS budget (and C1)
    R2, info = T.repair_transmit(s, psi, R)
    assert info["bs"] > 0
    assert bool(s.is_feasible(R2, psi, rtol=1e-9))


def test_no_full_space_fallback_above_the_memory_bound(monkeypatch):
    # a subspace P2 that fails goes to the full space (k = M) only while the conic solver's dense PSD scalings fit
    # FULL_SPACE_MAX_BYTES (at M = 128 Clarabel aborted the process on an 8.6 GB allocation); above it, P2 fails
    # cleanly and the caller keeps its point
    import irs_torch.solvers.transmit as tr
    from irs_torch.scenario import random_scenario

    s = random_scenario(seed=2, M=16, N_h=2, N_v=2).to(torch.complex128)
    R0 = s.isotropic_design()
    psi = s.scale_psi_to_feasible(R0, s.random_phase_design(R0, seed=0))
    ks = []
    real = tr.solve_in_subspace

    def failing_subspace(pb, V, k, *a, **kw):
        ks.append(k)
        return (None, 0.0) if k < pb.R_ref.shape[-1] else real(pb, V, k, *a, **kw)

    monkeypatch.setattr(tr, "solve_in_subspace", failing_subspace)
    res = tr.solve_transmit_sdp(s, psi, R_ref=R0, subspace=4)
    assert ks == [4, 16] and not res.failed  # within the bound: the full space is tried and solves it
    ks.clear()
    monkeypatch.setattr(tr, "FULL_SPACE_MAX_BYTES", tr.full_space_bytes(16, s.L) - 1)
    res = tr.solve_transmit_sdp(s, psi, R_ref=R0, subspace=4)
    assert ks == [4] and res.failed  # above it: no full-space solve, a clean failure


def test_the_full_space_bound_admits_m64_and_refuses_m128():
    import irs_torch.solvers.transmit as tr

    assert tr.full_space_bytes(128, 2) > tr.FULL_SPACE_MAX_BYTES >= tr.full_space_bytes(64, 2)

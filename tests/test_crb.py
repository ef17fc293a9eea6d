"""The FIM / CRB / C1 of irs_torch.crb against independent derivations (tests/reference.py).

Reference FIM: the generic Slepian-Bangs formula (14) applied to the vectorised echo model
(8)-(13) with an explicit waveform and finite-difference derivatives of the echo mean; no closed
form. Reference C1: a Monte Carlo of the IRS outputs (5)-(6).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irs_torch import Scenario, from_geometry, random_scenario
from irs_torch import crb as crbmod

import reference as ref

FIM_RTOL = 1e-7  # per entry, relative to sqrt(F_pp F_qq); FD error measured ~3e-10


def _scenarios():
    """Scenarios covering: random geometries (theta = 90 deg), a dominant amplification noise
    (sigma_r2 large, so R_w depends on psi), a non-square array with d_h != d_v and a target off the
    horizontal plane (theta != 90 deg, so every term of (26) matters), and a passive IRS."""
    off_plane = from_geometry(bs_pos=[0, 0, 0], irs_pos=[[-5, 10, 1.0], [-4, 21, -2.0]],
                                       irs_yaw=[0.2, -0.3], target_pos=[4, 14, 4.0], M=12, N_h=5, N_v=3,
                                       d_h=0.37, d_v=0.61, seed=4, T_c=60)
    return {
        "random-1": random_scenario(1),
        "random-2": random_scenario(2),
        "random-3-noisy-irs": random_scenario(3, sigma_r2=1e-7),
        "off-plane-5x3": off_plane,
        "passive": random_scenario(5, active=False, sigma_r2=0.0),
    }


SCENARIOS = _scenarios()


def _ref_fims(s, R, psi, conj_beta=None):
    out = []
    for l in range(s.L):
        args = (s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]), complex(s.beta[l]),
                float(s.sigma_r2), float(s.sigma_b2), s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
        if conj_beta is None:
            out.append(ref.slepian_bangs_fim(*args, rng=np.random.default_rng(l)))
        else:
            out.append(ref.closed_form_fim(*args, conj_beta=conj_beta))
    return np.stack(out)


def _entry_err(F, Fr):
    d = np.sqrt(np.abs(np.diagonal(Fr, axis1=-2, axis2=-1)))
    return np.abs(F - Fr) / (d[..., :, None] * d[..., None, :])


def _design(s, seed, psi_scale=3.0):
    R, psi = ref.random_design(s.L, s.M, s.N, float(s.P_t), seed, psi_scale)
    if not s.active:
        psi = psi / np.abs(psi)
    return R, psi


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fim_matches_slepian_bangs_reference(name):
    s = SCENARIOS[name]
    # beta with phases far from 0 and pi, so that the conj(beta) correction (docs/assumptions.md item 1) matters
    s = s.replace(beta=s.beta.abs() * torch.exp(1j * torch.tensor([1.0, -2.2], dtype=torch.float64)))
    R, psi = _design(s, seed=10)
    F = s.fisher_information(torch.from_numpy(R), torch.from_numpy(psi)).numpy()
    Fr = _ref_fims(s, R, psi)
    err = _entry_err(F, Fr)
    assert err.max() < FIM_RTOL, f"{name}: worst relative entry error {err.max():.2e}\n{F}\n{Fr}"
    # The cross terms theta/phi-beta are not negligible, so they are really tested.
    assert (_entry_err(np.zeros_like(Fr), Fr)[:, :2, 2:] > 1e-3).any()


@pytest.mark.parametrize("name", ["random-1", "off-plane-5x3", "passive"])
def test_crb_matches_careful_inverse_of_reference(name):
    s = SCENARIOS[name]
    R, psi = _design(s, seed=11)
    c = s.crb(torch.from_numpy(R), torch.from_numpy(psi))
    Fr = _ref_fims(s, R, psi)
    for l in range(s.L):
        d = ref.trace_inverse(Fr[l])
        np.testing.assert_allclose(c.total[l].item(), d.sum(), rtol=1e-6)
        np.testing.assert_allclose(c.theta[l].item(), d[0], rtol=1e-6)
        np.testing.assert_allclose(c.phi[l].item(), d[1], rtol=1e-6)
        np.testing.assert_allclose(c.beta[l].item(), d[2] + d[3], rtol=1e-6)
        np.testing.assert_allclose(c.angles[l].item(), d[0] + d[1], rtol=1e-6)


def test_conj_beta_correction():
    """docs/assumptions.md item 1: (16e)-(16f) need conj(beta). The closed form with conj(beta) agrees with the
    Slepian-Bangs reference; as printed (beta) the cross entries are wrong while tr(F^-1) is the same
    (an orthogonal rotation of the beta block), so only a test on F itself catches the misprint."""
    s = SCENARIOS["random-2"]
    s = s.replace(beta=s.beta.abs() * torch.exp(1j * torch.tensor([0.8, 2.5], dtype=torch.float64)))
    R, psi = _design(s, seed=12)
    Fr = _ref_fims(s, R, psi)
    Fc = _ref_fims(s, R, psi, conj_beta=True)
    Fp = _ref_fims(s, R, psi, conj_beta=False)
    F = s.fisher_information(torch.from_numpy(R), torch.from_numpy(psi)).numpy()
    assert _entry_err(Fc, Fr).max() < FIM_RTOL
    assert _entry_err(Fp, Fr)[:, :2, 2:].max() > 1e-2
    assert _entry_err(F, Fp)[:, :2, 2:].max() > 1e-2
    for l in range(s.L):
        np.testing.assert_allclose(ref.trace_inverse(Fp[l]).sum(), ref.trace_inverse(Fr[l]).sum(), rtol=1e-6)
    # with a real positive beta the printed and corrected forms coincide
    s0 = s.replace(beta=s.beta.abs().to(s.G.dtype))
    F0 = s0.fisher_information(torch.from_numpy(R), torch.from_numpy(psi)).numpy()
    assert _entry_err(F0, _ref_fims(s0, R, psi, conj_beta=False)).max() < 1e-9


def test_fim_symmetric_positive_definite_and_normalized_form():
    s = SCENARIOS["random-1"]
    R, psi = _design(s, seed=13)
    Rt, pt = torch.from_numpy(R), torch.from_numpy(psi)
    F = s.fisher_information(Rt, pt)
    torch.testing.assert_close(F, F.transpose(-1, -2), rtol=1e-14, atol=0)
    Fh = crbmod.fim_normalized(s.G, pt, Rt, s.theta, s.phi, s.beta, s.sigma_r2, s.sigma_b2, s.N_h, s.N_v,
                               s.d_h, s.d_v)
    assert torch.equal(Fh, Fh.transpose(-1, -2))  # exactly symmetric (Cholesky reads one triangle)
    assert (torch.linalg.eigvalsh(Fh) > 0).all()
    # F_SI = c J Fhat J with c = 2 T_L |beta|^2 / sigma_b2, J = diag(1, 1, 1/|beta|, 1/|beta|)
    b = s.beta.abs()
    c = 2 * s.T_L * b ** 2 / s.sigma_b2
    J = torch.stack([torch.ones_like(b), torch.ones_like(b), 1 / b, 1 / b], -1)
    torch.testing.assert_close(F, c[:, None, None] * J[:, :, None] * Fh * J[:, None, :], rtol=1e-13, atol=0)


def test_scaling_laws():
    """Without amplification noise the FIM is quadratic in psi^2 and linear in R_s:
    CRB(k psi) = CRB(psi) / k^4, CRB(c R_s) = CRB(R_s) / c, and T_c -> 2 T_c halves the CRB."""
    s = SCENARIOS["passive"].replace(active=True)
    R, psi = _design(s, seed=14)
    Rt, pt = torch.from_numpy(R), torch.from_numpy(psi)
    c0 = s.crb(Rt, pt).total
    torch.testing.assert_close(s.crb(Rt, 2.5 * pt).total, c0 / 2.5 ** 4, rtol=1e-10, atol=0)
    torch.testing.assert_close(s.crb(3.0 * Rt, pt).total, c0 / 3.0, rtol=1e-10, atol=0)
    torch.testing.assert_close(s.replace(T_c=2 * s.T_c).crb(Rt, pt).total, c0 / 2, rtol=1e-10, atol=0)
    # with amplification noise, scaling psi helps less than k^4 (the noise grows too)
    sn = SCENARIOS["random-3-noisy-irs"]
    Rn, pn = (torch.from_numpy(x) for x in _design(sn, seed=14))
    ratio = sn.crb(Rn, pn).total / sn.crb(Rn, 2.5 * pn).total
    assert (ratio < 2.5 ** 4 * 0.99).all() and (ratio > 1).all()


def test_phase_invariance():
    """A common phase rotation of psi_l (one per IRS) leaves F and the CRB unchanged
    (docs/assumptions.md "Modelling facts")."""
    s = SCENARIOS["off-plane-5x3"]
    R, psi = _design(s, seed=15)
    Rt, pt = torch.from_numpy(R), torch.from_numpy(psi)
    rot = torch.polar(torch.ones(s.L, 1, dtype=torch.float64), torch.tensor([[0.7], [-2.1]], dtype=torch.float64))
    F0, F1 = s.fisher_information(Rt, pt), s.fisher_information(Rt, pt * rot)
    torch.testing.assert_close(F1, F0, rtol=1e-10, atol=1e-10 * F0.abs().max().item())
    torch.testing.assert_close(s.crb(Rt, pt * rot).total, s.crb(Rt, pt).total, rtol=1e-10, atol=0)
    torch.testing.assert_close(s.irs_power(Rt, pt * rot), s.irs_power(Rt, pt), rtol=1e-12, atol=0)
    # a non-common phase change does change it
    pt2 = pt.clone()
    pt2[:, 0] *= 1j
    assert not torch.allclose(s.crb(Rt, pt2).total, s.crb(Rt, pt).total, rtol=1e-3)


def test_only_the_hermitian_part_of_R_s_matters():
    """R_s is a covariance: adding an anti-Hermitian matrix changes neither F nor the CRB."""
    s = SCENARIOS["random-1"]
    R, psi = _design(s, seed=24)
    Rt, pt = torch.from_numpy(R), torch.from_numpy(psi)
    Z = torch.from_numpy(ref.crandn(np.random.default_rng(0), R.shape))
    K = Z - Z.conj().transpose(-1, -2)  # anti-Hermitian
    F0, F1 = s.fisher_information(Rt, pt), s.fisher_information(Rt + K, pt)
    torch.testing.assert_close(F1, F0, rtol=1e-10, atol=1e-10 * F0.abs().max().item())
    torch.testing.assert_close(s.crb(Rt + K, pt).total, s.crb(Rt, pt).total, rtol=1e-10, atol=0)


def test_zero_psi_gives_inf_without_nan():
    s = SCENARIOS["random-1"]
    R = s.isotropic_design().requires_grad_(True)
    psi = torch.zeros(s.L, s.N, dtype=torch.complex128)
    psi[1] = 0.5 + 0.25j  # IRS 1 off, IRS 2 on
    psi.requires_grad_(True)
    c = s.crb(R, psi)
    assert math.isinf(c.total[0].item()) and c.total[0].item() > 0
    assert math.isinf(c.theta[0].item()) and math.isinf(c.phi[0].item())
    assert torch.isfinite(c.total[1])
    assert not any(torch.isnan(t).any() for t in c)
    # gradients through the inf entry are finite (zero), through the finite one non-zero
    c.total[0].backward(retain_graph=True)
    assert torch.isfinite(psi.grad).all() and torch.isfinite(R.grad).all()
    psi.grad = None
    c.total[1].backward()
    assert torch.isfinite(psi.grad).all() and psi.grad[1].abs().sum() > 0
    # R_s = 0 also gives inf
    assert torch.isinf(s.crb(torch.zeros_like(R), psi.detach()).total).all()
    # irs_power at psi = 0 is 0
    assert s.irs_power(R.detach(), torch.zeros_like(psi))[0].item() == 0.0


def test_passive_scenario():
    s = SCENARIOS["passive"]
    assert float(s.sigma_r2) == 0.0 and not s.active
    R, psi = _design(s, seed=16)
    Rt, pt = torch.from_numpy(R), torch.from_numpy(psi)
    assert torch.isfinite(s.crb(Rt, pt).total).all()
    assert (s.irs_power(Rt, pt) == 0).all()
    m = s.constraint_margins(Rt, pt)
    assert torch.allclose(m["amp"], torch.zeros(s.L, dtype=torch.float64), atol=1e-12)
    feas = s.scale_psi_to_feasible(Rt, 3 * pt)
    torch.testing.assert_close(feas.abs(), torch.ones(s.L, s.N, dtype=torch.float64))


# ----------------------------------------------------------------------------- batching and dtype
def test_batched_equals_looped():
    scs = [random_scenario(20 + i, P_t=10.0 + 5 * i, sigma_r2=10.0 ** (-11 + i)) for i in range(3)]
    b = Scenario.stack(scs)
    assert b.batch_shape == (3,)
    designs = [_design(s, seed=30 + i) for i, s in enumerate(scs)]
    R = torch.from_numpy(np.stack([d[0] for d in designs]))
    psi = torch.from_numpy(np.stack([d[1] for d in designs]))
    cb, Fb, pb = b.crb(R, psi), b.fisher_information(R, psi), b.irs_power(R, psi)
    for i, s in enumerate(scs):
        ci = s.crb(R[i], psi[i])
        for f in ci._fields:
            torch.testing.assert_close(getattr(cb, f)[i], getattr(ci, f), rtol=1e-12, atol=0)
        torch.testing.assert_close(Fb[i], s.fisher_information(R[i], psi[i]), rtol=1e-12, atol=0)
        torch.testing.assert_close(pb[i], s.irs_power(R[i], psi[i]), rtol=1e-12, atol=0)
        torch.testing.assert_close(b.bs_power(R)[i], s.bs_power(R[i]))
        torch.testing.assert_close(b[i].crb(R[i], psi[i]).total, ci.total, rtol=1e-12, atol=0)
    # extra leading dims on the design: (K, B, L, ...) against the batched scenario
    K = 2
    R2 = torch.stack([R, 0.5 * R.flip(0)])
    psi2 = torch.stack([psi, 1j * psi.flip(0)])
    c2 = b.crb(R2, psi2).total
    assert c2.shape == (K, 3, scs[0].L)
    for k in range(K):
        for i, s in enumerate(scs):
            torch.testing.assert_close(c2[k, i], s.crb(R2[k, i], psi2[k, i]).total, rtol=1e-12, atol=0)
    # and (K, L, ...) against one unbatched scenario
    c3 = scs[0].crb(R2[:, 0], psi2[:, 0]).total
    torch.testing.assert_close(c3, c2[:, 0], rtol=1e-12, atol=0)


def test_complex64_agrees_with_complex128():
    s = SCENARIOS["random-2"]
    R, psi = _design(s, seed=17)
    c128 = s.crb(torch.from_numpy(R), torch.from_numpy(psi))
    s64 = s.to(torch.complex64)
    c64 = s64.crb(torch.from_numpy(R).to(torch.complex64), torch.from_numpy(psi).to(torch.complex64))
    assert c64.total.dtype == torch.float32
    for f in ("total", "theta", "phi", "beta"):
        np.testing.assert_allclose(getattr(c64, f).double().numpy(), getattr(c128, f).numpy(), rtol=2e-3)
    p64 = s64.irs_power(torch.from_numpy(R).to(torch.complex64), torch.from_numpy(psi).to(torch.complex64))
    np.testing.assert_allclose(p64.double().numpy(), s.irs_power(torch.from_numpy(R), torch.from_numpy(psi)).numpy(),
                               rtol=1e-5)


# ----------------------------------------------------------------------------- gradients
def _small_problem(seed=0, M=3, N_h=3, N_v=2):
    g = torch.Generator().manual_seed(seed)
    N = N_h * N_v

    def cr(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64)) / math.sqrt(2)

    G = cr(2, N, M)
    psi = cr(2, N)
    A = cr(2, M, M)
    R = A @ A.conj().transpose(-1, -2) + 0.1 * torch.eye(M)
    theta = torch.tensor([1.2, 1.7], dtype=torch.float64)
    phi = torch.tensor([0.9, 2.0], dtype=torch.float64)
    beta = torch.tensor([0.6 - 0.3j, -0.2 + 0.8j], dtype=torch.complex128)
    return G, psi, R, theta, phi, beta, N_h, N_v


def test_gradcheck_crb_total():
    G, psi, R, theta, phi, beta, N_h, N_v = _small_problem()

    def f(G, psi, R, theta, phi):
        return crbmod.crb(G, psi, R, theta, phi, beta, 0.3, 1.0, 5.0, N_h, N_v, 0.45, 0.55).total

    inputs = tuple(t.clone().requires_grad_(True) for t in (G, psi, R, theta, phi))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_crb_angles_and_irs_power():
    G, psi, R, theta, phi, beta, N_h, N_v = _small_problem(seed=1)

    def fa(G, psi, R):
        return crbmod.crb(G, psi, R, theta, phi, beta, 0.3, 1.0, 5.0, N_h, N_v, 0.5, 0.5).angles

    def fp(G, psi, R):
        return crbmod.irs_power(G, psi, R, theta, phi, beta, 0.3, N_h, N_v, 0.5, 0.5)

    inputs = tuple(t.clone().requires_grad_(True) for t in (G, psi, R))
    assert torch.autograd.gradcheck(fa, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradcheck(fp, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_noise_ratio_and_broadcasting():
    """Gradients w.r.t. sigma_r2 (a tensor), and with broadcast inputs: one G for a batch of psi and
    R_s (the hand-written backward must sum the broadcast gradient back)."""
    G, psi, R, theta, phi, beta, N_h, N_v = _small_problem(seed=2)
    G1, th1, ph1, b1 = G[0], theta[0], phi[0], beta[0]
    sr = torch.tensor(0.4, dtype=torch.float64)

    def f(G1, psi, R, sr):
        return crbmod.crb(G1, psi, R, th1, ph1, b1, sr, 1.0, 5.0, N_h, N_v, 0.45, 0.55).total

    inputs = tuple(t.clone().requires_grad_(True) for t in (G1, psi, R, sr))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_structured_inverse_matches_generic_inverse():
    """crb() inverts Fhat in closed form (Schur complement of the beta block); it must agree with the
    generic Jacobi + Cholesky :func:`inverse_diagonal` on Fhat, also for rank-one R_s, and both must
    report +inf on the same singular cases."""
    s = SCENARIOS["random-3-noisy-irs"]
    for seed, rank in ((21, None), (22, 1), (23, 2)):
        R, psi = ref.random_design(s.L, s.M, s.N, float(s.P_t), seed, rank=rank)
        Rt, pt = torch.from_numpy(R), torch.from_numpy(psi)
        Fh = crbmod.fim_normalized(s.G, pt, Rt, s.theta, s.phi, s.beta, s.sigma_r2, s.sigma_b2, s.N_h, s.N_v,
                                   s.d_h, s.d_v)
        d, ok = crbmod.inverse_diagonal(Fh)
        assert ok.all()
        c = s.crb(Rt, pt)
        k = float(s.sigma_b2) / (2 * s.T_L * s.beta.abs() ** 2)
        torch.testing.assert_close(c.theta, d[..., 0] * k, rtol=1e-9, atol=0)
        torch.testing.assert_close(c.phi, d[..., 1] * k, rtol=1e-9, atol=0)
        torch.testing.assert_close(c.beta, (d[..., 2] + d[..., 3]) * float(s.sigma_b2) / (2 * s.T_L), rtol=1e-9, atol=0)
    # singular: psi = 0 on one IRS, R_s = 0
    pt0 = pt.clone()
    pt0[0] = 0
    Fh = crbmod.fim_normalized(s.G, pt0, Rt, s.theta, s.phi, s.beta, s.sigma_r2, s.sigma_b2, s.N_h, s.N_v,
                               s.d_h, s.d_v)
    assert crbmod.inverse_diagonal(Fh)[1].tolist() == [False, True]
    assert torch.isinf(s.crb(Rt, pt0).total).tolist() == [True, False]


def test_gradient_matches_reference_finite_difference():
    """d CRB / d Re(psi_n) from autograd vs a finite difference of the numpy reference CRB (closed
    form (16) + careful inverse) on a realistic (SI-scaled) scenario."""
    s = SCENARIOS["random-1"]
    R, psi = _design(s, seed=18)
    pt = torch.from_numpy(psi).requires_grad_(True)
    s.crb(torch.from_numpy(R), pt).total[0].backward()
    l, n, h = 0, 3, 1e-6

    def ref_crb(p):
        F = ref.closed_form_fim(s.G[l].numpy(), p, R[l], float(s.theta[l]), float(s.phi[l]), complex(s.beta[l]),
                                float(s.sigma_r2), float(s.sigma_b2), s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
        return ref.trace_inverse(F).sum()

    e = np.zeros(s.N, dtype=complex)
    e[n] = h
    fd_re = (ref_crb(psi[l] + e) - ref_crb(psi[l] - e)) / (2 * h)
    fd_im = (ref_crb(psi[l] + 1j * e) - ref_crb(psi[l] - 1j * e)) / (2 * h)
    # torch's gradient of a real function of complex z is dL/dRe + j dL/dIm (conjugate Wirtinger x 2)
    g = pt.grad[l, n]
    np.testing.assert_allclose([g.real.item(), g.imag.item()], [fd_re, fd_im], rtol=1e-5)


# ----------------------------------------------------------------------------- power constraints
def _mc_setup():
    """A unit-scale scenario where all four terms of C1 are comparable."""
    g = torch.Generator().manual_seed(3)
    M, N_h, N_v = 4, 3, 2
    G = torch.complex(torch.randn(1, 6, M, generator=g, dtype=torch.float64),
                      torch.randn(1, 6, M, generator=g, dtype=torch.float64)) * 0.5
    s = Scenario(G=G, theta=torch.tensor([1.3]), phi=torch.tensor([0.8]),
                 beta=torch.tensor([0.35 * np.exp(1j * 1.1)]), M=M, N_h=N_h, N_v=N_v, d_h=0.45, d_v=0.55,
                 sigma_r2=0.6, sigma_b2=1.0, T_c=10, P_t=2.0, P_s=10.0, a_max=4.0)
    R, psi = ref.random_design(1, M, 6, 2.0, seed=4, psi_scale=0.8)
    return s, R, psi


def test_irs_power_matches_dense_eq7():
    s, R, psi = _mc_setup()
    p = s.irs_power(torch.from_numpy(R), torch.from_numpy(psi)).numpy()
    terms = ref.irs_power_dense(s.G[0].numpy(), psi[0], R[0], float(s.theta[0]), float(s.phi[0]),
                                complex(s.beta[0]), float(s.sigma_r2), s.N_h, s.N_v, s.d_h, s.d_v)
    np.testing.assert_allclose(p[0], terms.sum(), rtol=1e-12)
    # the s^4 / s^2 split used by the closed-form scaling
    P4, P2 = crbmod.irs_power_coefficients(s.G, torch.from_numpy(psi), torch.from_numpy(R), s.theta, s.phi,
                                           s.beta, s.sigma_r2, s.N_h, s.N_v, s.d_h, s.d_v)
    np.testing.assert_allclose([P4.item(), P2.item()], [terms[0] + terms[1], terms[2] + terms[3]], rtol=1e-12)


def test_irs_power_monte_carlo():
    """C1 (7) is E||x_1||^2 + E||x_2||^2 of (5)-(6), with both amplification noises z_1, z_2.

    The empirical mean over n samples must lie within 5 standard errors; each of the four terms of (7)
    is larger than 5 standard errors, so dropping or doubling any of them would fail this test.
    """
    s, R, psi = _mc_setup()
    n = 200_000
    x = ref.irs_power_monte_carlo(s.G[0].numpy(), psi[0], R[0], float(s.theta[0]), float(s.phi[0]),
                                  complex(s.beta[0]), float(s.sigma_r2), s.N_h, s.N_v, s.d_h, s.d_v, n,
                                  np.random.default_rng(2024))
    se = x.std(ddof=1) / math.sqrt(n)
    p = s.irs_power(torch.from_numpy(R), torch.from_numpy(psi)).item()
    terms = ref.irs_power_dense(s.G[0].numpy(), psi[0], R[0], float(s.theta[0]), float(s.phi[0]),
                                complex(s.beta[0]), float(s.sigma_r2), s.N_h, s.N_v, s.d_h, s.d_v)
    assert terms.min() > 5 * se, (terms, se)
    assert abs(x.mean() - p) < 5 * se, (x.mean(), p, se)


def test_scale_psi_to_feasible_meets_c1_with_equality():
    s = random_scenario(6, P_s=0.01, a_max=50.0)
    R = s.isotropic_design()
    _, psi = _design(s, seed=19)
    out = s.scale_psi_to_feasible(R, torch.from_numpy(psi))
    # the phase pattern is kept, the scale is real and positive
    ratio = out / torch.from_numpy(psi)
    torch.testing.assert_close(ratio.imag, torch.zeros_like(ratio.imag), atol=1e-12, rtol=0)
    assert (ratio.real > 0).all()
    p = s.irs_power(R, out)
    binding_c1 = out.abs().amax(-1) < 50.0 * (1 - 1e-9)
    assert binding_c1.any()
    torch.testing.assert_close(p[binding_c1], torch.full_like(p[binding_c1], 0.01), rtol=1e-9, atol=0)
    assert s.is_feasible(R, out, rtol=1e-9)
    # a_max binding instead
    s2 = s.replace(P_s=1e6, a_max=2.0)
    out2 = s2.scale_psi_to_feasible(R, torch.from_numpy(psi))
    torch.testing.assert_close(out2.abs().amax(-1), torch.full((s.L,), 2.0, dtype=torch.float64))


def test_c1_max_scale_root():
    P4 = torch.tensor([0.0, 1.0, 3.0, 2.0], dtype=torch.float64)
    P2 = torch.tensor([2.0, 0.0, 1.0, 5.0], dtype=torch.float64)
    s = crbmod.c1_max_scale(P4, P2, 4.0)
    torch.testing.assert_close(s ** 4 * P4 + s ** 2 * P2, torch.full_like(P4, 4.0))
    assert math.isinf(crbmod.c1_max_scale(torch.tensor(0.0, dtype=torch.float64),
                                          torch.tensor(0.0, dtype=torch.float64), 1.0).item())


def test_bs_power():
    s = SCENARIOS["random-1"]
    R, _ = _design(s, seed=20)
    R = torch.from_numpy(R)
    R[1] *= 3
    np.testing.assert_allclose(s.bs_power(R).item(), (float(s.P_t) + 3 * float(s.P_t)) / 2, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(30, 50))
def test_fim_matches_reference_many_random_scenarios(seed):
    """Wider sweep (pytest -m slow): random geometry, amplification noise from -110 to -60 dBm,
    random budgets, rank-deficient and full-rank R_s, psi amplitudes from 0.1 to 10."""
    rng = np.random.default_rng(seed)
    s = random_scenario(seed, sigma_r2=10 ** (rng.uniform(-110, -60) / 10 - 3), P_t=rng.uniform(1, 40))
    rank = int(rng.integers(1, s.M + 1))
    R, psi = ref.random_design(s.L, s.M, s.N, float(s.P_t), seed, psi_scale=10 ** rng.uniform(-1, 1), rank=rank)
    F = s.fisher_information(torch.from_numpy(R), torch.from_numpy(psi)).numpy()
    Fr = _ref_fims(s, R, psi)
    assert _entry_err(F, Fr).max() < FIM_RTOL
    c = s.crb(torch.from_numpy(R), torch.from_numpy(psi))
    for l in range(s.L):
        np.testing.assert_allclose(c.total[l].item(), ref.trace_inverse(Fr[l]).sum(), rtol=1e-6)

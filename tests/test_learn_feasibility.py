"""The feasibility layer: every output satisfies (17a)-(17d), for random and adversarial inputs.

Constraints are re-checked independently with numpy (tests/reference.py: C1 as dense traces of
eq. (7), eigenvalues for PSD), not with the code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irs_torch import Scenario, random_scenario
from irs_torch.learn.feasibility import aligned_reference, amplitude_map, feasible_design

import reference as ref


def _batch(n=6, seed=0, budgets=True, **kw):
    """A batch of random geometries with per-instance budgets (P_t, P_s, a_max vary)."""
    rng = np.random.default_rng(seed)
    scs = []
    for i in range(n):
        over = dict(kw)
        if budgets:
            over.update(P_t=float(rng.uniform(1, 40)), P_s=float(10 ** rng.uniform(-2, 0)),
                        a_max=float(rng.uniform(1.5, 10)))
        scs.append(random_scenario(seed=seed * 100 + i, **over))
    return Scenario.stack(scs)


def _outputs(S, gen, scale=1.0, rank=3, with_v=True):
    B, L, N, M = S.batch_shape[0], S.L, S.N, S.M

    def c(*shape):
        return scale * torch.complex(torch.randn(*shape, generator=gen, dtype=torch.float64),
                                     torch.randn(*shape, generator=gen, dtype=torch.float64))

    return dict(W=c(B, L, M, rank), z=c(B, L, N), V=c(B, L, 3, rank) if with_v else None,
                omega=scale * torch.randn(B, L, generator=gen, dtype=torch.float64),
                rho_logit=scale * torch.randn(B, generator=gen, dtype=torch.float64))


def _check_feasible_independently(S, R, psi, strict=True):
    """All constraints of (P1) by numpy, per instance; strict: no tolerance at all."""
    R = R.detach().numpy()
    psi = psi.detach().numpy()
    G = S.G.numpy()
    tol = 0.0 if strict else 1e-9
    for b in range(S.batch_shape[0]):
        P_t = float(torch.as_tensor(S.P_t).reshape(-1)[b if torch.as_tensor(S.P_t).dim() else 0])
        P_s = float(torch.as_tensor(S.P_s).reshape(-1)[b if torch.as_tensor(S.P_s).dim() else 0])
        a_max = float(torch.as_tensor(S.a_max).reshape(-1)[b if torch.as_tensor(S.a_max).dim() else 0])
        sr2 = float(torch.as_tensor(S.sigma_r2).reshape(-1)[b if torch.as_tensor(S.sigma_r2).dim() else 0])
        # (17b): average trace over slots
        tr = np.trace(R[b], axis1=-2, axis2=-1).real
        assert tr.mean() <= P_t * (1 + tol), (b, tr.mean(), P_t)
        for l in range(S.L):
            Rl = R[b, l]
            # (17c): Hermitian PSD (relative to the slot's trace)
            assert np.abs(Rl - Rl.conj().T).max() <= 1e-12 * max(tr[l], 1e-300)
            ev = np.linalg.eigvalsh(0.5 * (Rl + Rl.conj().T))
            assert ev.min() >= -1e-12 * max(tr[l], 1e-300), (b, l, ev.min())
            # (17d)
            assert np.abs(psi[b, l]).max() <= a_max * (1 + tol), (b, l, np.abs(psi[b, l]).max(), a_max)
            # (17a): C1 by the dense reference of eq. (7)
            if S.active:
                terms = ref.irs_power_dense(G[b, l], psi[b, l], Rl, float(S.theta[b, l]), float(S.phi[b, l]),
                                            complex(S.beta[b, l]), sr2, S.N_h, S.N_v, S.d_h, S.d_v)
                assert terms.sum() <= P_s * (1 + 1e-12), (b, l, terms.sum(), P_s)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize("c1_mode", ["cap", "max", "power"])
def test_random_outputs_are_feasible(scale, c1_mode):
    S = _batch(6, seed=1)
    gen = torch.Generator().manual_seed(int(scale * 1000) + len(c1_mode))
    for _ in range(3):
        o = _outputs(S, gen, scale)
        d = feasible_design(S, o["W"], o["z"], V=o["V"], omega=o["omega"], rho_logit=o["rho_logit"],
                            reference=aligned_reference(S), c1_mode=c1_mode)
        _check_feasible_independently(S, d.R_s, d.psi)
        assert bool(S.is_feasible(d.R_s, d.psi, rtol=0.0).all())
        c = S.crb(d.R_s, d.psi).total
        assert torch.isfinite(c).all() and (c > 0).all()


def _adversarial_cases(S):
    B, L, N, M = S.batch_shape[0], S.L, S.N, S.M
    cz = lambda *s: torch.zeros(*s, dtype=torch.complex128)  # noqa: E731
    co = lambda *s: torch.ones(*s, dtype=torch.complex128)  # noqa: E731
    huge = 1e150
    yield "all zero", dict(W=cz(B, L, M, 2), z=cz(B, L, N), V=cz(B, L, 3, 2), omega=torch.zeros(B, L),
                           rho_logit=torch.zeros(B))
    yield "huge", dict(W=huge * co(B, L, M, 2), z=huge * co(B, L, N), V=-huge * co(B, L, 3, 2),
                       omega=torch.full((B, L), 1e30), rho_logit=torch.full((B,), 1e30))
    yield "tiny", dict(W=1e-300 * co(B, L, M, 2), z=1e-300 * co(B, L, N), V=None,
                       omega=torch.full((B, L), -1e30), rho_logit=torch.full((B,), -50.0))
    om = torch.zeros(B, L)
    om[:, 0] = 1e4  # every watt in slot 0
    W = cz(B, L, M, 1)
    W[:, 0, 0, 0] = 1.0  # rank one, one antenna
    yield "one slot, rank one", dict(W=W, z=1e6j * co(B, L, N), V=None, omega=om, rho_logit=None)
    mixed = torch.randn(B, L, N, dtype=torch.complex128) * torch.logspace(-200, 200, N, dtype=torch.float64)
    yield "mixed magnitudes", dict(W=torch.randn(B, L, M, 4, dtype=torch.complex128) * 1e100, z=mixed,
                                   V=torch.randn(B, L, 3, 4, dtype=torch.complex128) * 1e-100, omega=None,
                                   rho_logit=None)


@pytest.mark.parametrize("c1_mode", ["cap", "max", "power"])
def test_adversarial_outputs_are_feasible(c1_mode):
    S = _batch(4, seed=2)
    ref_phase = aligned_reference(S)
    for name, o in _adversarial_cases(S):
        d = feasible_design(S, o["W"], o["z"], V=o["V"], omega=o["omega"], rho_logit=o["rho_logit"],
                            reference=ref_phase, c1_mode=c1_mode)
        assert torch.isfinite(d.R_s).all() and torch.isfinite(d.psi).all(), name
        _check_feasible_independently(S, d.R_s, d.psi)
        assert bool(S.is_feasible(d.R_s, d.psi, rtol=0.0).all()), name


def test_passive_outputs_are_unit_modulus():
    S = _batch(3, seed=3, budgets=False, active=False)
    o = _outputs(S, torch.Generator().manual_seed(0), 5.0)
    o["z"][0, 0, 0] = 0  # the phase of 0 is taken as 0
    d = feasible_design(S, o["W"], o["z"], V=o["V"], omega=o["omega"])
    assert torch.allclose(d.psi.abs(), torch.ones(()).double(), atol=1e-12)
    assert bool(S.is_feasible(d.R_s, d.psi, rtol=1e-12).all())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("field", ["W", "z", "V", "omega", "rho_logit"])
def test_non_finite_outputs_raise_naming_the_output(field, bad):
    S = _batch(2, seed=4)
    o = _outputs(S, torch.Generator().manual_seed(0))
    t = o[field].clone()
    t.reshape(-1)[0] = bad if not t.is_complex() else complex(bad, 0)
    o[field] = t
    with pytest.raises(ValueError, match=f"output {field} contains NaN or inf"):
        feasible_design(S, o["W"], o["z"], V=o["V"], omega=o["omega"], rho_logit=o["rho_logit"])


def test_wrong_shapes_raise_naming_the_output():
    S = _batch(2, seed=4)
    o = _outputs(S, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"W must have shape \(2, 2, 16, 'r'\)"):
        feasible_design(S, o["W"][..., :8, :], o["z"])
    with pytest.raises(ValueError, match="z must have shape"):
        feasible_design(S, o["W"], o["z"][:, :1])
    with pytest.raises(ValueError, match="c1_mode must be one of"):
        feasible_design(S, o["W"], o["z"], c1_mode="clip")


def test_budget_is_met_with_equality_and_slot_shares():
    """(1/L) sum tr R_l = rho P_t (1 - safety); slot traces follow softmax(omega)."""
    S = _batch(5, seed=5)
    o = _outputs(S, torch.Generator().manual_seed(1))
    d = feasible_design(S, o["W"], o["z"], V=o["V"], omega=o["omega"], rho_logit=o["rho_logit"], safety=0.0)
    tr = torch.diagonal(d.R_s, dim1=-2, dim2=-1).real.sum(-1)  # (B, L)
    rho = torch.sigmoid(o["rho_logit"])
    assert torch.allclose(tr.mean(-1), rho * S.P_t, rtol=1e-12)
    share = torch.exp(o["omega"]) / torch.exp(o["omega"]).sum(-1, keepdim=True)
    assert torch.allclose(tr / tr.sum(-1, keepdim=True), share, rtol=1e-10)


def test_c1_scaling_is_the_largest_feasible_or_untouched():
    """cap: psi = psi0 where C1 holds for psi0, else C1 is met with equality (up to safety).
    max: C1 or the amplitude limit is active."""
    S = _batch(6, seed=6)
    o = _outputs(S, torch.Generator().manual_seed(2))
    z = o["z"] * 3
    psi0 = amplitude_map(z, S.budget_broadcast("a_max").unsqueeze(-1))
    d = feasible_design(S, o["W"], z, V=None, omega=o["omega"], c1_mode="cap", safety=0.0)
    p0 = S.irs_power(d.R_s, psi0)
    p = S.irs_power(d.R_s, d.psi)
    P_s = S.budget_broadcast("P_s")
    free = p0 <= P_s
    assert torch.allclose(d.psi[free], psi0[free], rtol=1e-12)
    assert torch.allclose(p[~free], P_s.expand_as(p)[~free], rtol=1e-9)
    assert (~free).any() and free.any()  # both regimes occur in this batch
    d2 = feasible_design(S, o["W"], z, V=None, omega=o["omega"], c1_mode="max", safety=0.0)
    m = S.constraint_margins(d2.R_s, d2.psi)
    assert torch.minimum(m["irs"], m["amp"]).abs().max() < 1e-9


def test_power_mode_meets_c1_with_the_bs_power_and_keeps_psi():
    """power: psi = psi0 untouched; each slot's R_s is the cap design's R_s (same direction) scaled
    down by t <= 1 so that C1 binds exactly where psi0 violated it, and untouched where it did not."""
    S = _batch(6, seed=6)
    o = _outputs(S, torch.Generator().manual_seed(2))
    z = o["z"] * 3
    psi0 = amplitude_map(z, S.budget_broadcast("a_max").unsqueeze(-1))
    dc = feasible_design(S, o["W"], z, V=None, omega=o["omega"], c1_mode="cap", safety=0.0)
    dp = feasible_design(S, o["W"], z, V=None, omega=o["omega"], c1_mode="power", safety=0.0)
    assert torch.allclose(dp.psi, psi0, rtol=1e-12)
    P_s = S.budget_broadcast("P_s").expand(S.batch_shape + (S.L,))
    free = S.irs_power(dc.R_s, psi0) <= P_s
    assert (~free).any() and free.any()
    t = torch.diagonal(dp.R_s, dim1=-2, dim2=-1).real.sum(-1) / torch.diagonal(dc.R_s, dim1=-2, dim2=-1).real.sum(-1)
    assert torch.allclose(dp.R_s, dc.R_s * t[..., None, None], rtol=1e-10, atol=0)
    assert torch.allclose(t[free], torch.ones_like(t[free]), rtol=1e-12)
    assert (t[~free] < 1).all()
    # C1 by the dense reference of eq. (7), met with equality where it binds
    G = S.G.numpy()
    for b, l in zip(*torch.nonzero(~free, as_tuple=True)):
        b, l = int(b), int(l)
        p = ref.irs_power_dense(G[b, l], dp.psi[b, l].numpy(), dp.R_s[b, l].numpy(), float(S.theta[b, l]),
                                float(S.phi[b, l]), complex(S.beta[b, l]),
                                float(S.budget("sigma_r2").reshape(-1)[b if S.budget("sigma_r2").dim() else 0]),
                                S.N_h, S.N_v, S.d_h, S.d_v).sum()
        assert p == pytest.approx(float(P_s[b, l]), rel=1e-9)


def test_amplitude_map_is_below_a_max_and_phase_preserving():
    z = torch.tensor([0, 1e-8, 0.5 + 0.5j, -3j, 1e300, complex(1e308, 1e308)], dtype=torch.complex128)
    p = amplitude_map(z, 4.0)
    assert (p.abs() <= 4.0).all() and (p.abs() > 0).all()
    nz = z != 0
    assert torch.allclose(torch.angle(p[nz]), torch.angle(z[nz]))
    assert math.isclose(float(p[0].abs()), 4.0 * 1e-3)


def test_gradients_are_finite_and_match_finite_differences():
    S = _batch(2, seed=7, budgets=False)
    B, L, N, M = 2, S.L, S.N, S.M
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(B * L * (2 * M + 2 * N) + B * L, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(x):
        i = 0
        w = x[i : i + B * L * 2 * M].view(B, L, M, 1, 2)
        i += B * L * 2 * M
        zz = x[i : i + B * L * 2 * N].view(B, L, N, 2)
        i += B * L * 2 * N
        om = x[i:].view(B, L)
        d = feasible_design(S, torch.complex(w[..., 0], w[..., 1]), torch.complex(zz[..., 0], zz[..., 1]),
                            omega=om, c1_mode="cap")
        return torch.log(S.crb(d.R_s, d.psi).total).sum()

    y = f(x)
    (g,) = torch.autograd.grad(y, x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # directional derivative against a central difference
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    h = 1e-6
    fd = (f(x.detach() + h * v) - f(x.detach() - h * v)) / (2 * h)
    assert torch.allclose((g * v).sum(), fd, rtol=1e-5, atol=1e-8)

"""Features, network and losses of the warm-start model (no Lightning, no data set)."""
from __future__ import annotations

import math

import pytest
import torch

from irs_torch import Scenario, random_scenario
from irs_torch.learn.features import N_GLOBAL, per_irs_width, scenario_features
from irs_torch.learn.losses import log_smooth_max, psi_label_loss, transmit_label_loss
from irs_torch.learn.nets import WarmStartNet


@pytest.fixture(scope="module")
def batch():
    return Scenario.stack([random_scenario(seed=i, P_t=5.0 + 3 * i, a_max=2.0 + i) for i in range(5)])


def _net(**kw):
    torch.manual_seed(0)
    kw.setdefault("hidden", 32)
    kw.setdefault("depth", 1)
    net = WarmStartNet(**kw)
    with torch.no_grad():  # random (non-initial) outputs, so the tests see a generic network
        last = [net.head[-1]] if net.arch == "mlp" else [net.gnn.z_out, net.gnn.v_out, net.gnn.omega_out]
        for m in last:
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return net.double()


ARCHS = [dict(arch="mlp"), dict(arch="gnn", rank=3, channels=8, layers=2), dict(arch="mlp", hypotheses=3),
         dict(arch="mlp", c1_mode="power", free_transmit=True, transmit_basis="channel", hypotheses=2)]


def test_raw_features_shapes_and_normalisation(batch):
    f = scenario_features(batch, kind="raw")
    assert f.per_irs.shape == (5, 2, per_irs_width(16, 16, "raw")) and f.glob.shape == (5, N_GLOBAL)
    assert torch.isfinite(f.per_irs).all() and torch.isfinite(f.glob).all()
    # channel block has unit mean power, whatever the path loss
    g = f.per_irs[..., -2 * 16 * 16:]
    assert torch.allclose((g ** 2).sum(-1) / (16 * 16), torch.ones(5, 2, dtype=torch.float64), rtol=1e-12)
    # the log channel power is the first column
    assert torch.allclose(f.per_irs[..., 0], torch.log10((batch.G.abs() ** 2).mean((-2, -1))))
    # per-instance budgets enter the global features
    assert torch.allclose(f.glob[:, 0], torch.log10(torch.as_tensor(batch.P_t)))


def _gram_reference(s, l):
    """K of the module docstring, written out densely for one IRS of an unbatched scenario."""
    import numpy as np

    import reference as ref

    G = s.G[l].numpy()
    a = ref.steering(float(s.theta[l]), float(s.phi[l]), s.N_h, s.N_v, s.d_h, s.d_v)
    U, sv, Vh = np.linalg.svd(G)
    r = np.exp(-1j * np.angle(a * (G @ Vh[0].conj())))
    H = np.diag(r * a) @ G
    K = H @ H.conj().T
    return K / np.real(np.trace(K)) * K.shape[0]


def test_gram_features_match_a_dense_reference(batch):
    f = scenario_features(batch, kind="gram")
    N = 16
    assert f.per_irs.shape == (5, 2, per_irs_width(16, 16, "gram")) == (5, 2, 6 + N * N)
    for b in (0, 3):
        for l in range(2):
            K = torch.from_numpy(_gram_reference(batch[b], l))
            iu = torch.triu_indices(N, N, offset=1)
            v = f.per_irs[b, l, 6:]
            assert torch.allclose(v[:N], K.diagonal().real, rtol=1e-9, atol=1e-12)
            # the aligned frame fixes K up to the (irrelevant) common phase of r: compare |K_ij|
            assert torch.allclose(torch.complex(v[N:N + len(iu[0])], v[N + len(iu[0]):]).abs(),
                                  K[iu[0], iu[1]].abs(), rtol=1e-9, atol=1e-12)


def _bs_unitary(M, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.complex(torch.randn(M, M, generator=g, dtype=torch.float64),
                      torch.randn(M, M, generator=g, dtype=torch.float64))
    Q, _ = torch.linalg.qr(A)
    return Q


@pytest.mark.parametrize("kw", ARCHS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_gram_net_is_covariant_under_a_change_of_bs_basis(batch, kw):
    """G -> G U (U unitary): the design becomes (U^H R_s U, psi) and the CRB is unchanged."""
    net = _net(**kw)
    net.fit_normalizer(scenario_features(batch))
    net.eval()
    U = _bs_unitary(16, 5).to(batch.G.dtype)
    rot = batch.replace(G=batch.G @ U)
    fa, fb = scenario_features(batch), scenario_features(rot)
    assert torch.allclose(fa.per_irs, fb.per_irs, atol=1e-9)
    d, dr = net(batch), net(rot)
    Uh = U.conj().transpose(-1, -2)
    assert torch.allclose(dr.R_s, Uh @ d.R_s @ U, rtol=1e-7, atol=1e-10)
    assert torch.allclose(rot.crb(dr.R_s, dr.psi).total, batch.crb(d.R_s, d.psi).total, rtol=1e-7)


@pytest.mark.parametrize("kw", ARCHS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_gram_net_is_equivariant_to_element_phase_rotations(batch, kw):
    """G -> D G with D = diag(e^{j t_n}): psi -> conj(D) psi (up to a common phase), R_s unchanged."""
    net = _net(**kw)
    net.fit_normalizer(scenario_features(batch))
    net.eval()
    t = torch.linspace(0, 5, 16, dtype=torch.float64)
    D = torch.exp(1j * t)
    rot = batch.replace(G=D[:, None] * batch.G)
    d, dr = net(batch), net(rot)
    assert torch.allclose(dr.R_s, d.R_s, rtol=1e-7, atol=1e-10)
    want = d.psi * D.conj()
    inner = (dr.psi.conj() * want).sum(-1).abs()
    assert torch.allclose(inner, (d.psi.abs() ** 2).sum(-1), rtol=1e-9)


def test_features_ignore_beta_phase_and_channel_scale_only_moves_the_log(batch):
    for kind in ("gram", "raw"):
        f = scenario_features(batch, kind=kind)
        rot = batch.replace(beta=batch.beta * torch.exp(1j * torch.tensor([[0.3, 2.0]] * 5)))
        assert torch.allclose(scenario_features(rot, kind=kind).per_irs, f.per_irs)
        scaled = batch.replace(G=batch.G * 10.0)
        f2 = scenario_features(scaled, kind=kind)
        assert torch.allclose(f2.per_irs[..., 0], f.per_irs[..., 0] + 2.0)
        assert torch.allclose(f2.per_irs[..., 1:], f.per_irs[..., 1:], atol=1e-12)


def test_untrained_net_is_feasible_and_beats_a_random_design(batch):
    net = WarmStartNet(hidden=32, depth=1).double()
    net.fit_normalizer(scenario_features(batch))
    d = net(batch)
    assert bool(batch.is_feasible(d.R_s, d.psi, rtol=0.0).all())
    c_net = batch.max_crb(d.R_s, d.psi)
    R0 = batch.isotropic_design()
    c_rand = batch.max_crb(R0, batch.random_phase_design(R0, seed=0))
    # the initial output is the aligned design with a beam on the echo: much better than random
    assert (c_net < c_rand).all()


@pytest.mark.parametrize("kind", ["gram", "raw"])
def test_batched_equals_loop_and_unbatched_works(batch, kind):
    net = _net(features=kind, free_transmit=kind == "raw")
    net.fit_normalizer(scenario_features(batch, kind=kind))
    net.eval()
    d = net(batch)
    for i in range(3):
        di = net(batch[i])
        assert di.R_s.shape == (2, 16, 16) and di.psi.shape == (2, 16)
        assert torch.allclose(di.R_s, d.R_s[i], rtol=1e-9, atol=1e-12)
        assert torch.allclose(di.psi, d.psi[i], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kw", ARCHS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_net_is_equivariant_to_permuting_the_irss(batch, kw):
    """Swapping IRS 1 and 2 in the scenario swaps the designs (shared encoder + mean pooling)."""
    net = _net(**kw)
    net.fit_normalizer(scenario_features(batch))
    net.eval()
    perm = [1, 0]
    sw = batch.replace(G=batch.G[:, perm], theta=batch.theta[:, perm], phi=batch.phi[:, perm],
                       beta=batch.beta[:, perm], irs_pos=batch.irs_pos[:, perm], irs_yaw=batch.irs_yaw[:, perm])
    d, ds = net(batch), net(sw)
    assert torch.allclose(ds.R_s, d.R_s[:, perm], rtol=1e-9, atol=1e-12)
    # psi up to the common phase of the aligned reference (an SVD phase convention)
    inner = (ds.psi.conj() * d.psi[:, perm]).sum(-1).abs()
    assert torch.allclose(inner, (d.psi.abs() ** 2).sum(-1)[:, perm], rtol=1e-9)
    c, cs = batch.crb(d.R_s, d.psi).total, sw.crb(ds.R_s, ds.psi).total
    assert torch.allclose(cs, c[:, perm], rtol=1e-7)


def test_wrong_sizes_raise_naming_them(batch):
    net = WarmStartNet(M=8, N_h=4, N_v=4, L=2, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"trained for M=8, N_h=4, N_v=4, L=2, but the scenario has M=16 \(model 8\)"):
        net(batch)
    with pytest.raises(ValueError, match="hidden must be an integer >= 1"):
        WarmStartNet(hidden=0)
    with pytest.raises(ValueError, match="c1_mode must be one of"):
        WarmStartNet(c1_mode="none")
    with pytest.raises(ValueError, match="features must be one of"):
        WarmStartNet(features="pixels")
    with pytest.raises(ValueError, match="no transmit output"):
        WarmStartNet(echo_basis=False, free_transmit=False)


@pytest.mark.parametrize("kw", ARCHS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_gradients_reach_every_parameter(batch, kw):
    net = _net(**kw)
    net.fit_normalizer(scenario_features(batch))
    if net.hypotheses > 1:
        _, c, _ = net(batch, return_all=True)
        loss = log_smooth_max(c, 0.05).mean()
    else:
        d = net(batch)
        loss = log_smooth_max(batch.crb(d.R_s, d.psi).total, 0.05).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0


# ---------------------------------------------------------------------- losses
def test_log_smooth_max_bounds_and_infinite_crb():
    c = torch.tensor([[1e-3, 2e-3], [5.0, 5.0], [1.0, float("inf")]], dtype=torch.float64, requires_grad=True)
    tau = 0.1
    v = log_smooth_max(c, tau)
    lmax = torch.log(c.detach().clamp(max=1e30)).amax(-1)
    assert (v >= lmax - 1e-12).all() and (v <= lmax + tau * math.log(2) + 1e-12).all()
    assert math.isclose(float(v[1].detach()), math.log(5.0) + tau * math.log(2), rel_tol=1e-12)
    v.sum().backward()
    assert torch.isfinite(c.grad).all() and float(c.grad[2, 1]) == 0.0
    with pytest.raises(ValueError, match="tau must be > 0"):
        log_smooth_max(c, 0.0)


def test_psi_loss_is_phase_invariant_and_zero_only_at_the_label():
    g = torch.Generator().manual_seed(0)
    psi = torch.randn(4, 2, 16, dtype=torch.complex128, generator=g)
    ph = torch.exp(1j * torch.rand(4, 2, 1, generator=g, dtype=torch.float64) * 6.28)
    assert torch.allclose(psi_label_loss(psi * ph, psi, 8.0), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    other = torch.randn(4, 2, 16, dtype=torch.complex128, generator=g)
    assert (psi_label_loss(other, psi, 8.0) > 0.05).all()
    # a per-element phase change is not invariant; a scale change is penalised through the level term
    assert (psi_label_loss(psi * torch.exp(1j * torch.linspace(0, 3, 16)), psi, 8.0) > 1e-3).all()
    lvl = psi_label_loss(2 * psi, psi, torch.full((4,), 8.0, dtype=torch.float64))
    expect = ((torch.linalg.vector_norm(psi, dim=-1) / (4 * 8.0)) ** 2).mean(-1)
    assert torch.allclose(lvl, expect, rtol=1e-12)


def test_transmit_loss():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 2, 4, 4, dtype=torch.complex128, generator=g)
    R = A @ A.conj().transpose(-1, -2)
    assert torch.allclose(transmit_label_loss(R, R), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(transmit_label_loss(2 * R, R), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(transmit_label_loss(torch.zeros_like(R), R), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("arch", ["mlp", "gnn"])
def test_hypotheses_return_the_best_feasible_candidate(batch, arch):
    net = _net(arch=arch, rank=3, hypotheses=4, channels=8, layers=2)
    net.fit_normalizer(scenario_features(batch))
    net.eval()
    d_all, c_all, sk = net(batch, return_all=True)
    assert c_all.shape == (5, 4, 2) and d_all.R_s.shape == (5, 4, 2, 16, 16) and sk.batch_shape == (5, 4)
    assert bool(sk.is_feasible(d_all.R_s, d_all.psi, rtol=0.0).all())
    # candidates differ; the returned design is feasible, no worse than the best single candidate
    # and equal to the best slot-by-slot combination found by brute force (see the next test)
    assert (c_all.amax(-1).std(-1) > 0).all()
    d = net(batch)
    assert bool(batch.is_feasible(d.R_s, d.psi, rtol=1e-12).all())
    got = batch.max_crb(d.R_s, d.psi)
    assert (got <= c_all.amax(-1).amin(-1) * (1 + 1e-10)).all()
    torch.testing.assert_close(got, _brute_force_combination(d_all, c_all, batch.P_t), rtol=1e-10, atol=0.0)
    # the candidate CRBs are those of each candidate design, recomputed per instance
    b, k = 2, 3
    assert torch.allclose(batch[b].crb(d_all.R_s[b, k], d_all.psi[b, k]).total, c_all[b, k], rtol=1e-10)


def _brute_force_combination(d_all, c_all, P_t):
    """min over all K^L slot assignments of the best max-CRB reachable by lowering slot powers
    (t_l <= 1 multiplies slot l's CRB by 1/t_l) within sum_l tr R_l <= L P_t: by hand,
    max(max_l c_l, sum_l c_l p_l / (L P_t)) for each assignment."""
    import itertools

    K, L = c_all.shape[-2:]
    p = torch.diagonal(d_all.R_s, dim1=-2, dim2=-1).sum(-1).real
    best = torch.full(c_all.shape[:-2], float("inf"), dtype=torch.float64)
    for ks in itertools.product(range(K), repeat=L):
        c = torch.stack([c_all[..., k, l] for l, k in enumerate(ks)], -1)
        pw = torch.stack([p[..., k, l] for l, k in enumerate(ks)], -1)
        best = torch.minimum(best, torch.maximum(c.amax(-1), (c * pw).sum(-1) / (L * torch.as_tensor(P_t))))
    return best


def test_combine_slots_against_brute_force_and_exact_crb():
    """Two IRSs, five random candidates each, slot powers unequal so that the power coupling binds: the
    combination equals the brute-force optimum, its CRB is the exact one of the returned design, and
    the design is feasible (the BS budget at most exactly met)."""
    from irs_torch.learn.feasibility import FeasibleDesign
    from irs_torch.learn.nets import combine_slots, expand_scenario, select_best

    s = Scenario.stack([random_scenario(seed=10 + i, P_t=4.0 + i) for i in range(4)])
    K = 5
    sk = expand_scenario(s, K)
    g = torch.Generator().manual_seed(3)
    # random candidates: slot powers drawn in [0.3, 1.7] P_t (each candidate meets the budget on
    # average, slots individually do not), random phases scaled to meet C1
    A = torch.randn(sk.batch_shape + (s.L, s.M, 2, 2), dtype=torch.float64, generator=g)
    A = torch.complex(A[..., 0], A[..., 1])
    R = A @ A.conj().transpose(-1, -2)
    w = 0.3 + 1.4 * torch.rand(sk.batch_shape + (s.L,), dtype=torch.float64, generator=g)
    w = w / w.mean(-1, keepdim=True)
    R = R / torch.diagonal(R, dim1=-2, dim2=-1).sum(-1).real[..., None, None] * (w * sk.P_t[..., None])[..., None, None]
    psi = sk.random_phase_design(R, seed=4)
    assert bool(sk.is_feasible(R, psi, rtol=1e-12).all())
    d_all = FeasibleDesign(R_s=R.to(s.G.dtype), psi=psi, rho=torch.ones(sk.batch_shape, dtype=torch.float64),
                           c1_scale=torch.ones(sk.batch_shape + (s.L,), dtype=torch.float64))
    c_all = sk.crb(R, psi).total
    d, crb, idx = combine_slots(d_all, c_all, s.P_t)
    assert idx.shape == (4, s.L) and d.R_s.shape == (4, s.L, s.M, s.M) and crb.shape == (4, s.L)
    torch.testing.assert_close(crb, s.crb(d.R_s, d.psi).total, rtol=1e-10, atol=0.0)
    assert bool(s.is_feasible(d.R_s, d.psi, rtol=1e-12).all())
    torch.testing.assert_close(crb.amax(-1), _brute_force_combination(d_all, c_all, s.P_t), rtol=1e-12, atol=0.0)
    joint = select_best(d_all, c_all)[1].amax(-1)
    assert (crb.amax(-1) <= joint * (1 + 1e-12)).all() and (crb.amax(-1) < joint * 0.999).any()
    # no finite candidate at all: falls back to the joint choice instead of returning NaN
    d2, crb2, _ = combine_slots(d_all, torch.full_like(c_all, float("inf")), s.P_t)
    assert torch.isfinite(d2.R_s.abs()).all() and torch.isinf(crb2).all()


def test_combine_slots_three_slots_synthetic_against_brute_force():
    """L = 3 slots, K = 4 candidates, synthetic CRBs and slot powers (R_s = p/M I): the breakpoint
    search equals the brute force over all 4^3 assignments, slots are scaled down only when their
    powers exceed the budget, and the returned CRBs are c / t."""
    from irs_torch.learn.feasibility import FeasibleDesign
    from irs_torch.learn.nets import combine_slots

    g = torch.Generator().manual_seed(7)
    B, K, L, M, N = 50, 4, 3, 3, 2
    c = torch.exp(torch.randn(B, K, L, dtype=torch.float64, generator=g))
    P_t = 1.0 + torch.rand(B, dtype=torch.float64, generator=g)
    p = P_t[:, None, None] * (0.2 + 1.6 * torch.rand(B, K, L, dtype=torch.float64, generator=g))
    R = (p / M)[..., None, None] * torch.eye(M, dtype=torch.complex128)
    psi = torch.ones(B, K, L, N, dtype=torch.complex128)
    d_all = FeasibleDesign(R_s=R, psi=psi, rho=torch.ones(B, K, dtype=torch.float64),
                           c1_scale=torch.ones(B, K, L, dtype=torch.float64))
    d, crb, idx = combine_slots(d_all, c, P_t)
    torch.testing.assert_close(crb.amax(-1), _brute_force_combination(d_all, c, P_t), rtol=1e-12, atol=0.0)
    p_out = torch.diagonal(d.R_s, dim1=-2, dim2=-1).sum(-1).real
    assert (p_out.sum(-1) <= L * P_t * (1 + 1e-12)).all()
    p_sel = p.gather(1, idx.unsqueeze(1)).squeeze(1)
    c_sel = c.gather(1, idx.unsqueeze(1)).squeeze(1)
    t = p_out / p_sel
    assert (t <= 1 + 1e-12).all()
    torch.testing.assert_close(crb, c_sel / t, rtol=1e-12, atol=0.0)
    within = p_sel.sum(-1) <= L * P_t
    assert within.any() and (~within).any()  # both cases occur
    assert torch.allclose(t[within], torch.ones_like(t[within]))

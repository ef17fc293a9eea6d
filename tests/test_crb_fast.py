"""The CRB's routes to the whitened echo Gram matrix (array space M x M, element space N x N, the array space
fused with the transmit Gram for large batches, and the array space with the noise Gram from one real GEMM per
distinct channel) and its low-rank transmit path (R_s = B B^H,
irs_torch.crb.crb_factored) against the independent dense derivation of tests/reference.py (closed form
(15)-(16) with explicit M x M matrices and R_w^-1, and a careful Jacobi-scaled inverse), over the array and IRS
sizes of scripts/bench_scale.py.

complex64: the measured worst relative CRB error against complex128 over these scenarios is ~1e-4 (worst
1.1e-4 over the total and its parts; the float32 steering phases of 16 x 16 arrays and the Schur complement of
a correlated FIM), hence C64_RTOL = 2e-4.
"""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch

from irs_torch import crb as crbmod
from irs_torch import paper_scenario
from irs_torch.crb import grams as crb_grams
from irs_torch.crb import inverse as crb_inverse

import reference as ref

RTOL = 1e-9
C64_RTOL = 2e-4
# (M, N_h, N_v): N = N_h N_v. The default suite covers N < M, N = M and N > M on small arrays.
FAST_SIZES = [(4, 2, 2), (4, 4, 4), (16, 2, 2), (16, 4, 4), (64, 4, 4), (16, 8, 8)]
SLOW_SIZES = [(M, n, n) for M in (4, 16, 64, 128) for n in (2, 4, 8, 16) if (M, n, n) not in FAST_SIZES]
# "array": _EchoGrams then B by autograd; "element": _EchoGramsN; "fused": _EchoGramsR (A and B in one pass) and the
# entry-major inverse, the defaults for batches of >= 128 problems (with one R_s each); "shared": _EchoGramsShared
# (the noise Gram from one real GEMM per distinct G, the default for M > 32 with several designs per G); each forced
# here for every batch.
ROUTES = ["array", "element", "fused", "shared"]


def _set_route(monkeypatch, route):
    """Force a route for every batch size; "fused" also forces the entry-major inverse (crb_from_grams), the
    others the batch-major one."""
    monkeypatch.setattr(crb_grams, "_GRAM_ROUTE", "array" if route == "fused" else route)
    monkeypatch.setattr(crb_grams, "_FUSED_MIN_BATCH", 1 if route == "fused" else 10 ** 9)
    monkeypatch.setattr(crb_inverse, "_ENTRY_MAJOR_MIN_BATCH", 1 if route == "fused" else 10 ** 9)


@pytest.fixture
def route(request, monkeypatch):
    _set_route(monkeypatch, request.param)
    return request.param


def _scenario(M, N_h, N_v, seed):
    """The paper's geometry at the given sizes (SI scales), amplification noise raised so that R_w differs
    from sigma_b2 I (the whitening matters)."""
    s = paper_scenario(seed, M=M, N_h=N_h, N_v=N_v)
    return s.replace(sigma_r2=float(s.sigma_r2) * 10 ** (seed % 3))


def _factor(rng, L, M, r, P_t):
    """B (L, M, r) complex128 numpy with tr(B_l B_l^H) = P_t."""
    B = ref.crandn(rng, (L, M, r))
    return B * np.sqrt(P_t / (np.abs(B) ** 2).sum((-1, -2), keepdims=True))


def _reference_crb(s, R, psi):
    """(total, theta, phi, beta) per IRS from the dense numpy reference, each (L,)."""
    out = []
    for l in range(s.L):
        F = ref.closed_form_fim(s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]),
                                complex(s.beta[l]), float(s.sigma_r2), float(s.sigma_b2), s.T_L, s.N_h, s.N_v,
                                s.d_h, s.d_v)
        d = ref.trace_inverse(F)
        out.append([d.sum(), d[0], d[1], d[2] + d[3]])
    return np.array(out).T


def _design(s, seed, rank):
    rng = np.random.default_rng(seed)
    B = _factor(rng, s.L, s.M, rank, float(s.P_t))
    psi = 3.0 * ref.crandn(rng, (s.L, s.N))
    psi = s.scale_psi_to_feasible(torch.from_numpy(B @ B.conj().transpose(0, 2, 1)), torch.from_numpy(psi)).numpy()
    return B, B @ B.conj().transpose(0, 2, 1), psi


def _check_sizes(M, N_h, N_v, route):
    for seed, rank in ((0, M), (1, 2), (2, 3)):
        s = _scenario(M, N_h, N_v, seed)
        B, R, psi = _design(s, 100 + seed, rank)
        want = _reference_crb(s, R, psi)
        dense = s.crb(torch.from_numpy(R), torch.from_numpy(psi))
        fact = s.crb_factored(torch.from_numpy(B), torch.from_numpy(psi))
        for name, got in (("dense", dense), ("factored", fact)):
            for k, f in enumerate(("total", "theta", "phi", "beta")):
                np.testing.assert_allclose(getattr(got, f).numpy(), want[k], rtol=RTOL, atol=0,
                                           err_msg=f"M={M} N={N_h * N_v} {route} {name} rank {rank} {f}")


@pytest.mark.parametrize("route", ROUTES, indirect=True)
@pytest.mark.parametrize("M,N_h,N_v", FAST_SIZES)
def test_crb_matches_dense_reference(M, N_h, N_v, route):
    _check_sizes(M, N_h, N_v, route)


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES, indirect=True)
@pytest.mark.parametrize("M,N_h,N_v", SLOW_SIZES)
def test_crb_matches_dense_reference_all_sizes(M, N_h, N_v, route):
    _check_sizes(M, N_h, N_v, route)


@pytest.mark.parametrize("route", ROUTES, indirect=True)
@pytest.mark.parametrize("M,N_h,N_v", [(4, 2, 2), (16, 4, 4), (64, 4, 4), (16, 8, 8)])
def test_complex64_within_measured_tolerance(M, N_h, N_v, route):
    s = _scenario(M, N_h, N_v, 1)
    B, R, psi = _design(s, 7, 2)
    c128 = s.crb(torch.from_numpy(R), torch.from_numpy(psi)).total
    s64 = s.to(torch.complex64)
    c64 = s64.crb(torch.from_numpy(R).to(torch.complex64), torch.from_numpy(psi).to(torch.complex64)).total
    f64 = s64.crb_factored(torch.from_numpy(B).to(torch.complex64), torch.from_numpy(psi).to(torch.complex64)).total
    assert c64.dtype == f64.dtype == torch.float32
    for got in (c64, f64):
        err = ((got.double() - c128) / c128).abs().max().item()
        assert err < C64_RTOL, err


def test_routes_agree_on_a_batch_with_broadcast_scenario(monkeypatch):
    """(K, L) designs against one scenario (G broadcast over K): both routes and the factored path agree
    with a loop over the designs."""
    s = _scenario(16, 2, 4, 0)
    rng = np.random.default_rng(3)
    B = torch.from_numpy(np.stack([_factor(rng, s.L, s.M, 2, float(s.P_t)) for _ in range(5)]))
    psi = torch.from_numpy(3.0 * ref.crandn(rng, (5, s.L, s.N)))
    R = B @ B.mH
    out = {}
    for r in ROUTES:
        _set_route(monkeypatch, r)
        out[r] = (s.crb(R, psi).total, s.crb_factored(B, psi).total)
    loop = torch.stack([s.crb(R[k], psi[k]).total for k in range(5)])
    for r in ROUTES:
        for got in out[r]:
            torch.testing.assert_close(got, loop, rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------- factored == dense
@pytest.mark.parametrize("r", [1, 2, 4, 20])
def test_factored_equals_dense_for_R_equal_B_BH(r):
    s = _scenario(16, 4, 2, 2)
    rng = np.random.default_rng(r)
    B = torch.from_numpy(_factor(rng, s.L, s.M, r, float(s.P_t)))
    psi = torch.from_numpy(3.0 * ref.crandn(rng, (s.L, s.N)))
    R = B @ B.mH
    cf, cd = s.crb_factored(B, psi), s.crb(R, psi)
    for f in cd._fields:
        torch.testing.assert_close(getattr(cf, f), getattr(cd, f), rtol=1e-9, atol=0)
    torch.testing.assert_close(s.irs_power_factored(B, psi), s.irs_power(R, psi), rtol=1e-12, atol=0)
    P = crbmod.irs_power_coefficients_factored(s.G, psi, B, s.theta, s.phi, s.beta, s.sigma_r2, s.N_h, s.N_v,
                                               s.d_h, s.d_v)
    Pd = crbmod.irs_power_coefficients(s.G, psi, R, s.theta, s.phi, s.beta, s.sigma_r2, s.N_h, s.N_v, s.d_h, s.d_v)
    for a, b in zip(P, Pd):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    fs = s.scale_psi_to_feasible_factored(B, psi)
    torch.testing.assert_close(fs, s.scale_psi_to_feasible(R, psi), rtol=1e-12, atol=0)
    c1 = fs.abs().amax(-1) < float(s.a_max) * (1 - 1e-9)  # IRSs where C1, not a_max, sets the scale
    torch.testing.assert_close(s.irs_power_factored(B, fs)[c1], torch.full_like(s.irs_power(R, fs)[c1], float(s.P_s)),
                               rtol=1e-9, atol=0)
    # passive: unit modulus, as the dense repair
    sp = s.replace(active=False, sigma_r2=0.0)
    torch.testing.assert_close(sp.scale_psi_to_feasible_factored(B, psi), sp.scale_psi_to_feasible(R, psi))


def test_scale_factored_meets_c1_with_equality():
    """With a tight IRS budget the factored repair puts C1 exactly at P_s (checked with the dense C1)."""
    s = _scenario(16, 4, 4, 0).replace(P_s=0.01, a_max=50.0)
    rng = np.random.default_rng(5)
    B = torch.from_numpy(_factor(rng, s.L, s.M, 3, float(s.P_t)))
    psi = s.scale_psi_to_feasible_factored(B, torch.from_numpy(3.0 * ref.crandn(rng, (s.L, s.N))))
    assert (psi.abs().amax(-1) < 50.0).all()
    torch.testing.assert_close(s.irs_power(B @ B.mH, psi), torch.full((s.L,), 0.01, dtype=torch.float64),
                               rtol=1e-9, atol=0)


def test_factor_bad_inputs_name_the_field():
    s = _scenario(4, 2, 2, 0)
    psi = torch.ones(s.L, s.N, dtype=torch.complex128)
    with pytest.raises(ValueError, match=r"B must have shape \(\.\.\., L=2, M=4, r>=1\), got \(2, 5, 1\)"):
        s.crb_factored(torch.ones(2, 5, 1, dtype=torch.complex128), psi)
    with pytest.raises(ValueError, match="B contains NaN"):
        s.crb_factored(torch.full((2, 4, 1), float("nan"), dtype=torch.complex128), psi)
    with pytest.raises(ValueError, match="B must have shape"):
        s.irs_power_factored(torch.ones(4, 1, dtype=torch.complex128), psi)


# ----------------------------------------------------------------------------- gradients and edge cases
def _tiny(seed=0, M=5, N_h=2, N_v=2):
    g = torch.Generator().manual_seed(seed)
    N = N_h * N_v

    def cr(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64)) / math.sqrt(2)

    return dict(G=cr(2, N, M), psi=cr(2, N), B=cr(2, M, 2), theta=torch.tensor([1.2, 1.7], dtype=torch.float64),
                phi=torch.tensor([0.9, 2.0], dtype=torch.float64),
                beta=torch.tensor([0.6 - 0.3j, -0.2 + 0.8j], dtype=torch.complex128), N_h=N_h, N_v=N_v)


@pytest.mark.parametrize("route", ROUTES, indirect=True)
def test_gradcheck_factored_crb(route):
    p = _tiny()
    sr = torch.tensor(0.4, dtype=torch.float64)

    def f(G, psi, B, theta, phi, sr):
        return crbmod.crb_factored(G, psi, B, theta, phi, p["beta"], sr, 1.0, 5.0, p["N_h"], p["N_v"], 0.45,
                                   0.55).total

    inputs = tuple(t.clone().requires_grad_(True) for t in (p["G"], p["psi"], p["B"], p["theta"], p["phi"], sr))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("route", ROUTES, indirect=True)
def test_gradcheck_dense_crb_broadcast_G(route):
    """One G for a batch of designs: the broadcast gradient of G is summed back (both routes)."""
    p = _tiny(1)
    R = p["B"] @ p["B"].mH

    def f(G1, psi, R):
        return crbmod.crb(G1, psi, R, p["theta"][0], p["phi"][0], p["beta"][0], 0.3, 1.0, 5.0, p["N_h"], p["N_v"],
                          0.5, 0.5).total

    inputs = tuple(t.clone().requires_grad_(True) for t in (p["G"][0], p["psi"], R))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_gradcheck_factored_irs_power():
    p = _tiny(2)

    def f(G, psi, B):
        return crbmod.irs_power_factored(G, psi, B, p["theta"], p["phi"], p["beta"], 0.3, p["N_h"], p["N_v"])

    inputs = tuple(t.clone().requires_grad_(True) for t in (p["G"], p["psi"], p["B"]))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("route", ROUTES, indirect=True)
def test_singular_cases_give_inf_with_finite_gradients(route):
    p = _tiny(3)
    psi = p["psi"].clone()
    psi[0] = 0
    psi.requires_grad_(True)
    B = p["B"].clone().requires_grad_(True)
    c = crbmod.crb_factored(p["G"], psi, B, p["theta"], p["phi"], p["beta"], 0.3, 1.0, 5.0, p["N_h"], p["N_v"]).total
    assert torch.isinf(c[0]) and torch.isfinite(c[1])
    c[1].backward()
    assert torch.isfinite(psi.grad).all() and torch.isfinite(B.grad).all() and psi.grad[1].abs().sum() > 0
    zero = crbmod.crb_factored(p["G"], p["psi"], torch.zeros_like(p["B"]), p["theta"], p["phi"], p["beta"], 0.3,
                               1.0, 5.0, p["N_h"], p["N_v"]).total
    assert torch.isinf(zero).all()


@pytest.mark.parametrize("vshape,wshape", [((5, 3, 4), (4, 6)), ((2, 5, 3, 4), (5, 4, 6)), ((5, 2, 3, 4), (2, 4, 6)),
                                           ((5, 1, 3, 4), (2, 4, 6)), ((3, 4), (2, 4, 6)), ((2, 3, 4), (2, 4, 6))])
def test_matmul_shared_equals_matmul(vshape, wshape):
    g = torch.Generator().manual_seed(0)
    V = torch.randn(*vshape, dtype=torch.complex128, generator=g).requires_grad_(True)
    W = torch.randn(*wshape, dtype=torch.complex128, generator=g).requires_grad_(True)
    got, want = crbmod.matmul_shared(V, W), V @ W
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    gV, gW = torch.autograd.grad(got.abs().sum(), (V, W))
    hV, hW = torch.autograd.grad(want.abs().sum(), (V, W))
    torch.testing.assert_close(gV, hV, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gW, hW, rtol=1e-12, atol=1e-12)


def test_gradcheck_beta_through_the_fused_inverse():
    """The fused inverse's backward also carries the gradient of the beta phase (e = e^{-j arg beta})."""
    p = _tiny(4)

    def f(beta, psi):
        return crbmod.crb_factored(p["G"], psi, p["B"], p["theta"], p["phi"], beta, 0.3, 1.0, 5.0, p["N_h"],
                                   p["N_v"]).total

    inputs = (p["beta"].clone().requires_grad_(True), p["psi"].clone().requires_grad_(True))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("route", ROUTES, indirect=True)
def test_fused_backward_equals_plain_autograd(route):
    """crb() with the fused inverse and hand-written backwards equals the plain-autograd path
    (twice_differentiable=True: per-entry FIM terms, generic Cholesky) in value and gradient, on a realistic
    (SI-scaled) scenario with a batch of designs."""
    s = _scenario(16, 2, 4, 1)
    rng = np.random.default_rng(9)
    B = torch.from_numpy(np.stack([_factor(rng, s.L, s.M, 3, float(s.P_t)) for _ in range(3)]))
    psi0 = s.scale_psi_to_feasible_factored(B, torch.from_numpy(3.0 * ref.crandn(rng, (3, s.L, s.N))))
    out = []
    for twice in (False, True):
        R = (B @ B.mH).requires_grad_(True)
        psi = psi0.clone().requires_grad_(True)
        c = crbmod.crb(s.G, psi, R, *s._echo_model_args(), twice_differentiable=twice)
        (c.total.log().sum() + c.theta.log().sum()).backward()
        out.append((c.total.detach(), R.grad, psi.grad))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())


def test_routes_agree_when_only_the_angles_are_batched(monkeypatch):
    """Angles with batch dims that G, psi and R_s lack (several hypotheses of the target direction):
    both routes broadcast them, values and gradients equal."""
    p = _tiny(5, M=6)
    theta = p["theta"] + torch.tensor([[0.0], [0.1], [-0.2]], dtype=torch.float64)
    out = {}
    for r in ROUTES:
        _set_route(monkeypatch, r)
        psi = p["psi"].clone().requires_grad_(True)
        c = crbmod.crb_factored(p["G"], psi, p["B"], theta, p["phi"], p["beta"], 0.3, 1.0, 5.0, p["N_h"],
                                p["N_v"]).total
        assert c.shape == (3, 2)
        c.sum().backward()
        out[r] = (c.detach(), psi.grad)
    for a, b in zip(out["array"], out["element"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------- the fused path (_EchoGramsR)
def _batch(n, M, N_h, N_v, seed, hermitian=True):
    """n random unit-scale problems (one G, psi, R each); R is not Hermitian unless ``hermitian``."""
    g = torch.Generator().manual_seed(seed)
    N = N_h * N_v

    def cr(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64)) / math.sqrt(2)

    F = cr(n, M, M)
    R = F @ F.mH if hermitian else F @ F.mH + 0.3 * cr(n, M, M)
    return dict(G=cr(n, N, M) / math.sqrt(N), psi=cr(n, N), R=R, theta=1.0 + torch.rand(n, generator=g,
                dtype=torch.float64), phi=0.5 + 2 * torch.rand(n, generator=g, dtype=torch.float64),
                beta=cr(n), N_h=N_h, N_v=N_v)


def test_gradcheck_fused_dense_crb(monkeypatch):
    """Every input of the fused path, with a non-Hermitian R (only its Hermitian part may matter)."""
    _set_route(monkeypatch, "fused")
    p = _batch(2, 5, 2, 2, 0, hermitian=False)

    def f(G, psi, R, theta, phi, sr):
        c = crbmod.crb(G, psi, R, theta, phi, p["beta"], sr, 1.0, 5.0, p["N_h"], p["N_v"], 0.45, 0.55)
        return c.total, c.theta

    inputs = tuple(t.clone().requires_grad_(True) for t in (p["G"], p["psi"], p["R"], p["theta"], p["phi"],
                                                            torch.tensor(0.4, dtype=torch.float64)))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("M,N_h,N_v", [(16, 4, 4), (8, 4, 4)])
def test_fused_default_on_large_batches_equals_unfused(monkeypatch, M, N_h, N_v):
    """At the default threshold a batch of 200 problems takes the fused path (the array route is forced for
    N > M); values and gradients equal the unfused array route, the element route, and a broadcast R_s (one
    covariance for the batch, which the fused path leaves to the unfused one)."""
    p = _batch(200, M, N_h, N_v, 1, hermitian=False)
    args = (p["theta"], p["phi"], p["beta"], 0.7, 1.0, 5.0, N_h, N_v)
    calls = []
    monkeypatch.setattr(crb_grams._EchoGramsR, "forward", _count(crb_grams._EchoGramsR.forward, calls))
    out = {}
    for r in ("auto", "array", "element"):
        monkeypatch.setattr(crb_grams, "_GRAM_ROUTE", "array" if r == "auto" else r)
        if r != "auto":
            monkeypatch.setattr(crb_grams, "_FUSED_MIN_BATCH", 10 ** 9)
        G, psi, R = (t.clone().requires_grad_(True) for t in (p["G"], p["psi"], p["R"]))
        c = crbmod.crb(G, psi, R, *args).total
        (c * torch.linspace(1, 2, 200, dtype=torch.float64)).sum().backward()
        out[r] = (c.detach(), G.grad, psi.grad, R.grad)
        if r == "auto":
            assert len(calls) == 1
    assert len(calls) == 1
    for r in ("array", "element"):
        for a, b in zip(out["auto"], out[r]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * b.abs().max().item())
    monkeypatch.setattr(crb_grams, "_FUSED_MIN_BATCH", 1)
    monkeypatch.setattr(crb_grams, "_GRAM_ROUTE", "array")
    R1 = p["R"][:1]
    shared = crbmod.crb(p["G"], p["psi"], R1, *args).total
    assert len(calls) == 1  # a broadcast R_s is not copied per problem: the unfused path
    torch.testing.assert_close(shared, torch.stack([crbmod.crb(p["G"][k], p["psi"][k], R1[0], p["theta"][k],
                                                               p["phi"][k], p["beta"][k], *args[3:]).total
                                                    for k in range(200)]), rtol=1e-9, atol=0)


def _count(fn, calls):
    def wrapped(*a, **k):
        calls.append(1)
        return fn(*a, **k)
    return staticmethod(wrapped)


def test_fused_rejects_non_finite_inputs(monkeypatch):
    _set_route(monkeypatch, "fused")
    p = _batch(3, 4, 2, 2, 2)
    G = p["G"].clone()
    G[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="R_w is not positive definite"):
        crbmod.crb(G, p["psi"], p["R"], p["theta"], p["phi"], p["beta"], 0.3, 1.0, 5.0, 2, 2)


# ----------------------------------------------------------------------------- the shared-channel route
def _starts_batch(M, n, K, seed):
    """A scenario and K designs of it (factors of rank 3 and psi), the shape of a first-order run's batch."""
    s = _scenario(M, n, n, seed)
    rng = np.random.default_rng(seed)
    B = torch.from_numpy(np.stack([_factor(rng, s.L, s.M, 3, float(s.P_t)) for _ in range(K)]))
    psi = torch.from_numpy(3.0 * ref.crandn(rng, (K, s.L, s.N)))
    return s, B, psi


def _crb_and_grads(s, B, psi):
    """CRB parts of the factored path and the gradients of a weighted sum w.r.t. B, psi and sigma_r2."""
    B, psi = B.clone().requires_grad_(True), psi.clone().requires_grad_(True)
    sr = torch.tensor(float(s.sigma_r2), dtype=torch.float64, requires_grad=True)
    c = crbmod.crb_factored(s.G, psi, B, s.theta, s.phi, s.beta, sr, s.sigma_b2, s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
    w = torch.linspace(1.0, 2.0, c.total.numel(), dtype=torch.float64).reshape(c.total.shape)
    ((c.total + c.theta) * w / c.total.detach()).sum().backward()
    return [c.total.detach(), c.theta.detach(), c.beta.detach(), B.grad, psi.grad, sr.grad]


def test_shared_route_is_the_default_for_large_arrays_and_equals_the_array_route(monkeypatch):
    """M = 36 (> 32), N = 36, 5 designs of one scenario: "auto" takes the shared-channel route (once per CRB call),
    and its CRBs and gradients (B, psi, sigma_r2) equal the array route's to 1e-9 relative."""
    s, B, psi = _starts_batch(36, 6, 5, 1)
    calls = []
    monkeypatch.setattr(crb_grams._EchoGramsShared, "forward", _count(crb_grams._EchoGramsShared.forward, calls))
    got = _crb_and_grads(s, B, psi)
    assert len(calls) == 1
    monkeypatch.setattr(crb_grams, "_GRAM_ROUTE", "array")
    want = _crb_and_grads(s, B, psi)
    assert len(calls) == 1
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * b.abs().max().item())
    # one design per channel (the AO's calls) or a channel that needs a gradient: the array route
    s.crb_factored(B[0], psi[0])
    crbmod.crb_factored(s.G.clone().requires_grad_(True), psi, B, s.theta, s.phi, s.beta, s.sigma_r2, s.sigma_b2,
                        s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
    assert len(calls) == 1


def test_shared_route_off_up_to_32_antennas(monkeypatch):
    """Up to M = 32 the default never takes the shared-channel route (the default solver's numbers there stay
    those of the array route, bit for bit)."""
    s, B, psi = _starts_batch(32, 6, 8, 2)
    calls = []
    monkeypatch.setattr(crb_grams._EchoGramsShared, "forward", _count(crb_grams._EchoGramsShared.forward, calls))
    a = s.crb_factored(B, psi).total
    assert calls == []
    monkeypatch.setattr(crb_grams, "_GRAM_ROUTE", "array")
    assert torch.equal(a, s.crb_factored(B, psi).total)


def test_shared_route_kernel_follows_in_place_changes_of_G(monkeypatch):
    """The cached real kernel of a channel is rebuilt when G changes in place (its version counter) and dropped
    when G is freed."""
    monkeypatch.setattr(crb_grams, "_GRAM_ROUTE", "shared")
    s, B, psi = _starts_batch(8, 3, 4, 3)
    G = s.G.clone()
    args = (s.theta, s.phi, s.beta, s.sigma_r2, s.sigma_b2, s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
    crbmod.crb_factored(G, psi, B, *args)
    G.mul_(1.7)
    got = crbmod.crb_factored(G, psi, B, *args).total
    monkeypatch.setattr(crb_grams, "_GRAM_ROUTE", "array")
    torch.testing.assert_close(got, crbmod.crb_factored(G, psi, B, *args).total, rtol=1e-9, atol=0)
    key = id(G)
    assert key in crb_grams._KERNEL_CACHE
    del G
    gc.collect()
    assert key not in crb_grams._KERNEL_CACHE  # a freed channel's kernel is not kept


def test_factored_power_large_arrays_equals_dense():
    """C1 of the factored path at M > 32 (one GEMM per distinct G for a batch of designs) equals the dense C1."""
    s, B, psi = _starts_batch(40, 4, 3, 4)
    torch.testing.assert_close(s.irs_power_factored(B, psi), s.irs_power(B @ B.mH, psi), rtol=1e-12, atol=0)


def test_inverse_forms_agree_including_singular_rows():
    """The entry-major and batch-major forms of crb_from_grams: same values (inf on singular rows), gradients of
    A, B and e, on random Gram matrices with a few singular (zero A, zero B) rows."""
    g = torch.Generator().manual_seed(7)
    n = 300

    def gram(k):
        Y = torch.randn(n, 5, k, dtype=torch.complex128, generator=g)
        return Y.mH @ Y

    A, B = gram(3), gram(3)
    A[3] = 0
    B[5] = 0
    e = torch.sgn(torch.randn(n, dtype=torch.complex128, generator=g))
    out = []
    for form in (crb_inverse._CRBFromGramsEntryMajor, crb_inverse._CRBFromGramsBatchMajor):
        a, b, ee = (t.clone().requires_grad_(True) for t in (A, B, e))
        d = form.apply(a, b, ee)
        d[torch.isfinite(d)].sum().backward()
        out.append((d.detach(), a.grad, b.grad, ee.grad))
    assert torch.isinf(out[0][0][3]).all() and torch.isinf(out[0][0][5]).all() and torch.isfinite(out[0][0][6]).all()
    for x, y in zip(*out):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12 * y[torch.isfinite(y)].abs().max().item())


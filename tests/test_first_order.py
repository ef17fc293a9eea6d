"""The batched first-order refiner (irs_torch.solvers.first_order) and the learned pipeline's ``refine="fo"``."""
from __future__ import annotations

import math

import pytest
import torch

from irs_torch import Scenario, paper_scenario, random_scenario
from irs_torch.solvers import first_order as fo
from irs_torch.solvers.screen import joint_first_order
from irs_torch.solvers.starts import diverse_starts


def _batch(n=3, **kw):
    return Scenario.stack([random_scenario(seed=10 + i, **kw) for i in range(n)]).to(torch.complex128)


def _random_params(scn, K, r, scale, seed):
    g = torch.Generator().manual_seed(seed)
    B, L, M, N = int(scn.batch_shape[0]), scn.L, scn.M, scn.N

    def rn(*shape):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    return {"Br": rn(K, B, L, M, r, 2), "u": rn(K, B, L), "v": rn(K, B, L), "rho": rn(K, B, L, N),
            "ph": rn(K, B, L, N)}


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_every_parameter_point_is_feasible(scale):
    # every iterate of the refiner is feasible_point(params) for some params: check arbitrary (extreme) params
    scn = _batch(4, P_s=1e-3)
    for r in (1, 3, scn.M):
        p = _random_params(scn, 2, r, scale, seed=r)
        R, psi = fo.feasible_point(scn, p)
        assert scn.is_feasible(R, psi, rtol=1e-9).all()
        # relaxed budgets: feasible for the relaxed budgets, which is what the continuation steps promise
        Pt = scn.budget("P_t").unsqueeze(-1) * 0.1
        Ps = scn.budget("P_s").unsqueeze(-1) * 10
        R2, psi2 = fo.feasible_point(scn, p, Pt, Ps)
        relaxed = scn.replace(P_t=scn.P_t * 0.1, P_s=scn.P_s * 10)
        assert relaxed.is_feasible(R2, psi2, rtol=1e-9).all()


def test_result_feasible_and_never_worse_than_start():
    scn = _batch(3, P_s=1e-3)
    R0 = scn.isotropic_design()
    psi0 = scn.random_phase_design(R0, seed=3)
    c0 = scn.crb(R0, scn.scale_psi_to_feasible(R0, psi0)).total.amax(-1)
    res = fo.refine_batch(scn, R0, psi0, steps=60, patience=0)
    assert scn.is_feasible(res.R_s, res.psi, rtol=1e-9).all()
    assert (res.max_crb <= c0 * (1 + 1e-12)).all()
    assert (res.max_crb < 0.9 * c0).all()  # 60 steps from an isotropic start do gain
    assert torch.allclose(res.max_crb, scn.crb(res.R_s, res.psi).total.amax(-1), rtol=1e-12)


def test_batched_equals_one_by_one():
    scn = _batch(3)
    R0 = torch.stack([scn.isotropic_design(), scn.isotropic_design() * 0.5])  # K = 2 starts
    psi0 = torch.stack([scn.random_phase_design(seed=1), scn.random_phase_design(seed=2)])
    res = fo.refine_batch(scn, R0, psi0, steps=80, patience=10)
    for i in range(3):
        one = fo.refine_batch(scn[i], R0[:, i], psi0[:, i], steps=80, patience=10)
        assert int(one.steps[0]) == int(res.steps[i])
        assert math.isclose(float(one.max_crb[0]), float(res.max_crb[i]), rel_tol=1e-7)
        assert torch.allclose(one.R_s[0], res.R_s[i], rtol=1e-7, atol=1e-12)


def test_early_stopping_is_per_instance():
    # an instance that starts at its (screened) optimum stops early; a fresh one keeps going
    s = paper_scenario(seed=0).to(torch.complex128)
    st = diverse_starts(s, 2, seed=0)
    R0, p0 = torch.stack([x[1] for x in st]), torch.stack([x[2] for x in st])
    done = fo.refine_batch(s, R0.unsqueeze(1), p0.unsqueeze(1), steps=400, patience=20)
    scn = Scenario.stack([s, s])
    Rs = torch.stack([torch.stack([done.R_s[0], R0[0]], 0)] * 2, 0)  # (K=2, B=2): item 0 from the optimum
    Rs[:, 1] = R0
    ps = torch.stack([torch.stack([done.psi[0], p0[0]], 0)] * 2, 0)
    ps[:, 1] = p0
    res = fo.refine_batch(scn, Rs, ps, steps=400, patience=20)
    assert int(res.steps[0]) < int(res.steps[1])


def test_full_rank_refiner_reproduces_the_screen():
    # one definition of the Adam step: the default screen (torch.optim.Adam) and the functional refiner agree
    s = paper_scenario(seed=1).to(torch.complex128)
    st = diverse_starts(s, 3, seed=0)
    R0, p0 = torch.stack([x[1] for x in st]), torch.stack([x[2] for x in st])
    _, _, c = joint_first_order(s, R0, p0, steps=40, lr=0.1, decay=0.05)
    res = fo.refine_batch(s, R0.unsqueeze(1), p0.unsqueeze(1), steps=40, lr=0.1, decay=0.05, patience=0, rank=s.M)
    assert math.isclose(float(res.max_crb[0]), float(c.min()), rel_tol=1e-9)


def test_relax_is_validated_and_counts_only_real_budgets():
    scn = _batch(2)
    R0, psi0 = scn.isotropic_design(), scn.random_phase_design(seed=1)
    with pytest.raises(ValueError, match=r"relax must have shape \(K=1, 2\)"):
        fo.refine_batch(scn, R0, psi0, steps=5, relax=torch.ones(2, 2))
    with pytest.raises(ValueError, match="relax factors must be finite and > 0"):
        fo.refine_batch(scn, R0, psi0, steps=5, relax=torch.tensor([[0.0, 1.0]]))
    res = fo.refine_batch(scn, R0, psi0, steps=40, relax=torch.tensor([[0.01, 10.0]]), patience=0)
    assert scn.is_feasible(res.R_s, res.psi, rtol=1e-9).all()


@pytest.mark.parametrize("kw,match", [({"steps": -1}, "steps must be an integer >= 0"),
                                      ({"lr": float("nan")}, "lr must be a finite number > 0"),
                                      ({"decay": 0.0}, r"decay must be in \(0, 1\]"),
                                      ({"rank": 0}, r"rank must be in \[1, M=")])
def test_bad_arguments_name_the_field(kw, match):
    scn = _batch(1)
    with pytest.raises(ValueError, match=match):
        fo.refine_batch(scn, scn.isotropic_design(), scn.random_phase_design(seed=0), **kw)


def test_bad_start_shapes_and_values():
    scn = _batch(2)
    R0, psi0 = scn.isotropic_design(), scn.random_phase_design(seed=0)
    with pytest.raises(ValueError, match="R0 must have shape"):
        fo.refine_batch(scn, R0[:1].expand(3, -1, -1, -1), psi0, steps=1)
    bad = psi0.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="psi0 contains NaN"):
        fo.refine_batch(scn, R0, bad, steps=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (CPU-only CI)")
def test_cpu_equals_gpu():
    scn = _batch(3)
    R0, psi0 = scn.isotropic_design(), scn.random_phase_design(seed=1)
    a = fo.refine_batch(scn, R0, psi0, steps=50, patience=0)
    b = fo.refine_batch(scn, R0, psi0, steps=50, patience=0, device="cuda")
    assert torch.allclose(a.max_crb, b.max_crb, rtol=1e-6)


def test_unrolled_gradient_matches_finite_differences():
    # the exact unrolled loss (twice-differentiable CRB) against central differences, tiny scenario, float64
    s = paper_scenario(seed=2, M=3, N_h=2, N_v=2, P_s=1e-3).to(torch.complex128)
    g = torch.Generator().manual_seed(0)
    B0 = torch.complex(torch.randn(2, 3, 2, generator=g, dtype=torch.float64),
                       torch.randn(2, 3, 2, generator=g, dtype=torch.float64))
    psi0 = torch.polar(torch.full((2, 4), 2.0, dtype=torch.float64),
                       torch.rand(2, 4, generator=g, dtype=torch.float64) * 6.28)
    B0 = B0 * 0.5

    def loss(b):
        R, psi = fo.unrolled_refine(s, b, psi0, 3, lr=0.05, exact=True)
        return fo.smooth_max_log(s.crb(R, psi).total, 20.0)

    x = B0.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(loss(x), x)
    h = 1e-6
    for idx in [(0, 0, 0), (1, 2, 1), (0, 1, 1)]:
        for part, d in (("re", 1.0), ("im", 1j)):
            e = torch.zeros_like(B0)
            e[idx] = d * h
            fd = (loss(B0 + e) - loss(B0 - e)).item() / (2 * h)
            an = gx[idx].real.item() if part == "re" else gx[idx].imag.item()
            assert math.isclose(an, fd, rel_tol=1e-4, abs_tol=1e-7), (idx, part, an, fd)


def test_first_order_unrolling_carries_the_refined_gradient():
    # exact=False: the steps' Jacobian is the identity, so d loss / d start = d loss / d refined point
    s = paper_scenario(seed=2, M=3, N_h=2, N_v=2).to(torch.complex128)
    B0 = (torch.eye(3, 2, dtype=torch.complex128) + 0.1).expand(2, 3, 2).clone().requires_grad_(True)
    psi0 = torch.polar(torch.full((2, 4), 2.0, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))
    R, psi = fo.unrolled_refine(s, B0, psi0, 5, exact=False)
    fo.smooth_max_log(s.crb(R, psi).total, 20.0).backward()
    assert B0.grad is not None and torch.isfinite(torch.view_as_real(B0.grad)).all()
    assert float(B0.grad.abs().sum()) > 0
    # and the refined point is better than the start
    c0 = s.crb(B0.detach() @ B0.detach().mH, s.scale_psi_to_feasible(B0.detach() @ B0.detach().mH, psi0)).total
    assert float(s.crb(R.detach(), psi.detach()).total.max()) < float(c0.max())


# ----------------------------------------------------------------------------- the learned pipeline's refine="fo"
def test_polish_never_raises_the_max_crb_and_certifies():
    from irs_torch.inference import refine_fo

    scn = _batch(2)
    R0 = scn.isotropic_design().unsqueeze(0)
    psi0 = scn.random_phase_design(seed=4).unsqueeze(0)
    raw = refine_fo(scn, R0, psi0, steps=15, polish=False)
    pol = refine_fo(scn, R0, psi0, steps=15, polish=True)
    assert (pol.max_crb <= raw.max_crb * (1 + 1e-9)).all()
    assert (pol.max_crb < raw.max_crb * 0.999).any()  # P2 does improve a short first-order run's R_s
    assert pol.status == ["first-order+p2"] * 2 and raw.status == ["first-order"] * 2
    assert bool(pol.success.all())
    r = pol.item_result(1)
    assert r.success and r.nit == 1 and r.history[0]["step"] == "p2-polish"
    assert math.isclose(r.max_crb, float(pol.max_crb[1]), rel_tol=1e-12)
    sol = r.to_solution()
    assert sol.metadata["status"] == "first-order+p2"


def test_learned_fo_batch_and_single_are_the_refiner_on_the_network_starts():
    # The network runs in float32, so its designs move by ~1e-6 between batch compositions (and a near-tie between
    # hypotheses can then pick another start set): the runtime's batch and single calls are each checked against the
    # refiner on their own network starts; the refiner itself is batch-invariant (test_batched_equals_one_by_one).
    from irs_torch.inference import find_checkpoint, network_starts, refine_fo, solve_batch, solve_learned
    from irs_torch.learn.checkpoint import load_model

    scn = Scenario.stack([paper_scenario(seed=s) for s in (0, 1)])
    net = load_model(find_checkpoint(scn))
    b = solve_batch(scn, "learned", refine="fo", fo_steps=20, polish=False, verbose=False)
    R0, p0 = network_starts(net, scn, 4)
    ref = refine_fo(scn, R0, p0, steps=20, polish=False)
    assert b.status == ["first-order", "first-order"]
    assert torch.allclose(b.max_crb, ref.max_crb, rtol=1e-9)
    one = solve_learned(scn[1], refine="fo", fo_steps=20, polish=False, verbose=False)
    R1, p1 = network_starts(net, Scenario.stack([scn[1]]), 4)
    assert math.isclose(one.max_crb, float(refine_fo(Scenario.stack([scn[1]]), R1, p1, steps=20,
                                                      polish=False).max_crb[0]), rel_tol=1e-9)
    assert one.options["refine"] == "fo" and one.options["hypotheses"] == 4
    assert one.max_crb <= one.init_max_crb * (1 + 1e-12)


def test_portfolio_effort_records_the_winning_start():
    from irs_torch.solvers import SolverOptions, solve, strategy

    s = paper_scenario(seed=0, M=4, N_h=2, N_v=2)
    old = strategy.PORTFOLIO_STEPS
    strategy.PORTFOLIO_STEPS = 30
    try:
        r = solve(s, options=SolverOptions(effort="portfolio", max_iter=5))
    finally:
        strategy.PORTFOLIO_STEPS = old
    assert r.options["effort"] == "portfolio" and r.options["found_by"].startswith("portfolio:")
    assert r.nit == 1 and r.max_crb <= r.init_max_crb
    assert bool(s.to(torch.complex128).is_feasible(r.R_s, r.psi))


def test_stall_rules_count_the_start_or_only_the_iterates():
    """From a start at a refined point, Adam's first steps are worse than it: the rule "best" stops each instance
    after exactly ``patience`` steps, "trajectory" runs on while the iterates improve; both keep the best iterate."""
    scn = _batch(2)
    R0, p0 = [], []
    for i in range(2):
        st = diverse_starts(scn[i], 2, seed=i)
        R0.append(torch.stack([s[1] for s in st]))
        p0.append(torch.stack([s[2] for s in st]))
    first = fo.refine_batch(scn, torch.stack(R0, 1), torch.stack(p0, 1), steps=300, patience=0)
    start_c = first.max_crb
    kw = dict(steps=200, patience=10, lr=0.1, tol=1e-3)
    best = fo.refine_batch(scn, first.R_s, first.psi, stall="best", **kw)
    traj = fo.refine_batch(scn, first.R_s, first.psi, stall="trajectory", **kw)
    assert torch.all(best.steps == 10), best.steps  # no iterate beat the refined start within 10 steps
    assert torch.all(traj.steps > 10), traj.steps
    assert torch.all(best.max_crb <= start_c * (1 + 1e-9)) and torch.all(traj.max_crb <= start_c * (1 + 1e-9))
    assert traj.settings["stall"] == "trajectory"
    with pytest.raises(ValueError, match="stall must be one of"):
        fo.refine_batch(scn, first.R_s, first.psi, stall="never", **kw)

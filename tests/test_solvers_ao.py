"""The AO solver, the benchmarks, starting points, the result type and the `solve` command."""
from __future__ import annotations

import json
import math

import pytest
import torch

from irs_torch import Scenario, Solution, paper_scenario
from irs_torch.cli import main
from irs_torch.solvers import SolveResult, SolverOptions, initial_point, solve

FAST = SolverOptions(max_iter=6, p3_steps=40, p3_starts=3, p3_warm_steps=15)


@pytest.fixture(scope="module")
def small():
    return paper_scenario(1, M=4, N_h=2, N_v=2)


@pytest.fixture(scope="module")
def small_ao(small):
    return solve(small, "ao", options=FAST)


def _check_feasible(s, res: SolveResult, allow_solver_failure: bool = False):
    if allow_solver_failure and not res.success:  # reported, never silent (tests/test_solver_failures.py)
        assert res.status == "solver-failed" and res.message.startswith("FAILED:"), (res.status, res.message)
    else:
        assert res.success, (res.status, res.message)
    assert bool(s.is_feasible(res.R_s, res.psi, rtol=1e-6))
    c = s.crb(res.R_s, res.psi).total
    assert torch.allclose(res.crb, c, rtol=1e-12)
    assert res.max_crb == pytest.approx(float(c.max()), rel=1e-12)
    assert math.isfinite(res.max_crb)


def test_ao_monotone_feasible_and_improves(small, small_ao):
    res = small_ao
    _check_feasible(small, res)
    h = [res.init_max_crb] + [x["max_crb"] for x in res.history]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(h, h[1:])), h
    assert res.max_crb < 0.5 * res.init_max_crb
    assert res.nit == len(res.history) and res.status in ("converged", "max-iter")
    for x in res.history:
        assert set(["max_crb", "crb", "t_p2", "t_p3"]) <= set(x)
        assert len(x["crb"]) == small.L


def test_ao_is_reproducible_from_seed(small, small_ao):
    again = solve(small, "ao", options=FAST)
    assert torch.equal(again.psi, small_ao.psi) and torch.equal(again.R_s, small_ao.R_s)
    other = solve(small, "ao", options=SolverOptions(**{**FAST.to_dict(), "seed": 1}))
    assert not torch.equal(other.init_psi, small_ao.init_psi)


def test_benchmarks_on_small_scenario(small, small_ao):
    t = solve(small, "transmit-only", options=FAST)
    r = solve(small, "reflective-only", options=FAST)
    p = solve(small, "passive", options=FAST)
    for x in (t, r):
        _check_feasible(small, x)
    assert small_ao.max_crb <= t.max_crb * (1 + 1e-9)
    assert small_ao.max_crb <= r.max_crb * (1 + 1e-9)
    assert torch.allclose(r.R_s, small.isotropic_design())
    assert torch.allclose(p.psi.abs(), torch.ones_like(p.psi.abs()), atol=1e-12)
    assert p.options["passive_scenario"]["sigma_r2"] == 0.0
    assert p.max_crb > small_ao.max_crb


def test_paper_scenario_ao_beats_benchmarks_and_passive():
    """Paper scenario (M=16, 4x4, L=2): AO <= both single-sided benchmarks, far below passive."""
    s = paper_scenario(0)
    ao = solve(s, "ao")
    t = solve(s, "transmit-only")
    r = solve(s, "reflective-only")
    p = solve(s, "passive", options=SolverOptions(max_iter=3))
    for x in (ao, t, r):
        _check_feasible(s, x)
    assert ao.max_crb <= t.max_crb and ao.max_crb <= r.max_crb
    assert p.max_crb > 100 * ao.max_crb
    # The committed Fig. 2 record of this very instance (seed 0, P_t = 20 W, a_max = 8; the AO of its
    # day, now effort "legacy"): today's default reproduces it within 3% (measured: 0.99942 of it). On the
    # quality suite the default's worst ratio to best-known is 1.14 and its median 1.01, so a 3% rise here
    # is a regression; more than 5% below it would be a new best for this instance (update the record)
    # or a broken CRB.
    rec = _fig2_record(seed=0, P_t=20.0, a_max=8.0)
    assert 0.95 * rec <= ao.max_crb <= 1.03 * rec, (ao.max_crb, rec)


def _fig2_record(seed, P_t, a_max):
    """max-CRB of the AO point of results/fig2/points.jsonl (`irs-torch reproduce fig2`) with these values."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "results" / "fig2" / "points.jsonl"
    for line in path.read_text().splitlines():
        d = json.loads(line)
        if (d["method"], d["seed"], d["params"]["P_t"], d["params"]["a_max"]) == ("ao", seed, P_t, a_max):
            return d["max_crb"]
    raise AssertionError(f"no AO point with seed {seed}, P_t {P_t}, a_max {a_max} in {path}")


def test_fair_passive_gets_more_bs_power(small):
    p = solve(small, "passive", options=SolverOptions(max_iter=2, p3_steps=20, passive_fair=True))
    assert p.options["passive_scenario"]["P_t"] == pytest.approx(float(small.P_t) + float(small.P_s))
    bs = torch.diagonal(p.R_s, dim1=-2, dim2=-1).real.sum() / small.L
    assert float(bs) == pytest.approx(float(small.P_t) + float(small.P_s), rel=1e-6)


def test_warm_start_from_solution_is_not_worse(small, small_ao):
    res = solve(small, "ao", init={"R_s": small_ao.R_s, "psi": small_ao.psi}, options=FAST)
    assert res.init_max_crb == pytest.approx(small_ao.max_crb, rel=1e-9)
    assert res.max_crb <= small_ao.max_crb * (1 + 1e-12)


def test_infeasible_user_init_is_repaired(small):
    R = 5 * small.isotropic_design()
    psi = torch.full((small.L, small.N), 100.0, dtype=torch.complex128)
    R0, psi0, info = initial_point(small, {"R_s": R, "psi": psi}, SolverOptions())
    assert bool(small.is_feasible(R0, psi0, rtol=1e-9))
    assert info["kind"] == "given" and info["R_s_repaired"] and max(info["psi_scaled_by"]) < 1
    # psi only: R_s is the isotropic design scaled into C1
    R1, psi1, _ = initial_point(small, {"psi": psi0}, SolverOptions())
    assert torch.equal(psi1, psi0) and bool(small.is_feasible(R1, psi1, rtol=1e-9))


@pytest.mark.parametrize("bad, match", [
    ({"kind": "nope"}, "kind"), ({"foo": 1}, "unknown keys"),
    ({"psi": torch.zeros(2, 3)}, "psi must have shape"),
    ({"psi": torch.zeros(2, 4, dtype=torch.complex128)}, "all-zero"),
])
def test_bad_init_errors(small, bad, match):
    with pytest.raises(ValueError, match=match):
        solve(small, "ao", init=bad, options=FAST)


@pytest.mark.parametrize("kw, match", [({"max_iter": 0}, "max_iter"), ({"rtol": 2.0}, "rtol"),
                                       ({"p2_solver": "mosek"}, "p2_solver"), ({"p3": "x"}, "p3"),
                                       ({"seed": -1}, "seed"), ({"p2_subspace": 2}, "p2_subspace")])
def test_options_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        SolverOptions(**kw)


def test_bad_method_and_batched_scenario(small):
    with pytest.raises(ValueError, match="method"):
        solve(small, "magic")
    with pytest.raises(ValueError, match="unbatched"):
        solve(Scenario.stack([small, small]), "ao")


@pytest.mark.parametrize("kw", [dict(P_s=1e-13), dict(a_max=1e-3), dict(P_t=1e-9)])
def test_degenerate_budgets_give_finite_results(kw):
    """P_s below the IRS noise floor, tiny a_max or P_t: a (very large) finite CRB, a feasible
    point and a message, never a crash or NaN (psi is scaled down to meet C1). At P_s = 1e-13 W the
    conic solvers fail on P2 (Clarabel returns no point, SCS a point 5% over C1): that is reported
    as a solver failure, with the feasible starting transmit design."""
    s = paper_scenario(0, M=4, N_h=2, N_v=2, **kw)
    res = solve(s, "ao", options=SolverOptions(max_iter=2, p3_steps=10, p3_warm_steps=5, p3_starts=2))
    _check_feasible(s, res, allow_solver_failure="P_s" in kw)
    assert res.max_crb > 0 and not any(math.isnan(x) for x in res.crb.tolist())
    if "P_s" in kw or "a_max" in kw:
        assert "noise floor" in res.message or "a_max" in res.message


def test_result_saves_as_solution(tmp_path, small, small_ao):
    sol = small_ao.to_solution(small)
    path = sol.save(tmp_path / "ao.npz")
    back = Solution.load(path)
    assert torch.equal(back.R_s, small_ao.R_s) and torch.equal(back.psi, small_ao.psi)
    assert torch.allclose(back.crb, small.crb(back.R_s, back.psi).total, rtol=1e-12)
    assert back.metadata["options"]["seed"] == 0 and back.metadata["status"] == small_ao.status
    assert back.arrays["history_max_crb"].shape == (small_ao.nit,)
    assert back.method == "ao"


def test_cli_solve(tmp_path, capsys, small):
    sp = tmp_path / "s.npz"
    small.save(sp)
    out = tmp_path / "sol.npz"
    rc = main(["solve", "--scenario", str(sp), "--max-iter", "3", "--no-progress", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "max-CRB" in text and "wrote" in text
    sol = Solution.load(out)
    assert torch.allclose(sol.crb, small.crb(sol.R_s, sol.psi).total, rtol=1e-12)
    rc = main(["solve", "--scenario", str(sp), "--method", "reflective-only", "--init", f"{out}:psi", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["method"] == "reflective-only" and rep["seed"] == 0
    assert rep["max_crb"] <= rep["init_max_crb"]
    assert main(["solve", "--scenario", str(sp), "--init", str(tmp_path / "none.npz")]) == 2
    err = capsys.readouterr().err
    assert "--init" in err and "none.npz" in err and "existing solution file" in err
    assert main(["solve", "--scenario", str(sp), "--rtol", "5"]) == 2
    assert "rtol" in capsys.readouterr().err


@pytest.mark.slow
def test_paper_scenario_sca_sdr_ao_monotone_and_feasible():
    s = paper_scenario(0)
    res = solve(s, "ao", options=SolverOptions(p3="sca-sdr", max_iter=4))
    _check_feasible(s, res)
    h = [res.init_max_crb] + [x["max_crb"] for x in res.history]
    assert all(b <= a for a, b in zip(h, h[1:]))
    t = solve(s, "transmit-only")
    assert res.max_crb <= t.max_crb


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_paper_scenario_other_channels(seed):
    s = paper_scenario(seed)
    ao = solve(s, "ao")
    _check_feasible(s, ao)
    assert ao.max_crb <= solve(s, "transmit-only").max_crb
    assert ao.max_crb <= solve(s, "reflective-only").max_crb
    assert solve(s, "passive", options=SolverOptions(max_iter=3)).max_crb > 100 * ao.max_crb

"""Solver failures show.

Faults are injected into the conic solves (every SCS / Clarabel call returns "infeasible", or
``cvxpy.Problem.solve`` raises ``SolverError``) and into the first-order P3 (raises), for every
method: ao, transmit-only, reflective-only, passive and learned with AO refinement. Each must give
``success=False``, status "solver-failed", a message starting with "FAILED:" that names the
failure, counts in ``failures`` and in the saved Solution's metadata, a non-zero CLI exit status
with a FAILED line, and, in a generated data set, ``success = 0`` labels that the training split
leaves out by default. The returned point must still be feasible, checked with the independent
dense formulas of tests/reference.py, and never taken from a failed step.
"""
from __future__ import annotations

import dataclasses
import json

import cvxpy as cp
import numpy as np
import pytest
import torch

from irs_torch import Scenario, Solution, random_scenario
from irs_torch.solvers import SolverOptions, solve

import reference as ref
from helpers import cli_in_process

SMALL = {"M": 4, "N_h": 2, "N_v": 2}
P2_METHODS = ("ao", "transmit-only", "passive")


# ----------------------------------------------------------------------------- helpers / faults
def _scenario(seed=0) -> Scenario:
    return random_scenario(seed=seed, **SMALL)


def _opts(method="ao", **kw) -> SolverOptions:
    base = {"max_iter": 3, "p3_steps": 40, "p3_starts": 2}
    if method == "reflective-only":
        base.update(p3="sca-sdr", sca_iter=3)
    return SolverOptions(**{**base, **kw})


def _check_feasible_independently(s: Scenario, R, psi, active=True, rtol=1e-6):
    """(17a) C1 by the dense eq. (7) of tests/reference.py, (17b) average BS power, (17c) PSD,
    (17d) |psi| <= a_max (passive: |psi| = 1, no C1)."""
    R, psi = np.asarray(R), np.asarray(psi)
    for l in range(s.L):
        assert np.linalg.eigvalsh(0.5 * (R[l] + R[l].conj().T)).min() >= -1e-9 * np.trace(R[l]).real
        if active:
            c1 = ref.irs_power_dense(s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]),
                                     complex(s.beta[l]), float(s.sigma_r2), s.N_h, s.N_v, s.d_h, s.d_v).sum()
            assert c1 <= float(s.P_s) * (1 + rtol), (l, c1, float(s.P_s))
            assert np.abs(psi[l]).max() <= float(s.a_max) * (1 + rtol)
        else:
            np.testing.assert_allclose(np.abs(psi[l]), 1.0, rtol=1e-9)
    assert np.trace(R, axis1=-2, axis2=-1).real.mean() <= float(s.P_t) * (1 + rtol)


def _ref_max_crb(s: Scenario, R, psi, passive=False) -> float:
    """max_l tr(F_l^-1) by the closed form (15)-(16) of tests/reference.py."""
    R, psi = np.asarray(R), np.asarray(psi)
    sr = 0.0 if passive else float(s.sigma_r2)
    return max(ref.trace_inverse(ref.closed_form_fim(
        s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]), complex(s.beta[l]), sr,
        float(s.sigma_b2), s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)).sum() for l in range(s.L))


@pytest.fixture()
def conic_infeasible(monkeypatch):
    """Every conic solve (P2 SDP, P3 SDR; SCS and Clarabel) reports "infeasible"; counts the calls."""
    from irs_torch.solvers import conic

    calls = []

    def run(prob, solver, eps, verbose=False, small=True, fallback=False):
        calls.append(solver)
        return "infeasible", 0.0

    monkeypatch.setattr(conic, "run", run)
    return calls


@pytest.fixture()
def conic_raises(monkeypatch):
    """Every ``cvxpy.Problem.solve`` raises SolverError (the real ``conic.run`` sees it)."""
    def boom(self, *a, **k):
        raise cp.error.SolverError("injected fault")

    monkeypatch.setattr(cp.Problem, "solve", boom)


FAULTS = {"infeasible": ("conic_infeasible", "infeasible"), "raises": ("conic_raises", "SolverError: injected fault")}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An (untrained) slim model file for M = 4, 2 x 2 elements, L = 2 (export_model)."""
    from irs_torch.learn.checkpoint import export_model
    from irs_torch.learn.nets import WarmStartNet

    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    hp = {"M": 4, "N_h": 2, "N_v": 2, "L": 2, "hidden": 8, "depth": 1}
    torch.save({"hyper_parameters": hp, "state_dict": WarmStartNet(**hp).state_dict()}, d / "tiny.ckpt")
    return export_model(d / "tiny.ckpt", d / "tiny.pt")


def _assert_failed(res, step_names, want):
    assert res.success is False
    assert res.status == "solver-failed"
    assert res.message.startswith("FAILED:"), res.message
    assert want in res.message, res.message
    for k in step_names:
        assert res.failures[f"{k}_steps"] >= 1
        assert res.failures[f"{k}_failed"] == res.failures[f"{k}_steps"], res.failures
    assert sum(h.get("p2_failed", False) or h.get("p3_failed", False) for h in res.history) == len(res.history)


# ----------------------------------------------------------------------------- the library
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("method", ["ao", "transmit-only", "reflective-only", "passive"])
def test_every_method_reports_a_failed_conic_solver(method, fault, request):
    request.getfixturevalue(FAULTS[fault][0])
    s = _scenario()
    res = solve(s, method, options=_opts(method))
    _assert_failed(res, ["p3"] if method == "reflective-only" else ["p2"], FAULTS[fault][1])
    if method != "reflective-only":
        assert "P2 (transmit SDP) failed in" in res.message and res.failures["p2_solver_failures"] >= 2
    else:
        assert "P3 (reflective design) failed in 1 of 1 steps" in res.message
        assert res.failures["p3_solver_failures"] >= 2
    # the returned point is feasible (independent check) and its CRB is the reference's
    _check_feasible_independently(s, res.R_s, res.psi, active=method != "passive")
    np.testing.assert_allclose(res.max_crb, _ref_max_crb(s, res.R_s, res.psi, passive=method == "passive"),
                               rtol=1e-6)
    if method == "transmit-only":  # the failed P2's point is not used: R_s is the start's
        assert torch.equal(res.R_s, res.init_R_s)
    if method == "reflective-only":  # every IRS keeps its starting psi
        assert torch.equal(res.psi, res.init_psi)
    md = res.to_solution(s).metadata
    assert md["success"] is False and md["status"] == "solver-failed" and md["message"].startswith("FAILED:")
    assert md["failures"] == res.failures


def test_the_first_order_p3_raising_is_a_failure(monkeypatch):
    from irs_torch.solvers import ao

    def boom(*a, **k):
        raise RuntimeError("injected P3 fault")

    monkeypatch.setattr(ao, "solve_reflect_first_order", boom)
    s = _scenario()
    res = solve(s, "reflective-only", options=SolverOptions())
    _assert_failed(res, ["p3"], "RuntimeError: injected P3 fault")
    assert torch.equal(res.psi, res.init_psi)
    res = solve(s, "ao", options=_opts(effort="legacy"))
    _assert_failed(res, ["p3"], "RuntimeError: injected P3 fault")
    assert res.failures["p2_failed"] == 0  # P2 still worked
    _check_feasible_independently(s, res.R_s, res.psi)


def test_learned_with_refine_reports_the_failure(tiny_model, conic_infeasible):
    from irs_torch.inference import solve_learned

    s = _scenario()
    res = solve_learned(s, checkpoint=tiny_model, refine="ao", verbose=False)
    _assert_failed(res, ["p2"], "infeasible")
    assert res.options["method"] == "learned"
    _check_feasible_independently(s, res.R_s, res.psi)
    # without refinement no solver runs: the network's feasible design is a success
    n = len(conic_infeasible)
    res = solve_learned(s, checkpoint=tiny_model, refine="none", verbose=False)
    assert res.success is True and res.status == "network-only" and len(conic_infeasible) == n


def test_a_few_failed_steps_are_a_warning_not_a_failure(monkeypatch):
    """P2 fails in the first AO iteration only: the run goes on, success stays True, the message
    warns with the counts, and the point comes from the steps that succeeded."""
    from irs_torch.solvers import conic

    real = conic.run
    seen = {"n": 0}

    def first_fails(prob, solver, eps, verbose=False, small=True, fallback=False):
        seen["n"] += 1
        if seen["n"] <= 2:  # the first P2 call: primary and fallback solver
            return "infeasible", 0.0
        return real(prob, solver, eps, verbose, small, fallback)

    monkeypatch.setattr(conic, "run", first_fails)
    s = _scenario(seed=3)
    res = solve(s, "ao", options=_opts(effort="legacy", max_iter=4, rtol=1e-9))
    assert res.success is True and res.status in ("converged", "max-iter")
    assert res.history[0]["p2_failed"] and not res.history[0]["p2_accepted"]
    assert res.failures["p2_failed"] == 1 and res.failures["p2_steps"] >= 2
    assert res.message.startswith("warning: P2 (transmit SDP) failed in 1 of"), res.message
    _check_feasible_independently(s, res.R_s, res.psi)


def test_p2_keeps_the_better_of_two_attempts_that_fail_the_check(monkeypatch):
    """Both solvers return "optimal" points that violate the BS budget (the check fails). The result
    is the better one (the first, a scaled optimum), not the last (an over-budget isotropic point),
    and it is reported as inexact (a usable, repaired point), not as failed."""
    from irs_torch.solvers import conic
    from irs_torch.solvers.transmit import solve_transmit_sdp

    real = conic.run

    def tamper(prob, solver, eps, verbose=False, small=True, fallback=False):
        _, dt = real(prob, "CLARABEL", eps, verbose, small, False)
        for v in prob.variables():
            if v.name().startswith("Y"):
                k = v.shape[0]
                v.value = 1.5 * v.value if solver == "CLARABEL" else 3.0 * np.eye(k) / k
        return "optimal", dt

    s = _scenario()
    psi = s.random_phase_design(seed=1)
    good = solve_transmit_sdp(s, psi, subspace=None)
    assert not good.failed
    monkeypatch.setattr(conic, "run", tamper)
    res = solve_transmit_sdp(s, psi, subspace=None)
    assert res.inexact and not res.failed and res.status.startswith("inexact, repaired")
    assert [a["solver"] for a in res.attempts] == ["CLARABEL", "SCS"]
    assert all(a["failed"] and a["violation"] > 1e-4 for a in res.attempts)
    first, last = (a["max_crb"] for a in res.attempts)
    assert first < last
    assert res.max_crb == first and res.solver == "CLARABEL"
    # the kept point: the optimum scaled back into the budget, so within rounding of the true optimum
    np.testing.assert_allclose(res.max_crb, good.max_crb, rtol=1e-3)
    np.testing.assert_allclose(_ref_max_crb(s, res.R_s, psi), res.max_crb, rtol=1e-6)


# ----------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("method", ["ao", "transmit-only", "reflective-only", "passive", "learned"])
def test_cli_exits_non_zero_and_says_failed(method, tiny_model, tmp_path, monkeypatch, capsys):
    scen = _scenario().save(tmp_path / "s.npz")
    args = ["solve", "--scenario", scen, "--method", method, "--max-iter", "3", "--no-progress"]
    if method == "reflective-only":
        args += ["--p3", "sca-sdr"]
    if method == "learned":  # the AO refinement (the first-order refinement's rule: the next test)
        args += ["--checkpoint", tiny_model, "--refine", "ao"]
    ok = cli_in_process([*args, "-o", tmp_path / "ok.npz"], monkeypatch, capsys)  # control: no fault
    assert ok.returncode == 0, ok.stderr
    assert "success: yes" in ok.stdout and "FAILED" not in ok.stdout + ok.stderr
    from irs_torch.solvers import conic

    monkeypatch.setattr(conic, "run", lambda *a, **k: ("infeasible", 0.0))
    r = cli_in_process([*args, "-o", tmp_path / "bad.npz"], monkeypatch, capsys)
    assert r.returncode == 1, r.stderr
    assert "status: solver-failed" in r.stdout and "success: NO" in r.stdout and "feasible: yes" in r.stdout
    assert "FAILED: " in r.stdout and "failed in" in r.stdout and "infeasible" in r.stdout
    assert "FAILED" in r.stderr and "Traceback" not in r.stderr
    md = Solution.load(tmp_path / "bad.npz").metadata
    assert md["success"] is False and md["status"] == "solver-failed"
    step = "p3" if method == "reflective-only" else "p2"
    assert md["failures"][f"{step}_failed"] == md["failures"][f"{step}_steps"] >= 1
    r = cli_in_process([*args, "--json"], monkeypatch, capsys)
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["success"] is False and out["status"] == "solver-failed" and out["message"].startswith("FAILED:")


def test_cli_learned_fo_keeps_the_first_order_point_when_the_polish_fails(tiny_model, tmp_path, monkeypatch,
                                                                            capsys):
    # --refine fo: the P2 polish only polishes a feasible first-order point; when its conic solve fails the point is
    # kept (feasible, success), the status and a warning say so, and the failure is counted as the AO counts P2 steps
    scen = _scenario().save(tmp_path / "s.npz")
    args = ["solve", "--scenario", scen, "--method", "learned", "--checkpoint", tiny_model, "--fo-steps", "5",
            "--no-progress"]
    from irs_torch.solvers import conic

    monkeypatch.setattr(conic, "run", lambda *a, **k: ("infeasible", 0.0))
    r = cli_in_process([*args, "-o", tmp_path / "fo.npz"], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    assert "status: first-order (P2 polish failed)" in r.stdout and "warning: the P2 polish failed" in r.stdout
    assert "NOT certified" in r.stdout
    md = Solution.load(tmp_path / "fo.npz").metadata
    assert md["success"] is True and md["failures"]["p2_failed"] == md["failures"]["p2_steps"] == 1


# ----------------------------------------------------------------------------- data sets
@pytest.mark.parametrize("method", ["transmit-only", "ao", "reflective-only", "passive"])
def test_failed_instances_are_labelled_and_left_out_of_the_training_split(method, tmp_path, monkeypatch):
    """A data set where every other solve has its conic solver failing: those instances are stored
    with success = 0 and status "solver-failed", the others with success = 1; the training split
    drops the failed ones by default and keeps them with require_success=False."""
    from pathlib import Path

    from irs_torch import solvers
    from irs_torch.data import ShardDataset, generate_dataset, load_config
    from irs_torch.data.datamodule import ShardDataModule
    from irs_torch.solvers import conic

    real_solve, real_run = solvers.solve, conic.run
    state = {"calls": 0, "fail": False}

    def run(prob, solver, eps, verbose=False, small=True, fallback=False):
        return ("infeasible", 0.0) if state["fail"] else real_run(prob, solver, eps, verbose, small, fallback)

    def solve_some_failing(scenario, *a, **k):
        state["fail"] = state["calls"] % 2 == 1
        state["calls"] += 1
        try:
            return real_solve(scenario, *a, **k)
        finally:
            state["fail"] = False

    monkeypatch.setattr(conic, "run", run)
    monkeypatch.setattr(solvers, "solve", solve_some_failing)
    yaml = Path(__file__).resolve().parents[1] / "training" / "tiny-data.yaml"
    solver = {"method": method, **({"p3": "sca-sdr", "sca_iter": 2} if method == "reflective-only" else
                                   {"max_iter": 2, "p3_steps": 20, "p3_starts": 2})}
    if method == "ao" and "effort" in {f.name for f in dataclasses.fields(SolverOptions)}:
        solver["effort"] = "legacy"  # one AO start: the labels' failure path, not the start search, is tested
    cfg = load_config(yaml).replace(solver=solver, shard_size=4)
    root = tmp_path / "data"
    n = 6
    generate_dataset(root, n, cfg, workers=1, progress=False, log=lambda m: None)
    assert state["calls"] == n
    ds = ShardDataset(root)
    items = [ds[i] for i in range(len(ds))]
    failed = {int(it["instance_id"]) for it in items if not bool(it["success"])}
    assert len(items) == n and len(failed) == n // 2
    assert all(it["status"] == "solver-failed" for it in items if int(it["instance_id"]) in failed)
    assert all(it["status"] in ("single-step", "converged", "max-iter") for it in items
               if int(it["instance_id"]) not in failed)
    dm = ShardDataModule(str(root), batch_size=4, fractions=(1.0, 0.0, 0.0), unlabelled_cache=False)
    train = dm.dataset("train")
    assert sorted(int(train[i]["instance_id"]) for i in range(len(train))) == sorted(set(range(n)) - failed)
    dm_all = ShardDataModule(str(root), batch_size=4, fractions=(1.0, 0.0, 0.0), require_success=False,
                             unlabelled_cache=False)
    assert len(dm_all.dataset("train")) == n


def test_inexact_p2_points_are_repaired_used_and_counted_not_failed(monkeypatch):
    """Every conic solve returns an "optimal" point 50% over the BS budget (fails the check). Such a
    point is repaired to exact feasibility and used, so the AO still improves on its start; the run
    is a success with every P2 step counted as inexact and a note in the message, not a failure."""
    from irs_torch.solvers import conic

    real = conic.run

    def inflate(prob, solver, eps, verbose=False, small=True, fallback=False):
        status, dt = real(prob, "CLARABEL", eps, verbose, small, False)
        for v in prob.variables():
            if v.name().startswith("Y") and v.value is not None:
                v.value = 1.5 * v.value
        return status, dt

    s = _scenario()
    monkeypatch.setattr(conic, "run", inflate)
    res = solve(s, "ao", options=_opts(effort="legacy"))
    f = res.failures
    assert res.success and res.status in ("converged", "max-iter"), (res.status, res.message)
    assert f["p2_failed"] == 0 and f["p2_steps"] >= 1 and f["p2_inexact"] == f["p2_steps"], f
    assert "note:" in res.message and "inexact" in res.message, res.message
    assert any(h["p2_accepted"] for h in res.history)  # the repaired points were used
    assert res.max_crb < res.init_max_crb
    _check_feasible_independently(s, res.R_s, res.psi)

"""Batch inference: `irs-torch scenario --count K`, `irs-torch solve` over a batched file or a
directory (one solutions file), equal to a loop of single solves; lazy imports (`--help` without
torch, `--refine none` without cvxpy); the portfolio of hypotheses. A tiny model (M = 4, 2 x 2, L = 2,
4 hypotheses) is made in seconds; no timing is asserted (scripts/bench_batch_inference.py prints them).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from irs_torch.learn import export_model
    from irs_torch.learn.module import WarmStartModule
    from irs_torch.scenario import Scenario, random_scenario

    root = tmp_path_factory.mktemp("batch")
    torch.manual_seed(0)
    m = WarmStartModule(M=4, N_h=2, N_v=2, L=2, hidden=16, depth=1, hypotheses=4)
    # a fitted normaliser from a few scenarios (no training needed for these tests)
    from irs_torch.learn.features import scenario_features

    scen = [random_scenario(seed=i, M=4, N_h=2, N_v=2) for i in range(6)]
    m.net.fit_normalizer(scenario_features(Scenario.stack(scen).to(torch.complex128)))
    ck = root / "m.ckpt"
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict(), "irs_torch": {}}, ck)
    model = export_model(ck, root / "m.pt")
    return {"root": root, "model": model, "scenarios": scen}


def _cli(args, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "IRS_TORCH_DEBUG"}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "irs_torch", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_scenario_count_writes_one_batched_file(tmp_path):
    from irs_torch.scenario import load_scenario, random_scenario

    r = _cli(["scenario", "--preset", "random", "--M", "4", "--N-h", "2", "--N-v", "2", "--seed", "3",
              "--count", "3", "-o", tmp_path / "b.npz"])
    assert r.returncode == 0, r.stderr
    b = load_scenario(tmp_path / "b.npz")
    assert tuple(b.batch_shape) == (3,)
    for i in range(3):  # item i is the scenario of seed 3 + i
        s = random_scenario(seed=3 + i, M=4, N_h=2, N_v=2)
        torch.testing.assert_close(b[i].G, s.G)
        torch.testing.assert_close(b[i].theta, s.theta)
    bad = _cli(["scenario", "--count", "0", "-o", tmp_path / "c.npz"])
    assert bad.returncode == 2 and "--count must be an integer in [1, " in bad.stderr


def test_batch_solve_network_only_equals_a_loop_of_single_solves(tiny, tmp_path):
    from irs_torch.inference import load_scenarios, solve_batch, solve_learned
    from irs_torch.scenario import Scenario

    batch = Scenario.stack(tiny["scenarios"])
    f = batch.save(tmp_path / "batch.npz")
    b, sources = load_scenarios(f)
    assert sources == [f"{f}[{i}]" for i in range(6)]
    res = solve_batch(b, "learned", checkpoint=tiny["model"], refine="none")
    assert res.R_s.shape == (6, 2, 4, 4) and res.psi.shape == (6, 2, 4) and bool(res.success.all())
    for i, s in enumerate(tiny["scenarios"]):
        one = solve_learned(s, checkpoint=tiny["model"], refine="none", verbose=False)
        # equal up to the float32 network's rounding (a batched matmul sums in another order)
        tol = dict(rtol=1e-5, atol=1e-6 * float(one.R_s.abs().max()))
        torch.testing.assert_close(res.R_s[i], one.R_s, **tol)
        torch.testing.assert_close(res.psi[i], one.psi, rtol=1e-5, atol=1e-6 * float(s.a_max))
        np.testing.assert_allclose(float(res.max_crb[i]), one.max_crb, rtol=1e-5)
        # feasibility, checked without the library's own margins: BS average power, |psi| <= a_max
        assert float(torch.diagonal(res.R_s[i], dim1=-2, dim2=-1).real.sum(-1).mean()) <= float(s.P_t) * (1 + 1e-9)
        assert float(res.psi[i].abs().max()) <= float(s.a_max) * (1 + 1e-9)
    # one directory of files = the same batch
    d = tmp_path / "dir"
    d.mkdir()
    for i, s in enumerate(tiny["scenarios"]):
        s.save(d / f"s{i:02d}.npz")
    bd, src = load_scenarios(d)
    assert [Path(x).name for x in src] == [f"s{i:02d}.npz" for i in range(6)]
    torch.testing.assert_close(bd.G, b.G)


def test_batch_solve_with_refinement_equals_single_solves(tiny):
    from irs_torch.inference import solve_batch, solve_learned
    from irs_torch.scenario import Scenario
    from irs_torch.solvers import SolverOptions

    scen = tiny["scenarios"][:2]
    opts = SolverOptions(max_iter=1)
    res = solve_batch(Scenario.stack(scen), "learned", checkpoint=tiny["model"], refine="ao", options=opts,
                      refine_iter=1)
    for i, s in enumerate(scen):
        one = solve_learned(s, checkpoint=tiny["model"], refine="ao", options=opts, refine_iter=1, verbose=False)
        np.testing.assert_allclose(float(res.max_crb[i]), one.max_crb, rtol=1e-4)
        assert res.nit[i] == one.nit


def test_cli_batch_solve_writes_one_solutions_file(tiny, tmp_path):
    from irs_torch.scenario import Scenario, Solution

    f = Scenario.stack(tiny["scenarios"]).save(tmp_path / "batch.npz")
    out = tmp_path / "sol.npz"
    r = _cli(["solve", "--scenario", f, "--method", "learned", "--refine", "none", "--checkpoint", tiny["model"],
              "-o", out, "--json"])
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["count"] == 6 and rep["success"] == 6 and rep["output"] == str(out)
    sol = Solution.load(out)
    assert sol.R_s.shape == (6, 2, 4, 4) and sol.crb.shape == (6, 2) and sol.method == "learned"
    assert sol.metadata["batch"] == 6 and len(sol.metadata["sources"]) == 6
    np.testing.assert_allclose(sol.crb.amax(-1).numpy(), rep["max_crb"], rtol=1e-12)
    # the stored CRBs are those of the stored designs (recomputed here per item)
    for i, s in enumerate(tiny["scenarios"]):
        c = s.to(torch.complex128).crb(sol.R_s[i], sol.psi[i]).total
        np.testing.assert_allclose(sol.crb[i].numpy(), c.numpy(), rtol=1e-9)
    # --index still picks one item
    r1 = _cli(["solve", "--scenario", f, "--index", "2", "--method", "learned", "--refine", "none",
               "--checkpoint", tiny["model"], "--json"])
    assert r1.returncode == 0, r1.stderr[-3000:]
    np.testing.assert_allclose(json.loads(r1.stdout)["max_crb"], rep["max_crb"][2], rtol=1e-5)


_PROBE = ("import sys\nfrom irs_torch.cli import main\n"
          "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
          "print('MODULES=' + ','.join(m for m in ('torch', 'cvxpy', 'lightning') if m in sys.modules),\n"
          "      file=sys.stderr)\n"
          "sys.exit(rc or 0)\n")


def _modules(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    line = [x for x in r.stderr.splitlines() if x.startswith("MODULES=")][-1]
    return r, set(filter(None, line[len("MODULES="):].split(",")))


def test_help_imports_no_torch_and_network_only_imports_no_cvxpy(tiny, tmp_path):
    r, mods = _modules(["--help"])
    assert r.returncode == 0 and "solve" in r.stdout, r.stderr[-2000:]
    assert not mods & {"torch", "cvxpy", "lightning"}, mods
    f = tiny["scenarios"][0].save(tmp_path / "one.npz")
    r, mods = _modules(["solve", "--scenario", f, "--method", "learned", "--refine", "none",
                        "--checkpoint", tiny["model"], "--json"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch" in mods and "cvxpy" not in mods and "lightning" not in mods, mods
    fb = Scenario_stack_save(tiny, tmp_path)
    r, mods = _modules(["solve", "--scenario", fb, "--method", "learned", "--refine", "none",
                        "--checkpoint", tiny["model"], "--json"])
    assert r.returncode == 0 and "cvxpy" not in mods, (r.stderr[-3000:], mods)
    # the check can fail: a refinement does import the conic solver
    r, mods = _modules(["solve", "--scenario", f, "--method", "learned", "--refine", "ao", "--max-iter", "1",
                        "--checkpoint", tiny["model"], "--json"])
    assert r.returncode == 0 and "cvxpy" in mods, (r.stderr[-3000:], mods)


def Scenario_stack_save(tiny, tmp_path):  # noqa: N802
    from irs_torch.scenario import Scenario

    return Scenario.stack(tiny["scenarios"][:3]).save(tmp_path / "b3.npz")


def test_portfolio_refines_k_hypotheses_and_keeps_the_best(tiny):
    from irs_torch.inference import network_hypotheses, refine_starts, solve_learned
    from irs_torch.learn import load_model
    from irs_torch.solvers import SolverOptions

    s = tiny["scenarios"][1].to(torch.complex128)
    net = load_model(tiny["model"], s)
    hyp = network_hypotheses(net, s, 3)
    assert len(hyp) == 3
    c = [float(s.max_crb(R, psi)) for R, psi in hyp]
    assert c[0] <= min(c[1:]) * (1 + 1e-9) and c[1] <= c[2] * (1 + 1e-12)  # combined first, then best singles
    for R, psi in hyp:
        assert bool(s.is_feasible(R, psi, rtol=1e-6))
    with pytest.raises(ValueError, match=r"hypotheses must be an integer in \[1, 5\]"):
        network_hypotheses(net, s, 6)
    opts = SolverOptions(max_iter=1)
    res = solve_learned(s, net=net, refine="ao", hypotheses=3, options=opts, refine_iter=1, verbose=False)
    runs = res.options["portfolio"]
    assert len(runs) == 3 and res.options["hypotheses"] == 3
    np.testing.assert_allclose([r["start_max_crb"] for r in runs], c, rtol=1e-6)
    assert res.max_crb == pytest.approx(min(r["max_crb"] for r in runs if r["success"]), rel=1e-12)
    single, _ = refine_starts(s, hyp[:1], opts, 1)
    assert res.max_crb <= single.max_crb * (1 + 1e-12)


def test_solve_help_states_the_library_default_of_fo_steps():
    """The CLI's help names the default without importing torch; it must be the library's."""
    import re
    import subprocess
    import sys

    from irs_torch.inference import FO_STEPS

    out = subprocess.run([sys.executable, "-m", "irs_torch", "solve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"first- ?order steps \(default (\d+);", " ".join(out.split()))
    assert m and int(m.group(1)) == FO_STEPS, out

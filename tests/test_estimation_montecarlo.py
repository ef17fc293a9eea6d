"""Monte Carlo study and the montecarlo / montecarlo-sweep commands.

Two physics claims are checked here: at high SNR the ML estimator reaches the CRB
(each angle's MSE/CRB within [0.8, 1.25] over 500 trials and their mean within [0.88, 1.12]), and on
the paper scenario the optimised design localises better than the isotropic ones."""
from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest

from irs_torch import Solution, load_scenario, paper_scenario
from irs_torch.cli import main
from irs_torch.estimation import run_monte_carlo
from irs_torch.estimation.designs import adam_design
from irs_torch.solvers.baselines import aligned_psi


def test_summary_keys_shapes_and_seed():
    s = paper_scenario(0)
    R = s.isotropic_design()
    psi = aligned_psi(s, R)
    a = run_monte_carlo(s, R, psi, 60, seed=3, chunk=25, progress=False)
    b = run_monte_carlo(s, R, psi, 60, seed=3, chunk=25, progress=False)
    c = run_monte_carlo(s, R, psi, 60, seed=4, chunk=25, progress=False)
    for k in ("mse_theta", "mse_phi", "crb_theta", "crb_phi", "outlier_fraction", "z1_noise_ratio"):
        assert len(a.summary[k]) == s.L
    assert a.summary["seed"] == 3 and a.summary["trials"] == 60
    assert a.arrays["theta_hat"].shape == (60, 2) and a.arrays["position_hat"].shape == (60, 3)
    assert a.summary == {**b.summary, "seconds": a.summary["seconds"]}
    assert a.summary["mse_theta"] != c.summary["mse_theta"]
    # the reported numbers are what the per-trial arrays say
    e = a.arrays["theta_hat"] - s.theta
    np.testing.assert_allclose(a.summary["mse_theta"], (e ** 2).mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(a.summary["position_rmse"],
                               float((a.arrays["position_hat"] - s.target_pos).norm(dim=-1).pow(2).mean().sqrt()))
    np.testing.assert_allclose(a.summary["crb_phi"], s.crb(R, psi).phi.numpy(), rtol=1e-12)


def test_ml_reaches_the_crb_at_high_snr():
    """Paper scenario with P_t = 1e6 W and P_s = 5e3 W (P_s / P_t kept at the paper's 0.005: with
    P_s fixed, C1 binds and raising P_t alone stops lowering the CRB), target-aligned design."""
    s = paper_scenario(0, P_t=1e6, P_s=5e3)
    R = s.isotropic_design()
    psi = aligned_psi(s, R)
    r = run_monte_carlo(s, R, psi, 500, seed=0, progress=False).summary
    crbs = r["crb_theta"] + r["crb_phi"]
    assert max(crbs) < 1e-5
    ratios = r["mse_over_crb_theta"] + r["mse_over_crb_phi"]
    # Windows from the spread over seeds 0-19 of this exact setting (500 trials each; measured): each
    # MSE/CRB ratio has mean 0.99 and std 0.06 (sqrt(2/500) for an efficient estimator), their mean
    # over the four angles std 0.039, position RMSE / PEB std 0.027. Each window is >= 3 std wide on
    # either side of 1, so any seed passes with high probability, while an estimator that loses 20%
    # efficiency (MSE 1.2x the CRB) fails the pooled window. The seed is fixed: the test is deterministic.
    assert all(0.8 < x < 1.25 for x in ratios), ratios
    assert 0.88 < float(np.mean(ratios)) < 1.12, ratios
    assert max(r["outlier_fraction"]) <= 0.01  # > 4 root-CRB errors: ~1e-4 per angle if Gaussian
    assert r["search_failure_fraction"] == [0.0, 0.0]
    # position: Stansfield with CRB weights is efficient at high SNR too
    assert 0.92 < r["position_rmse"] / r["peb"] < 1.08, (r["position_rmse"], r["peb"])


def test_music_does_not_beat_the_bound():
    s = paper_scenario(0, P_t=1e6, P_s=5e3)
    R = s.isotropic_design()
    psi = aligned_psi(s, R)
    r = run_monte_carlo(s, R, psi, 300, seed=1, estimator="music", progress=False).summary
    ratios = r["mse_over_crb_theta"] + r["mse_over_crb_phi"]
    assert all(0.75 < x < 10 for x in ratios), ratios


def test_optimised_design_localises_better_than_isotropic():
    s = paper_scenario(0)
    R_opt, psi_opt = adam_design(s, steps=200, seed=0)
    assert bool(s.is_feasible(R_opt, psi_opt, rtol=1e-6))
    R = s.isotropic_design()
    res = {}
    for name, (Rd, pd) in {"optimised": (R_opt, psi_opt), "isotropic-random": (R, s.random_phase_design(R, 0)),
                           "isotropic-aligned": (R, aligned_psi(s, R))}.items():
        res[name] = run_monte_carlo(s, Rd, pd, 500, seed=0, progress=False).summary
    for iso in ("isotropic-random", "isotropic-aligned"):
        assert res["optimised"]["peb"] < res[iso]["peb"]
        assert res["optimised"]["position_rmse"] < res[iso]["position_rmse"], (iso, res)
        assert res["optimised"]["position_error_median"] < res[iso]["position_error_median"]


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture()
def paper_file(tmp_path):
    return str(paper_scenario(0).save(tmp_path / "paper.npz"))


def test_cli_json_report(paper_file, tmp_path, capsys):
    s = load_scenario(paper_file)
    R = s.isotropic_design()
    sol = Solution.evaluate(s, R, aligned_psi(s, R), method="aligned")
    sp = str(sol.save(tmp_path / "sol.npz"))
    rc = main(["montecarlo", "--scenario", paper_file, "--solution", sp, "--trials", "40", "--seed", "5",
               "--json", "--no-progress", "--save", str(tmp_path / "mc.npz")])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    for k in ("mse_theta", "mse_phi", "crb_theta", "crb_phi"):
        assert isinstance(rep[k], list) and len(rep[k]) == 2 and all(x > 0 for x in rep[k])
    assert rep["position_rmse"] > 0 and rep["peb"] > 0 and rep["seed"] == 5 and rep["trials"] == 40
    np.testing.assert_allclose(rep["crb_theta"], sol.arrays["crb_theta"].numpy(), rtol=1e-10)
    with np.load(tmp_path / "mc.npz") as z:
        assert z["theta_hat"].shape == (40, 2)
        assert json.loads(str(z["summary"]))["seed"] == 5


def test_cli_text_report_and_errors(paper_file, tmp_path, capsys):
    assert main(["montecarlo", "--scenario", paper_file, "--trials", "20", "--no-progress",
                 "--design", "isotropic-aligned", "--estimator", "music"]) == 0
    out = capsys.readouterr().out
    assert "position RMSE" in out and "PEB" in out and "music" in out
    try:  # a bad flag value: exit status 2, returned or raised by argparse
        rc = main(["montecarlo", "--scenario", paper_file, "--trials", "0"])
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    assert re.search(r"--trials must be .*got 0", capsys.readouterr().err)
    other = paper_scenario(0, M=8).save(tmp_path / "m8.npz")
    s8 = load_scenario(other)
    Solution.evaluate(s8, s8.isotropic_design(), s8.random_phase_design()).save(tmp_path / "s8.npz")
    assert main(["montecarlo", "--scenario", paper_file, "--solution", str(tmp_path / "s8.npz"),
                 "--trials", "5"]) == 2
    assert "M=16" in capsys.readouterr().err


def test_cli_sweep_writes_csv_png_and_resumes(paper_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["montecarlo-sweep", "--scenario", paper_file, "--out", str(out), "--pt", "20,2000",
            "--designs", "adam,isotropic-aligned", "--adam-steps", "15", "--trials", "30", "--no-progress"]
    assert main(args) == 0
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {r["design"] for r in rows} == {"adam", "isotropic-aligned"}
    r = [r for r in rows if r["design"] == "isotropic-aligned" and float(r["P_t"]) == 2000][0]
    assert math.isclose(float(r["P_s"]), 10.0)  # scaled with P_t (0.1 W at 20 W)
    assert float(r["peb"]) > 0 and float(r["mse_theta_1"]) > 0
    assert (out / "sweep.png").stat().st_size > 10_000
    runs = sorted((out / "runs").glob("*.npz"))
    assert len(runs) == 4
    mtimes = [p.stat().st_mtime_ns for p in runs]
    capsys.readouterr()
    assert main(args) == 0  # resume: nothing recomputed
    assert [p.stat().st_mtime_ns for p in runs] == mtimes
    assert main(args[:-1] + ["--pt", "20,x"]) == 2
    assert "--pt must be comma-separated numbers" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_ml_reaches_the_crb_for_the_optimised_design_at_high_snr():
    s = paper_scenario(0, P_t=2e5, P_s=1e3)
    R, psi = adam_design(s, steps=300, seed=0)
    r = run_monte_carlo(s, R, psi, 2000, seed=2, progress=False).summary
    assert max(r["crb_theta"] + r["crb_phi"]) < 1e-5
    ratios = r["mse_over_crb_theta"] + r["mse_over_crb_phi"]
    assert all(0.85 < x < 1.2 for x in ratios), ratios  # 2000 trials: ~3% spread
    assert 0.9 < r["position_rmse"] / r["peb"] < 1.1


@pytest.mark.slow
def test_benchmark_thousand_trials_under_a_minute():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_montecarlo.py"
    spec = importlib.util.spec_from_file_location("bench_montecarlo", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--trials", "1000", "--json"]) == 0

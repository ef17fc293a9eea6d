"""Tracking loop: filter consistency, measurement model, loop, CLI, resume."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from irs_torch.errors import InputError
from irs_torch.tracking.filter import TrackFilter, anees_bounds, nees

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- filter consistency
def _nees_runs(filter_R_scale: float, runs: int = 60, steps: int = 40, seed: int = 7):
    """Straight line (constant velocity, no process noise), position measurements with a known
    covariance R_t that changes every step (random orientation and size, as the loop's R does).
    The filter is told ``filter_R_scale * R_t``. Returns the NEES of the 4-d state, (runs, steps)."""
    rng = np.random.default_rng(seed)
    dt = 0.1
    x0 = np.array([2.0, 3.0, 5.0, 1.0])  # [x, vx, y, vy]
    F = np.array([[1, dt, 0, 0], [0, 1, 0, 0], [0, 0, 1, dt], [0, 0, 0, 1.0]])
    P0 = np.diag([1.0, 4.0, 1.0, 4.0])
    Rs = []
    for _ in range(steps):
        a = rng.uniform(0, np.pi)
        U = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        Rs.append(U @ np.diag(rng.uniform(0.05, 1.0, 2)) @ U.T)
    out = np.zeros((runs, steps))
    for i in range(runs):
        f = TrackFilter(dt, process_noise=0.0)
        m0 = x0 + rng.multivariate_normal(np.zeros(4), P0)  # the prior contains the truth
        f.initialise(m0, P0, 0)
        x = x0.copy()
        for t in range(steps):
            if t > 0:
                x = F @ x
                f.predict(t)
            z = x[[0, 2]] + rng.multivariate_normal(np.zeros(2), Rs[t])
            f.update(z, filter_R_scale * Rs[t], gated=False)
            out[i, t] = nees(x, f.mean, f.covar)
    return out


def test_filter_nees_inside_chi2_bounds_on_a_straight_line():
    e = _nees_runs(1.0)
    lo, hi = anees_bounds(e.shape[0], 4, 0.95)
    anees = e.mean(0)
    inside = np.mean((anees >= lo) & (anees <= hi))
    assert inside >= 0.85, (inside, lo, hi, anees)  # 95% nominal per step
    # the grand average over runs and steps is near the state dimension
    assert 3.4 < e.mean() < 4.6


@pytest.mark.parametrize("scale, side", [(0.25, "above"), (4.0, "below")])
def test_filter_nees_check_detects_a_misspecified_R(scale, side):
    e = _nees_runs(scale)
    lo, hi = anees_bounds(e.shape[0], 4, 0.95)
    anees = e.mean(0)
    inside = np.mean((anees >= lo) & (anees <= hi))
    assert inside < 0.5, inside
    assert (np.median(anees) > hi) if side == "above" else (np.median(anees) < lo)


def test_gate_rejects_outliers_and_declares_a_lost_track():
    f = TrackFilter(0.1, process_noise=1.0, gate_probability=0.999, gate_misses=3)
    f.initialise([0, 0, 0, 0], np.eye(4) * 0.01, 0)
    for t in range(1, 4):
        f.predict(t)
        u = f.update([50.0, 50.0], np.eye(2) * 0.01)
        assert not u["accepted"] and u["nis"] > f.gate
    assert u["lost"] and u["misses"] == 3
    f.predict(4)
    u = f.update(f.position() + 0.01, np.eye(2) * 0.01)
    assert u["accepted"] and not u["lost"] and u["misses"] == 0


# ----------------------------------------------------------------------------- measurement model
def test_stansfield_in_plane_and_its_covariance_match_a_monte_carlo():
    """Angle errors drawn from the per-IRS CRB give fixes whose covariance is F_xy^-1 (the R the
    tracker uses), and noise-free angles give the exact position."""
    import torch

    from irs_torch.estimation import angle_covariance_bound
    from irs_torch.tracking import load_scenario
    from irs_torch.tracking.measurement import position_covariance, stansfield_in_plane

    s, _ = load_scenario("paper")
    s = s.replace(T_c=s.T_c * 100)
    R_s = s.isotropic_design()
    psi = s.random_phase_design(R_s, seed=1)
    truth = np.asarray(s.target_pos)
    th, ph = s.theta.numpy(), s.phi.numpy()
    C = angle_covariance_bound(s, R_s, psi).numpy()
    x = stansfield_in_plane(s.irs_pos, s.irs_yaw, th, ph, truth[2], C[:, 0, 0], C[:, 1, 1])
    np.testing.assert_allclose(x, truth[:2], atol=1e-9)
    rng = np.random.default_rng(3)
    fixes = []
    for _ in range(800):
        d = np.stack([rng.multivariate_normal(np.zeros(2), C[l]) for l in range(s.L)])
        fixes.append(stansfield_in_plane(s.irs_pos, s.irs_yaw, th + d[:, 0], ph + d[:, 1], truth[2],
                                         C[:, 0, 0], C[:, 1, 1]))
    fixes = np.array(fixes)
    emp = np.cov((fixes - truth[:2]).T)
    R = position_covariance(s, R_s, psi)
    # sampling error of an 800-draw covariance ~ 5%; the linearisation adds little at these errors
    np.testing.assert_allclose(np.trace(emp), np.trace(R), rtol=0.15)
    np.testing.assert_allclose(np.linalg.eigvalsh(emp), np.linalg.eigvalsh(R), rtol=0.25)
    assert torch.is_tensor(s.theta)


# ----------------------------------------------------------------------------- trajectories
def test_waypoint_trajectory_constant_speed_and_stop():
    from irs_torch.tracking.trajectory import Trajectory, parse_waypoints

    tr = Trajectory.waypoints(parse_waypoints("0,0; 3,0; 3,4"), speed=2.0, dt=0.5)
    p = tr.positions(10)
    step = np.linalg.norm(np.diff(p[:, :2], axis=0), axis=1)
    np.testing.assert_allclose(p[2], [2.0, 0.0, 0.0])
    np.testing.assert_allclose(p[4], [3.0, 1.0, 0.0])  # the corner is passed at s = 3
    np.testing.assert_allclose(p[-1], [3.0, 4.0, 0.0])  # stopped at the last waypoint (s = 7)
    assert (step <= 1.0 + 1e-12).all()
    with pytest.raises(InputError, match="--waypoints"):
        parse_waypoints("1,2;nan,3")
    with pytest.raises(InputError, match="--waypoints"):
        parse_waypoints("1,2")


# ----------------------------------------------------------------------------- the loop
CONTRACT = {"policy": str, "steps": int, "position_rmse": float, "peb_rms": float, "design_seconds_median": float,
            "seed": int, "config": dict, "version": str, "records": str, "lost_tracks": int, "lost_track_events": list}


def _cfg(steps=3, policies=("isotropic", "ao"), seed=0, **kw):
    from irs_torch.tracking import default_trajectory, load_scenario
    from irs_torch.tracking.loop import TrackConfig

    s, name = load_scenario("tiny")
    return TrackConfig(scenario=s, trajectory=default_trajectory(s), steps=steps, policies=list(policies), seed=seed,
                       scenario_name=name, **kw)


def test_loop_runs_end_to_end_on_the_tiny_scenario(tmp_path):
    from irs_torch.tracking import track

    cfg = _cfg(steps=3, policies=("isotropic", "ao"))
    res = track(cfg, tmp_path / "run", plots=True)
    assert res["policy"] == "isotropic,ao" and res["steps"] == 3
    for name in ("isotropic", "ao"):
        s = res["results"][name]
        for k, typ in CONTRACT.items():
            if k in s:
                assert isinstance(s[k], typ), (k, s[k])
        assert s["blocks"] == 3 and math.isfinite(s["position_rmse"]) and s["peb_rms"] > 0
    assert isinstance(res["position_rmse"], dict) and set(res["position_rmse"]) == {"isotropic", "ao"}
    recs = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert len(recs) == 6
    by = {(r["policy"], r["t"]): r for r in recs}
    for t in range(3):  # common random numbers: the same truth and echo draws for both policies
        assert by[("isotropic", t)]["echo_seed"] == by[("ao", t)]["echo_seed"]
        assert by[("isotropic", t)]["truth"] == by[("ao", t)]["truth"]
        assert by[("isotropic", t)]["design_seed"] == by[("ao", t)]["design_seed"]
    assert len({by[("ao", t)]["echo_seed"] for t in range(3)}) == 3
    # the AO designs for the target and so beats the fixed isotropic design's bound
    assert res["results"]["ao"]["peb_rms"] < res["results"]["isotropic"]["peb_rms"]
    for f in ("steps.csv", "summary.json", "trajectory.png", "rmse.png", "error_cdf.png"):
        assert (tmp_path / "run" / f).stat().st_size > 0
    json.loads((tmp_path / "run" / "summary.json").read_text())


def _strip(recs):
    return [{k: v for k, v in r.items() if k != "design_seconds"} for r in recs]


def test_resume_after_a_cut_last_line_gives_the_uninterrupted_records(tmp_path):
    from irs_torch.tracking.loop import RECORDS, run_tracking

    full = run_tracking(_cfg(steps=4, policies=("isotropic",), trajectories=2), tmp_path / "a")
    lines = (tmp_path / "a" / RECORDS).read_text().splitlines()
    assert len(lines) == 8
    # an interrupted run: the first 2 blocks of both trajectories, then half a line (killed mid-write)
    part = run_tracking(_cfg(steps=2, policies=("isotropic",), trajectories=2), tmp_path / "b")
    assert len(part["records"]) == 4
    cut = json.dumps(full["records"][2])[:57]  # trajectory 0, block 2, cut
    with open(tmp_path / "b" / RECORDS, "a") as fh:
        fh.write(cut)
    res = run_tracking(_cfg(steps=4, policies=("isotropic",), trajectories=2), tmp_path / "b")
    assert res["resumed"] == 4 and res["dropped_lines"] == 1
    lines_b = (tmp_path / "b" / RECORDS).read_text().splitlines()
    recs_b = [json.loads(x) for x in lines_b]  # every line parses
    keys = [(r["policy"], r["m"], r["t"]) for r in recs_b]
    assert len(keys) == len(set(keys)) == 8  # no duplicates
    assert _strip(res["records"]) == _strip(full["records"])
    # a rerun with nothing left to do changes nothing
    again = run_tracking(_cfg(steps=4, policies=("isotropic",), trajectories=2), tmp_path / "b")
    assert again["resumed"] == 8 and (tmp_path / "b" / RECORDS).read_text().splitlines() == lines_b


def test_records_of_another_configuration_are_refused(tmp_path):
    from irs_torch.tracking.loop import run_tracking

    run_tracking(_cfg(steps=1, policies=("isotropic",)), tmp_path / "a")
    with pytest.raises(InputError, match="another run configuration"):
        run_tracking(_cfg(steps=1, policies=("isotropic",), seed=1), tmp_path / "a")


def test_learned_policy_without_a_model_for_the_sizes_is_a_clear_error(tmp_path, monkeypatch):
    from irs_torch.tracking.loop import run_tracking

    (tmp_path / "models").mkdir()
    monkeypatch.setenv("IRS_TORCH_CHECKPOINTS", str(tmp_path / "models"))  # no model at all (the shipped any-size
    with pytest.raises(InputError, match="--policy learned"):  # model would cover every size)
        run_tracking(_cfg(steps=1, policies=("learned",)), tmp_path / "a")


# ----------------------------------------------------------------------------- command line
def test_cli_contract_json(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "irs_torch.cli", "track", "--scenario", "tiny", "--steps", "2",
                        "--policy", "isotropic", "--seed", "5", "--json", "--no-plots", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for k, typ in CONTRACT.items():
        assert isinstance(d[k], typ), (k, d.get(k))
    assert d["policy"] == "isotropic" and d["steps"] == 2 and d["seed"] == 5 and d["config"]["seed"] == 5
    assert Path(d["records"]).exists() and Path(d["files"]["records_csv"]).exists()


@pytest.mark.parametrize("args, field", [
    (["--steps", "0"], "--steps"),
    (["--steps", "2", "--policy", "kalman"], "--policy"),
    (["--steps", "2", "--waypoints", "4,9;nan,12"], "--waypoints"),
    (["--steps", "-3"], "--steps"),
    (["--steps", "2", "--start", "4,9"], "--velocity"),
])
def test_bad_inputs_exit_2_naming_the_field(args, field, tmp_path, capsys):
    from irs_torch.cli import main

    try:
        rc = main(["track", "--scenario", "tiny", "--out", str(tmp_path / "o"), *args])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    assert rc == 2
    assert field in capsys.readouterr().err


def test_trajectory_leaving_the_scenario_is_an_error(tmp_path, capsys):
    from irs_torch.cli import main

    rc = main(["track", "--scenario", "tiny", "--steps", "3", "--policy", "isotropic", "--out", str(tmp_path / "o"),
               "--waypoints", "4,9;-20,9", "--speed", "100"])
    assert rc == 2
    assert "trajectory" in capsys.readouterr().err

"""The `irs-torch scenario` and `irs-torch crb` commands (in process, plus one real subprocess)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from irs_torch import Solution, load_scenario, paper_scenario, random_scenario
from irs_torch.cli import main

from helpers import run_cli


def test_scenario_command_writes_the_preset(tmp_path, capsys):
    f = tmp_path / "paper.npz"
    rc, out, _ = run_cli(capsys, "scenario", "--preset", "paper", "--seed", "3", "-o", str(f), "--M", "8", "--mat")
    assert rc == 0 and "seed=3" in out and "M=8" in out
    s = load_scenario(f)
    ref = paper_scenario(seed=3, M=8)
    assert torch.equal(s.G, ref.G) and torch.equal(s.beta, ref.beta)
    assert s.seed == 3 and s.preset == "paper"
    assert (tmp_path / "paper.mat").exists()
    rc, _, _ = run_cli(capsys, "scenario", "--preset", "random", "--seed", "5", "-o", str(tmp_path / "r.npz"),
                    "--P-t", "7.5", "--passive")
    r = load_scenario(tmp_path / "r.npz")
    assert rc == 0 and r.preset == "random" and r.seed == 5 and float(r.P_t) == 7.5
    assert not r.active and float(r.sigma_r2) == 0.0
    assert torch.equal(r.target_pos, random_scenario(5).target_pos)


def test_crb_command_json_matches_library(tmp_path, capsys):
    f = tmp_path / "s.npz"
    paper_scenario(seed=1).save(f)
    rc, out, _ = run_cli(capsys, "crb", "--scenario", str(f), "--json")
    assert rc == 0
    rep = json.loads(out)
    for k in ("crb", "crb_angles", "irs_power", "bs_power", "max_crb"):
        assert k in rep, k
    s = load_scenario(f)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=0)
    c = s.crb(R, psi)
    np.testing.assert_allclose(rep["crb"], c.total.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rep["crb_angles"], c.angles.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rep["irs_power"], s.irs_power(R, psi).numpy(), rtol=1e-12)
    assert rep["bs_power"] == pytest.approx(20.0) and rep["max_crb"] == pytest.approx(max(rep["crb"]))
    assert rep["root_crb_theta_deg"][0] == pytest.approx(math.degrees(math.sqrt(rep["crb_theta"][0])))
    # the text form prints the same numbers
    rc, out, _ = run_cli(capsys, "crb", "--scenario", str(f))
    assert rc == 0 and f"{rep['crb'][0]:.4e}" in out and "max-CRB" in out


def test_crb_command_with_solution(tmp_path, capsys):
    s = paper_scenario(seed=2)
    s.save(tmp_path / "s.npz")
    R = s.isotropic_design() * 0.5
    psi = s.random_phase_design(R, seed=9)
    Solution.evaluate(s, R, psi, method="test").save(tmp_path / "sol.npz")
    rc, out, _ = run_cli(capsys, "crb", "--scenario", str(tmp_path / "s.npz"), "--solution", str(tmp_path / "sol.npz"),
                      "--json")
    rep = json.loads(out)
    assert rc == 0 and rep["bs_power"] == pytest.approx(10.0)
    np.testing.assert_allclose(rep["crb"], s.crb(R, psi).total.numpy(), rtol=1e-12)


def test_cli_errors_are_one_line(tmp_path, capsys):
    # unknown preset: argparse rejects it (exit 2) naming the value
    with pytest.raises(SystemExit) as e:
        main(["scenario", "--preset", "nowhere", "-o", str(tmp_path / "x.npz")])
    assert e.value.code == 2 and "nowhere" in capsys.readouterr().err
    # missing and corrupt scenario files
    rc, _, err = run_cli(capsys, "crb", "--scenario", str(tmp_path / "missing.npz"))
    assert rc == 2 and err.startswith("irs-torch: error:") and "missing.npz" in err
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    rc, _, err = run_cli(capsys, "crb", "--scenario", str(tmp_path / "bad.npz"))
    assert rc == 2 and "bad.npz" in err and "Traceback" not in err
    # a solution for another array size
    paper_scenario(seed=0).save(tmp_path / "s16.npz")
    small = paper_scenario(seed=0, M=8)
    R = small.isotropic_design()
    Solution.evaluate(small, R, small.random_phase_design(R)).save(tmp_path / "sol8.npz")
    rc, _, err = run_cli(capsys, "crb", "--scenario", tmp_path / "s16.npz", "--solution", tmp_path / "sol8.npz")
    assert rc == 2 and "sol8.npz" in err and "M=16" in err
    # an invalid override
    rc, _, err = run_cli(capsys, "scenario", "-o", str(tmp_path / "y.npz"), "--P-s", "-1")
    assert rc == 2 and "P_s" in err and "-1" in err


def test_entry_point_subprocess(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "s.npz"
    p = subprocess.run([sys.executable, "-m", "irs_torch", "scenario", "--seed", "4", "-o", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "irs_torch", "crb", "--scenario", str(out), "--json"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["crb"]) == 2

"""Bad inputs, as a hostile user would try them: each gets a one-line error naming the
field (exit 2), a clearly marked internal error (exit 3), or correct behaviour; never a traceback,
a silent wrong result or an overwritten input.

CLI cases run in process (``irs_torch.cli.main``) on small scenarios (M=4, 2x2 IRSs) and stop at
validation, before any solve or simulation, so the module stays fast.
"""
from __future__ import annotations

import json
import math
import os
import stat
import subprocess

import numpy as np
import pytest
import torch

from irs_torch import Scenario, Solution, load_scenario, paper_scenario, scenario_from_dict
from irs_torch.errors import InputError
from irs_torch.outputs import check_output_path, dumps, json_safe, same_file

from helpers import run_cli

SMALL = {"M": 4, "N_h": 2, "N_v": 2}


def _assert_user_error(rc, err, *needles, one_line=True):
    """Exit 2, no traceback, the error line names every needle."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "no error message"
    if one_line:
        assert len(lines) == 1, err
    last = lines[-1]
    assert "error:" in last, err
    for n in needles:
        assert n in last, (n, last)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    s = paper_scenario(0, **SMALL)
    good = s.save(d / "good.npz")
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=0)
    sol = Solution.evaluate(s, R, psi, method="test").save(d / "sol.npz")
    return {"dir": d, "scenario": s, "good": good, "sol": sol, "R": R, "psi": psi}


def _write(files, name, change=None, drop=()):
    d = files["scenario"].to_dict()
    d.update(change or {})
    for k in drop:
        d.pop(k)
    path = files["dir"] / f"{name}.npz"
    np.savez(path, **d)
    return path


# --------------------------------------------------------------------------- scenario files
def _shift(k, by):
    return lambda s: {k: s.to_dict()[k] + by}


SCENARIO_DEFECTS = {
    # per-IRS budgets (shape (L,)) were read as a batch dimension: now one-line errors
    "per-irs-P_s": (lambda s: {"P_s": np.array([0.1, 0.2])}, ("P_s", "(2,)")),
    "per-irs-P_t": (lambda s: {"P_t": np.array([20.0, 10.0])}, ("P_t", "(2,)")),
    "per-irs-sigma_r2": (lambda s: {"sigma_r2": np.array([1e-11, 1e-11])}, ("sigma_r2", "(2,)")),
    "per-irs-sigma_b2": (lambda s: {"sigma_b2": np.array([1e-11, 1e-11])}, ("sigma_b2", "(2,)")),
    "per-irs-a_max": (lambda s: {"a_max": np.array([8.0, 4.0])}, ("a_max", "(2,)")),
    "budget-matrix": (lambda s: {"P_t": np.ones((2, 2))}, ("P_t", "(2, 2)")),
    # integers must be integers
    "M-not-integer": (lambda s: {"M": np.array(4.7)}, ("M must be an integer", "4.7")),
    "N_h-not-integer": (lambda s: {"N_h": np.array(2.5)}, ("N_h must be an integer", "2.5")),
    "N_v-not-integer": (lambda s: {"N_v": np.array(1.5)}, ("N_v must be an integer",)),
    "M-vector": (lambda s: {"M": np.array([4, 4])}, ("M", "scalar")),
    # contradictory L
    "L-contradicts-G": (lambda s: {"L": np.array(3)}, ("L is 3", "2 IRSs")),
    "L-not-integer": (lambda s: {"L": np.array(2.5)}, ("L",)),
    # angles must agree with the stored geometry
    "theta-vs-geometry": (_shift("theta", np.array([1e-3, 0.0])), ("theta of IRS 1", "geometry")),
    "phi-vs-geometry": (_shift("phi", np.array([0.0, -0.2])), ("phi of IRS 2", "geometry")),
    "theta-off-by-1e-7": (_shift("theta", np.array([0.0, 1e-7])), ("theta of IRS 2",)),
    "target-moved": (lambda s: {"target_pos": np.array([5.0, 14.0, 0.0])}, ("phi of IRS 1", "geometry")),
    # NaN / inf / zero / negative values
    "nan-channel": (lambda s: {"G": np.where(np.arange(4) == 1, np.nan, 1.0) * s.to_dict()["G"]},
                    ("G contains NaN",)),
    "inf-beta": (lambda s: {"beta": np.array([np.inf, 1.0]) * s.to_dict()["beta"]}, ("beta contains NaN or inf",)),
    "zero-beta": (lambda s: {"beta": np.zeros(2, complex)}, ("beta must be non-zero",)),
    "negative-P_t": (lambda s: {"P_t": np.array(-3.0)}, ("P_t must be", "-3")),
    "zero-P_s": (lambda s: {"P_s": np.array(0.0)}, ("P_s must be", "0")),
    "nan-a_max": (lambda s: {"a_max": np.array(np.nan)}, ("a_max must be finite",)),
    "negative-sigma_r2": (lambda s: {"sigma_r2": np.array(-1e-11)}, ("sigma_r2 must be",)),
    "inf-P_t": (lambda s: {"P_t": np.array(np.inf)}, ("P_t must be finite",)),
    "T_c-below-L": (lambda s: {"T_c": np.array(1.0)}, ("T_c must be >= L=2",)),
    "T_c-vector": (lambda s: {"T_c": np.array([100.0, 100.0])}, ("T_c must be a scalar",)),
    # wrong dtypes
    "real-channel": (lambda s: {"G": s.to_dict()["G"].real}, ("G must be a complex array", "float64")),
    "string-P_t": (lambda s: {"P_t": np.array("20")}, ("P_t must be a number",)),
    "string-theta": (lambda s: {"theta": np.array(["a", "b"])}, ("theta must be a real array",)),
    "complex-theta": (lambda s: {"theta": s.to_dict()["theta"] + 0j}, ("theta must be a real array",)),
    "numeric-beta_model": (lambda s: {"beta_model": np.array(3)}, ("beta_model must be a string",)),
    "active-2": (lambda s: {"active": np.array(2)}, ("active must be a boolean", "2")),
    "negative-seed": (lambda s: {"seed": np.array(-5)}, ("seed must be >= 0", "-5")),
    "seed-not-integer": (lambda s: {"seed": np.array(1.5)}, ("seed must be an integer",)),
    # wrong shapes
    "G-wrong-M": (lambda s: {"G": s.to_dict()["G"][..., :3]}, ("G must have shape", "M=4")),
    "G-2d": (lambda s: {"G": s.to_dict()["G"][0]}, ("G must have shape",)),
    "theta-wrong-shape": (lambda s: {"theta": s.to_dict()["theta"][:1]}, ("theta must have shape (2,)",)),
    "irs_pos-wrong-shape": (lambda s: {"irs_pos": s.to_dict()["irs_pos"][:, :2]}, ("irs_pos",)),
    "M-contradicts-G": (lambda s: {"M": np.array(8)}, ("G must have shape", "M=8")),
    "bs_pos-wrong-shape": (lambda s: {"bs_pos": np.zeros(2)}, ("bs_pos must have shape (3,)",)),
    "bs_pos-nan": (lambda s: {"bs_pos": np.array([np.nan, 0.0, 0.0])}, ("bs_pos contains NaN",)),
    "irs_yaw-wrong-shape": (lambda s: {"irs_yaw": np.zeros(3)}, ("irs_yaw must have shape (2,)",)),
    "target_pos-batched": (lambda s: {"target_pos": np.zeros((2, 3))}, ("target_pos must have shape",)),
    "no-irs": (lambda s: {"G": np.zeros((0, 4, 4), complex), "theta": np.zeros(0), "phi": np.zeros(0),
                          "beta": np.zeros(0, complex), "L": np.array(0), "irs_pos": np.zeros((0, 3)),
                          "irs_yaw": np.zeros(0)}, ("G must hold at least one IRS",)),
    "solution-as-scenario": (lambda s: {"format": np.array("irs-torch/solution")}, ("format is 'irs-torch/solution'",)),
}

MISSING_KEYS = ["P_t", "P_s", "a_max", "sigma_r2", "sigma_b2", "T_c", "active", "d_h", "M", "G", "beta"]


@pytest.mark.parametrize("name", list(SCENARIO_DEFECTS))
def test_scenario_file_defect_is_a_one_line_error(files, capsys, name):
    change, needles = SCENARIO_DEFECTS[name]
    path = _write(files, name, change(files["scenario"]))
    rc, out, err = run_cli(capsys, "crb", "--scenario", path)
    _assert_user_error(rc, err, f"{name}.npz", *needles)
    assert out == ""
    with pytest.raises(InputError):  # the library raises the same one error type
        load_scenario(path)


@pytest.mark.parametrize("key", MISSING_KEYS)
def test_missing_key_is_an_error_not_a_default(files, capsys, key):
    path = _write(files, f"missing-{key}", drop=(key,))
    rc, _, err = run_cli(capsys, "crb", "--scenario", path)
    _assert_user_error(rc, err, "missing keys", repr(key))


def test_per_irs_budget_gives_no_wrong_shape_in_the_library(files):
    s = files["scenario"]
    with pytest.raises(InputError, match=r"P_s must be a scalar .*got shape \(2,\)"):
        s.replace(P_s=torch.tensor([0.1, 0.2]))
    # a batch of two scenarios: budgets of the batch shape are the per-instance budgets
    b = Scenario.stack([s, s.replace(P_s=0.2)])
    assert b.P_s.shape == (2,)
    R = b.isotropic_design()
    psi = b.random_phase_design(R, seed=0)
    assert b.crb(R, psi).total.shape == (2, 2)
    assert torch.allclose(b.irs_power(R, psi)[1], s.replace(P_s=0.2).irs_power(R[1], psi[1]))


def test_integral_float_and_numpy_integers_are_accepted(files):
    d = files["scenario"].to_dict()
    d.update(M=np.array(4.0), N_h=np.int32(2), L=np.array(2.0))
    s = scenario_from_dict(d)
    assert (s.M, s.N_h) == (4, 2) and isinstance(s.M, int)


def test_angles_are_derived_from_the_geometry_when_left_out(files):
    d = files["scenario"].to_dict()
    d.pop("theta")
    d.pop("phi")
    s = scenario_from_dict(d)
    # docs/assumptions.md "Geometry and angles": from IRS 1 theta = 90 deg, phi = atan2(10, 5) = 63.4 deg; IRS 2 phi =
    # 116.6 deg (target (5,15,0), IRSs at (-5,10,0), (-5,20,0) facing +x, horizontal axis +y)
    np.testing.assert_allclose(s.theta.numpy(), [math.pi / 2] * 2, atol=1e-12)
    np.testing.assert_allclose(s.phi.numpy(), [math.acos(5 / math.sqrt(125)), math.acos(-5 / math.sqrt(125))],
                               atol=1e-12)


def test_seed_minus_one_in_a_file_means_none_and_a_negative_seed_is_refused(files):
    d = files["scenario"].to_dict()
    d["seed"] = np.array(-1)
    assert scenario_from_dict(d).seed is None
    with pytest.raises(InputError, match=r"seed must be a non-negative integer or None, got -1"):
        files["scenario"].replace(seed=-1)


def test_missing_and_corrupt_files(files, capsys, tmp_path):
    rc, _, err = run_cli(capsys, "crb", "--scenario", tmp_path / "nowhere.npz")
    _assert_user_error(rc, err, "nowhere.npz", "not found")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    rc, _, err = run_cli(capsys, "solve", "--scenario", junk)
    _assert_user_error(rc, err, "junk.npz", "not a readable scenario")


# --------------------------------------------------------------------------- solution files
def _bad_solution(files, name, **change):
    d = Solution.load(files["sol"]).to_dict()
    d.update(change)
    path = files["dir"] / f"sol-{name}.npz"
    np.savez(path, **d)
    return path


SOLUTION_DEFECTS = {
    "nan-psi": (lambda f: {"psi": f["psi"].numpy() * np.nan}, ("psi contains NaN",)),
    "string-R_s": (lambda f: {"R_s": np.array("x")}, ("R_s must be a numeric array",)),
    "bad-metadata": (lambda f: {"metadata": np.array("{not json")}, ("metadata is not valid JSON",)),
    "other-size": (lambda f: {"R_s": np.zeros((2, 8, 8), complex), "psi": np.ones((2, 4), complex)},
                   ("needs R_s (L=2, M=4, M=4)",)),
    "psi-wrong-L": (lambda f: {"psi": f["psi"].numpy()[:1]}, ("psi must have shape",)),
}


@pytest.mark.parametrize("name", list(SOLUTION_DEFECTS))
def test_solution_file_defect_is_a_one_line_error(files, capsys, name):
    change, needles = SOLUTION_DEFECTS[name]
    path = _bad_solution(files, name, **change(files))
    rc, _, err = run_cli(capsys, "crb", "--scenario", files["good"], "--solution", path)
    _assert_user_error(rc, err, *needles)


# --------------------------------------------------------------------------- --seed -1
SEED_COMMANDS = {
    "scenario": ["scenario", "-o", "{d}/x.npz"],
    "crb": ["crb", "--scenario", "{good}"],
    "solve": ["solve", "--scenario", "{good}"],
    "montecarlo": ["montecarlo", "--scenario", "{good}"],
    "montecarlo-sweep": ["montecarlo-sweep", "--scenario", "{good}", "--out", "{d}/sw"],
    "demo": ["demo"],
    "reproduce": ["reproduce", "fig2", "--out", "{d}/rep"],
    "bench": ["bench", "warmstart", "--data", "{d}"],
    "dataset-generate": ["dataset", "generate", "--num", "2", "--out", "{d}/ds"],
}


@pytest.mark.parametrize("cmd", list(SEED_COMMANDS))
@pytest.mark.parametrize("seed", ["-1", "1.5"])
def test_invalid_seed_is_refused_everywhere(files, capsys, cmd, seed):
    argv = [a.format(d=files["dir"], good=files["good"]) for a in SEED_COMMANDS[cmd]]
    rc, _, err = run_cli(capsys, *argv, f"--seed={seed}")
    _assert_user_error(rc, err, "--seed", "must be an integer >= 0", one_line=False)  # argparse: usage + error


# --------------------------------------------------------------------------- outputs never overwrite inputs
def _snapshot(path):
    return path.read_bytes(), path.stat().st_mtime_ns


def test_solve_refuses_to_overwrite_its_inputs(files, capsys, tmp_path):
    scen = tmp_path / "s.npz"
    scen.write_bytes(files["good"].read_bytes())
    init = tmp_path / "init.npz"
    init.write_bytes(files["sol"].read_bytes())
    link = tmp_path / "link.npz"
    link.symlink_to(scen)
    before = _snapshot(scen), _snapshot(init)
    cases = [(["-o", scen], "--scenario"),
             (["-o", tmp_path / "s"], "--scenario"),  # .npz is appended: the same file
             (["-o", f"{tmp_path}/./s.npz"], "--scenario"),
             (["-o", link], "--scenario"),  # a link to the input
             (["-o", init, "--init", init], "--init"),
             (["-o", init, "--init", f"{init}:psi"], "--init")]
    for extra, field in cases:
        rc, _, err = run_cli(capsys, "solve", "--scenario", scen, *extra)
        _assert_user_error(rc, err, "-o/--output", "same file as the input", field)
    assert (_snapshot(scen), _snapshot(init)) == before
    rc, _, err = run_cli(capsys, "solve", "--scenario", link, "-o", scen)
    _assert_user_error(rc, err, "same file as the input --scenario")


def test_montecarlo_save_refuses_to_overwrite_its_inputs(files, capsys, tmp_path):
    scen = tmp_path / "s.npz"
    scen.write_bytes(files["good"].read_bytes())
    sol = tmp_path / "sol.npz"
    sol.write_bytes(files["sol"].read_bytes())
    before = _snapshot(scen), _snapshot(sol)
    for target, field in ((scen, "--scenario"), (sol, "--solution"), (tmp_path / "sol", "--solution")):
        rc, _, err = run_cli(capsys, "montecarlo", "--scenario", scen, "--solution", sol, "--trials", 2,
                          "--no-progress", "--save", target)
        _assert_user_error(rc, err, "--save", "same file as the input", field)
    assert (_snapshot(scen), _snapshot(sol)) == before


def test_dataset_export_refuses_one_file_for_both_and_the_data_set_files(capsys, tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "inside.npz").write_bytes(b"data set file")
    rc, _, err = run_cli(capsys, "dataset", "export", ds, "--id", 0, "--scenario", tmp_path / "f.npz",
                      "--solution", tmp_path / "f.npz")
    _assert_user_error(rc, err, "--solution", "same file as the input --scenario")
    rc, _, err = run_cli(capsys, "dataset", "export", ds, "--id", 0, "--scenario", ds / "inside")
    _assert_user_error(rc, err, "--scenario", "data set file")
    assert (ds / "inside.npz").read_bytes() == b"data set file"


def test_directory_outputs_refuse_their_inputs(files, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    scen = out / "ao.npz"
    scen.write_bytes(files["good"].read_bytes())
    rc, _, err = run_cli(capsys, "demo", "--scenario", scen, "--methods", "ao", "--out", out)
    _assert_user_error(rc, err, "--out", "ao.npz", "same file as the input --scenario")
    swept = out / "sweep.csv"
    swept.write_bytes(files["good"].read_bytes())
    rc, _, err = run_cli(capsys, "montecarlo-sweep", "--scenario", swept, "--out", out, "--no-progress")
    _assert_user_error(rc, err, "--out", "sweep.csv", "same file as the input --scenario")
    data = tmp_path / "data"
    data.mkdir()
    rc, _, err = run_cli(capsys, "bench", "warmstart", "--data", data, "--out", data)
    _assert_user_error(rc, err, "--out", "is the input --data")


UNWRITABLE = {
    "solve": lambda f, bad: ["solve", "--scenario", f["good"], "-o", bad / "x.npz"],
    "montecarlo": lambda f, bad: ["montecarlo", "--scenario", f["good"], "--trials", 2, "--save", bad / "x"],
    "scenario": lambda f, bad: ["scenario", "-o", bad / "x.npz"],
    "dataset-config": lambda f, bad: ["dataset", "config", "-o", bad / "c.yaml"],
    "dataset-export": lambda f, bad: ["dataset", "export", f["dir"], "--id", 0, "--scenario", bad / "s"],
    "demo": lambda f, bad: ["demo", "--methods", "ao", "--out", bad / "d"],
    "reproduce": lambda f, bad: ["reproduce", "fig2", "--out", bad / "r"],
    "montecarlo-sweep": lambda f, bad: ["montecarlo-sweep", "--scenario", f["good"], "--out", bad / "w"],
}


@pytest.mark.parametrize("cmd", list(UNWRITABLE))
def test_unwritable_output_is_refused_before_any_work(files, capsys, tmp_path, cmd):
    blocker = tmp_path / "a-file"  # a regular file where a directory is needed (works as root too)
    blocker.write_text("x")
    rc, out, err = run_cli(capsys, *UNWRITABLE[cmd](files, blocker))
    _assert_user_error(rc, err, "a-file is not a directory")
    assert out == ""


def test_output_that_is_a_directory(files, capsys, tmp_path):
    (tmp_path / "d.npz").mkdir()
    rc, _, err = run_cli(capsys, "solve", "--scenario", files["good"], "-o", tmp_path / "d.npz")
    _assert_user_error(rc, err, "-o/--output", "is a directory")


def _chattr(flag, path):
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:  # no chattr
        return False


def test_output_in_a_read_only_directory(files, capsys, tmp_path):
    """A directory its user may not write in: mode 0555 for a normal user; as root (who ignores mode
    bits, and CI runs as root) the same directory made immutable with ``chattr +i``, which binds root
    too. Skipped only where root has no immutable flag (no chattr, a file system without it, or no
    CAP_LINUX_IMMUTABLE, e.g. some containers): then nothing on the machine is read-only to root."""
    ro = tmp_path / "ro"
    ro.mkdir()
    root = os.geteuid() == 0
    if root:
        if not _chattr("+i", ro):
            pytest.skip("running as root without `chattr +i` here: no directory is read-only to root")
    else:
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert not os.access(ro, os.W_OK)  # the probe is real: the directory cannot be written
        rc, out, err = run_cli(capsys, "solve", "--scenario", files["good"], "-o", ro / "x.npz")
        _assert_user_error(rc, err, "-o/--output", "is not writable")
        assert out == "" and not (ro / "x.npz").exists()
        rc, _, err = run_cli(capsys, "reproduce", "fig2", "--out", ro / "r")  # a directory output inside it
        _assert_user_error(rc, err, "--out", "is not writable")
    finally:
        if root:
            _chattr("-i", ro)
        else:
            ro.chmod(stat.S_IRWXU)


def test_check_output_path_compares_real_paths(tmp_path):
    a = tmp_path / "a.npz"
    a.write_text("x")
    (tmp_path / "sub").mkdir()
    assert same_file(a, tmp_path / "sub" / ".." / "a.npz")
    hard = tmp_path / "hard.npz"
    os.link(a, hard)
    assert same_file(a, hard)  # same inode under another name
    with pytest.raises(InputError, match=r"--out .*hard\.npz is the same file as the input --in"):
        check_output_path(hard, {"--in": a}, "--out")
    assert check_output_path(tmp_path / "new" / "b.npz", {"--in": a}, "--out") == tmp_path / "new" / "b.npz"


# --------------------------------------------------------------------------- montecarlo designs
def _design_file(files, name, R, psi):
    d = Solution.load(files["sol"]).to_dict()
    d.update(R_s=R.numpy(), psi=psi.numpy())
    path = files["dir"] / f"design-{name}.npz"
    np.savez(path, **d)
    return path


def _designs(f):
    R, psi = f["R"], f["psi"]
    notpsd = R.clone()
    notpsd[0, 0, 0] = -1.0
    return {
        "over-P_t": (R * 200, psi, ("BS power", "exceeds P_t = 20 W")),
        "over-P_s": (R, psi * 50, ("IRS 1 power", "exceeds P_s = 0.1 W")),
        "over-a_max": (R * 1e-6, psi / psi.abs() * 9.0, ("amplitude 9", "exceeds a_max = 8")),
        "not-psd": (notpsd, psi, ("R_s of slot 1 is not PSD",)),
        "not-hermitian": (R + torch.triu(torch.ones_like(R), 1) * 0.5, psi, ("not Hermitian",)),
        "zero-psi": (R, psi * torch.tensor([[0.0], [1.0]], dtype=psi.dtype), ("psi of IRS 1 is zero",)),
    }


@pytest.mark.parametrize("name", ["over-P_t", "over-P_s", "over-a_max", "not-psd", "not-hermitian", "zero-psi"])
def test_montecarlo_refuses_an_infeasible_design(files, capsys, name):
    R, psi, needles = _designs(files)[name]
    path = _design_file(files, name, R, psi)
    rc, out, err = run_cli(capsys, "montecarlo", "--scenario", files["good"], "--solution", path, "--trials", 2,
                        "--no-progress")
    _assert_user_error(rc, err, f"design-{name}.npz", *needles)
    assert out == ""


def test_montecarlo_allow_infeasible_warns_in_text_and_json(files, capsys):
    R, psi, _ = _designs(files)["over-P_t"]
    path = _design_file(files, "over-P_t", R, psi)
    args = ["montecarlo", "--scenario", files["good"], "--solution", path, "--trials", 3, "--no-progress",
            "--estimator", "music", "--allow-infeasible"]
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0 and "WARNING: INFEASIBLE design" in out and "exceeds P_t" in out
    assert "WARNING" in err and "Traceback" not in err
    rc, out, err = run_cli(capsys, *args, "--json")
    rep = json.loads(out)
    assert rc == 0 and rep["feasible"] is False and any("exceeds P_t" in v for v in rep["violations"])
    assert "WARNING" in err
    # the zero psi stays an error even with --allow-infeasible
    R, psi, _ = _designs(files)["zero-psi"]
    rc, _, err = run_cli(capsys, "montecarlo", "--scenario", files["good"], "--solution",
                      _design_file(files, "zero-psi", R, psi), "--trials", 2, "--allow-infeasible")
    _assert_user_error(rc, err, "psi of IRS 1 is zero")


# --------------------------------------------------------------------------- strict JSON
def _strict_loads(text):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_with_an_infinite_crb(files, capsys):
    R, psi, _ = _designs(files)["zero-psi"]  # IRS 1 reflects nothing: its CRB is infinite
    path = _design_file(files, "zero-psi-json", R, psi)
    rc, out, err = run_cli(capsys, "crb", "--scenario", files["good"], "--solution", path, "--json")
    assert rc == 0, err
    rep = _strict_loads(out)
    assert rep["crb"][0] is None and rep["max_crb"] is None  # inf written as null
    assert rep["crb"][1] is not None and math.isfinite(rep["crb"][1])


def test_json_output_is_strict_for_a_passive_irs(files, capsys, tmp_path):
    """A passive IRS has no C1: its IRS-power margin is +inf, printed as null (was `Infinity`)."""
    path = paper_scenario(0, active=False, sigma_r2=0.0, **SMALL).save(tmp_path / "passive.npz")
    rc, out, err = run_cli(capsys, "crb", "--scenario", path, "--json")
    assert rc == 0, err
    rep = _strict_loads(out)
    assert rep["margins"]["irs"] == [None, None] and all(math.isfinite(x) for x in rep["crb"])


def test_json_helpers():
    obj = {"a": float("inf"), "b": [float("nan"), -float("inf"), 1.5], "c": np.float64(np.inf),
           "d": torch.tensor([1.0, float("nan")]), "e": np.arange(2), (1, 2): True}
    assert json_safe(obj) == {"a": None, "b": [None, None, 1.5], "c": None, "d": [1.0, None], "e": [0, 1],
                              "(1, 2)": True}
    assert _strict_loads(dumps(obj))["b"] == [None, None, 1.5]
    s = Solution(R_s=torch.eye(2)[None], psi=torch.ones(1, 2), metadata={"x": float("inf")})
    assert _strict_loads(str(s.to_dict()["metadata"])) == {"x": None}


# --------------------------------------------------------------------------- CLI error kinds
@pytest.mark.parametrize("exc,code,marker", [
    (InputError("P_t must be > 0 W, got -1"), 2, "irs-torch: error: P_t must be > 0 W, got -1"),
    (ValueError("M must be a positive integer, got 0"), 2, "irs-torch: error: M must be"),
    (FileNotFoundError("scenario file not found: x.npz"), 2, "irs-torch: error: scenario file not found"),
    (PermissionError(13, "Permission denied", "/root/x.npz"), 2, "irs-torch: error: [Errno 13] Permission denied"),
    (TypeError("unsupported operand"), 3, "internal error (please report): TypeError: unsupported operand"),
    (KeyError("sizes"), 3, "internal error (please report): KeyError: 'sizes'"),
    (RuntimeError("solver crashed"), 3, "internal error (please report): RuntimeError: solver crashed"),
    (AssertionError("invariant"), 3, "internal error (please report): AssertionError: invariant"),
])
def test_cli_separates_user_errors_from_internal_errors(files, capsys, monkeypatch, exc, code, marker):
    import irs_torch.solvers

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(irs_torch.solvers, "solve", boom)
    rc, _, err = run_cli(capsys, "solve", "--scenario", files["good"], "--no-progress")
    assert rc == code, err
    lines = err.strip().splitlines()
    assert marker in lines[-1]
    if code == 2:
        assert len(lines) == 1 and "Traceback" not in err
    else:
        assert "Traceback" in err  # a bug is shown as one, with where it happened


def test_real_channel_is_an_input_error_that_is_still_a_type_error(files):
    with pytest.raises(InputError) as e:
        files["scenario"].replace(G=files["scenario"].G.real)
    assert isinstance(e.value, TypeError) and "G must be a complex" in str(e.value)


# --------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_honour_the_umask(files, tmp_path, umask, mode):
    """Files written through a temporary file get the mode of a plain open(), not mkstemp's 0600."""
    old = os.umask(umask)
    try:
        p = files["scenario"].save(tmp_path / "s.npz")
        q = Solution.load(files["sol"]).save(tmp_path / "sol.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == mode
    assert stat.S_IMODE(q.stat().st_mode) == mode

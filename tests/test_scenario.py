"""Scenario / Solution: validation errors that name the field and value, batching, file round trips."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.io
import torch

from irs_torch import Scenario, Solution, load_scenario, paper_scenario, random_scenario

SCENARIO_KEYS = ["G", "theta", "phi", "beta", "M", "N_h", "N_v", "d_h", "d_v", "sigma_r2", "sigma_b2", "T_c",
                 "P_t", "P_s", "a_max", "bs_pos", "irs_pos", "irs_yaw", "target_pos", "seed", "preset"]


@pytest.fixture(scope="module")
def paper():
    return paper_scenario(seed=0)


def _design(s, seed=0):
    R = s.isotropic_design()
    return R, s.random_phase_design(R, seed=seed)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("change,match", [
    (lambda s: dict(G=s.G[0]), r"G must have shape \(\.\.\., L, N, M\), got \(16, 16\)"),
    (lambda s: dict(G=s.G[..., :3]), r"G must have shape .*M=16.*got \(2, 16, 3\)"),
    (lambda s: dict(G=s.G[:, :15]), r"G must have shape .*N=16.*got \(2, 15, 16\)"),
    (lambda s: dict(theta=s.theta[:1]), r"theta must have shape \(2,\), got \(1,\)"),
    (lambda s: dict(phi=s.phi[None]), r"phi must have shape \(2,\), got \(1, 2\)"),
    (lambda s: dict(beta=s.beta[:1]), r"beta must have shape \(2,\), got \(1,\)"),
    (lambda s: dict(P_t=-1.0), r"P_t must be .*> 0, got -1"),
    (lambda s: dict(P_t=0.0), r"P_t must be .*> 0, got 0"),
    (lambda s: dict(P_s=0.0), r"P_s must be .*> 0, got 0"),
    (lambda s: dict(P_s=float("nan")), r"P_s must be finite.*got nan"),
    (lambda s: dict(a_max=-2.0), r"a_max must be .*> 0, got -2"),
    (lambda s: dict(sigma_b2=0.0), r"sigma_b2 must be .*> 0, got 0"),
    (lambda s: dict(sigma_r2=-1e-11), r"sigma_r2 must be .*>= 0, got -1e-11"),
    (lambda s: dict(M=0), r"M must be a positive integer, got 0"),
    (lambda s: dict(T_c=1.0), r"T_c must be >= L=2.*got 1"),
    (lambda s: dict(beta=torch.zeros(2, dtype=torch.complex128)), r"beta must be non-zero"),
    (lambda s: dict(target_pos=torch.tensor([-8.0, 15.0, 0.0])), r"target_pos is behind .*IRS 1"),
])
def test_invalid_fields_raise_naming_field_and_value(paper, change, match):
    with pytest.raises(ValueError, match=match):
        paper.replace(**change(paper))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_inf_channels_rejected(paper, value):
    G = paper.G.clone()
    G[1, 3, 2] = value
    with pytest.raises(ValueError, match=r"G contains NaN or inf"):
        paper.replace(G=G)
    th = paper.theta.clone()
    th[0] = value
    with pytest.raises(ValueError, match=r"theta contains NaN or inf"):
        paper.replace(theta=th)


def test_real_channel_rejected(paper):
    with pytest.raises(TypeError, match=r"G must be a complex torch tensor.*float64"):
        paper.replace(G=paper.G.real)


def test_target_on_top_of_and_behind_an_irs():
    with pytest.raises(ValueError, match=r"target_pos is 0\.2 m from IRS 1 .*on top of an IRS"):
        paper_scenario(seed=0, target_pos=[-5.0, 10.2, 0.0])
    with pytest.raises(ValueError, match=r"target_pos is behind or in the plane of IRS 2"):
        paper_scenario(seed=0, irs_yaw=[0.0, -2.27])  # BS in front, target behind
    with pytest.raises(ValueError, match=r"target_pos is behind or in the plane of IRS 1 "
                                         r"\(cosine to its normal -0\.514"):
        paper_scenario(seed=0, target_pos=[-8.0, 15.0, 0.0])
    with pytest.raises(ValueError, match=r"bs_pos is behind"):
        paper_scenario(seed=0, bs_pos=[-9.0, 0.0, 0.0])


def test_design_shape_and_value_errors(paper):
    R, psi = _design(paper)
    with pytest.raises(ValueError, match=r"R_s must have shape \(\.\.\., L=2, M=16, M=16\), got \(2, 16, 3\)"):
        paper.crb(R[..., :3], psi)
    with pytest.raises(ValueError, match=r"R_s must have shape .*got \(16, 16\)"):
        paper.crb(R[0], psi)
    with pytest.raises(ValueError, match=r"psi must have shape \(\.\.\., L=2, N=16\), got \(2, 3\)"):
        paper.crb(R, psi[..., :3])
    bad = psi.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"psi contains NaN or inf"):
        paper.crb(R, bad)
    with pytest.raises(ValueError, match=r"R_s contains NaN or inf"):
        paper.irs_power(R * float("inf"), psi)
    with pytest.raises(TypeError, match=r"psi must be a torch tensor"):
        paper.crb(R, psi.numpy())


def test_feasibility_and_margins(paper):
    R, psi = _design(paper)
    assert paper.is_feasible(R, psi)
    m = paper.constraint_margins(R, psi)
    assert set(m) == {"bs", "irs", "amp", "psd"}
    assert abs(m["bs"].item()) < 1e-12  # isotropic design uses exactly P_t
    assert (m["irs"] >= -1e-9).all() and (m["amp"] >= -1e-12).all()
    # 2 x the amplitude breaks C1 (or a_max), 1.1 x P_t breaks the BS budget
    assert not paper.is_feasible(R, 2 * psi)
    assert not paper.is_feasible(1.1 * R, psi)
    # one slot may use more than P_t as long as the average is within budget (docs/assumptions.md "Modelling facts")
    R2 = R.clone()
    R2[0] *= 1.5
    R2[1] *= 0.5
    assert paper.constraint_margins(R2, psi)["bs"].abs().item() < 1e-12


# ----------------------------------------------------------------------------- batching
def test_stack_and_index_round_trip():
    scs = [random_scenario(s, P_t=10.0 + s) for s in (1, 2, 3)]
    b = Scenario.stack(scs)
    assert b.batch_shape == (3,) and b.G.shape == (3, 2, 16, 16)
    assert torch.is_tensor(b.P_t) and b.P_t.tolist() == [11.0, 12.0, 13.0]
    for i, s in enumerate(scs):
        bi = b[i]
        for f in ("G", "theta", "phi", "beta", "irs_pos", "target_pos"):
            assert torch.equal(getattr(bi, f), getattr(s, f))
        assert float(bi.P_t) == float(s.P_t)
    with pytest.raises(ValueError, match=r"scenario 1 has \(M, N_h, N_v, L\) = \(8, 4, 4, 2\)"):
        Scenario.stack([scs[0], random_scenario(2, M=8)])
    with pytest.raises(ValueError, match=r"all scenarios must share T_c"):
        Scenario.stack([scs[0], random_scenario(2, T_c=50.0)])
    with pytest.raises(ValueError, match=r"non-empty"):
        Scenario.stack([])


# ----------------------------------------------------------------------------- files
def _assert_same_scenario(a, b):
    for f in dataclasses.fields(Scenario):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if torch.is_tensor(va) or torch.is_tensor(vb):
            va, vb = torch.as_tensor(va), torch.as_tensor(vb)
            assert va.dtype == vb.dtype and torch.equal(va, vb), f.name
        else:
            assert va == vb, (f.name, va, vb)


@pytest.mark.parametrize("make", [lambda: paper_scenario(seed=4),
                                  lambda: random_scenario(9, active=False, sigma_r2=0.0),
                                  lambda: Scenario.stack([random_scenario(1), random_scenario(2, P_s=0.2)])])
def test_scenario_save_load_exact(tmp_path, make):
    s = make()
    path = s.save(tmp_path / "s.npz")
    t = load_scenario(path)
    _assert_same_scenario(s, t)
    R, psi = _design(s)
    assert torch.equal(s.crb(R, psi).total, t.crb(R, psi).total)


def test_scenario_file_keys_and_shapes(tmp_path):
    s = paper_scenario(seed=2, M=8, N_h=4, N_v=2)
    path = s.save(tmp_path / "s.npz")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        assert set(SCENARIO_KEYS) <= keys, set(SCENARIO_KEYS) - keys
        assert z["G"].shape == (2, 8, 8) and z["G"].dtype == np.complex128  # (L, N, M)
        for k in ("theta", "phi", "beta"):
            assert z[k].shape == (2,)
        assert int(z["M"]) == 8 and int(z["N_h"]) == 4 and int(z["N_v"]) == 2
        assert int(z["seed"]) == 2 and str(z["preset"]) == "paper"
        assert str(z["format"]) == "irs-torch/scenario"
        assert z["irs_pos"].shape == (2, 3) and z["target_pos"].shape == (3,)


def test_scenario_mat_export(tmp_path):
    s = paper_scenario(seed=1)
    m = scipy.io.loadmat(str(s.export_mat(tmp_path / "s.mat")))
    assert set(SCENARIO_KEYS) <= set(m)
    np.testing.assert_array_equal(m["G"], s.G.numpy())
    np.testing.assert_array_equal(m["beta"].ravel(), s.beta.numpy())
    np.testing.assert_array_equal(m["phi"].ravel(), s.phi.numpy())
    assert m["M"].item() == 16 and float(m["P_t"].item()) == 20.0


def test_solution_round_trip_and_keys(tmp_path, paper):
    R, psi = _design(paper, seed=3)
    sol = Solution.evaluate(paper, R, psi, method="isotropic", metadata={"seed": 3, "note": "x"},
                            arrays={"history": torch.arange(4.0)})
    assert torch.equal(sol.crb, paper.crb(R, psi).total)
    assert sol.metadata["scenario_seed"] == 0 and sol.metadata["seed"] == 3
    path = sol.save(tmp_path / "sol.npz")
    with np.load(path, allow_pickle=False) as z:
        assert {"R_s", "psi", "crb", "crb_theta", "crb_phi", "max_crb", "method", "metadata", "history"} <= set(z.files)
        assert z["R_s"].shape == (2, 16, 16) and z["psi"].shape == (2, 16) and z["crb"].shape == (2,)
    back = Solution.load(path)
    assert torch.equal(back.R_s, sol.R_s) and torch.equal(back.psi, sol.psi) and torch.equal(back.crb, sol.crb)
    assert back.method == "isotropic" and back.metadata == sol.metadata
    assert torch.equal(back.arrays["history"], sol.arrays["history"])
    m = scipy.io.loadmat(str(sol.export_mat(tmp_path / "sol.mat")))
    assert {"R_s", "psi", "crb"} <= set(m)
    np.testing.assert_array_equal(m["psi"], psi.numpy())


def test_corrupt_and_mismatched_files(tmp_path, paper):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match=r"bad\.npz: not a readable scenario \.npz"):
        load_scenario(bad)
    good = paper.save(tmp_path / "good.npz")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"trunc\.npz"):
        load_scenario(trunc)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        load_scenario(tmp_path / "missing.npz")
    # a scenario file given as a solution, and vice versa
    with pytest.raises(ValueError, match=r"format is 'irs-torch/scenario'"):
        Solution.load(good)
    R, psi = _design(paper)
    solp = Solution.evaluate(paper, R, psi).save(tmp_path / "sol.npz")
    with pytest.raises(ValueError, match=r"format is 'irs-torch/solution'"):
        load_scenario(solp)
    # missing keys
    np.savez(tmp_path / "partial.npz", G=paper.G.numpy(), theta=paper.theta.numpy())
    with pytest.raises(ValueError, match=r"missing keys \['phi', 'beta', 'M', 'N_h', 'N_v', 'd_h', 'd_v', "
                                         r"'sigma_r2', 'sigma_b2', 'T_c', "
                       r"'P_t', 'P_s', 'a_max', 'active'\]"):
        load_scenario(tmp_path / "partial.npz")
    # invalid values inside a file are reported with the file name
    d = paper.to_dict()
    d["P_t"] = np.asarray(-3.0)
    np.savez(tmp_path / "neg.npz", **d)
    with pytest.raises(ValueError, match=r"neg\.npz: P_t must be .*> 0, got -3"):
        load_scenario(tmp_path / "neg.npz")


def test_solution_for_another_array_size(paper):
    small = paper_scenario(seed=0, M=8)
    R, psi = _design(small)
    sol = Solution.evaluate(small, R, psi)
    with pytest.raises(ValueError, match=r"R_s \(2, 8, 8\).*needs R_s \(L=2, M=16, M=16\)"):
        sol.check_compatible(paper)
    with pytest.raises(ValueError, match=r"psi must have shape"):
        Solution(R_s=R, psi=psi[:1])


def test_a_float32_scenario_with_geometry_casts_back_to_float64_and_gives_features():
    # the angles of a complex64 scenario carry float32 rounding; casting up re-derives them from the geometry
    # (otherwise the float64 angle check rejected the cast, and with it scenario_features of any complex64 input)
    import torch

    from irs_torch.learn.features import scenario_features
    from irs_torch.scenario import random_scenario

    s0 = random_scenario(seed=1)
    s = s0.to(torch.complex64)
    up = s.to(torch.complex128)
    assert up.theta.dtype == torch.float64 and torch.allclose(up.theta, s0.theta, atol=1e-6)
    f, f0 = scenario_features(s), scenario_features(s0)
    assert torch.allclose(f.per_irs, f0.per_irs, atol=1e-5, rtol=1e-5)

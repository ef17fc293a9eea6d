"""move_target and the mismatch CRB."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irs_torch.design.mismatch import move_target
from irs_torch.errors import InputError
from irs_torch.scenario import Scenario, paper_scenario


def _tiny(seed=0, **kw):
    return paper_scenario(seed=seed, M=4, N_h=2, N_v=2, **kw)


FIELDS = ("G", "theta", "phi", "beta", "target_pos", "irs_pos", "irs_yaw", "bs_pos")


def test_move_to_own_position_is_identical():
    s = paper_scenario(seed=3)
    m = move_target(s, s.target_pos.clone())
    for f in FIELDS:
        assert torch.equal(getattr(s, f), getattr(m, f)), f
    for f in ("P_t", "P_s", "a_max", "sigma_r2", "sigma_b2", "T_c", "seed", "M", "N_h", "N_v"):
        assert getattr(s, f) == getattr(m, f), f


def test_angles_from_positions_independent():
    """Rebuild the unit direction IRS -> target from (theta, phi) in each IRS's frame
    (theta from the vertical axis, phi from the horizontal axis towards the normal) and compare
    with the normalised position difference."""
    s = _tiny(seed=1, irs_yaw=[0.2, -0.3])
    new = np.array([7.5, 12.0, 1.0])
    m = move_target(s, new)
    for l in range(s.L):
        g = float(s.irs_yaw[l])
        h = np.array([-math.sin(g), math.cos(g), 0.0])
        v = np.array([0.0, 0.0, 1.0])
        n = np.array([math.cos(g), math.sin(g), 0.0])
        th, ph = float(m.theta[l]), float(m.phi[l])
        k = math.cos(th) * v + math.sin(th) * (math.cos(ph) * h + math.sin(ph) * n)
        diff = new - s.irs_pos[l].numpy()
        np.testing.assert_allclose(k, diff / np.linalg.norm(diff), atol=1e-12)
        # |beta| of the path-loss model at the new distance, phase kept
        d = np.linalg.norm(diff)
        want = 10 ** (-30 / 10) * d ** (-2.2)
        assert abs(abs(complex(m.beta[l])) - want) <= 1e-12 * want
        assert abs(np.angle(complex(m.beta[l])) - np.angle(complex(s.beta[l]))) < 1e-12


def test_equals_scenario_built_at_new_position():
    """Same seed, new target: from_geometry draws the same G and the same beta phase."""
    s = paper_scenario(seed=5)
    ref = paper_scenario(seed=5, target_pos=[3.0, 17.0, 0.0])
    m = move_target(s, [3.0, 17.0, 0.0])
    assert torch.equal(m.G, ref.G)
    torch.testing.assert_close(m.theta, ref.theta, rtol=0, atol=1e-14)
    torch.testing.assert_close(m.phi, ref.phi, rtol=0, atol=1e-14)
    torch.testing.assert_close(m.beta, ref.beta, rtol=1e-12, atol=0)


def test_radar_model_magnitude():
    s = _tiny(seed=2, beta_model="radar")
    m = move_target(s, [8.0, 16.0, 0.0])
    d = torch.linalg.vector_norm(m.target_pos - s.irs_pos, dim=-1)
    want = 0.1 * 1.0 / ((4 * math.pi) ** 1.5 * d ** 2)
    torch.testing.assert_close(m.beta.abs(), want, rtol=1e-12, atol=0)


def test_batched_positions_equal_loop():
    s = _tiny(seed=4)
    pts = torch.tensor([[5.0, 15.0, 0.0], [6.0, 14.0, 0.0], [4.0, 16.5, 0.5]], dtype=torch.float64)
    mb = move_target(s, pts)
    assert tuple(mb.batch_shape) == (3,)
    R, psi = s.isotropic_design(), s.random_phase_design(seed=1)
    cb = mb.crb(R, psi).total
    for k in range(3):
        mk = move_target(s, pts[k])
        assert not mk.batch_shape
        for f in ("theta", "phi", "beta", "G"):
            assert torch.equal(getattr(mb, f)[k], getattr(mk, f)), f
        torch.testing.assert_close(cb[k], mk.crb(R, psi).total, rtol=1e-12, atol=0)
    # a batched scenario moved per instance
    sb = Scenario.stack([_tiny(seed=0), _tiny(seed=1)])
    mm = move_target(sb, pts[:2])
    for k in range(2):
        torch.testing.assert_close(mm.theta[k], move_target(sb[k], pts[k]).theta, rtol=0, atol=0)


@pytest.mark.parametrize("bad, word", [
    ([float("nan"), 15.0, 0.0], "finite"),
    ([5.0, 15.0], "shape"),
    ([-5.0, 10.2, 0.0], "IRS 1"),   # on top of IRS 1
    ([-8.0, 15.0, 0.0], "front"),   # behind both IRSs
])
def test_bad_positions(bad, word):
    s = _tiny()
    with pytest.raises(InputError, match="target_xyz") as e:
        move_target(s, bad)
    assert word in str(e.value)


def test_needs_geometry():
    s = _tiny()
    bare = Scenario(G=s.G, theta=s.theta, phi=s.phi, beta=s.beta, M=s.M, N_h=s.N_h, N_v=s.N_v)
    with pytest.raises(InputError, match="geometry"):
        move_target(bare, [5.0, 15.0, 0.0])


# ----------------------------------------------------------------------------- the mismatch map
def _design(s, seed=0):
    R = s.isotropic_design()
    return R, s.random_phase_design(R, seed=seed)


def test_mismatch_zero_error_equals_point_crb():
    from irs_torch.design.mismatch import mismatch_map

    s = _tiny(seed=7)
    R, psi = _design(s)
    m = mismatch_map(s, R, psi, extent=(2.0, 1.0), n=(5, 7))
    i, j = m.at_zero()
    point = s.crb(R, psi).total
    torch.testing.assert_close(m.crb[i, j], point, rtol=1e-12, atol=0)
    torch.testing.assert_close(m.point_crb, point, rtol=1e-12, atol=0)
    assert m.crb.shape == (5, 7, s.L) and torch.isfinite(m.crb).all()
    # an off-centre cell equals a scenario built at that position with the same seed
    ref = paper_scenario(seed=7, M=4, N_h=2, N_v=2, target_pos=[5.0 + float(m.dx[4]), 15.0 + float(m.dy[1]), 0.0])
    torch.testing.assert_close(m.crb[4, 1], ref.crb(R, psi).total, rtol=1e-10, atol=0)


def test_mismatch_invalid_positions_are_nan():
    from irs_torch.design.mismatch import mismatch_map

    s = _tiny()
    R, psi = _design(s)
    m = mismatch_map(s, R, psi, extent=(12.0, 1.0), n=(7, 3))  # dx = -12 puts the target behind the IRSs
    assert torch.isnan(m.crb[0]).all() and torch.isfinite(m.crb[3]).all()


def test_mismatch_bad_inputs():
    from irs_torch.design.mismatch import mismatch_map

    s = _tiny()
    R, psi = _design(s)
    with pytest.raises(InputError, match="grid size"):
        mismatch_map(s, R, psi, n=0)
    with pytest.raises(InputError, match="extent"):
        mismatch_map(s, R, psi, extent=-1.0)
    with pytest.raises(InputError, match="extent"):
        mismatch_map(s, R, psi, extent=float("nan"))


def test_mismatch_cli(tmp_path):
    import json

    from irs_torch.cli import main
    from irs_torch.scenario import Solution

    s = _tiny(seed=2)
    sp = tmp_path / "s.npz"
    s.save(sp)
    R, psi = _design(s)
    solp = tmp_path / "sol.npz"
    Solution.evaluate(s, R, psi, method="test").save(solp)
    out = tmp_path / "mm"
    rc = main(["mismatch", "--scenario", str(sp), "--solution", str(solp), "--grid", "5", "--extent", "1", "2",
               "--out", str(out), "--json"])
    assert rc == 0
    d = json.loads((out / "mismatch.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert d["version"] and d["config"]["n"] == [5, 5] and d["config"]["extent_m"] == [1.0, 2.0]
    assert abs(d["summary"]["max_crb_at_zero_error"] / float(s.crb(R, psi).total.max()) - 1) < 1e-12
    assert (out / "mismatch.png").stat().st_size > 1000
    assert main(["mismatch", "--scenario", str(sp), "--solution", str(solp), "--grid", "0", "--out", str(out)]) == 2

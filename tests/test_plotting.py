"""Pictures of a design: the beampatterns against direct sums, the report against the scenario's own
constraint functions, and ``irs-torch plot`` (PNG, SVG, errors)."""
import math

import numpy as np
import pytest
import torch

from irs_torch import Scenario, paper_scenario
from irs_torch.plotting import bs_beampattern, design_report, irs_beampattern, plot_design
from irs_torch.scenario import Solution

from helpers import run_cli


@pytest.fixture(scope="module")
def small():
    s = paper_scenario(seed=3, M=4, N_h=2, N_v=2)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=1)
    return s, R, psi


def test_bs_beampattern_isotropic_is_one_and_a_matched_beam_gives_M(small):
    s, R, _ = small
    ang = torch.linspace(0, math.pi, 37, dtype=torch.float64)
    assert torch.allclose(bs_beampattern(s, R, ang), torch.ones(s.L, 37, dtype=torch.float64), atol=1e-12)
    # R = P w w^H with w the conjugate response at 50 deg: gain M there, less elsewhere (M = 4 elements)
    x0 = math.radians(50.0)
    m = np.arange(s.M)
    a0 = np.exp(2j * np.pi * s.d_bs * m * math.cos(x0))
    w = a0.conj() / math.sqrt(s.M)
    Rb = torch.from_numpy(np.stack([7.0 * np.outer(w, w.conj())] * s.L))
    g = bs_beampattern(s, Rb, torch.tensor([x0, math.radians(120.0)], dtype=torch.float64))
    assert g[:, 0].tolist() == pytest.approx([s.M] * s.L, rel=1e-12)
    assert (g[:, 1] < s.M - 0.5).all()


def test_irs_beampattern_equals_a_direct_sum_over_elements(small):
    s, R, psi = small
    th = torch.tensor([0.4, float(s.theta[0]), 2.0], dtype=torch.float64)
    ph = torch.tensor([0.3, float(s.phi[1]), 2.9], dtype=torch.float64)
    P = irs_beampattern(s, R, psi, th, ph)
    G, Rn, pn = s.G.numpy(), R.numpy(), psi.numpy()
    for l in range(s.L):
        for i, t in enumerate(th.tolist()):
            for j, p in enumerate(ph.tolist()):
                # element n = v * N_h + h at phase 2 pi (d_v v cos t + d_h h sin t cos p), eq. (1)
                v = np.zeros(s.M, complex)
                for n in range(s.N):
                    hh, vv = n % s.N_h, n // s.N_h
                    a_n = np.exp(2j * np.pi * (s.d_v * vv * math.cos(t) + s.d_h * hh * math.sin(t) * math.cos(p)))
                    v += a_n * pn[l, n] * G[l, n, :]
                want = float(np.real(v @ Rn[l] @ v.conj()))
                assert P[l, i, j].item() == pytest.approx(want, rel=1e-10)


def test_design_report_matches_the_scenario(small):
    s, R, psi = small
    rep = design_report(s, R, psi)
    c = s.crb(R, psi)
    assert rep["crb"] == pytest.approx(c.total.tolist(), rel=1e-12)
    assert rep["max_crb"] == pytest.approx(float(c.total.max()), rel=1e-12)
    assert rep["bs_use"] == pytest.approx(float(s.bs_power(R) / s.P_t), rel=1e-12)
    assert rep["irs_use"] == pytest.approx((s.irs_power(R, psi) / s.P_s).tolist(), rel=1e-12)
    assert rep["amp_use"] == pytest.approx((psi.abs().amax(-1) / s.a_max).tolist(), rel=1e-12)
    assert rep["root_crb_deg"][0][0] == pytest.approx(math.degrees(math.sqrt(c.theta[0].item())), rel=1e-12)


def test_plot_design_writes_png_and_refuses_other_formats(small, tmp_path):
    s, R, psi = small
    png = plot_design(s, R, psi, tmp_path / "d.png", resolution=31)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"\.jpg"):
        plot_design(s, R, psi, tmp_path / "d.jpg")


def test_plot_command(small, tmp_path, capsys):
    s, R, psi = small
    s.save(tmp_path / "s.npz")
    Solution.evaluate(s, R, psi, method="isotropic").save(tmp_path / "x.npz")
    rc, out, err = run_cli(capsys, "plot", "--scenario", tmp_path / "s.npz", "--solution", tmp_path / "x.npz",
                           "-o", tmp_path / "p.pdf")
    assert rc == 0, err
    assert (tmp_path / "p.pdf").read_bytes()[:5] == b"%PDF-"
    assert "max-CRB" in out and "wrote" in out
    rc, _, err = run_cli(capsys, "plot", "--scenario", tmp_path / "s.npz", "--solution", tmp_path / "x.npz",
                         "-o", tmp_path / "p.gif")
    assert rc == 2 and "-o/--output" in err and "p.gif" in err
    other = paper_scenario(seed=3, M=8, N_h=2, N_v=2)
    other.save(tmp_path / "m8.npz")
    rc, _, err = run_cli(capsys, "plot", "--scenario", tmp_path / "m8.npz", "--solution", tmp_path / "x.npz",
                         "-o", tmp_path / "q.png")
    assert rc == 2 and "x.npz" in err


def test_plot_command_batched_files_need_an_index(small, tmp_path, capsys):
    s, R, psi = small
    other = paper_scenario(seed=4, M=4, N_h=2, N_v=2)
    Scenario.stack([s, other]).save(tmp_path / "b.npz")
    R2 = torch.stack([R, other.isotropic_design()])
    psi2 = torch.stack([psi, other.random_phase_design(other.isotropic_design(), seed=2)])
    Solution(R_s=R2, psi=psi2, method="isotropic").save(tmp_path / "bx.npz")
    args = ["plot", "--scenario", tmp_path / "b.npz", "--solution", tmp_path / "bx.npz", "-o", tmp_path / "b.png"]
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and "--index" in err
    rc, out, err = run_cli(capsys, *args, "--index", "1")
    assert rc == 0, err
    want = float(other.max_crb(R2[1], psi2[1]))
    assert f"max-CRB {want:.4e}" in out  # item 1 of both files, not item 0

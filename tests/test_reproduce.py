"""Figure reproduction on tiny grids: CSV shape, curve ordering, resume."""
import json

import pytest

from irs_torch.cli import main
from irs_torch.reproduce import _CURVES, figure_tasks, read_csv

TINY = ["--set", "N_h=2", "--set", "N_v=2", "--realisations", "1", "--max-iter", "2", "--workers", "1",
        "--no-progress"]


def _run(tmp_path, fig, grid, extra=()):
    out = tmp_path / "res"
    rc = main(["reproduce", fig, "--out", str(out), "--grid", *map(str, grid), *TINY, *extra])
    assert rc == 0
    return out, read_csv(out / f"{fig}.csv")


def _mean(rows, curve, x):
    (r,) = [r for r in rows if r["curve"] == curve and r["x"] == x]
    return r["mean_max_crb"]


@pytest.mark.parametrize("fig,grid", [("fig2", [5.0, 20.0]), ("fig3", [0.01, 0.1]), ("fig4", [4, 6])])
def test_figure_tiny_grid_csv_and_ordering(tmp_path, fig, grid):
    out, rows = _run(tmp_path, fig, grid, extra=("--set", "M=4") if fig != "fig4" else ())
    curves = [c[0] for c in _CURVES[fig]]
    # one row per (curve, x), every point solved
    assert len(rows) == len(curves) * len(grid)
    assert {r["curve"] for r in rows} == set(curves)
    assert all(r["count"] == 1 and r["failed"] == 0 for r in rows)
    for r in rows:
        p = json.loads(r["params"])
        assert p["N_h"] == 2 and r["seeds"] == "0"
        assert r["mean_max_crb"] > 0
    assert (out / f"{fig}.png").stat().st_size > 1000
    for x in grid:
        x = float(x)
        if fig == "fig2":
            ao = _mean(rows, "Proposed, a_max = 8", x)
            assert ao <= _mean(rows, "Transmit BF only, a_max = 8", x) * (1 + 1e-6)
            assert ao <= _mean(rows, "Reflective BF only, a_max = 8", x) * (1 + 1e-6)
            assert ao * 10 < _mean(rows, "Passive IRS", x)
        if fig == "fig4":
            ao = _mean(rows, "Proposed", x)
            assert ao <= _mean(rows, "Transmit BF only", x) * (1 + 1e-6)
            assert ao <= _mean(rows, "Reflective BF only", x) * (1 + 1e-6)


def test_figure_resume_recomputes_only_missing(tmp_path, capsys):
    out, rows = _run(tmp_path, "fig3", [0.1], extra=("--set", "M=4"))
    pts = sorted((out / "fig3" / "points").glob("*.json"))
    assert len(pts) == 3
    pts[0].unlink()  # as if the sweep was killed before this point finished
    before = {p.name: p.stat().st_mtime_ns for p in pts[1:]}
    capsys.readouterr()
    _run(tmp_path, "fig3", [0.1], extra=("--set", "M=4"))
    assert "1 solved, 2 reused" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in pts[1:]} == before
    assert pts[0].exists()


def test_figure_tasks_seeds_and_errors():
    t = figure_tasks("fig2", realisations=2, grid=[1.0], seed0=5)
    assert sorted({x.seed for x in t}) == [5, 6]
    assert len({x.key for x in t}) == len(t)
    with pytest.raises(ValueError, match="figure must be one of"):
        figure_tasks("fig9")
    with pytest.raises(ValueError, match="realisations must be >= 1"):
        figure_tasks("fig2", realisations=0)

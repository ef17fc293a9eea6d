"""Figure reproduction on tiny grids: CSV shape, curve ordering, resume."""
import csv
import json

import pytest
import torch

from irs_torch.cli import main
from irs_torch.figures.claims import check_claims
from irs_torch.figures.reproduce import run_figure
from irs_torch.figures.storage import PointStore, migrate_points, read_csv
from irs_torch.figures.sweeps import CURVES, SweepTask, Task, figure_tasks, run_sweep, run_task
from irs_torch.scenario import paper_scenario

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
    curves = [c[0] for c in CURVES[fig]]
    # one row per (curve, x), every point solved
    assert len(rows) == len(curves) * len(grid)
    assert {r["curve"] for r in rows} == set(curves)
    assert all(r["count"] == 1 and r["failed"] == 0 for r in rows)
    for r in rows:
        p = json.loads(r["params"])
        assert p["N_h"] == 2 and r["seeds"] == "0"
        assert r["mean_max_crb"] > 0
    assert (out / f"{fig}.png").stat().st_size > 1000
    if fig in ("fig2", "fig3"):  # the proposed curves come from one monotone sweep per draw
        (sweep,) = [ln for ln in _lines(out / fig / "points.jsonl") if ln.get("kind") == "sweep"]
        assert sweep["monotone"] and len(sweep["points"]) == len(sweep["curves"]) * len(grid)
        text = (out / f"{fig}-sweep.csv").read_text().splitlines()
        sw_rows = list(csv.DictReader(ln for ln in text if not ln.startswith("#")))
        assert len(sw_rows) == len(sweep["points"])
        for r in sw_rows:
            assert float(r["mean_max_crb"]) == pytest.approx(_mean(rows, r["curve"], float(r["x"])), rel=1e-12)
            assert float(r["mean_max_crb"]) <= float(r["mean_cold_max_crb"])
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


def _lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_figure_resume_recomputes_only_missing(tmp_path, capsys):
    # fig2 at one P_t: 3 benchmark point tasks + 1 monotone sweep task (a_max = 4 and 8)
    out, _ = _run(tmp_path, "fig2", [5.0], extra=("--set", "M=4"))
    store = out / "fig2" / "points.jsonl"
    raw = store.read_bytes().splitlines(keepends=True)
    assert len(raw) == 4 and [json.loads(b).get("kind") for b in raw].count("sweep") == 1
    # as if killed while appending the last task: its line is cut half-way
    store.write_bytes(b"".join(raw[:3]) + raw[3][: len(raw[3]) // 2])
    capsys.readouterr()
    _run(tmp_path, "fig2", [5.0], extra=("--set", "M=4"))
    assert "1 solved, 3 reused" in capsys.readouterr().out
    new = store.read_bytes().splitlines(keepends=True)
    assert len(new) == 4 and new[:3] == raw[:3]  # earlier lines untouched, the cut line replaced
    keys = [json.loads(b)["key"] for b in new]
    assert len(set(keys)) == 4  # no duplicates
    _run(tmp_path, "fig2", [5.0], extra=("--set", "M=4"))
    assert "0 solved, 4 reused" in capsys.readouterr().out
    assert store.read_bytes().splitlines(keepends=True) == new
    # a further draw with other solver settings would mix solvers in one figure: refused, nothing solved
    with pytest.raises(ValueError, match="max_iter: stored 2, now 3"):
        run_figure("fig2", out, grid=[5.0], realisations=2, overrides={"M": 4, "N_h": 2, "N_v": 2},
                   solver_options={"max_iter": 3}, workers=1, progress=False)
    assert store.read_bytes().splitlines(keepends=True) == new
    assert main(["reproduce", "fig2", "--out", str(out), "--solver-set", "no_such_field=1"]) != 0
    assert "no_such_field" in capsys.readouterr().err


def test_point_store_truncation_and_corruption(tmp_path):
    st = PointStore(tmp_path / "f" / "points.jsonl")
    assert st.load() == {}
    st.append("a", {"v": 1})
    st.append("b", {"v": 2})
    st.path.write_bytes(st.path.read_bytes() + b'{"key": "c", "v"')  # killed mid-line
    assert set(st.load()) == {"a", "b"}
    st.append("c", {"v": 3})
    assert st.path.read_text().count("\n") == 3 and st.load()["c"]["v"] == 3
    st.append("a", {"v": 9})  # a key stored twice keeps its first record
    assert st.load()["a"]["v"] == 1
    st.path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        st.load()


def test_migrate_points_preserves_records_and_csv(tmp_path, capsys):
    out, _ = _run(tmp_path, "fig4", [4], extra=("--full",))
    fig_dir = out / "fig4"
    csv_before = (out / "fig4.csv").read_bytes()
    # rebuild the earlier layout (one JSON file per task) from the store, then migrate it back
    recs = _lines(fig_dir / "points.jsonl")
    assert len(recs) == 3
    (fig_dir / "points").mkdir()
    for r in recs:
        key = r.pop("key")
        (fig_dir / "points" / f"{key}.json").write_text(json.dumps(r))
    (fig_dir / "points.jsonl").unlink()
    (out / "fig4.csv").unlink()
    assert main(["reproduce", "fig4", "--out", str(out), "--migrate"]) == 0
    assert "3 point files, 3 appended" in capsys.readouterr().out
    assert not (fig_dir / "points").exists()
    keys = [r["key"] for r in _lines(fig_dir / "points.jsonl")]
    assert keys == sorted(keys)  # file-name order
    migrated = {r.pop("key"): r for r in _lines(fig_dir / "points.jsonl")}
    assert sorted(migrated.values(), key=json.dumps) == sorted(recs, key=json.dumps)
    # the figure is rebuilt from the store without solving anything, byte-identical
    assert main(["reproduce", "fig4", "--out", str(out), "--grid", "4", "--full", "--collect-only",
                 *TINY]) == 0
    assert "0 solved, 3 reused, 0 missing" in capsys.readouterr().out
    assert (out / "fig4.csv").read_bytes() == csv_before
    # a stored record that differs from its file is refused, nothing removed
    (fig_dir / "points").mkdir()
    key = next(iter(migrated))
    (fig_dir / "points" / f"{key}.json").write_text(json.dumps({**migrated[key], "max_crb": 1.0}))
    with pytest.raises(ValueError, match="differ; nothing removed"):
        migrate_points(out, "fig4", remove=True)
    assert (fig_dir / "points" / f"{key}.json").exists()


def test_figure_tasks_seeds_and_errors():
    t = figure_tasks("fig2", realisations=2, grid=[1.0], seed0=5)
    assert sorted({x.seed for x in t}) == [5, 6]
    assert len({x.key for x in t}) == len(t)
    with pytest.raises(ValueError, match="figure must be one of"):
        figure_tasks("fig9")
    with pytest.raises(ValueError, match="realisations must be >= 1"):
        figure_tasks("fig2", realisations=0)


def test_smaller_budget_design_is_feasible_with_the_same_crb_at_larger_budgets():
    """The premise of the monotone sweep: budgets enter only the constraints, not the CRB."""
    small = {"P_t": 1.0, "P_s": 1e-3, "a_max": 4.0}
    s = paper_scenario(seed=3, M=4, N_h=2, N_v=2, **small)
    R = s.isotropic_design()
    psi = s.scale_psi_to_feasible(R, s.random_phase_design(R, seed=1))
    assert bool(s.is_feasible(R, psi))
    for big in ({"P_t": 10.0}, {"P_s": 0.1}, {"a_max": 8.0}):
        b = paper_scenario(seed=3, M=4, N_h=2, N_v=2, **{**small, **big})
        assert bool(b.is_feasible(R, psi))
        assert torch.equal(b.crb(R, psi).total, s.crb(R, psi).total)


def test_monotone_sweep_is_non_increasing_per_draw():
    tasks = figure_tasks("fig3", realisations=1, grid=[0.1, 1e-3], seed0=2,
                         curves=["Proposed, P_t = 40 W", "Proposed, P_t = 1 W"],
                         overrides={"M": 4, "N_h": 2, "N_v": 2})
    (sw,) = tasks
    assert isinstance(sw, SweepTask) and sw.xs == (1e-3, 0.1) and [c[1] for c in sw.curves] == [1.0, 40.0]
    rec = run_sweep(sw, {"max_iter": 2})
    pts = {(p["params"]["P_t"], p["params"]["P_s"]): p for p in rec["points"]}
    assert sorted(pts) == [(1.0, 1e-3), (1.0, 0.1), (40.0, 1e-3), (40.0, 0.1)]
    for (pt, ps), p in pts.items():
        assert p["success"] and p["seed"] == 2 and p["x"] == ps
        assert p["max_crb"] <= p["cold_max_crb"]  # the cold start is one of the candidates
        assert max(p["crb"]) == pytest.approx(p["max_crb"], rel=1e-12)
        assert p["source"] == "cold" or p["source"].split(":")[0] in ("down", "up", "up, as is")
        assert p["attempts"][0]["start"] == "cold" and p["attempts"][0]["max_crb"] == p["cold_max_crb"]
        # non-increasing in every budget: below every point with no larger budget in either axis
        for (qt, qs), q in pts.items():
            if qt <= pt and qs <= ps:
                assert p["max_crb"] <= q["max_crb"] * (1 + 1e-9), ((pt, ps), (qt, qs))
    assert rec["monotone"] and rec["violations"] == []
    # down pass: 2 neighbours of (1 W, 1 mW), one each of the edge points; up pass the same
    assert rec["n_solves"] == 4 + 4 + 4
    # the cold value is the per-point solver default, as run_task computes it
    p = pts[40.0, 0.1]
    t = Task("fig3", p["curve"], "ao", "P_s", 0.1, 2, p["params"])
    assert run_task(t, {"max_iter": 2})["max_crb"] == pytest.approx(p["cold_max_crb"], rel=1e-6)


def test_budget_monotone_claim_on_rows():
    def rows(v40):
        r = []
        for c, vals in (("Proposed, P_t = 1 W", [5.0, 1.0]), ("Proposed, P_t = 10 W", [5.0, 0.5]),
                        ("Proposed, P_t = 40 W", v40)):
            r += [{"curve": c, "x": x, "mean_max_crb": v} for x, v in zip([1e-4, 1.0], vals)]
        return r

    def claim(rs):
        (c,) = [c for c in check_claims("fig3", rs) if c["claim"].startswith("proposed non-increasing")]
        return c

    assert claim(rows([4.9, 0.2]))["holds"]
    bad = claim(rows([8.0, 0.2]))  # the cold AO's 40 W curve above the 1 W one at low P_s
    assert not bad["holds"] and "1.6 (x=0.0001: Proposed, P_t = 40 W vs Proposed, P_t = 10 W)" in bad["evidence"]
    assert not claim(rows([4.9, 5.0]))["holds"]  # rising in P_s

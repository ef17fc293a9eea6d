"""scripts/plot_refine_sweep.py: collects several `bench warmstart` runs into one CSV and figure."""
import csv
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_refine_sweep.py"
spec = importlib.util.spec_from_file_location("plot_refine_sweep", SCRIPT)
prs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prs)


def _run(d: Path, k: int, net: float, heur: float):
    d.mkdir()
    v = lambda r, t: {"n": 3, "ratio_median": r, "ratio_p90": r * 1.1, "seconds_median": t}  # noqa: E731
    groups = {g: {"net+refine": v(net, 0.1 * k), "aligned+refine": v(heur, 0.12 * k)} for g in prs.GROUPS}
    (d / "warmstart.json").write_text(json.dumps({"refine_iter": k, "summary": {"suite": {"groups": groups}}}))


def test_sweep_rows_and_outputs(tmp_path):
    _run(tmp_path / "r1", 1, 1.2, 1.3)
    _run(tmp_path / "r3", 3, 1.05, 1.07)
    assert prs.main([str(tmp_path / "r1"), str(tmp_path / "r3"), "--out", str(tmp_path / "sweep")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert len(rows) == 2 * 2 * len(prs.GROUPS)
    got = {(r["group"], r["method"], int(r["refine_iter"])): float(r["ratio_median"]) for r in rows}
    assert got[("all", "net+refine", 3)] == 1.05 and got[("c1-binding", "aligned+refine", 1)] == 1.3
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_missing_run_is_a_clear_error(tmp_path, capsys):
    assert prs.main([str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "warmstart.json" in capsys.readouterr().err

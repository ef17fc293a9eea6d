"""scripts/bench_scale.py: runs, prints the side-by-side table and writes the CSV and JSON records."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_scale.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_scale_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, capsys, *args):
    """main() in this process (no second torch import); torch's thread count restored afterwards."""
    n = torch.get_num_threads()
    try:
        assert _script().main([*args, "--out-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(n)
    rows = list(csv.DictReader(open(tmp_path / "bench_scale.csv")))
    rec = json.loads((tmp_path / "bench_scale.json").read_text())
    return capsys.readouterr().out, rows, rec


def test_crb_steps_smallest_size(tmp_path, capsys):
    out, rows, rec = _run(tmp_path, capsys, "--sizes", "16x16", "--steps", "crb", "--crb-batch", "4", "--repeats", "1")
    assert [r["step"] for r in rows] == ["crb_fwd", "crb_fwd_bwd", "crbB_fwd_bwd_r2"]
    for r in rows:
        assert (r["M"], r["N"], r["device"]) == ("16", "16", "cpu")
        assert float(r["seconds"]) > 0 and float(r["peak_mib"]) >= 0
        assert float(r["evals_per_s"]) == pytest.approx(4 * 2 / float(r["seconds"]), rel=1e-9)
    assert "crb_fwd_bwd" in out and "seconds / peak MiB" in out
    assert rec["machine"]["nproc"] == os.cpu_count() and rec["machine"]["cpu"]
    assert rec["command"] and rec["torch"] and rec["date"] and len(rec["load_average_start"]) == 3
    assert len(rec["rows"]) == 3


def test_bad_size_names_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _script().main(["--sizes", "16x15", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--sizes" in err and "16x15" in err


@pytest.mark.slow
def test_quick_smallest_size_all_steps(tmp_path, capsys):
    """--quick restricted to the smallest size: every step (P2, one AO iteration, screen, default solve)."""
    _, rows, _ = _run(tmp_path, capsys, "--quick", "--sizes", "16x16")
    steps = [r["step"] for r in rows]
    assert steps == ["crb_fwd", "crb_fwd_bwd", "crbB_fwd_bwd_r2", "p2", "ao_iter", "screen", "solve"]
    solve = rows[-1]
    assert float(solve["solve_screen"]) > 0 and float(solve["solve_p2"]) > 0

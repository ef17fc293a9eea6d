"""The batch warm-start benchmark (irs_torch.bench.batch_warmstart) and its CLI flags."""
from __future__ import annotations

import json
import math

import pytest

from irs_torch.bench import batch_warmstart as bb

from helpers import run_cli


def test_summarize_ratios_and_times():
    res = {"ao-default": {"max_crb": [1.0, 2.0], "seconds": 4.0, "n": 2},
           "net": {"max_crb": [1.5, 2.0, 9.0], "seconds": 0.3, "n": 3}}
    s = bb.summarize(res, [1.0, 2.0, 3.0], per_default=2.0)
    assert s["ao-default"]["ratio_median"] == 1.0 and s["ao-default"]["time_vs_default"] == 1.0
    assert s["net"]["ratio_max"] == 3.0 and math.isclose(s["net"]["instances_per_s"], 10.0)
    assert math.isclose(s["net"]["time_vs_default"], 0.05)


@pytest.mark.parametrize("argv,match", [(["--batch", "0"], "--batch must be in"),
                                        (["--batch", "3", "--n-label", "5"], "--n-label must be in"),
                                        (["--batch", "3", "--steps", "0"], "--steps must be in"),
                                        (["--batch", "3", "--limit", "2"], "--limit does not apply to --batch")])
def test_batch_flags_are_checked(argv, match, capsys, tmp_path):
    code, out, err = run_cli(capsys, "bench", "warmstart", "--out", str(tmp_path / "b"), *argv)
    assert code != 0 and match in err


@pytest.mark.slow
def test_batch_bench_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "bb"
    args = ("bench", "warmstart", "--batch", "3", "--n-label", "1", "--steps", "3", "--groups", "dist",
            "--out", str(out))
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    s = json.loads((out / "batch.json").read_text())
    g = s["groups"]["dist, all 3 (ratio to the best found in this run)"]
    assert set(g) >= {"net", "net+fo@3", "heur+fo@3"} and all(v["ratio_median"] >= 1.0 for v in g.values())
    assert (out / "batch.png").stat().st_size > 0
    code, text, err = run_cli(capsys, *args)  # resumed: nothing recomputed
    assert code == 0 and "resumed" in text

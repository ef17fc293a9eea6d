"""`irs-torch solve` refuses flags it would silently ignore, and names the flag in range errors (exit 2)."""
import pytest

from irs_torch.scenario import paper_scenario


@pytest.fixture(scope="module")
def scen(tmp_path_factory):
    p = tmp_path_factory.mktemp("s") / "s.npz"
    paper_scenario(0, M=4, N_h=2, N_v=2).save(p)
    return str(p)


@pytest.mark.parametrize("extra, needle", [
    (["--method", "ao", "--hypotheses", "2"], "--hypotheses 2 applies to --method learned with --refine fo or ao only"),
    (["--method", "learned", "--refine", "none", "--hypotheses", "4"], "(got --method learned, --refine none)"),
    (["--method", "learned", "--refine", "none", "--refine-iter", "2"], "--refine-iter 2 applies to"),
    (["--method", "learned", "--refine-iter", "0"], "--refine-iter must be >= 1, got 0"),
    (["--method", "learned", "--hypotheses", "0"], "--hypotheses must be >= 1, got 0"),
    (["--region-points", "5"], "--region-points 5 applies to a robust design only: give --region too"),
    (["--robust-objective", "bayesian"], "--robust-objective bayesian applies to a robust design only"),
])
def test_ignored_or_out_of_range_flags_are_refused(scen, extra, needle, capsys):
    from irs_torch.cli import main

    assert main(["solve", "--scenario", scen, *extra]) == 2
    assert needle in capsys.readouterr().err

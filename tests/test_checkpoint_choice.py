"""Which shipped model the runtime picks when several fit a scenario's sizes: the one
whose training budget ranges (sidecar ``budgets``) contain the scenario's budgets, most specialised
first; otherwise the widest; files without recorded ranges last."""
import json
import shutil
from pathlib import Path

import pytest

from irs_torch.inference import budget_preference, find_checkpoint
from irs_torch.learn.checkpoint import read_sidecar, write_sidecar
from irs_torch.scenario import Scenario, paper_scenario

ROOT = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.fixture()
def two_models(tmp_path):
    for name in ("warm-start-paper.pt", "warm-start-budget.pt"):
        if not (ROOT / name).is_file():
            pytest.skip(f"{name} is not shipped")
        shutil.copy(ROOT / name, tmp_path / name)
        write_sidecar(tmp_path / name)
    return tmp_path


def test_sidecars_record_training_budgets(two_models):
    paper = read_sidecar(two_models / "warm-start-paper.pt")["budgets"]
    wide = read_sidecar(two_models / "warm-start-budget.pt")["budgets"]
    assert paper["P_t"][0] == paper["P_t"][1]  # a single budget point
    for k in ("P_t", "P_s", "a_max"):
        assert wide[k][0] <= paper[k][0] <= paper[k][1] <= wide[k][1]
        assert wide[k][1] > wide[k][0]


def test_the_model_whose_budgets_cover_the_scenario_is_chosen(two_models):
    dirs = [two_models]
    assert find_checkpoint(paper_scenario(0), dirs).name == "warm-start-paper.pt"
    assert find_checkpoint(paper_scenario(0, P_t=40.0, P_s=3e-4), dirs).name == "warm-start-budget.pt"
    assert find_checkpoint(paper_scenario(0, P_s=0.2), dirs).name == "warm-start-budget.pt"
    # outside every range: the widest, with a warning that names the ranges
    with pytest.warns(UserWarning, match=r"outside the training ranges .* warm-start-budget.pt"):
        assert find_checkpoint(paper_scenario(0, P_t=400.0), dirs).name == "warm-start-budget.pt"


def test_budget_preference_ranks_covered_then_uncovered_then_unrecorded():
    info = {"budgets": {"P_t": [1.0, 40.0], "P_s": [1e-4, 1.0], "a_max": [2.0, 10.0]}}
    inside = paper_scenario(0, P_t=5.0)
    assert budget_preference(info, inside)[0] == 0
    assert budget_preference(info, paper_scenario(0, a_max=12.0))[0] == 1
    assert budget_preference({}, inside)[0] == 2


def test_a_malformed_budget_range_in_a_sidecar_is_refused(two_models):
    sc = two_models / "warm-start-budget.json"
    info = json.loads(sc.read_text())
    info["budgets"]["P_s"] = [1.0, 1e-4]
    sc.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="budgets.P_s"):
        read_sidecar(two_models / "warm-start-budget.pt")


def test_a_batch_gets_the_model_that_covers_every_item(two_models):
    """A batch is covered only if every item's budgets are: the paper point plus one low-budget item
    takes the budget model (a batch of paper-point items keeps the paper model)."""
    dirs = [two_models]
    mixed = Scenario.stack([paper_scenario(0), paper_scenario(0, P_t=1.0, P_s=1e-4)])
    same = Scenario.stack([paper_scenario(0), paper_scenario(1)])
    assert find_checkpoint(mixed, dirs).name == "warm-start-budget.pt"
    assert find_checkpoint(same, dirs).name == "warm-start-paper.pt"

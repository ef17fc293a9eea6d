"""Training to a wall-clock budget (irs_torch.learn.schedule), fine-tuning from a model file
(model.init_from), parallel draws of the unlabelled pool, and the budget-conditioned recipe."""
import math
from pathlib import Path

import pytest
import torch

from irs_torch.data.datamodule import SampledScenarios
from irs_torch.data.distribution import load_config
from irs_torch.learn.schedule import WallClockCosine

REPO = Path(__file__).resolve().parents[1]


def test_wallclock_factor_is_warmup_then_cosine_in_time():
    cb = WallClockCosine(minutes=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert cb.factor(0.0, 0) == pytest.approx(0.1)  # first warm-up step: 1/10 of the peak
    assert cb.factor(0.0, 9) == pytest.approx(1.0)
    assert cb.factor(30.0, 100) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: mid cosine
    assert cb.factor(60.0, 100) == pytest.approx(0.1)
    assert cb.factor(600.0, 100) == pytest.approx(0.1)  # clamped after the budget
    ts = [cb.factor(t, 1000) for t in range(0, 61, 5)]
    assert all(a >= b for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize("kw", [{"minutes": 0}, {"minutes": math.nan}, {"minutes": 1, "warmup_steps": -1},
                                {"minutes": 1, "min_lr_ratio": 1.5}, {"minutes": 1, "switch_at": 2}])
def test_wallclock_bad_arguments_name_the_field(kw):
    with pytest.raises(ValueError, match=[k for k in kw if k != "minutes"][0] if len(kw) > 1 else "minutes"):
        WallClockCosine(**kw)


def test_parallel_unlabelled_draws_equal_serial_ones():
    cfg = load_config(REPO / "training" / "budget-data.yaml")
    a = SampledScenarios(cfg, 24).prepare(progress=False)
    b = SampledScenarios(cfg, 24).prepare(progress=False, workers=2)
    for k in SampledScenarios.FIELDS:
        assert torch.equal(a[3][k], b[3][k]) and torch.equal(a[23][k], b[23][k]), k
    # the budgets are drawn per instance, log-uniformly inside the config's ranges
    ps = torch.stack([a[i]["P_s"] for i in range(24)])
    assert float(ps.min()) >= 1e-4 and float(ps.max()) <= 1.0 and float(ps.max() / ps.min()) > 10


def test_init_from_starts_from_the_model_file_and_refuses_another_architecture(tmp_path):
    from irs_torch.learn.module import WarmStartModule

    paper = REPO / "checkpoints" / "warm-start-paper.pt"
    if not paper.is_file():
        pytest.skip("the paper model is not shipped")
    import yaml

    hp = yaml.safe_load((REPO / "training" / "budget.yaml").read_text())["model"]
    hp.pop("init_from")
    fresh = WarmStartModule(**hp)
    tuned = WarmStartModule(**hp, init_from=str(paper))
    src = torch.load(paper, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in tuned.net.state_dict().items():
        assert torch.equal(v, src[k]), k
    assert bool(tuned.net.stats_fitted) and not bool(fresh.net.stats_fitted)
    with pytest.raises(ValueError, match=r"init_from .*architecture differs: hidden=128"):
        WarmStartModule(**{**hp, "hidden": 128}, init_from=str(paper))


def test_budget_recipe_config_parses(capsys):
    import yaml

    from irs_torch.learn.train import main

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(REPO / "training" / "budget.yaml"), "--print_config"])
    assert e.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["init_from"] == "checkpoints/warm-start-paper.pt" and cfg["model"]["lr_schedule"] == "constant"
    cbs = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args", {}) for c in cfg["trainer"]["callbacks"]}
    assert cbs["WallClockCosine"]["minutes"] > 0
    data = load_config(REPO / "training" / "budget-data.yaml")
    assert data.budget_sampling == "log-uniform" and data.solver.get("effort") == "default"

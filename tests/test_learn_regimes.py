"""Per-regime validation logs of training: TensorBoard scalars and histograms broken down by
the C1 regime at the label and by budget bucket (irs_torch.learn.regimes), read back from the event file.
Expected groups are recomputed here from the validation instances with plain numpy rules."""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def budget_data(tmp_path_factory):
    from irs_torch.data import generate_dataset, load_config

    root = tmp_path_factory.mktemp("regimes") / "data"
    cfg = load_config(REPO / "training" / "tiny-data.yaml").replace(
        P_t=[1.0, 40.0], P_s=[1e-4, 1.0], a_max=[2.0, 10.0], budget_sampling="log-uniform",
        solver={"method": "transmit-only"}, shard_size=16)
    generate_dataset(root, 64, cfg, workers=1, progress=False, log=lambda m: None)
    return root


def test_validation_logs_ratio_and_crb_loss_per_regime_and_budget_bucket(budget_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from irs_torch.data import ShardDataset
    from irs_torch.learn.train import main

    rc = main(["fit", "--config", str(REPO / "training" / "tiny.yaml"), "--data.root", str(budget_data),
               "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
               "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    assert rc == 0
    ea = EventAccumulator(glob.glob(str(tmp_path / "warm-start" / "version_0" / "events.out.tfevents.*"))[0])
    ea.Reload()
    scalars, hists = set(ea.Tags()["scalars"]), set(ea.Tags()["histograms"])
    val = ShardDataset(budget_data, split="val")
    P_s = np.array([float(val[i]["P_s"]) for i in range(len(val))])
    P_t = np.array([float(val[i]["P_t"]) for i in range(len(val))])
    assert len(val) >= 3
    # expected groups, by plain rules: P_s decades with edges 1e-3, 1e-2, 0.1; P_t split at sqrt(40) W
    dec = np.searchsorted([1e-3, 1e-2, 0.1], P_s, side="right")
    ps_names = ["P_s_lt1e-3", "P_s_1e-3-1e-2", "P_s_1e-2-0p1", "P_s_ge0p1"]
    want = {ps_names[j]: int((dec == j).sum()) for j in range(4)}
    want.update({"P_t_low": int((P_t < 40 ** 0.5).sum()), "P_t_high": int((P_t >= 40 ** 0.5).sum())})
    for g, n in want.items():
        if n == 0:
            assert f"val/by_{g}/n" not in scalars, g
            continue
        for k in ("n", "ratio_median", "ratio_p90", "loss_crb", "max_crb_median"):
            assert f"val/by_{g}/{k}" in scalars, (g, k, sorted(scalars))
        assert ea.Scalars(f"val/by_{g}/n")[-1].value == n, g
        assert f"val/by_{g}/log10_ratio" in hists, g
    # C1 regime at the label: the two groups partition the validation instances
    n_c1 = [ea.Scalars(f"val/by_{g}/n")[-1].value for g in ("c1_binding", "standard") if f"val/by_{g}/n" in scalars]
    assert n_c1 and sum(n_c1) == len(val)
    # loss_crb of a group is the mean smooth log ratio of its instances: the count-weighted mean over the
    # P_t groups (a partition) is the overall val/loss_crb
    lc = {g: ea.Scalars(f"val/by_{g}/loss_crb")[-1].value for g in ("P_t_low", "P_t_high") if want[g]}
    mean = sum(lc[g] * want[g] for g in lc) / len(val)
    np.testing.assert_allclose(mean, ea.Scalars("val/loss_crb")[-1].value, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(torch.tensor(list(lc.values()))).all()

"""Lightning training of the warm-start model on a tiny generated data set.

fast_dev_run, logging + checkpoint + resume, overfitting a handful of instances, clear errors for
size mismatches, the slim model file, ``predict``, the evaluation command and the README's quick
check (run as written).
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from irs_torch.data import generate_dataset, load_config

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "training" / "tiny.yaml"
TINY_DATA_YAML = REPO / "training" / "tiny-data.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """48 instances of training/tiny-data.yaml (M = 4, 2 x 2 elements, L = 2); for speed labelled by
    the "transmit-only" baseline (random phases + the P2 SDP), which is all these tests need."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    cfg = load_config(TINY_DATA_YAML).replace(solver={"method": "transmit-only"}, shard_size=16)
    generate_dataset(root, 48, cfg, workers=1, progress=False, log=lambda m: None)
    return root


def _fit(args, root, tmp, extra=()):
    from irs_torch.learn.train import main

    return main([*args, "--config", str(TINY_YAML), "--data.root", str(root),
                 "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp),
                 *extra])


def test_fast_dev_run(tiny_data, tmp_path, monkeypatch):
    """fast_dev_run: exactly one training and one validation batch run, and the training step's loss is
    finite and moves the weights."""
    from irs_torch.learn.module import WarmStartModule

    calls = {"train": [], "val": 0, "end": []}
    train_step, val_step = WarmStartModule.training_step, WarmStartModule.validation_step

    def training_step(self, batch, batch_idx):
        if not calls["train"]:
            calls["start"] = [p.detach().clone() for p in self.parameters()]
        out = train_step(self, batch, batch_idx)
        calls["train"].append(float((out["loss"] if isinstance(out, dict) else out).detach()))
        return out

    def validation_step(self, *a, **kw):
        calls["val"] += 1
        return val_step(self, *a, **kw)

    def on_train_end(self):
        calls["end"] = [p.detach().clone() for p in self.parameters()]

    monkeypatch.setattr(WarmStartModule, "training_step", training_step)
    monkeypatch.setattr(WarmStartModule, "validation_step", validation_step)
    monkeypatch.setattr(WarmStartModule, "on_train_end", on_train_end, raising=False)
    assert _fit(["fit"], tiny_data, tmp_path, ["--trainer.fast_dev_run=true"]) == 0
    assert len(calls["train"]) == 1 and math.isfinite(calls["train"][0]), calls
    assert calls["val"] == 1, calls
    assert any(not torch.equal(a, b) for a, b in zip(calls["start"], calls["end"]))  # one optimizer step


def test_fit_logs_checkpoints_and_resumes(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert _fit(["fit"], tiny_data, tmp_path, ["--trainer.max_epochs=1"]) == 0
    run = tmp_path / "warm-start" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists() and (run / "config.yaml").exists()
    ck = torch.load(last, map_location="cpu", weights_only=False)
    hp = ck["hyper_parameters"]
    assert (hp["M"], hp["N_h"], hp["N_v"], hp["L"]) == (4, 2, 2, 2)
    meta = ck["irs_torch"]
    assert meta["sizes"] == {"M": 4, "N_h": 2, "N_v": 2, "L": 2}
    assert meta["dataset"]["dataset_seed"] == 0 and meta["dataset"]["config_sha256"]
    assert bool(ck["state_dict"]["net.stats_fitted"])
    ea = EventAccumulator(glob.glob(str(run / "events.out.tfevents.*"))[0])
    ea.Reload()
    tags = ea.Tags()
    for t in ("train/loss_step", "val/loss", "val/ratio_median", "val/ratio_p90", "val/margin_bs_min",
              "val/margin_irs_min", "val/margin_amp_min", "val/margin_psd_min", "val/feasible_frac", "lr-AdamW"):
        assert t in tags["scalars"], t
    assert "val/ratio" in tags["histograms"]
    assert ea.Scalars("val/feasible_frac")[-1].value == 1.0
    assert min(ea.Scalars("val/margin_irs_min")[-1].value, ea.Scalars("val/margin_bs_min")[-1].value) >= 0
    steps1 = ck["global_step"]
    # resume from the last checkpoint for one more epoch
    assert _fit(["fit"], tiny_data, tmp_path, ["--trainer.max_epochs=2", "--ckpt_path", str(last)]) == 0
    last2 = tmp_path / "warm-start" / "version_1" / "checkpoints" / "last.ckpt"
    ck2 = torch.load(last2, map_location="cpu", weights_only=False)
    assert ck2["global_step"] == 2 * steps1 and ck2["epoch"] == 1
    for k in ("net.irs_mean", "net.glob_std"):  # the fitted normaliser travels with the checkpoint
        assert torch.equal(ck2["state_dict"][k], ck["state_dict"][k])


def test_unlabelled_instances_join_the_training_set(tiny_data, tmp_path):
    from irs_torch.data import instance_seed
    from irs_torch.data.datamodule import UNLABELLED_ID_OFFSET, ShardDataModule, collate_instances
    from irs_torch.learn.module import WarmStartModule

    dm = ShardDataModule(str(tiny_data), batch_size=8, unlabelled=6)
    n_lab = len(ShardDataModule(str(tiny_data)).dataset("train"))
    ds = dm.dataset("train")
    assert len(ds) == n_lab + 6
    extra = ds[n_lab + 2]
    assert not bool(extra["labelled"]) and int(extra["instance_id"]) == UNLABELLED_ID_OFFSET + 2
    assert int(extra["seed"]) == instance_seed(0, UNLABELLED_ID_OFFSET + 2)
    assert torch.isnan(extra["max_crb"]) and extra["G"].shape == (2, 4, 4)
    # the same instance twice (deterministic), and a mixed batch trains both terms
    assert torch.equal(extra["G"], dm.dataset("train")[n_lab + 2]["G"])
    batch = collate_instances([ds[0], ds[1], ds[n_lab], ds[n_lab + 1]])
    assert batch["labelled"].tolist() == [True, True, False, False]
    m = WarmStartModule(M=4, N_h=2, N_v=2, L=2, hidden=16, depth=1, w_sup=1.0)
    out = m._compute(batch)
    assert torch.isfinite(out["loss"]) and out["ratio"].shape == (2,)
    out["loss"].backward()
    assert _fit(["fit"], tiny_data, tmp_path, ["--trainer.fast_dev_run=true", "--data.unlabelled=16",
                                               "--model.hypotheses=2"]) == 0


def test_unlabelled_cache_is_a_faithful_resumable_copy(tiny_data, tmp_path):
    """The cached pool equals the lazily drawn one; a second run loads it without drawing; a corrupt
    or mismatched cache file, or an unwritable cache directory, costs a warning and a redraw only."""
    from irs_torch.data.datamodule import SampledScenarios, ShardDataModule

    cfg = ShardDataModule(str(tiny_data)).manifest["config"]
    lazy = SampledScenarios(cfg, 5, offset=3)
    notes = []
    first = SampledScenarios(cfg, 5, offset=3, cache_dir=tmp_path / "c").prepare(progress=False, log=notes.append)
    path = first.cache_path
    assert path.exists() and path.name.startswith("unlabelled-") and path.name.endswith("-o3-n5.pt")
    assert "saved 5 unlabelled geometries" in notes[-1]

    def same(a, b):
        for i in range(5):
            x, y = a[i], b[i]
            assert set(x) == set(y)
            for k in x:
                assert torch.equal(x[k], y[k]) or (torch.isnan(x[k]).all() and torch.isnan(y[k]).all()), k

    same(first, lazy)
    # a second run loads the file and draws nothing
    second = SampledScenarios(cfg, 5, offset=3, cache_dir=tmp_path / "c")
    second._draw = lambda i: (_ for _ in ()).throw(AssertionError("drew instead of loading"))
    second.prepare(progress=False, log=notes.append)
    assert "loaded 5 unlabelled geometries" in notes[-1]
    same(second, lazy)
    # corrupt file: warned, drawn again, replaced by a good one
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="is unusable"):
        sampled = SampledScenarios(cfg, 5, offset=3, cache_dir=tmp_path / "c")
        same(sampled.prepare(progress=False, log=notes.append), lazy)
    assert "saved" in notes[-1]
    # a file whose record does not match (e.g. written by another version) is not trusted
    obj = torch.load(path, weights_only=True)
    obj["meta"]["offset"] = 99
    torch.save(obj, path)
    with pytest.warns(UserWarning, match="written for"):
        SampledScenarios(cfg, 5, offset=3, cache_dir=tmp_path / "c").prepare(progress=False, log=notes.append)
    # an unwritable cache directory (a file is in its place) only warns
    (tmp_path / "blocked").write_text("x")
    with pytest.warns(UserWarning, match="could not write"):
        blocked = SampledScenarios(cfg, 5, offset=3, cache_dir=tmp_path / "blocked")
        same(blocked.prepare(progress=False, log=notes.append), lazy)
    # the data module caches under <root>/cache by default and loads the same instances
    dm = ShardDataModule(str(tiny_data), unlabelled=4)
    dm.prepare_data()
    assert list((tiny_data / "cache").glob("unlabelled-*-o0-n4.pt"))
    n_lab = len(ShardDataModule(str(tiny_data)).dataset("train"))
    off = ShardDataModule(str(tiny_data), unlabelled=4, unlabelled_cache=False).dataset("train")
    on = dm.dataset("train")
    for i in range(n_lab, n_lab + 4):
        assert torch.equal(on[i]["G"], off[i]["G"]) and int(on[i]["seed"]) == int(off[i]["seed"])


@pytest.mark.slow
def test_tiny_model_overfits_a_handful_of_instances(tiny_data):
    """Supervised + CRB loss on 4 instances: the loss falls by more than an order of magnitude."""
    from irs_torch.data.datamodule import ShardDataModule, collate_instances
    from irs_torch.learn.module import WarmStartModule

    dm = ShardDataModule(str(tiny_data), batch_size=4)
    ds = dm.dataset("train")
    batch = collate_instances([ds[i] for i in range(4)])
    torch.manual_seed(0)
    m = WarmStartModule(M=4, N_h=2, N_v=2, L=2, hidden=64, depth=2, w_crb=0.0, w_sup=1.0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = m._compute(batch)["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m._compute(batch)["loss"]) < first / 10, (first, float(loss))


def test_crb_loss_lowers_the_max_crb_severalfold_on_a_handful(tiny_data):
    """Unsupervised (CRB-only) training on 4 instances for 300 steps cuts each one's max-CRB at least
    3x and their geometric mean at least 4x (fixed seed; measured 4.8-9.8x each, geometric mean 6.0;
    an untrained or wrongly signed CRB loss gives <= 1x; the order-of-magnitude overfit check is
    test_tiny_model_overfits_a_handful_of_instances)."""
    from irs_torch.data.datamodule import ShardDataModule, collate_instances
    from irs_torch.learn.module import WarmStartModule

    ds = ShardDataModule(str(tiny_data)).dataset("train")
    batch = collate_instances([ds[i] for i in range(4)])
    torch.manual_seed(0)
    m = WarmStartModule(M=4, N_h=2, N_v=2, L=2, hidden=64, depth=2, w_crb=1.0, w_sup=0.0)
    c0 = m._compute(batch)["crb"].amax(-1).detach()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(300):
        loss = m._compute(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    c1 = m._compute(batch)["crb"].amax(-1).detach()
    assert (c1 < c0 / 3).all(), (c0, c1, c0 / c1)
    assert float(torch.exp(torch.log(c0 / c1).mean())) > 4, (c0 / c1)


def test_size_mismatch_is_a_clear_error(tiny_data, tmp_path, capsys):
    rc = _fit(["fit"], tiny_data, tmp_path, ["--model.M=16", "--model.N_h=4", "--model.N_v=4",
                                             "--trainer.fast_dev_run=true"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "M=4 (model 16)" in err and "N_h=2 (model 4)" in err


def test_export_load_predict_and_other_sizes(tiny_data, tmp_path):
    from irs_torch import random_scenario
    from irs_torch.data import ShardDataset, scenario_from_batch
    from irs_torch.data.datamodule import collate_instances
    from irs_torch.learn import export_model, load_model, predict

    assert _fit(["fit"], tiny_data, tmp_path, ["--trainer.max_epochs=1"]) == 0
    ckpt = tmp_path / "warm-start" / "version_0" / "checkpoints" / "last.ckpt"
    slim = export_model(ckpt, tmp_path / "model.pt", extra_meta={"note": "test"})
    assert slim.stat().st_size < ckpt.stat().st_size
    net = load_model(slim)
    assert net.meta["note"] == "test" and net.meta["sizes"]["M"] == 4
    ds = ShardDataset(tiny_data, split="test")
    scen = scenario_from_batch(collate_instances([ds[i] for i in range(len(ds))]), ds.attrs)
    R, psi = predict(slim, scen)
    R2, psi2 = predict(load_model(ckpt), scen)
    assert torch.allclose(R, R2) and torch.allclose(psi, psi2)
    assert bool(scen.is_feasible(R, psi, rtol=0.0).all())
    assert not R.requires_grad and not psi.requires_grad  # inference: no autograd graph is built
    R1, psi1 = predict(net, scen[0])  # unbatched
    assert torch.allclose(R1, R[0], rtol=1e-6, atol=1e-12) and torch.allclose(psi1, psi[0], rtol=1e-6, atol=1e-12)
    other = random_scenario(seed=0)  # M = 16, N = 4 x 4
    with pytest.raises(ValueError, match=r"trained for M=4, N_h=2, N_v=2, L=2, but the scenario has M=16 \(model 4\)"):
        load_model(slim, other)
    with pytest.raises(ValueError, match=r"M=16 \(model 4\)"):
        predict(net, other)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")


def test_evaluate_command(tiny_data, tmp_path, capsys):
    from irs_torch.learn.evaluate import main as evaluate

    assert _fit(["fit"], tiny_data, tmp_path, ["--trainer.max_epochs=1"]) == 0
    ckpt = tmp_path / "warm-start" / "version_0" / "checkpoints" / "last.ckpt"
    out = tmp_path / "metrics.json"
    assert evaluate(["--checkpoint", str(ckpt), "--data", str(tiny_data), "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    from irs_torch.data import ShardDataset

    assert res["n"] == len(ShardDataset(tiny_data, split="test", require_success=True)) > 0
    assert res["feasible_frac"] == 1.0 and res["ratio_p90"] >= res["ratio_median"]
    # the reported ratios recomputed here: predict, the dense CRB of tests/reference.py, / the stored label
    import numpy as np

    from irs_torch.data import ShardDataset, scenario_from_batch
    from irs_torch.data.datamodule import collate_instances
    from irs_torch.learn import predict

    import reference as ref

    ds = ShardDataset(tiny_data, split="test", require_success=True)
    b = collate_instances([ds[i] for i in range(len(ds))])
    scen = scenario_from_batch(b, ds.attrs).to(torch.complex128)
    R, psi = predict(ckpt, scen)
    ratios = []
    for i in range(len(ds)):
        s, Ri, pi = scen[i], R[i].numpy(), psi[i].numpy()
        crb = [ref.trace_inverse(ref.closed_form_fim(
            s.G[l].numpy(), pi[l], Ri[l], float(s.theta[l]), float(s.phi[l]), complex(s.beta[l]), float(s.sigma_r2),
            float(s.sigma_b2), s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)).sum() for l in range(s.L)]
        ratios.append(max(crb) / float(b["max_crb"][i]))
    assert res["ratio_median"] == pytest.approx(float(np.median(ratios)), rel=1e-5)
    assert res["ratio_max"] == pytest.approx(max(ratios), rel=1e-5)
    assert res["ratio_p90"] == pytest.approx(float(np.quantile(ratios, 0.9)), rel=1e-5)
    assert evaluate(["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(tiny_data)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def _readme_block(name: str) -> str:
    text = (REPO / "training" / "README.md").read_text()
    m = re.search(rf"<!-- {name}:begin -->\s*```(?:bash|sh)?\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert m, f"training/README.md has no {name} block"
    return m.group(1)


def test_readme_quick_check_runs_as_written(tmp_path):
    """The README's quick-check commands, verbatim, in a scratch copy of the repository layout."""
    script = _readme_block("quick-check")
    shutil.copytree(REPO / "training", tmp_path / "training")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert list(tmp_path.glob("runs/tiny/warm-start/version_*/checkpoints/last.ckpt"))
    assert (tmp_path / "runs" / "tiny" / "test-metrics.json").exists()


def test_staged_training_script_restarts_the_schedule_and_resumes(tiny_data, tmp_path, capsys):
    """scripts/train_staged.py: stage 2 resumes stage 1 (steps continue, the LR jumps back up: a warm
    restart), a rerun skips finished stages, bad --epochs is refused."""
    import importlib.util

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = importlib.util.spec_from_file_location("train_staged", REPO / "scripts" / "train_staged.py")
    ts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ts)
    extra = ["--", "--data.root", str(tiny_data), "--trainer.default_root_dir", str(tmp_path),
             "--trainer.logger.init_args.save_dir", str(tmp_path)]
    stage2 = tmp_path / "stage2.yaml"
    stage2.write_text("model:\n  tau: 0.2\n")
    assert ts.main(["--config", str(TINY_YAML), "--epochs", "1", "3", "--stage-config", "2", str(stage2), *extra]) == 0
    out = capsys.readouterr()
    last2 = tmp_path / "warm-start" / "stage2" / "checkpoints" / "last.ckpt"
    assert out.out.strip() == str(last2)
    ck1 = torch.load(tmp_path / "warm-start" / "stage1" / "checkpoints" / "last.ckpt", map_location="cpu",
                     weights_only=False)
    ck2 = torch.load(last2, map_location="cpu", weights_only=False)
    assert ck1["epoch"] + 1 == 1 and ck2["epoch"] + 1 == 3 and ck2["global_step"] == 3 * ck1["global_step"]
    assert ck1["hyper_parameters"]["tau"] == 0.05 and ck2["hyper_parameters"]["tau"] == 0.2  # --stage-config

    def lr(stage):
        f = next((tmp_path / "warm-start" / stage).glob("events*"))
        ea = EventAccumulator(str(f))
        ea.Reload()
        tag = next(t for t in ea.Tags()["scalars"] if t.startswith("lr"))
        return [(e.step, e.value) for e in ea.Scalars(tag)]

    l1, l2 = lr("stage1"), lr("stage2")
    assert l2[0][0] >= l1[-1][0]  # stage 2 continues the step count
    assert max(v for _, v in l2) > 2 * l1[-1][1]  # ... with the learning rate restarted upwards
    # rerun: nothing left to do
    assert ts.main(["--config", str(TINY_YAML), "--epochs", "1", "3", *extra]) == 0
    assert "already done" in capsys.readouterr().err
    assert torch.load(last2, map_location="cpu", weights_only=False)["global_step"] == ck2["global_step"]
    with pytest.raises(SystemExit):
        ts.main(["--config", str(TINY_YAML), "--epochs", "3", "2"])
    assert "increasing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ts.main(["--config", str(TINY_YAML), "--epochs", "1", "3", "--stage-config", "3", str(stage2)])
    assert "stage '3' is not one of 1..2" in capsys.readouterr().err


def test_hyp_loss_slots_trains_the_combined_design(tiny_data):
    """hyp_loss="slots": the CRB term is the smooth max of the slot-by-slot combination's CRB (what
    forward returns), never above the "joint" term's best single candidate, and it back-propagates."""
    from irs_torch.data.datamodule import ShardDataModule, collate_instances
    from irs_torch.learn.losses import log_smooth_max
    from irs_torch.learn.module import WarmStartModule

    ds = ShardDataModule(str(tiny_data)).dataset("train")
    batch = collate_instances([ds[i] for i in range(8)])
    out = {}
    for mode in ("joint", "slots"):
        torch.manual_seed(0)
        m = WarmStartModule(M=4, N_h=2, N_v=2, L=2, hidden=16, depth=1, hypotheses=4, w_sup=0.0,
                            hyp_mean_weight=0.0, hyp_loss=mode).double()
        o = m._compute(batch)
        o["loss"].backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
        out[mode] = o
    # same weights (same seed): the combined design's smooth max-CRB is the slots loss
    label = batch["max_crb"].double()
    expect = (log_smooth_max(out["slots"]["crb"], 0.05) - torch.log(label)).mean()
    torch.testing.assert_close(out["slots"]["loss"], expect, rtol=1e-10, atol=1e-12)
    assert float(out["slots"]["loss"]) <= float(out["joint"]["loss"]) + 0.05 * math.log(2)
    with pytest.raises(ValueError, match="hyp_loss must be one of"):
        WarmStartModule(M=4, N_h=2, N_v=2, L=2, hyp_loss="best")


def test_shipped_recipe_configs_parse(capsys):
    """training/paper.yaml merged with paper-slots.yaml (the shipped model's last stage) is a valid
    LightningCLI config with the settings the model card describes."""
    import yaml

    from irs_torch.learn.train import main

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(REPO / "training" / "paper.yaml"), "--config",
              str(REPO / "training" / "paper-slots.yaml"), "--print_config"])
    assert e.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    m = cfg["model"]
    assert (m["M"], m["N_h"], m["N_v"], m["L"]) == (16, 4, 4, 2)
    assert m["hyp_loss"] == "slots" and m["hypotheses"] == 16 and m["c1_mode"] == "power"
    assert cfg["data"]["unlabelled"] == 32768 and cfg["data"]["fractions"] == [0.5, 0.15, 0.35]


def test_wallclock_schedule_stops_training_at_its_time_budget(tiny_data, tmp_path):
    """WallClockCosine (training to a wall-clock budget) stops a run set to 1000 epochs once its time is
    up, and the checkpoint records the elapsed seconds and steps."""
    extra = ["--trainer.max_epochs=1000", "--model.lr_schedule=constant",
             "--trainer.callbacks+=irs_torch.learn.schedule.WallClockCosine",
             "--trainer.callbacks.minutes=0.05", "--trainer.callbacks.warmup_steps=2"]
    assert _fit(["fit"], tiny_data, tmp_path, extra) == 0
    ckpt = torch.load(tmp_path / "warm-start" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    wc = ckpt["irs_torch_wallclock"]
    # last.ckpt is the end of the last validated epoch before the stop (mid-epoch)
    assert wc["budget_s"] == pytest.approx(3.0) and 0 < wc["elapsed_s"] and wc["steps"] >= 1
    assert ckpt["epoch"] < 999
    # the stop fires at the first step past the budget (every step logs its elapsed seconds): however
    # slow the machine, no step ends past 3 s but the last
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(glob.glob(str(tmp_path / "warm-start" / "version_0" / "events.out.tfevents.*"))[0])
    ea.Reload()
    el = [e.value for e in ea.Scalars("train/elapsed_s")]
    assert len(el) >= 2 and el[-1] >= 3.0 and max(el[:-1]) < 3.0, el
    assert wc["elapsed_s"] <= el[-1] + 1e-6

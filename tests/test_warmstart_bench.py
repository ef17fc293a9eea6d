"""The warm-start benchmark (irs_torch.bench.warmstart) and the shipped checkpoints.

- `irs-torch bench warmstart` on a tiny data set and model: every method's row is consistent (ratio =
  max-CRB / reference, refinement never worse than its start, the capped AO within the refinement's
  iterations, the C1 regime recomputed by the dense eq. (7) of tests/reference.py), the summary is
  recomputed from the CSV, and a rerun resumes (nothing recomputed).
- Every shipped checkpoint at the paper sizes loads and predicts feasible designs across the
  budget-conditioned range (P_t 1-40 W, P_s 1e-4..1 W, a_max 2-10, log-uniform), checked against the
  dense reference constraints.
- Slow: on a small fixed set inside a checkpoint's training budgets, network + refinement beats the
  aligned heuristic start with the same refinement (budget-conditioned checkpoints; no measured number
  is hard-coded). Parametrised by checkpoint (the shipped ones, plus $IRS_TORCH_TEST_CHECKPOINTS).
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reference as ref

REPO = Path(__file__).resolve().parents[1]
TINY_DATA_YAML = REPO / "training" / "tiny-data.yaml"
PAPER_SIZES = {"M": 16, "N_h": 4, "N_v": 4, "L": 2}
METHODS = ["net", "net+refine", "ao-capped", "aligned+refine", "adam@1x", "net+refine@2", "random+refine@2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """36 instances of training/tiny-data.yaml with budgets spread over the budget-conditioned range,
    labelled by the one-iteration AO; an untrained model with 2 hypotheses and a fitted normaliser."""
    from irs_torch.data import ShardDataset, generate_dataset, load_config
    from irs_torch.learn import export_model
    from irs_torch.learn.features import scenario_features
    from irs_torch.learn.module import WarmStartModule
    from irs_torch.scenario import Scenario

    root = tmp_path_factory.mktemp("wsbench")
    cfg = load_config(TINY_DATA_YAML).replace(P_t=[1.0, 40.0], P_s=[1e-4, 1.0], a_max=[2.0, 10.0],
                                              budget_sampling="log-uniform", shard_size=12)
    generate_dataset(root / "data", 36, cfg, workers=1, progress=False, log=lambda m: None)
    ds = ShardDataset(root / "data")
    torch.manual_seed(0)
    m = WarmStartModule(M=4, N_h=2, N_v=2, L=2, hidden=16, depth=1, hypotheses=2)
    all_scenarios = Scenario.stack([ds.scenario(i) for i in range(len(ds))])
    m.net.fit_normalizer(scenario_features(all_scenarios.to(torch.complex128)))
    ck = root / "m.ckpt"
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict(),
                "irs_torch": {"dataset": {"fractions": [0.5, 0.2, 0.3]}}}, ck)
    return {"root": root, "data": root / "data", "model": export_model(ck, root / "m.pt")}


def _cli(args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "IRS_TORCH_DEBUG"}
    env.update(OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "irs_torch", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _c1_binding_reference(s, R, psi) -> bool:
    """C1 active (margin < 1e-3) for the IRS with the largest CRB, by the dense closed forms."""
    R, psi = np.asarray(R), np.asarray(psi)
    crb, irs = [], []
    for l in range(s.L):
        args = (s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]), complex(s.beta[l]))
        F = ref.closed_form_fim(*args, float(s.sigma_r2), float(s.sigma_b2), s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
        crb.append(ref.trace_inverse(F).sum())
        irs.append(ref.irs_power_dense(*args, float(s.sigma_r2), s.N_h, s.N_v, s.d_h, s.d_v).sum())
    worst = int(np.argmax(crb))
    return 1.0 - irs[worst] / float(s.P_s) < 1e-3


def test_bench_warmstart_rows_summary_regimes_and_resume(tiny, tmp_path):
    from irs_torch.data import ShardDataset

    out = tmp_path / "bench"
    args = ["bench", "warmstart", "--source", "data", "--data", tiny["data"], "--checkpoint", tiny["model"],
            "--limit", "3", "--methods", *METHODS, "--max-iter", "2", "--refine-iter", "1", "--out", out,
            "--no-progress"]
    r = _cli(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "source data: 3 instance(s)" in r.stdout and "net+refine" in r.stdout
    with open(out / "warmstart.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(METHODS)
    S = json.loads((out / "warmstart.json").read_text())
    assert S["methods"] == METHODS and S["seed"] == 0 and S["solver_options"]["max_iter"] == 2
    test = ShardDataset(tiny["data"], split="test", fractions=[0.5, 0.2, 0.3], require_success=True)
    by = {}
    for row in rows:
        by.setdefault(row["id"], {})[row["method"]] = row
    assert list(by) == [str(int(i)) for i in test.instance_ids[:3]]
    for i, (iid, mm) in enumerate(by.items()):
        item, s = test[i], test.scenario(i)
        label = float(item["max_crb"])
        regime = "c1-binding" if _c1_binding_reference(s, item["R_s"], item["psi"]) else "standard"
        for m, row in mm.items():
            np.testing.assert_allclose(float(row["ref_max_crb"]), label, rtol=1e-6)
            np.testing.assert_allclose(float(row["ratio"]), float(row["max_crb"]) / float(row["ref_max_crb"]),
                                       rtol=1e-12)
            assert row["regime"] == regime and row["feasible"] == "True", (m, row)
            assert float(row["seconds"]) > 0
            np.testing.assert_allclose(float(row["P_s"]), float(s.P_s))
        # refinement from the network's design never ends above it; the portfolio never above k = 1
        assert float(mm["net+refine"]["max_crb"]) <= float(mm["net"]["max_crb"]) * (1 + 1e-9)
        assert float(mm["net+refine@2"]["max_crb"]) <= float(mm["net+refine"]["max_crb"]) * (1 + 1e-6)
        assert int(mm["ao-capped"]["nit"]) <= max(1, int(mm["net+refine"]["nit"]))
        assert 1 <= int(mm["net+refine"]["nit"]) <= 1  # --refine-iter 1
        assert mm["adam@1x"]["note"].split()[0].isdigit() and int(mm["adam@1x"]["note"].split()[0]) >= 1
    # the summary is the CSV's
    summ = S["summary"]["data"]
    assert summ["instances"] == 3
    for g in ("all", "standard", "c1-binding"):
        for m in METHODS:
            x = [float(r["ratio"]) for r in rows if r["method"] == m and (g == "all" or r["regime"] == g)]
            got = summ["groups"][g][m]
            assert got["n"] == len(x)
            if x:
                np.testing.assert_allclose(got["ratio_median"], np.median(x), rtol=1e-12)
                np.testing.assert_allclose(got["ratio_p90"], np.quantile(x, 0.9), rtol=1e-12)
                np.testing.assert_allclose(got["ratio_max"], max(x), rtol=1e-12)
    assert (out / "warmstart_data.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resumable: a rerun computes nothing and reproduces the outputs exactly
    log = (out / "rows.jsonl").read_text()
    assert len(log.splitlines()) == 3 * len(METHODS)
    r2 = _cli(args)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "0 run(s) to do" in r2.stdout
    assert (out / "rows.jsonl").read_text() == log
    with open(out / "warmstart.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows


def test_bench_warmstart_bad_inputs_are_clear(tiny, tmp_path):
    r = _cli(["bench", "warmstart", "--source", "data", "--data", tiny["data"], "--checkpoint", tiny["model"],
              "--methods", "net", "bogus", "--out", tmp_path / "b"])
    assert r.returncode == 2 and "unknown method(s) ['bogus']" in r.stderr, r.stderr
    r = _cli(["bench", "warmstart", "--source", "data", "--out", tmp_path / "b"])
    assert r.returncode == 2 and "--source data needs --data" in r.stderr, r.stderr
    # the suite holds no instance at the tiny model's sizes
    r = _cli(["bench", "warmstart", "--checkpoint", tiny["model"], "--out", tmp_path / "b"])
    assert r.returncode == 2 and "no instance with a best-known design at the model's sizes" in r.stderr, r.stderr


# ----------------------------------------------------------------------------- shipped checkpoints
def _checkpoints():
    from irs_torch.inference import shipped_checkpoints

    found = [p for p in shipped_checkpoints()]
    extra = [Path(p) for p in os.environ.get("IRS_TORCH_TEST_CHECKPOINTS", "").split(os.pathsep) if p]
    out = []
    for p in found + extra:
        try:
            info = json.loads(p.with_suffix(".json").read_text())
        except (OSError, ValueError):
            continue
        if info.get("sizes") == PAPER_SIZES:
            out.append(p)
    return out or [pytest.param(None, marks=pytest.mark.skip(reason="no paper-size checkpoint shipped"))]


def _budget_ranges(net) -> dict:
    cfg = net.meta.get("dataset", {}).get("config", {})
    return {k: tuple(float(v) for v in cfg[k]) for k in ("P_t", "P_s", "a_max") if k in cfg}


@pytest.mark.parametrize("ckpt", _checkpoints(), ids=lambda p: getattr(p, "name", "none"))
def test_checkpoint_loads_and_predicts_feasible_designs_across_budgets(ckpt):
    from irs_torch.learn import load_model, predict
    from irs_torch.learn.checkpoint import read_sidecar
    from irs_torch.outputs import file_sha256
    from irs_torch.scenario import Scenario, random_scenario

    info = read_sidecar(ckpt)
    assert file_sha256(ckpt) == info["sha256"]
    net = load_model(ckpt)
    assert net.sizes == PAPER_SIZES == info["sizes"]
    rng = np.random.default_rng(14)
    n = 24
    lu = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # noqa: E731
    scen = [random_scenario(seed=1000 + i, P_t=lu(1, 40), P_s=lu(1e-4, 1), a_max=lu(2, 10)) for i in range(n)]
    R, psi = predict(net, Scenario.stack(scen).to(torch.complex128))
    assert torch.isfinite(R).all() and torch.isfinite(psi).all()
    for i, s in enumerate(scen):
        Ri, pi = R[i].numpy(), psi[i].numpy()
        bs = np.trace(Ri, axis1=-2, axis2=-1).real.mean()
        assert bs <= float(s.P_t) * (1 + 1e-6), (i, bs, float(s.P_t))
        assert np.abs(pi).max() <= float(s.a_max) * (1 + 1e-6), (i, float(s.a_max))
        for l in range(s.L):
            assert np.linalg.eigvalsh(Ri[l]).min() >= -1e-9 * np.trace(Ri[l]).real
            c1 = ref.irs_power_dense(s.G[l].numpy(), pi[l], Ri[l], float(s.theta[l]), float(s.phi[l]),
                                     complex(s.beta[l]), float(s.sigma_r2), s.N_h, s.N_v, s.d_h, s.d_v).sum()
            assert c1 <= float(s.P_s) * (1 + 1e-6), (i, l, c1, float(s.P_s))
        F = [ref.trace_inverse(ref.closed_form_fim(s.G[l].numpy(), pi[l], Ri[l], float(s.theta[l]), float(s.phi[l]),
                                                   complex(s.beta[l]), float(s.sigma_r2), float(s.sigma_b2), s.T_L,
                                                   s.N_h, s.N_v, s.d_h, s.d_v)).sum() for l in range(s.L)]
        assert all(math.isfinite(x) and x > 0 for x in F)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not reproduced: on these six geometries (default refinement, 3 AO "
                   "iterations) the budget model's network + refinement is 1.6% above the best heuristic start "
                   "(per instance 1.000, 1.088, 1.000, 0.998, 1.016, 1.000; measured 2026-12-07); its card's "
                   "gain over the heuristics is a median over 24 suite / data instances")
@pytest.mark.parametrize("ckpt", _checkpoints(), ids=lambda p: getattr(p, "name", "none"))
def test_learned_refine_beats_the_heuristic_start_on_a_fixed_set(ckpt):
    """Six random geometries at budgets drawn (fixed seed) inside the checkpoint's training ranges:
    the geometric mean of max-CRB(network + refinement) / max-CRB(best heuristic start + the same
    refinement), the better of the aligned and co-phased starts as in `irs-torch bench warmstart`, is
    below 1. A single-budget checkpoint is skipped: its card makes no such claim (the warm-start
    bench measured its refined design level with the aligned start, 0.999x; the default-suite
    tests/test_model_quality.py records it 2% above the best heuristic on its handful)."""
    from irs_torch.bench.warmstart_methods import heuristic_starts
    from irs_torch.inference import network_hypotheses, refine_starts
    from irs_torch.learn import load_model
    from irs_torch.scenario import random_scenario
    from irs_torch.solvers import SolverOptions
    from irs_torch.solvers.starts import cophased_start

    net = load_model(ckpt)
    rng_ = _budget_ranges(net)
    if not rng_ or all(lo == hi for lo, hi in rng_.values()):
        pytest.skip(f"{ckpt.name} was trained at a single budget point {rng_}: its card claims no gain over "
                    f"the heuristic starts")
    rng = np.random.default_rng(7)
    lu = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # noqa: E731
    opts = SolverOptions()
    logs = []
    torch.set_num_threads(1)
    for i in range(6):
        s = random_scenario(seed=2000 + i, **{k: lu(*v) for k, v in rng_.items()}).to(torch.complex128)
        learned, _ = refine_starts(s, network_hypotheses(net, s, 1), opts)
        heur = [refine_starts(s, st, opts)[0] for st in (heuristic_starts(s, 1), [cophased_start(s)])]
        assert learned.success and all(h.success for h in heur)
        logs.append(math.log(learned.max_crb / min(h.max_crb for h in heur)))
    gm = math.exp(float(np.mean(logs)))
    per = np.exp(logs).round(4).tolist()
    assert gm < 1.0, f"learned / best heuristic: geometric mean {gm:.4f}, per instance {per}"

"""The runtime pipeline: network -> feasible design -> AO refinement, its CLI and the
warm-start benchmark, with a tiny model (M = 4, 2 x 2 elements, L = 2) made in seconds.

Physics checks are independent of irs_torch's CRB code: the CRB of a returned design is recomputed
with the closed form (15)-(16) of tests/reference.py (numpy, written from the paper) and the
constraints (17a)-(17d) with its dense eq. (7).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from irs_torch import Scenario, Solution, random_scenario

import reference as ref
from helpers import cli_in_process

REPO = Path(__file__).resolve().parents[1]
TINY_DATA_YAML = REPO / "training" / "tiny-data.yaml"


# ----------------------------------------------------------------------------- fixtures
def _export(module, path: Path, meta: dict | None = None) -> Path:
    """Slim model file of a WarmStartModule via a minimal Lightning-style checkpoint."""
    from irs_torch.learn import export_model

    ck = path.with_suffix(".ckpt")
    ck.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "irs_torch": dict(meta or {})}, ck)
    return export_model(ck, path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny data set (48 instances of training/tiny-data.yaml labelled by "transmit-only": 38
    train, 4 val, 6 test), a tiny model trained 40 steps on the CRB loss (model.pt), a model for
    other sizes (other.pt: M = 8, L = 3), a test scenario file and one of the paper's sizes."""
    from irs_torch.data import ShardDataset, generate_dataset, load_config
    from irs_torch.data.datamodule import collate_instances
    from irs_torch.learn.module import WarmStartModule

    root = tmp_path_factory.mktemp("runtime")
    data = root / "data"
    cfg = load_config(TINY_DATA_YAML).replace(solver={"method": "transmit-only"}, shard_size=16)
    generate_dataset(data, 48, cfg, workers=1, progress=False, log=lambda m: None)
    train = ShardDataset(data, split="train")
    batch = collate_instances([train[i] for i in range(len(train))])
    torch.manual_seed(0)
    m = WarmStartModule(M=4, N_h=2, N_v=2, L=2, hidden=32, depth=1, w_crb=1.0, w_sup=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(40):
        loss = m._compute(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = _export(m, root / "models" / "model.pt", {"note": "tiny runtime test model"})
    other = _export(WarmStartModule(M=8, N_h=2, N_v=2, L=3, hidden=8, depth=1), root / "models" / "other.pt")
    test = ShardDataset(data, split="test")
    s = test.scenario(0)
    scen_file = s.save(root / "scenario.npz")
    big_file = random_scenario(seed=0).save(root / "big.npz")  # M = 16, N = 4 x 4
    empty = root / "no-checkpoints"
    empty.mkdir()
    return {"root": root, "data": data, "model": model, "other": other, "scenario": s, "scenario_file": scen_file,
            "big_file": big_file, "n_test": len(test), "empty_dir": empty}


def _cli(args, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "IRS_TORCH_DEBUG"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "irs_torch", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ref_crb(s: Scenario, R, psi) -> np.ndarray:
    """Per-IRS tr(F^-1) by the dense closed form (15)-(16) of tests/reference.py."""
    R, psi = np.asarray(R), np.asarray(psi)
    out = []
    for l in range(s.L):
        F = ref.closed_form_fim(s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]), complex(s.beta[l]),
                                float(s.sigma_r2), float(s.sigma_b2), s.T_L, s.N_h, s.N_v, s.d_h, s.d_v)
        out.append(ref.trace_inverse(F).sum())
    return np.array(out)


def _check_feasible_independently(s: Scenario, R, psi, rtol=1e-6):
    """(17a) C1 by the dense eq. (7), (17b) the average BS power, (17c) PSD, (17d) |psi| <= a_max."""
    R, psi = np.asarray(R), np.asarray(psi)
    for l in range(s.L):
        np.testing.assert_allclose(R[l], R[l].conj().T, atol=1e-12 * np.abs(R[l]).max())
        assert np.linalg.eigvalsh(R[l]).min() >= -1e-9 * np.trace(R[l]).real, "R_s not PSD"
        c1 = ref.irs_power_dense(s.G[l].numpy(), psi[l], R[l], float(s.theta[l]), float(s.phi[l]), complex(s.beta[l]),
                                 float(s.sigma_r2), s.N_h, s.N_v, s.d_h, s.d_v).sum()
        assert c1 <= float(s.P_s) * (1 + rtol), (l, c1, float(s.P_s))
        assert np.abs(psi[l]).max() <= float(s.a_max) * (1 + rtol)
    bs = np.trace(R, axis1=-2, axis2=-1).real.mean()
    assert bs <= float(s.P_t) * (1 + rtol), (bs, float(s.P_t))


# ----------------------------------------------------------------------------- 1. Python API
def test_network_only_design_is_feasible_and_its_crb_is_recomputed(tiny):
    from irs_torch.inference import solve_learned
    from irs_torch.learn import load_model, predict

    s = tiny["scenario"]
    res = solve_learned(s, checkpoint=tiny["model"], refine="none", verbose=False)
    assert res.success and res.status == "network-only" and res.nit == 0
    assert bool(s.is_feasible(res.R_s, res.psi, rtol=1e-6))
    _check_feasible_independently(s, res.R_s, res.psi)
    # the returned design is the network's own (the AO's start repair leaves a feasible design alone)
    R_p, psi_p = predict(load_model(tiny["model"]), s)
    torch.testing.assert_close(res.R_s, R_p, rtol=1e-9, atol=1e-12 * float(R_p.abs().max()))
    torch.testing.assert_close(res.psi, psi_p, rtol=1e-12, atol=0.0)
    # CRB: the reported one is that of the returned design, by an independent derivation
    c_ref = _ref_crb(s, res.R_s, res.psi)
    np.testing.assert_allclose(res.crb.numpy(), c_ref, rtol=1e-6)
    np.testing.assert_allclose(res.max_crb, c_ref.max(), rtol=1e-6)
    t = res.times
    assert {"load", "predict", "refine", "total"} <= set(t)
    assert t["refine"] == 0.0 and t["load"] > 0 and t["predict"] > 0
    assert t["total"] >= t["load"] + t["predict"]
    assert res.options["method"] == "learned" and res.options["refine"] == "none"
    assert res.options["checkpoint"] == str(tiny["model"])
    sol = res.to_solution(s)
    assert sol.method == "learned" and sol.metadata["options"]["checkpoint"] == str(tiny["model"])


def test_ao_refinement_never_worse_than_the_network_and_feasible(tiny):
    from irs_torch.inference import solve_learned
    from irs_torch.solvers import SolverOptions

    s = tiny["scenario"]
    net = solve_learned(s, checkpoint=tiny["model"], refine="none", verbose=False)
    res = solve_learned(s, checkpoint=tiny["model"], refine="ao", options=SolverOptions(max_iter=3), verbose=False)
    assert res.success and res.nit >= 1 and res.options["refine"] == "ao"
    assert bool(s.is_feasible(res.R_s, res.psi, rtol=1e-6))
    _check_feasible_independently(s, res.R_s, res.psi)
    # AO started at the network's design: its start is that design, and it never goes up
    np.testing.assert_allclose(res.init_max_crb, net.max_crb, rtol=1e-9)
    assert res.max_crb <= net.max_crb * (1 + 1e-9), (res.max_crb, net.max_crb)
    hist = [h["max_crb"] for h in res.history]
    assert all(b <= a * (1 + 1e-9) for a, b in zip([net.max_crb] + hist, hist)), hist
    c_ref = _ref_crb(s, res.R_s, res.psi)
    np.testing.assert_allclose(res.crb.numpy(), c_ref, rtol=1e-6)
    assert res.times["refine"] > 0 and res.times["total"] >= res.times["refine"]


def test_solve_learned_rejects_bad_arguments(tiny):
    from irs_torch.inference import solve_learned

    s = tiny["scenario"]
    with pytest.raises(ValueError, match="refine must be one of"):
        solve_learned(s, checkpoint=tiny["model"], refine="sca")
    with pytest.raises(ValueError, match=r"batch shape \(2,\)"):
        solve_learned(Scenario.stack([s, s]), checkpoint=tiny["model"])
    with pytest.raises(ValueError, match=r"M=16 \(model 4\)"):
        solve_learned(random_scenario(seed=0), checkpoint=tiny["model"])
    with pytest.raises(ValueError, match=r"M=4 \(model 8\), L=2 \(model 3\)"):
        solve_learned(s, checkpoint=tiny["other"])


def test_find_checkpoint_picks_the_matching_model(tiny, tmp_path, monkeypatch):
    from irs_torch.inference import find_checkpoint

    s = tiny["scenario"]
    d = tmp_path / "ckpts"
    d.mkdir()
    shutil.copy(tiny["other"], d / "a-other.pt")
    shutil.copy(tiny["other"].with_suffix(".json"), d / "a-other.json")  # export_model's sidecar
    (d / "b-garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FileNotFoundError) as e, pytest.warns(UserWarning, match="b-garbage.pt: no metadata sidecar"):
        find_checkpoint(s, dirs=d)
    msg = str(e.value)
    assert "M=4, N_h=2, N_v=2, L=2" in msg and str(d) in msg
    assert "a-other.pt {'M': 8, 'N_h': 2, 'N_v': 2, 'L': 3}" in msg
    assert "b-garbage.pt (skipped: no valid sidecar b-garbage.json)" in msg
    (d / "b-garbage.pt").unlink()
    shutil.copy(tiny["model"], d / "c-tiny.pt")
    shutil.copy(tiny["model"].with_suffix(".json"), d / "c-tiny.json")
    assert find_checkpoint(s, dirs=d) == d / "c-tiny.pt"
    # other element spacings: not picked automatically; an explicit load warns and names them
    s_q = s.replace(d_h=0.25)
    with pytest.raises(FileNotFoundError, match=r"d_h=0.25, d_v=0.5"):
        find_checkpoint(s_q, dirs=d)
    from irs_torch.learn import load_model
    with pytest.warns(UserWarning, match=r"d_h=0.25 \(model 0.5\)"):
        load_model(d / "c-tiny.pt", s_q)
    # the environment variable is the default search path
    monkeypatch.setenv("IRS_TORCH_CHECKPOINTS", str(d))
    assert find_checkpoint(s) == d / "c-tiny.pt"
    monkeypatch.setenv("IRS_TORCH_CHECKPOINTS", str(tiny["empty_dir"]))
    with pytest.raises(FileNotFoundError, match="found: none"):
        find_checkpoint(s)


# ----------------------------------------------------------------------------- 2. the solve CLI
def test_cli_solve_learned_matches_crb_command(tiny, tmp_path):
    out = tmp_path / "x.npz"
    r = _cli(["solve", "--scenario", tiny["scenario_file"], "--method", "learned", "--checkpoint", tiny["model"],
              "--max-iter", "1", "-o", out, "--json"], {"IRS_TORCH_CHECKPOINTS": str(tiny["empty_dir"])})
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["method"] == "learned" and rep["output"] == str(out) and rep["success"]
    assert {"load", "predict", "refine", "total"} <= set(rep["times"])
    sol = Solution.load(out)
    assert sol.method == "learned"
    assert sol.metadata["options"]["checkpoint"] == str(tiny["model"]) and sol.metadata["options"]["refine"] == "fo"
    assert sol.metadata["scenario_seed"] == tiny["scenario"].seed
    c = _cli(["crb", "--scenario", tiny["scenario_file"], "--solution", out, "--json"])
    assert c.returncode == 0, c.stderr[-3000:]
    crb = json.loads(c.stdout)
    np.testing.assert_allclose(sol.crb.numpy(), crb["crb"], rtol=1e-10)
    np.testing.assert_allclose(rep["crb"], crb["crb"], rtol=1e-10)
    assert crb["feasible"]
    np.testing.assert_allclose(crb["crb"], _ref_crb(tiny["scenario"], sol.R_s, sol.psi), rtol=1e-6)


def test_cli_solve_without_checkpoint_uses_or_asks_for_a_shipped_one(tiny, tmp_path, monkeypatch, capsys):
    args = ["solve", "--scenario", tiny["scenario_file"], "--method", "learned", "--refine", "none"]
    r = cli_in_process(args, monkeypatch, capsys, {"IRS_TORCH_CHECKPOINTS": str(tiny["empty_dir"])})
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.startswith("irs-torch: error: no shipped checkpoint for M=4, N_h=2, N_v=2, L=2"), r.stderr
    assert "--checkpoint" in r.stderr and str(tiny["empty_dir"]) in r.stderr
    d = tmp_path / "ckpts"
    d.mkdir()
    for src, name in ((tiny["other"], "other"), (tiny["model"], "tiny")):  # model files + their sidecars
        shutil.copy(src, d / f"{name}.pt")
        shutil.copy(src.with_suffix(".json"), d / f"{name}.json")
    r = _cli([*args, "-o", tmp_path / "y.npz"], {"IRS_TORCH_CHECKPOINTS": str(d)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"using shipped checkpoint {d / 'tiny.pt'}" in r.stderr
    assert f"learned: checkpoint {d / 'tiny.pt'}" in r.stdout
    assert Solution.load(tmp_path / "y.npz").metadata["options"]["checkpoint"] == str(d / "tiny.pt")


def test_demo_uses_the_shipped_model_or_skips_it(tiny, tmp_path, monkeypatch, capsys):
    import math

    d = tmp_path / "ckpts"
    d.mkdir()
    shutil.copy(tiny["model"], d / "tiny.pt")
    shutil.copy(tiny["model"].with_suffix(".json"), d / "tiny.json")
    args = ["demo", "--scenario", tiny["scenario_file"], "--methods", "learned", "transmit-only",
            "--out", tmp_path / "o"]
    r = cli_in_process(args, monkeypatch, capsys, {"IRS_TORCH_CHECKPOINTS": str(d)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"using shipped checkpoint {d / 'tiny.pt'}" in r.stderr
    sol = Solution.load(tmp_path / "o" / "learned.npz")
    assert sol.method == "learned" and sol.metadata["options"]["checkpoint"] == str(d / "tiny.pt")
    row = next(line for line in r.stdout.splitlines() if line.startswith("learned "))
    vals = row.split()
    np.testing.assert_allclose(float(vals[1]), float(sol.crb.max()), rtol=1e-3)
    ang = (sol.arrays["crb_theta"] + sol.arrays["crb_phi"]).numpy()  # root angle CRB in degrees
    np.testing.assert_allclose([float(v) for v in vals[2 + tiny["scenario"].L: 2 + 2 * tiny["scenario"].L]],
                               np.sqrt(ang) * 180 / math.pi, rtol=1e-2)
    r = cli_in_process(args[:-2], monkeypatch, capsys, {"IRS_TORCH_CHECKPOINTS": str(tiny["empty_dir"])})
    assert r.returncode == 0 and "learned: skipped (no shipped checkpoint for M=4" in r.stdout, r.stdout


# ----------------------------------------------------------------------------- 3. bench warmstart
# (the benchmark itself: tests/test_warmstart_bench.py)


# ----------------------------------------------------------------------------- 4. clear errors
def _corrupt_copy(tiny, tmp_path) -> Path:
    d = tmp_path / "corrupt"
    shutil.copytree(tiny["data"], d)
    shard = sorted((d / "shards").glob("*.h5"))[-1]
    shard.write_bytes(b"\x00garbage" * 64)
    return d


# (case, run as a subprocess): two cases end to end in a fresh process, the others through the same
# cli.main in this process (start-up time).
@pytest.mark.parametrize("case, subproc", [("other-checkpoint", False), ("bench-other-checkpoint", False),
                                           ("empty-data", False), ("corrupt-shard", True),
                                           ("missing-checkpoint", False), ("garbage-checkpoint", False),
                                           ("other-scenario", True), ("learned-init", False)])
def test_cli_errors_are_clear(tiny, tmp_path, monkeypatch, capsys, case, subproc):
    scen, model, data = tiny["scenario_file"], tiny["model"], tiny["data"]
    learned = ["solve", "--method", "learned", "--refine", "none"]
    if case == "other-checkpoint":
        args, want = [*learned, "--scenario", scen, "--checkpoint", tiny["other"]], \
            [str(tiny["other"]), "trained for M=8, N_h=2, N_v=2, L=3", "M=4 (model 8), L=2 (model 3)"]
    elif case == "bench-other-checkpoint":
        args, want = ["bench", "warmstart", "--source", "data", "--data", data, "--checkpoint", tiny["other"],
                      "--out", tmp_path / "b"], \
            [str(tiny["other"]), "M=4 (model 8), L=2 (model 3)"]
    elif case == "empty-data":
        (tmp_path / "empty").mkdir()
        args, want = ["bench", "warmstart", "--source", "data", "--data", tmp_path / "empty", "--checkpoint", model,
                      "--out", tmp_path / "b"], [str(tmp_path / "empty"), "not a data set directory"]
    elif case == "corrupt-shard":
        d = _corrupt_copy(tiny, tmp_path)
        shard = sorted((d / "shards").glob("*.h5"))[-1]
        args, want = ["bench", "warmstart", "--source", "data", "--data", d, "--checkpoint", model,
                      "--out", tmp_path / "b"], \
            [str(shard), "corrupt"]
    elif case == "missing-checkpoint":
        args, want = [*learned, "--scenario", scen, "--checkpoint", tmp_path / "nope.pt"], \
            ["checkpoint not found", str(tmp_path / "nope.pt")]
    elif case == "garbage-checkpoint":
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        args, want = [*learned, "--scenario", scen, "--checkpoint", tmp_path / "bad.pt"], \
            [str(tmp_path / "bad.pt"), "refused: not a weights-only checkpoint"]
    elif case == "learned-init":
        args, want = [*learned, "--scenario", scen, "--checkpoint", model, "--init", "aligned"], \
            ["--init 'aligned' is not used with --method learned"]
    else:  # a scenario of other sizes than the model
        args, want = [*learned, "--scenario", tiny["big_file"], "--checkpoint", model], \
            [str(model), "trained for M=4, N_h=2, N_v=2, L=2", "M=16 (model 4)", "N_h=4 (model 2)"]
    env = {"IRS_TORCH_CHECKPOINTS": str(tiny["empty_dir"])}
    r = _cli(args, env) if subproc else cli_in_process(args, monkeypatch, capsys, env)
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr and r.stderr.startswith("irs-torch: error: "), r.stderr[-3000:]
    for w in want:
        assert w in r.stderr, (w, r.stderr)
    assert not (tmp_path / "b" / "warmstart.json").exists()


def test_warm_start_options_trust_the_start_and_cap_the_iterations():
    from irs_torch.inference import REFINE_ITER, warm_start_options
    from irs_torch.solvers import SolverOptions

    base = SolverOptions(max_iter=20, p3_steps=100, p3_starts=4, p3_warm_steps=30, seed=5)
    w = warm_start_options(base)
    assert (w.p3_starts, w.p3_steps, w.max_iter) == (1, 30, REFINE_ITER)
    assert w.seed == 5 and w.p2_solver == base.p2_solver  # everything else kept
    assert warm_start_options(base, refine_iter=None).max_iter == 20
    assert warm_start_options(SolverOptions(max_iter=1), refine_iter=3).max_iter == 1
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="refine_iter"):
            warm_start_options(base, refine_iter=bad)

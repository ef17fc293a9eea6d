"""The any-size warm-start network (irs_torch.learn.anysize), scenarios with any number of IRSs, and the
runtime's choice between per-size and any-size models."""
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from irs_torch.data.distribution import DatasetConfig, irs_boxes
from irs_torch.learn import anysize
from irs_torch.learn.anysize import AnySizeNet, predict_many
from irs_torch.scenario import Scenario, load_scenario, paper_scenario, random_scenario
from irs_torch.scenario.placement import geometry_admissible

ROOT = Path(__file__).resolve().parents[1] / "checkpoints"


def _cfg(M, N_h, N_v, L):
    return DatasetConfig(M=M, N_h=N_h, N_v=N_v, irs=irs_boxes(L), P_t=(1.0, 40.0), P_s=(1e-4, 1.0),
                         a_max=(2.0, 10.0), budget_sampling="log-uniform")


def _net(seed=0, hypotheses=3):
    torch.manual_seed(seed)
    net = AnySizeNet(hidden=16, channels=8, layers=2, hypotheses=hypotheses).double()
    with torch.no_grad():  # move away from the symmetric start so that the test sees real outputs
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _permute(s: Scenario, perm) -> Scenario:
    ch = {f: getattr(s, f)[..., perm, :, :] for f in ("G",)}
    for f in ("theta", "phi", "beta", "irs_yaw"):
        ch[f] = getattr(s, f)[..., perm]
    ch["irs_pos"] = s.irs_pos[..., perm, :]
    return s.replace(**ch)


# ------------------------------------------------------------------ scenarios of any L
@pytest.mark.parametrize("L", [1, 3, 4, 6])
def test_paper_preset_places_L_irss_by_the_accept_rule(L):
    s = paper_scenario(0, L=L)
    assert s.L == L and tuple(s.G.shape) == (L, 16, 16)
    assert geometry_admissible(s.bs_pos.numpy(), s.irs_pos.numpy(), s.irs_yaw.numpy(), s.target_pos.numpy(), 2.0, 0.2)


def test_paper_preset_with_two_irss_is_the_papers_geometry():
    assert torch.equal(paper_scenario(3, L=2).G, paper_scenario(3).G)
    assert paper_scenario(0).irs_pos[:, 1].tolist() == [10.0, 20.0]


def test_too_many_irss_for_the_paper_wall_is_a_clear_error():
    with pytest.raises(ValueError, match="L=12"):
        paper_scenario(0, L=12)
    with pytest.raises(ValueError, match="L must be an integer >= 1"):
        paper_scenario(0, L=0)


@pytest.mark.parametrize("L", [1, 3, 4])
def test_random_geometries_and_dataset_configs_take_L(L):
    s = random_scenario(5, L=L)
    assert s.L == L
    assert geometry_admissible(s.bs_pos.numpy(), s.irs_pos.numpy(), s.irs_yaw.numpy(), s.target_pos.numpy(), 2.0, 0.2)
    d = _cfg(8, 2, 3, L).scenario(11)
    assert d.L == L and d.M == 8 and d.N == 6
    assert _cfg(4, 2, 2, 2).irs == DatasetConfig().irs  # L = 2: the existing paper boxes


def test_scenario_and_dataset_commands_take_L(tmp_path, capsys):
    from helpers import run_cli

    rc, out, err = run_cli(capsys, "scenario", "--L", "3", "--M", "8", "-o", tmp_path / "s.npz")
    assert rc == 0, err
    assert load_scenario(tmp_path / "s.npz").L == 3
    rc, out, err = run_cli(capsys, "scenario", "--preset", "random", "--L", "4", "--count", "2", "-o",
                           tmp_path / "b.npz")
    assert rc == 0, err
    assert load_scenario(tmp_path / "b.npz").L == 4
    rc, out, err = run_cli(capsys, "dataset", "config", "--L", "3", "-o", tmp_path / "c.yaml")
    assert rc == 0, err
    from irs_torch.data.distribution import load_config

    assert load_config(tmp_path / "c.yaml").L == 3


# ------------------------------------------------------------------ the network
def test_permuting_the_irss_permutes_the_design():
    net = _net()
    s = Scenario.stack([_cfg(6, 3, 2, 3).scenario(i) for i in range(2)])
    perm = [2, 0, 1]
    with torch.no_grad():
        d = net(s)
        dp = net(_permute(s, perm))
        raw, rawp = net.raw_outputs(s), net.raw_outputs(_permute(s, perm))
    torch.testing.assert_close(rawp["z"], raw["z"][:, :, perm], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(rawp["omega"], raw["omega"][:, :, perm], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dp.R_s, d.R_s[:, perm], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(dp.psi, d.psi[:, perm], rtol=1e-8, atol=1e-12)
    assert not torch.allclose(d.psi[:, 0].abs(), d.psi[:, 1].abs())  # the IRSs do get different designs


def test_the_same_scenario_gets_the_same_design_in_any_batch_composition():
    net = _net(1)
    cfg = _cfg(5, 2, 3, 2)
    a, b, c = (cfg.scenario(i) for i in (1, 2, 3))
    with torch.no_grad():
        d1 = net(Scenario.stack([b, a, c]))
        d2 = net(Scenario.stack([a, c]))
        d0 = net(a)
    torch.testing.assert_close(d1.R_s[1], d2.R_s[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d1.psi[1], d2.psi[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d0.psi, d2.psi[0], rtol=1e-9, atol=1e-12)


def test_mixed_sizes_are_bucketed_and_returned_in_input_order():
    net = _net(2)
    sizes = [(4, 2, 2, 1), (7, 3, 2, 2), (4, 2, 2, 1), (9, 2, 4, 3), (7, 3, 2, 2)]
    scen = [_cfg(*sz).scenario(20 + i) for i, sz in enumerate(sizes)]
    out = predict_many(net, scen)
    for s, (R, psi) in zip(scen, out):
        assert R.shape == (s.L, s.M, s.M) and psi.shape == (s.L, s.N)
        with torch.no_grad():
            d = net(s)
        torch.testing.assert_close(psi, d.psi, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("size", [(4, 2, 2, 1), (64, 2, 12, 1), (4, 12, 2, 4), (33, 7, 5, 3), (64, 12, 12, 4)])
def test_designs_are_feasible_across_the_size_ranges(size):
    net = AnySizeNet(hidden=16, channels=8, layers=2, hypotheses=2)
    cfg = _cfg(*size)
    s = Scenario.stack([cfg.scenario(i) for i in range(2)])
    with torch.no_grad():
        d = net(s.to(torch.complex128))
    assert bool(s.is_feasible(d.R_s, d.psi).all())
    assert bool(torch.isfinite(s.crb(d.R_s, d.psi).total).all())


def test_outside_the_size_ranges_it_warns_and_still_predicts_passive_is_refused():
    net = AnySizeNet(hidden=16, channels=8, layers=1, hypotheses=1)
    s = paper_scenario(0, M=72, N_h=2, N_v=2)
    with pytest.warns(UserWarning, match=r"M=72 \(trained 4..64\)"):
        net.check_scenario(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = net(s)
    assert bool(s.is_feasible(d.R_s, d.psi))
    with pytest.raises(ValueError, match="passive"):
        net.check_scenario(paper_scenario(0, active=False, sigma_r2=0.0))


# ------------------------------------------------------------------ files and checkpoint choice
@pytest.fixture()
def model_dir(tmp_path):
    net = AnySizeNet(hidden=16, channels=8, layers=1, hypotheses=2)
    anysize.save_model(net, tmp_path / "warm-start-any.pt", {"seed": 7})
    return tmp_path


def test_model_file_loads_weights_only_and_records_its_ranges(model_dir):
    from irs_torch.learn.checkpoint import load_model, predict, read_checkpoint

    info = anysize.read_sidecar(model_dir / "warm-start-any.pt")
    assert info["size_ranges"] == anysize.DEFAULT_SIZE_RANGES and info["seed"] == 7
    ck = read_checkpoint(model_dir / "warm-start-any.pt")  # torch.load(weights_only=True)
    assert ck["format"] == anysize.MODEL_FORMAT
    net = load_model(model_dir / "warm-start-any.pt")
    assert isinstance(net, AnySizeNet)
    s = paper_scenario(0, M=8, L=3)
    R, psi = predict(net, s)
    assert bool(s.is_feasible(R, psi))


def test_the_runtime_prefers_a_per_size_model_and_otherwise_takes_the_any_size_model(model_dir):
    from irs_torch.inference import find_checkpoint
    from irs_torch.learn.checkpoint import write_sidecar

    if not (ROOT / "warm-start-paper.pt").is_file():
        pytest.skip("warm-start-paper.pt is not shipped")
    shutil.copy(ROOT / "warm-start-paper.pt", model_dir / "warm-start-paper.pt")
    write_sidecar(model_dir / "warm-start-paper.pt")
    dirs = [model_dir]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_checkpoint(paper_scenario(0), dirs).name == "warm-start-paper.pt"
        assert find_checkpoint(paper_scenario(0, M=32), dirs).name == "warm-start-any.pt"
        assert find_checkpoint(paper_scenario(0, N_h=6, N_v=3, L=3), dirs).name == "warm-start-any.pt"
    with pytest.warns(UserWarning, match=r"outside the training ranges of the any-size model .*M=80"):
        assert find_checkpoint(paper_scenario(0, M=80), dirs).name == "warm-start-any.pt"
    with pytest.raises(FileNotFoundError, match="any size"):
        find_checkpoint(paper_scenario(0, M=32, active=False, sigma_r2=0.0), dirs)


def test_a_changed_any_size_model_file_is_skipped(model_dir):
    from irs_torch.inference import find_checkpoint

    p = model_dir / "warm-start-any.pt"
    p.write_bytes(p.read_bytes() + b"\0")
    with pytest.warns(UserWarning, match="sha256 differs"):
        with pytest.raises(FileNotFoundError):
            find_checkpoint(paper_scenario(0, M=32), [model_dir])


def test_size_sampler_of_the_trainer_stays_in_range_and_skips_held_out_sizes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_anysize", Path(__file__).resolve().parents[1] / "scripts"
                                                  / "train_anysize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    sizes = [mod.sample_size(rng) for _ in range(2000)]
    for k, i in (("M", 0), ("N_h", 1), ("N_v", 2), ("L", 3)):
        lo, hi = anysize.DEFAULT_SIZE_RANGES[k]
        vals = {s[i] for s in sizes}
        assert min(vals) == lo and max(vals) == hi
    assert not set(sizes) & set(mod.HELD_OUT)


def test_slot_power_balancing_is_exact_feasible_and_never_worse():
    from irs_torch.learn.anysize import balance_slot_powers
    from irs_torch.learn.feasibility import feasible_design

    torch.manual_seed(3)
    s = Scenario.stack([_cfg(6, 2, 3, 3).scenario(i) for i in range(6)])
    B, L, N, M = 6, s.L, s.N, s.M
    z = torch.randn(B, L, N, dtype=torch.complex128) * 2
    W = torch.randn(B, L, M, 2, dtype=torch.complex128)
    d = feasible_design(s, W, z, omega=torch.randn(B, L, dtype=torch.float64), c1_mode="power")
    c = s.crb(d.R_s, d.psi).total
    d2, c2 = balance_slot_powers(s, d, c)
    torch.testing.assert_close(c2, s.crb(d2.R_s, d2.psi).total, rtol=1e-9, atol=0)  # CRB_l = e_l / p_l exactly
    assert bool(s.is_feasible(d2.R_s, d2.psi).all())
    assert bool((c2.amax(-1) <= c.amax(-1) * (1 + 1e-12)).all())
    assert bool((c2.amax(-1) < c.amax(-1) * 0.99).any())  # random powers are improved somewhere


def test_principal_reference_matches_the_svd_reference_up_to_a_common_phase():
    from irs_torch.learn.anysize import principal_reference
    from irs_torch.learn.feasibility import aligned_reference

    s = Scenario.stack([_cfg(12, 3, 4, 2).scenario(i) for i in range(8)])
    r1, r2 = principal_reference(s, iters=60), aligned_reference(s)
    rel = r1 * r2.conj()  # a common phase per IRS where the two agree
    agree = (rel / rel[..., :1]).sub(1).abs().amax(-1) < 1e-6
    assert agree.float().mean() > 0.9


@pytest.mark.slow
def test_trainer_checkpoints_resumes_and_exports(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_anysize", Path(__file__).resolve().parents[1] / "scripts"
                                                  / "train_anysize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--out", str(tmp_path / "run"), "--hidden", "8", "--channels", "4", "--layers", "1", "--batch", "4",
            "--buckets", "1", "--minutes", "5", "--val-minutes", "5"]
    assert mod.main(args + ["--max-steps", "2"]) == 0
    st = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert st["step"] == 2
    assert mod.main(args + ["--max-steps", "3", "--export", str(tmp_path / "m.pt")]) == 0
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["step"] == 3  # resumed, one more step
    info = anysize.read_sidecar(tmp_path / "m.pt")
    assert info["seed"] == 22 and info["training"]["steps"] == 3
    with pytest.raises(SystemExit, match="hidden"):
        mod.main(["--out", str(tmp_path / "run"), "--hidden", "16", "--max-steps", "4"])


def test_other_element_spacings_count_as_outside_the_ranges(model_dir):
    from irs_torch.inference import find_checkpoint

    s = paper_scenario(0, M=32).replace(d_h=0.25)
    assert anysize.outside_ranges(s, anysize.DEFAULT_SIZE_RANGES) == ["d_h=0.25 (trained 0.5)"]
    with pytest.warns(UserWarning, match=r"d_h=0.25 \(trained 0.5\)"):
        assert find_checkpoint(s, [model_dir]).name == "warm-start-any.pt"


@pytest.mark.skipif(not (ROOT / "warm-start-any.pt").is_file(), reason="warm-start-any.pt is not shipped")
def test_the_shipped_any_size_model_loads_and_predicts_feasible_designs():
    from irs_torch.outputs import file_sha256

    info = anysize.read_sidecar(ROOT / "warm-start-any.pt")
    assert file_sha256(ROOT / "warm-start-any.pt") == info["sha256"]
    assert info["size_ranges"] == anysize.DEFAULT_SIZE_RANGES and isinstance(info["seed"], int)
    net = anysize.load_model(ROOT / "warm-start-any.pt")
    scen = [_cfg(*sz).scenario(300 + i) for i, sz in enumerate([(4, 2, 2, 1), (16, 4, 4, 2), (8, 3, 5, 4),
                                                                 (24, 6, 6, 3), (10, 12, 2, 3)])]
    for s, (R, psi) in zip(scen, predict_many(net, scen)):
        assert bool(s.is_feasible(R, psi)) and bool(torch.isfinite(s.crb(R, psi).total).all())

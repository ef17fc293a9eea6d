"""Data sets: the distribution and its rejection rule, per-instance seeds, the shard format
(read back with h5py alone), labels checked against an independent Slepian-Bangs FIM, splits,
failures, corrupt shards, and the `irs-torch dataset` commands. The kill/resume test is in
test_data_resume.py, the Ray backend in test_data_ray.py."""
from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import pytest
import torch
from test_data_helpers import RUN_DEPENDENT, TINY, assert_same_data, load_rows, write_config

from irs_torch.data import (
    DatasetConfig,
    ShardDataset,
    ShardError,
    dataset_info,
    generate_dataset,
    instance,
    instance_seed,
    load_config,
    scenario_from_batch,
    solve_instance,
    split_of,
)
from irs_torch.scenario import GeometryDistribution

import reference as ref
from helpers import run_cli

NUM = 7  # 3 shards of 3, 3, 1


@pytest.fixture(scope="module")
def tiny_cfg():
    return DatasetConfig.from_dict(dict(TINY))


@pytest.fixture(scope="module")
def ds_root(tmp_path_factory, tiny_cfg):
    root = tmp_path_factory.mktemp("data") / "ds"
    generate_dataset(root, NUM, tiny_cfg, workers=1, progress=False, log=lambda m: None)
    return root


# ----------------------------------------------------------------------------- seeds
def test_instance_seed_follows_the_documented_rule_and_is_unique():
    # The rule as the manifest documents it, written out with numpy alone.
    for ds_seed, i in [(0, 0), (0, 1), (7, 123456), (2**40, 3)]:
        st = np.random.SeedSequence(ds_seed, spawn_key=(i,)).generate_state(2, np.uint32)
        want = (int(st[0]) | (int(st[1]) << 32)) & (2**63 - 1)
        assert instance_seed(ds_seed, i) == want
    seeds = {instance_seed(3, i) for i in range(20000)}
    assert len(seeds) == 20000  # no two instances share a seed
    assert instance_seed(3, 5) != instance_seed(4, 5)
    with pytest.raises(ValueError, match="instance_id must be >= 0"):
        instance_seed(0, -1)


# ----------------------------------------------------------------------------- distribution
def test_default_config_is_the_distribution_around_the_paper_scenario():
    c, g = DatasetConfig(), GeometryDistribution()
    assert (c.M, c.N_h, c.N_v, c.L) == (g.M, g.N_h, g.N_v, g.L) == (16, 4, 4, 2)
    for l, box in enumerate(c.irs):
        assert box.x == (g.irs_x - g.jitter, g.irs_x + g.jitter)
        assert box.y == (g.irs_y[l] - g.jitter, g.irs_y[l] + g.jitter)
        assert box.yaw_deg == pytest.approx((-math.degrees(g.yaw_max), math.degrees(g.yaw_max)))
        # the paper's IRS positions (-5, 10|20, 0) facing +x are inside the boxes
        assert box.x[0] < -5 < box.x[1] and box.y[0] < (10, 20)[l] < box.y[1] and box.yaw_deg[0] < 0 < box.yaw_deg[1]
    assert c.target.x == g.target_x and c.target.y == g.target_y
    assert c.target.x[0] < 5 < c.target.x[1] and c.target.y[0] < 15 < c.target.y[1]
    assert (c.P_t, c.P_s, c.a_max) == ((20.0, 20.0), (0.1, 0.1), (8.0, 8.0))
    assert (c.min_separation, c.min_front_cosine) == (g.min_separation, g.min_front_cosine)
    assert load_config(None) == c and load_config("paper") == c


def _front_cosine(irs_pos, yaw, p):
    k = p - irs_pos
    k = k / np.linalg.norm(k)
    return k @ np.array([math.cos(yaw), math.sin(yaw), 0.0])


def test_accept_rejects_the_documented_cases():
    c = DatasetConfig()
    bs = np.zeros(3)
    irs = np.array([[-5.0, 10.0, 0.0], [-5.0, 20.0, 0.0]])
    yaw = np.zeros(2)
    assert c.accept(bs, irs, yaw, np.array([5.0, 15.0, 0.0]))          # the paper's geometry
    assert not c.accept(bs, irs, yaw, np.array([-8.0, 15.0, 0.0]))     # target behind both IRSs
    assert not c.accept(bs, irs, yaw, np.array([-4.0, 30.0, 0.0]))     # grazing: cosine 1/sqrt(101) < 0.2
    assert not c.accept(bs, irs, yaw, np.array([-4.0, 10.5, 0.0]))     # 1.1 m from IRS 1 (< 2 m)
    assert not c.accept(bs, np.array([[-5.0, 10.0, 0], [-5.0, 11.0, 0]]), yaw, np.array([5.0, 15, 0]))  # IRSs overlap
    assert not c.accept(bs, irs, np.radians([170.0, 0.0]), np.array([5.0, 15.0, 0.0]))  # IRS 1 faces away
    assert not c.accept(np.array([-6.0, 5.0, 0.0]), irs, yaw, np.array([5.0, 15.0, 0.0]))  # BS behind IRS 1


def test_sampled_geometries_obey_the_rule_and_the_boxes():
    # A box that puts the target behind the IRSs about half the time: rejections must happen.
    c = DatasetConfig(target={"x": [-12.0, 10.0], "y": [5.0, 25.0], "z": [-2.0, 2.0]}, min_separation=1.5,
                      min_front_cosine=0.3)
    rng = np.random.default_rng(1)
    tries = []
    for _ in range(300):
        g = c.draw(rng)
        tries.append(g["tries"])
        nodes = np.vstack([g["bs_pos"], g["irs_pos"], g["target_pos"]])
        for a in range(len(nodes)):
            for b in range(a + 1, len(nodes)):
                assert np.linalg.norm(nodes[a] - nodes[b]) >= 1.5
        for l in range(c.L):
            assert _front_cosine(g["irs_pos"][l], g["irs_yaw"][l], g["target_pos"]) >= 0.3
            assert _front_cosine(g["irs_pos"][l], g["irs_yaw"][l], g["bs_pos"]) >= 0.3
            box = c.irs[l]
            assert box.x[0] <= g["irs_pos"][l, 0] <= box.x[1] and box.y[0] <= g["irs_pos"][l, 1] <= box.y[1]
            assert math.radians(box.yaw_deg[0]) <= g["irs_yaw"][l] <= math.radians(box.yaw_deg[1])
        assert -2.0 <= g["target_pos"][2] <= 2.0
    assert max(tries) > 1 and np.mean(np.array(tries) > 1) > 0.2
    # max_tries exhausted -> a clear error (an instance failure during generation)
    bad = DatasetConfig(target={"x": [-9.0, -8.0], "y": [14.0, 16.0]}, max_tries=5)
    with pytest.raises(RuntimeError, match="no admissible geometry in max_tries=5"):
        bad.draw(np.random.default_rng(0))


def test_budgets_are_drawn_in_their_ranges_uniform_or_log_uniform():
    n = 1500
    for sampling in ("uniform", "log-uniform"):
        c = DatasetConfig(P_t=(1.0, 40.0), P_s=(0.01, 1.0), a_max=(2.0, 8.0), budget_sampling=sampling)
        rng = np.random.default_rng(2)
        d = [c.draw(rng) for _ in range(n)]
        for name, (lo, hi) in (("P_t", c.P_t), ("P_s", c.P_s), ("a_max", c.a_max)):
            x = np.array([g[name] for g in d])
            assert x.min() >= lo and x.max() <= hi
            # the mean of the uniform, or of log x for the log-uniform, within 5 standard errors
            if sampling == "uniform":
                assert abs(x.mean() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * n)
            else:
                ll, lh = math.log(lo), math.log(hi)
                assert abs(np.log(x).mean() - (ll + lh) / 2) < 5 * (lh - ll) / math.sqrt(12 * n)


@pytest.mark.parametrize("over,match", [
    ({"P_s": [0.2, 0.1]}, r"P_s must have low <= high, got \[0.2, 0.1\]"),
    ({"P_t": -1}, r"P_t must be > 0, got \[-1.0, -1.0\]"),
    ({"M": 0}, r"M must be >= 1, got 0"),
    ({"N_h": 2.5}, r"N_h must be an integer, got 2.5"),
    ({"foo": 1}, r"unknown key 'foo'"),
    ({"irs": [{"x": [0, 1], "yy": 3}]}, r"irs\[0\]: unknown key 'yy'"),
    ({"target": {"x": "far"}}, r"target.x must be a number or \[low, high\], got 'far'"),
    ({"min_separation": 0.1}, r"min_separation must be >= 0.5 m"),
    ({"min_front_cosine": 0.0}, r"min_front_cosine must be in \[0.05, 1\), got 0.0"),
    ({"beta_model": "swerling"}, r"beta_model must be 'pathloss' or 'radar', got 'swerling'"),
    ({"budget_sampling": "normal"}, r"budget_sampling must be 'uniform' or 'log-uniform', got 'normal'"),
    ({"solver": {"method": "magic"}}, r"solver.method must be one of .*got 'magic'"),
    ({"solver": {"max_iters": 3}}, r"solver.max_iters is not a solver option"),
    ({"solver": {"max_iter": 0}}, r"solver: max_iter must be an integer >= 1, got 0"),
    ({"solver": {"seed": 1}}, r"solver.seed must not be set"),
    ({"T_c": 1}, r"T_c must be >= L=2 symbols, got 1.0"),
    ({"bs": {"x": 0, "yaw_deg": 10}}, r"bs.yaw_deg is only meaningful for an IRS"),
])
def test_config_errors_name_the_field_and_value(over, match):
    with pytest.raises(ValueError, match=match):
        DatasetConfig.from_dict({**TINY, **over})


def test_config_files_round_trip_yaml_and_json(tmp_path):
    c = DatasetConfig.from_dict({**TINY, "P_t": [5, 30], "budget_sampling": "log-uniform", "seed": 11,
                                 "irs": [{"x": -5, "y": [9, 11], "yaw_deg": [-10, 10]}], "beta_model": "radar"})
    for name in ("c.yaml", "c.json"):
        p = c.save(tmp_path / name)
        assert load_config(p) == c and load_config(p).sha256() == c.sha256()
    assert c.L == 1 and c.irs[0].x == (-5.0, -5.0)
    (tmp_path / "bad.yaml").write_text("M: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match=r"config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "u.yaml").write_text("M: 4\nfoo: 1\n")
    with pytest.raises(ValueError, match=r"u.yaml: unknown key 'foo'"):
        load_config(tmp_path / "u.yaml")


# ----------------------------------------------------------------------------- the stored data
def test_shards_are_readable_with_h5py_alone(ds_root, tiny_cfg):
    m = json.loads((ds_root / "manifest.json").read_text())
    assert m["format"] == "irs-torch/dataset" and m["complete"] is True
    assert m["counts"] == {"requested": NUM, "stored": NUM, "failed": 0, "pending": 0}
    assert [s["file"] for s in m["shards"]] == [f"shards/shard-{i:05d}.h5" for i in range(3)]
    assert m["dataset_seed"] == 0 and "SeedSequence" in m["seed_rule"] and "min_separation" in m["rejection_rule"]
    for k in ("irs_torch", "solver", "cvxpy", "scs", "torch", "numpy", "h5py"):
        assert k in m["versions"]
    assert DatasetConfig.from_dict(m["config"]) == tiny_cfg
    L, N, M = 2, 4, 4
    with h5py.File(ds_root / "shards" / "shard-00000.h5", "r") as f:
        assert f.attrs["format"] == "irs-torch/dataset-shard"
        assert (f.attrs["M"], f.attrs["N_h"], f.attrs["N_v"], f.attrs["L"]) == (4, 2, 2, 2)
        assert json.loads(f.attrs["config"]) == json.loads(tiny_cfg.canonical_json())
        shapes = {"G": (3, L, N, M), "R_s": (3, L, M, M), "psi": (3, L, N), "crb": (3, L), "max_crb": (3,),
                  "init_R_s": (3, L, M, M), "init_crb": (3, L), "history_max_crb": (3, 3), "bs_pos": (3, 3),
                  "irs_pos": (3, L, 3), "target_pos": (3, 3), "status": (3,), "seed": (3,), "P_t": (3,)}
        for k, shp in shapes.items():
            assert f[k].shape == shp, k
        assert f["G"].dtype == np.complex128 and f["R_s"].dtype == np.complex128
        assert f["G"].id.get_type().get_class() == h5py.h5t.COMPOUND  # (r, i): readable by MATLAB
        assert list(f["instance_id"][...]) == [0, 1, 2]
        assert list(f["seed"][...]) == [instance_seed(0, i) for i in range(3)]


def test_stored_inputs_agree_with_the_geometry(ds_root):
    """Angles, |beta| and the channel power recomputed from the stored positions (numpy only)."""
    r = load_rows(ds_root)
    pl = lambda d: 1e-3 * d ** -2.2  # noqa: E731  PL(d) = -30 dB d^-2.2 (docs/assumptions.md "Defaults where the paper is silent")
    ratios = []
    for k in range(NUM):
        for l in range(2):
            yaw = r["irs_yaw"][k, l]
            h = np.array([-math.sin(yaw), math.cos(yaw), 0.0])
            n = np.array([math.cos(yaw), math.sin(yaw), 0.0])
            d = r["target_pos"][k] - r["irs_pos"][k, l]
            u = d / np.linalg.norm(d)
            assert r["theta"][k, l] == pytest.approx(math.acos(u[2]), abs=1e-12)
            assert r["phi"][k, l] == pytest.approx(math.atan2(u @ n, u @ h), abs=1e-12)
            assert abs(r["beta"][k, l]) ** 2 == pytest.approx(pl(np.linalg.norm(d)) ** 2, rel=1e-12)
            d_bi = np.linalg.norm(r["irs_pos"][k, l] - r["bs_pos"][k])
            ratios.append(np.abs(r["G"][k, l]) ** 2 / pl(d_bi))
    # Rician K = 5 dB channel normalised to the path loss: E|G_nm|^2 / PL = 1; the LoS part alone
    # gives K / (K + 1) = 0.76 per element, so the mean over 224 entries is within ~0.1 of 1.
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.15)
    assert np.all(r["P_t"] == 20.0) and np.all(r["P_s"] == 0.1) and np.all(r["a_max"] == 8.0)
    assert np.allclose(r["sigma_r2"], 1e-11) and np.all(r["T_c"] == 100.0)


def test_labels_match_an_independent_slepian_bangs_crb(ds_root):
    """The stored per-IRS CRB of the stored (R_s, psi) equals tr(F^-1) of the numeric FIM (14)."""
    r = load_rows(ds_root)
    for k in (0, NUM - 1):
        for l in range(2):
            F = ref.slepian_bangs_fim(r["G"][k, l], r["psi"][k, l], r["R_s"][k, l], r["theta"][k, l],
                                      r["phi"][k, l], r["beta"][k, l], r["sigma_r2"][k], r["sigma_b2"][k],
                                      r["T_c"][k] / 2, 2, 2, 0.5, 0.5)
            diag = ref.trace_inverse(F)
            assert r["crb"][k, l] == pytest.approx(diag.sum(), rel=1e-5)
            assert r["crb_theta"][k, l] == pytest.approx(diag[0], rel=1e-5)
        assert r["max_crb"][k] == r["crb"][k].max()
        assert r["init_max_crb"][k] == r["init_crb"][k].max()
        # the label is feasible: average BS power <= P_t, |psi| <= a_max
        bs = np.mean([np.trace(r["R_s"][k, l]).real for l in range(2)])
        assert bs <= r["P_t"][k] * (1 + 1e-6) and np.abs(r["psi"][k]).max() <= r["a_max"][k] * (1 + 1e-6)


def test_any_instance_regenerates_alone(ds_root, tiny_cfg):
    r = load_rows(ds_root)
    for i in (5, 1):  # out of order, in this process
        rec = solve_instance(tiny_cfg.to_dict(), i)
        k = int(np.nonzero(r["instance_id"] == i)[0][0])
        for name, v in rec.items():
            if name not in RUN_DEPENDENT:
                np.testing.assert_array_equal(np.asarray(v), r[name][k], err_msg=name)
    s = tiny_cfg.instance_scenario(5)
    assert torch.equal(s.G, torch.from_numpy(r["G"][5])) and s.seed == r["seed"][5]


def test_shard_dataset_items_and_batched_scenarios(ds_root):
    ds = ShardDataset(ds_root)
    assert len(ds) == NUM and ds.complete and list(ds.instance_ids) == list(range(NUM))
    r = load_rows(ds_root)
    it = ds[4]
    assert it["G"].dtype == torch.complex128 and it["G"].shape == (2, 4, 4)
    assert torch.equal(it["R_s"], torch.from_numpy(r["R_s"][4])) and int(it["instance_id"]) == 4
    assert isinstance(it["status"], str) and it["success"].dtype == torch.bool
    mem = ShardDataset(ds_root, in_memory=True)
    for k, v in mem[4].items():
        if isinstance(v, str):
            assert v == it[k]
        else:
            torch.testing.assert_close(v, it[k], rtol=0, atol=0, equal_nan=True, msg=k)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=NUM)))
    s = scenario_from_batch(batch, ds.attrs)
    assert s.batch_shape == (NUM,) and s.P_t.shape == (NUM,)
    c = s.crb(batch["R_s"], batch["psi"]).total
    torch.testing.assert_close(c, batch["crb"], rtol=1e-12, atol=0)
    one = ds.scenario(4)
    assert one.batch_shape == () and one.seed == int(r["seed"][4])
    torch.testing.assert_close(one.crb(it["R_s"], it["psi"]).total, s[4].crb(it["R_s"], it["psi"]).total)
    sub = ShardDataset(ds_root, keys=["psi", "max_crb"])
    assert set(sub[0]) == {"psi", "max_crb"}
    with pytest.raises(ValueError, match="keys: unknown field 'psy'"):
        ShardDataset(ds_root, keys=["psy"])
    with pytest.raises(IndexError, match="index 7 out of range for a data set of 7 instances"):
        ds[7]


def _splitmix64_ref(x: int) -> int:
    """SplitMix64 with Python ints (the published constants), independent of the numpy code."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_splits_are_deterministic_by_instance_id(ds_root):
    ids = np.arange(20000)
    names = split_of(ids)
    for i in (0, 1, 17, 19999):
        u = (_splitmix64_ref(i) >> 11) / 2.0 ** 53
        assert names[i] == ("train" if u < 0.8 else "val" if u < 0.9 else "test")
    frac = {k: np.mean(names == k) for k in ("train", "val", "test")}
    assert abs(frac["train"] - 0.8) < 0.015 and abs(frac["val"] - 0.1) < 0.01 and abs(frac["test"] - 0.1) < 0.01
    other = split_of(ids, {"train": 0.5, "val": 0.25, "test": 0.25})
    assert abs(np.mean(other == "train") - 0.5) < 0.015
    assert np.all(other[names == "val"] != "train")  # cumulative thresholds: val/test only grow
    parts = [ShardDataset(ds_root, split=s, fractions=(0.4, 0.3, 0.3)) for s in ("train", "val", "test")]
    got = np.sort(np.concatenate([p.instance_ids for p in parts]))
    assert list(got) == list(range(NUM))
    for p, s in zip(parts, ("train", "val", "test")):
        assert np.all(split_of(p.instance_ids, (0.4, 0.3, 0.3)) == s)
    with pytest.raises(ValueError, match=r"fractions must be three numbers >= 0 summing to 1"):
        split_of(ids, (0.8, 0.1))
    with pytest.raises(ValueError, match=r"split must be None or one of .*got 'dev'"):
        ShardDataset(ds_root, split="dev")


# ----------------------------------------------------------------------------- corruption and failures
def test_corrupt_or_truncated_shards_give_errors_naming_the_file(ds_root, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(ds_root, bad)
    shard = bad / "shards" / "shard-00001.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ShardError, match=r"shard-00001\.h5: not a readable HDF5 shard, corrupt or truncated"):
        ShardDataset(bad)
    rc, _, err = run_cli(capsys, "dataset", "info", bad)
    assert rc == 2 and "shard-00001.h5" in err and "truncated" in err
    shard.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(ShardError, match=r"shard-00001\.h5"):
        ShardDataset(bad)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"shard file not found: .*shard-00001\.h5"):
        ShardDataset(bad)
    (bad / "manifest.json").write_text('{"format": "irs-torch/dataset", "shar')
    with pytest.raises(ValueError, match=r"manifest\.json: not valid JSON"):
        ShardDataset(bad)
    with pytest.raises(FileNotFoundError, match=r"manifest\.json not found"):
        ShardDataset(tmp_path / "nothing")


def test_resume_recomputes_a_damaged_shard(ds_root, tmp_path, tiny_cfg):
    bad = tmp_path / "bad"
    shutil.copytree(ds_root, bad)
    shard = bad / "shards" / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes()[:1000])
    (bad / "shards" / ".shard-00002.h5.abc.tmp").write_bytes(b"left by a killed run")
    notes = []
    generate_dataset(bad, NUM, None, workers=1, progress=False, log=notes.append)
    assert any("recomputing shard 1" in n and "shard-00001.h5" in n for n in notes)
    assert not list((bad / "shards").glob("*.tmp"))
    assert_same_data(ds_root, bad)


def test_failed_instances_are_recorded_skipped_and_retried(tmp_path, tiny_cfg, monkeypatch, ds_root):
    real = instance.label_instance

    def flaky(cfg, i, seed):
        if i in (1, 3):
            raise RuntimeError(f"solver blew up on {i}")
        return real(cfg, i, seed)

    root, num = tmp_path / "f", 4
    monkeypatch.setattr(instance, "label_instance", flaky)
    m = generate_dataset(root, num, tiny_cfg, workers=1, progress=False, log=lambda m: None)
    assert m["complete"] and m["counts"] == {"requested": num, "stored": num - 2, "failed": 2, "pending": 0}
    want = [(1, instance_seed(0, 1)), (3, instance_seed(0, 3))]
    assert [(f["instance_id"], f["seed"]) for f in m["failures"]] == want
    assert "RuntimeError: solver blew up on 3" in m["failures"][1]["error"]
    assert list(ShardDataset(root).instance_ids) == [0, 2]
    with h5py.File(root / "shards" / "shard-00001.h5", "r") as f:  # a shard whose only instance failed
        assert f["G"].shape == (0, 2, 4, 4) and json.loads(f.attrs["failures"])[0]["instance_id"] == 3
    info = dataset_info(root)
    assert info["counts"]["failed"] == 2 and info["stored"] == num - 2
    # Resuming without --retry-failed keeps the failures; with it they are solved and merged.
    m2 = generate_dataset(root, num, None, workers=1, progress=False, log=lambda m: None)
    assert m2["counts"]["failed"] == 2
    monkeypatch.setattr(instance, "label_instance", real)
    m3 = generate_dataset(root, num, None, workers=1, progress=False, retry_failed=True, log=lambda m: None)
    assert m3["counts"] == {"requested": num, "stored": num, "failed": 0, "pending": 0}
    assert len(m3["runs"]) == 3 and m3["runs"][-1]["retry_failed"] and m3["runs"][-1]["computed"] == 2
    got, want = load_rows(root), load_rows(ds_root)  # ds_root: the same config, uninterrupted, 7 instances
    for k in set(want) - RUN_DEPENDENT:
        np.testing.assert_array_equal(got[k], want[k][:num], err_msg=k)


def test_extending_a_data_set_and_config_mismatch(ds_root, tmp_path, tiny_cfg):
    ext = tmp_path / "ext"
    shutil.copytree(ds_root, ext)
    before = (ext / "shards" / "shard-00000.h5").stat().st_mtime_ns
    m = generate_dataset(ext, 10, None, workers=1, progress=False, log=lambda m: None)
    assert m["counts"]["stored"] == 10 and m["num_shards"] == 4
    assert (ext / "shards" / "shard-00000.h5").stat().st_mtime_ns == before  # complete shards kept
    r, base = load_rows(ext), load_rows(ds_root)
    np.testing.assert_array_equal(r["G"][:NUM], base["G"])  # instance i is instance i in any size
    with pytest.raises(ValueError, match=r"different config \(seed: 0 \(existing\) vs 5 \(requested\)\)"):
        generate_dataset(ext, 10, tiny_cfg, seed=5, workers=1, progress=False)
    with pytest.raises(ValueError, match=r"holds a data set of 10 instances and num=4 is smaller: shard\(s\) "
                                         r"shard-00001.h5, shard-00002.h5, shard-00003.h5 already hold"):
        generate_dataset(ext, 4, None, workers=1, progress=False)
    # shrinking is allowed while no shard past the new end exists (a job stopped early, resized)
    for k in (2, 3):
        (ext / "shards" / f"shard-0000{k}.h5").unlink()
    before1 = (ext / "shards" / "shard-00001.h5").stat().st_mtime_ns
    notes = []
    m = generate_dataset(ext, 6, None, workers=1, progress=False, log=notes.append)
    assert m["num_instances"] == 6 and m["num_shards"] == 2 and m["counts"]["stored"] == 6
    assert any("shrinking the data set from 10 to 6" in n for n in notes)
    assert (ext / "shards" / "shard-00001.h5").stat().st_mtime_ns == before1  # nothing recomputed
    np.testing.assert_array_equal(load_rows(ext)["G"], r["G"][:6])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"junk exists, is not empty and has no manifest.json"):
        generate_dataset(tmp_path / "junk", 3, tiny_cfg, workers=1, progress=False)


# ----------------------------------------------------------------------------- CLI
def test_cli_generate_info_config_export(tmp_path, capsys, ds_root, monkeypatch):
    monkeypatch.setenv("IRS_TORCH_PROGRESS", "1")  # stderr is captured, not a terminal: force the progress lines
    cfg = write_config(tmp_path / "tiny.yaml")
    out, num = tmp_path / "cli", 4
    rc, so, se = run_cli(capsys, "dataset", "generate", "--config", cfg, "--num", num, "--out", out, "--workers", 1)
    assert rc == 0 and f"{num} instances stored, 0 failed" in so
    assert "inst/s" in se  # the progress bar (tqdm, on stderr) shows the rate
    got, want = load_rows(out), load_rows(ds_root)
    for k in set(want) - RUN_DEPENDENT:
        np.testing.assert_array_equal(got[k], want[k][:num], err_msg=k)
    rc, so, _ = run_cli(capsys, "dataset", "info", out, "--verify")
    assert rc == 0 and f"{num} stored" in so and "max-CRB" in so and "(complete)" in so
    rc, so, _ = run_cli(capsys, "dataset", "info", out, "--json")
    d = json.loads(so)
    assert d["stored"] == num and d["max_crb"]["max"] == pytest.approx(float(got["max_crb"].max()))
    rc, so, _ = run_cli(capsys, "dataset", "config", "--preset", "tiny", "-o", tmp_path / "t.yaml")
    assert rc == 0 and load_config(tmp_path / "t.yaml") == load_config("tiny")
    rc, so, _ = run_cli(
        capsys, "dataset", "export", out, "--id", 3, "--scenario", tmp_path / "s.npz", "--solution", tmp_path / "x.npz"
    )
    assert rc == 0
    rc, so, _ = run_cli(capsys, "crb", "--scenario", tmp_path / "s.npz", "--solution", tmp_path / "x.npz", "--json")
    assert json.loads(so)["max_crb"] == pytest.approx(float(got["max_crb"][3]), rel=1e-12)


@pytest.mark.parametrize("argv,match", [
    (["generate", "--num", "0", "--out", "{tmp}/o"], "num must be an integer >= 1, got 0"),
    (["generate", "--num", "2", "--out", "{tmp}/o", "--config", "{tmp}/missing.yaml"], "config file not found"),
    (["generate", "--num", "2", "--out", "{tmp}/o", "--config", "tiny", "--workers", "0"],
     "workers must be an integer >= 1, got 0"),
    (["generate", "--num", "2", "--out", "{tmp}/o", "--config", "tiny", "--address", "auto"],
     "address is only used by the ray backend"),
    (["generate", "--num", "2", "--out", "{tmp}/o", "--config", "tiny", "--shard-size", "0"],
     "shard_size must be >= 1, got 0"),
    (["info", "{tmp}/none"], "manifest.json not found"),
    (["generate", "--num", "2", "--out", "{tmp}/o", "--config", "{tmp}/behind.yaml"],
     "config: instance 0: no admissible geometry in max_tries=20"),
    (["config", "--preset", "huge"], "--preset must be one of paper, paper-budgets, tiny, got 'huge'"),
])
def test_cli_errors_are_one_line_naming_the_value(tmp_path, capsys, argv, match):
    write_config(tmp_path / "behind.yaml", target={"x": [-9, -8], "y": [14, 16]}, max_tries=20)
    rc, _, err = run_cli(capsys, "dataset", *[a.format(tmp=tmp_path) for a in argv])
    assert rc == 2 and err.startswith("irs-torch: error: ") and match in err, err


def test_solver_warm_starts_do_not_leak_between_instances(tiny_cfg):
    """The P2 SDP is compiled once per size and re-solved; no solver warm-starts from what it solved
    before (``warm_start=False``, irs_torch.solvers.conic), so a label does not depend on the
    instances a worker solved before it, hence not on backends, worker counts and resumes."""
    import irs_torch.solvers.transmit as transmit

    def p2(i):
        s = tiny_cfg.instance_scenario(i)
        psi = s.random_phase_design(s.isotropic_design(), seed=1)
        return transmit.solve_transmit_sdp(s, psi, solver="SCS", eps=1e-4, fallback=False).R_s

    first = p2(2)
    p2(3)
    torch.testing.assert_close(p2(2), first, rtol=0, atol=0)

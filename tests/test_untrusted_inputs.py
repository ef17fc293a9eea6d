"""Nothing from outside is trusted: checkpoints given to training, data sets trained on, output
folders shared by two runs, size-like flags and fields, and the vague or silent cases of the
command line. Each test names the defect it guards against; each fails on the code without the
check (see docs/reliability.md).
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from irs_torch import load_scenario, paper_scenario, random_scenario

from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "training" / "tiny.yaml"
TINY_DATA_YAML = REPO / "training" / "tiny-data.yaml"
SMALL = {"M": 4, "N_h": 2, "N_v": 2}


def _one_line_error(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "warn" not in ln.lower()]
    assert lines and "error" in lines[-1], err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_ckpt(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"M": 4, "note": _Payload(marker)}, "epoch": 0,
                "global_step": 0, "pytorch-lightning_version": "2.6.0", "loops": {}, "callbacks": {},
                "optimizer_states": [], "lr_schedulers": []}, path)
    return path


# ================================================================= (a) --ckpt_path of training
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """16 instances of training/tiny-data.yaml (M = 4, 2 x 2 elements, L = 2), transmit-only labels."""
    from irs_torch.data import generate_dataset, load_config

    root = tmp_path_factory.mktemp("data") / "tiny"
    cfg = load_config(TINY_DATA_YAML).replace(solver={"method": "transmit-only"}, shard_size=8)
    generate_dataset(root, 16, cfg, workers=1, progress=False, log=lambda m: None)
    return root


def _train(args, root, tmp, capsys, monkeypatch, extra=()):
    import logging
    import sys

    from irs_torch.learn.train import main

    monkeypatch.delenv("IRS_TORCH_DEBUG", raising=False)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):  # handlers made under an earlier capture
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler):
                h.stream = sys.stderr  # (setStream would flush the closed one)
    capsys.readouterr()
    rc = main([*args, "--config", str(TINY_YAML), "--data.root", str(root), "--trainer.default_root_dir", str(tmp),
               "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.max_epochs=1", *extra])
    cap = capsys.readouterr()
    return rc, cap.err


@pytest.fixture()
def http_dir(tmp_path):
    """A local HTTP server over ``tmp_path/www`` (the remote checkpoint host)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_train_refuses_a_remote_ckpt_path_and_runs_nothing(tiny_data, tmp_path, http_dir, capsys, monkeypatch):
    www, url = http_dir
    marker = tmp_path / "marker"
    _evil_ckpt(www / "evil.pt", marker)
    rc, err = _train(["fit", "--ckpt_path", f"{url}/evil.pt"], tiny_data, tmp_path / "run", capsys, monkeypatch)
    _one_line_error(rc, err, "--ckpt_path", "local")
    assert not marker.exists()


def test_train_refuses_a_malicious_local_ckpt_path_in_one_line(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "marker"
    evil = _evil_ckpt(tmp_path / "evil.ckpt", marker)
    rc, err = _train(["fit", "--ckpt_path", str(evil)], tmp_path / "no-data", tmp_path / "run", capsys, monkeypatch)
    _one_line_error(rc, err, str(evil), "refused")
    assert not marker.exists()


@pytest.mark.parametrize("value", ["last", "s3://bucket/x.ckpt", "DIR", "missing.ckpt"])
def test_train_ckpt_path_must_be_a_local_file(tmp_path, capsys, monkeypatch, value):
    value = {"DIR": str(tmp_path), "missing.ckpt": str(tmp_path / "missing.ckpt")}.get(value, value)
    rc, err = _train(["fit", "--ckpt_path", value], tmp_path / "no-data", tmp_path / "run", capsys, monkeypatch)
    _one_line_error(rc, err, "--ckpt_path")


def test_lightning_reloads_the_checkpoint_weights_only(tiny_data, tmp_path, capsys, monkeypatch):
    """The gate checks the file, then Lightning loads it again itself: that load must be weights-only
    too (so a file swapped in between runs nothing)."""
    import lightning.fabric.plugins.io.torch_io as tio

    ck = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, ck)  # passes the gate; not a full Lightning ckpt
    seen = []

    def spy(path, map_location=None, weights_only=None):
        seen.append(weights_only)
        raise ValueError("stop here")

    monkeypatch.setattr(tio, "pl_load", spy)
    rc, err = _train(["fit", "--ckpt_path", str(ck)], tiny_data, tmp_path / "b", capsys, monkeypatch)
    assert rc == 2 and "stop here" in err, err
    assert seen == [True]


def test_debug_env_zero_does_not_turn_debug_on(monkeypatch, capsys, tmp_path):
    from irs_torch.errors import debug_enabled

    for v, want in (("0", False), ("", False), ("false", False), ("off", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("IRS_TORCH_DEBUG", v)
        assert debug_enabled() is want, v
    monkeypatch.setenv("IRS_TORCH_DEBUG", "0")
    rc, _, err = run_cli(capsys, "crb", "--scenario", tmp_path / "missing.npz")
    _one_line_error(rc, err, "missing.npz")


# ================================================================= (b) what training trains on
@pytest.fixture(scope="module")
def ds16(tmp_path_factory):
    """16 instances in 2 shards of 8 (M = 4, 2 x 2 elements, L = 2), transmit-only labels."""
    from irs_torch.data import generate_dataset, load_config

    root = tmp_path_factory.mktemp("ds") / "d"
    cfg = load_config(TINY_DATA_YAML).replace(solver={"method": "transmit-only"}, shard_size=8)
    generate_dataset(root, 16, cfg, workers=1, progress=False, log=lambda m: None)
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _tamper(root: Path, shard: int, edit) -> None:
    """Apply ``edit(h5file)`` to a shard and record the new checksum in the manifest, as a careful
    forger would (so only the content checks can find it)."""
    import h5py

    from irs_torch.outputs import file_sha256

    p = root / "shards" / f"shard-{shard:05d}.h5"
    with h5py.File(p, "r+", locking=False) as f:
        edit(f)
    _edit_manifest(root, lambda m: m["shards"][shard].update(sha256=file_sha256(p)))


def _edit_manifest(root: Path, edit) -> None:
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))


def _training_check(root):
    from irs_torch.data.datamodule import ShardDataModule

    return ShardDataModule(str(root), batch_size=4).check_integrity()


def test_training_refuses_halved_crb_labels(ds16, tmp_path, capsys, monkeypatch):
    from irs_torch.data import ShardError

    root = _copy(ds16, tmp_path / "d")

    def halve(f):
        for k in ("crb", "max_crb", "crb_theta", "crb_phi"):
            f[k][...] = f[k][...] * 0.5

    _tamper(root, 0, halve)
    with pytest.raises(ShardError, match=r"shard-00000\.h5: instance 0 .*: field crb ="):
        _training_check(root)
    rc, err = _train(["fit"], root, tmp_path / "run", capsys, monkeypatch)  # the command: one line, before training
    _one_line_error(rc, err, "shard-00000.h5", "field crb")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").rglob("*.ckpt"))


def test_training_refuses_an_infeasible_design_marked_success(ds16, tmp_path):
    from irs_torch.data import ShardError

    root = _copy(ds16, tmp_path / "d")

    def blow_up(f):
        assert int(f["success"][3]) == 1
        R = f["R_s"][...]
        R[3] *= 10.0  # BS power 10 x P_t
        f["R_s"][...] = R

    _tamper(root, 0, blow_up)
    with pytest.raises(ShardError, match=r"instance 3: field success is 1 but the stored design violates"):
        _training_check(root)


def test_training_refuses_a_duplicated_shard(ds16, tmp_path):
    import shutil

    from irs_torch.data import ShardError
    from irs_torch.outputs import file_sha256

    root = _copy(ds16, tmp_path / "d")
    s1 = root / "shards" / "shard-00001.h5"
    shutil.copy(root / "shards" / "shard-00000.h5", s1)  # ids 0..7 twice, 8..15 missing
    _edit_manifest(root, lambda m: m["shards"][1].update(sha256=file_sha256(s1)))
    with pytest.raises(ShardError, match=r"shard-00001\.h5: attribute first_id is 0, expected 8"):
        _training_check(root)


@pytest.mark.parametrize("case", ["stored-count", "shard-stored", "success-7", "config-M", "num_shards"])
def test_verify_checks_every_recomputable_manifest_field(ds16, tmp_path, capsys, case):
    root = _copy(ds16, tmp_path / "d")
    if case == "stored-count":
        _edit_manifest(root, lambda m: m["counts"].update(stored=m["counts"]["stored"] + 4, requested=16))
        needle = "counts.stored"
    elif case == "shard-stored":
        _edit_manifest(root, lambda m: m["shards"][0].update(stored=m["shards"][0]["stored"] + 1))
        needle = "stored"
    elif case == "success-7":
        def seven(f):
            v = f["success"][...]
            v[2] = 7
            f["success"][...] = v

        _tamper(root, 0, seven)
        needle = "field success = 7"
    elif case == "config-M":
        _edit_manifest(root, lambda m: m["config"].update(M=5))
        needle = "config_sha256"
    else:
        _edit_manifest(root, lambda m: m.update(num_shards=3))
        needle = "num_shards"
    rc, _, err = run_cli(capsys, "dataset", "info", root, "--verify")
    _one_line_error(rc, err, needle)
    with pytest.raises(ValueError, match=needle.split()[0]):
        _training_check(root)


def test_manifest_config_edit_never_discards_finished_work(ds16, tmp_path, capsys):
    from irs_torch.outputs import file_sha256

    root = _copy(ds16, tmp_path / "d")
    before = {p.name: file_sha256(p) for p in (root / "shards").iterdir()}
    _edit_manifest(root, lambda m: m["config"].update(M=5))
    rc, _, err = run_cli(capsys, "dataset", "generate", "--out", root, "--num", 16, "--workers", 1, "--no-progress")
    _one_line_error(rc, err, "config_sha256", "--force")
    # a forger who also fixes config_sha256: the shards of the old config are still not recomputed
    from irs_torch.data.distribution import DatasetConfig

    _edit_manifest(root, lambda m: m.update(config_sha256=DatasetConfig.from_dict(m["config"]).sha256()))
    rc, _, err = run_cli(capsys, "dataset", "generate", "--out", root, "--num", 16, "--workers", 1, "--no-progress")
    _one_line_error(rc, err, "shard-00000.h5", "--force")
    assert {p.name: file_sha256(p) for p in (root / "shards").iterdir()} == before


# ================================================================= (c) one writer per output folder
def test_track_refuses_an_out_folder_another_run_is_writing(tmp_path, capsys):
    from irs_torch.outputs import DirLock

    out = tmp_path / "t"
    argv = ["track", "--scenario", "tiny", "--steps", 2, "--policy", "isotropic", "--out", out, "--no-plots",
            "--no-progress"]
    with DirLock(out, "--out"):  # another run holds the folder
        rc, _, err = run_cli(capsys, *argv)
        _one_line_error(rc, err, "--out", str(out), "another process")
        assert not (out / "steps.jsonl").exists()
    rc, _, err = run_cli(capsys, *argv)  # the folder free again: runs
    assert rc == 0, err
    lines = (out / "steps.jsonl").read_text().splitlines()
    rc, out_text, err = run_cli(capsys, *argv)  # identical settings: resumes, writes nothing twice
    assert rc == 0, err
    assert (out / "steps.jsonl").read_text().splitlines() == lines and "resumed" in out_text


def test_reproduce_and_benches_refuse_a_locked_out_folder(tmp_path, capsys):
    from irs_torch.errors import InputError
    from irs_torch.figures.reproduce import run_figure
    from irs_torch.outputs import DirLock

    out = tmp_path / "o"
    with DirLock(out, "--out"):
        with pytest.raises(InputError, match="another process"):
            run_figure("fig2", out, grid=[5.0], realisations=1, compute=False, plot=False)
        rc, _, err = run_cli(capsys, "bench", "warmstart", "--out", out, "--quick", "--limit", 1, "--no-progress")
        _one_line_error(rc, err, "--out", "another process")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_dataset_lock_is_the_shared_folder_lock():
    from irs_torch.data import generate
    from irs_torch.outputs import DirLock

    assert issubclass(generate._Lock, DirLock)


# ================================================================= (d) sizes checked before work
def _npz_with_huge_header(src: Path, dst: Path, key: str = "junk", n: int = 200_000_000) -> Path:
    """``src``'s arrays plus member ``key`` whose .npy header claims ``n`` float64 elements (1.6 GB)
    but holds none: reading it would allocate the claimed size first."""
    import io
    import shutil
    import zipfile

    from numpy.lib import format as npf

    shutil.copy(src, dst)
    buf = io.BytesIO()
    npf.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (n,)})  # magic + header
    with zipfile.ZipFile(dst, "a") as z:
        z.writestr(f"{key}.npy", buf.getvalue())
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from irs_torch import Solution

    d = tmp_path_factory.mktemp("files")
    s = paper_scenario(0, **SMALL)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=0)
    return {"dir": d, "scenario": s, "good": s.save(d / "good.npz"),
            "sol": Solution.evaluate(s, R, psi, method="test").save(d / "sol.npz")}


def test_npz_reads_only_the_format_keys_and_bounds_elements_first(files, tmp_path, capsys):
    from irs_torch import Solution

    big = _npz_with_huge_header(files["good"], tmp_path / "big.npz")
    assert load_scenario(big).M == 4  # the unused key is never read
    bigsol = _npz_with_huge_header(files["sol"], tmp_path / "bigsol.npz")
    with pytest.raises(ValueError, match=r"bigsol\.npz: array junk \(shape \(200000000,\)\) takes the file over"):
        Solution.load(bigsol)  # solutions keep extra arrays: every key is read, so every key is bounded first
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile: duplicate name G.npy (the later member is the one read)
        g = _npz_with_huge_header(files["good"], tmp_path / "bigG.npz", key="G")  # a defined key that lies
    rc, _, err = run_cli(capsys, "crb", "--scenario", g)
    _one_line_error(rc, err, "bigG.npz: array G (shape (200000000,))")


@pytest.mark.parametrize("kind", ["mat", "text", "pickle"])
def test_a_file_that_is_not_npz_is_named_as_such(files, tmp_path, capsys, kind):
    p = tmp_path / f"x-{kind}.npz"
    if kind == "mat":
        import scipy.io

        scipy.io.savemat(str(p), {"G": np.ones((2, 2))})
    elif kind == "text":
        p.write_text("G = 1\n")
    else:
        import pickle

        p.write_bytes(pickle.dumps({"G": 1}))
    rc, _, err = run_cli(capsys, "crb", "--scenario", p)
    line = _one_line_error(rc, err, str(p), "not a readable scenario .npz file: not a zip archive")
    assert "allow_pickle" not in line


def test_a_named_pipe_as_scenario_is_an_error_not_a_hang(tmp_path, capsys):
    import signal

    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)

    def hang(*_):
        raise TimeoutError("reading the named pipe blocked")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    try:
        rc, _, err = run_cli(capsys, "crb", "--scenario", fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    _one_line_error(rc, err, str(fifo), "not a regular file")


@pytest.mark.parametrize("argv, flag", [
    (["scenario", "--M", "100000", "-o", "{d}/x.npz"], "--M"),
    (["scenario", "--M", "-3", "-o", "{d}/x.npz"], "--M"),
    (["scenario", "--N-h", "0", "-o", "{d}/x.npz"], "--N-h"),
    (["scenario", "--count", "1000000000", "-o", "{d}/x.npz"], "--count"),
    (["scenario", "--K-db", "nan", "-o", "{d}/x.npz"], "--K-db"),
    (["scenario", "--K-db", "1e9", "-o", "{d}/x.npz"], "--K-db"),  # found by the fuzz test: an overflow
    (["scenario", "--seed", "99999999999999999999", "-o", "{d}/x.npz"], "--seed"),  # found by the fuzz test
    (["solve", "--scenario", "{good}", "--n-starts", "1000000000", "--no-progress"], "--n-starts"),
    (["mismatch", "--scenario", "{good}", "--grid", "100000"], "--grid"),
    (["track", "--scenario", "tiny", "--steps", "1000000000", "--out", "{d}/t", "--no-progress"], "--steps"),
    (["montecarlo", "--scenario", "{good}", "--trials", "1000000000000"], "--trials"),
])
def test_size_flags_are_bounded_before_any_work(files, tmp_path, capsys, argv, flag):
    argv = [a.format(d=tmp_path, good=files["good"]) for a in argv]
    rc, _, err = run_cli(capsys, *argv)
    _one_line_error(rc, err, flag)
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "t").exists()


def test_dataset_config_sizes_are_bounded(tmp_path):
    from irs_torch.data import load_config

    cfg = load_config(TINY_DATA_YAML)
    with pytest.raises(ValueError, match=r"M=100000.*GiB"):
        cfg.replace(M=100000)
    with pytest.raises(ValueError, match="K_db must be a finite number"):
        paper_scenario(0, K_db=float("nan"), **SMALL)
    with pytest.raises(ValueError, match="K_db must be"):  # found by the fuzz test: 10**(1e9/10) overflowed
        paper_scenario(0, K_db=1e9, **SMALL)
    with pytest.raises(ValueError, match="K_db must be in"):
        cfg.replace(K_db=1e9)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from irs_torch.learn.checkpoint import export_model
    from irs_torch.learn.nets import WarmStartNet

    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    hp = {"M": 4, "N_h": 2, "N_v": 2, "L": 2, "hidden": 8, "depth": 1}
    torch.save({"hyper_parameters": hp, "state_dict": WarmStartNet(**hp).state_dict(),
                "irs_torch": {"dataset": {"config": {"P_t": [1.0, 40.0], "P_s": [0.01, 1.0], "a_max": [2.0, 16.0]}}}},
               d / "tiny.ckpt")
    return export_model(d / "tiny.ckpt", d / "tiny.pt")


def test_a_checkpoint_hidden_width_is_bounded_before_allocation(tiny_model, tmp_path):
    from irs_torch.learn.checkpoint import load_model

    raw = torch.load(tiny_model, weights_only=True)
    raw["hyper_parameters"]["hidden"] = 10_000_000
    torch.save(raw, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"wide\.pt: hyper_parameters\.hidden must be an integer in \[0, 16384\]"):
        load_model(tmp_path / "wide.pt")
    raw["hyper_parameters"]["hidden"] = 16  # plausible, but not the width of the stored weights
    torch.save(raw, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: weights do not match .* state_dict '\S+' is \("):
        load_model(tmp_path / "other.pt")


def test_a_sidecar_whose_claims_lie_is_refused_when_its_model_loads(tiny_model, tmp_path):
    import shutil

    from irs_torch.learn.checkpoint import load_model, read_sidecar

    m = tmp_path / "m.pt"
    shutil.copy(tiny_model, m)
    info = json.loads(tiny_model.with_suffix(".json").read_text())
    assert info["budgets"]["P_t"] == [1.0, 40.0]
    load_model(m)  # no sidecar: nothing to compare
    info["budgets"]["P_t"] = [1.0, 4000.0]  # claims to cover budgets it was not trained for
    (tmp_path / "m.json").write_text(json.dumps(info))
    read_sidecar(m)  # well-formed
    with pytest.raises(ValueError, match=r"m\.json: field budgets\.P_t is \[1\.0, 4000\.0\] but the model file m\.pt"):
        load_model(m)


def test_a_deeply_nested_sidecar_is_skipped_not_a_crash(tiny_model, tmp_path):
    import shutil
    import warnings

    from irs_torch.inference import find_checkpoint

    d = tmp_path / "ck"
    d.mkdir()
    shutil.copy(tiny_model, d / "good.pt")
    shutil.copy(tiny_model.with_suffix(".json"), d / "good.json")
    shutil.copy(tiny_model, d / "deep.pt")
    (d / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    s = random_scenario(seed=0, **SMALL)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert find_checkpoint(s, dirs=d) == d / "good.pt"
    assert any("deep.json" in str(x.message) and "nested" in str(x.message) for x in w), [str(x.message) for x in w]


# ================================================================= (e) silent and vague cases
@pytest.mark.parametrize("argv, needles", [
    (["solve", "--scenario", "{good}", "-o", "", "--method", "transmit-only"], ("-o/--output must be a path",)),
    (["solve", "--scenario", "{good}", "--method", "ao", "--fair"], ("--fair applies to --method passive",)),
    (["solve", "--scenario", "{good}", "--effort", "thorough", "--init", "aligned"], ("--effort thorough", "--init")),
    (["montecarlo", "--scenario", "{good}", "--solution", "{sol}", "--design", "optimised"], ("--design optimised",)),
    (["montecarlo", "--scenario", "{good}", "--optimiser", "adam"], ("--optimiser adam",)),
    (["track", "--scenario", "tiny", "--steps", "2", "--policy", "isotropic", "--checkpoint", "{sol}", "--out",
      "{d}/t"], ("--checkpoint", "learned")),
    (["montecarlo", "--scenario", "{g0}", "--trials", "10"], ("G of IRS 1 is zero",)),
    (["crb", "--scenario", "{kdb}"], ("K_db must be a finite number",)),
])
def test_ignored_flags_and_vague_cases_are_one_line_errors(files, tmp_path, capsys, argv, needles):
    d = files["scenario"].to_dict()
    np.savez(tmp_path / "g0.npz", **{**d, "G": d["G"] * 0})
    np.savez(tmp_path / "kdb.npz", **{**d, "K_db": np.array(np.nan)})
    argv = [a.format(d=tmp_path, good=files["good"], sol=files["sol"], g0=tmp_path / "g0.npz",
                     kdb=tmp_path / "kdb.npz") for a in argv]
    rc, out, err = run_cli(capsys, *argv, "--no-progress") if argv[0] != "crb" else run_cli(capsys, *argv)
    _one_line_error(rc, err, *needles)
    assert not (tmp_path / "t").exists()


def test_crb_index_refuses_a_solution_made_for_another_item(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "scenario", "--count", 2, "--M", 4, "--N-h", 2, "--N-v", 2, "-o", tmp_path / "b.npz")
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "solve", "--scenario", tmp_path / "b.npz", "--index", 1, "--method", "transmit-only",
                         "-o", tmp_path / "s1.npz", "--no-progress")
    assert rc == 0, err
    from irs_torch import Solution

    assert Solution.load(tmp_path / "s1.npz").metadata["scenario_index"] == 1
    rc, _, err = run_cli(capsys, "crb", "--scenario", tmp_path / "b.npz", "--index", 0, "--solution",
                         tmp_path / "s1.npz")
    _one_line_error(rc, err, "made for item 1", "--index 0")
    rc, out, err = run_cli(capsys, "crb", "--scenario", tmp_path / "b.npz", "--index", -1, "--solution",
                           tmp_path / "s1.npz")
    assert rc == 0 and "max-CRB" in out, err


def test_dataset_generate_where_every_instance_fails_is_an_error(tmp_path, capsys, monkeypatch):
    from irs_torch.data import load_config

    cfg = load_config(TINY_DATA_YAML).replace(solver={"method": "transmit-only"}, shard_size=4)
    cfg.save(tmp_path / "c.json")
    def boom(*a, **k):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr("irs_torch.solvers.solve", boom)  # label_instance imports it at call time (workers=1)
    rc, out, err = run_cli(capsys, "dataset", "generate", "--config", tmp_path / "c.json", "--num", 4, "--out",
                           tmp_path / "d", "--workers", 1, "--no-progress")
    assert rc == 1, (out, err)
    assert "every one of the 4 instances failed" in err and "solver exploded" in err, err


def test_verify_names_a_shard_field_of_the_wrong_shape(ds16, tmp_path, capsys):
    import h5py

    from irs_torch.outputs import file_sha256

    root = _copy(ds16, tmp_path / "d")
    p = root / "shards" / "shard-00000.h5"
    with h5py.File(p, "r+", locking=False) as f:
        psi = f["psi"][...]
        del f["psi"]
        f.create_dataset("psi", data=psi[:, :, :3])
    _edit_manifest(root, lambda m: m["shards"][0].update(sha256=file_sha256(p)))
    rc, _, err = run_cli(capsys, "dataset", "info", root, "--verify")
    _one_line_error(rc, err, "shard-00000.h5: dataset 'psi' has shape (8, 2, 3)", "(K, 2, 4)")


def test_a_failed_write_names_the_file_and_leaves_no_partial_file(tmp_path):
    import resource
    import signal

    from irs_torch.outputs import atomic_open

    target = tmp_path / "steps.csv"
    old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # a "full disk" after 1000 bytes
    try:
        with pytest.raises(OSError, match=r"cannot write .*steps\.csv"):
            with atomic_open(target, "w") as fh:
                for _ in range(1000):
                    fh.write("x" * 100 + "\n")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_sig)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no 0-byte or partial steps.csv, no temporary


def test_track_report_csv_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    import resource
    import signal

    from irs_torch.tracking.report import write_csv

    rec = {"policy": "ao", "m": 0, "t": 0, "truth": [1.0, 2.0, 0.0], "pred": [1.0, 2.0], "design_pos": [1.0, 2.0],
           "design_clipped": False, "fix": [1.0, 2.0], "estimate": [1.0, 2.0], "error": 0.1, "fix_error": 0.1,
           "peb": 0.2, "max_crb_true": 1e-4, "nis": 1.0, "accepted": True, "lost": False, "lost_reason": None,
           "design_seconds": 0.01, "design_status": "optimal", "echo_seed": 1, "design_seed": 2}
    target = tmp_path / "steps.csv"
    target.write_text("previous run\n")
    old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        with pytest.raises(OSError, match=r"cannot write .*steps\.csv"):
            write_csv([rec] * 200, target)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_sig)
    assert target.read_text() == "previous run\n" and sorted(p.name for p in tmp_path.iterdir()) == ["steps.csv"]


def test_crb_error_of_an_overflowing_design_names_the_file(files, tmp_path, capsys):
    """Found by the fuzz test: a finite but huge psi (1e300) overflowed the model and the error named
    no file."""
    from irs_torch import Solution

    sol = Solution.load(files["sol"])
    d = sol.to_dict()
    d["psi"] = d["psi"] * 1e300
    np.savez(tmp_path / "huge.npz", **d)
    rc, _, err = run_cli(capsys, "crb", "--scenario", files["good"], "--solution", tmp_path / "huge.npz")
    _one_line_error(rc, err, str(tmp_path / "huge.npz"))


# ================================================================= (g) HDF5 shard sizes bounded before any read
def _forge_huge(root: Path, field: str, shape, dtype="f8") -> Path:
    """Replace ``field`` of shard 0 by a dataset of ``shape`` whose chunks are never written (a file of
    a few KB that declares terabytes), and record the new checksum, as a careful forger would."""

    def edit(f):
        del f[field]
        f.create_dataset(field, shape=shape, dtype=dtype, chunks=(1,) * len(shape))

    _tamper(root, 0, edit)
    return root / "shards" / "shard-00000.h5"


@pytest.mark.parametrize("cmd", [("dataset", "info"), ("dataset", "info", "--verify")])
def test_a_forged_shard_with_a_huge_dataset_is_refused_before_reading(ds16, tmp_path, capsys, cmd):
    root = _copy(ds16, tmp_path / "d")
    p = _forge_huge(root, "max_crb", (10 ** 11,))
    assert p.stat().st_size < 1 << 20
    rc, _, err = run_cli(capsys, *cmd, root)
    line = _one_line_error(rc, err, "shard-00000.h5", "'max_crb'")
    assert "nothing was read" in line, line


def test_training_data_refuses_a_shard_dataset_beyond_the_manifest_sizes(ds16, tmp_path):
    from irs_torch.data import ShardDataset, ShardError

    root = _copy(ds16, tmp_path / "d")
    _forge_huge(root, "G", (8, 2, 4, 1 << 20), dtype="c16")  # 2 GiB of G behind the manifest's M = 4
    with pytest.raises(ShardError, match=r"shard-00000.h5: dataset 'G' has shape \(8, 2, 4, 1048576\).*"
                                         r"\(K, 2, 4, 4\); nothing was read"):
        ShardDataset(root, keys=["G", "instance_id"])
    root2 = _copy(ds16, tmp_path / "d2")
    _forge_huge(root2, "instance_id", (5_000_000,), dtype="i8")  # rows beyond the shard's 8 ids
    with pytest.raises(ShardError, match=r"shard-00000.h5: dataset 'instance_id' has 5000000 rows, more than the 8"):
        ShardDataset(root2)


def test_a_data_set_config_keeps_its_shards_readable():
    from irs_torch.data.distribution import DatasetConfig
    from irs_torch.limits import MAX_SHARD_ELEMENTS

    cfg = DatasetConfig(**SMALL, shard_size=8)
    with pytest.raises(ValueError, match="shard_size = .*more than the"):
        cfg.replace(M=512, shard_size=MAX_SHARD_ELEMENTS // (2 * 512 * 512) + 1)


# ================================================================= (h) every file write is atomic
@pytest.fixture()
def full_disk():
    """``with full_disk(n): ...``: every file write beyond ``n`` bytes fails (RLIMIT_FSIZE, SIGXFSZ
    ignored), as on a full disk; restored afterwards."""
    import contextlib
    import resource
    import signal

    @contextlib.contextmanager
    def cm(limit: int):
        old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old_sig)

    return cm


def _write_plot(files, target, capsys):
    rc, _, err = run_cli(capsys, "plot", "--scenario", files["good"], "--solution", files["sol"], "-o", target)
    if rc:
        raise OSError(err)


def _write_dataset_config(files, target, capsys):
    from irs_torch.data.distribution import DatasetConfig

    DatasetConfig(**SMALL, shard_size=8).save(target)


def _write_figure_csv(files, target, capsys):
    from irs_torch.figures.storage import write_csv

    write_csv([{"figure": "fig3", "curve": "ao", "x": float(i), "max_crb": 1e-3 * i} for i in range(200)], target,
              "fig3", {"max_iter": 30})


def _write_design_json(files, target, capsys):
    from irs_torch.outputs import atomic_write_text, dumps

    atomic_write_text(target, dumps({"x": list(range(2000))}))


@pytest.mark.parametrize("writer, name", [(_write_plot, "design.png"), (_write_dataset_config, "config.yaml"),
                                          (_write_figure_csv, "fig3.csv"), (_write_design_json, "summary.json")])
@pytest.mark.parametrize("before", ["old file", "no file"])
def test_a_write_that_fails_half_way_leaves_the_old_file_or_none(files, tmp_path, capsys, full_disk, writer, name,
                                                                  before):
    """Plots, data-set configs, figure CSVs and JSON reports are written through a temporary file and
    renamed: a disk that fills up half-way leaves the previous file (or no file), never a partial or
    0-byte one, and the error names the file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - imported before the limit (fonts are cached on first use)

    target = tmp_path / "out" / name
    target.parent.mkdir()
    if before == "old file":
        target.write_bytes(b"OLD")
    with full_disk(200), pytest.raises(OSError) as e:
        writer(files, target, capsys)
    assert name in str(e.value), e.value
    left = sorted(p.name for p in target.parent.iterdir())
    if before == "old file":
        assert left == [name] and target.read_bytes() == b"OLD", left
    else:
        assert left == [], left


def test_atomic_savefig_keeps_the_old_image_when_drawing_fails(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from irs_torch.outputs import atomic_savefig

    target = tmp_path / "a.svg"  # the SVG writer streams into the file while it draws
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    atomic_savefig(fig, target)
    good = target.read_bytes()
    assert b"<svg" in good
    class Boom(matplotlib.artist.Artist):
        def draw(self, renderer):
            raise RuntimeError("boom")

    fig.add_artist(Boom())  # drawing raises inside savefig, after the file is opened
    with pytest.raises(RuntimeError, match="boom"):
        atomic_savefig(fig, target)
    plt.close(fig)
    assert target.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["a.svg"]


# ================================================================= (i) checkpoint errors name the file
@pytest.mark.parametrize("kind", ["text", "truncated", "not-a-checkpoint", "a-tensor", "wrong-weights"])
def test_every_checkpoint_error_names_the_file(tiny_model, tmp_path, capsys, kind):
    from irs_torch.learn.checkpoint import load_model

    p = tmp_path / f"{kind}.pt"
    if kind == "text":
        p.write_text("this is not a model\n")
    elif kind == "truncated":
        data = tiny_model.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "not-a-checkpoint":
        torch.save({"a": 1}, p)
    elif kind == "a-tensor":
        torch.save(torch.zeros(3), p)
    else:
        ck = torch.load(tiny_model, weights_only=True)
        ck["state_dict"] = {k: v[..., :1] if v.dim() else v for k, v in ck["state_dict"].items()}
        torch.save(ck, p)
    with pytest.raises(ValueError) as e:
        load_model(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value), e.value
    scen = paper_scenario(0, **SMALL).save(tmp_path / "s.npz")
    rc, _, err = run_cli(capsys, "solve", "--scenario", scen, "--method", "learned", "--checkpoint", p, "--no-progress")
    _one_line_error(rc, err, str(p))


# ================================================================= (j) the training config, found by fuzzing it
@pytest.mark.parametrize("extra, needle", [
    (["--model.unroll_steps=1000000000"], "model.unroll_steps"),  # trained "forever": 1e9 refine steps per batch
    (["--model.hidden=1000000000"], "model.hidden"),  # a multi-GB network before any check
    (["--data.batch_size=1000000000"], "data.batch_size"),
    (["--seed_everything=-3"], "seed_everything"),  # "-3 is not in bounds, numpy accepts ..." named nothing
    (["--model.hidden=abc"], "model.hidden"),  # jsonargparse's usage + multi-line message
    (["--trainer.max_epochs=-3"], "max_epochs"),  # Lightning's MisconfigurationException: a traceback
])
def test_training_config_errors_are_one_line_naming_the_field(tiny_data, tmp_path, capsys, monkeypatch, extra, needle):
    rc, err = _train(["fit"], tiny_data, tmp_path, capsys, monkeypatch, extra=extra)
    _one_line_error(rc, err, needle)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_solve_init_that_is_no_file_names_the_flag(files, capsys):
    rc, _, err = run_cli(capsys, "solve", "--scenario", files["good"], "--init", "isotropic", "--method",
                         "transmit-only")
    _one_line_error(rc, err, "--init isotropic")


def test_a_training_config_that_refers_to_itself_is_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    """Found by fuzzing the training YAML: a self-referential alias made jsonargparse recurse until a
    RecursionError traceback."""
    cfg = tmp_path / "loop.yaml"
    cfg.write_text("a: &x [*x]\n")
    rc, err = _train(["fit"], tiny_data, tmp_path, capsys, monkeypatch, extra=["--config", str(cfg)])
    _one_line_error(rc, err, "--config")

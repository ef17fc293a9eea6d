"""Data set integrity: per-shard SHA-256 in the manifest, checked by `dataset info
--verify`, before training and on resume; label consistency (max_crb = max crb, CRB recomputed,
feasibility); `dataset generate` refusing orphan shards without --force; file modes; and
`scripts/test.sh --all`.

Checksums are recomputed here with hashlib over the file bytes, and tampering is done with h5py
directly, independently of the code under test."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_data_helpers import TINY, assert_same_data, load_rows

from irs_torch.data import DatasetConfig, ShardError, generate_dataset
from irs_torch.data.datamodule import ShardDataModule
from irs_torch.data.integrity import check_integrity

from helpers import run_cli

NUM = 4  # shards of 3: [0-2] [3]
# The transmit-only solver (one P2 SDP per instance, ~0.2 s each) keeps these tests fast; the labels
# are as real as the AO's for what is checked here (checksums, label consistency, feasibility).
FAST = {**TINY, "solver": {"method": "transmit-only", "p2_solver": "CLARABEL"}}
SHARD0 = "shard-00000.h5"


def _quiet(msg):
    pass


@pytest.fixture(scope="module")
def cfg():
    return DatasetConfig.from_dict(dict(FAST))


@pytest.fixture(scope="module")
def ds(tmp_path_factory, cfg):
    root = tmp_path_factory.mktemp("integrity") / "ds"
    generate_dataset(root, NUM, cfg, workers=1, progress=False, log=_quiet)
    return root


@pytest.fixture
def copy(ds, tmp_path):
    """A private copy of the data set to damage."""
    dst = tmp_path / "ds"
    shutil.copytree(ds, dst)
    return dst


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _manifest(root) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


def _rewrite_checksums(root, drop: bool = False):
    """Make the manifest agree with the files again (as if a buggy writer had produced them), or
    drop the checksums (a manifest written before they existed)."""
    m = _manifest(root)
    for e in m["shards"]:
        if drop:
            e.pop("sha256", None)
        else:
            e["sha256"] = _sha(Path(root) / e["file"])
    (Path(root) / "manifest.json").write_text(json.dumps(m))


def _edit(root, field, fn, shard=SHARD0):
    with h5py.File(Path(root) / "shards" / shard, "r+") as f:
        v = f[field][...]
        f[field][...] = fn(v.copy())


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("irs-torch: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- checksums
def test_manifest_records_the_sha256_of_every_shard_file(ds):
    m = _manifest(ds)
    assert [e["file"] for e in m["shards"]] == ["shards/shard-00000.h5", "shards/shard-00001.h5"]
    for e in m["shards"]:
        assert e["sha256"] == _sha(ds / e["file"])
    rep = check_integrity(ds)
    assert rep["shards"] == 2 and rep["checksums_verified"] == 2 and rep["checksums_missing"] == []
    assert rep["instances_checked"] == NUM


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)], ids=["umask022", "umask027"])
def test_shards_and_manifest_get_the_umask_mode_not_0600(tmp_path, cfg, umask, mode):
    old = os.umask(umask)
    try:
        generate_dataset(tmp_path / "d", 1, cfg, workers=1, progress=False, log=_quiet)
    finally:
        os.umask(old)
    for p in (tmp_path / "d" / "manifest.json", tmp_path / "d" / "shards" / SHARD0):
        assert p.stat().st_mode & 0o777 == mode, p


def test_a_modified_shard_fails_verify_and_training_setup(copy, capsys):
    good = _sha(copy / "shards" / SHARD0)
    dm = ShardDataModule(str(copy), batch_size=2, fractions=(1.0, 0.0, 0.0))
    assert dm.check_integrity()["checksums_verified"] == 2  # a sound data set loads
    _edit(copy, "max_crb", lambda v: v * 0.5)  # a bit flip in a label, a hand edit, a bad copy ...
    bad = _sha(copy / "shards" / SHARD0)
    rc, _, err = run_cli(capsys, "dataset", "info", copy, "--verify")
    line = _error_line(err)
    assert rc == 2
    for part in (f"{SHARD0}: checksum mismatch", good, bad, f"irs-torch dataset generate --out {copy} --num {NUM}"):
        assert part in line
    with pytest.raises(ShardError, match=rf"{SHARD0}: checksum mismatch: the manifest records sha256 {good}, "
                                         rf"the file has {bad}"):
        ShardDataModule(str(copy), batch_size=2, fractions=(1.0, 0.0, 0.0)).setup("fit")


# ----------------------------------------------------------------------------- labels
def test_overwritten_max_crb_fails_verification_naming_shard_instance_and_field(copy, capsys):
    def overwrite(v):
        v[1] *= 0.9  # instance 1 claims a better max-CRB than its per-IRS CRBs give
        return v

    _edit(copy, "max_crb", overwrite)
    _rewrite_checksums(copy)  # the checksum alone would catch this; make it agree (a buggy writer)
    rc, _, err = run_cli(capsys, "dataset", "info", copy, "--verify")
    line = _error_line(err)
    assert rc == 2 and f"{SHARD0}: instance 1: field max_crb" in line and "max_l crb" in line
    # the cheap check before training catches it too
    with pytest.raises(ShardError, match=rf"{SHARD0}: instance 1: field max_crb"):
        ShardDataModule(str(copy), batch_size=2, fractions=(1.0, 0.0, 0.0)).setup("fit")
    # a relative change of 1e-7 is far above rounding and is caught
    _edit(copy, "max_crb", lambda v: v / np.where(np.arange(len(v)) == 1, 0.9, 1.0) * (1 + 1e-7))
    _rewrite_checksums(copy)
    with pytest.raises(ShardError, match=r"instance 0 \(and 2 more instance\(s\)\): field max_crb"):
        check_integrity(copy, labels="cheap")


def test_stored_crb_is_recomputed_from_the_stored_scenario_and_design(copy):
    r = load_rows(copy)
    i = 2
    lo = int(np.argmin(r["crb"][i]))  # halve the smaller CRB: max_crb stays consistent

    def scale(v):
        v[i, lo] *= 0.5
        return v

    _edit(copy, "crb", scale)
    _rewrite_checksums(copy)
    check_integrity(copy, labels="cheap")  # max_crb = max(crb) still holds: the cheap check passes
    with pytest.raises(ShardError, match=rf"{SHARD0}: instance {i}: field crb = .* but crb recomputed from the "
                                         r"stored scenario and design"):
        check_integrity(copy, labels="full")


def test_a_design_over_budget_fails_unless_marked_failed(copy, capsys):
    _edit(copy, "P_t", lambda v: v * 0.5)  # the stored label now uses twice the stored BS budget
    _rewrite_checksums(copy)
    rc, _, err = run_cli(capsys, "dataset", "info", copy, "--verify")
    line = _error_line(err)
    assert rc == 2 and f"{SHARD0}: instance 0: field success is 1" in line and "BS power over P_t" in line
    # An instance whose solver reported failure carries no feasibility claim.
    _edit(copy, "success", lambda v: np.zeros_like(v))
    _rewrite_checksums(copy)
    assert check_integrity(copy)["instances_checked"] == NUM


def test_old_manifest_without_checksums_warns_and_resume_records_them(copy, capsys, cfg):
    _rewrite_checksums(copy, drop=True)
    rc, out, err = run_cli(capsys, "dataset", "info", copy, "--verify")
    assert rc == 0 and "records no checksum for 2 shard(s)" in err and f"--num {NUM}" in err
    assert "0/2 shards match their sha256 (2 without a recorded checksum)" in out
    with pytest.warns(UserWarning, match=r"records no checksum for 2 shard\(s\)"):
        assert ShardDataModule(str(copy), batch_size=2).check_integrity()["checksums_missing"] == [
            "shards/shard-00000.h5", "shards/shard-00001.h5"]
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "shards").iterdir()}
    generate_dataset(copy, NUM, None, workers=1, progress=False, log=_quiet)  # resume: nothing to compute
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "shards").iterdir()} == before
    for e in _manifest(copy)["shards"]:
        assert e["sha256"] == _sha(copy / e["file"])


def test_resume_recomputes_a_shard_whose_bytes_changed(copy, ds):
    _edit(copy, "crb", lambda v: v * 2)  # the structure still verifies; only the checksum tells
    notes = []
    generate_dataset(copy, NUM, None, workers=1, progress=False, log=notes.append)
    assert any("recomputing shard 0" in n and "checksum mismatch" in n for n in notes), notes
    assert_same_data(ds, copy)
    assert check_integrity(copy)["checksums_verified"] == 2


# ----------------------------------------------------------------------------- orphan shards
def test_generate_refuses_shards_without_a_manifest_unless_forced(ds, tmp_path, capsys, cfg):
    out = tmp_path / "orphan"
    shutil.copytree(ds, out)
    (out / "manifest.json").unlink()  # lost; the shards were written under seed 0
    (out / "shards" / "notes.txt").write_text("not a shard")
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    cfg_file = tmp_path / "fast.json"
    cfg_file.write_text(json.dumps(FAST))
    argv = ["dataset", "generate", "--config", cfg_file, "--num", NUM, "--out", out, "--workers", 1, "--no-progress"]
    rc, _, err = run_cli(capsys, *argv, "--seed", 5)
    line = _error_line(err)
    assert rc == 2 and f"{out} has no manifest.json but {out / 'shards'} holds 3 file(s)" in line
    assert "notes.txt, shard-00000.h5, shard-00001.h5" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == before  # nothing touched
    assert not (out / "manifest.json").exists()

    # --force under another config: the foreign shards are deleted (and named), other files left
    rc, _, err = run_cli(capsys, *argv, "--seed", 5, "--force")
    assert rc == 0
    assert f"--force: deleted 2 shard file(s) of another config or id range from {out / 'shards'}: " \
           f"shard-00000.h5, shard-00001.h5" in err
    assert "--force: left 1 other file(s)" in err and (out / "shards" / "notes.txt").read_text() == "not a shard"
    ref = tmp_path / "ref5"
    generate_dataset(ref, NUM, cfg, seed=5, workers=1, progress=False, log=_quiet)
    assert_same_data(ref, out)

    # --force under the same config: the shards are reused, not recomputed
    (out / "manifest.json").unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*.h5")}
    rc, _, err = run_cli(capsys, *argv, "--seed", 5, "--force")
    assert rc == 0 and "--force: reusing 2 shard file(s) written under the same config: shard-00000.h5, " \
                       "shard-00001.h5" in err and "deleted" not in err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*.h5")} == mtimes
    assert_same_data(ref, out)


# ----------------------------------------------------------------------------- scripts/test.sh
def _record_script_calls(tmp_path, *args) -> list[list[str]]:
    """Run scripts/test.sh with a stub `python` first on PATH that records its arguments."""
    stub = tmp_path / "bin"
    stub.mkdir()
    log = tmp_path / "calls.jsonl"
    (stub / "python").write_text("#!/usr/bin/env bash\n"
                                 f"printf '%s\\0' \"$@\" >> {log}\nprintf '\\n' >> {log}\n")
    (stub / "python").chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "scripts" / "test.sh"
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(script), *args], check=True, env=env, timeout=60)
    return [ln.rstrip("\0").split("\0") for ln in log.read_text().splitlines()]


def test_test_script_runs_slow_tests_only_with_all(tmp_path):
    calls = _record_script_calls(tmp_path, "-x", "-k", "crb and not slow_thing")
    assert calls[0][:3] == ["-m", "pip", "install"] and ".[test,dev]" in calls[0][-1]
    assert calls[1] == ["-m", "ruff", "check", "--no-cache", "."]  # lint first: a finding fails the run
    assert calls[2:] == [["-m", "pytest", "-q", "-x", "-k", "crb and not slow_thing"]]  # the default suite only
    (tmp_path / "calls.jsonl").unlink()
    shutil.rmtree(tmp_path / "bin")
    calls = _record_script_calls(tmp_path, "--all", "-x", "tests/test_crb.py")
    assert calls[2:] == [["-m", "pytest", "-q", "-m", "slow or not slow", "-x", "tests/test_crb.py"]]


def test_test_script_stops_on_a_lint_finding(tmp_path):
    """The ruff step is real: a failing lint exits the script before pytest runs."""
    stub = tmp_path / "bin"
    stub.mkdir()
    log = tmp_path / "calls.txt"
    (stub / "python").write_text("#!/usr/bin/env bash\n"
                                 f"echo \"$*\" >> {log}\n"
                                 "[[ \"$2\" == ruff ]] && exit 1\nexit 0\n")
    (stub / "python").chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "scripts" / "test.sh"
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(script)], env=env, timeout=60)
    assert r.returncode == 1
    assert [ln.split()[1] for ln in log.read_text().splitlines()] == ["pip", "ruff"]  # pytest never ran

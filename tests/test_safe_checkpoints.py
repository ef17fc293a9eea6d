"""Model files are data, never code.

A crafted model file whose pickle would create a marker file when unpickled is given to
``load_model``, to ``irs-torch solve --method learned --checkpoint``, and placed where the
checkpoint scan (``IRS_TORCH_CHECKPOINTS``) finds it, with and without a forged sidecar. In every
case the marker must not appear, the call must fail (exception / non-zero exit) and the message
must name the file. A control test shows that the same payload does create its marker when the
file is unpickled the unsafe way, so the checks above can fail.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from irs_torch import random_scenario

from helpers import cli_in_process

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "warm-start-paper.pt"


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_file(path: Path, marker: Path) -> Path:
    """A file shaped like a slim model file (state_dict, hyper_parameters for M=4, 2x2, L=2) whose
    hyperparameters hold the payload."""
    torch.save({"format": "irs-torch/warm-start-model",
                "hyper_parameters": {"M": 4, "N_h": 2, "N_v": 2, "L": 2, "hidden": 8, "depth": 1,
                                     "note": _Payload(marker)},
                "state_dict": {}, "irs_torch": {}}, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A real slim model file for M = 4, 2 x 2 elements, L = 2 (untrained), made by export_model."""
    from irs_torch.learn.checkpoint import export_model
    from irs_torch.learn.nets import WarmStartNet

    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    hp = {"M": 4, "N_h": 2, "N_v": 2, "L": 2, "hidden": 8, "depth": 1}
    net = WarmStartNet(**hp)
    torch.save({"hyper_parameters": hp, "state_dict": net.state_dict()}, d / "tiny.ckpt")
    return export_model(d / "tiny.ckpt", d / "tiny.pt")


@pytest.fixture()
def scen_file(tmp_path):
    return random_scenario(seed=0, M=4, N_h=2, N_v=2).save(tmp_path / "scen.npz")


# ----------------------------------------------------------------------------- control
def test_the_crafted_file_does_run_code_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "control-marker"
    evil = _evil_file(tmp_path / "evil.pt", marker)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the unsafe load this project no longer does
    assert marker.exists()


# ----------------------------------------------------------------------------- passed directly
def test_load_model_refuses_a_malicious_file_and_runs_nothing(tmp_path):
    from irs_torch.learn.checkpoint import load_model, read_checkpoint, write_sidecar

    marker = tmp_path / "marker"
    evil = _evil_file(tmp_path / "evil.pt", marker)
    for fn in (load_model, read_checkpoint, write_sidecar):
        with pytest.raises(ValueError) as e:
            fn(evil)
        msg = str(e.value)
        assert str(evil) in msg and "refused" in msg and "weights-only" in msg, msg
        assert "GLOBAL" in msg and "open" in msg, msg  # torch's reason: the blocked callable
        assert "\n" not in msg
    assert not marker.exists()
    assert not (tmp_path / "evil.json").exists()


def test_cli_solve_learned_refuses_a_malicious_checkpoint(tmp_path, scen_file, monkeypatch, capsys):
    marker = tmp_path / "marker"
    evil = _evil_file(tmp_path / "evil.pt", marker)
    r = cli_in_process(["solve", "--scenario", scen_file, "--method", "learned", "--checkpoint", evil, "--no-progress"],
             monkeypatch, capsys)
    assert r.returncode != 0
    assert str(evil) in r.stderr and "refused" in r.stderr, r.stderr
    assert "feasible: yes" not in r.stdout
    assert not marker.exists()


def test_sidecar_tool_refuses_a_malicious_file(tmp_path):
    marker = tmp_path / "marker"
    evil = _evil_file(tmp_path / "evil.pt", marker)
    r = subprocess.run([sys.executable, "-m", "irs_torch.learn.checkpoint", "sidecar", str(evil)], check=False,
                       cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert str(evil) in r.stderr and "refused" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists() and not (tmp_path / "evil.json").exists()


# ----------------------------------------------------------------------------- found by the scan
def test_scan_never_opens_a_file_without_sidecar(tmp_path, scen_file, monkeypatch, capsys):
    from irs_torch.inference import find_checkpoint

    marker = tmp_path / "marker"
    d = tmp_path / "ckpts"
    d.mkdir()
    _evil_file(d / "evil.pt", marker)
    s = random_scenario(seed=0, M=4, N_h=2, N_v=2)
    with pytest.raises(FileNotFoundError) as e, pytest.warns(UserWarning, match=r"evil\.pt: no metadata sidecar"):
        find_checkpoint(s, dirs=d)
    assert "evil.pt (skipped: no valid sidecar evil.json)" in str(e.value)
    assert "python -m irs_torch.learn.checkpoint sidecar" in str(e.value)
    assert not marker.exists()
    r = cli_in_process(
        ["solve", "--scenario", scen_file, "--method", "learned", "--no-progress"],
        monkeypatch,
        capsys,
        {"IRS_TORCH_CHECKPOINTS": d},
    )
    assert r.returncode != 0
    assert "evil.pt" in r.stderr and "sidecar" in r.stderr, r.stderr
    assert not marker.exists()
    assert sorted(p.name for p in d.iterdir()) == ["evil.pt"]  # nothing written next to it


def test_scan_with_a_forged_sidecar_still_runs_nothing(tmp_path, tiny_model, scen_file, monkeypatch, capsys):
    """A sidecar claiming the right sizes (and the file's true sha256) gets the file chosen; the
    weights-only load then refuses it."""
    from irs_torch.inference import find_checkpoint
    from irs_torch.learn.checkpoint import read_sidecar

    marker = tmp_path / "marker"
    d = tmp_path / "ckpts"
    d.mkdir()
    evil = _evil_file(d / "evil.pt", marker)
    forged = json.loads(tiny_model.with_suffix(".json").read_text())
    forged.update(model_file="evil.pt", sha256=_sha256(evil), bytes=evil.stat().st_size)
    (d / "evil.json").write_text(json.dumps(forged))
    s = random_scenario(seed=0, M=4, N_h=2, N_v=2)
    assert read_sidecar(evil)["sizes"] == {"M": 4, "N_h": 2, "N_v": 2, "L": 2}
    assert find_checkpoint(s, dirs=d) == evil
    assert not marker.exists()
    r = cli_in_process(
        ["solve", "--scenario", scen_file, "--method", "learned", "--no-progress"],
        monkeypatch,
        capsys,
        {"IRS_TORCH_CHECKPOINTS": d},
    )
    assert r.returncode != 0
    assert str(evil) in r.stderr and "refused" in r.stderr, r.stderr
    assert not marker.exists()
    # a sidecar whose sha256 does not match the file: the file is skipped (not opened)
    forged["sha256"] = "0" * 64
    (d / "evil.json").write_text(json.dumps(forged))
    with (
        pytest.raises(FileNotFoundError, match=r"evil\.pt \(skipped: sha256 differs"),
        pytest.warns(UserWarning, match="sha256 differs"),
    ):
        find_checkpoint(s, dirs=d)
    assert not marker.exists()


def test_sidecar_never_overwrites_another_json(tmp_path, tiny_model):
    from irs_torch.learn.checkpoint import write_sidecar

    m = tmp_path / "config.pt"
    shutil.copy(tiny_model, m)
    (tmp_path / "config.json").write_text('{"mine": 1}')
    with pytest.raises(ValueError, match=r"config\.json: exists and is not a model sidecar"):
        write_sidecar(m)
    assert json.loads((tmp_path / "config.json").read_text()) == {"mine": 1}
    (tmp_path / "config.json").unlink()
    assert json.loads(write_sidecar(m).read_text())["sha256"] == _sha256(m)
    assert json.loads(write_sidecar(m).read_text())["model_file"] == "config.pt"  # a sidecar is rewritten


def test_malformed_sidecar_is_a_clear_error(tmp_path, tiny_model):
    from irs_torch.learn.checkpoint import read_sidecar

    m = tmp_path / "m.pt"
    shutil.copy(tiny_model, m)
    for text, want in (("{not json", "m.json: not a valid model sidecar"),
                       (json.dumps({"format": "other"}), "format is not"),
                       (json.dumps({**json.loads(tiny_model.with_suffix(".json").read_text()),
                                    "sizes": {"M": 4.5, "N_h": 2, "N_v": 2, "L": 2}}), r"sizes\.M must be an integer"),
                       (json.dumps({"format": "irs-torch/warm-start-model-info"}), "missing key 'sizes'")):
        (tmp_path / "m.json").write_text(text)
        with pytest.raises(ValueError, match=want) as e:
            read_sidecar(m)
        assert "python -m irs_torch.learn.checkpoint sidecar" in str(e.value)


# ----------------------------------------------------------------------------- good files
def test_export_writes_a_weights_only_file_and_its_sidecar(tiny_model, tmp_path):
    from irs_torch.inference import find_checkpoint
    from irs_torch.learn.checkpoint import load_model

    raw = torch.load(tiny_model, map_location="cpu", weights_only=True)
    info = json.loads(tiny_model.with_suffix(".json").read_text())
    assert info["sha256"] == _sha256(tiny_model) and info["bytes"] == tiny_model.stat().st_size
    assert info["sizes"] == {k: raw["hyper_parameters"][k] for k in ("M", "N_h", "N_v", "L")}
    assert (info["d_h"], info["d_v"], info["active"]) == (0.5, 0.5, True)
    net = load_model(tiny_model)
    assert all(torch.equal(v, raw["state_dict"][k]) for k, v in net.state_dict().items())
    s = random_scenario(seed=0, M=4, N_h=2, N_v=2)
    assert find_checkpoint(s, dirs=tiny_model.parent) == tiny_model


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.parent.glob("*.pt")))
def test_shipped_models_are_weights_only_and_their_sidecars_match(name):
    from irs_torch.inference import find_checkpoint

    path = SHIPPED.parent / name
    raw = torch.load(path, map_location="cpu", weights_only=True)
    hp = raw["hyper_parameters"]
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["model_file"] == path.name and info["sha256"] == _sha256(path)
    if "size_ranges" in info:  # the any-size model: its sidecar claims ranges, not one size (tests/test_anysize.py)
        assert set(info["size_ranges"]) >= {"M", "N_h", "N_v", "L"}
        return
    assert info["sizes"] == {k: hp[k] for k in ("M", "N_h", "N_v", "L")}
    assert (info["d_h"], info["d_v"], info["active"]) == (hp["d_h"], hp["d_v"], hp["active"])
    # the scan picks a model for the scenario's sizes whose training budgets cover its budgets
    s = random_scenario(seed=0)
    chosen = find_checkpoint(s, dirs=SHIPPED.parent)
    budgets = json.loads(chosen.with_suffix(".json").read_text())["budgets"]
    for k in ("P_t", "P_s", "a_max"):
        assert budgets[k][0] <= float(getattr(s, k)) <= budgets[k][1]


def test_no_unsafe_load_in_the_package_or_scripts():
    """No code path of irs_torch/ or scripts/ unpickles: no weights_only=False, allow_pickle=True,
    pickle.load(s)."""
    bad = []
    for root in ("irs_torch", "scripts"):
        for p in sorted((REPO / root).rglob("*.py")):
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if any(x in line for x in ("weights_only=False", "allow_pickle=True", "pickle.load")):
                    bad.append(f"{p.relative_to(REPO)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)

"""A non-editable ``pip install .`` ships the default model: checkpoints/*.pt and their JSON sidecars
become ``irs_torch/checkpoints/`` of the installed package, found by the runtime from anywhere.

Slow (a fresh venv and a wheel build, ~1 min): ``pytest -m slow tests/test_packaging.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def repo_copy(dest: Path) -> Path:
    """The files git tracks or would track (not ignored; deleted ones skipped), without results/ and
    benchmarks/, copied to ``dest`` (a build never writes into the working tree)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for f in files:
        src = REPO / f
        if not src.is_file() or f.startswith(("results/", "benchmarks/")):
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / f)
    return dest


CHECK = r"""
import json, sys
from pathlib import Path
import irs_torch, irs_torch.inference as rt
from irs_torch.scenario import paper_scenario
from irs_torch.learn.checkpoint import default_checkpoint_dirs, load_model
pkg = Path(irs_torch.__file__).resolve().parent
path = rt.find_checkpoint(paper_scenario(seed=0))
net = load_model(path, paper_scenario(seed=0))
print(json.dumps({"package": str(pkg), "dirs": [str(d) for d in default_checkpoint_dirs()],
                  "found": str(path), "params": sum(p.numel() for p in net.parameters()),
                  "shipped": sorted(p.name for p in (pkg / "checkpoints").iterdir())}))
"""


@pytest.mark.slow
def test_a_non_editable_install_finds_and_loads_the_default_checkpoint(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout (to list the files to install)")
    src = repo_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    # no pip of its own: the system pip and setuptools (visible through --system-site-packages) install into it
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    wheels = tmp_path / "wheels"
    subprocess.run([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(wheels)], check=True, cwd=tmp_path)
    (whl,) = wheels.glob("irs_torch-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert not [n for n in names if n.split("/")[0] in ("results", "benchmarks", "tests", "checkpoints")], names
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
                   check=True, cwd=tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "IRS_TORCH_CHECKPOINTS")}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([str(py), "-c", CHECK], cwd=outside, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    pkg = Path(info["package"])
    assert pkg.is_relative_to(venv), info  # the installed copy, not the working tree
    assert [Path(d) for d in info["dirs"]] == [pkg / "checkpoints"], info
    assert Path(info["found"]).parent == pkg / "checkpoints" and info["params"] > 0, info
    shipped = {p.name for p in (REPO / "checkpoints").iterdir() if p.suffix in (".pt", ".json")}
    assert shipped and shipped <= set(info["shipped"]), (shipped, info["shipped"])
    assert not [n for n in info["shipped"] if n.endswith((".md", ".png"))], info["shipped"]

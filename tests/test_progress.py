"""Progress of long loops: one helper (:func:`irs_torch.outputs.progress_bar`) on stderr for every
long loop a user waits on. It is shown on a terminal, silent when stderr is not one (pipes, logs,
these tests) unless ``IRS_TORCH_PROGRESS=1`` forces plain lines, and never written to stdout, so
``--json`` output and CSV on stdout stay machine-readable.
"""
from __future__ import annotations

import io
import json

import pytest

from irs_torch import Scenario, paper_scenario

from helpers import run_cli

SMALL = {"M": 4, "N_h": 2, "N_v": 2}
BAR = "%|"  # every tqdm line has the percentage followed by the bar


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from irs_torch import Solution

    d = tmp_path_factory.mktemp("progress")
    s = paper_scenario(0, **SMALL)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=0)
    batch = Scenario.stack([paper_scenario(k, **SMALL) for k in range(3)])
    return {"dir": d, "scenario": s.save(d / "s.npz"), "batch": batch.save(d / "b.npz"),
            "sol": Solution.evaluate(s, R, psi, method="test").save(d / "sol.npz")}


def _data_config(tmp_path):
    from irs_torch.data.distribution import DatasetConfig

    return DatasetConfig(**SMALL, shard_size=2, solver={"method": "transmit-only"}).save(tmp_path / "c.yaml")


COMMANDS = {
    "solve (batch)": (lambda f, t: ["solve", "--scenario", f["batch"], "--method", "transmit-only", "-o",
                                    t / "sol.npz"], "solve (transmit-only)", "3/3"),
    "montecarlo": (lambda f, t: ["montecarlo", "--scenario", f["scenario"], "--solution", f["sol"], "--trials", 4,
                                 "--chunk", 2], "montecarlo (ml)", "2/2"),
    "track": (lambda f, t: ["track", "--steps", 2, "--policy", "isotropic", "--no-plots", "--out", t / "tr"],
              "track", "2/2"),
    "dataset generate": (lambda f, t: ["dataset", "generate", "--config", _data_config(t), "--num", 4, "--out",
                                       t / "d", "--workers", 1], "generate", "4/4"),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "dataset generate" else n
                                  for n in sorted(COMMANDS)])  # (generate's rate is also checked in test_data)
def test_long_commands_report_progress_on_stderr_only(files, tmp_path, capsys, monkeypatch, name):
    argv, desc, count = COMMANDS[name]
    monkeypatch.setenv("IRS_TORCH_PROGRESS", "1")  # stderr is captured here, not a terminal: force it
    monkeypatch.setenv("IRS_TORCH_PROGRESS_INTERVAL", "0")
    rc, out, err = run_cli(capsys, *argv(files, tmp_path))
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if BAR in ln]
    assert any(ln.startswith(desc) and count in ln for ln in lines), err
    assert "\r" not in err and "\x1b[" not in err  # plain lines in a log file
    assert BAR not in out and "\r" not in out  # stdout keeps only the command's own output


@pytest.mark.parametrize("name", ["solve (batch)", "montecarlo"])
def test_progress_is_silent_when_stderr_is_not_a_terminal(files, tmp_path, capsys, monkeypatch, name):
    argv, _, _ = COMMANDS[name]
    monkeypatch.delenv("IRS_TORCH_PROGRESS", raising=False)
    rc, out, err = run_cli(capsys, *argv(files, tmp_path))
    assert rc == 0, err
    assert BAR not in err and BAR not in out, err


def test_json_stdout_stays_clean_with_progress_forced(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IRS_TORCH_PROGRESS", "1")
    monkeypatch.setenv("IRS_TORCH_PROGRESS_INTERVAL", "0")
    rc, out, err = run_cli(capsys, "montecarlo", "--scenario", files["scenario"], "--solution", files["sol"],
                           "--trials", 4, "--chunk", 2, "--json")
    assert rc == 0, err
    assert json.loads(out)["trials"] == 4
    rc, out, err = run_cli(capsys, "solve", "--scenario", files["batch"], "--method", "transmit-only", "--json")
    assert rc == 0, err
    assert len(json.loads(out)["max_crb"]) == 3


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("env, tty, flag, shown", [
    (None, True, True, True), (None, False, True, False), (None, True, False, False),  # --no-progress / --json
    ("1", False, True, True), ("1", False, False, False), ("0", True, True, False), ("off", True, True, False),
    ("yes", False, True, True),
])
def test_when_progress_is_shown(monkeypatch, env, tty, flag, shown):
    import sys

    from irs_torch.outputs import progress_bar, progress_enabled

    if env is None:
        monkeypatch.delenv("IRS_TORCH_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("IRS_TORCH_PROGRESS", env)
    monkeypatch.setenv("IRS_TORCH_PROGRESS_INTERVAL", "0")
    stream = _Stream(tty)
    assert progress_enabled(flag, stream) is shown
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress_bar(range(5), desc="loop", unit="x", progress=flag):
        pass
    assert ("loop: 100%|" in stream.getvalue()) is shown, stream.getvalue()

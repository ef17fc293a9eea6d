"""`irs-torch reproduce` never writes over the committed figures unless asked to."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from irs_torch.commands.reproduce import COMMITTED_OUT, DEFAULT_OUT

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--grid", "5", "--set", "M=4", "--set", "N_h=2", "--set", "N_v=2", "--realisations", "1",
        "--max-iter", "2", "--workers", "1", "--no-progress"]


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def _status(paths):
    return _git("status", "--porcelain", "--untracked-files=all", "--", *paths).stdout


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                               reason="needs a git checkout")
# only the paths the command could write to: other work in the same tree may change other files
WATCHED = [COMMITTED_OUT, DEFAULT_OUT, "fig2", "fig2.csv", "fig2.png"]


def _reproduce_at_root(argv, run):
    default = ROOT / DEFAULT_OUT
    existed = default.exists()
    before = _status(WATCHED)
    try:
        out = run(argv)
        assert (default / "fig2.csv").is_file() and (default / "fig2.png").is_file()
        assert f"{DEFAULT_OUT}/fig2.csv" in out
        assert _status(WATCHED) == before
        assert _git("check-ignore", "-q", DEFAULT_OUT).returncode == 0  # git-ignored, not just untracked
    finally:
        if not existed:
            shutil.rmtree(default, ignore_errors=True)


@needs_git
def test_reproduce_default_output_is_git_ignored_collect_only(monkeypatch, capsys):
    """Fast: the default folder, from the repository root, with nothing solved."""
    from irs_torch.cli import main

    monkeypatch.chdir(ROOT)

    def run(argv):
        assert main(argv) == 0
        return capsys.readouterr().out

    _reproduce_at_root(["reproduce", "fig2", "--collect-only", "--no-progress"], run)


@pytest.mark.slow
@needs_git
def test_reproduce_fig2_from_repo_root_leaves_git_status_unchanged():
    """A real (tiny) run as a user types it, in its own process (about 35 s on a loaded 2-core machine)."""
    def run(argv):
        r = subprocess.run([sys.executable, "-m", "irs_torch", *argv], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr
        return r.stdout

    _reproduce_at_root(["reproduce", "fig2", *TINY], run)


def test_refresh_results_is_the_only_way_to_the_committed_folder(tmp_path, monkeypatch):
    from irs_torch.cli import build_parser
    from irs_torch.commands import reproduce

    seen = []
    monkeypatch.setattr("irs_torch.outputs.check_output_dir", lambda out, *a, **k: seen.append(out))
    monkeypatch.setattr("irs_torch.figures.reproduce.run_figure", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
    parser = build_parser()
    for argv, want in [(["reproduce", "fig2"], DEFAULT_OUT),
                       (["reproduce", "fig2", "--refresh-results"], COMMITTED_OUT),
                       (["reproduce", "fig2", "--out", str(tmp_path)], str(tmp_path))]:
        args = parser.parse_args(argv)
        with pytest.raises(SystemExit):
            reproduce.run(args)
        assert seen[-1] == want
    with pytest.raises(SystemExit):  # both at once is refused by argparse (exit 2)
        parser.parse_args(["reproduce", "fig2", "--refresh-results", "--out", "x"])

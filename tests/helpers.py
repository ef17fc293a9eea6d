"""Helpers shared by several test files (import as ``from helpers import ...``; tests/conftest.py puts
this folder on sys.path)."""
from __future__ import annotations

import warnings
from types import SimpleNamespace


def run_cli(capsys, *argv):
    """``irs-torch ARGV`` in this process (``irs_torch.cli.main``): ``(exit status, stdout, stderr)``.
    Arguments are converted with ``str``; an argparse usage error (SystemExit) returns its code."""
    from irs_torch.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def cli_in_process(args, monkeypatch, capsys, env=None):
    """``irs-torch ARGS`` in this process with ``IRS_TORCH_DEBUG`` unset, ``env`` set and warnings
    silenced; returns an object with ``returncode``, ``stdout``, ``stderr`` (as ``subprocess.run``)."""
    from irs_torch.cli import main

    monkeypatch.delenv("IRS_TORCH_DEBUG", raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, str(v))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=cap.out, stderr=cap.err)

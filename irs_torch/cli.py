"""The ``irs-torch`` command.

Sub-commands live in :mod:`irs_torch.commands`: every module there defines
``register(subparsers)`` which adds its parser and sets ``func=run`` (a function of the parsed
arguments returning an exit code). They are discovered automatically.

User errors (bad input files, invalid values, mismatched sizes) are reported as one line
``irs-torch: error: ...`` with exit status 2, never as a traceback; set ``IRS_TORCH_DEBUG=1``
to see the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from irs_torch import __version__
    import irs_torch.commands as cmds

    p = argparse.ArgumentParser(
        prog="irs-torch",
        description="Transmit and reflective beamforming for multi-active-IRS cooperative sensing: "
                    "CRB, exact AO solver, data sets, learned warm starts.",
    )
    p.add_argument("--version", action="version", version=f"irs-torch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for m in sorted(pkgutil.iter_modules(cmds.__path__), key=lambda m: m.name):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"irs_torch.commands.{m.name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("irs-torch: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError, TypeError, KeyError, OSError) as e:
        if os.environ.get("IRS_TORCH_DEBUG"):
            raise
        msg = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        print(f"irs-torch: error: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

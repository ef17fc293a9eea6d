"""The ``irs-torch`` command.

Sub-commands live in :mod:`irs_torch.commands`: every module there defines
``register(subparsers)`` which adds its parser and sets ``func=run`` (a function of the parsed
arguments returning an exit code). They are discovered automatically.

Exit status and error reporting:

- 0: success. 1: the command ran but its result is a failure it reports (e.g. ``solve`` found no
  feasible point; the reason is printed).
- 2: a user error, printed as one line ``irs-torch: error: ...`` naming the field or file, never
  with a traceback. User errors are :class:`irs_torch.errors.InputError` (the one input-error
  type; a ``ValueError``), any other ``ValueError`` raised by validation, ``FileNotFoundError``,
  ``PermissionError`` and other ``OSError`` on the user's paths. Bad command-line syntax
  (argparse) also exits 2.
- 3: an internal error (a bug: ``TypeError``, ``KeyError``, ``RuntimeError`` from a solver,
  ``AssertionError``, ...), printed as ``irs-torch: internal error (please report): <type>: <msg>``
  after its traceback.
- 130: interrupted (Ctrl-C / SIGTERM where a command handles it).

Set ``IRS_TORCH_DEBUG=1`` (or true/yes/on; 0/false/no/off leave it off) to see the traceback of a user
error too (the exception is re-raised).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from irs_torch.errors import InputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

UserError = InputError  # the historical name; raise irs_torch.errors.InputError in new code
USER_ERRORS = (InputError, ValueError, FileNotFoundError, PermissionError, OSError)


def build_parser() -> argparse.ArgumentParser:
    import irs_torch.commands as cmds
    from irs_torch import __version__

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
        return EXIT_INTERRUPTED
    except USER_ERRORS as e:
        from irs_torch.errors import debug_enabled

        if debug_enabled():
            raise
        print(f"irs-torch: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - a bug: show it as one, with its traceback
        return _internal_error(e)
    return int(rc or 0)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and not str(e).strip() and e.filename:
        msg = f"{e.strerror or type(e).__name__}: {e.filename}"
    else:
        msg = str(e)
    return " ".join(msg.split()) or type(e).__name__


def _internal_error(e: BaseException) -> int:
    import traceback

    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    print(f"irs-torch: internal error (please report): {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Error types shared by the library and the ``irs-torch`` command.

:class:`InputError` is the one type for "the user's input is wrong" (a bad value, shape, key, file
or path). It is a :class:`ValueError`, so library callers that catch ``ValueError`` keep working;
the command line prints it as one line ``irs-torch: error: ...`` with exit status 2. Anything
else that escapes a command is an internal error (a bug), printed with its traceback (exit 3);
see the ``irs-torch`` command (``cli.py``).

:class:`InputTypeError` is an :class:`InputError` that is also a :class:`TypeError`, for inputs of
the wrong type (e.g. a real channel where a complex one is required), so ``except TypeError``
in callers keeps working.

This module imports nothing from the package, so any layer may raise these errors.
"""
from __future__ import annotations


class InputError(ValueError):
    """The user's input is invalid; the message names the field (or file) and the value."""


class InputTypeError(InputError, TypeError):
    """An input of the wrong type (also a :class:`TypeError`)."""


DEBUG_ENV = "IRS_TORCH_DEBUG"


def debug_enabled() -> bool:
    """True if ``IRS_TORCH_DEBUG`` asks for tracebacks of user errors: ``1``, ``true``, ``yes`` or ``on``
    (any case). Unset, empty, ``0``, ``false``, ``no`` and ``off`` leave it off (so ``IRS_TORCH_DEBUG=0``
    does not turn it on)."""
    import os

    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")

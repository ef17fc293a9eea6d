"""Sub-commands of ``irs-torch``; each module defines ``register(subparsers)``.

Shared argument types live here: :func:`seed_arg` (every ``--seed`` option).
"""
from __future__ import annotations

import argparse


def seed_arg(text: str) -> int:
    """argparse type of ``--seed``: an integer >= 0 (a negative seed is refused, not reinterpreted)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {v}")
    return v


def positive_int_arg(flag: str):
    """argparse type of an integer flag that must be >= 1; the message names ``flag``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= 1, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= 1, got {v}")
        return v
    return parse

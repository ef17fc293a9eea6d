"""Sub-commands of ``irs-torch``; each module defines ``register(subparsers)``.

Shared argument types live here: :func:`seed_arg` (every ``--seed`` option).
"""
from __future__ import annotations

import argparse

SEED_MAX = 2 ** 62  # torch and numpy seeds are 64-bit; commands add small offsets (item i: seed + i)


def seed_arg(text: str) -> int:
    """argparse type of ``--seed``: an integer in [0, 2**62] (a negative seed is refused, not
    reinterpreted; a larger one would overflow the 64-bit generators)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {v}")
    if v > SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer <= 2**62, got {v}")
    return v


def positive_int_arg(flag: str, hi: int | None = None):
    """argparse type of an integer flag that must be >= 1 (and <= ``hi`` when given, an upper bound
    from :mod:`irs_torch.limits` checked before any work); the message names ``flag``."""
    want = "an integer >= 1" if hi is None else f"an integer in [1, {hi}]"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {want}, got {text!r}") from None
        if v < 1 or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{flag} must be {want}, got {v}")
        return v
    return parse

"""``irs_torch.crb.broadcast_shapes`` (plain-Python shape broadcasting) against ``torch.broadcast_shapes``,
and the reason it exists: a one-shot network-only solve must not import sympy (``torch.broadcast_shapes``
imports it through ``torch.fx`` on its first call, ~0.4 s).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from irs_torch.crb import broadcast_shapes

REPO = Path(__file__).resolve().parents[1]


def _outcome(fn, *shapes):
    """``("ok", tuple)`` or ``("error", exception type)`` of ``fn(*shapes)``."""
    try:
        out = fn(*shapes)
    except (RuntimeError, ValueError) as e:
        return "error", type(e)
    assert isinstance(out, torch.Size)
    return "ok", tuple(out)


def _random_shape(rng: random.Random):
    """A shape of 0-4 dims with sizes in {0, 1, 2, 3}, as tuple, list, torch.Size or (for 1 dim) an int."""
    shape = tuple(rng.choice((0, 1, 1, 2, 3)) for _ in range(rng.randint(0, 4)))
    kind = rng.randrange(4)
    if kind == 1:
        return list(shape)
    if kind == 2:
        return torch.Size(shape)
    if kind == 3 and len(shape) == 1:
        return shape[0]
    return shape


def test_matches_torch_on_random_shapes_including_incompatible_ones():
    rng = random.Random(20240611)
    counts = {"ok": 0, "error": 0}
    for _ in range(4000):
        shapes = [_random_shape(rng) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.5 and shapes:  # derive a compatible partner from the first shape
            base = (shapes[0],) if isinstance(shapes[0], int) else tuple(shapes[0])
            shapes.append(tuple(1 if rng.random() < 0.4 else d for d in base[rng.randint(0, len(base)):]))
        want = _outcome(torch.broadcast_shapes, *shapes)
        got = _outcome(broadcast_shapes, *shapes)
        assert got == want, shapes
        counts[want[0]] += 1
    # both branches exercised many times (incompatible shapes raise RuntimeError in both)
    assert counts["ok"] > 500 and counts["error"] > 500, counts


@pytest.mark.parametrize("shapes", [(), ((),), (None,), ((2, 3), None, (3,)), (5,), (5, (2, 1)), ([1, 4], (3, 1)),
                                    ((0,), (1,)), ((1,), (0,)), ((2,), (0,)), ((0, 1), (3, 0, 4)),
                                    (torch.Size([2, 1, 4]), (7, 1), ()), ((3, 1), (-1,)), ((2,), (1, -1))])
def test_edge_cases_match_torch(shapes):
    assert _outcome(broadcast_shapes, *shapes) == _outcome(torch.broadcast_shapes, *shapes)


def test_errors():
    with pytest.raises(RuntimeError, match="broadcast"):
        broadcast_shapes((2, 3), (4, 3))
    with pytest.raises(ValueError, match="negative"):
        broadcast_shapes((3, 1), (-1,))
    with pytest.raises(RuntimeError, match="Input shapes"):
        broadcast_shapes((2,), 2.5)
    assert broadcast_shapes((2, 1, 4), (3, 1), ()) == torch.Size([2, 3, 4])


_PROBE = """
import sys
import torch
if "sympy" in sys.modules:
    print("SYMPY_WITH_TORCH")
    sys.exit(0)
from irs_torch.cli import main
rc = main(sys.argv[1:])
print("SYMPY_AFTER_SOLVE" if "sympy" in sys.modules else "NO_SYMPY", rc)
"""


def test_network_only_solve_does_not_import_sympy(tmp_path):
    """``irs-torch solve --method learned --refine none`` with the shipped paper model, in a fresh process."""
    if not (REPO / "checkpoints" / "warm-start-paper.pt").is_file():
        pytest.skip("no shipped checkpoint for the paper's sizes")
    from irs_torch import paper_scenario

    f = paper_scenario(seed=0).save(tmp_path / "paper.npz")
    env = {**{k: v for k, v in os.environ.items() if k != "IRS_TORCH_CHECKPOINTS"}, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", _PROBE, "solve", "--scenario", str(f), "--method", "learned",
                        "--refine", "none", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    if last == "SYMPY_WITH_TORCH":
        pytest.skip("this torch imports sympy on import")
    assert last == "NO_SYMPY 0", (last, r.stderr[-3000:])

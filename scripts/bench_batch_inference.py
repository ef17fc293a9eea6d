"""Batch inference and start-up figures of the learned warm start; prints, asserts nothing.

    python scripts/bench_batch_inference.py [--count 10000] [--distinct 500] [--threads 2] [--checkpoint F]

1. ``irs-torch solve --scenario BATCH.npz --method learned --refine none -o SOL.npz`` on a batched
   file of ``--count`` scenarios (``--distinct`` random geometries, seeds 0.., tiled to the count:
   the network's work does not depend on repeats), in a fresh process with ``--threads`` torch
   threads: wall time of the whole command and the per-stage times it reports.
2. A one-shot network-only solve of one scenario, run twice (the second on a warm disk): wall time.
3. Imports: whether ``irs-torch --help`` imports torch, and whether ``solve --refine none`` imports
   cvxpy (``sys.modules`` of the process at exit).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args, threads, extra_env=None):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(extra_env or {})}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
    return r, time.perf_counter() - t


PROBE = ("import sys, runpy; sys.argv = ['irs-torch'] + sys.argv[1:]\n"
         "from irs_torch.cli import main\n"
         "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
         "print('MODULES', {m: m in sys.modules for m in ('torch', 'cvxpy', 'lightning')}, file=sys.stderr)\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--distinct", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint", default=None)
    a = p.parse_args(argv)

    import torch

    from irs_torch.scenario import Scenario, random_scenario

    tmp = Path(tempfile.mkdtemp(prefix="irs-batch-"))
    t = time.perf_counter()
    base = [random_scenario(seed=i) for i in range(min(a.distinct, a.count))]
    items = [base[i % len(base)] for i in range(a.count)]
    batch = Scenario.stack(items)
    f = batch.save(tmp / "batch.npz")
    one = base[0].save(tmp / "one.npz")
    print(f"made {a.count} scenarios ({len(base)} distinct) in {time.perf_counter() - t:.1f} s: {f} "
          f"({f.stat().st_size / 1e6:.0f} MB); torch {torch.__version__}, {os.cpu_count()} CPUs visible")
    ck = ["--checkpoint", a.checkpoint] if a.checkpoint else []

    r, wall = _run(["-m", "irs_torch", "solve", "--scenario", str(f), "--method", "learned", "--refine", "none",
                    "-o", str(tmp / "sol.npz"), "--json", *ck], a.threads)
    if r.returncode != 0:
        print(r.stderr[-3000:])
        return 1
    rep = json.loads(r.stdout)
    print(f"1. batch network-only solve of {a.count} scenarios, {a.threads} thread(s): {wall:.1f} s wall for the "
          f"whole command ({wall / a.count * 1e3:.3f} ms per scenario); stages: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in rep["times"].items())
          + f"; {rep['success']}/{rep['count']} feasible; output {(tmp / 'sol.npz').stat().st_size / 1e6:.0f} MB")

    walls = []
    for _ in range(2):
        r, w = _run(["-m", "irs_torch", "solve", "--scenario", str(one), "--method", "learned", "--refine", "none",
                     "--json", *ck], a.threads)
        if r.returncode != 0:
            print(r.stderr[-3000:])
            return 1
        walls.append(w)
    rep = json.loads(r.stdout)
    print(f"2. one-shot network-only solve: {walls[0]:.2f} s cold, {walls[1]:.2f} s warm disk (wall, whole process); "
          f"in-process stages: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in rep["times"].items()
                                             if k in ("load", "predict", "total")))

    r, w = _run(["-c", PROBE, "--help"], a.threads)
    mods = r.stderr.strip().splitlines()[-1]
    print(f"3. irs-torch --help: {w:.2f} s wall; {mods}")
    r, w = _run(["-c", PROBE, "solve", "--scenario", str(one), "--method", "learned", "--refine", "none", "--json",
                 *ck], a.threads)
    mods = r.stderr.strip().splitlines()[-1]
    print(f"   irs-torch solve --method learned --refine none: {w:.2f} s wall; {mods}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

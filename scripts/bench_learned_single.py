#!/usr/bin/env python
"""One scenario at a time: `solve --method learned` (the library call, default refinement) against the default
solver, in one process, on every k-th paper-size instance of the quality suite (ratio to best-known and time).

    python scripts/bench_learned_single.py --every 3 --out benchmarks/records/learned-single.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", type=int, default=3, help="take every k-th suite instance (default 3: 8 of 24)")
    p.add_argument("--checkpoint", default="checkpoints/warm-start-budget.pt")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    if a.every < 1:
        p.error(f"--every must be >= 1, got {a.every}")
    import torch

    torch.set_num_threads(1)
    from irs_torch.bench.warmstart_methods import suite_instances
    from irs_torch.inference.learned import solve_learned
    from irs_torch.learn.checkpoint import load_model
    from irs_torch.solvers import solve

    suite = suite_instances({"M": 16, "N_h": 4, "N_v": 4, "L": 2})
    net = load_model(a.checkpoint)
    solve_learned(suite[0]["scenario"], net=net, fo_steps=10)  # warm-up: first calls pay one-off costs
    rows = []
    for inst in suite[::a.every]:
        s, ref = inst["scenario"], inst["ref_max_crb"]
        t = time.perf_counter()
        r = solve_learned(s, net=net)
        tl = time.perf_counter() - t
        t = time.perf_counter()
        d = solve(s, method="ao")
        td = time.perf_counter() - t
        rows.append({"id": inst["id"], "learned_ratio": r.max_crb / ref, "learned_s": tl,
                     "default_ratio": d.max_crb / ref, "default_s": td, "status": r.status})
        print(json.dumps(rows[-1]), flush=True)
    med = statistics.median
    print(f"learned: median {med(r['learned_ratio'] for r in rows):.4f}x best-known, time "
          f"{med(r['learned_s'] / r['default_s'] for r in rows):.3f}x the default's (median); default: median "
          f"{med(r['default_ratio'] for r in rows):.4f}x")
    if a.out:
        from irs_torch.outputs import atomic_write_text

        atomic_write_text(a.out, json.dumps({"checkpoint": a.checkpoint, "every": a.every, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

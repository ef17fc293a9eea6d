#!/usr/bin/env python
"""Label quality and cost of solver efforts on the quality suite's paper-size instances, side by side in one run.

    python scripts/bench_labels.py first-order portfolio default --out labels.json

For each effort and each of the 24 paper-size suite instances (M = 16, 4 x 4, L = 2): max-CRB / best-known, wall and
CPU seconds per label; prints median / p90 / max and labels per core-hour (3600 / CPU seconds per label). One thread.
The ``first-order`` effort labels all 24 in one batch, as ``dataset generate`` does (chunks of 32; ``--fo-steps K``
sets its step cap); the others solve one instance at a time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    import torch

    from irs_torch.bench.warmstart_methods import suite_instances
    from irs_torch.outputs import progress_bar
    from irs_torch.solvers import EFFORTS, SolverOptions, solve

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("efforts", nargs="+", choices=EFFORTS)
    p.add_argument("--out", default=None, help="write per-instance ratios and times as JSON here")
    p.add_argument("--fo-steps", type=int, default=None, metavar="K",
                   help="first-order: the step cap (default irs_torch.solvers.portfolio.FO_LABEL_STEPS)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    insts = suite_instances({"M": 16, "N_h": 4, "N_v": 4, "L": 2})
    rows = {}
    for eff in a.efforts:
        rat, wall, cpu = [], [], []
        if eff == "first-order":  # one batch, as `dataset generate` labels (chunks of 32); its time shared equally
            from irs_torch.scenario import Scenario
            from irs_torch.solvers import portfolio

            if a.fo_steps is not None:
                portfolio.FO_LABEL_STEPS = int(a.fo_steps)
            c0, t0 = time.process_time(), time.perf_counter()
            fo = portfolio.first_order_portfolio(Scenario.stack([i["scenario"] for i in insts]), SolverOptions(),
                                                 progress=True)
            n = len(insts)
            wall, cpu = [(time.perf_counter() - t0) / n] * n, [(time.process_time() - c0) / n] * n
            rat = [float(fo.max_crb[k]) / i["ref_max_crb"] for k, i in enumerate(insts)]
        for i in progress_bar(insts if eff != "first-order" else [], desc=f"effort {eff}", unit="instance"):
            c0, t0 = time.process_time(), time.perf_counter()
            r = solve(i["scenario"], options=SolverOptions(effort=eff))
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            rat.append(r.max_crb / i["ref_max_crb"])
        s = sorted(rat)
        med, p90 = s[len(s) // 2], s[int(0.9 * (len(s) - 1) + 0.5)]
        per = sum(cpu) / len(cpu)
        print(f"{eff}: median {med:.4f} p90 {p90:.4f} max {max(rat):.3f}; wall {sum(wall) / len(wall):.2f} s, "
              f"CPU {per:.2f} s per label: {3600 / per:.0f} labels per core-hour", flush=True)
        rows[eff] = {"ratios": rat, "wall": wall, "cpu": cpu, "ids": [i["id"] for i in insts]}
    if a.out:
        from irs_torch.outputs import atomic_write_text

        atomic_write_text(a.out, json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

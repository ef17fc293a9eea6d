#!/usr/bin/env python
"""Benchmark: K Monte Carlo trials of the paper scenario (both IRSs), echo simulation + ML
direction estimation + Stansfield localisation, timed stage by stage.

Aim: 1,000 trials in under a minute on 2 CPU cores.

    python scripts/bench_montecarlo.py                   # 1000 trials, ML, 1 thread
    python scripts/bench_montecarlo.py --trials 1000 --estimator music --threads 2 --json

Prints a table (or one JSON object) with the seconds per stage, trials per second, the settings
(seed, threads, torch version) and whether the 60 s budget was met (exit status 1 if not).
Timings on a shared machine are noisy: run it alone for a figure worth quoting.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario-seed", type=int, default=0)
    p.add_argument("--estimator", choices=["ml", "music"], default="ml")
    p.add_argument("--design", choices=["isotropic-random", "isotropic-aligned"], default="isotropic-aligned")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the work is many small matrix products, "
                        "where extra threads mostly add synchronisation; on a busy machine they hurt)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds allowed (default 60)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from irs_torch import paper_scenario
    from irs_torch.estimation.designs import make_design
    from irs_torch.estimation.echo import simulate_echoes
    from irs_torch.estimation.estimators import estimate_directions
    from irs_torch.estimation.localisation import angle_covariance_bound, stansfield
    from irs_torch.estimation.montecarlo import run_monte_carlo

    s = paper_scenario(args.scenario_seed)
    R, psi, label = make_design(s, args.design, seed=args.seed)
    # stage by stage (one chunk of all trials)
    t0 = time.perf_counter()
    ech = simulate_echoes(s, R, psi, args.trials, seed=args.seed)
    t1 = time.perf_counter()
    est = estimate_directions(s, psi, ech, args.estimator)
    t2 = time.perf_counter()
    C = angle_covariance_bound(s, R, psi)
    x = stansfield(s.irs_pos, s.irs_yaw, est["theta"], est["phi"], C[:, 0, 0], C[:, 1, 1])
    t3 = time.perf_counter()
    # the full Monte Carlo as the CLI runs it (default chunk, bounds, summary)
    res = run_monte_carlo(s, R, psi, args.trials, seed=args.seed, estimator=args.estimator, progress=False)
    t4 = time.perf_counter()
    total = t4 - t3
    rep = {
        "trials": args.trials, "estimator": args.estimator, "design": label, "seed": args.seed,
        "scenario_seed": args.scenario_seed, "threads": args.threads, "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "seconds_simulate": t1 - t0, "seconds_estimate": t2 - t1, "seconds_localise": t3 - t2,
        "seconds_run_monte_carlo": total, "trials_per_second": args.trials / total,
        "budget_s": args.budget, "within_budget": total < args.budget,
        "position_rmse": res.summary["position_rmse"], "peb": res.summary["peb"],
        "mse_over_crb_theta": res.summary["mse_over_crb_theta"], "mse_over_crb_phi": res.summary["mse_over_crb_phi"],
        "stagewise_position_rmse": float((x - s.target_pos).norm(dim=-1).pow(2).mean().sqrt()),
    }
    if args.json:
        print(json.dumps(rep))
    else:
        print(
            f"{args.trials} trials, {args.estimator}, design {label}, {args.threads} threads "
            f"(torch {torch.__version__})"
        )
        print(
            f"  simulate {rep['seconds_simulate']:.2f} s | estimate {rep['seconds_estimate']:.2f} s | "
            f"localise {rep['seconds_localise']:.3f} s"
        )
        print(
            f"  run_monte_carlo: {total:.2f} s ({rep['trials_per_second']:.0f} trials/s) -> "
            f"{'within' if rep['within_budget'] else 'OVER'} the {args.budget:g} s budget"
        )
        print(f"  position RMSE {rep['position_rmse']:.3g} m, PEB {rep['peb']:.3g} m")
    return 0 if rep["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())

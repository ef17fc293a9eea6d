"""``irs-torch demo``: the main job - the paper's scenario solved by every method, side by side."""
from __future__ import annotations

import argparse
import math
import time

from irs_torch.commands import seed_arg


def register(sub):
    p = sub.add_parser(
        "demo",
        help="main job: solve the paper's scenario with every method and compare",
        description="Solve the paper's scenario (Section V, defaults of docs/assumptions.md) with the learned "
        "warm start (if a shipped checkpoint matches), the cold exact AO and the paper's benchmarks; print "
        "per-IRS CRB, root-CRB, constraint margins and times.",
    )
    p.add_argument("--seed", type=seed_arg, default=0, help="channel seed of the paper scenario (default 0)")
    p.add_argument("--scenario", help="a scenario .npz instead of the paper preset")
    p.add_argument("--methods", nargs="+",
                   default=["ao", "learned", "transmit-only", "reflective-only", "passive"],
                   help="methods to compare (default: all available)")
    p.add_argument("--out", help="directory to write one solution .npz per method")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irs_torch.scenario import load_scenario, paper_scenario
    from irs_torch.solvers import SolverOptions, solve

    if args.out:  # before solving: never overwrite an input, fail early if the folder cannot be written
        from pathlib import Path

        from irs_torch.outputs import check_output_dir, check_output_path

        check_output_dir(args.out, {"--scenario": args.scenario}, "--out")
        for method in args.methods:
            check_output_path(Path(args.out) / f"{method}.npz", {"--scenario": args.scenario}, "--out")
    scen = load_scenario(args.scenario) if args.scenario else paper_scenario(seed=args.seed)
    print(f"scenario: {args.scenario or 'paper preset'} (seed {scen.seed}); M={scen.M}, N={scen.N_h}x{scen.N_v}, "
          f"L={scen.L}, P_t={float(scen.P_t):g} W, P_s={float(scen.P_s):g} W, a_max={float(scen.a_max):g}")
    rows = []
    for method in args.methods:
        t0 = time.perf_counter()
        if method == "learned":
            from irs_torch.inference import solve_learned

            try:
                res = solve_learned(scen, refine="ao", options=SolverOptions(seed=args.seed))
            except FileNotFoundError as e:
                print(f"learned: skipped ({e})")
                continue
        else:  # "passive": solve() makes the scenario passive (irs_torch.solvers.baselines.passive_scenario)
            res = solve(scen, method=method, options=SolverOptions(seed=args.seed))
        dt = time.perf_counter() - t0
        rows.append((method, res, dt))
        if args.out:
            from pathlib import Path

            res.to_solution().save(Path(args.out) / f"{method}.npz")
    for method, res, _ in rows:
        if method == "learned":
            t = res.times
            print(f"stages of 'learned': network {t['predict'] * 1e3:.0f} ms (max-CRB {res.init_max_crb:.3e}), "
                  f"AO refinement {t['refine']:.2f} s ({res.nit} iteration{'s' * (res.nit != 1)}), "
                  f"model {res.options.get('checkpoint')}")
    deg = 180.0 / math.pi
    print(f"\n{'method':<16} {'max-CRB':>10} " + " ".join(f"{'CRB IRS' + str(l + 1):>10}" for l in range(scen.L))
          + " " + " ".join(f"{'rCRBang' + str(l + 1) + '[deg]':>14}" for l in range(scen.L))
          + f" {'BS margin':>9} {'IRS margin':>10} {'time [s]':>8}  status")
    for method, res, dt in rows:
        crb = [float(c) for c in res.crb]
        # root of the angle CRB (theta + phi, rad^2) in degrees; tr(F^-1) also holds beta's terms
        ang = [float(a) + float(b) for a, b in zip(res.crb_theta, res.crb_phi)]
        m = res.margins
        irs_m = min(float(v) for v in m["irs"].flatten()) if "irs" in m else float("nan")
        print(f"{method:<16} {res.max_crb:>10.3e} " + " ".join(f"{c:>10.3e}" for c in crb) + " "
              + " ".join(f"{math.sqrt(a) * deg:>14.3g}" for a in ang)
              + f" {float(m['bs']):>9.2e} {irs_m:>10.2e} {dt:>8.2f}  {res.status}")
    import textwrap

    print()
    print(textwrap.fill("CRB columns: tr(F^-1) per IRS in rad^2 (max-CRB: the largest, the objective). rCRBang: "
          "sqrt(CRB_theta + CRB_phi) in degrees, the smallest RMS direction error an unbiased estimator can "
          "reach in one coherence block; hundreds of degrees (as for passive) mean the echo carries almost no "
          "direction information at these budgets. Margins: the unused share of P_t and, at the tightest IRS, "
          "of P_s (0: the budget binds); 'inf' for passive, whose IRSs have no power budget (no C1).", width=100))
    return 0

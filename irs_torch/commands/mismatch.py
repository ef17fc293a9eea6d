"""``irs-torch mismatch``: the CRB of a design made for an assumed target position, at the true one."""
from __future__ import annotations

import argparse

from irs_torch.commands import seed_arg
from irs_torch.limits import MAX_GRID


def register(sub):
    p = sub.add_parser(
        "mismatch", help="CRB of a design when the target is not where it was assumed (heatmap + JSON)",
        description="Design for the scenario's target position (the exact solver, or --solution), then "
                    "evaluate the per-IRS CRB at true positions assumed + (dx, dy) on a grid of position "
                    "errors in the horizontal plane (the BS and IRSs are static: only the IRS-target "
                    "angles and beta change, G stays). Writes OUT/mismatch.png (log-scale heatmap) and "
                    "OUT/mismatch.json (strict JSON: map, summary, seed, config, version).")
    p.add_argument("--scenario", required=True, help="scenario .npz (with geometry)")
    p.add_argument("--solution", help="the design (.npz solution) to evaluate; default: solve at the assumed position")
    p.add_argument("--extent", type=float, nargs="+", default=[4.0], metavar="M",
                   help="half-width of the error grid in m: one value, or two (x y) (default 4)")
    p.add_argument("--grid", type=int, nargs="+", default=[41], metavar="N",
                   help="grid points per axis: one value, or two (x y) (default 41; odd contains zero error)")
    p.add_argument("--per-irs", action="store_true", help="one heatmap panel per IRS (default: the max over IRSs)")
    p.add_argument("--effort", choices=["fast", "default", "thorough", "legacy"], default="default",
                   help="solver effort of the design (default 'default')")
    p.add_argument("--seed", type=seed_arg, default=0, help="solver seed (default 0)")
    p.add_argument("--out", default="mismatch-out", help="output directory (default mismatch-out)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def _pair(name, v):
    if len(v) not in (1, 2):
        raise ValueError(f"{name} takes one or two values, got {len(v)}")
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def run(args: argparse.Namespace) -> int:
    from irs_torch.design.mismatch import run_mismatch
    from irs_torch.outputs import dumps
    from irs_torch.scenario import Solution, load_scenario
    from irs_torch.solvers import SolverOptions

    extent, n = _pair("--extent", args.extent), _pair("--grid", args.grid)
    for v in n:  # bounded before any solve: the map costs one CRB evaluation per grid point
        if v > MAX_GRID:
            raise ValueError(f"--grid must be at most {MAX_GRID} points per axis, got {v}")
    s = load_scenario(args.scenario)
    if s.batch_shape:
        raise ValueError(f"{args.scenario}: batched scenario files are not supported by 'mismatch'")
    sol = Solution.load(args.solution) if args.solution else None
    rep = run_mismatch(s, out_dir=args.out, solution=sol, options=SolverOptions(seed=args.seed, effort=args.effort),
                       extent=extent, n=n, per_irs=args.per_irs,
                       inputs={"--scenario": args.scenario, "--solution": args.solution},
                       config={"scenario_file": str(args.scenario), "solution_file": args.solution})
    summ = {"summary": rep["summary"], "files": rep["files"], "seed": rep["seed"], "design": rep["design"]}
    if args.json:
        print(dumps(summ))
        return 0
    sm = rep["summary"]
    print(f"design max-CRB at the assumed position: {sm['point_max_crb']:.4e} rad^2")
    for r, v in sm["worst_max_crb_within_radius_m"].items():
        print(f"  worst max-CRB within {r} m of it: {v:.4e} rad^2 ({v / sm['point_max_crb']:.2f}x)")
    print(f"wrote {', '.join(rep['files'])}")
    return 0

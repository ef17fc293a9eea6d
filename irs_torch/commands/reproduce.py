"""``irs-torch reproduce fig2|fig3|fig4|all``: the paper's figures as CSV + PNG."""
from __future__ import annotations

import argparse


def register(sub):
    p = sub.add_parser(
        "reproduce", help="reproduce the paper's Fig. 2, 3, 4 (CSV + PNG; parallel, resumable)",
        description="Sweep the paper's figures over channel realisations. Each solved point is saved at "
                    "once under OUT/<fig>/points/, so an interrupted run resumes where it stopped. "
                    "Default: a quick grid with 3 realisations (minutes); --full: the paper-quality run.")
    p.add_argument("figure", choices=["fig2", "fig3", "fig4", "all"])
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--full", action="store_true", help="paper-quality grid and 20 realisations")
    p.add_argument("--realisations", type=int, help="channel realisations per point (overrides the default)")
    p.add_argument("--grid", type=float, nargs="+", help="values of the swept parameter (overrides the default)")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="first channel seed (default 0)")
    p.add_argument("--max-iter", type=int, help="AO iteration cap (solver option)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a scenario field of every point, e.g. --set N_h=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irs_torch.reproduce import FIGURES, check_claims, run_figure

    figs = FIGURES if args.figure == "all" else (args.figure,)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    overrides = {}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if k not in ("M", "N_h", "N_v", "P_t", "P_s", "a_max", "sigma_r2", "sigma_b2", "T_c", "K_db"):
            raise ValueError(f"--set: unknown or unsupported field {k!r}")
        overrides[k] = int(v) if k in ("M", "N_h", "N_v") else float(v)
    opts = {}
    if args.max_iter is not None:
        opts["max_iter"] = args.max_iter
    for fig in figs:
        res = run_figure(fig, args.out, full=args.full, realisations=args.realisations, grid=args.grid,
                         workers=args.workers, seed0=args.seed, solver_options=opts or None,
                         overrides=overrides or None, progress=not args.no_progress)
        print(f"{fig}: {res['computed']} solved, {res['reused']} reused -> {res['csv']}, {res['png']}")
        xs = sorted({r["x"] for r in res["rows"]})
        curves = sorted({r["curve"] for r in res["rows"]})
        name = res["rows"][0]["x_name"] if res["rows"] else "x"
        print(f"  {'curve':<32}" + "".join(f"{name}={x:<9g}" for x in xs))
        for c in curves:
            vals = {r["x"]: r["mean_max_crb"] for r in res["rows"] if r["curve"] == c}
            print(f"  {c:<32}" + "".join(f"{vals.get(x, float('nan')):<{len(name) + 10}.3e}" for x in xs))
        for c in check_claims(fig, res["rows"]):
            print(f"  claim: {c['claim']:<45} {'HOLDS' if c['holds'] else 'DOES NOT HOLD'}  ({c['evidence']})")
        failed = sum(r["failed"] for r in res["rows"])
        if failed:
            print(f"  WARNING: {failed} solves failed (see the 'status' field in {args.out}/{fig}/points/*.json)")
    return 0

"""``irs-torch reproduce fig2|fig3|fig4|all``: the paper's figures as CSV + PNG.

By default the files go to ``./irs-torch-results/`` (git-ignored), never over the committed figures
in ``results/``: a quick run must not replace the full run a reader sees. ``--out DIR`` names another
folder; ``--refresh-results`` writes to ``results/`` on purpose (to update the committed figures).
"""
from __future__ import annotations

import argparse
import json

from irs_torch.commands import seed_arg

DEFAULT_OUT = "irs-torch-results"  # listed in .gitignore
COMMITTED_OUT = "results"


def register(sub):
    p = sub.add_parser(
        "reproduce", help="reproduce the paper's Fig. 2, 3, 4 (CSV + PNG; parallel, resumable)",
        description="Sweep the paper's figures over channel realisations. The proposed curves of Figs. 2 "
                    "and 3 are solved as one monotone sweep per channel draw (every point cold and from its "
                    "neighbours' designs, keeping the best: non-increasing in every budget); other curves "
                    "point by point. Each finished task is appended at once to OUT/<fig>/points.jsonl, so an "
                    "interrupted run resumes where it stopped. "
                    "Default: a quick grid with 3 realisations (minutes); --full: the paper-quality run. "
                    f"Files go to ./{DEFAULT_OUT}/ unless --out names a folder; the committed figures in "
                    f"{COMMITTED_OUT}/ are only written with --refresh-results.")
    p.add_argument("figure", choices=["fig2", "fig3", "fig4", "all"])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", help=f"output directory (default: ./{DEFAULT_OUT}, git-ignored; resumable)")
    where.add_argument("--refresh-results", action="store_true",
                       help=f"write to {COMMITTED_OUT}/, the committed figures (resumes from their stored points)")
    p.add_argument("--full", action="store_true", help="paper-quality grid and 20 realisations")
    p.add_argument("--realisations", type=int, help="channel realisations per point (overrides the default)")
    p.add_argument("--grid", type=float, nargs="+", help="values of the swept parameter (overrides the default)")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--seed", type=seed_arg, default=0, help="first channel seed (default 0)")
    p.add_argument("--max-iter", type=int, help="AO iteration cap (solver option)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a scenario field of every point, e.g. --set N_h=2 (repeatable)")
    p.add_argument("--solver-set", dest="solver_set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a SolverOptions field for every solve, e.g. --solver-set n_starts=2 (repeatable; "
                        "VALUE parsed as JSON, else taken as a string)")
    p.add_argument("--cold", action="store_true",
                   help="proposed curves point by point from the cold start (no monotone sweep)")
    p.add_argument("--collect-only", action="store_true",
                   help="solve nothing: write the CSV/PNG from the finished tasks in OUT/<fig>/points.jsonl")
    p.add_argument("--migrate", action="store_true",
                   help="one-off: move the earlier per-task files OUT/<fig>/points/*.json into "
                        "OUT/<fig>/points.jsonl (verified, then the files are deleted) and exit")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irs_torch.figures.claims import check_claims
    from irs_torch.figures.reproduce import run_figure
    from irs_torch.figures.storage import migrate_points
    from irs_torch.figures.sweeps import FIGURES

    figs = FIGURES if args.figure == "all" else (args.figure,)
    args.out = COMMITTED_OUT if args.refresh_results else (args.out or DEFAULT_OUT)
    from irs_torch.outputs import check_output_dir

    check_output_dir(args.out, None, "--out")  # before any solve
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    overrides = {}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if k not in ("M", "N_h", "N_v", "P_t", "P_s", "a_max", "sigma_r2", "sigma_b2", "T_c", "K_db"):
            raise ValueError(f"--set: unknown or unsupported field {k!r}")
        try:
            overrides[k] = int(v) if k in ("M", "N_h", "N_v") else float(v)
        except ValueError:
            raise ValueError(f"--set {k}: expected {'an integer' if k in ('M', 'N_h', 'N_v') else 'a number'}, "
                             f"got {v!r}") from None
    opts = {}
    for item in args.solver_set:
        if "=" not in item:
            raise ValueError(f"--solver-set takes FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            opts[k] = json.loads(v)
        except json.JSONDecodeError:
            opts[k] = v
    if args.max_iter is not None:
        opts["max_iter"] = args.max_iter
    if opts:
        from irs_torch.solvers import SolverOptions

        try:
            SolverOptions(**opts)
        except TypeError as e:  # an unknown field name
            raise ValueError(f"--solver-set: {e}") from None
    if args.migrate:
        for fig in figs:
            m = migrate_points(args.out, fig, remove=True)
            print(f"{fig}: {m['files']} point files, {m['appended']} appended to {m['store']}, "
                  f"{m['verified']} verified, {m['removed']} removed")
        return 0
    for fig in figs:
        res = run_figure(fig, args.out, full=args.full, realisations=args.realisations, grid=args.grid,
                         workers=args.workers, seed0=args.seed, solver_options=opts or None,
                         overrides=overrides or None, progress=not args.no_progress, monotone=not args.cold,
                         compute=not args.collect_only)
        print(f"{fig}: {res['computed']} solved, {res['reused']} reused, {res['missing']} missing -> {res['csv']}, "
              f"{res['png']}")
        if res["sweeps"]:
            sw = res["sweeps"]
            n_pts = sum(len(s["points"]) for s in sw)
            better = sum(p["max_crb"] < p["cold_max_crb"] * (1 - 1e-6) for s in sw for p in s["points"])
            print(f"  monotone sweep: {sum(s['monotone'] for s in sw)} of {len(sw)} channel draws non-increasing in "
                  f"every budget; {better} of {n_pts} points below their cold start; mean "
                  f"{sum(s['time'] for s in sw) / len(sw):.0f} s per draw -> {res['sweep_csv']}")
        if not res["rows"]:
            print(f"  no finished points in {args.out}/{fig}/points.jsonl yet: nothing to tabulate or check")
            continue
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
            print(f"  WARNING: {failed} solve{'s' * (failed != 1)} failed (see the 'status' field in "
                  f"{args.out}/{fig}/points.jsonl)")
    return 0

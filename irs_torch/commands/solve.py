"""``irs-torch solve``: the exact solver (AO of P2 and P3) and the paper's benchmarks."""
from __future__ import annotations

import argparse
import math
import sys

from irs_torch.commands import seed_arg


def register(sub):
    p = sub.add_parser(
        "solve", help="optimise R_s and psi for a scenario (AO, or a benchmark)",
        description="Minimise the max-CRB of a scenario (paper Section IV). Methods: ao (alternating "
                    "P2 transmit SDP and P3 reflective design), transmit-only (random IRS phases + P2), "
                    "reflective-only (R_s = P_t/M I + P3), passive (|psi_n| = 1, sigma_r = 0, no C1; "
                    "--fair gives the BS P_t + P_s). The output .npz is a Solution file (R_s, psi, per-IRS "
                    "crb by the torch model, history, settings, seed).")
    p.add_argument("--scenario", required=True,
                   help="scenario .npz (irs-torch scenario file), a batched one (irs-torch scenario --count K: "
                        "every item is solved, one solutions file) or a directory of scenario .npz files")
    p.add_argument("--index", type=int, default=None, help="only this item of a batched scenario file")
    p.add_argument("--method", choices=["ao", "transmit-only", "reflective-only", "passive", "learned"], default="ao",
                   help="ao (cold exact solve, default), a benchmark, or learned (network warm start, then "
                        "--refine)")
    p.add_argument("--checkpoint", help="learned: model file (default: the shipped one for these array sizes)")
    p.add_argument("--refine", choices=["ao", "none"], default="ao",
                   help="learned: refine the network's design with the AO (default) or not")
    p.add_argument("--refine-iter", type=int, default=None,
                   help="learned: AO iterations of the refinement (default 3; capped by --max-iter)")
    p.add_argument("--hypotheses", type=int, default=None, metavar="K",
                   help="learned with --refine ao: refine the network's K best designs and keep the best "
                        "(default 1; at most the model's hypotheses + 1, 17 for the shipped models)")
    p.add_argument("--p3", choices=["first-order", "sca-sdr"], default=None,
                   help="reflective step (default: first-order, the lower max-CRB in our measurements)")
    p.add_argument("--init", default="random",
                   help="starting point: 'random' (seeded phases), 'aligned' (co-phased echo), or a solution "
                        ".npz used as warm start (append ':psi' or ':R_s' to use only that part)")
    p.add_argument("--max-iter", type=int, default=None, help="AO iteration cap (default 20)")
    p.add_argument("--rtol", type=float, default=None, help="AO stop: relative improvement (default 1e-3)")
    p.add_argument("--p2-solver", choices=["CLARABEL", "SCS", "clarabel", "scs"], default=None,
                   help="conic solver of the SDPs (default CLARABEL)")
    p.add_argument("--effort", choices=["fast", "default", "thorough", "legacy"], default=None,
                   help="ao with --init random: how hard to search (default: 'default', a batched joint first-order "
                        "screen of 8 diverse starts then the AO; 'fast'; 'thorough', the best-known search, minutes; "
                        "'legacy', one random start as before issue #13). See README 'Solution quality'")
    p.add_argument("--n-starts", type=int, default=None, help="AO starts for --init random (default 1)")
    p.add_argument("--n-randomizations", type=int, default=None, help="Gaussian randomisations (sca-sdr)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of all randomness (default 0)")
    p.add_argument("--fair", action="store_true", help="passive: power-fair comparison (BS gets P_t + P_s)")
    p.add_argument("-o", "--output", help="write the Solution .npz here")
    p.add_argument("--json", action="store_true", help="print one JSON summary instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_region_args(p)
    p.set_defaults(func=run)


def _check_flags(args):
    """Refuse flags that would be silently ignored, name the flag in range errors, then fill defaults."""
    from irs_torch.errors import InputError

    learned_refine = args.method == "learned" and args.refine == "ao"
    for flag, value in (("--refine-iter", args.refine_iter), ("--hypotheses", args.hypotheses)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
        if value is not None and not learned_refine:
            raise InputError(f"{flag} {value} applies to --method learned with --refine ao only (got --method "
                             f"{args.method}" + (f", --refine {args.refine})" if args.method == "learned" else ")"))
    if args.region is None:
        for flag, value in (("--region-points", args.region_points), ("--robust-objective", args.robust_objective)):
            if value is not None:
                raise InputError(f"{flag} {value} applies to a robust design only: give --region too")
    elif args.region_points is not None and args.region_points < 1:
        raise InputError(f"--region-points must be >= 1, got {args.region_points}")
    args.refine_iter = 3 if args.refine_iter is None else args.refine_iter
    args.hypotheses = 1 if args.hypotheses is None else args.hypotheses
    args.region_points = 9 if args.region_points is None else args.region_points
    args.robust_objective = args.robust_objective or "worst"


def _init(spec: str, scenario):
    if spec in ("random", "aligned"):
        return {"kind": spec}
    from irs_torch.scenario import Solution

    path, _, part = spec.partition(":") if spec.endswith((":psi", ":R_s")) else (spec, "", "")
    sol = Solution.load(path)
    sol.check_compatible(scenario, source=path)
    init = {}
    if part in ("", "R_s"):
        init["R_s"] = sol.R_s
    if part in ("", "psi"):
        init["psi"] = sol.psi
    return init


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from irs_torch.outputs import check_output_path, dumps, npz_path
    from irs_torch.scenario import Scenario

    if args.output:  # before the solve: never overwrite an input, fail early if it cannot be written
        init_file = None if args.init in ("random", "aligned") else \
            args.init.removesuffix(":psi").removesuffix(":R_s")
        check_output_path(npz_path(args.output), {"--scenario": args.scenario, "--init": init_file,
                                                  "--checkpoint": args.checkpoint}, "-o/--output")
    _check_flags(args)
    if Path(args.scenario).is_dir():
        return _solve_many(args)  # batch inference (issue #14)
    s = Scenario.load(args.scenario)
    if s.batch_shape:
        if args.index is None:
            return _solve_many(args, s)
        n = int(s.batch_shape[0])
        if not -n <= args.index < n:
            raise ValueError(f"--index must be in [0, {n}), got {args.index}")
        s = s[args.index]
    elif args.index not in (None, 0):
        raise ValueError(f"--index {args.index} given but {args.scenario} is not batched")
    opts = _options(args)
    if getattr(args, "region", None):  # robust design over a region (issue #17): _solve_region
        res = _solve_region(args, s, opts)
    elif args.method == "learned":
        from irs_torch.runtime import solve_learned

        if args.init != "random":
            raise ValueError(f"--init {args.init!r} is not used with --method learned (the network gives the start)")
        res = solve_learned(s, checkpoint=args.checkpoint, refine=args.refine, options=opts,
                            refine_iter=args.refine_iter, hypotheses=args.hypotheses)
    else:
        from irs_torch.solvers import solve

        if args.checkpoint:
            raise ValueError("--checkpoint is only used with --method learned")
        init = _init(args.init, s)
        if init == {"kind": "random"}:  # the default start: let the effort level choose the starts
            init = None
        res = solve(s, args.method, init=init, options=opts, progress=not args.no_progress and not args.json)
    sol = res.to_solution(s)
    sol.metadata["scenario_file"] = str(args.scenario)
    out = str(sol.save(args.output)) if args.output else None
    deg = 180.0 / math.pi
    th, ph = res.crb_theta.tolist(), res.crb_phi.tolist()
    if args.json:
        print(dumps({"method": res.options.get("method", args.method) if getattr(args, "region", None) else args.method,
                     "robust": res.options.get("robust") if getattr(args, "region", None) else None,
                     "max_crb": res.max_crb, "crb": res.crb.tolist(), "crb_theta": th,
                          "crb_phi": ph, "init_max_crb": res.init_max_crb, "status": res.status,
                          "success": res.success, "nit": res.nit, "effort": res.options.get("effort"),
                          "found_by": res.options.get("found_by"), "times": res.times, "seed": args.seed,
                          "output": out, "message": res.message, "failures": res.failures}))
        return 0 if res.success else 1
    p3 = opts.p3 if args.method in ("ao", "reflective-only", "passive") else "-"
    robust = res.options.get("robust") if getattr(args, "region", None) else None
    method = (f"robust-{args.robust_objective} over {args.region_points} points of {args.region}" if robust
              else args.method)
    print(f"method: {method}   p3: {p3}   P2 solver: {opts.p2_solver}   seed: {args.seed}   "
          f"status: {res.status} ({res.nit} it)   success: {'yes' if res.success else 'NO'}   "
          f"feasible: {'NO' if res.status == 'infeasible' else 'yes'}")
    if robust:
        what = {"worst": "the worst case over the region points", "average": "the region average",
                "bayesian": "the posterior (Bayesian) CRB"}[args.robust_objective]
        print(f"robust: the CRB columns and max-CRB below are {what}; at the region's centre the design's "
              f"max-CRB is {robust['centre_max_crb']:.4e} rad^2")
    print(f"{'IRS':>3} {'CRB tr(F^-1)':>13} {'initial':>11} {'rCRB th[deg]':>12} {'rCRB ph[deg]':>12} "
          f"{'IRS power/P_s':>13} {'max|psi|':>9}")
    irs = (1.0 - res.margins["irs"]).tolist()
    amax = res.psi.abs().amax(-1).tolist()
    for l in range(s.L):
        print(f"{l + 1:>3} {res.crb[l].item():>13.4e} {res.init_crb[l].item():>11.4e} {math.sqrt(th[l]) * deg:>12.4g} "
              f"{math.sqrt(ph[l]) * deg:>12.4g} {irs[l] if math.isfinite(irs[l]) else float('nan'):>13.4f} "
              f"{amax[l]:>9.4g}")
    if args.method == "learned":
        t = res.times
        print(f"learned: checkpoint {res.options.get('checkpoint')}; load {t['load']:.3f} s, "
              f"network {t['predict'] * 1e3:.1f} ms, "
              f"refine ({args.refine}) {t['refine']:.2f} s; network alone max-CRB {res.init_max_crb:.4e}")
    print(f"max-CRB: {res.max_crb:.4e} rad^2 (from {res.init_max_crb:.4e})   BS power: "
          f"{(1 - float(res.margins['bs'])) * 100:.2f}% of P_t   time: {res.times['total']:.2f} s "
          f"(P2 {res.times.get('p2', 0):.2f} s, P3 {res.times.get('p3', 0):.2f} s)")
    if res.message:
        print(res.message)  # "FAILED: ..." / "warning: ..." (solver failures) and notes
    if out:
        print(f"wrote {out}")
    if not res.success:
        print(f"irs-torch solve: FAILED: not a solution (status {res.status}); "
              f"{res.message or 'the returned point is infeasible'}", file=sys.stderr)
    return 0 if res.success else 1


# ----------------------------------------------------------------------------- robust design (issue #17)
def _add_region_args(p):
    """``--region``, ``--region-points``, ``--robust-objective`` (robust design, irs_torch.robust)."""
    p.add_argument("--region", default=None,
                   help="robust design over a region around the scenario's target instead of the point: "
                        "box:D or box:DX,DY (half-widths, m) or ellipse:SXX,SXY,SYY[,K] (x-y covariance m^2, "
                        "K-sigma ellipse, default K=2); minimises the worst case over --region-points positions")
    p.add_argument("--region-points", type=int, default=None, metavar="K",
                   help="--region: candidate positions (default 9: the centre and 8 on the boundary)")
    p.add_argument("--robust-objective", choices=["worst", "average", "bayesian"], default=None,
                   help="--region: worst-case max-CRB (default), the region-averaged CRB, or the posterior "
                        "(Bayesian) CRB with the region's prior")


def _solve_region(args, scenario, opts):
    """The robust solve of ``solve --region`` (method ao only)."""
    from irs_torch.robust import parse_region_spec, solve_robust

    if args.method != "ao":
        raise ValueError(f"--region works with --method ao only, got --method {args.method}")
    if args.init not in ("random",):
        raise ValueError("--region starts from the point design at the region's centre; --init is not used")
    if scenario.target_pos is None:
        raise ValueError(f"{args.scenario}: --region needs a scenario with its geometry (target_pos)")
    region = parse_region_spec(args.region, scenario.target_pos.tolist())
    return solve_robust(scenario, region, K=args.region_points, objective=args.robust_objective, options=opts)


# ----------------------------------------------------------------------------- batch inference (issue #14)
def _options(args):
    from irs_torch.solvers import SolverOptions

    kw = {"seed": args.seed, "passive_fair": args.fair}
    for name in ("max_iter", "rtol", "n_starts", "n_randomizations", "p3", "effort"):
        v = getattr(args, name)
        if v is not None:
            kw[name] = v
    if args.p2_solver:
        kw["p2_solver"] = args.p2_solver.upper()
    return SolverOptions(**kw)


def _solve_many(args, scenarios=None) -> int:
    """``solve`` of a batched scenario file or a directory of scenario files: every item, one solutions
    file (:func:`irs_torch.runtime.solve_batch`)."""
    import statistics

    from irs_torch.outputs import check_output_path, dumps, npz_path
    from irs_torch.runtime import load_scenarios, solve_batch

    if getattr(args, "region", None):
        raise ValueError("--region solves one scenario; choose an item of the batch with --index")
    if args.index is not None:
        raise ValueError(f"--index is for a batched scenario file, not a directory ({args.scenario})")
    if args.init not in ("random",):
        raise ValueError(f"--init {args.init!r} is not supported for a batch of scenarios (use --index)")
    if args.output:
        check_output_path(npz_path(args.output), {"--scenario": args.scenario, "--checkpoint": args.checkpoint},
                          "-o/--output")
    if args.method != "learned" and args.checkpoint:
        raise ValueError("--checkpoint is only used with --method learned")
    if scenarios is not None:
        if len(scenarios.batch_shape) != 1:
            raise ValueError(f"{args.scenario}: batch shape must be one-dimensional, "
                             f"got {tuple(scenarios.batch_shape)}")
        sources = [f"{args.scenario}[{i}]" for i in range(int(scenarios.batch_shape[0]))]
    else:
        scenarios, sources = load_scenarios(args.scenario)
    res = solve_batch(scenarios, args.method, checkpoint=args.checkpoint, refine=args.refine, options=_options(args),
                      refine_iter=args.refine_iter, hypotheses=args.hypotheses,
                      progress=not (args.no_progress or args.json))
    B = len(sources)
    out = None
    if args.output:
        sol = res.to_solution(sources)
        sol.metadata["scenario_file"] = str(args.scenario)
        out = str(sol.save(args.output))
    n_ok = int(res.success.sum())
    mx = [float(x) for x in res.max_crb]
    if args.json:
        print(dumps({"method": args.method, "count": B, "success": n_ok, "max_crb": mx, "status": res.status,
                     "times": res.times, "seed": args.seed, "output": out, "options": res.options}))
    else:
        t = res.times
        per = t["total"] / B
        print(f"method: {args.method}{' (refine ' + args.refine + ')' if args.method == 'learned' else ''}   "
              f"scenarios: {B}   solved (feasible): {n_ok}/{B}   seed: {args.seed}")
        print(f"max-CRB: median {statistics.median(mx):.4e}, min {min(mx):.4e}, max {max(mx):.4e} rad^2")
        print("time: " + ", ".join(f"{k} {v:.3f} s" for k, v in t.items()) + f"   ({per * 1e3:.3f} ms per scenario)")
        if out:
            print(f"wrote {out}")
    if n_ok < B:
        bad = [i for i in range(B) if not bool(res.success[i])]
        print(f"irs-torch solve: FAILED: {B - n_ok} of {B} scenarios have no solution (e.g. {sources[bad[0]]}: "
              f"status {res.status[bad[0]]})", file=sys.stderr)
        return 1
    return 0

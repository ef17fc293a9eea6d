"""``irs-torch solve``: the exact solver (AO of P2 and P3) and the paper's benchmarks."""
from __future__ import annotations

import argparse
import math
import sys

from irs_torch.commands import positive_int_arg, seed_arg
from irs_torch.limits import MAX_STARTS


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
    p.add_argument("--refine", choices=["fo", "ao", "none"], default="fo",
                   help="learned: 'fo' (default): the network's designs refined together by the batched first-order "
                        "method, then one P2 (transmit SDP) solve per scenario; 'ao': a few AO iterations per "
                        "scenario; 'none': the network's design alone")
    p.add_argument("--refine-iter", type=int, default=None,
                   help="learned with --refine ao: AO iterations of the refinement (default 3; capped by --max-iter)")
    p.add_argument("--hypotheses", type=int, default=None, metavar="K",
                   help="learned with --refine fo or ao: refine the network's K best designs and keep the best "
                        "(default 4 with fo, 1 with ao; at most the model's hypotheses + 1)")
    p.add_argument("--fo-steps", type=positive_int_arg("--fo-steps", 100000), default=None,
                   help="learned with --refine fo: at most this many first-order steps (default 400; each "
                        "scenario stops earlier once its iterates gain < 0.1%% in 25 steps)")
    p.add_argument("--extra-starts", type=int, default=None, metavar="K",
                   help="learned with --refine fo: also refine K diverse heuristic starts per scenario, half of them "
                        "also from a relaxed IRS budget (default 0; 4 cut the tail on held-out draws, docs/learned.md)")
    p.add_argument("--no-polish", action="store_true",
                   help="learned with --refine fo: skip the P2 solve of the best point (faster; R_s then not "
                        "certified optimal for psi)")
    p.add_argument("--device", default=None,
                   help="learned with --refine fo: where the first-order refinement runs, e.g. 'cuda' (default: CPU)")
    p.add_argument("--p3", choices=["first-order", "sca-sdr"], default=None,
                   help="reflective step (default: first-order, the lower max-CRB in our measurements)")
    p.add_argument("--init", default="random",
                   help="starting point: 'random' (seeded phases), 'aligned' (co-phased echo), or a solution "
                        ".npz used as warm start (append ':psi' or ':R_s' to use only that part)")
    p.add_argument("--max-iter", type=int, default=None, help="AO iteration cap (default 20)")
    p.add_argument("--rtol", type=float, default=None, help="AO stop: relative improvement (default 1e-3)")
    p.add_argument("--p2-solver", choices=["CLARABEL", "SCS", "clarabel", "scs"], default=None,
                   help="conic solver of the SDPs (default CLARABEL)")
    p.add_argument("--effort", choices=["fast", "default", "thorough", "legacy", "portfolio", "first-order"],
                   default=None,
                   help="ao with --init random: how hard to search (default: 'default', a batched joint first-order "
                        "screen of 8 diverse starts then the AO; 'fast'; 'thorough', the best-known search, minutes; "
                        "'legacy', the AO from one random start; 'portfolio', 12 starts refined together then one AO "
                        "iteration; 'first-order', 8 starts refined together then one transmit SDP, no AO: the "
                        "data-set labeller, fastest per instance in batches). See docs/solver.md")
    p.add_argument("--n-starts", type=positive_int_arg("--n-starts", MAX_STARTS), default=None,
                   help=f"AO starts for --init random (default 1, at most {MAX_STARTS})")
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
    from irs_torch.inference.refine import FO_STEPS

    if args.output is not None and not str(args.output).strip():
        raise InputError(f"-o/--output must be a path, got {args.output!r}")
    if args.fair and args.method != "passive":
        raise InputError(f"--fair applies to --method passive only (a power-fair passive IRS), got --method "
                         f"{args.method}")
    if args.effort is not None and (args.method != "ao" or args.init != "random"):
        raise InputError(f"--effort {args.effort} applies to --method ao with --init random (the effort chooses the "
                         f"starts), got --method {args.method} --init {args.init}")
    learned_refine = args.method == "learned" and args.refine in ("ao", "fo")
    for flag, value in (("--refine-iter", args.refine_iter), ("--hypotheses", args.hypotheses)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
        ok = learned_refine and (flag != "--refine-iter" or args.refine == "ao")
        if value is not None and not ok:
            which = "--refine ao" if flag == "--refine-iter" else "--refine fo or ao"
            raise InputError(f"{flag} {value} applies to --method learned with {which} only (got --method "
                             f"{args.method}" + (f", --refine {args.refine})" if args.method == "learned" else ")"))
    fo = args.method == "learned" and args.refine == "fo"
    for flag, value in (("--fo-steps", args.fo_steps), ("--extra-starts", args.extra_starts),
                        ("--no-polish", args.no_polish or None), ("--device", args.device)):
        if value is not None and not fo:
            raise InputError(f"{flag} applies to --method learned with --refine fo only (got --method {args.method}"
                             + (f", --refine {args.refine})" if args.method == "learned" else ")"))
    if args.extra_starts is not None and not 0 <= args.extra_starts <= 64:
        raise InputError(f"--extra-starts must be in [0, 64], got {args.extra_starts}")
    if args.device is not None:
        import torch

        try:
            dev = torch.device(args.device)
        except RuntimeError as e:
            raise InputError(f"--device: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {args.device}: no CUDA device is available on this machine")
    args.fo_steps = FO_STEPS if args.fo_steps is None else args.fo_steps
    args.extra_starts = 0 if args.extra_starts is None else args.extra_starts
    if args.region is None:
        for flag, value in (("--region-points", args.region_points), ("--robust-objective", args.robust_objective)):
            if value is not None:
                raise InputError(f"{flag} {value} applies to a robust design only: give --region too")
    elif args.region_points is not None and args.region_points < 1:
        raise InputError(f"--region-points must be >= 1, got {args.region_points}")
    args.refine_iter = 3 if args.refine_iter is None else args.refine_iter
    args.hypotheses = (4 if args.refine == "fo" else 1) if args.hypotheses is None else args.hypotheses
    args.region_points = 9 if args.region_points is None else args.region_points
    args.robust_objective = args.robust_objective or "worst"


def _init(spec: str, scenario):
    if spec in ("random", "aligned"):
        return {"kind": spec}
    from irs_torch.scenario import Solution

    path, _, part = spec.partition(":") if spec.endswith((":psi", ":R_s")) else (spec, "", "")
    from pathlib import Path

    if not Path(path).exists():
        raise FileNotFoundError(f"--init {spec}: neither 'random', 'aligned' nor an existing solution file")
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
    from irs_torch.scenario import load_scenario

    _check_flags(args)
    if args.output:  # before the solve: never overwrite an input, fail early if it cannot be written
        init_file = None if args.init in ("random", "aligned") else \
            args.init.removesuffix(":psi").removesuffix(":R_s")
        check_output_path(npz_path(args.output), {"--scenario": args.scenario, "--init": init_file,
                                                  "--checkpoint": args.checkpoint}, "-o/--output")
    if Path(args.scenario).is_dir():
        return _solve_many(args)  # a folder of scenarios: batch inference
    s = load_scenario(args.scenario)
    item = None  # the item of a batched scenario file
    if s.batch_shape:
        if args.index is None:
            return _solve_many(args, s)
        n = int(s.batch_shape[0])
        if not -n <= args.index < n:
            raise ValueError(f"--index must be in [0, {n}), got {args.index}")
        s = s[args.index]
        item = args.index % n
    elif args.index not in (None, 0):
        raise ValueError(f"--index {args.index} given but {args.scenario} is not batched")
    opts = _options(args)
    if getattr(args, "region", None):  # robust design over a region: _solve_region
        res = _solve_region(args, s, opts)
    elif args.method == "learned":
        from irs_torch.inference import solve_learned

        if args.init != "random":
            raise ValueError(f"--init {args.init!r} is not used with --method learned (the network gives the start)")
        res = solve_learned(s, checkpoint=args.checkpoint, refine=args.refine, options=opts,
                            refine_iter=args.refine_iter, hypotheses=args.hypotheses, fo_steps=args.fo_steps,
                            polish=not args.no_polish, extra_starts=args.extra_starts, device=args.device)
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
    if item is not None:  # the item of a batched file it was made for (crb --index checks it)
        sol.metadata["scenario_index"] = item
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
    effort = res.options.get("effort") if args.method != "learned" else None
    print(f"method: {method}{'   effort: ' + effort if effort else ''}   p3: {p3}   P2 solver: {opts.p2_solver}   "
          f"seed: {args.seed}   "
          f"status: {res.status} ({res.nit} it)   success: {'yes' if res.success else 'NO'}   "
          f"feasible: {'NO' if res.status == 'infeasible' else 'yes'}")
    if robust:
        what = {"worst": "the worst case over the region points", "average": "the region average",
                "bayesian": "the posterior (Bayesian) CRB"}[args.robust_objective]
        print(f"robust: the CRB columns and max-CRB below are {what}; at the region's centre the design's "
              f"max-CRB is {robust['centre_max_crb']:.4e} rad^2")
    print(f"{'IRS':>3} {'CRB tr(F^-1)':>13} {'start':>11} {'rCRB th[deg]':>12} {'rCRB ph[deg]':>12} "
          f"{'IRS power/P_s':>13} {'max|psi|':>9}")
    irs = (1.0 - res.margins["irs"]).tolist()
    amax = res.psi.abs().amax(-1).tolist()
    for l in range(s.L):
        print(f"{l + 1:>3} {res.crb[l].item():>13.4e} {res.init_crb[l].item():>11.4e} {math.sqrt(th[l]) * deg:>12.4g} "
              f"{math.sqrt(ph[l]) * deg:>12.4g} {irs[l] if math.isfinite(irs[l]) else float('nan'):>13.4f} "
              f"{amax[l]:>9.4g}")
    if args.method == "learned":
        t = res.times
        if args.refine == "fo":
            cert = res.options.get("p2_certified")
            pol = ("no P2 polish" if args.no_polish else
                   f"P2 polish: R_s {'certified optimal' if cert else 'NOT certified optimal'} for psi")
            print(f"learned: checkpoint {res.options.get('checkpoint')}; load {t['load']:.3f} s, network "
                  f"{t['predict'] * 1e3:.1f} ms, refine (fo) {t['refine']:.2f} s: {res.options.get('fo_steps')} "
                  f"first-order steps from {args.hypotheses} network design(s)"
                  f"{f' and {args.extra_starts} heuristic starts' if args.extra_starts else ''}; {pol}")
        else:
            print(f"learned: checkpoint {res.options.get('checkpoint')}; load {t['load']:.3f} s, "
                  f"network {t['predict'] * 1e3:.1f} ms, "
                  f"refine ({args.refine}) {t['refine']:.2f} s; network alone max-CRB {res.init_max_crb:.4e}")
    _explain_start(res)
    print(f"max-CRB: {res.max_crb:.4e} rad^2 (start {res.init_max_crb:.4e})   BS power: "
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


def _explain_start(res) -> None:
    """Say what the 'start' column is: the starting point's per-IRS CRB, before any optimisation."""
    init = res.options.get("init")
    if isinstance(init, dict) and init.get("kind") == "screened":
        sc = res.options.get("screen_max_crb") or []
        best = f"; the screen took it to max-CRB {min(sc):.4e} before the AO" if sc else ""
        print(f"start: the '{init.get('start')}' design, best of {len(sc) or 'the'} diverse starts of the "
              f"'{res.options.get('effort')}' effort's joint first-order screen, before screening{best}")
    elif res.options.get("refine") == "fo":
        print(f"start: the best start after refinement was '{res.options.get('found_by')}'; the 'start' column is "
              f"that design before the first-order steps")
    elif isinstance(init, dict) and init.get("kind"):
        print(f"start: the '{init['kind']}' starting point, before the solver")


# ----------------------------------------------------------------------------- robust design
def _add_region_args(p):
    """``--region``, ``--region-points``, ``--robust-objective`` (robust design, irs_torch.design.robust)."""
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
    from irs_torch.design.robust import parse_region_spec, solve_robust

    if args.method != "ao":
        raise ValueError(f"--region works with --method ao only, got --method {args.method}")
    if args.init not in ("random",):
        raise ValueError("--region starts from the point design at the region's centre; --init is not used")
    if scenario.target_pos is None:
        raise ValueError(f"{args.scenario}: --region needs a scenario with its geometry (target_pos)")
    region = parse_region_spec(args.region, scenario.target_pos.tolist())
    return solve_robust(scenario, region, K=args.region_points, objective=args.robust_objective, options=opts)


# ----------------------------------------------------------------------------- batch inference
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
    file (:func:`irs_torch.inference.solve_batch`)."""
    import statistics

    from irs_torch.inference import load_scenarios, solve_batch
    from irs_torch.outputs import check_output_path, dumps, npz_path

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
                      refine_iter=args.refine_iter, hypotheses=args.hypotheses, fo_steps=args.fo_steps,
                      polish=not args.no_polish, extra_starts=args.extra_starts, device=args.device,
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

"""``irs-torch montecarlo`` and ``irs-torch montecarlo-sweep``: is the bound reached?

``montecarlo`` simulates the echoes of a design (eqs. (5)-(9)), estimates each IRS's target
direction (ML or MUSIC), localises the target (Stansfield) and prints per IRS the empirical MSE of
theta and phi beside their CRBs, and the position RMSE beside the PEB.

``montecarlo-sweep`` repeats that over P_t for several designs (:func:`irs_torch.estimation.sweep.
monte_carlo_sweep`: a CSV, a PNG and one ``.npz`` per run under ``OUT/runs``, so an interrupted sweep
resumes where it stopped).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from irs_torch.commands import positive_int_arg, seed_arg
from irs_torch.limits import MAX_TRIALS

DEFAULT_PT = "2,20,200,2000,20000"
DEFAULT_DESIGNS = "optimised,isotropic-random,isotropic-aligned"


def register(sub):
    p = sub.add_parser(
        "montecarlo", help="Monte Carlo of direction/position estimation vs the CRB and PEB",
        description="Simulate K echo sets of a design (paper eqs. (5)-(9), both amplification noises "
                    "and the BS noise), estimate (theta, phi, beta) per IRS by maximum likelihood "
                    "(or MUSIC), localise the target by Stansfield's weighted least squares, and "
                    "report per IRS the MSE of theta and phi beside their CRBs [rad^2] and the "
                    "position RMSE beside the position error bound (PEB) [m].")
    p.add_argument("--scenario", required=True, help="scenario .npz (with geometry)")
    p.add_argument("--solution", help="solution .npz (R_s, psi); without it --design is used")
    p.add_argument("--design", default=None,
                   choices=["isotropic-random", "isotropic-aligned", "optimised"],
                   help="design without --solution (default isotropic-random); 'optimised' runs the "
                        "optimiser chosen by --optimiser")
    p.add_argument("--optimiser", choices=["auto", "adam", "ao"], default=None,
                   help="for --design optimised: adam, the AO solver, or auto (both, keep the best; default)")
    p.add_argument("--trials", type=positive_int_arg("--trials", MAX_TRIALS), default=1000,
                   help="Monte Carlo trials K (default 1000)")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="seed of the waveform and noise draws (and of the random phases); default 0")
    p.add_argument("--estimator", choices=["ml", "music"], default="ml", help="direction estimator")
    p.add_argument("--no-z1", dest="include_z1", action="store_false",
                   help="do not simulate the first-hop amplification noise z_1 (the CRB model's noise)")
    p.add_argument("--chunk", type=int, default=500, help="trials simulated at a time (default 500)")
    p.add_argument("--save", help="write the per-trial estimates and errors to this .npz")
    p.add_argument("--allow-infeasible", action="store_true",
                   help="simulate a design that breaks a constraint (R_s not PSD, over P_t, P_s or a_max; "
                        "refused by default) and print a warning")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)

    q = sub.add_parser(
        "montecarlo-sweep", help="RMSE and root-CRB vs P_t for several designs, CSV + PNG",
        description="Run 'montecarlo' over a list of BS powers P_t for several designs and plot RMSE "
                    "and root-CRB vs P_t per IRS, position RMSE vs PEB, and the CDF of the position "
                    "error. Resumable: finished runs (OUT/runs/*.npz) are reused.")
    q.add_argument("--scenario", required=True, help="scenario .npz (with geometry)")
    q.add_argument("--out", required=True, help="output folder (sweep.csv, sweep.png, sweep.json, runs/)")
    q.add_argument("--pt", default=DEFAULT_PT, help=f"comma-separated P_t values [W] (default {DEFAULT_PT})")
    q.add_argument("--ps", choices=["scaled", "fixed"], default="scaled",
                   help="P_s at each P_t: 'scaled' keeps the scenario's P_s/P_t ratio (default; with P_s "
                        "fixed, C1 binds and raising P_t stops helping), 'fixed' keeps P_s")
    q.add_argument("--designs", default=DEFAULT_DESIGNS,
                   help=f"comma-separated designs (default {DEFAULT_DESIGNS})")
    q.add_argument("--optimiser", choices=["auto", "adam", "ao"], default="auto",
                   help="optimiser of the 'optimised' design (default auto)")
    q.add_argument("--adam-steps", type=int, default=300, help="Adam steps of the cheap optimiser")
    q.add_argument("--trials", type=int, default=200, help="trials per point (default 200)")
    q.add_argument("--seed", type=seed_arg, default=0, help="seed of the noise draws and designs (default 0)")
    q.add_argument("--estimator", choices=["ml", "music"], default="ml")
    q.add_argument("--cdf-pt", type=float, help="P_t of the position-error CDF (default: the scenario's "
                                                "P_t if listed, else the middle value of --pt)")
    q.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    q.set_defaults(func=run_sweep)


def _load(scenario_path):
    from irs_torch.scenario import load_scenario

    s = load_scenario(scenario_path)
    if s.batch_shape:
        raise ValueError(f"{scenario_path}: batched scenario files are not supported by 'montecarlo'")
    if s.irs_pos is None or s.target_pos is None:
        raise ValueError(f"{scenario_path}: the scenario has no geometry (irs_pos, target_pos); "
                         f"montecarlo needs it to localise the target")
    return s


def run(args: argparse.Namespace) -> int:
    from irs_torch import __version__
    from irs_torch.errors import InputError
    from irs_torch.estimation.designs import make_design
    from irs_torch.estimation.montecarlo import run_monte_carlo
    from irs_torch.outputs import dumps
    from irs_torch.scenario import Solution

    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    if args.solution and args.design is not None:  # refuse flags that would be ignored
        raise InputError(f"--design {args.design} is not used with --solution (the solution is the design)")
    if args.optimiser is not None and (args.solution or args.design != "optimised"):
        raise InputError(f"--optimiser {args.optimiser} applies to --design optimised only")
    args.design = args.design or "isotropic-random"
    args.optimiser = args.optimiser or "auto"
    if args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    if args.save:  # before the simulation: never overwrite an input, fail early if it cannot be written
        from irs_torch.outputs import check_output_path, npz_path

        check_output_path(npz_path(args.save), {"--scenario": args.scenario, "--solution": args.solution},
                          "--save")
    s = _load(args.scenario)
    if args.solution:
        sol = Solution.load(args.solution)
        sol.check_compatible(s, source=args.solution)
        R, psi, label = sol.R_s, sol.psi, f"{args.solution} ({sol.method})"
    else:
        R, psi, label = make_design(s, args.design, seed=args.seed, optimiser=args.optimiser)
    zero = [i + 1 for i in range(s.L) if not bool((s.G[..., i, :, :] != 0).any())]
    if zero:  # no path BS -> IRS: no echo, nothing to estimate (the estimators would fail on a singular system)
        raise InputError(f"{args.scenario}: G of IRS {zero[0]} is zero (no BS -> IRS channel), so its angles cannot "
                         f"be estimated")
    import torch

    try:
        res = run_monte_carlo(s, R, psi, args.trials, seed=args.seed, estimator=args.estimator,
                              include_z1=args.include_z1, chunk=args.chunk, progress=args.progress,
                              allow_infeasible=args.allow_infeasible)
    except InputError as e:  # name the design in the message
        raise InputError(f"{args.solution or 'design ' + label}: {e}") from None
    except torch.linalg.LinAlgError as e:  # a singular estimation problem: the design gives no information
        raise InputError(f"{args.solution or 'design ' + label}: the echoes of this design give a singular "
                         f"estimation problem ({' '.join(str(e).split())[:160]}); check the scenario's G and "
                         f"the design") from None
    rep = dict(res.summary)
    rep.update({"design": label, "scenario": str(args.scenario), "scenario_seed": s.seed,
                "P_t": float(s.P_t), "P_s": float(s.P_s), "version": __version__})
    if rep["violations"]:
        print("irs-torch: WARNING: simulating an infeasible design (--allow-infeasible): "
              + "; ".join(rep["violations"]), file=sys.stderr)
    if args.save:
        import numpy as np

        from irs_torch.outputs import atomic_savez

        arr = {k: v.detach().cpu().numpy() for k, v in res.arrays.items()}
        arr["summary"] = np.asarray(dumps(rep))
        path = atomic_savez(args.save, arr)
        rep["saved"] = str(path)
    if args.json:
        print(dumps(rep))
        return 0
    _print_report(rep, s.L)
    return 0


def _print_report(rep, L):
    deg = 180.0 / math.pi
    if rep.get("violations"):
        print("WARNING: INFEASIBLE design simulated (--allow-infeasible); its errors are not achievable "
              "within the budgets: " + "; ".join(rep["violations"]))
    print(f"design: {rep['design']}   estimator: {rep['estimator']}   trials: {rep['trials']}   "
          f"seed: {rep['seed']}   z_1 simulated: {'yes' if rep['include_z1'] else 'no'}")
    print(f"{'IRS':>3} {'MSE th':>10} {'CRB th':>10} {'ratio':>6} {'MSE ph':>10} {'CRB ph':>10} {'ratio':>6} "
          f"{'RMSE th[deg]':>13} {'rCRB th[deg]':>12} {'RMSE ph[deg]':>12} {'rCRB ph[deg]':>12} {'outliers':>8}")
    for l in range(L):
        mt, ct, mp, cp = rep["mse_theta"][l], rep["crb_theta"][l], rep["mse_phi"][l], rep["crb_phi"][l]
        print(f"{l + 1:>3} {mt:>10.3e} {ct:>10.3e} {mt / ct:>6.2f} {mp:>10.3e} {cp:>10.3e} {mp / cp:>6.2f} "
              f"{math.sqrt(mt) * deg:>13.4g} {math.sqrt(ct) * deg:>12.4g} {math.sqrt(mp) * deg:>12.4g} "
              f"{math.sqrt(cp) * deg:>12.4g} {rep['outlier_fraction'][l]:>8.3f}")
    print(f"position RMSE: {rep['position_rmse']:.4g} m  (PEB {rep['peb']:.4g} m);  horizontal: "
          f"{rep['position_rmse_2d']:.4g} m (2-D PEB, z known, {rep['peb_2d']:.4g} m);  median error "
          f"{rep['position_error_median']:.4g} m, 90% {rep['position_error_p90']:.4g} m")
    print(f"MSE in rad^2; 'outliers': trials with an angle error > {rep['outlier_sigma']:g} root-CRB "
          f"(threshold effect). z_1 noise / modelled noise: "
          + ", ".join(f"{x:.2g}" for x in rep["z1_noise_ratio"]) + f"   ({rep['seconds']:.1f} s)")


# ---------------------------------------------------------------------------------------- sweep
def _floats(text, name):
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated numbers, got {text!r}") from None
    if not vals or any(not (v > 0 and math.isfinite(v)) for v in vals):
        raise ValueError(f"--{name} values must be finite and > 0, got {text!r}")
    return vals


def run_sweep(args: argparse.Namespace) -> int:
    from irs_torch.estimation.designs import DESIGNS
    from irs_torch.estimation.sweep import default_cdf_pt, monte_carlo_sweep, output_names
    from irs_torch.outputs import check_output_dir, check_output_path

    s0 = _load(args.scenario)
    pts = _floats(args.pt, "pt")
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    for d in designs:
        if d not in DESIGNS:
            raise ValueError(f"--designs: unknown design {d!r} (choose from {list(DESIGNS)})")
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    cdf_pt = default_cdf_pt(s0, pts) if args.cdf_pt is None else args.cdf_pt
    if cdf_pt not in pts:
        raise ValueError(f"--cdf-pt {cdf_pt:g} must be one of the --pt values {pts}")
    out = Path(args.out)
    check_output_dir(out, {"--scenario": args.scenario}, "--out")
    for name in output_names(designs, pts):
        check_output_path(out / name, {"--scenario": args.scenario}, "--out")
    res = monte_carlo_sweep(s0, out, pts=pts, designs=designs, ps=args.ps, optimiser=args.optimiser,
                            adam_steps=args.adam_steps, trials=args.trials, seed=args.seed,
                            estimator=args.estimator, cdf_pt=cdf_pt, scenario_label=args.scenario,
                            progress=args.progress)
    rows = res["rows"]
    print(f"wrote {res['csv']} ({len(rows)} runs), {res['png']}, {res['json']}")
    for r in rows:
        print(f"  {r['design']:>17} P_t={r['P_t']:>9.4g} W  position RMSE {r['position_rmse']:.3g} m  "
              f"PEB {r['peb']:.3g} m  MSE/CRB theta {','.join(f'{x:.2f}' for x in r['mse_over_crb_theta'])}"
              f"  phi {','.join(f'{x:.2f}' for x in r['mse_over_crb_phi'])}")
    return 0

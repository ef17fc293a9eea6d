"""``irs-torch crb``: evaluate the CRB and the power budgets of a design."""
from __future__ import annotations

import argparse

from irs_torch.commands import seed_arg


def register(sub):
    p = sub.add_parser(
        "crb", help="per-IRS CRB, root-CRB and power budgets of a design",
        description="Evaluate a design on a scenario: per IRS the CRB tr(F^-1), the angle CRB "
                    "(theta + phi, rad^2), root-CRBs in degrees, IRS power against P_s and BS power "
                    "against P_t. Without --solution a simple design is used (--design).")
    p.add_argument("--scenario", required=True, help="scenario .npz")
    p.add_argument("--solution", help="solution .npz (R_s, psi)")
    p.add_argument("--design", choices=["isotropic-random", "isotropic-aligned"], default="isotropic-random",
                   help="design without --solution: isotropic R_s = P_t/M I with random-phase psi "
                        "(isotropic-random) or phases aligned to the target (isotropic-aligned), at the "
                        "largest amplitude meeting C1 and a_max")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the random phases (default 0)")
    p.add_argument("--index", type=int, default=None,
                   help="item of a batched scenario file (and of a batched solutions file from `solve`)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irs_torch.scenario import Solution, load_scenario
    from irs_torch.scenario.solution import design_summary
    from irs_torch.solvers.baselines import aligned_psi

    s = load_scenario(args.scenario)
    item = None  # the item of a batched scenario file
    if s.batch_shape:
        n = int(s.batch_shape[0])
        if args.index is None:
            raise ValueError(f"{args.scenario} holds a batch of {n} scenarios: pick one with --index i")
        if not -n <= args.index < n:
            raise ValueError(f"--index must be in [0, {n}), got {args.index}")
        s = s[args.index]
        item = args.index % n
    elif args.index not in (None, 0):
        raise ValueError(f"--index {args.index} given but {args.scenario} is not batched")
    if args.solution:
        sol = Solution.load(args.solution)
        made_for = sol.metadata.get("scenario_index") if isinstance(sol.metadata, dict) else None
        if made_for is not None and item is not None and item != made_for:
            raise ValueError(f"{args.solution} was made for item {made_for} of its scenario file "
                             f"(metadata scenario_index), not for --index {args.index}")
        sol.check_compatible(s, source=args.solution)
        R, psi, label = sol.R_s, sol.psi, f"{args.solution} ({sol.method})"
        if R.dim() == 4:  # a batched solutions file (irs-torch solve on a batch): its item --index
            if args.index is None or not -R.shape[0] <= args.index < R.shape[0]:
                raise ValueError(f"{args.solution} holds {R.shape[0]} designs: --index must pick one of them "
                                 f"(the same item as the scenario's), got {args.index}")
            R, psi, label = R[args.index], psi[args.index], f"{args.solution}[{args.index}] ({sol.method})"
    else:
        R = s.isotropic_design()
        psi = s.random_phase_design(R, seed=args.seed) if args.design == "isotropic-random" else aligned_psi(s, R)
        label = f"{args.design} (seed {args.seed})" if args.design == "isotropic-random" else args.design
    try:
        rep = design_summary(s, R, psi)
    except ValueError as e:  # e.g. a design so large that the model overflows: name where it came from
        msg = " ".join(str(e).split())
        where = label if args.solution else f"{args.scenario} (design {label})"
        raise ValueError(msg if msg.startswith(str(args.scenario)) else f"{where}: {msg}") from None
    rep["design"] = label
    if args.json:
        from irs_torch.outputs import dumps

        print(dumps(rep))
        return 0
    print(f"design: {label}")
    print(f"{'IRS':>3} {'CRB tr(F^-1)':>13} {'CRB angles':>11} {'rCRB th[deg]':>12} {'rCRB ph[deg]':>12} "
          f"{'IRS power [W]':>14} {'/ P_s':>7}")
    for l in range(s.L):
        print(f"{l + 1:>3} {rep['crb'][l]:>13.4e} {rep['crb_angles'][l]:>11.4e} {rep['root_crb_theta_deg'][l]:>12.4g} "
              f"{rep['root_crb_phi_deg'][l]:>12.4g} {rep['irs_power'][l]:>14.4e} "
              f"{rep['irs_power'][l] / rep['P_s']:>7.3f}")
    print(f"max-CRB: {rep['max_crb']:.4e} rad^2   BS power: {rep['bs_power']:.4g} W of P_t = {rep['P_t']:g} W   "
          f"max |psi|: {max(rep['max_amplitude']):.4g} of a_max = {rep['a_max']:g}   "
          f"feasible: {'yes' if rep['feasible'] else 'NO'}")
    return 0

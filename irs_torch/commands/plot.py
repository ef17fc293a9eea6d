"""``irs-torch plot``: a picture of a design (:func:`irs_torch.plotting.plot_design`)."""
from __future__ import annotations

import argparse


def register(sub):
    p = sub.add_parser(
        "plot", help="draw a design: BS beampattern per slot, each IRS's reflected power map, CRBs, constraints",
        description="Draw a solution for its scenario: the BS transmit gain of every slot over the angle from the "
                    "BS array axis; the power each IRS reflects towards every direction (theta, phi) in front of "
                    "it, with the target and the BS marked; the per-IRS root-CRBs; and the share of every budget "
                    "used (BS power, each IRS's power C1, a_max). The format follows the extension of -o: .png "
                    "(default), .svg or .pdf (vector).")
    p.add_argument("--scenario", required=True, help="scenario .npz (irs-torch scenario; batched: pick --index)")
    p.add_argument("--solution", required=True, help="solution .npz for that scenario (irs-torch solve -o)")
    p.add_argument("--index", type=int, default=None,
                   help="item of a batched scenario file and of its batched solutions file")
    p.add_argument("-o", "--output", required=True, help="image file: .png, .svg or .pdf")
    p.add_argument("--title", default=None, help="figure title (default: the scenario's sizes and budgets)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irs_torch.outputs import check_output_path
    from irs_torch.plotting import FORMATS, design_report, plot_design
    from irs_torch.scenario import Solution, load_scenario

    ext = args.output.rsplit(".", 1)[-1].lower() if "." in args.output else ""
    if ext not in FORMATS:
        raise ValueError(f"-o/--output must end in {', '.join('.' + f for f in FORMATS)}, got {args.output!r}")
    check_output_path(args.output, {"--scenario": args.scenario, "--solution": args.solution}, "-o/--output")
    s = load_scenario(args.scenario)
    sol = Solution.load(args.solution)
    R, psi = sol.R_s, sol.psi
    if s.batch_shape:
        n = int(s.batch_shape[0])
        if args.index is None or not -n <= args.index < n:
            raise ValueError(f"{args.scenario} holds a batch of {n} scenarios: --index must pick one, got {args.index}")
        s = s[args.index]
    if R.dim() == 4:
        if args.index is None or not -R.shape[0] <= args.index < R.shape[0]:
            raise ValueError(f"{args.solution} holds {R.shape[0]} designs: --index must pick one, got {args.index}")
        R, psi = R[args.index], psi[args.index]
    elif args.index not in (None, 0) and not s.batch_shape:
        raise ValueError(f"--index {args.index} given but neither {args.scenario} nor {args.solution} is batched")
    sol.check_compatible(s, source=args.solution)
    out = plot_design(s, R, psi, args.output, title=args.title)
    rep = design_report(s, R, psi)
    print(f"max-CRB {rep['max_crb']:.4e} rad^2; root-CRB (theta, phi) per IRS: "
          + ", ".join(f"IRS {l + 1} ({a:.3g}, {b:.3g}) deg" for l, (a, b) in enumerate(rep["root_crb_deg"])))
    print(f"wrote {out}")
    return 0

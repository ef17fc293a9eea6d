"""``irs-torch scenario``: write a scenario file from a preset."""
from __future__ import annotations

import argparse

from irs_torch.commands import seed_arg


def register(sub):
    p = sub.add_parser(
        "scenario", help="write a scenario (.npz) from a preset",
        description="Write a scenario from the 'paper' preset (Section V + the defaults of docs/assumptions.md) or a "
                    "random geometry around it. Options override the preset.")
    p.add_argument("--preset", choices=["paper", "random"], default="paper")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the channels / geometry (default 0)")
    p.add_argument("-o", "--output", required=True, help="output .npz path")
    p.add_argument("--mat", action="store_true", help="also write a MATLAB .mat beside it")
    p.add_argument("--count", type=int, default=None, metavar="K",
                   help="write one batched file of K scenarios, channel / geometry seeds --seed .. --seed + K - 1 "
                        "(for `irs-torch solve --scenario FILE`, which solves every item)")
    p.add_argument("--M", type=int, help="BS antennas")
    p.add_argument("--N-h", dest="N_h", type=int, help="IRS elements, horizontal")
    p.add_argument("--N-v", dest="N_v", type=int, help="IRS elements, vertical")
    p.add_argument("--L", type=int, help="number of IRSs (default 2; placed along the paper's IRS wall, "
                                         "checked by the geometry accept rule)")
    p.add_argument("--P-t", dest="P_t", type=float, help="BS power budget [W]")
    p.add_argument("--P-s", dest="P_s", type=float, help="IRS power budget [W]")
    p.add_argument("--a-max", dest="a_max", type=float, help="IRS amplitude limit (linear)")
    p.add_argument("--sigma-r2", dest="sigma_r2", type=float, help="IRS amplification noise power [W]")
    p.add_argument("--sigma-b2", dest="sigma_b2", type=float, help="BS noise power [W]")
    p.add_argument("--T-c", dest="T_c", type=float, help="radar dwell time [symbols]")
    p.add_argument("--K-db", dest="K_db", type=float, help="Rician K factor of BS-IRS links [dB]")
    p.add_argument("--beta-model", dest="beta_model", choices=["pathloss", "radar"])
    p.add_argument("--passive", action="store_true", help="passive IRS (|psi|=1, no amplification noise)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from irs_torch.outputs import check_output_path, npz_path
    from irs_torch.scenario import Scenario, paper_scenario, random_scenario

    check_output_path(npz_path(args.output), None, "-o/--output")
    if args.mat:
        check_output_path(npz_path(args.output).with_suffix(".mat"), None, "-o/--output (.mat)")
    over = {k: getattr(args, k) for k in ("M", "N_h", "N_v", "L", "P_t", "P_s", "a_max", "sigma_r2",
                                          "sigma_b2", "T_c", "K_db", "beta_model")
            if getattr(args, k) is not None}
    import math

    from irs_torch.errors import InputError
    from irs_torch.limits import MAX_BATCH, check_int, check_scenario_sizes

    for k, v in over.items():  # argparse's float() takes "nan" and "inf"
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"--{k.replace('_', '-')} must be a finite number, got {v}")
    if args.count is not None:
        check_int("--count", args.count, 1, MAX_BATCH)
    sizes = {"M": 16, "N_h": 4, "N_v": 4, "L": 2, **{k: over[k] for k in ("M", "N_h", "N_v", "L") if k in over}}
    check_scenario_sizes(**sizes, names={"M": "--M", "N_h": "--N-h", "N_v": "--N-v", "L": "--L"})
    check_scenario_sizes(**sizes, batch=args.count or 1, stored_only=True,
                         names={"M": "--M", "N_h": "--N-h", "N_v": "--N-v", "L": "--L", "batch": "--count"})
    if args.passive:
        over["active"] = False
        over["sigma_r2"] = 0.0
    base = paper_scenario if args.preset == "paper" else random_scenario

    def make(**kw):
        """The preset with the flags; an invalid value is reported under its flag's name."""
        try:
            return base(**kw)
        except (ValueError, TypeError) as e:
            msg = " ".join(str(e).split())
            field = next((k for k in over if msg.startswith((f"{k} ", f"{k}:"))), None)
            if field is None:
                raise
            raise InputError(f"--{field.replace('_', '-')} {over[field]}: {msg}") from None
    if args.count is not None:  # a batch: one file of `count` scenarios
        if args.count < 1:
            raise ValueError(f"--count must be >= 1, got {args.count}")
        if args.mat:
            raise ValueError("--mat writes one scenario; not with --count")
        b = Scenario.stack([make(seed=args.seed + i, **over) for i in range(args.count)])
        # item i has seed --seed + i: recorded in the file's preset field (the format's seed is one integer)
        b = b.replace(preset=f"batch of {args.preset}, seeds {args.seed}..{args.seed + args.count - 1} (item i: "
                             f"{args.seed} + i)")
        path = b.save(args.output)
        print(
            f"wrote {path}: {args.count} scenario{'s' * (args.count != 1)}, preset={args.preset} "
            f"seeds {args.seed}..{args.seed + args.count - 1} M={b.M} N={b.N_h}x{b.N_v} L={b.L}"
        )
        return 0
    s = make(seed=args.seed, **over)
    path = s.save(args.output)
    print(f"wrote {path}: preset={s.preset} seed={s.seed} M={s.M} N={s.N_h}x{s.N_v} L={s.L} "
          f"P_t={float(s.P_t):g} W P_s={float(s.P_s):g} W a_max={float(s.a_max):g} "
          f"{'active' if s.active else 'passive'}")
    if args.mat:
        mp = s.export_mat(path.with_suffix(".mat"))
        print(f"wrote {mp}")
    return 0

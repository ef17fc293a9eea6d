"""``irs-torch bench warmstart``: cold AO vs network vs network + refinement on a test split."""
from __future__ import annotations

import argparse
import json


def register(sub):
    p = sub.add_parser("bench", help="benchmarks (warmstart: learned warm start vs cold AO)")
    sp = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    w = sp.add_parser("warmstart", help="cold AO vs network alone vs network + AO over a held-out split",
                      description="Per instance of the split: max-CRB and wall time of the cold AO, the network "
                                  "alone and network + AO refinement; prints medians, p90s and ratios, and writes "
                                  "JSON, CSV and a plot under --out.")
    w.add_argument("--data", required=True, help="data set directory (irs-torch dataset generate)")
    w.add_argument("--checkpoint", help="model file (default: the shipped one for the data set's sizes)")
    w.add_argument("--split", default="test", choices=["train", "val", "test"])
    w.add_argument("--limit", type=int, help="at most this many instances")
    w.add_argument("--out", default="bench-warmstart", help="output directory (default bench-warmstart)")
    w.add_argument("--max-iter", type=int, default=None, help="AO iteration cap, cold and warm (default 20)")
    w.add_argument("--seed", type=int, default=0, help="seed of the cold AO's random start (default 0)")
    w.add_argument("--refine-iter", type=int, default=3,
                   help="AO iterations of the network + AO refinement (default 3)")
    w.add_argument("--json", action="store_true", help="print the summary as JSON")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from irs_torch.runtime import bench_warmstart

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"data set directory not found: {args.data}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    from irs_torch.solvers import SolverOptions

    kw = {"seed": args.seed}
    if args.max_iter is not None:
        kw["max_iter"] = args.max_iter
    s = bench_warmstart(args.data, checkpoint=args.checkpoint, split=args.split, limit=args.limit, out=args.out,
                        options=SolverOptions(**kw), progress=not (args.no_progress or args.json),
                        refine_iter=args.refine_iter)
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"{s['instances']} instances ({s['split']} split of {s['data']}), checkpoint {s['checkpoint']}")
    print(f"  cold AO            : median time {s['cold_time_median']:.2f} s (p90 {s['cold_time_p90']:.2f} s)")
    print(f"  network alone      : max-CRB / cold median {s['crb_ratio_net_median']:.3f} (p90 {s['crb_ratio_net_p90']:.3f}); "
          f"{s['net_batched_time_per_instance'] * 1e3:.3f} ms per instance batched; feasible {s['net_feasible_fraction']:.0%}")
    print(f"  network + AO       : max-CRB / cold median {s['crb_ratio_warm_median']:.3f} (p90 {s['crb_ratio_warm_p90']:.3f}); "
          f"time / cold median {s['time_ratio_warm_median']:.3f} (p90 {s['time_ratio_warm_p90']:.3f})")
    for o in s.get("outputs", []):
        print(f"  wrote {o}")
    return 0

"""``irs-torch bench warmstart``: cold AO vs network vs network + refinement on a test split;
``irs-torch bench quality`` / ``quality-search``: solver efforts vs best-known designs (issue #13)."""
from __future__ import annotations

import argparse
import json

from irs_torch.commands import seed_arg


def register(sub):
    p = sub.add_parser("bench", help="benchmarks (warmstart: learned warm start vs cold AO; quality: solver efforts vs best-known)")
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
    w.add_argument("--seed", type=seed_arg, default=0, help="seed of the cold AO's random start (default 0)")
    w.add_argument("--refine-iter", type=int, default=3,
                   help="AO iterations of the network + AO refinement (default 3)")
    w.add_argument("--json", action="store_true", help="print the summary as JSON")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.set_defaults(func=run)
    _register_quality(sp)


def _register_quality(sp):
    """``bench quality`` and ``bench quality-search`` (issue #13; library: :mod:`irs_torch.quality`)."""
    q = sp.add_parser("quality", help="solver efforts vs best-known designs over the quality suite",
                      description="Runs solver efforts over the quality suite (benchmarks/quality/) and reports "
                                  "each one's max-CRB / best-known ratio (median, p90, max) and median time, split "
                                  "by regime (standard / c1-binding): a table, summary.json, runs.jsonl and "
                                  "quality.png under --out. Resumable: runs already in --out/runs.jsonl are not "
                                  "repeated. A run better than the best-known design replaces it (and says so).")
    q.add_argument("--quick", action="store_true", help="the quick subset (11 instances)")
    q.add_argument("--ids", nargs="+", help="only these instance ids")
    q.add_argument("--methods", nargs="+", default=["legacy", "fast", "default"],
                   choices=["legacy", "fast", "default", "thorough"],
                   help="efforts to run (default: legacy fast default; the thorough row comes from the "
                        "search records unless listed)")
    q.add_argument("--suite", default=None, help="suite directory (default: the repository's benchmarks/quality)")
    q.add_argument("--out", default="bench-quality", help="output directory (default bench-quality)")
    q.add_argument("--seed", type=int, default=0, help="solver seed (default 0)")
    q.add_argument("--workers", type=int, default=1, help="parallel solves (default 1: comparable times)")
    q.add_argument("--backend", choices=["local", "ray"], default="local")
    q.add_argument("--address", default=None, help="ray: cluster address")
    q.add_argument("--no-update-best", action="store_true", help="never replace a best-known design")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=run_quality)
    s = sp.add_parser("quality-search", help="find or improve the best-known designs of the quality suite",
                      description="The expensive best-known search (resumable): per instance the thorough effort "
                                  "(time-capped), then continuation passes from the budget neighbours' best designs. "
                                  "Appends to <suite>/records.jsonl and writes <suite>/best/*.npz.")
    s.add_argument("--suite", default=None, help="suite directory (default: the repository's benchmarks/quality)")
    s.add_argument("--quick", action="store_true", help="only the quick subset")
    s.add_argument("--ids", nargs="+", help="only these instance ids")
    s.add_argument("--time-limit", type=float, default=25.0, help="seconds of thorough search per instance (default 25)")
    s.add_argument("--passes", type=int, default=2, help="continuation passes (default 2)")
    s.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--backend", choices=["local", "ray"], default="local")
    s.add_argument("--address", default=None, help="ray: cluster address")
    s.set_defaults(func=run_quality_search)


def run_quality(args: argparse.Namespace) -> int:
    from irs_torch.quality import SUITE_DIR, bench_quality

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    log = (lambda *a, **k: None) if args.json else print
    s = bench_quality(args.out, suite_dir=args.suite or SUITE_DIR, quick=args.quick, ids=args.ids,
                      methods=tuple(dict.fromkeys(args.methods)), seed=args.seed, workers=args.workers,
                      backend=args.backend, address=args.address, update_best=not args.no_update_best, log=log)
    if args.json:
        print(json.dumps(s))
    else:
        print(f"wrote {args.out}/summary.json, {args.out}/runs.jsonl, {args.out}/quality.png")
    return 0


def run_quality_search(args: argparse.Namespace) -> int:
    from irs_torch.quality import SUITE_DIR, search_best_known

    if args.time_limit <= 0:
        raise ValueError(f"--time-limit must be > 0 s, got {args.time_limit}")
    if args.passes < 0:
        raise ValueError(f"--passes must be >= 0, got {args.passes}")
    s = search_best_known(args.suite or SUITE_DIR, quick=args.quick, ids=args.ids, time_limit=args.time_limit,
                          passes=args.passes, workers=args.workers, backend=args.backend, address=args.address,
                          seed=args.seed, log=lambda m: print(m, flush=True))
    print(f"search: {s['run']} task(s) run, {s['skipped']} already done, {s['improved']} improvement(s), "
          f"{s['seconds']:.0f} s; {s['monotonicity_violations']} monotonicity violation(s) among the best-known designs")
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from irs_torch.outputs import check_output_dir
    from irs_torch.runtime import bench_warmstart

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"data set directory not found: {args.data}")
    check_output_dir(args.out, {"--data": args.data, "--checkpoint": args.checkpoint}, "--out")
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
        from irs_torch.outputs import dumps

        print(dumps(s))
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

"""``irs-torch bench warmstart``: the learned warm start vs honest baselines (:mod:`irs_torch.bench.warmstart`);
``irs-torch bench quality`` / ``quality-search``: solver efforts vs best-known designs."""
from __future__ import annotations

import argparse
import json

from irs_torch.commands import seed_arg


def register(sub):
    p = sub.add_parser("bench", help="benchmarks (warmstart: learned warm start vs cold AO; "
                                     "quality: solver efforts vs best-known)")
    sp = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    w = sp.add_parser("warmstart", help="learned warm start vs honest baselines (ratio to best-known / label, time)",
                      description="Per instance, side by side in one process: the network alone, network + "
                                  "refinement, the cold default and legacy AO, the AO capped at the refinement's "
                                  "iterations, the aligned / co-phased starts with the same refinement, a first-order "
                                  "design given 1x and 100x the network's time, and the portfolio (k network "
                                  "hypotheses vs k heuristic / random starts, same refinement). Each as max-CRB / "
                                  "reference (suite: best-known designs of benchmarks/quality at the model's sizes; "
                                  "data: the data set's labels) with its time, split by C1 regime and budget bucket. "
                                  "Writes warmstart.csv, warmstart.json, warmstart_<source>.png and the resume log "
                                  "rows.jsonl under --out; prints a table. See irs_torch/bench/warmstart.py.")
    w.add_argument("--source", nargs="+", choices=["suite", "data"], default=None,
                   help="instances: the quality suite and/or a data set's split (default: suite, and data when "
                        "--data is given)")
    w.add_argument("--data", help="data set directory (irs-torch dataset generate) for --source data")
    w.add_argument("--split", default="test", choices=["train", "val", "test"], help="data split (default test)")
    w.add_argument("--suite", default=None,
                   help="quality suite directory (default: the repository's benchmarks/quality)")
    w.add_argument("--quick", action="store_true", help="suite: the quick subset only")
    w.add_argument("--ids", nargs="+", help="suite: only these instance ids")
    w.add_argument("--checkpoint", help="model file (default: the shipped one for the instances' sizes)")
    w.add_argument("--limit", type=int, help="at most this many instances per source")
    w.add_argument("--methods", nargs="+", default=None,
                   help="methods to run (default: all; see irs_torch.bench.warmstart_methods.METHODS)")
    w.add_argument("--hypotheses", nargs="+", type=int, default=[1, 2, 4],
                   help="portfolio sizes k (default 1 2 4)")
    w.add_argument("--out", default="bench-warmstart", help="output directory (default bench-warmstart)")
    w.add_argument("--max-iter", type=int, default=None, help="AO iteration cap of the cold AO runs (default 20)")
    w.add_argument("--seed", type=seed_arg, default=0, help="seed of the random starts (default 0)")
    w.add_argument("--refine-iter", type=int, default=3, help="AO iterations of the refinement (default 3)")
    w.add_argument("--threads", type=int, default=1, help="torch threads (default 1: comparable times)")
    w.add_argument("--json", action="store_true", help="print the summary as JSON")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.add_argument("--batch", type=int, default=None, metavar="N",
                   help="batch mode: N draws of the model's budget distribution plus the suite's instances of its "
                        "sizes, every method batched where it can be (network alone; network / heuristic starts + "
                        "K first-order steps, with and without the P2 polish; network + 3 AO iterations; the cold "
                        "default): ratios and instances/s side by side (irs_torch/bench/batch_warmstart.py)")
    w.add_argument("--n-label", type=int, default=None,
                   help="batch mode: the item-by-item methods (P2 polish, AO, cold default) run on this many draws "
                        "and suite instances (default min(50, --batch))")
    w.add_argument("--steps", type=int, nargs="+", default=[10, 50, 200], metavar="K",
                   help="batch mode: first-order step caps K (default 10 50 200 400)")
    w.add_argument("--groups", nargs="+", choices=["suite", "dist"], default=["suite", "dist"],
                   help="batch mode: which instance groups to run (default both)")
    w.add_argument("--data-config", default=None,
                   help="batch mode: the data-set config to draw from (default training/budget-data.yaml)")
    w.set_defaults(func=run)
    _register_quality(sp)


def _register_quality(sp):
    """``bench quality`` and ``bench quality-search`` (library: :mod:`irs_torch.bench.quality`)."""
    q = sp.add_parser("quality", help="solver efforts vs best-known designs over the quality suite",
                      description="Runs solver efforts over the quality suite (benchmarks/quality/) and reports "
                                  "each one's max-CRB / best-known ratio (median, p90, max) and median time, split "
                                  "by regime (standard / c1-binding): a table, summary.json, runs.jsonl and "
                                  "quality.png under --out. Resumable: runs already in --out/runs.jsonl are not "
                                  "repeated. A run better than the best-known design replaces it (and says so).")
    q.add_argument("--quick", action="store_true", help="the quick subset (11 instances)")
    q.add_argument("--ids", nargs="+", help="only these instance ids")
    q.add_argument("--methods", nargs="+", default=["legacy", "fast", "default"],
                   choices=["legacy", "fast", "default", "thorough", "portfolio", "first-order"],
                   help="efforts to run (default: legacy fast default; the thorough row comes from the "
                        "search records unless listed; portfolio and first-order: the batched portfolios, "
                        "solved here one instance at a time)")
    q.add_argument("--suite", default=None, help="suite directory (default: the repository's benchmarks/quality)")
    q.add_argument("--out", default="bench-quality", help="output directory (default bench-quality)")
    q.add_argument("--seed", type=int, default=0, help="solver seed (default 0)")
    q.add_argument("--workers", type=int, default=1, help="parallel solves (default 1: comparable times)")
    q.add_argument("--backend", choices=["local", "ray"], default="local")
    q.add_argument("--address", default=None, help="ray: cluster address")
    q.add_argument("--no-update-best", action="store_true", help="never replace a best-known design")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=run_quality)
    s = sp.add_parser("quality-search", help="find or improve the best-known designs of the quality suite",
                      description="The expensive best-known search (resumable): per instance the thorough effort "
                                  "(time-capped), then continuation passes from the budget neighbours' best designs. "
                                  "Appends to <suite>/records.jsonl and writes <suite>/best/*.npz.")
    s.add_argument("--suite", default=None, help="suite directory (default: the repository's benchmarks/quality)")
    s.add_argument("--quick", action="store_true", help="only the quick subset")
    s.add_argument("--ids", nargs="+", help="only these instance ids")
    s.add_argument("--time-limit", type=float, default=25.0,
                   help="seconds of thorough search per instance (default 25)")
    s.add_argument("--passes", type=int, default=2, help="continuation passes (default 2)")
    s.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--backend", choices=["local", "ray"], default="local")
    s.add_argument("--address", default=None, help="ray: cluster address")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run_quality_search)


def run_quality(args: argparse.Namespace) -> int:
    from irs_torch.bench.quality import SUITE_DIR, bench_quality

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    log = (lambda *a, **k: None) if args.json else print
    from contextlib import ExitStack

    from irs_torch.outputs import DirLock

    with ExitStack() as locks:  # runs.jsonl of --out, and the suite's best/ and records.jsonl, are appended to
        locks.enter_context(DirLock(args.out, "--out"))
        if not args.no_update_best:
            locks.enter_context(DirLock(args.suite or SUITE_DIR, "--suite"))
        s = bench_quality(args.out, suite_dir=args.suite or SUITE_DIR, quick=args.quick, ids=args.ids,
                          methods=tuple(dict.fromkeys(args.methods)), seed=args.seed, workers=args.workers,
                          backend=args.backend, address=args.address, update_best=not args.no_update_best, log=log,
                          progress=not (args.no_progress or args.json))
    if args.json:
        print(json.dumps(s))
    else:
        print(f"wrote {args.out}/summary.json, {args.out}/runs.jsonl, {args.out}/quality.png")
    return 0


def run_quality_search(args: argparse.Namespace) -> int:
    from irs_torch.bench.quality import SUITE_DIR, search_best_known

    if args.time_limit <= 0:
        raise ValueError(f"--time-limit must be > 0 s, got {args.time_limit}")
    if args.passes < 0:
        raise ValueError(f"--passes must be >= 0, got {args.passes}")
    from irs_torch.outputs import DirLock

    with DirLock(args.suite or SUITE_DIR, "--suite"):  # records.jsonl and best/ are appended to
        s = search_best_known(args.suite or SUITE_DIR, quick=args.quick, ids=args.ids, time_limit=args.time_limit,
                              passes=args.passes, workers=args.workers, backend=args.backend, address=args.address,
                              seed=args.seed, log=lambda m: print(m, flush=True), progress=not args.no_progress)
    print(f"search: {s['run']} task(s) run, {s['skipped']} already done, {s['improved']} improvement(s), "
          f"{s['seconds']:.0f} s; {s['monotonicity_violations']} monotonicity violation(s) "
          f"among the best-known designs")
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    from irs_torch.bench import batch_warmstart as bb
    from irs_torch.errors import InputError
    from irs_torch.outputs import DirLock, check_output_dir

    for flag in ("source", "data", "ids", "methods", "limit"):
        if getattr(args, flag):
            raise InputError(f"--{flag} does not apply to --batch (the batch mode has its own instances and methods)")
    if not 1 <= args.batch <= 100_000:
        raise InputError(f"--batch must be in [1, 100000], got {args.batch}")
    args.n_label = min(50, args.batch) if args.n_label is None else args.n_label
    if not 0 <= args.n_label <= args.batch:
        raise InputError(f"--n-label must be in [0, --batch={args.batch}], got {args.n_label}")
    if any(k < 1 or k > 100_000 for k in args.steps):
        raise InputError(f"--steps must be in [1, 100000], got {args.steps}")
    check_output_dir(args.out, {"--checkpoint": args.checkpoint, "--suite": args.suite,
                                "--data-config": args.data_config}, "--out")
    with DirLock(args.out, "--out"):
        s = bb.bench_batch(args.out, checkpoint=args.checkpoint, n=args.batch, n_label=args.n_label,
                           ks=tuple(args.steps), threads=args.threads, suite_dir=args.suite,
                           data_config=args.data_config or bb.DATA_CONFIG, groups=tuple(args.groups),
                           progress=not args.json)
    if args.json:
        from irs_torch.outputs import dumps

        print(dumps(s))
    else:
        print(bb.format_table(s))
        print(f"wrote {args.out}/batch.json, batch.png, rows.jsonl")
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from irs_torch.bench.warmstart import bench_warmstart
    from irs_torch.bench.warmstart_methods import is_method
    from irs_torch.bench.warmstart_report import format_table
    from irs_torch.outputs import check_output_dir

    if args.batch is not None:
        return _run_batch(args)
    sources = args.source or (["suite", "data"] if args.data else ["suite"])
    if "data" in sources:
        if not args.data:
            raise ValueError("--source data needs --data DIR")
        if not Path(args.data).is_dir():
            raise FileNotFoundError(f"--data: data set directory not found: {args.data}")
    check_output_dir(args.out, {"--data": args.data, "--checkpoint": args.checkpoint, "--suite": args.suite}, "--out")
    for name in ("limit", "refine_iter", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    bad = [m for m in args.methods or [] if not is_method(m)]
    if bad:
        from irs_torch.bench.warmstart_methods import BASE_METHODS

        raise ValueError(f"--methods: unknown method(s) {bad}; known: {', '.join(BASE_METHODS)} and the portfolio "
                         f"net+refine@K, heuristic+refine@K, random+refine@K")
    if any(k < 1 for k in args.hypotheses):
        raise ValueError(f"--hypotheses must be >= 1, got {args.hypotheses}")
    from irs_torch.solvers import SolverOptions

    kw = {"seed": args.seed}
    if args.max_iter is not None:
        kw["max_iter"] = args.max_iter
    quiet = args.no_progress or args.json
    from irs_torch.outputs import DirLock

    with DirLock(args.out, "--out"):  # rows.jsonl is appended to
        s = bench_warmstart(args.out, checkpoint=args.checkpoint, sources=sources, data=args.data, split=args.split,
                            suite_dir=args.suite, quick=args.quick, ids=args.ids, limit=args.limit,
                            methods=args.methods, hypotheses=args.hypotheses, options=SolverOptions(**kw),
                            refine_iter=args.refine_iter, seed=args.seed, threads=args.threads, progress=not quiet,
                            log=(lambda m: None) if args.json else print)
    s.pop("rows", None)
    if args.json:
        from irs_torch.outputs import dumps

        print(dumps(s))
        return 0
    print(f"checkpoint {s['checkpoint']}")
    print(format_table(s["summary"], s["methods"]))
    for o in s.get("outputs", []):
        print(f"  wrote {o}")
    return 0

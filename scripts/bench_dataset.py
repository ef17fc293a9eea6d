#!/usr/bin/env python
"""Benchmark data set generation: labelled instances per second (per core) on the paper's sizes.

Runs ``irs_torch.data.generate_dataset`` end to end (sampling, exact solver, HDF5 shards) on
``--num`` instances of a config (default: the ``paper`` preset, M = 16, N = 4 x 4, L = 2, the
solver's default settings) and prints

* wall-clock throughput: instances / s and instances / s / worker (includes process start-up,
  shard writing and stragglers), and
* solver throughput per core: 1 / mean per-instance wall time (each instance runs on one core
  with one thread, so this is what one core of a cluster delivers in steady state), and
  1 / mean per-instance CPU time (the same on an idle core; robust to other load on the machine).

Examples::

    python scripts/bench_dataset.py --num 8 --workers 2
    python scripts/bench_dataset.py --num 16 --workers 4 --backend ray
    python scripts/bench_dataset.py --config tiny --num 20 --workers 1 --json

Timings on a shared machine are noisy; say so when you quote them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="paper", help="config file or preset (default: paper)")
    p.add_argument("--num", type=int, default=8, help="instances (default 8)")
    p.add_argument("--workers", type=int, default=None, help="workers (default: all CPUs)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--address", default=None, help="Ray address")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iter", type=int, default=None, help="override the solver's AO iteration cap")
    p.add_argument("--out", default=None, help="keep the data set here (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    from irs_torch.data import dataset_info, generate_dataset, load_config
    from irs_torch.data.backends import default_workers

    cfg = load_config(args.config).replace(seed=args.seed)
    if args.max_iter is not None:
        cfg = cfg.replace(solver={**cfg.solver, "max_iter": args.max_iter})
    workers = args.workers or default_workers()
    tmp = None
    out = Path(args.out) if args.out else Path(tmp := tempfile.mkdtemp(prefix="irs-bench-")) / "ds"
    try:
        t0 = time.perf_counter()
        m = generate_dataset(out, args.num, cfg, workers=workers, backend=args.backend, address=args.address,
                             progress=not args.json, log=lambda s: print(s, file=sys.stderr))
        wall = time.perf_counter() - t0
        info = dataset_info(out)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    st = info["solve_time_s"] or {}
    ct = info["cpu_time_s"] or {}
    per_core = 1.0 / st["mean"] if st else float("nan")
    per_cpu = 1.0 / ct["mean"] if ct else float("nan")
    res = {
        "config": args.config, "M": cfg.M, "N_h": cfg.N_h, "N_v": cfg.N_v, "L": cfg.L, "solver": cfg.solver,
        "backend": args.backend, "workers": workers, "num": args.num, "cpus_visible": os.cpu_count(),
        "stored": m["counts"]["stored"], "failed": m["counts"]["failed"],
        "wall_s": wall, "instances_per_s": args.num / wall, "instances_per_s_per_worker": args.num / wall / workers,
        "solve_time_mean_s": st.get("mean"), "solve_time_median_s": st.get("median"),
        "solve_time_max_s": st.get("max"), "solver_instances_per_s_per_core": per_core,
        "cpu_time_mean_s": ct.get("mean"), "instances_per_cpu_second": per_cpu,
        "nit_mean": (info["nit"] or {}).get("mean"), "status": info["status"],
        "max_crb_median": (info["max_crb"] or {}).get("median"),
        "max_crb_over_init_median": (info["max_crb_over_init"] or {}).get("median"),
        "load_avg_1min": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(res, indent=1, default=str))
        return 0
    print(f"\nbench_dataset: {args.num} instances, M={cfg.M} N={cfg.N_h}x{cfg.N_v} L={cfg.L}, solver {cfg.solver}, "
          f"backend {args.backend}, {workers} worker(s)")
    print(f"  stored {res['stored']}, failed {res['failed']}; status {res['status']}; AO iterations mean "
          f"{res['nit_mean'] if res['nit_mean'] is None else round(res['nit_mean'], 2)}")
    print(f"  wall clock            {wall:9.2f} s   {res['instances_per_s']:.4g} instances/s   "
          f"{res['instances_per_s_per_worker']:.4g} instances/s/worker (incl. start-up)")
    if st:
        print(f"  per instance (1 core) mean {st['mean']:.3g} s  median {st['median']:.3g} s  max {st['max']:.3g} s"
              f"   -> {per_core:.4g} labelled instances/s/core  ({3600 * per_core:.0f} per core-hour)")
    if ct:
        print(f"  CPU time per instance mean {ct['mean']:.3g} s  median {ct['median']:.3g} s"
              f"   -> {per_cpu:.4g} instances per CPU-second  ({3600 * per_cpu:.0f} per CPU-hour; robust to load)")
    print(f"  max-CRB median {res['max_crb_median']}, max-CRB / initial median {res['max_crb_over_init_median']}")
    print(f"  load average (1 min) {res['load_avg_1min']:.2f} on {os.cpu_count()} CPUs: "
          f"{'NOISY (shared machine)' if res['load_avg_1min'] > workers + 0.5 else 'quiet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``irs-torch dataset``: generate solver-labelled data sets, inspect them, export instances."""
from __future__ import annotations

import argparse
import math
import signal
import sys

from irs_torch.commands import seed_arg


def register(sub):
    p = sub.add_parser(
        "dataset", help="generate / inspect solver-labelled data sets (HDF5 shards)",
        description="Solver-labelled data sets over random geometries: every instance is solved by the "
                    "exact AO and stored in HDF5 shards with a JSON manifest (see irs_torch.data.shards).")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    g = dsub.add_parser(
        "generate", help="generate (or resume) a data set",
        description="Sample --num instances from the distribution of --config, solve each with the exact "
                    "solver, write HDF5 shards to --out. Resumable: rerun the same command after an "
                    "interruption and only the missing shards are computed.")
    g.add_argument("--config", help="data set config (YAML or JSON; `irs-torch dataset config` writes a "
                                    "template) or a preset name: paper (default), paper-budgets, tiny. "
                                    "When resuming, defaults to the config stored in DIR/manifest.json")
    g.add_argument("--num", type=int, required=True, help="number of instances K")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--workers", type=int, help="worker processes (local; default: all CPUs) or concurrent "
                                               "tasks (ray; default: the cluster's CPUs)")
    g.add_argument("--backend", choices=["local", "ray"], default="local", help="default: local process pool")
    g.add_argument("--address", help="Ray cluster address (e.g. auto, HOST:6379, ray://HOST:10001); "
                                     "without it --backend ray starts a local Ray")
    g.add_argument("--seed", type=seed_arg, help="data set seed (overrides the config's)")
    g.add_argument("--shard-size", dest="shard_size", type=int, help="instances per shard (overrides the config's)")
    g.add_argument("--retry-failed", action="store_true", help="solve the failed instances of DIR again")
    g.add_argument("--force", action="store_true",
                   help="proceed although DIR/shards holds files and DIR/manifest.json is missing: shards "
                        "of the same config are reused, other shard files are deleted (each is listed); or "
                        "although the manifest's config was edited after its shards were written: the shards "
                        "of another config are recomputed")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=run_generate)

    i = dsub.add_parser("info", help="counts, failures and CRB statistics of a data set",
                        description="Print counts, failures, solver statuses and CRB statistics of a data set.")
    i.add_argument("dir", help="data set directory")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.add_argument("--verify", action="store_true", help="read every shard completely (slower)")
    i.set_defaults(func=run_info)

    c = dsub.add_parser("config", help="write a data set config template",
                        description="Write the config of a preset as YAML (edit it, then pass it to --config).")
    c.add_argument("--preset", default="paper", help="paper (default), paper-budgets or tiny")
    c.add_argument("--L", type=int, default=None, help="number of IRSs (default: the preset's 2), their boxes "
                                                        "spread along the paper's IRS wall")
    c.add_argument("--effort", choices=["legacy", "fast", "default", "thorough", "portfolio", "first-order"],
                   default=None, help="how the labels are solved (default: the preset's, 'legacy'); 'first-order' "
                                      "labels 32 instances per solver call, the cheapest near-optimal labels")
    c.add_argument("-o", "--output", help="output file (.yaml/.yml or .json); default: print YAML")
    c.set_defaults(func=run_config)

    e = dsub.add_parser("export", help="write one stored instance as scenario/solution .npz files",
                        description="Extract instance --id of a data set as a scenario .npz (and the solver's "
                                    "design as a solution .npz) for `irs-torch crb` and MATLAB.")
    e.add_argument("dir", help="data set directory")
    e.add_argument("--id", type=int, required=True, dest="instance_id", help="instance id")
    e.add_argument("--scenario", required=True, help="output scenario .npz")
    e.add_argument("--solution", help="output solution .npz (the stored label)")
    e.set_defaults(func=run_export)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def run_generate(args: argparse.Namespace) -> int:
    from irs_torch.cli import UserError
    from irs_torch.data.backends import BackendUnavailable
    from irs_torch.data.generate import generate_dataset

    old = signal.signal(signal.SIGTERM, _sigterm)  # stop cleanly: completed shards stay, manifest updated
    try:
        m = generate_dataset(args.out, args.num, args.config, workers=args.workers, backend=args.backend,
                             address=args.address, seed=args.seed, shard_size=args.shard_size,
                             retry_failed=args.retry_failed, progress=not args.no_progress, force=args.force)
    except BackendUnavailable as e:
        raise UserError(str(e)) from None
    finally:
        signal.signal(signal.SIGTERM, old)
    c = m["counts"]
    print(f"{args.out}: {c['stored']} instances stored, {c['failed']} failed, {c['pending']} pending, "
          f"{m['num_shards']} shards (seed {m['dataset_seed']}, M={m['sizes']['M']}, "
          f"N={m['sizes']['N_h']}x{m['sizes']['N_v']}, L={m['sizes']['L']})")
    if c["failed"]:
        print(f"failed instances are listed in {args.out}/manifest.json; rerun with --retry-failed to retry them")
    if c["failed"] and not c["stored"]:  # nothing usable: an error, not a success
        first = (m.get("failures") or [{}])[0].get("error", "?")
        print(f"irs-torch: error: {args.out}: every one of the {c['failed']} instances failed (first error: "
              f"{' '.join(str(first).split())[:300]})", file=sys.stderr)
        return 1
    return 0


def _fmt_stats(s, unit=""):
    if not s:
        return "n/a"
    return (f"median {s['median']:.4g}{unit}  [p10 {s['p10']:.4g}, p90 {s['p90']:.4g}]  "
            f"min {s['min']:.4g}  max {s['max']:.4g}  mean {s['mean']:.4g}")


def run_info(args: argparse.Namespace) -> int:
    from irs_torch.data.integrity import dataset_info

    d = dataset_info(args.dir, verify=args.verify)
    integ = d.get("integrity")
    if integ and integ["checksums_missing"]:
        print(f"irs-torch: warning: {args.dir}/manifest.json records no checksum for {len(integ['checksums_missing'])} "
              f"shard(s) (written by an older irs-torch): their structure and labels were checked, their bytes "
              f"could not be; rerun `irs-torch dataset generate --out {args.dir} --num {d['counts']['requested']}` "
              f"to record checksums", file=sys.stderr)
    if args.json:
        from irs_torch.outputs import dumps

        print(dumps(d, indent=1))
        return 0
    c = d["counts"]
    z = d["sizes"]
    state = "complete" if d["complete"] else "INCOMPLETE: resume with the same generate command"
    print(f"data set {d['root']} ({state})")
    print(f"  instances: {c['requested']} requested, {c['stored']} stored, {c['failed']} failed, "
          f"{c['pending']} pending; {d['shards_written']}/{d['num_shards']} shards of {d['shard_size']}")
    print(f"  sizes: M={z['M']} N={z['N_h']}x{z['N_v']} L={z['L']}; seed {d['dataset_seed']}; solver {d['solver']}")
    v = d["versions"]
    print(f"  versions: irs-torch {v.get('irs_torch')}, solver {v.get('solver')}, cvxpy {v.get('cvxpy')}, "
          f"scs {v.get('scs')}, torch {v.get('torch')}")
    g = d["generator"] or {}
    print(f"  generated in {d['runs']} run(s), {d['elapsed_s']} s in all; last: backend {g.get('backend')}, "
          f"workers {g.get('workers')}, host {g.get('host')}")
    ok = d["solver_success"]
    print(f"  solver success: {ok}/{d['stored']}; status: " + ", ".join(f"{k} {n}" for k, n in d["status"].items()))
    print(f"  max-CRB (tr F^-1, max over IRSs): {_fmt_stats(d['max_crb'])}")
    print(f"  initial point max-CRB:            {_fmt_stats(d['init_max_crb'])}")
    print(f"  max-CRB / initial:                {_fmt_stats(d['max_crb_over_init'])}")
    print(f"  worst-IRS root-CRB(theta+phi):    {_fmt_stats(d['worst_root_crb_angles_deg'], ' deg')}")
    if (d["worst_root_crb_angles_deg"] or {}).get("median", 0.0) > 90.0:
        print("    (a root-CRB above 90 deg means the echoes carry almost no direction information: expected for "
              "tiny arrays at low budgets, as in the smoke-test data sets, not for a realistic design)")
    print(f"  AO iterations:                    {_fmt_stats(d['nit'])}")
    print(f"  solve time per instance:          {_fmt_stats(d['solve_time_s'], ' s')}; "
          f"total {d['total_solve_time_s']:.1f} s")
    print(f"  CPU time per instance:            {_fmt_stats(d['cpu_time_s'], ' s')}")
    if d.get("found_by"):
        won = d["found_by"]
        print("  winning starts (batched labels):  " + ", ".join(f"{k} {n}" for k, n in list(won.items())[:8])
              + (f", {len(won) - 8} more kinds" if len(won) > 8 else ""))
    if integ:
        print(f"  verified: {integ['checksums_verified']}/{integ['shards']} shards match their sha256"
              + (f" ({len(integ['checksums_missing'])} without a recorded checksum)"
                 if integ["checksums_missing"] else "")
              + f"; labels of {integ['instances_checked']} instances consistent (max_crb = max crb, CRB recomputed, "
                f"feasible where success)")
    if d["failures"]:
        print(f"  failures ({len(d['failures'])}):")
        for f in d["failures"][:10]:
            print(f"    instance {f['instance_id']} (seed {f['seed']}): {f['error']}")
        if len(d["failures"]) > 10:
            print(f"    ... {len(d['failures']) - 10} more in {d['root']}/manifest.json")
    return 0


def run_config(args: argparse.Namespace) -> int:
    import yaml

    from irs_torch.data.distribution import PRESETS

    if args.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {args.preset!r}")
    cfg = PRESETS[args.preset]()
    if args.L is not None:
        from irs_torch.data.distribution import irs_boxes

        if args.L < 1:
            raise ValueError(f"--L must be >= 1, got {args.L}")
        cfg = cfg.replace(irs=irs_boxes(args.L))
    if args.effort is not None:
        cfg = cfg.replace(solver={**cfg.solver, "effort": args.effort})
    if args.output:
        from irs_torch.outputs import check_output_path

        check_output_path(args.output, None, "-o/--output")
        print(f"wrote {cfg.save(args.output)}")
    else:
        sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from irs_torch.data.dataset import ShardDataset
    from irs_torch.outputs import check_output_path, npz_path
    from irs_torch.scenario import Solution

    # never overwrite the data set's files, nor write the scenario and the solution to one file
    inputs = [("data set file", str(f)) for f in sorted(Path(args.dir).rglob("*")) if f.is_file()]
    check_output_path(npz_path(args.scenario), inputs, "--scenario")
    if args.solution:
        check_output_path(npz_path(args.solution), inputs + [("--scenario", str(npz_path(args.scenario)))],
                          "--solution")
    ds = ShardDataset(args.dir)
    hit = np.nonzero(ds.instance_ids == args.instance_id)[0]
    if not len(hit):
        failed = {f["instance_id"]: f["error"] for f in ds.manifest["failures"]}
        why = (
            f"it failed: {failed[args.instance_id]}"
            if args.instance_id in failed
            else f"stored ids are {int(ds.instance_ids.min()) if len(ds) else 'none'}.."
            f"{int(ds.instance_ids.max()) if len(ds) else ''}"
        )
        raise ValueError(f"--id {args.instance_id} is not stored in {args.dir} ({why})")
    item = ds[int(hit[0])]
    s = ds.scenario(int(hit[0]))
    print(f"wrote {s.save(args.scenario)}: instance {args.instance_id}, seed {int(item['seed'])}")
    if args.solution:
        sol = Solution.evaluate(s, item["R_s"], item["psi"], method=str(ds.manifest["config"]["solver"]["method"]),
                                metadata={"dataset": str(args.dir), "instance_id": args.instance_id,
                                          "status": item["status"], "nit": int(item["nit"])})
        stored = float(item["max_crb"])
        if not math.isclose(float(sol.crb.max()), stored, rel_tol=1e-9):
            raise ValueError(f"instance {args.instance_id}: recomputed max-CRB {float(sol.crb.max())} differs from "
                             f"the stored {stored}")
        print(f"wrote {sol.save(args.solution)}: max-CRB {stored:.6g}, status {item['status']}")
    return 0

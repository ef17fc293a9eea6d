"""Evaluate the any-size warm-start model per size bucket and write its metrics (JSON) and model card (Markdown).

For each size bucket, instances from the training distribution (random geometry with L IRS boxes, budgets
log-uniform: P_t 1-40 W, P_s 1e-4-1 W, a_max 2-10) with seeds disjoint from training:

- network alone (one batched pass) vs the co-phased start (the solver's ``cophased_start``: co-phased beam
  and reflection, psi at the C1/a_max scale, BS power balanced): median / p90 of the max-CRB ratio, and the
  network's time per instance;
- at the paper size, the network alone vs the per-size budget model (``checkpoints/warm-start-budget.pt``):
  median per-instance ratio (the issue's target: <= 1.10);
- on a few instances of the solver sizes, the network alone and ``solve_learned`` (network + the runtime's
  default refinement) vs the default solver ``solve(s, method="ao")``: median ratio and time ratio.

  OMP_NUM_THREADS=1 python scripts/eval_anysize.py --model checkpoints/warm-start-any.pt \\
      --json checkpoints/warm-start-any.metrics.json --card checkpoints/warm-start-any.md
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from irs_torch.data.distribution import DatasetConfig, irs_boxes
from irs_torch.learn.anysize import load_model
from irs_torch.scenario import Scenario

BUDGETS = {"P_t": (1.0, 40.0), "P_s": (1e-4, 1.0), "a_max": (2.0, 10.0)}
PAPER = (16, 4, 4, 2)
HELD_OUT = ((24, 6, 6, 3), (48, 8, 8, 2), (8, 3, 5, 4))
NET_SIZES = (PAPER,) + HELD_OUT + ((4, 2, 2, 1), (64, 12, 12, 4), (32, 4, 8, 2), (12, 10, 3, 1), (40, 7, 7, 4))
SOLVER_SIZES = HELD_OUT + (PAPER, (4, 2, 2, 1))
SEED0 = 7 * 10 ** 9  # evaluation seeds: far from the training and validation streams


def scenarios(size, n, offset=0):
    M, N_h, N_v, L = size
    cfg = DatasetConfig(M=M, N_h=N_h, N_v=N_v, irs=irs_boxes(L), budget_sampling="log-uniform", **BUDGETS)
    return [cfg.scenario(SEED0 + 10 ** 6 * (hash(size) % 1000) + offset + i) for i in range(n)]


def max_crb(s: Scenario, R, psi) -> torch.Tensor:
    return s.crb(R.to(torch.complex128), psi.to(torch.complex128), validate=False).total.amax(-1)


def quant(x) -> dict:
    x = np.asarray(x, dtype=float)
    return {"median": float(np.median(x)), "p90": float(np.quantile(x, 0.9)), "min": float(x.min()),
            "max": float(x.max()), "n": int(x.size)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="checkpoints/warm-start-any.pt")
    p.add_argument("--n-net", type=int, default=32, help="instances per size for the network comparisons")
    p.add_argument("--n-solver", type=int, default=3, help="instances per size for the solver comparison")
    p.add_argument("--solver-sizes", default="all", help="'all' or a comma list of indices into the solver sizes")
    p.add_argument("--solver-cache", default=None,
                   help="JSON of the default solver's results per instance (read if present, extended, written): the "
                        "reference does not depend on the model, so it is computed once")
    p.add_argument("--solver-only", action="store_true", help="only fill the solver cache")
    p.add_argument("--json", default=None)
    p.add_argument("--card", default=None)
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    from irs_torch.solvers import solve
    from irs_torch.solvers.starts import cophased_start

    cache = {}
    if a.solver_cache and Path(a.solver_cache).is_file():
        cache = json.loads(Path(a.solver_cache).read_text())
    sizes = SOLVER_SIZES if a.solver_sizes == "all" else [SOLVER_SIZES[int(i)] for i in a.solver_sizes.split(",")]

    def reference(size, i, s):
        key = f"{'x'.join(map(str, size))}/{i}"
        if key not in cache:
            t = time.perf_counter()
            r = solve(s, method="ao")
            cache[key] = {"max_crb": float(r.max_crb), "seconds": time.perf_counter() - t, "success": bool(r.success)}
            print(size, i, cache[key], flush=True)
            if a.solver_cache:
                from irs_torch.outputs import atomic_write_text
                atomic_write_text(Path(a.solver_cache), json.dumps(cache, indent=2) + "\n")
        return cache[key]

    if a.solver_only:
        for size in sizes:
            for i, s in enumerate(scenarios(size, a.n_solver, offset=100)):
                reference(size, i, s)
        return 0
    net = load_model(a.model)
    res = {"model": str(a.model), "threads": torch.get_num_threads(), "net": {}, "solver": {}}
    for size in NET_SIZES:
        sc = scenarios(size, a.n_net)
        b = Scenario.stack(sc)
        with torch.no_grad():
            net(b[:2])  # warm-up
            t = time.perf_counter()
            d = net(b)
            dt = time.perf_counter() - t
        c_net = max_crb(b, d.R_s, d.psi)
        c_co = torch.stack([max_crb(s, *cophased_start(s)) for s in sc])
        row = {"vs_cophased": quant((c_net / c_co).tolist()), "ms_per_instance": 1e3 * dt / len(sc),
               "feasible": bool(b.is_feasible(d.R_s, d.psi).all())}
        if size == PAPER:
            from irs_torch.learn.checkpoint import load_model as load_per_size
            from irs_torch.learn.checkpoint import predict

            per = Path(__file__).resolve().parents[1] / "checkpoints" / "warm-start-budget.pt"
            if per.is_file():
                R, psi = predict(load_per_size(per), b)
                row["vs_per_size_budget_model"] = quant((c_net / max_crb(b, R, psi)).tolist())
            b1000 = Scenario.stack(scenarios(size, 1000, offset=5000))
            with torch.no_grad():
                t = time.perf_counter()
                net(b1000)
                row["seconds_1000_instances"] = time.perf_counter() - t
        res["net"]["x".join(map(str, size))] = row
        print(size, json.dumps(row), flush=True)
    from irs_torch.inference import solve_learned

    for size in sizes:
        rows = []
        for i, s in enumerate(scenarios(size, a.n_solver, offset=100)):
            ref = reference(size, i, s)
            t_ref = ref["seconds"]
            with torch.no_grad():
                t = time.perf_counter()
                d = net(s)
                t_net = time.perf_counter() - t
            c_net = float(max_crb(s, d.R_s, d.psi))
            t = time.perf_counter()
            lr = solve_learned(s, net=net, verbose=False)
            t_l = time.perf_counter() - t
            rows.append({"solver_max_crb": ref["max_crb"], "solver_s": t_ref, "net_ratio": c_net / ref["max_crb"],
                         "net_s": t_net, "learned_ratio": lr.max_crb / ref["max_crb"], "learned_s": t_l,
                         "learned_time_ratio": t_l / t_ref, "solver_success": ref["success"]})
            print(size, json.dumps(rows[-1]), flush=True)
        res["solver"]["x".join(map(str, size))] = {
            "instances": rows, "net_ratio": quant([r["net_ratio"] for r in rows]),
            "learned_ratio": quant([r["learned_ratio"] for r in rows]),
            "time_ratio": quant([r["learned_time_ratio"] for r in rows]),
            "solver_s": quant([r["solver_s"] for r in rows]), "learned_s": quant([r["learned_s"] for r in rows])}
    if a.json:
        from irs_torch.outputs import atomic_write_text
        atomic_write_text(Path(a.json), json.dumps(res, indent=2) + "\n")
        print(f"wrote {a.json}")
    if a.card:
        from irs_torch.outputs import atomic_write_text
        atomic_write_text(Path(a.card), card(res, net))
        print(f"wrote {a.card}")
    return 0


def card(res: dict, net) -> str:
    meta = net.meta or {}
    tr = meta.get("training", {})
    lines = ["# warm-start-any: one warm-start model for every array size", "",
             "Sizes: M 4-64 BS antennas, N_h and N_v 2-12 IRS elements, L 1-4 IRSs (sidecar `size_ranges`); active "
             "IRSs; budgets as the budget model's data (P_t 1-40 W, P_s 1e-4-1 W, a_max 2-10, log-uniform). "
             "Outside the ranges the model warns and still predicts (feasible designs).", "",
             f"Architecture: `irs_torch.learn.anysize.AnySizeNet` {json.dumps(net.config())}, "
             f"{sum(p.numel() for p in net.parameters())} parameters.", "",
             f"Training: unsupervised on the differentiable CRB (no solver labels), seed {meta.get('seed')}, "
             f"{tr.get('steps')} steps in {float(tr.get('minutes') or 0):.0f} min on one CPU thread of a shared "
             f"2-core machine; held-out sizes {tr.get('held_out_sizes')}. Command: `{tr.get('command')}`.", "",
             f"Evaluation: `python scripts/eval_anysize.py` ({res['threads']} thread(s), machine shared with other "
             f"jobs, so times are indicative). Instances from the training distribution with unseen seeds.", "",
             "## Network alone, per size bucket", "",
             "| size (M, N_h x N_v, L) | n | max-CRB / co-phased start: median (p90) | ms per instance (batched) |",
             "|---|---|---|---|"]
    for k, r in res["net"].items():
        M, Nh, Nv, L = k.split("x")
        v = r["vs_cophased"]
        lines.append(f"| {M}, {Nh} x {Nv}, {L} | {v['n']} | {v['median']:.3f} ({v['p90']:.3f}) | "
                     f"{r['ms_per_instance']:.2f} |")
    pr = res["net"].get("x".join(map(str, PAPER)), {})
    lines += [""]
    if "vs_per_size_budget_model" in pr:
        v = pr["vs_per_size_budget_model"]
        lines += [f"At the paper size (16, 4 x 4, 2): any-size network / per-size budget model "
                  f"(`warm-start-budget.pt`), per instance: median {v['median']:.3f}, p90 {v['p90']:.3f} "
                  f"(n = {v['n']}; target <= 1.10)."]
    if "seconds_1000_instances" in pr:
        lines += [f"Prediction of 1000 paper-size instances in one batch: {pr['seconds_1000_instances']:.2f} s."]
    lines += ["", "## Against the default solver (few instances per size)", "",
              "`solve(s, method=\"ao\")` (default effort) vs the network alone and vs `solve_learned` (network + the "
              "runtime's default refinement). Few instances: the solver takes seconds to minutes per instance at "
              "the larger sizes on this machine.", "",
              "| size | n | network / solver: median (max) | learned / solver: median (max) | learned time / solver "
              "time: median | solver s (median) |", "|---|---|---|---|---|---|"]
    for k, r in res["solver"].items():
        M, Nh, Nv, L = k.split("x")
        lines.append(f"| {M}, {Nh} x {Nv}, {L} | {r['net_ratio']['n']} | {r['net_ratio']['median']:.3f} "
                     f"({r['net_ratio']['max']:.3f}) | {r['learned_ratio']['median']:.3f} "
                     f"({r['learned_ratio']['max']:.3f}) | {r['time_ratio']['median']:.3f} | "
                     f"{r['solver_s']['median']:.1f} |")
    lines += ["", "Metrics: `warm-start-any.metrics.json` (this card's numbers, per instance for the solver rows).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

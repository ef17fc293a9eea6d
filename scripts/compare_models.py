#!/usr/bin/env python
"""Warm-start models side by side, and against the strongest non-learned start, at equal first-order steps.

    python scripts/compare_models.py --models checkpoints/warm-start-budget.pt runs/ft/model.pt \\
        --labels data/budget-fo --split test --steps 50 200 --out runs/compare.json

Instances: the quality suite's instances of the models' sizes (reference: the best design known,
benchmarks/quality) and the ``--split`` of a solver-labelled data set (reference: its labels; the `first-order`
effort's labels are within ~1% of the best known, training/README.md). Per model: the network's design alone and
its 4 best designs after K batched first-order steps (no P2 polish); once for all models: 4 heuristic starts
(aligned + random phases, ``irs_torch.bench.warmstart_methods.heuristic_starts``) after the same K steps. Ratios
of the max-CRB to the reference, median and p90, over all instances and over those where C1 binds at the
reference design. One torch thread; one process, so the methods are timed side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _q(x, p):
    import torch

    x = torch.as_tensor(x, dtype=torch.float64)
    return float(torch.quantile(x, p)) if x.numel() else float("nan")


def labelled_split(root, split: str, limit: int | None):
    import torch

    from irs_torch.data.dataset import ShardDataset, scenario_from_batch

    ds = ShardDataset(root, split=split, fractions=(0.8, 0.1, 0.1), require_success=True, in_memory=True,
                      keys=["G", "theta", "phi", "beta", "P_t", "P_s", "a_max", "sigma_r2", "sigma_b2", "T_c",
                            "R_s", "psi", "max_crb"])
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise ValueError(f"--labels {root}: no successful instances in split {split!r}")
    b = torch.utils.data.default_collate([ds[i] for i in range(n)])
    return scenario_from_batch(b, ds.attrs).to(torch.complex128), b["max_crb"].double(), b["R_s"], b["psi"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="model files (.pt) of the same sizes")
    p.add_argument("--labels", default=None, help="solver-labelled data set (its --split is the second group)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--limit", type=int, default=None, help="at most this many labelled instances")
    p.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    p.add_argument("--out", default=None, help="write the summary as JSON here")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from irs_torch.bench.batch_warmstart import method_starts
    from irs_torch.bench.warmstart_methods import suite_instances
    from irs_torch.inference import refine_fo
    from irs_torch.learn.checkpoint import load_model
    from irs_torch.learn.regimes import c1_binding
    from irs_torch.scenario import Scenario

    nets = [load_model(m) for m in a.models]
    hp = nets[0].hparams if hasattr(nets[0], "hparams") else {}
    sizes = {k: int(getattr(nets[0], k, hp.get(k))) for k in ("M", "N_h", "N_v", "L")}
    groups = {}
    suite = suite_instances(sizes)
    if suite:
        scn = Scenario.stack([i["scenario"] for i in suite]).to(torch.complex128)
        groups["suite"] = (scn, torch.tensor([i["ref_max_crb"] for i in suite], dtype=torch.float64), None)
    if a.labels:
        scn, ref, R, psi = labelled_split(a.labels, a.split, a.limit)
        groups[f"labels-{a.split}"] = (scn, ref, c1_binding(scn, R.to(torch.complex128), psi.to(torch.complex128)))
    rows = []
    for g, (scn, ref, binding) in groups.items():
        B = int(scn.batch_shape[0])
        if binding is None:  # suite: C1 at the network-free heuristic's refined design is not the reference's;
            binding = torch.ones(B, dtype=torch.bool)  # the suite's paper-size instances are mostly C1-binding
            c1_note = "all"
        else:
            c1_note = "C1 binds at the label"
        methods = {}
        for j, net in enumerate(nets):
            t = time.perf_counter()
            R0, p0 = method_starts("net", net, scn)
            t0 = time.perf_counter() - t
            methods[f"model{j}"] = (scn.crb(R0[0], p0[0], validate=False).total.amax(-1), t0)
            for K in a.steps:
                t = time.perf_counter()
                fo = refine_fo(scn, R0, p0, steps=int(K), polish=False)
                methods[f"model{j}+fo@{K}"] = (fo.max_crb, time.perf_counter() - t + t0)
        t = time.perf_counter()
        R0, p0 = method_starts("heur", None, scn)
        t0 = time.perf_counter() - t
        for K in a.steps:
            t = time.perf_counter()
            fo = refine_fo(scn, R0, p0, steps=int(K), polish=False)
            methods[f"heur+fo@{K}"] = (fo.max_crb, time.perf_counter() - t + t0)
        for m, (v, sec) in methods.items():
            r = (v / ref).tolist()
            rb = [x for x, b in zip(r, binding.tolist()) if b]
            rows.append({"group": g, "method": m, "n": B, "median": _q(r, 0.5), "p90": _q(r, 0.9),
                         "n_c1": len(rb), "c1_median": _q(rb, 0.5), "c1_p90": _q(rb, 0.9),
                         "instances_per_s": B / sec, "c1_subset": c1_note})
    print("| group | method | n | median | p90 | C1 n | C1 median | C1 p90 | inst/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['group']} | `{r['method']}` | {r['n']} | {r['median']:.4f} | {r['p90']:.4f} | {r['n_c1']} | "
              f"{r['c1_median']:.4f} | {r['c1_p90']:.4f} | {r['instances_per_s']:.1f} |")
    print("models: " + ", ".join(f"model{j} = {m}" for j, m in enumerate(a.models)))
    if a.out:
        from irs_torch.outputs import atomic_write_text

        atomic_write_text(a.out, json.dumps({"models": a.models, "labels": a.labels, "split": a.split,
                                             "steps": a.steps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

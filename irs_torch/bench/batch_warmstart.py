"""Batch benchmark of the learned warm start: whole batches of scenarios, every method side by side in one run.

``irs-torch bench warmstart --batch N`` is a thin wrapper of :func:`bench_batch`. Two groups of instances:

- ``suite``: the quality suite's instances of the model's sizes (``benchmarks/quality``); reference = the
  best-known design (:mod:`irs_torch.bench.quality`);
- ``dist``: ``N`` draws of the model's budget distribution (the data-set config the model was trained on,
  drawn with another seed: held out); reference ``label`` = the cold default solver on the first ``n_label`` of
  them, and ``best`` = the best design any method found for the instance in this run (all N).

Methods (the same refiner for every start: :func:`irs_torch.inference.refine_fo`; ``K`` = first-order step cap):

===================  =========================================================================================
``net``              the network's design alone (one batched pass)
``net+fo@K``         the network's 4 best designs refined together by K first-order steps, no P2 polish
``net+fo@K+p2``      the same, then one P2 solve per instance (R_s certified optimal for psi)
``heur+fo@K[+p2]``   4 heuristic starts (:func:`irs_torch.bench.warmstart_methods.heuristic_starts`: aligned + random
                     phases) with the same refiner: the strongest non-learned start at equal steps
``net+heur+fo@K``    the network's 4 designs and 4 diverse heuristic starts (2 of them also from 10 P_s) refined
[+p2]                together (3x the starts of the others): do the two kinds of start cover each other's misses?
``net+ao3``          the network's design + 3 AO iterations (``refine="ao"``), item by item
``ao-default``       the cold default solver, item by item
===================  =========================================================================================

Batched methods run over the whole group at once (instances/s is the group's size over the call's wall time);
P2 polishes, ``net+ao3`` and ``ao-default`` run item by item on the suite and the first ``n_label`` draws only
(their cost per instance is seconds). One torch thread by default. Outputs under ``out``: ``rows.jsonl`` (one
line per (group, method): per-instance max-CRBs and the wall time; the resume log: a rerun with the same
configuration computes only what is missing), ``batch.json`` (configuration, machine, summaries),
``batch.png`` (median ratio vs time per instance).
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import torch

FORMAT = "irs-torch/bench-warmstart-batch"
KS = (10, 50, 200, 400)
STARTS = 4


def _q(x, p):
    x = sorted(v for v in x if math.isfinite(v))
    return x[min(len(x) - 1, int(round(p * (len(x) - 1))))] if x else math.nan


def machine() -> dict:
    """Where the numbers come from: CPU count, model, load average, torch threads, GPU, date."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {"cpus": os.cpu_count(), "cpu": cpu, "load_avg": [round(x, 2) for x in load],
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


#: The budget model's data-set config (the distribution the ``dist`` group draws from by default).
DATA_CONFIG = Path(__file__).resolve().parents[2] / "training" / "budget-data.yaml"


def _instances(sizes: dict, n: int, seed: int, data_config, suite_dir=None):
    """``(suite scenarios (B,), suite best-known max-CRBs, dist scenarios (n,), suite ids)``, complex128."""
    from irs_torch.bench.warmstart_methods import suite_instances
    from irs_torch.data.distribution import load_config
    from irs_torch.scenario import Scenario

    suite = suite_instances(sizes, suite_dir)
    s_scn = Scenario.stack([i["scenario"] for i in suite]) if suite else None
    s_ref = torch.tensor([i["ref_max_crb"] for i in suite], dtype=torch.float64)
    path = Path(data_config)
    if not path.is_file():
        raise FileNotFoundError(f"--data-config: no data-set config at {path} (the budget distribution to draw from)")
    cfg = load_config(path)
    got = {"M": cfg.M, "N_h": cfg.N_h, "N_v": cfg.N_v, "L": cfg.L}
    if got != sizes:
        raise ValueError(f"--data-config {path} is for sizes {got}, the model for {sizes}")
    cfg = cfg.replace(seed=int(seed))
    d_scn = Scenario.stack([cfg.instance_scenario(i) for i in range(int(n))]).to(torch.complex128)
    return s_scn, s_ref, d_scn, [i["id"] for i in suite]


def method_starts(method: str, net, scn):
    """Starts ``(R0 (K, B, L, M, M), psi0 (K, B, L, N))`` of a method's kind for the batch ``scn``: the network's
    :data:`STARTS` best designs (``method`` starting with "net") or :data:`STARTS` heuristic starts per instance."""
    from irs_torch.bench.warmstart_methods import heuristic_starts
    from irs_torch.inference import network_starts

    if method.startswith("net"):
        return network_starts(net, scn, STARTS)
    B = int(scn.batch_shape[0])
    hs = [heuristic_starts(scn[i], STARTS) for i in range(B)]
    return (torch.stack([torch.stack([h[0] for h in hi]) for hi in hs], 1).to(torch.complex128),
            torch.stack([torch.stack([h[1] for h in hi]) for hi in hs], 1).to(torch.complex128))


def _run_group(scn, net, ks, n_item: int, options, log) -> dict:
    """All methods on one group; returns ``{method: {"max_crb": [...], "seconds": s, "n": count}}`` where item-by-
    item methods cover the first ``n_item`` instances only."""
    from irs_torch.inference import polish_transmit, refine_fo, refine_starts
    from irs_torch.solvers import solve

    B = int(scn.batch_shape[0])
    out = {}
    t = time.perf_counter()
    R, psi = method_starts("net", net, scn)
    out["net"] = {"max_crb": scn.crb(R[0], psi[0], validate=False).total.amax(-1).tolist(),
                  "seconds": time.perf_counter() - t, "n": B}
    log(f"  net: {out['net']['seconds']:.2f} s")
    for kind in ("net", "heur", "net+heur"):
        t = time.perf_counter()
        R0, p0 = method_starts(kind, net, scn)
        t_start = time.perf_counter() - t
        extra = {"extra_starts": STARTS, "relaxed": STARTS // 2} if kind == "net+heur" else {}
        for K in ks:
            t = time.perf_counter()
            fo = refine_fo(scn, R0, p0, options=options, steps=int(K), polish=False, **extra)
            sec = time.perf_counter() - t + t_start
            out[f"{kind}+fo@{K}"] = {"max_crb": fo.max_crb.tolist(), "seconds": sec, "n": B,
                                     "steps_mean": float(fo.steps.double().mean())}
            t = time.perf_counter()
            pol = [polish_transmit(scn[i], fo.R_s[i], fo.psi[i], options)[1]["max_crb"] for i in range(n_item)]
            sec_p = time.perf_counter() - t
            out[f"{kind}+fo@{K}+p2"] = {"max_crb": pol, "seconds": sec * n_item / B + sec_p, "n": n_item}
            log(f"  {kind}+fo@{K}: {sec:.1f} s for {B} ({B / sec:.1f}/s), mean steps "
                f"{out[f'{kind}+fo@{K}']['steps_mean']:.0f}; P2 polish {sec_p:.1f} s for {n_item}")
    t = time.perf_counter()
    ao3 = [refine_starts(scn[i], [(R[0, i], psi[0, i])], options, 3)[0].max_crb for i in range(n_item)]
    out["net+ao3"] = {"max_crb": ao3, "seconds": time.perf_counter() - t + out["net"]["seconds"] * n_item / B,
                      "n": n_item}
    log(f"  net+ao3: {out['net+ao3']['seconds']:.1f} s for {n_item}")
    t = time.perf_counter()
    out["ao-default"] = {"max_crb": [solve(scn[i], method="ao", options=options).max_crb for i in range(n_item)],
                         "seconds": time.perf_counter() - t, "n": n_item}
    log(f"  ao-default: {out['ao-default']['seconds']:.1f} s for {n_item}")
    return out


def summarize(res: dict, ref: list, per_default: float | None) -> dict:
    """Per method: ratio median / p90 / max to ``ref`` (over the instances the method covered), instances/s and
    time per instance relative to ``ao-default``'s (``per_default``: its seconds per instance)."""
    out = {}
    for m, r in res.items():
        n = int(r["n"])
        rat = [a / b for a, b in zip(r["max_crb"][:n], ref[:n]) if math.isfinite(b) and b > 0]
        per = r["seconds"] / max(n, 1)
        out[m] = {"n": n, "ratio_median": _q(rat, 0.5), "ratio_p90": _q(rat, 0.9),
                  "ratio_max": max(rat, default=math.nan),
                  "instances_per_s": 1.0 / per if per > 0 else math.inf, "seconds_per_instance": per,
                  "time_vs_default": per / per_default if per_default else math.nan}
    return out


def bench_batch(out, *, checkpoint=None, n: int = 1000, n_label: int = 50, seed: int = 1_000_003, ks=KS,
                threads: int | None = 1, suite_dir=None, data_config=DATA_CONFIG, groups=("suite", "dist"),
                progress: bool = True) -> dict:
    """Run the batch benchmark (module docstring) and write its outputs under ``out``; returns the summary dict.
    ``n``: budget-distribution draws (>= 1); ``n_label``: how many of them (and at most how many suite
    instances) the item-by-item methods and the P2 polish run on; ``seed``: the draws' data-set seed (recorded)."""
    from irs_torch.inference import find_checkpoint
    from irs_torch.learn.checkpoint import load_model, read_sidecar
    from irs_torch.scenario import paper_scenario
    from irs_torch.solvers import SolverOptions

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000:
        raise ValueError(f"--batch must be an integer in [1, 100000], got {n!r}")
    if isinstance(n_label, bool) or not isinstance(n_label, int) or not 0 <= n_label <= n:
        raise ValueError(f"--n-label must be an integer in [0, --batch={n}], got {n_label!r}")
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = print if progress else (lambda *a, **k: None)
    ckpt = Path(checkpoint) if checkpoint else find_checkpoint(paper_scenario(0, P_t=1.0, P_s=1e-4))
    sizes = {k: int(v) for k, v in read_sidecar(ckpt)["sizes"].items()}
    net = load_model(ckpt)
    s_scn, s_ref, d_scn, suite_ids = _instances(sizes, n, seed, data_config, suite_dir)
    options = SolverOptions()
    config = {"checkpoint": str(ckpt), "n": n, "n_label": n_label, "seed": seed, "ks": list(ks), "starts": STARTS,
              "threads": threads, "data_config": str(data_config)}
    key = json.dumps(config, sort_keys=True)
    log_path = out / "rows.jsonl"
    done = {}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run: recomputed
            if rec.get("config") == key:
                done[rec["group"]] = rec["result"]
    results = {}
    bad = [g for g in groups if g not in ("suite", "dist")]
    if bad or not groups:
        raise ValueError(f"--groups must name suite and/or dist, got {list(groups)}")
    for g, scn in (("suite", s_scn), ("dist", d_scn)):
        if scn is None or g not in groups:
            continue
        if g in done:
            results[g] = done[g]
            log(f"{g}: resumed from {log_path}")
            continue
        log(f"{g}: {int(scn.batch_shape[0])} instances")
        n_item = min(n_label, int(scn.batch_shape[0]))
        results[g] = _run_group(scn, net, ks, n_item, options, log)
        with open(log_path, "a") as f:
            f.write(json.dumps({"config": key, "group": g, "result": results[g]}) + "\n")
    summary = {"format": FORMAT, "config": config, "machine": machine(), "suite_ids": suite_ids, "groups": {}}
    if "suite" in results:
        r = results["suite"]
        per_def = r["ao-default"]["seconds"] / max(r["ao-default"]["n"], 1)
        summary["groups"]["suite (ratio to best-known)"] = summarize(r, s_ref.tolist(), per_def)
    if "dist" in results:
        r = results["dist"]
        per_def = r["ao-default"]["seconds"] / max(r["ao-default"]["n"], 1) if r["ao-default"]["n"] else None
        label = r["ao-default"]["max_crb"]
        if label:
            summary["groups"][f"dist, first {len(label)} (ratio to the default solver)"] = summarize(r, label, per_def)
        best = [min(v["max_crb"][i] for v in r.values() if i < len(v["max_crb"])) for i in range(n)]
        full = {m: v for m, v in r.items() if int(v["n"]) == n}
        summary["groups"][f"dist, all {n} (ratio to the best found in this run)"] = summarize(full, best, per_def)
    from irs_torch.outputs import atomic_write_text
    atomic_write_text(out / "batch.json", json.dumps(summary, indent=1))
    _plot(out / "batch.png", summary)
    return summary


def format_table(summary: dict) -> str:
    """The summary as text tables, one per group."""
    lines = [f"machine: {summary['machine']}", f"config: {summary['config']}"]
    for g, rows in summary["groups"].items():
        lines += ["", g, f"{'method':<16} {'n':>5} {'median':>8} {'p90':>8} {'max':>8} {'inst/s':>9} "
                         f"{'time/default':>12}"]
        for m, v in rows.items():
            lines.append(f"{m:<16} {v['n']:>5} {v['ratio_median']:>8.4f} {v['ratio_p90']:>8.4f} {v['ratio_max']:>8.3f} "
                         f"{v['instances_per_s']:>9.2f} {v['time_vs_default']:>12.3f}")
    return "\n".join(lines)


def _plot(path: Path, summary: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summary["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    for ax, (g, rows) in zip(axes[0], groups.items()):
        for m, v in rows.items():
            if not math.isfinite(v["ratio_median"]):
                continue
            x = v["seconds_per_instance"]
            ax.errorbar([x], [v["ratio_median"]], yerr=[[0], [max(v["ratio_p90"] - v["ratio_median"], 0)]],
                        fmt="o" if m.startswith("net") else "s", capsize=3, label=m)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per instance (batched methods: batch time / batch size)")
        ax.set_ylabel("max-CRB ratio: median (bar to p90)")
        ax.set_title(g, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"warm-start batch benchmark ({summary['machine']['cpus']} CPUs, load "
                 f"{summary['machine']['load_avg'][0]}, {summary['machine']['date']})", fontsize=9)
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


__all__ = ["bench_batch", "format_table", "summarize", "machine", "KS"]

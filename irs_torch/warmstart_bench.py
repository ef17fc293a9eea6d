"""The warm-start benchmark: the learned warm start against honest baselines.

``irs-torch bench warmstart`` is a thin wrapper of :func:`bench_warmstart`. For every instance, all
methods run side by side, on the same instance, on the same machine, in one process (one torch
thread by default, the conic problems compiled before any timed solve), and each is reported as a
ratio of its max-CRB to a *reference* max-CRB, with its wall time:

- source ``suite``: the quality suite (``benchmarks/quality``: ``suite.json`` and the best-known
  designs ``best/*.npz``, :mod:`irs_torch.quality`) restricted to the model's sizes (M, N_h, N_v, L);
  reference = the best-known design;
- source ``data``: a data set's split (default: the test split, with the fractions the model was
  trained with); reference = the stored label (the data-set solver's design).

Methods (:data:`METHODS`; "refine" is always the same refinement stage,
:func:`irs_torch.runtime.refine_starts`: the AO with :func:`irs_torch.runtime.warm_start_options`,
``refine_iter`` iterations, one P3 start, from each start, keeping the best):

=====================  ===========================================================================
``net``                the network alone (one unbatched forward pass; its wall time)
``net+refine``         the network's design + refine (``solve_learned``)
``ao-default``         the cold AO, ``effort="default"`` (the library default)
``ao-legacy``          the cold AO, ``effort="legacy"`` (one random start)
``ao-capped``          the cold legacy AO capped at the AO iterations ``net+refine`` used there
``aligned+refine``     the ``aligned`` start (co-phased psi, isotropic R_s, power balance) + refine
``cophased+refine``    :func:`irs_torch.solvers.strategy.cophased_start` (beam + co-phased psi) + refine
``adam@1x``            a first-order design (:func:`first_order_design`, Adam on the smooth max
                       angle CRB, the method of :func:`irs_torch.estimation.designs.adam_design`)
                       given the network's wall time on that instance
``adam@100x``          the same given 100x the network's wall time (time-, not step-budgeted)
``net+refine@k``       portfolio: the network's k best designs
                       (:func:`irs_torch.runtime.network_hypotheses`) each refined, best kept
``heuristic+refine@k`` the aligned start + k - 1 random-phase variants
                       (:func:`irs_torch.solvers.strategy.random_start`), each refined, best kept
``random+refine@k``    k random starts (the AO's own, seeds ``seed .. seed + k - 1``), each refined
=====================  ===========================================================================

(k = 1 of the portfolio: ``net+refine``, ``aligned+refine`` and ``random+refine@1``.) Times:
``net+refine*`` include the network's forward pass; heuristic and random starts include computing
the starts; k refinements run one after another (their times add).

Breakdowns (:mod:`irs_torch.learn.regimes`): C1 regime at the reference design (``c1-binding`` /
``standard``), P_s decade and P_t low/high buckets.

Outputs under ``out``: ``rows.jsonl`` (the resume log: one JSON line per (source, instance, method),
keyed by the configuration; a rerun computes only what is missing), ``warmstart.csv`` (one row per
instance and method), ``warmstart.json`` (config, per-method summaries per source and group, the
design targets checked), ``warmstart_<source>.png`` (ratio distribution per method and regime; ratio
vs time). Nothing is written into the inputs.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from irs_torch.learn.regimes import REGIMES, c1_binding, ps_bucket, pt_bucket

FORMAT = "irs-torch/bench-warmstart"
BASE_METHODS = ("net", "net+refine", "ao-default", "ao-legacy", "ao-capped", "aligned+refine", "cophased+refine",
                "adam@1x", "adam@100x")
HYPOTHESES = (1, 2, 4)
ADAM_FACTORS = {"adam@1x": 1.0, "adam@100x": 100.0}
SOURCES = ("suite", "data")
#: Design targets of the warm start (network alone; refined; time against the default solver), checked.
TARGETS = {"net_median": 1.10, "net_p90": 1.30, "refine_median": 1.02, "refine_time_vs_default": 0.25,
           "c1_gain_vs_heuristic": 0.03}


def portfolio_methods(ks=HYPOTHESES) -> list[str]:
    """Method names of the portfolio comparison for sizes ``ks`` (k = 1 is the base methods, except
    ``random+refine@1``)."""
    out = []
    for k in ks:
        if k > 1:
            out += [f"net+refine@{k}", f"heuristic+refine@{k}"]
        out.append(f"random+refine@{k}")
    return out


def all_methods(ks=HYPOTHESES) -> list[str]:
    return list(BASE_METHODS) + portfolio_methods(ks)


METHODS = tuple(all_methods())


def is_method(name: str) -> bool:
    """Whether ``name`` is a method of the benchmark (a base method or ``<portfolio kind>@<k>``)."""
    kind, at, k = name.partition("@")
    return name in BASE_METHODS or (bool(at) and kind in ("net+refine", "heuristic+refine", "random+refine")
                                    and k.isdigit() and int(k) >= 1)


# ----------------------------------------------------------------------------- instances
def suite_instances(sizes: dict, suite_dir=None, quick: bool = False, ids=None, limit: int | None = None) -> list[dict]:
    """Quality-suite instances of the given sizes (``M``, ``N_h``, ``N_v``, ``L``) that have a best-known
    design: dicts with ``source`` "suite", ``id``, ``scenario`` (complex128), ``ref_max_crb``,
    ``ref_R_s``, ``ref_psi`` (the best-known design)."""
    from irs_torch import quality as Q

    suite_dir = Path(suite_dir) if suite_dir is not None else Q.SUITE_DIR
    out = []
    for inst in Q.load_suite(suite_dir, quick=quick, ids=ids):
        g = inst["geometry"]
        if (int(g["M"]), int(g.get("N_h", 4)), int(g.get("N_v", 4))) != (sizes["M"], sizes["N_h"], sizes["N_v"]):
            continue
        s = Q.build_scenario(inst).to(torch.complex128)
        if s.L != sizes["L"]:
            continue
        sol, mx = Q.load_best(suite_dir, inst)
        if sol is None:
            continue
        out.append({"source": "suite", "id": inst["id"], "scenario": s, "ref_max_crb": float(mx),
                    "ref_R_s": sol.R_s.to(torch.complex128), "ref_psi": sol.psi.to(torch.complex128)})
        if limit is not None and len(out) >= limit:
            break
    return out


def data_instances(data, split: str = "test", fractions=None, limit: int | None = None) -> list[dict]:
    """Instances of a data set's split (solved ones only): dicts as :func:`suite_instances` with
    source "data", ``id`` the instance id and the stored label as the reference."""
    from irs_torch.data import ShardDataset

    ds = ShardDataset(data, split=split, fractions=fractions or (0.8, 0.1, 0.1), require_success=True)
    n = len(ds) if limit is None else min(limit, len(ds))
    out = []
    for i in range(n):
        item = ds[i]
        s = ds.scenario(i).to(torch.complex128)
        R, psi = item["R_s"].to(torch.complex128), item["psi"].to(torch.complex128)
        out.append({"source": "data", "id": str(int(ds.instance_ids[i])), "scenario": s,
                    "ref_max_crb": float(s.max_crb(R, psi)), "ref_R_s": R, "ref_psi": psi,
                    "label_max_crb": float(item["max_crb"])})
    return out


# ----------------------------------------------------------------------------- baselines
def first_order_design(scenario, seconds: float, seed: int = 0, lr: float = 0.03, sharpness: float = 30.0):
    """A time-budgeted first-order design: :func:`irs_torch.estimation.designs.adam_design` on the
    max-CRB (``objective="total"``: Adam on ``logsumexp(sharpness * log tr(F_l^-1)) / sharpness``, every
    iterate feasible), from the isotropic R_s and the co-phased psi of the dominant transmit direction,
    until ``seconds`` of wall time are spent (at least one step; the start's cost counts). Returns
    ``(R_s (L, M, M), psi (L, N), steps)``, the best iterate by the exact max-CRB."""
    from irs_torch.estimation.designs import adam_design
    from irs_torch.physics.steering import cophasing_psi

    t0 = time.perf_counter()
    s = scenario.to(torch.complex128)
    w = torch.linalg.eigh(s.G.conj().transpose(-1, -2) @ s.G)[1][..., -1]
    psi0 = s.scale_psi_to_feasible(s.isotropic_design(), cophasing_psi(s, w))
    left = max(0.0, float(seconds) - (time.perf_counter() - t0))
    return adam_design(s, lr=lr, seed=seed, init_psi=psi0, sharpness=sharpness, seconds=left, objective="total",
                       return_steps=True)


def heuristic_starts(scenario, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The aligned start (:func:`irs_torch.solvers.initial_point` ``{"kind": "aligned"}``) and ``k - 1``
    random-phase variants (:func:`irs_torch.solvers.strategy.random_start`, amplitude levels 1 and 0.5
    of a_max, isotropic and beamformed R_s alternating). Shapes ``[(R_s (L, M, M), psi (L, N))]``."""
    from irs_torch.solvers import SolverOptions, initial_point
    from irs_torch.solvers.strategy import random_start

    R, psi, _ = initial_point(scenario, {"kind": "aligned"}, SolverOptions(seed=seed))
    out = [(R, psi)]
    for j in range(1, k):
        out.append(random_start(scenario, seed * 1000 + 7 + j, (1.0, 0.5)[(j - 1) % 2], beam=j % 2 == 0))
    return out


def random_starts(scenario, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``k`` random starts of the AO (:func:`irs_torch.solvers.initial_point` with seeds ``seed ..
    seed + k - 1``: random phases, isotropic R_s, power balance)."""
    from irs_torch.solvers import SolverOptions, initial_point

    return [initial_point(scenario, None, SolverOptions(seed=seed + j))[:2] for j in range(k)]


# ----------------------------------------------------------------------------- one instance
def _evaluate(s, R, psi) -> tuple[float, bool]:
    mx = float(s.max_crb(R.to(torch.complex128), psi.to(torch.complex128)))
    return mx, bool(s.is_feasible(R.to(torch.complex128), psi.to(torch.complex128), rtol=1e-6)) and math.isfinite(mx)


def run_method(method: str, inst: dict, net, options, refine_iter: int, seed: int, done: dict) -> dict:
    """One method on one instance: ``{"max_crb", "seconds", "nit", "feasible", "note"}``. ``done``:
    this instance's finished rows by method (``ao-capped`` reads ``net+refine``'s iterations, the
    Adam baselines the network's time)."""
    from irs_torch.runtime import network_hypotheses, refine_starts
    from irs_torch.solvers import SolverOptions, solve

    s = inst["scenario"]
    note = ""
    if method == "net":
        t = time.perf_counter()
        (R, psi), = network_hypotheses(net, s, 1)
        sec = time.perf_counter() - t
        mx, ok = _evaluate(s, R, psi)
        return {"max_crb": mx, "seconds": sec, "nit": 0, "feasible": ok, "note": note}
    if method in ADAM_FACTORS:
        budget = ADAM_FACTORS[method] * done["net"]["seconds"]
        t = time.perf_counter()
        R, psi, steps = first_order_design(s, budget, seed=seed)
        sec = time.perf_counter() - t
        mx, ok = _evaluate(s, R, psi)
        return {"max_crb": mx, "seconds": sec, "nit": 0, "feasible": ok,
                "note": f"{steps} Adam steps in {budget:.4g} s"}
    if method in ("ao-default", "ao-legacy", "ao-capped"):
        kw = {**options.to_dict(), "seed": seed}
        if method == "ao-default":
            kw["effort"] = "default"
        else:
            kw["effort"] = "legacy"
        if method == "ao-capped":
            kw["max_iter"] = max(1, int(done["net+refine"]["nit"]))
            note = f"max_iter {kw['max_iter']}"
        t = time.perf_counter()
        r = solve(s, method="ao", options=SolverOptions(**kw))
        sec = time.perf_counter() - t
        mx, ok = _evaluate(s, r.R_s, r.psi)
        return {"max_crb": mx, "seconds": sec, "nit": int(r.nit), "feasible": ok and bool(r.success), "note": note}
    # refinement from starts
    name, _, kk = method.partition("@")
    k = int(kk) if kk else 1
    t = time.perf_counter()
    if name == "net+refine":
        if k > 1 and k > int(getattr(net, "hypotheses", 1)) + 1:
            return {"max_crb": math.nan, "seconds": math.nan, "nit": 0, "feasible": False,
                    "note": f"skipped: the model has {getattr(net, 'hypotheses', 1)} hypotheses"}
        starts = network_hypotheses(net, s, k)
    elif name == "aligned+refine":
        starts = heuristic_starts(s, 1, seed)
    elif name == "cophased+refine":
        from irs_torch.solvers.strategy import cophased_start

        starts = [cophased_start(s)]
    elif name == "heuristic+refine":
        starts = heuristic_starts(s, k, seed)
    elif name == "random+refine":
        starts = random_starts(s, k, seed)
    else:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    r, runs = refine_starts(s, starts, options, refine_iter)
    sec = time.perf_counter() - t
    mx, ok = _evaluate(s, r.R_s, r.psi)
    return {"max_crb": mx, "seconds": sec, "nit": int(sum(x["nit"] for x in runs)) if k > 1 else int(r.nit),
            "feasible": ok and bool(r.success), "note": note}


def _order(methods) -> list[str]:
    """Dependencies first: net, net+refine, then the others in the given order."""
    first = [m for m in ("net", "net+refine") if m in methods]
    return first + [m for m in methods if m not in first]


# ----------------------------------------------------------------------------- summary
def _q(x, p):
    x = np.asarray(x, dtype=float)
    return float(np.quantile(x, p)) if len(x) else math.nan


def group_summary(rows: list[dict], methods) -> dict:
    """Per method: ``n``, ratio ``median`` / ``p90`` / ``max``, ``seconds_median``, ``feasible_frac``,
    ``time_vs_default`` (its median time over the median time of ``ao-default`` on the same rows),
    ``frac_below_1`` (ratio < 1: better than the reference)."""
    out = {}
    t_def = _q([r["seconds"] for r in rows if r["method"] == "ao-default"], 0.5)
    for m in methods:
        rr = [r for r in rows if r["method"] == m and r.get("ratio") is not None and math.isfinite(r["ratio"])]
        ratios = [r["ratio"] for r in rr]
        secs = [r["seconds"] for r in rr]
        out[m] = {"n": len(rr), "ratio_median": _q(ratios, 0.5), "ratio_p90": _q(ratios, 0.9),
                  "ratio_max": float(max(ratios)) if ratios else math.nan, "seconds_median": _q(secs, 0.5),
                  "time_vs_default": _q(secs, 0.5) / t_def if rr and t_def > 0 else math.nan,
                  "feasible_frac": float(np.mean([bool(r["feasible"]) for r in rr])) if rr else math.nan,
                  "frac_below_1": float(np.mean([x < 1 - 1e-9 for x in ratios])) if rr else math.nan}
    return out


GROUPS = {"all": lambda r: True, **{g: (lambda r, g=g: r["regime"] == g) for g in REGIMES}}


def summarize(rows: list[dict], methods) -> dict:
    """Per source: instance counts, per-group (``all``, the C1 regimes, the P_s and P_t buckets)
    method summaries (:func:`group_summary`) and the design targets (:func:`check_targets`)."""
    out = {}
    for src in sorted({r["source"] for r in rows}):
        rs = [r for r in rows if r["source"] == src]
        groups = {}
        for g, f in GROUPS.items():
            groups[g] = group_summary([r for r in rs if f(r)], methods)
        for key in ("ps_bucket", "pt_bucket"):
            for b in sorted({r[key] for r in rs}):
                groups[b] = group_summary([r for r in rs if r[key] == b], methods)
        ids = {r["id"] for r in rs}
        counts = {g: len({r["id"] for r in rs if f(r)}) for g, f in GROUPS.items()}
        out[src] = {"instances": len(ids), "counts": counts, "groups": groups, "targets": check_targets(groups)}
    return out


def check_targets(groups: dict) -> dict:
    """The design targets (:data:`TARGETS`) on one source: each with the measured value, the target
    and ``met`` (None where a method was not run)."""
    a = groups.get("all", {})
    c1 = groups.get("c1-binding", {})

    def get(g, m, k):
        v = g.get(m, {}).get(k, math.nan)
        return v if g.get(m, {}).get("n") else math.nan

    heur = [(get(c1, m, "ratio_median"), m) for m in ("aligned+refine", "cophased+refine")]
    heur = [h for h in heur if math.isfinite(h[0])]
    best_h = min(heur) if heur else (math.nan, None)
    vals = {
        "net_median": (get(a, "net", "ratio_median"), TARGETS["net_median"], "<="),
        "net_p90": (get(a, "net", "ratio_p90"), TARGETS["net_p90"], "<="),
        "net_feasible": (get(a, "net", "feasible_frac"), 1.0, ">="),
        "refine_median": (get(a, "net+refine", "ratio_median"), TARGETS["refine_median"], "<="),
        "refine_time_vs_default": (get(a, "net+refine", "time_vs_default"), TARGETS["refine_time_vs_default"], "<="),
        "c1_refine_vs_best_heuristic": (get(c1, "net+refine", "ratio_median") / best_h[0] if best_h[1] else math.nan,
                                        1 - TARGETS["c1_gain_vs_heuristic"], "<="),
    }
    out = {}
    for k, (v, tgt, op) in vals.items():
        met = None if not math.isfinite(v) else (v <= tgt if op == "<=" else v >= tgt)
        out[k] = {"value": v, "target": tgt, "op": op, "met": met}
    if best_h[1]:
        out["c1_refine_vs_best_heuristic"]["heuristic"] = best_h[1]
    return out


def format_table(summary: dict, methods, groups=("all",) + REGIMES) -> str:
    """A compact text table: per source and group, one line per method."""
    lines = []
    for src, S in summary.items():
        lines.append(f"source {src}: {S['instances']} instance(s) "
                     f"({', '.join(f'{g} {n}' for g, n in S['counts'].items() if g != 'all')}); "
                     f"ratio = max-CRB / {'best-known' if src == 'suite' else 'label'}")
        lines.append(f"  {'group':>10} {'method':>20} {'n':>4} {'median':>7} {'p90':>7} {'max':>7} "
                     f"{'time med':>9} {'x default':>9}")
        for g in groups:
            for m in methods:
                v = S["groups"].get(g, {}).get(m)
                if not v or not v["n"]:
                    continue
                lines.append(f"  {g:>10} {m:>20} {v['n']:>4} {v['ratio_median']:>7.3f} {v['ratio_p90']:>7.3f} "
                             f"{v['ratio_max']:>7.2f} {_fmt_s(v['seconds_median']):>9} {v['time_vs_default']:>9.3f}")
        t = S["targets"]
        bits = []
        for k, v in t.items():
            if v["met"] is not None:
                bits.append(f"{k} {v['value']:.3f} ({'met' if v['met'] else 'MISSED'}, "
                            f"target {v['op']} {v['target']:g})")
        if bits:
            lines.append("  targets: " + "; ".join(bits))
    return "\n".join(lines)


def _fmt_s(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x * 1e3:.1f} ms" if x < 0.1 else f"{x:.2f} s"


def _plot(path: Path, rows: list[dict], methods, source: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in methods if any(r["method"] == m and r["source"] == source for r in rows)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 0.32 * len(ms) + 2.2), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, reg in zip(axes[:2], REGIMES):
        data = []
        for m in ms:
            data.append([r["ratio"] for r in rows if r["method"] == m and r["source"] == source and r["regime"] == reg
                         and r.get("ratio") is not None and math.isfinite(r["ratio"])])
        pos = [i for i, d in enumerate(data) if d]
        if pos:
            ax.boxplot([data[i] for i in pos], positions=pos, vert=False, whis=(0, 100), widths=0.6)
            for i in pos:
                jitter = np.random.default_rng(i).uniform(-0.2, 0.2, len(data[i]))
                ax.scatter(data[i], np.full(len(data[i]), i) + jitter, s=6, alpha=0.5, color="tab:blue")
        ax.set_yticks(range(len(ms)))
        ax.set_yticklabels(ms if ax is axes[0] else [""] * len(ms), fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.8, ls=":")
        n = len({r["id"] for r in rows if r["source"] == source and r["regime"] == reg})
        ax.set_title(f"{source}: {reg} (n = {n})", fontsize=9)
        ax.set_xlabel("max-CRB / reference")
        ax.grid(alpha=0.3, which="both", axis="x")
    ax = axes[2]
    for reg, mk in zip(REGIMES, ("o", "s")):
        for j, m in enumerate(ms):
            rr = [r for r in rows if r["method"] == m and r["source"] == source and r["regime"] == reg
                  and r.get("ratio") is not None and math.isfinite(r["ratio"])]
            if rr:
                ax.scatter(_q([r["seconds"] for r in rr], 0.5), _q([r["ratio"] for r in rr], 0.5), marker=mk,
                           color=plt.cm.tab20(j % 20), label=m if reg == REGIMES[0] else None, s=30)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("median wall time [s]")
    ax.set_ylabel("median max-CRB / reference")
    ax.set_title("median ratio vs median time (o standard, s c1-binding)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the benchmark
def bench_warmstart(out=None, *, checkpoint=None, sources=("suite",), data=None, split: str = "test",
                    suite_dir=None, quick: bool = False, ids=None, limit: int | None = None, methods=None,
                    hypotheses=HYPOTHESES, options=None, refine_iter: int = 3, seed: int = 0, threads: int = 1,
                    progress: bool = True, log=print) -> dict:
    """Run the warm-start benchmark (module docstring). Returns the summary dict (also written to
    ``out/warmstart.json`` when ``out`` is given).

    checkpoint: model file (default: the shipped one for the sizes of the first instance, or of the
    paper sizes M = 16, 4 x 4, L = 2 for the suite). sources: "suite" and/or "data" (``data``: data
    set directory; ``split``). limit: at most this many instances per source. methods: names from
    :data:`METHODS` (default: all of :func:`all_methods` for ``hypotheses``). options: the
    :class:`~irs_torch.solvers.SolverOptions` of every AO run (effort set per method). threads: torch
    threads during the run (restored after). Raises ValueError / FileNotFoundError naming the input.
    """
    from irs_torch.learn.checkpoint import file_sha256, load_model
    from irs_torch.outputs import dumps
    from irs_torch.quality import append_jsonl, read_jsonl
    from irs_torch.runtime import find_checkpoint, warm_start_options
    from irs_torch.scenario import Scenario
    from irs_torch.solvers import SolverOptions, solve

    bad = [s for s in sources if s not in SOURCES]
    if bad or not sources:
        raise ValueError(f"sources must be among {SOURCES}, got {list(sources)}")
    if "data" in sources and data is None:
        raise ValueError("source 'data' needs a data set directory (--data)")
    ks = sorted({int(k) for k in hypotheses})
    if not ks or ks[0] < 1:
        raise ValueError(f"hypotheses must be integers >= 1, got {list(hypotheses)}")
    methods = list(methods) if methods else all_methods(ks)
    unknown = [m for m in methods if not is_method(m)]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(all_methods(ks))}")
    if "ao-capped" in methods and "net+refine" not in methods:
        methods.insert(0, "net+refine")
    if any(m in ADAM_FACTORS for m in methods) and "net" not in methods:
        methods.insert(0, "net")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    opts = options or SolverOptions()

    # the model, and the instances of each source at its sizes
    if checkpoint is None:  # the shipped model whose training budgets cover the instances' budgets
        probes = []
        if "suite" in sources:
            from irs_torch import quality as Q

            probes += [Scenario.paper(0, P_t=float(i["P_t"]), P_s=float(i["P_s"]), a_max=float(i["a_max"]))
                       for i in Q.load_suite(Path(suite_dir) if suite_dir is not None else Q.SUITE_DIR,
                                             quick=quick, ids=ids)]
        if "data" in sources:
            from irs_torch.data import ShardDataset

            ds = ShardDataset(data)
            probes += [ds.scenario(i) for i in range(len(ds))]
        checkpoint = find_checkpoint(Scenario.stack([p.to(torch.complex128) for p in probes]) if probes
                                     else Scenario.paper())
        log(f"using shipped checkpoint {checkpoint}")
    net = load_model(checkpoint)
    sizes = net.sizes
    insts = []
    if "suite" in sources:
        si = suite_instances(sizes, suite_dir, quick=quick, ids=ids, limit=limit)
        if not si:
            raise ValueError(f"the quality suite has no instance with a best-known design at the model's sizes {sizes}")
        log(f"suite: {len(si)} instance(s) at the model's sizes {sizes} with a best-known design")
        insts += si
    if "data" in sources:
        fractions = net.meta.get("dataset", {}).get("fractions") or (0.8, 0.1, 0.1)
        di = data_instances(data, split, fractions, limit)
        if not di:
            raise ValueError(f"{data}: the {split!r} split (fractions {list(fractions)}) has no solved instance")
        insts += di
    for inst in insts:
        from irs_torch.learn.checkpoint import check_compatible

        check_compatible(net, inst["scenario"], source=str(checkpoint))
        s = inst["scenario"]
        inst["regime"] = "c1-binding" if bool(c1_binding(s, inst["ref_R_s"], inst["ref_psi"])) else "standard"

    src = Path(str(getattr(net, "source", checkpoint)))
    key = {"format": FORMAT, "checkpoint_sha256": file_sha256(src) if src.is_file() else str(src),
           "options": opts.to_dict(), "refine_options": warm_start_options(opts, refine_iter).to_dict(),
           "refine_iter": refine_iter, "seed": seed, "threads": threads, "split": split if "data" in sources else None}
    key_s = hashlib.sha256(dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    done: dict = {}
    log_path = None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "rows.jsonl"
        for rec in read_jsonl(log_path):
            if rec.get("key") == key_s:
                done[(rec["source"], rec["id"], rec["method"])] = rec

    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    rows = []
    try:
        todo = [(i, m) for i in insts for m in _order(methods) if (i["source"], i["id"], m) not in done]
        log(f"bench warmstart: {len(insts)} instance(s) x {len(methods)} method(s); {len(todo)} run(s) to do")
        if todo:  # untimed warm-ups: the network and the conic problems of these sizes (compiled once)
            s0 = todo[0][0]["scenario"]
            from irs_torch.runtime import network_hypotheses

            network_hypotheses(net, s0, 1)
            solve(s0, method="ao", options=SolverOptions(**{**opts.to_dict(), "effort": "legacy", "max_iter": 1}))
        it = insts
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(insts, desc="bench warmstart", unit="instance")
        for inst in it:
            mine = {m: done[(inst["source"], inst["id"], m)] for m in methods
                    if (inst["source"], inst["id"], m) in done}
            s = inst["scenario"]
            for m in _order(methods):
                if m not in mine:
                    res = run_method(m, inst, net, opts, refine_iter, seed, mine)
                    rec = {"key": key_s, "source": inst["source"], "id": inst["id"], "method": m, **res}
                    if log_path is not None:
                        append_jsonl(log_path, rec)
                    mine[m] = rec
                r = mine[m]
                ratio = r["max_crb"] / inst["ref_max_crb"] if r["max_crb"] is not None and math.isfinite(
                    r["max_crb"] if r["max_crb"] is not None else math.nan) else math.nan
                rows.append({"source": inst["source"], "id": inst["id"], "method": m, "max_crb": r["max_crb"],
                             "ref_max_crb": inst["ref_max_crb"], "ratio": ratio, "seconds": r["seconds"],
                             "nit": r["nit"], "feasible": bool(r["feasible"]), "regime": inst["regime"],
                             "P_t": float(s.P_t), "P_s": float(s.P_s), "a_max": float(s.a_max),
                             "ps_bucket": ps_bucket(float(s.P_s)), "pt_bucket": pt_bucket(float(s.P_t)),
                             "note": r.get("note", "")})
    finally:
        torch.set_num_threads(old_threads)

    from irs_torch import __version__

    summary = {"format": FORMAT, "version": __version__, "checkpoint": str(src),
               "checkpoint_sha256": key["checkpoint_sha256"],
               "model_hypotheses": int(getattr(net, "hypotheses", 1)), "sizes": sizes, "sources": list(sources),
               "data": str(data) if data is not None else None, "split": key["split"], "methods": methods,
               "hypotheses": ks, "seed": seed, "threads": threads, "refine_iter": refine_iter,
               "solver_options": opts.to_dict(), "refine_options": key["refine_options"],
               "notes": "ratio = max-CRB / reference (suite: best-known design; data: the stored label); seconds = "
                        "wall time of the method on one instance, one process, torch threads = threads; regime = C1 "
                        "binding (margin < 1e-3) at the reference design for the IRS attaining the max-CRB",
               "summary": summarize(rows, methods)}
    if out is not None:
        import csv

        cols = list(rows[0]) if rows else []
        tmp = out / "warmstart.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, out / "warmstart.csv")
        tmp = out / "warmstart.json.tmp"
        tmp.write_text(dumps(summary, indent=1) + "\n")
        os.replace(tmp, out / "warmstart.json")
        outs = [out / "warmstart.csv", out / "warmstart.json"]
        for source in summary["summary"]:
            p = out / f"warmstart_{source}.png"
            _plot(p, rows, methods, source)
            outs.append(p)
        summary["outputs"] = [str(p) for p in outs]
    summary["rows"] = rows
    return summary


def read_rows(csv_path) -> list[dict]:
    """The per-instance rows of a ``warmstart.csv`` (numbers parsed)."""
    import csv

    out = []
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            for k in ("max_crb", "ref_max_crb", "ratio", "seconds", "P_t", "P_s", "a_max"):
                r[k] = float(r[k]) if r[k] not in ("", "None") else math.nan
            r["nit"] = int(r["nit"])
            r["feasible"] = r["feasible"] == "True"
            out.append(r)
    return out


__all__ = ["bench_warmstart", "first_order_design", "heuristic_starts", "random_starts", "suite_instances",
           "data_instances", "summarize", "format_table", "all_methods", "METHODS", "read_rows", "is_method"]

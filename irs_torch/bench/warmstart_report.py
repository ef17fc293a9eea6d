"""The warm-start benchmark's summary: per-regime statistics of the ratios to the best-known designs
(:func:`summarize`), the design targets checked (:data:`TARGETS`, :func:`check_targets`), the table
(:func:`format_table`) and the plot (:func:`plot_rows`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from irs_torch.learn.regimes import REGIMES

#: Design targets of the warm start (network alone; refined; time against the default solver), checked.
TARGETS = {"net_median": 1.10, "net_p90": 1.30, "refine_median": 1.02, "refine_time_vs_default": 0.25,
           "c1_gain_vs_heuristic": 0.03}


def order_methods(methods) -> list[str]:
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


def plot_rows(path: Path, rows: list[dict], methods, source: str):
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
    from irs_torch.outputs import atomic_savefig

    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)

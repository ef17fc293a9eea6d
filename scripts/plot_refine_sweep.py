"""Learned vs heuristic starts across refinement budgets: one figure and one CSV from several
``irs-torch bench warmstart`` runs that differ only in ``--refine-iter``.

    python scripts/plot_refine_sweep.py results/bench-warmstart-budget/suite-refine1 \
        results/bench-warmstart-budget/suite results/bench-warmstart-budget/suite-refine5 \
        --out results/bench-warmstart-budget/refine-sweep

For every run (its ``warmstart.json``) and every start (``net+refine``, ``aligned+refine``,
``cophased+refine``, ``ao-capped``: the cold AO capped at the same iterations), the median and p90 of
max-CRB / best-known and the median wall time, per regime (all, standard, c1-binding). Writes
``<out>.csv`` and ``<out>.png`` (median ratio vs median time, one line per start, one panel per
regime). Each run's own cold default AO, when it ran, is drawn as a reference point.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

STARTS = ("net+refine", "aligned+refine", "cophased+refine", "ao-capped")
GROUPS = ("all", "standard", "c1-binding")


def collect(dirs: list[str], source: str = "suite") -> list[dict]:
    rows = []
    for d in dirs:
        p = Path(d) / "warmstart.json"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found (run `irs-torch bench warmstart --out {d}` first)")
        b = json.loads(p.read_text())
        S = b.get("summary", {}).get(source)
        if S is None:
            raise ValueError(f"{p}: no source {source!r} (has {sorted(b.get('summary', {}))})")
        for g in GROUPS:
            for m in STARTS + ("ao-default",):
                v = S["groups"].get(g, {}).get(m)
                if v and v["n"]:
                    rows.append({"refine_iter": int(b["refine_iter"]), "group": g, "method": m, "n": v["n"],
                                 "ratio_median": v["ratio_median"], "ratio_p90": v["ratio_p90"],
                                 "seconds_median": v["seconds_median"], "run": Path(d).as_posix()})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", help="bench warmstart output directories (one per --refine-iter)")
    ap.add_argument("--source", default="suite")
    ap.add_argument("--out", required=True, help="output path without extension (.csv and .png are written)")
    a = ap.parse_args(argv)
    try:
        rows = collect(a.dirs, a.source)
    except (FileNotFoundError, ValueError) as e:
        print(f"plot_refine_sweep: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(sorted(rows, key=lambda r: (r["group"], r["method"], r["refine_iter"])))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GROUPS), figsize=(5 * len(GROUPS), 4), sharey=True)
    for ax, g in zip(axes, GROUPS):
        for m in STARTS:
            pts = sorted((r["refine_iter"], r["seconds_median"], r["ratio_median"]) for r in rows
                         if r["group"] == g and r["method"] == m)
            if not pts:
                continue
            ax.plot([p[1] for p in pts], [p[2] for p in pts], "o-", label=m)
            for k, t, y in pts:
                ax.annotate(str(k), (t, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ref = [r for r in rows if r["group"] == g and r["method"] == "ao-default"]
        for r in ref[:1]:
            ax.plot([r["seconds_median"]], [r["ratio_median"]], "k*", ms=10, label="cold default AO")
        n = max((r["n"] for r in rows if r["group"] == g), default=0)
        ax.set_title(f"{a.source}: {g} (n = {n})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_xlabel("median wall time per instance [s] (labels: AO iterations)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median max-CRB / best-known")
    axes[0].legend(fontsize=8)
    fig.suptitle("Starts refined by the same AO, across refinement budgets")
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The figure's PNG from its CSV rows (:func:`plot_figure`).
"""
from __future__ import annotations

from pathlib import Path

from irs_torch.figures.sweeps import AXES, CURVES


def plot_figure(fig: str, rows: list[dict], path, cold: dict | None = None) -> Path:
    """Log-scale max-CRB vs the swept parameter, one line per curve, legend in the paper's terms.

    ``cold``: optional ``{curve label: {x: mean cold-start max-CRB}}`` (the monotone sweep's cold
    values, :func:`write_sweep_csv`), drawn as thin dashed lines in the curve's colour. A cold curve
    within 2% of its sweep everywhere would hide under it, so it is left out, and the legend names the
    dashed style only when some cold curve is drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name, _, _, xlabel = AXES[fig]
    fig_, ax = plt.subplots(figsize=(5.2, 3.9), dpi=110)
    markers = "osd^vx*"
    dashed_named = False
    for i, (label, _, _) in enumerate(CURVES[fig]):
        rs = sorted([r for r in rows if r["curve"] == label], key=lambda r: r["x"])
        if not rs:
            continue
        x = [r["x"] for r in rs]
        y = [r["mean_max_crb"] for r in rs]
        (ln,) = ax.plot(x, y, marker=markers[i % len(markers)], ms=4, label=label)
        final = dict(zip(x, y))
        if cold and cold.get(label) and any(c > 1.02 * final.get(v, c) for v, c in cold[label].items()):
            cx = sorted(cold[label])
            ax.plot(cx, [cold[label][v] for v in cx], ls="--", lw=0.8, color=ln.get_color(), alpha=0.7,
                    label=None if dashed_named else "dashed: cold start only (no sweep)")
            dashed_named = True
    ax.set_yscale("log")
    if fig == "fig3":
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("max-CRB (rad$^2$)")
    counts = sorted({r["count"] for r in rows})
    n = "-".join(str(c) for c in counts[:: max(1, len(counts) - 1)]) if counts else "0"
    ax.set_title(f"{fig.replace('fig', 'Fig. ')} reproduction (mean of {n} channel draws)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig_.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig_, path)
    plt.close(fig_)
    return Path(path)

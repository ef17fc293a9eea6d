"""Summaries, CSV and plots of tracking records (:func:`irs_torch.tracking.loop.run_tracking`).

Per policy (over every trajectory m and block t):

- ``position_rmse`` [m]: ``sqrt(mean ||x_hat - x||^2)`` of the filter's estimate after the block's
  update (2-D); ``rmse_by_block``: the same per block over the trajectories;
- ``fix_rmse``, ``fix_error_median`` [m]: of the raw Stansfield fixes (one block, no filter);
- ``peb_rms`` [m]: ``sqrt(mean PEB^2)`` with PEB the 2-D position error bound of the design actually
  used, at the true position, for ONE block (so the filter, which averages blocks, can beat it;
  the raw fixes cannot, except by chance); ``rmse_over_peb`` = position_rmse / peb_rms;
- ``design_seconds_median`` / ``_p90`` / ``_mean`` [s]: wall time of the design call per block (one
  torch thread); ``setup_seconds``: one-off (e.g. loading the network);
- ``lost_tracks``: events (:mod:`.loop`), listed in ``lost_track_events``; ``gated_fraction``:
  measurements outside the NIS gate; ``anees_position``: average NEES of the 2-D position (2 when
  consistent).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from irs_torch.outputs import dumps


def _f(x):
    return float("nan") if x is None else float(x)


def summarise(records: list[dict], policy: str, steps: int, setup_seconds: float | None = None) -> dict:
    rs = [r for r in records if r["policy"] == policy]
    if not rs:
        return {"policy": policy, "steps": steps, "blocks": 0}
    err = np.array([_f(r["error"]) for r in rs])
    fix = np.array([_f(r["fix_error"]) for r in rs])
    peb = np.array([_f(r["peb"]) for r in rs])
    ds = np.array([_f(r["design_seconds"]) for r in rs])
    T = max(r["t"] for r in rs) + 1
    by_t = [[r for r in rs if r["t"] == t] for t in range(T)]
    nees = []
    for r in rs:
        e = np.asarray(r["estimate"]) - np.asarray(r["truth"])
        P = np.asarray(r["state_cov"], dtype=float)[np.ix_([0, 2], [0, 2])]
        if not r["lost"]:
            nees.append(float(e @ np.linalg.solve(P, e)))
    events = [{"m": r["m"], "t": r["t"], "reason": r["lost_reason"], "error": r["error"]} for r in rs if r["lost"]]
    fin = np.isfinite(fix)
    out = {
        "policy": policy, "steps": int(steps), "trajectories": len({r["m"] for r in rs}), "blocks": len(rs),
        "position_rmse": float(np.sqrt(np.mean(err ** 2))),
        "position_error_median": float(np.median(err)), "position_error_p90": float(np.quantile(err, 0.9)),
        "fix_rmse": float(np.sqrt(np.mean(fix[fin] ** 2))) if fin.any() else float("inf"),
        "fix_error_median": float(np.median(fix)),
        "peb_rms": float(np.sqrt(np.mean(peb ** 2))),
        "rmse_over_peb": float(np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(peb ** 2))),
        "design_seconds_median": float(np.median(ds)), "design_seconds_p90": float(np.quantile(ds, 0.9)),
        "design_seconds_mean": float(np.mean(ds)),
        "setup_seconds": setup_seconds,
        "lost_tracks": len(events), "lost_track_events": events,
        "gated_fraction": float(np.mean([not r["accepted"] for r in rs])),
        "design_clipped_blocks": int(sum(r["design_clipped"] for r in rs)),
        "design_failures": int(sum(not r.get("design_success", True) for r in rs)),
        "anees_position": float(np.mean(nees)) if nees else float("nan"),
        "rmse_by_block": [float(np.sqrt(np.mean([_f(r["error"]) ** 2 for r in b]))) for b in by_t],
        "peb_by_block": [float(np.sqrt(np.mean([_f(r["peb"]) ** 2 for r in b]))) for b in by_t],
    }
    return out


def comparison(summaries: dict) -> dict:
    """The design targets, where the policies involved were run: learned RMSE / oracle RMSE
    (target <= 1.2) and ao design time / learned design time (target >= 20), medians per block."""
    out = {}
    o, a = summaries.get("oracle"), summaries.get("ao")
    for name in ("learned", "learned-net"):
        s = summaries.get(name)
        if s is None or not s.get("blocks"):
            continue
        if o is not None and o.get("blocks"):
            out[f"{name}_rmse_over_oracle"] = s["position_rmse"] / o["position_rmse"]
        if a is not None and a.get("blocks"):
            out[f"ao_over_{name}_design_time"] = a["design_seconds_median"] / s["design_seconds_median"]
    if "learned_rmse_over_oracle" in out and "ao_over_learned_design_time" in out:
        out["learned_target_met"] = bool(out["learned_rmse_over_oracle"] <= 1.2
                                         and out["ao_over_learned_design_time"] >= 20)
    if "learned-net_rmse_over_oracle" in out and "ao_over_learned-net_design_time" in out:
        out["learned-net_target_met"] = bool(out["learned-net_rmse_over_oracle"] <= 1.2
                                             and out["ao_over_learned-net_design_time"] >= 20)
    return out


CSV_FIELDS = ("policy", "m", "t", "truth_x", "truth_y", "pred_x", "pred_y", "design_x", "design_y", "design_clipped",
              "fix_x", "fix_y", "estimate_x", "estimate_y", "error", "fix_error", "peb", "max_crb_true", "nis",
              "accepted", "lost", "lost_reason", "design_seconds", "design_status", "echo_seed", "design_seed")


def write_csv(records: list[dict], path) -> Path:
    from irs_torch.outputs import atomic_open

    path = Path(path)
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:  # no partial or 0-byte file on a full disk
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        for r in records:
            w.writerow([r["policy"], r["m"], r["t"], *r["truth"], *r["pred"], *r["design_pos"],
                        int(r["design_clipped"]),
                        *[_f(x) for x in r["fix"]], *r["estimate"], r["error"], _f(r["fix_error"]), _f(r["peb"]),
                        _f(r["max_crb_true"]), _f(r["nis"]), int(r["accepted"]), int(r["lost"]), r["lost_reason"] or "",
                        r["design_seconds"], r["design_status"], r["echo_seed"], r["design_seed"]])
    return path


COLORS = {"oracle": "k", "ao": "tab:blue", "learned": "tab:green", "learned-net": "tab:olive",
          "robust": "tab:purple", "isotropic": "tab:red"}


def plot(records: list[dict], summaries: dict, scenario, out) -> list[str]:
    """trajectory.png (truth, fixes and filter track per policy, trajectory 0), rmse.png (RMSE and
    PEB vs block), error_cdf.png (CDF of the filter's position error per policy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    pols = [p for p in summaries if summaries[p].get("blocks")]
    files = []
    # trajectory
    n = len(pols)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), dpi=110, squeeze=False)
    irs = np.asarray(scenario.irs_pos)
    bs = np.asarray(scenario.bs_pos) if scenario.bs_pos is not None else None
    for ax, p in zip(axes.flat, pols):
        rs = [r for r in records if r["policy"] == p and r["m"] == 0]
        tr = np.array([r["truth"] for r in rs])
        fx = np.array([r["fix"] for r in rs], dtype=float)
        es = np.array([r["estimate"] for r in rs])
        ax.plot(tr[:, 0], tr[:, 1], "k-", lw=2, label="truth")
        ax.plot(fx[:, 0], fx[:, 1], ".", color="0.55", ms=4, label="Stansfield fixes")
        ax.plot(es[:, 0], es[:, 1], "-", color=COLORS.get(p, "C0"), lw=1.4, label="filter track")
        lost = [r for r in rs if r["lost"]]
        if lost:
            ax.plot([r["estimate"][0] for r in lost], [r["estimate"][1] for r in lost], "rx", ms=8, label="lost track")
        ax.plot(irs[:, 0], irs[:, 1], "s", color="tab:orange", ms=8, label="IRS")
        if bs is not None:
            ax.plot(bs[0], bs[1], "^", color="tab:brown", ms=8, label="BS")
        pad = 3.0
        nodes = irs[:, :2] if bs is None else np.vstack([irs[:, :2], bs[None, :2]])
        lo = np.minimum(tr.min(0), nodes.min(0)) - pad
        hi = np.maximum(tr.max(0), nodes.max(0)) + pad
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        s = summaries[p]
        ax.set_title(f"{p}: RMSE {s['position_rmse']:.2f} m, PEB {s['peb_rms']:.2f} m", fontsize=9)
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, out / "trajectory.png")
    plt.close(fig)
    files.append(str(out / "trajectory.png"))
    # RMSE vs block with PEB
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for p in pols:
        s = summaries[p]
        t = np.arange(len(s["rmse_by_block"]))
        ax.plot(t, s["rmse_by_block"], "-", color=COLORS.get(p, "C0"), label=f"{p} RMSE")
        ax.plot(t, s["peb_by_block"], "--", color=COLORS.get(p, "C0"), lw=0.9, label=f"{p} PEB (1 block)")
    ax.set_yscale("log")
    ax.set_xlabel("block t")
    ax.set_ylabel("2-D position error [m]")
    ax.set_title("tracking RMSE (solid) and single-block PEB of the design used (dashed)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, out / "rmse.png")
    plt.close(fig)
    files.append(str(out / "rmse.png"))
    # error CDF
    fig, ax = plt.subplots(figsize=(5.6, 4.0), dpi=110)
    for p in pols:
        e = np.sort([r["error"] for r in records if r["policy"] == p])
        ax.step(e, np.arange(1, len(e) + 1) / len(e), where="post", color=COLORS.get(p, "C0"), label=p)
    ax.set_xscale("log")
    ax.set_xlabel("filter position error [m]")
    ax.set_ylabel("CDF over blocks")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, out / "error_cdf.png")
    plt.close(fig)
    files.append(str(out / "error_cdf.png"))
    return files


def write_outputs(result: dict, summaries: dict, config: dict, scenario, out, plots: bool = True) -> dict:
    """steps.csv, summary.json and (``plots``) the PNGs in ``out``; returns their paths."""
    out = Path(out)
    files = {"records_jsonl": result["records_path"],
             "records_csv": str(write_csv(result["records"], out / "steps.csv"))}
    if plots:
        files["plots"] = plot(result["records"], summaries, scenario, out)
    summary_path = out / "summary.json"
    from irs_torch.outputs import atomic_open

    with atomic_open(summary_path, "w", encoding="utf-8") as fh:
        fh.write(dumps({"config": config, "summaries": summaries, "comparison": comparison(summaries)}, indent=1)
                 + "\n")
    files["summary"] = str(summary_path)
    return files

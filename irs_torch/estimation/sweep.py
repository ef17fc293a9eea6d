"""The Monte Carlo sweep: RMSE and root-CRB vs P_t for several designs (``irs-torch montecarlo-sweep``).

For every (design, P_t) the design is built (:func:`irs_torch.estimation.designs.make_design`) on the
scenario with that BS budget (P_s scaled with P_t or fixed), its echoes are simulated and estimated
(:func:`irs_torch.estimation.montecarlo.run_monte_carlo`), and the summary is stored as one ``.npz``
per run under ``OUT/runs`` (with the settings, so a restarted sweep reuses the runs made with the same
settings and computes only the missing ones). ``OUT/sweep.csv`` (one row per run), ``OUT/sweep.png``
(RMSE and root-CRB vs P_t per IRS, position RMSE vs PEB, CDF of the position error) and
``OUT/sweep.json`` (the settings) are rebuilt from the runs at the end.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

DEFAULT_PT = (2.0, 20.0, 200.0, 2000.0, 20000.0)
DEFAULT_DESIGNS = ("optimised", "isotropic-random", "isotropic-aligned")
PS_MODES = ("scaled", "fixed")


def run_name(design: str, pt: float) -> str:
    """The file stem of one run, ``<design>_Pt<P_t>W``."""
    return f"{design}_Pt{pt:.6g}W"


def output_names(designs, pts) -> list[str]:
    """Every file a sweep writes under its folder (for output checks before it starts)."""
    return ["sweep.json", "sweep.csv", "sweep.png"] + [f"runs/{run_name(d, pt)}.npz" for d in designs for pt in pts]


def default_cdf_pt(scenario, pts) -> float:
    """The P_t of the position-error CDF: the scenario's own P_t if swept, else the middle value."""
    return float(scenario.P_t) if float(scenario.P_t) in pts else pts[len(pts) // 2]


def monte_carlo_sweep(scenario, out, *, pts=DEFAULT_PT, designs=DEFAULT_DESIGNS, ps: str = "scaled",
                      optimiser: str = "auto", adam_steps: int = 300, trials: int = 200, seed: int = 0,
                      estimator: str = "ml", cdf_pt: float | None = None, scenario_label: str = "",
                      progress: bool = True) -> dict:
    """Run (or resume) the sweep of ``scenario`` (unbatched, with geometry) into the folder ``out``.

    pts: BS budgets P_t [W]; designs: names of :data:`irs_torch.estimation.designs.DESIGNS`; ps:
    "scaled" (P_s keeps the scenario's P_s / P_t ratio) or "fixed"; trials per run; seed of the
    noise draws and designs; cdf_pt: the P_t of the CDF panel (one of ``pts``; default
    :func:`default_cdf_pt`); scenario_label: recorded in the settings (e.g. the file name).
    Returns ``{"rows": [summary per run], "csv", "png", "json": paths}``. Raises ValueError for bad
    arguments (naming them).
    """
    from irs_torch import __version__
    from irs_torch.estimation.designs import DESIGNS, make_design
    from irs_torch.estimation.montecarlo import run_monte_carlo
    from irs_torch.outputs import atomic_savez, dumps, progress_bar

    pts = [float(p) for p in pts]
    designs = list(designs)
    for d in designs:
        if d not in DESIGNS:
            raise ValueError(f"designs: unknown design {d!r} (choose from {list(DESIGNS)})")
    if ps not in PS_MODES:
        raise ValueError(f"ps must be one of {PS_MODES}, got {ps!r}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    cdf_pt = default_cdf_pt(scenario, pts) if cdf_pt is None else float(cdf_pt)
    if cdf_pt not in pts:
        raise ValueError(f"cdf_pt {cdf_pt:g} must be one of the P_t values {pts}")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    s0 = scenario
    settings = {"scenario": str(scenario_label), "scenario_seed": s0.seed, "ps": ps,
                "P_t0": float(s0.P_t), "P_s0": float(s0.P_s), "trials": trials, "seed": seed,
                "estimator": estimator, "optimiser": optimiser, "adam_steps": adam_steps,
                "version": __version__}
    from irs_torch.outputs import atomic_write_text
    atomic_write_text(out / "sweep.json",
                      dumps({**settings, "pt": pts, "designs": designs, "cdf_pt": cdf_pt}, indent=1))
    rows, errors = [], {}
    jobs = [(d, pt) for d in designs for pt in pts]
    for d, pt in progress_bar(jobs, desc="montecarlo-sweep", unit="run", progress=progress):
        path = out / "runs" / (run_name(d, pt) + ".npz")
        summ = None
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                stored = _numbers_from_json(json.loads(str(z["summary"])))
                if all(stored.get("settings", {}).get(k) == v for k, v in settings.items()):
                    summ, err = stored, np.array(z["position_error"])
        if summ is None:
            p_s = float(s0.P_s) * pt / float(s0.P_t) if ps == "scaled" else float(s0.P_s)
            s = s0.replace(P_t=pt, P_s=p_s)
            R, psi, label = make_design(s, d, seed=seed, adam_steps=adam_steps, optimiser=optimiser)
            res = run_monte_carlo(s, R, psi, trials, seed=seed, estimator=estimator, progress=False)
            summ = dict(res.summary)
            summ.update({"design": d, "design_label": label, "P_t": pt, "P_s": p_s, "settings": settings})
            err = res.arrays["position_error"].numpy()
            atomic_savez(path, {"summary": np.asarray(dumps(summ)), "position_error": err,
                                "theta_hat": res.arrays["theta_hat"].numpy(),
                                "phi_hat": res.arrays["phi_hat"].numpy()})
        rows.append(summ)
        errors[(d, pt)] = err
    write_sweep_csv(out / "sweep.csv", rows, s0.L)
    png = plot_sweep(out / "sweep.png", rows, errors, designs, pts, cdf_pt, s0.L, settings)
    return {"rows": rows, "csv": out / "sweep.csv", "png": png, "json": out / "sweep.json"}


def _numbers_from_json(summary: dict) -> dict:
    """A stored run summary with the nulls of strict JSON (inf/NaN, see irs_torch.outputs) read back
    as NaN, so the table and the plot treat them as missing values."""
    out = dict(summary)
    for k, v in summary.items():
        if v is None and k != "search_failure_fraction":
            out[k] = float("nan")
        elif isinstance(v, list):
            out[k] = [float("nan") if x is None else x for x in v]
    return out


def write_sweep_csv(path, rows, L):
    """One row per run: design, budgets, per-IRS CRBs / MSEs / outlier fractions, PEB and RMSE."""
    cols = ["design", "design_label", "P_t", "P_s", "estimator", "trials", "seed"]
    for l in range(1, L + 1):
        cols += [f"crb_theta_{l}", f"mse_theta_{l}", f"crb_phi_{l}", f"mse_phi_{l}", f"outlier_fraction_{l}"]
    cols += ["peb", "position_rmse", "peb_2d", "position_rmse_2d", "position_error_median", "seconds"]
    from irs_torch.outputs import atomic_open

    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            vals = [r["design"], r["design_label"], r["P_t"], r["P_s"], r["estimator"], r["trials"], r["seed"]]
            for l in range(L):
                vals += [r["crb_theta"][l], r["mse_theta"][l], r["crb_phi"][l], r["mse_phi"][l],
                         r["outlier_fraction"][l]]
            vals += [r["peb"], r["position_rmse"], r["peb_2d"], r["position_rmse_2d"],
                     r["position_error_median"], r["seconds"]]
            w.writerow(vals)


def plot_sweep(path, rows, errors, designs, pts, cdf_pt, L, settings):
    """RMSE and root-CRB vs P_t per IRS, position RMSE vs PEB, and the CDF of the position error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    deg = 180.0 / math.pi
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, L + 2, figsize=(4.2 * (L + 2), 3.8))
    by = {(r["design"], r["P_t"]): r for r in rows}
    for i, d in enumerate(designs):
        c = colors[i % len(colors)]
        P = np.array(pts)
        for l in range(L):
            ax = axes[l]
            rm = np.array([math.sqrt(by[(d, p)]["mse_theta"][l] + by[(d, p)]["mse_phi"][l]) for p in pts]) * deg
            rc = np.array([math.sqrt(by[(d, p)]["crb_theta"][l] + by[(d, p)]["crb_phi"][l]) for p in pts]) * deg
            ax.loglog(P, rm, "o-", color=c, label=f"{d} RMSE")
            ax.loglog(P, rc, "--", color=c, label=f"{d} root-CRB")
        ax = axes[L]
        ax.loglog(P, [by[(d, p)]["position_rmse"] for p in pts], "o-", color=c, label=f"{d} RMSE")
        ax.loglog(P, [by[(d, p)]["peb"] for p in pts], "--", color=c, label=f"{d} PEB")
        e = np.sort(np.asarray(errors[(d, cdf_pt)]))
        axes[L + 1].semilogx(e, np.arange(1, e.size + 1) / e.size, color=c, label=d)
        pebv = by[(d, cdf_pt)]["peb"]
        if math.isfinite(pebv):
            axes[L + 1].axvline(pebv, color=c, ls=":", lw=1)
    for l in range(L):
        axes[l].set_title(f"IRS {l + 1}: sqrt(MSE th + MSE ph) vs sqrt(CRB th + CRB ph)", fontsize=8)
        axes[l].set_xlabel("P_t [W]")
        axes[l].set_ylabel("angle error [deg]")
    axes[L].set_title("target position: RMSE vs PEB", fontsize=9)
    axes[L].set_xlabel("P_t [W]")
    axes[L].set_ylabel("[m]")
    axes[L + 1].set_title(f"CDF of position error, P_t = {cdf_pt:g} W (dotted: PEB)", fontsize=9)
    axes[L + 1].set_xlabel("position error [m]")
    axes[L + 1].set_ylabel("fraction of trials")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=6)
    axes[L + 1].legend(fontsize=7)
    fig.suptitle(f"{settings['estimator'].upper()} estimator, {settings['trials']} trials/point, seed "
                 f"{settings['seed']}, P_s {settings['ps']} (scenario seed {settings['scenario_seed']})",
                 fontsize=9)
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return path

"""Reproduction of the paper's Figures 2, 3 and 4 (Section V).

Each figure is a sweep of one parameter for several curves (designs); every point averages the
max-CRB over channel realisations (seeds). Work is split into independent tasks
(figure, curve, x, seed), solved in a process pool; every finished task is written at once to its
own small JSON file under ``<out>/<fig>/points/``, so a sweep killed half-way and restarted only
computes what is missing. The CSV and PNG are rebuilt from the task files at the end.

Figures (parameters from the paper and NOTES.md):

- ``fig2``: max-CRB vs P_t at P_s = 0.1 W, M = 16, N_h = N_v = 4: proposed (AO) for a_max = 4 and 8,
  transmit-BF only, reflective-BF only (a_max = 8), passive IRS (BS power P_t; |psi| = 1).
- ``fig3``: max-CRB vs P_s at a_max = 8 for P_t in {1, 10, 40} W (proposed design).
- ``fig4``: max-CRB vs M at P_t = 20 W, P_s = 0.1 W, a_max = 8: proposed, transmit-only,
  reflective-only.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FIGURES = ("fig2", "fig3", "fig4")

# Curve definitions: label (paper's legend) -> (method, fixed overrides)
_CURVES = {
    "fig2": [
        ("Proposed, a_max = 8", "ao", {"a_max": 8.0}),
        ("Proposed, a_max = 4", "ao", {"a_max": 4.0}),
        ("Transmit BF only, a_max = 8", "transmit-only", {"a_max": 8.0}),
        ("Reflective BF only, a_max = 8", "reflective-only", {"a_max": 8.0}),
        ("Passive IRS", "passive", {}),
    ],
    "fig3": [
        ("Proposed, P_t = 40 W", "ao", {"P_t": 40.0}),
        ("Proposed, P_t = 10 W", "ao", {"P_t": 10.0}),
        ("Proposed, P_t = 1 W", "ao", {"P_t": 1.0}),
    ],
    "fig4": [
        ("Proposed", "ao", {}),
        ("Transmit BF only", "transmit-only", {}),
        ("Reflective BF only", "reflective-only", {}),
    ],
}

_X = {
    # (parameter, quick grid, full grid, axis label)
    "fig2": ("P_t", [1.0, 5.0, 10.0, 20.0, 40.0], [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0],
             "BS transmit power budget $P_t$ (W)"),
    "fig3": ("P_s", [1e-3, 1e-2, 1e-1, 1.0], [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
             "IRS power budget $P_s$ (W)"),
    "fig4": ("M", [4, 8, 16, 24], [2, 4, 8, 12, 16, 20, 24, 28, 32], "number of BS antennas $M$"),
}

_BASE = {
    "fig2": dict(P_s=0.1, a_max=8.0, M=16, N_h=4, N_v=4),
    "fig3": dict(a_max=8.0, M=16, N_h=4, N_v=4),
    "fig4": dict(P_t=20.0, P_s=0.1, a_max=8.0, N_h=4, N_v=4),
}

QUICK_REALISATIONS = 3
FULL_REALISATIONS = 20


@dataclass(frozen=True)
class Task:
    """One point of one curve for one channel realisation."""

    fig: str
    curve: str
    method: str
    x_name: str
    x: float
    seed: int
    params: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        h = hashlib.sha1(json.dumps([self.fig, self.curve, self.method, self.x_name, self.x, self.seed,
                                     sorted(self.params.items())], default=str).encode()).hexdigest()[:16]
        return f"{self.method}-{self.x_name}{self.x:g}-s{self.seed}-{h}"


def figure_tasks(fig: str, *, full: bool = False, realisations: int | None = None,
                 grid: list | None = None, seed0: int = 0, curves: list[str] | None = None,
                 overrides: dict | None = None) -> list[Task]:
    """All tasks of a figure. ``realisations`` channel seeds ``seed0 .. seed0 + n - 1`` per point.

    ``overrides``: scenario fields replacing the figure's fixed parameters (e.g. ``{"M": 4}`` for a
    tiny test run); the swept parameter always comes from the grid.
    """
    if fig not in FIGURES:
        raise ValueError(f"figure must be one of {FIGURES}, got {fig!r}")
    x_name, quick, full_grid, _ = _X[fig]
    xs = grid if grid is not None else (full_grid if full else quick)
    n = realisations if realisations is not None else (FULL_REALISATIONS if full else QUICK_REALISATIONS)
    if n < 1:
        raise ValueError(f"realisations must be >= 1, got {n}")
    tasks = []
    for label, method, over in _CURVES[fig]:
        if curves is not None and label not in curves and method not in curves:
            continue
        for x in xs:
            params = dict(_BASE[fig])
            params.update(over)
            params.update(overrides or {})
            params[x_name] = int(x) if x_name == "M" else float(x)
            for s in range(seed0, seed0 + n):
                tasks.append(Task(fig, label, method, x_name, float(x), s, params))
    return tasks


def run_task(task: Task, solver_options: dict | None = None) -> dict:
    """Solve one task; returns a JSON-serialisable record (also for failures)."""
    import torch

    torch.set_num_threads(1)
    from irs_torch import __version__
    from irs_torch.scenario import Scenario
    from irs_torch.solvers import SolverOptions, solve

    params = dict(task.params)
    method = task.method
    if method == "passive":
        params["active"] = False
        params["sigma_r2"] = 0.0
    t0 = time.perf_counter()
    rec = {"fig": task.fig, "curve": task.curve, "method": method, "x_name": task.x_name, "x": task.x,
           "seed": task.seed, "params": params, "version": __version__}
    try:
        scen = Scenario.paper(seed=task.seed, **params)
        opts = SolverOptions(**{**(solver_options or {}), "seed": task.seed})
        res = solve(scen, method=method, options=opts)
        rec.update(max_crb=float(res.max_crb), crb=[float(c) for c in res.crb], status=res.status,
                   success=bool(res.success), nit=int(res.nit), time=time.perf_counter() - t0,
                   margins={k: [float(v) for v in torch.as_tensor(m).flatten()] for k, m in res.margins.items()},
                   crb_angles=[float(v) for v in scen.crb(res.R_s, res.psi).angles],
                   solver_options=res.options)
    except Exception as e:  # recorded, not fatal
        rec.update(max_crb=float("nan"), status=f"error: {type(e).__name__}: {e}", success=False,
                   time=time.perf_counter() - t0)
    return rec


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_figure(fig: str, out_dir, *, full: bool = False, realisations: int | None = None,
               grid: list | None = None, workers: int | None = None, seed0: int = 0,
               solver_options: dict | None = None, curves: list[str] | None = None,
               overrides: dict | None = None, progress: bool = True, plot: bool = True) -> dict:
    """Run (or resume) a figure sweep; writes ``<out>/<fig>.csv`` and ``<out>/<fig>.png``.

    Returns ``{"csv": path, "png": path or None, "rows": [...], "computed": n, "reused": n}``.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    pdir = out_dir / fig / "points"
    pdir.mkdir(parents=True, exist_ok=True)
    tasks = figure_tasks(fig, full=full, realisations=realisations, grid=grid, seed0=seed0, curves=curves,
                         overrides=overrides)
    todo = [t for t in tasks if not (pdir / f"{t.key}.json").exists()]
    workers = workers or os.cpu_count() or 1
    reused = len(tasks) - len(todo)
    bar = tqdm(total=len(tasks), initial=reused, desc=f"{fig}", unit="solve", disable=not progress)
    if todo:
        if workers == 1:
            for t in todo:
                _write_json_atomic(pdir / f"{t.key}.json", run_task(t, solver_options))
                bar.update(1)
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
                futs = {ex.submit(run_task, t, solver_options): t for t in todo}
                for fu in as_completed(futs):
                    t = futs[fu]
                    _write_json_atomic(pdir / f"{t.key}.json", fu.result())
                    bar.update(1)
    bar.close()
    records = [json.loads((pdir / f"{t.key}.json").read_text()) for t in tasks]
    rows = aggregate(records)
    csv_path = out_dir / f"{fig}.csv"
    write_csv(rows, csv_path, fig, solver_options)
    png = plot_figure(fig, rows, out_dir / f"{fig}.png") if plot else None
    return {"csv": csv_path, "png": png, "rows": rows, "computed": len(todo), "reused": reused}


def aggregate(records: list[dict]) -> list[dict]:
    """Mean / spread / count of max-CRB per (curve, x), over successful realisations."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["curve"], r["x"]), []).append(r)
    rows = []
    for (curve, x), rs in groups.items():
        ok = [r for r in rs if r.get("success") and math.isfinite(r.get("max_crb", float("nan")))]
        v = np.array([r["max_crb"] for r in ok], dtype=float)
        r0 = rs[0]
        rows.append({
            "figure": r0["fig"], "curve": curve, "method": r0["method"], "x_name": r0["x_name"], "x": x,
            "mean_max_crb": float(v.mean()) if len(v) else float("nan"),
            "median_max_crb": float(np.median(v)) if len(v) else float("nan"),
            "std_max_crb": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min_max_crb": float(v.min()) if len(v) else float("nan"),
            "max_max_crb": float(v.max()) if len(v) else float("nan"),
            "count": len(v), "failed": len(rs) - len(v),
            "seeds": " ".join(str(r["seed"]) for r in sorted(ok, key=lambda r: r["seed"])),
            "mean_time_s": float(np.mean([r.get("time", float("nan")) for r in rs])),
            "params": json.dumps(r0["params"], sort_keys=True),
        })
    rows.sort(key=lambda r: (r["curve"], r["x"]))
    return rows


def write_csv(rows: list[dict], path: Path, fig: str, solver_options: dict | None = None) -> Path:
    """CSV with a commented header (version, figure, solver options) then one row per point."""
    from irs_torch import __version__

    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(f"# irs-torch {__version__} reproduction of {fig}; solver options {json.dumps(solver_options or {})}; "
                f"scenario: paper preset (NOTES.md defaults), channels drawn from the listed seeds\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["figure"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    os.replace(tmp, path)
    return path


def read_csv(path) -> list[dict]:
    with open(path) as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    rows = list(csv.DictReader(lines))
    for r in rows:
        for k in ("x", "mean_max_crb", "median_max_crb", "std_max_crb", "min_max_crb", "max_max_crb", "mean_time_s"):
            r[k] = float(r[k])
        for k in ("count", "failed"):
            r[k] = int(r[k])
    return rows


def plot_figure(fig: str, rows: list[dict], path) -> Path:
    """Log-scale max-CRB vs the swept parameter, one line per curve, legend in the paper's terms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name, _, _, xlabel = _X[fig]
    fig_, ax = plt.subplots(figsize=(5.2, 3.9), dpi=110)
    markers = "osd^vx*"
    for i, (label, _, _) in enumerate(_CURVES[fig]):
        rs = sorted([r for r in rows if r["curve"] == label], key=lambda r: r["x"])
        if not rs:
            continue
        x = [r["x"] for r in rs]
        y = [r["mean_max_crb"] for r in rs]
        ax.plot(x, y, marker=markers[i % len(markers)], ms=4, label=label)
    ax.set_yscale("log")
    if fig == "fig3":
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("max-CRB (rad$^2$)")
    n = max((r["count"] for r in rows), default=0)
    ax.set_title(f"{fig.replace('fig', 'Fig. ')} reproduction (mean of {n} channel draws)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig_.tight_layout()
    fig_.savefig(path)
    plt.close(fig_)
    return Path(path)


def _curve(rows, label):
    return {r["x"]: r["mean_max_crb"] for r in rows if r["curve"] == label}


def check_claims(fig: str, rows: list[dict]) -> list[dict]:
    """The paper's qualitative claims of Section V, checked on a figure's aggregated rows.

    Returns a list of ``{"claim", "holds" (bool), "evidence" (str)}``; the comparison is point by
    point on the mean max-CRB.
    """
    out = []

    def below(a, b, name):
        A, B = _curve(rows, a), _curve(rows, b)
        xs = sorted(set(A) & set(B))
        ok = [A[x] <= B[x] * (1 + 1e-6) for x in xs]
        ratio = [A[x] / B[x] for x in xs]
        out.append({"claim": name, "holds": bool(xs) and all(ok),
                    "evidence": f"{a} / {b} = " + ", ".join(f"{r:.3g}" for r in ratio) + f" at x = {xs}"})

    if fig == "fig2":
        below("Proposed, a_max = 8", "Transmit BF only, a_max = 8", "proposed < transmit-only")
        below("Transmit BF only, a_max = 8", "Reflective BF only, a_max = 8", "transmit-only < reflective-only")
        below("Proposed, a_max = 8", "Passive IRS", "active far below passive")
        below("Proposed, a_max = 8", "Proposed, a_max = 4", "larger a_max better")
        A, P = _curve(rows, "Proposed, a_max = 8"), _curve(rows, "Passive IRS")
        xs = sorted(set(A) & set(P))
        if xs:
            orders = [math.log10(P[x] / A[x]) for x in xs]
            out[2]["evidence"] += f"; passive/active = 10^{min(orders):.1f} .. 10^{max(orders):.1f}"
            out[2]["holds"] = out[2]["holds"] and min(orders) >= 1.0
    elif fig == "fig3":
        curves = sorted({r["curve"] for r in rows})
        xs = sorted({r["x"] for r in rows})
        if len(xs) >= 2 and len(curves) > 1:
            lo = [_curve(rows, c).get(xs[0]) for c in curves]
            spread_lo = max(lo) / min(lo)
            hi = [_curve(rows, c).get(xs[-1]) for c in curves]
            spread_hi = max(hi) / min(hi)
            out.append({"claim": "at low P_s the curves for different P_t coincide",
                        "holds": spread_lo < 1.5 and spread_lo < spread_hi,
                        "evidence": f"max/min over P_t at P_s={xs[0]:g}: {spread_lo:.3g}; at P_s={xs[-1]:g}: {spread_hi:.3g}"})
            flat = []
            for c in curves:
                cv = _curve(rows, c)
                if len(xs) >= 2:
                    flat.append(cv[xs[-2]] / cv[xs[-1]])
            out.append({"claim": "the CRB flattens at high P_s",
                        "holds": all(f < 1.5 for f in flat),
                        "evidence": "CRB(P_s=%g)/CRB(P_s=%g) per curve: " % (xs[-2], xs[-1])
                                    + ", ".join(f"{f:.3g}" for f in flat)})
    elif fig == "fig4":
        cv = _curve(rows, "Proposed")
        xs = sorted(cv)
        if len(xs) >= 3:
            dec = all(cv[b] <= cv[a] * (1 + 1e-6) for a, b in zip(xs, xs[1:]))
            gains = [cv[a] / cv[b] for a, b in zip(xs, xs[1:])]
            out.append({"claim": "the CRB falls with M", "holds": dec,
                        "evidence": "successive ratios CRB(M_i)/CRB(M_i+1): " + ", ".join(f"{g:.3g}" for g in gains)
                                    + f" at M = {xs}"})
            out.append({"claim": "and saturates", "holds": gains[-1] < gains[0],
                        "evidence": f"first gain {gains[0]:.3g} vs last gain {gains[-1]:.3g}"})
        below("Proposed", "Transmit BF only", "proposed < transmit-only (all M)")
        below("Proposed", "Reflective BF only", "proposed < reflective-only (all M)")
    return out

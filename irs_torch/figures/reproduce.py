"""Reproduction of the paper's Figures 2, 3 and 4 (Section V): one figure from tasks to CSV, PNG and claims.

Each figure is a sweep of one parameter for several curves (designs); every point averages the max-CRB over
channel realisations (seeds). :func:`run_figure` splits the work into independent tasks
(:mod:`irs_torch.figures.sweeps`), solves the missing ones in a process pool, appends each finished task to the
figure's point store (:mod:`irs_torch.figures.storage`; a sweep killed half-way and restarted only computes the
missing tasks), then rebuilds the CSV and the PNG (:mod:`irs_torch.figures.plots`) from the store. The paper's
claims are checked by :func:`irs_torch.figures.claims.check_claims`.

Figures (parameters from the paper and docs/assumptions.md "Defaults where the paper is silent"):

- ``fig2``: max-CRB vs P_t at P_s = 0.1 W, M = 16, N_h = N_v = 4: proposed (AO) for a_max = 4 and 8,
  transmit-BF only, reflective-BF only (a_max = 8), passive IRS (BS power P_t; |psi| = 1).
- ``fig3``: max-CRB vs P_s at a_max = 8 for P_t in {1, 10, 40} W (proposed design).
- ``fig4``: max-CRB vs M at P_t = 20 W, P_s = 0.1 W, a_max = 8: proposed, transmit-only,
  reflective-only.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from irs_torch.figures.plots import plot_figure
from irs_torch.figures.storage import PointStore, aggregate, migrate_points, store_path, write_csv, write_sweep_csv
from irs_torch.figures.sweeps import SweepTask, figure_tasks, run_any_task, task_records


def run_figure(fig: str, out_dir, **kwargs) -> dict:
    """:func:`run_figure_unlocked` holding the lock of ``out_dir`` (:class:`irs_torch.outputs.DirLock`):
    a second run into the same folder is refused instead of appending to the same ``points.jsonl``."""
    from irs_torch.outputs import DirLock

    with DirLock(out_dir, "--out"):
        return run_figure_unlocked(fig, out_dir, **kwargs)


def run_figure_unlocked(fig: str, out_dir, *, full: bool = False, realisations: int | None = None,
               grid: list | None = None, workers: int | None = None, seed0: int = 0,
               solver_options: dict | None = None, curves: list[str] | None = None,
               overrides: dict | None = None, progress: bool = True, plot: bool = True,
               monotone: bool = True, compute: bool = True) -> dict:
    """Run (or resume) a figure sweep; writes ``<out>/<fig>.csv`` and ``<out>/<fig>.png``.

    Finished tasks go to ``<out>/<fig>/points.jsonl`` (:class:`PointStore`); stored tasks are reused.
    Earlier per-task files under ``<out>/<fig>/points/`` are first copied into the store
    (:func:`migrate_points`, files kept). ``monotone``: see :func:`figure_tasks`; with sweeps,
    ``<out>/<fig>-sweep.csv`` compares the cold and final values (:func:`write_sweep_csv`).
    ``compute=False`` solves nothing and writes the files from the stored tasks only (a partial run).

    Returns ``{"csv", "png" (or None), "sweep_csv" (or None), "rows", "computed", "reused", "missing",
    "sweeps": [stored sweep records]}``.
    """
    from irs_torch.outputs import progress_bar

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = figure_tasks(fig, full=full, realisations=realisations, grid=grid, seed0=seed0, curves=curves,
                         overrides=overrides, monotone=monotone)
    if (out_dir / fig / "points").is_dir():
        migrate_points(out_dir, fig)
    store = PointStore(store_path(out_dir, fig))
    done = store.load()
    todo = [t for t in tasks if t.key not in done] if compute else []
    if any(isinstance(t, SweepTask) for t in todo):
        _check_same_solver(fig, store.path, [done[t.key] for t in tasks if t.key in done], solver_options)
    workers = workers or os.cpu_count() or 1
    reused = sum(t.key in done for t in tasks)
    bar = progress_bar(total=len(tasks), initial=reused, desc=f"{fig}", unit="task", progress=progress)
    if todo:
        if workers == 1:
            for t in todo:
                rec = run_any_task(t, solver_options)
                store.append(t.key, rec)
                done[t.key] = rec
                bar.update(1)
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
                futs = {ex.submit(run_any_task, t, solver_options): t for t in todo}
                for fu in as_completed(futs):
                    t = futs[fu]
                    rec = fu.result()
                    store.append(t.key, rec)
                    done[t.key] = rec
                    bar.update(1)
    bar.close()
    lines = [done[t.key] for t in tasks if t.key in done]
    records = [r for ln in lines for r in task_records(ln)]
    sweeps = [ln for ln in lines if ln.get("kind") == "sweep"]
    rows = aggregate(records)
    csv_path = out_dir / f"{fig}.csv"
    write_csv(rows, csv_path, fig, solver_options)
    sweep_csv = write_sweep_csv(sweeps, out_dir / f"{fig}-sweep.csv", fig) if sweeps else None
    cold: dict = {}
    for sw in sweeps:
        for pt in sw["points"]:
            cold.setdefault(pt["curve"], {}).setdefault(pt["x"], []).append(pt["cold_max_crb"])
    cold = {c: {x: float(np.mean(v)) for x, v in d.items()} for c, d in cold.items()}
    png = plot_figure(fig, rows, out_dir / f"{fig}.png", cold=cold or None) if plot else None
    return {"csv": csv_path, "png": png, "sweep_csv": sweep_csv, "rows": rows, "computed": len(todo),
            "reused": reused, "missing": len(tasks) - len(lines), "sweeps": sweeps}


_NOT_SOLVER_SETTINGS = ("seed", "method", "init", "verbose", "torch_threads")
# SolverOptions fields added after sweeps were stored, with the value that reproduces the earlier
# behaviour (a stored record without the field matches only that value)
_FIELDS_ADDED_LATER = {"effort": "legacy"}


def _check_same_solver(fig: str, path, stored: list[dict], solver_options: dict | None) -> None:
    """Refuse to add sweeps solved with other solver settings to a figure's stored sweeps.

    A figure's mean mixes draws, so all of its monotone sweeps must come from the same solver
    settings (e.g. a later change of the default). Compares the settings recorded in the stored
    sweeps with ``SolverOptions(**solver_options)``, ignoring the seed and bookkeeping fields.
    """
    from irs_torch.solvers import SolverOptions

    now = SolverOptions(**(solver_options or {})).to_dict()
    for rec in stored:
        if rec.get("kind") != "sweep":
            continue
        old = rec.get("solver_options", {})
        keys = sorted((set(old) | set(now)) - set(_NOT_SOLVER_SETTINGS))
        old = {**{k: v for k, v in _FIELDS_ADDED_LATER.items() if k in now}, **old}
        diff = [f"{k}: stored {old.get(k, '<absent>')!r}, now {now.get(k, '<absent>')!r}" for k in keys
                if old.get(k, "<absent>") != now.get(k, "<absent>")]
        if diff:
            raise ValueError(f"{fig}: the monotone sweeps stored in {path} were solved with other solver settings "
                             f"than this run would use ({'; '.join(diff)}); pass the stored settings "
                             f"(--solver-set FIELD=VALUE) or another --out, so that one figure does not mix solvers")

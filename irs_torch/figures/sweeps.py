"""The paper's figures as work: their curves and axes (:data:`CURVES`, :data:`AXES`), the independent
tasks of a figure (:func:`figure_tasks`) and how each is solved.

- benchmark curves (transmit-only, reflective-only, passive) and all of Fig. 4: one task per
  (figure, curve, x, seed) (:class:`Task`, :func:`run_task`);
- the proposed ("ao") curves of Figs. 2 and 3: one *monotone sweep* per (figure, channel seed)
  (:class:`SweepTask`, :func:`run_sweep`) covering that draw's whole budget grid (Fig. 2: a_max x
  P_t; Fig. 3: P_t x P_s). The optimal max-CRB never increases when a budget grows (a smaller
  budget's design stays feasible and its CRB does not depend on the budgets), so every point is
  solved cold and also started from its neighbours' designs in both directions, keeping the best;
  a last pass from smaller to larger budgets makes every draw's curve non-increasing.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field

FIGURES = ("fig2", "fig3", "fig4")

# Curve definitions: label (paper's legend) -> (method, fixed overrides)
CURVES = {
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

AXES = {
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

# Figures whose proposed ("ao") curves are solved as monotone sweeps: the budget that tells the
# curves apart (the swept budget is the figure's x, AXES).
SWEEP_CURVE_BUDGET = {"fig2": "a_max", "fig3": "P_t"}
# relative tolerance of the monotonicity check (the final pass makes it exact up to rounding)
MONOTONE_RTOL = 1e-9


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


@dataclass(frozen=True)
class SweepTask:
    """The proposed curves of one figure for one channel draw: a 2-D budget grid solved together.

    ``curves``: ``((label, budget value), ...)`` sorted by the curve budget ``curve_name``
    (ascending); ``xs``: the swept budget ``x_name``'s values, ascending; ``params``: the other
    scenario fields. Point ``(i, j)`` is curve ``i`` at ``xs[j]`` (:meth:`point_params`).
    """

    fig: str
    seed: int
    curve_name: str
    curves: tuple
    x_name: str
    xs: tuple
    params: dict = field(default_factory=dict)
    method: str = "ao"

    @property
    def key(self) -> str:
        h = hashlib.sha1(json.dumps(["sweep", self.fig, self.method, self.curve_name, list(self.curves), self.x_name,
                                     list(self.xs), self.seed, sorted(self.params.items())],
                                    default=str).encode()).hexdigest()[:16]
        return f"sweep-{self.method}-s{self.seed}-{h}"

    def point_params(self, i: int, j: int) -> dict:
        p = dict(self.params)
        p[self.curve_name] = self.curves[i][1]
        p[self.x_name] = self.xs[j]
        return p


def figure_tasks(fig: str, *, full: bool = False, realisations: int | None = None,
                 grid: list | None = None, seed0: int = 0, curves: list[str] | None = None,
                 overrides: dict | None = None, monotone: bool = True) -> list:
    """All tasks of a figure. ``realisations`` channel seeds ``seed0 .. seed0 + n - 1`` per point.

    ``overrides``: scenario fields replacing the figure's fixed parameters (e.g. ``{"M": 4}`` for a
    tiny test run); the swept parameter always comes from the grid. With ``monotone`` (default) the
    proposed curves of Figs. 2 and 3 become one :class:`SweepTask` per seed (after the per-point
    :class:`Task` of the other curves); ``monotone=False`` gives the earlier per-point tasks.
    """
    if fig not in FIGURES:
        raise ValueError(f"figure must be one of {FIGURES}, got {fig!r}")
    x_name, quick, full_grid, _ = AXES[fig]
    xs = grid if grid is not None else (full_grid if full else quick)
    n = realisations if realisations is not None else (FULL_REALISATIONS if full else QUICK_REALISATIONS)
    if n < 1:
        raise ValueError(f"realisations must be >= 1, got {n}")
    tasks = []
    sweep_curves = []
    for label, method, over in CURVES[fig]:
        if curves is not None and label not in curves and method not in curves:
            continue
        if monotone and method == "ao" and fig in SWEEP_CURVE_BUDGET:
            name = SWEEP_CURVE_BUDGET[fig]
            sweep_curves.append((label, float({**over, **(overrides or {})}[name])))
            continue
        for x in xs:
            params = dict(_BASE[fig])
            params.update(over)
            params.update(overrides or {})
            params[x_name] = int(x) if x_name == "M" else float(x)
            for s in range(seed0, seed0 + n):
                tasks.append(Task(fig, label, method, x_name, float(x), s, params))
    if sweep_curves:
        name = SWEEP_CURVE_BUDGET[fig]
        params = dict(_BASE[fig])
        params.update(overrides or {})
        params.pop(name, None)
        params.pop(x_name, None)
        sc = tuple(sorted(sweep_curves, key=lambda c: c[1]))
        sx = tuple(sorted(float(x) for x in xs))
        for s in range(seed0, seed0 + n):
            tasks.append(SweepTask(fig, s, name, sc, x_name, sx, params))
    return tasks


def run_task(task: Task, solver_options: dict | None = None) -> dict:
    """Solve one task; returns a JSON-serialisable record (also for failures)."""
    import torch

    torch.set_num_threads(1)
    from irs_torch import __version__
    from irs_torch.scenario import paper_scenario
    from irs_torch.solvers import SolverOptions, solve
    from irs_torch.solvers.baselines import passive_scenario

    params = dict(task.params)
    method = task.method
    t0 = time.perf_counter()
    rec = {"fig": task.fig, "curve": task.curve, "method": method, "x_name": task.x_name, "x": task.x,
           "seed": task.seed, "params": params, "version": __version__}
    try:
        scen = paper_scenario(seed=task.seed, **params)
        if method == "passive":  # the scenario solve() optimises; its CRB is evaluated on it below
            scen = passive_scenario(scen)
            params.update(active=scen.active, sigma_r2=float(scen.sigma_r2))  # recorded with the point
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


def _point_fields(scen, R_s, psi) -> dict:
    """CRB per IRS, margins and angle-only CRB of a design, as JSON-ready lists."""
    import torch

    c = scen.crb(R_s, psi)
    return {"crb": [float(v) for v in c.total],
            "margins": {k: [float(v) for v in torch.as_tensor(m).flatten()]
                        for k, m in scen.constraint_margins(R_s, psi).items()},
            "crb_angles": [float(v) for v in c.angles]}


def run_sweep(task: SweepTask, solver_options: dict | None = None) -> dict:
    """Solve one channel draw's budget grid of the proposed design, monotone in every budget.

    Points ``(i, j)`` (curve budget ``i``, swept budget ``j``, both ascending) are solved in three
    passes, each AO run with ``SolverOptions(**solver_options, seed=task.seed)``:

    1. cold: the solver's default start (what :func:`run_task` does);
    2. down (larger to smaller budgets): started from the current best designs of ``(i+1, j)`` and
       ``(i, j+1)``, made feasible by :func:`irs_torch.solvers.initial_point`'s repair;
    3. up (smaller to larger budgets): started from the best designs of ``(i-1, j)`` and
       ``(i, j-1)``, which are feasible here as they are; each is also a candidate itself.

    Every point keeps the best feasible design found. Because the CRB of a design does not depend on
    the budgets, pass 3 makes ``best(i, j) <= best(i-1, j)`` and ``best(i, j) <= best(i, j-1)``
    (checked: ``monotone``, ``violations``). Returns a JSON-ready record with one point record per
    (curve, x) in :func:`run_task`'s format plus ``cold_max_crb``, ``cold_time``, ``source``
    (``"cold"``, ``"down: from a_max=8, P_t=30"``, ``"up: ..."`` or ``"up, as is: ..."``) and
    ``attempts`` (every start: its origin, max-CRB, time, status). Designs are not stored.
    """
    import torch

    torch.set_num_threads(1)
    from irs_torch import __version__
    from irs_torch.scenario import paper_scenario
    from irs_torch.solvers import SolverOptions, solve

    t_start = time.perf_counter()
    opts = SolverOptions(**{**(solver_options or {}), "seed": task.seed})
    nI, nJ = len(task.curves), len(task.xs)
    cells = {}
    for i in range(nI):
        for j in range(nJ):
            params = task.point_params(i, j)
            cells[i, j] = {"params": params, "scn": paper_scenario(seed=task.seed, **params), "best": None,
                           "cold": float("nan"), "cold_time": float("nan"), "attempts": [], "time": 0.0}

    def where(ij):
        i, j = ij
        return f"{task.curve_name}={task.curves[i][1]:g}, {task.x_name}={task.xs[j]:g}"

    def offer(c, value, R, psi, how, status, nit):
        if math.isfinite(value) and (c["best"] is None or value < c["best"]["max_crb"]):
            c["best"] = {"max_crb": value, "R_s": R, "psi": psi, "source": how, "status": status, "nit": nit}

    def attempt(ij, how, start=None):
        c = cells[ij]
        t0 = time.perf_counter()
        entry = {"start": how}
        try:
            init = None if start is None else {"R_s": start["R_s"], "psi": start["psi"]}
            res = solve(c["scn"], "ao", init=init, options=opts)
            entry.update(max_crb=float(res.max_crb), success=bool(res.success), status=res.status, nit=int(res.nit))
            if res.success:
                offer(c, float(res.max_crb), res.R_s, res.psi, how, res.status, int(res.nit))
        except Exception as e:  # recorded, not fatal
            entry.update(max_crb=float("nan"), success=False, status=f"error: {type(e).__name__}: {e}")
        entry["time"] = time.perf_counter() - t0
        c["time"] += entry["time"]
        c["attempts"].append(entry)
        return entry

    order = [(i, j) for i in range(nI) for j in range(nJ)]
    for ij in order:  # 1. cold
        e = attempt(ij, "cold")
        cells[ij]["cold"], cells[ij]["cold_time"] = e["max_crb"], e["time"]
    for i, j in reversed(order):  # 2. down: from the larger budgets
        for nb in ((i + 1, j), (i, j + 1)):
            if nb in cells and cells[nb]["best"] is not None:
                attempt((i, j), f"down: from {where(nb)}", cells[nb]["best"])
    for i, j in order:  # 3. up: from the smaller budgets, as is and as an AO start
        c = cells[i, j]
        for nb in ((i - 1, j), (i, j - 1)):
            if nb not in cells or cells[nb]["best"] is None:
                continue
            b = cells[nb]["best"]
            t0 = time.perf_counter()
            if bool(c["scn"].is_feasible(b["R_s"], b["psi"], rtol=opts.feas_rtol)):
                v = float(c["scn"].max_crb(b["R_s"], b["psi"]))
                offer(c, v, b["R_s"], b["psi"], f"up, as is: from {where(nb)}", b["status"], b["nit"])
                c["attempts"].append({"start": f"up, as is: from {where(nb)}", "max_crb": v, "success": True,
                                      "status": "evaluated", "nit": 0, "time": time.perf_counter() - t0})
            else:  # cannot happen for a larger budget (recorded if it does)
                c["attempts"].append({"start": f"up, as is: from {where(nb)}", "max_crb": float("nan"),
                                      "success": False, "status": "infeasible here", "nit": 0,
                                      "time": time.perf_counter() - t0})
            attempt((i, j), f"up: from {where(nb)}", b)

    points, violations = [], []
    so = {**opts.to_dict(), "method": "ao", "init": "monotone sweep (run_sweep): cold, then neighbours' designs"}
    for i, j in order:
        c = cells[i, j]
        rec = {"fig": task.fig, "curve": task.curves[i][0], "method": "ao", "x_name": task.x_name, "x": task.xs[j],
               "seed": task.seed, "params": c["params"], "version": __version__}
        b = c["best"]
        if b is None:
            rec.update(max_crb=float("nan"), success=False, nit=0, source=None,
                       status="error: no feasible design from any start: "
                              + "; ".join(str(a["status"]) for a in c["attempts"]))
        else:
            rec.update(max_crb=b["max_crb"], status=b["status"], success=True, nit=b["nit"], source=b["source"],
                       **_point_fields(c["scn"], b["R_s"], b["psi"]))
        rec.update(time=c["time"], cold_max_crb=c["cold"], cold_time=c["cold_time"], solver_options=so,
                   attempts=c["attempts"])
        points.append(rec)
        for nb, axis in (((i - 1, j), task.curve_name), ((i, j - 1), task.x_name)):
            if nb in cells:
                v, w = rec["max_crb"], cells[nb]["best"]["max_crb"] if cells[nb]["best"] else float("nan")
                if not (v <= w * (1 + MONOTONE_RTOL)):
                    violations.append({"axis": axis, "at": where((i, j)), "from": where(nb), "max_crb": v,
                                       "smaller_budget_max_crb": w})
    return {"kind": "sweep", "fig": task.fig, "seed": task.seed, "method": "ao", "curve_name": task.curve_name,
            "curves": [list(c) for c in task.curves], "x_name": task.x_name, "xs": list(task.xs),
            "params": task.params, "version": __version__, "solver_options": so, "points": points,
            "monotone": not violations, "violations": violations,
            "n_solves": sum(1 for p in points for a in p["attempts"] if a["status"] != "evaluated"
                            and a["status"] != "infeasible here"),
            "time": time.perf_counter() - t_start}


def task_records(line: dict) -> list[dict]:
    """The per-point records of one stored task (a sweep holds many)."""
    return list(line["points"]) if line.get("kind") == "sweep" else [line]


def run_any_task(task, solver_options):
    return run_sweep(task, solver_options) if isinstance(task, SweepTask) else run_task(task, solver_options)

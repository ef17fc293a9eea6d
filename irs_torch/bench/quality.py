"""Solution quality: a fixed suite of instances with best-known designs, the search that finds them,
and the benchmark that measures every solver effort against them.

Files (``benchmarks/quality/`` in the repository, :data:`SUITE_DIR`):

- ``suite.json``: the instances. Each has an ``id``, a ``geometry`` (``kind`` "paper" or "random",
  channel ``seed``, ``M``; N_h = N_v = 4, L = 2) and budgets ``P_t`` [W], ``P_s`` [W], ``a_max``;
  ``quick`` marks the ``--quick`` subset. Instances of one geometry form a budget grid, so that
  continuation over budgets is possible inside a geometry.
- ``best/<id>.npz``: the best-known design as a :class:`irs_torch.Solution` (R_s ``(L, M, M)`` [W],
  psi ``(L, N)``, per-IRS crb [rad^2]); its ``metadata`` holds ``max_crb``, ``found_by``, ``stage``,
  ``regime``, ``seed``, ``version`` and the margins. The npz is authoritative.
- ``records.jsonl``: one line per finished search task (append-only; the resume log): instance id,
  stage, the task's max-CRB, how it was found, its cost in seconds, whether it improved the best,
  the best max-CRB after it, seed, version.

Regime of an instance: ``"c1-binding"`` when C1 (IRS power, eq. (7)) is active (margin < 1e-3) at the
best-known point for the IRS that attains the max-CRB, else ``"standard"`` (:func:`regime`; recomputed
from the stored design by the benchmark).

The search (:func:`search_best_known`) runs stage ``thorough`` (:func:`irs_torch.solvers.strategy.thorough_search`
per instance) and then ``continuation`` passes: every instance is re-solved by the AO from the
best designs of its budget neighbours in both directions (a smaller budget's design is feasible at
the larger one; a larger budget's design is repaired by :func:`irs_torch.solvers.initial_point`).
Tasks run on :mod:`irs_torch.data.parallel` (the data-set backends). Killed and restarted, it continues
where it stopped: a task whose record is in ``records.jsonl`` is not run again.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

SUITE_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "quality"
P_T_GRID = (1.0, 10.0, 40.0)
P_S_GRID = (1e-4, 1e-3, 1e-2, 0.1)
# (kind, channel seed, M, a_max): five geometries x 12 budgets = 60 instances
GEOMETRIES = (("paper", 0, 16, 8.0), ("paper", 1, 4, 4.0), ("paper", 2, 32, 8.0), ("random", 101, 16, 4.0),
              ("random", 102, 4, 8.0))
QUICK = {("paper", 0, 16): [(1.0, 1e-4), (40.0, 1e-4), (10.0, 1e-2), (40.0, 0.1)],
         ("paper", 1, 4): [(1.0, 1e-3), (40.0, 1e-3), (10.0, 0.1)],
         ("random", 102, 4): [(40.0, 1e-4), (1.0, 1e-2), (10.0, 1e-3), (40.0, 0.1)]}
REGIME_TOL = 1e-3
SEARCH_SEED = 0


# ----------------------------------------------------------------------------- the suite
def _fmt_budget(x: float) -> str:
    return f"{x:g}".replace("+", "")


def default_suite() -> dict:
    """The suite definition (what ``suite.json`` holds)."""
    inst = []
    for kind, seed, M, amax in GEOMETRIES:
        gid = f"{kind}-m{M}-s{seed}-a{amax:g}"
        for P_t in P_T_GRID:
            for P_s in P_S_GRID:
                inst.append({"id": f"{gid}/pt{_fmt_budget(P_t)}-ps{_fmt_budget(P_s)}", "group": gid,
                             "geometry": {"kind": kind, "seed": seed, "M": M, "N_h": 4, "N_v": 4},
                             "P_t": P_t, "P_s": P_s, "a_max": amax,
                             "quick": (P_t, P_s) in QUICK.get((kind, seed, M), [])})
    return {"format": "irs-torch/quality-suite", "version": 1,
            "description": "solver-quality suite: 5 geometries (paper and random, M in {4, 16, 32}, N_h = N_v = 4, "
                           "L = 2) x P_t in {1, 10, 40} W x P_s in {1e-4, 1e-3, 1e-2, 0.1} W; a_max per geometry",
            "instances": inst}


def write_suite(directory=SUITE_DIR) -> Path:
    """Write ``suite.json`` (refuses to change an existing, different one: best-known designs refer to it)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    p = d / "suite.json"
    suite = default_suite()
    if p.exists():
        if json.loads(p.read_text()) != json.loads(json.dumps(suite)):
            raise ValueError(f"{p} exists and differs from the built-in suite definition; use another directory")
        return p
    from irs_torch.outputs import atomic_write_text

    atomic_write_text(p, json.dumps(suite, indent=1) + "\n")
    return p


def load_suite(directory=SUITE_DIR, quick: bool = False, ids=None) -> list[dict]:
    """The instances of ``directory/suite.json`` (``quick``: only the quick subset; ``ids``: only these)."""
    p = Path(directory) / "suite.json"
    if not p.exists():
        raise FileNotFoundError(f"quality suite not found: {p} (create it with irs_torch.bench.quality.write_suite)")
    suite = json.loads(p.read_text())
    if suite.get("format") != "irs-torch/quality-suite":
        raise ValueError(f"{p}: format must be 'irs-torch/quality-suite', got {suite.get('format')!r}")
    inst = suite["instances"]
    if quick:
        inst = [i for i in inst if i.get("quick")]
    if ids is not None:
        known = {i["id"] for i in inst}
        bad = [i for i in ids if i not in known]
        if bad:
            raise ValueError(f"unknown instance id(s) {bad[:3]} in {p}")
        inst = [i for i in inst if i["id"] in set(ids)]
    return inst


def build_scenario(inst: dict):
    """The :class:`irs_torch.Scenario` of a suite instance."""
    from irs_torch.scenario import paper_scenario, random_scenario

    g = inst["geometry"]
    kw = {"M": int(g["M"]), "N_h": int(g.get("N_h", 4)), "N_v": int(g.get("N_v", 4)), "P_t": float(inst["P_t"]),
          "P_s": float(inst["P_s"]), "a_max": float(inst["a_max"])}
    if g["kind"] == "paper":
        return paper_scenario(seed=int(g["seed"]), **kw)
    if g["kind"] == "random":
        return random_scenario(seed=int(g["seed"]), **kw)
    raise ValueError(f"geometry kind must be 'paper' or 'random', got {g['kind']!r} (instance {inst['id']})")


def best_path(directory, inst_id: str) -> Path:
    return Path(directory) / "best" / (inst_id.replace("/", "__") + ".npz")


def regime(scenario, R_s, psi) -> str:
    """``"c1-binding"`` if C1 is active (margin < REGIME_TOL) at (R_s, psi) for the IRS attaining the
    max-CRB (the one that sets the objective), else ``"standard"``."""
    m = scenario.constraint_margins(R_s, psi)["irs"]
    worst = int(scenario.crb(R_s, psi).total.argmax())
    return "c1-binding" if float(m[worst]) < REGIME_TOL else "standard"


def load_best(directory, inst: dict):
    """``(Solution, max_crb)`` of the stored best-known design of ``inst``, or ``(None, inf)``."""
    from irs_torch.scenario import Solution

    p = best_path(directory, inst["id"])
    if not p.exists():
        return None, math.inf
    sol = Solution.load(p)
    return sol, float(sol.metadata["max_crb"])


def _version() -> str:
    from irs_torch import __version__

    return __version__


def _git_commit() -> str | None:
    try:
        import subprocess

        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                           text=True, timeout=5, check=False)
        return r.stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def append_jsonl(path: Path, rec: dict):
    """Append one JSON line atomically enough for a resume log: one write of the whole line, flushed
    and fsynced. A line cut by a kill (no trailing newline) is ignored by :func:`read_jsonl`."""
    line = json.dumps(rec, allow_nan=False, default=float) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        if f.tell() > 0:  # make sure a cut line from a killed run does not swallow this one
            with open(path, "rb") as g:
                g.seek(-1, os.SEEK_END)
                if g.read(1) != b"\n":
                    f.write("\n")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of ``path`` (a cut or corrupt line is skipped)."""
    out = []
    if not Path(path).exists():
        return out
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def offer_design(directory, inst: dict, scenario, R_s, psi, *, found_by: str, stage: str, seed: int,
                 seconds: float) -> tuple[bool, float, float]:
    """Store ``(R_s, psi)`` as the best-known design of ``inst`` if it is feasible and strictly better
    (relative 1e-9) than the stored one. Returns ``(improved, max_crb, previous best)``. The design's
    max-CRB is recomputed here by the torch model (never taken from the caller)."""
    import torch

    scn = scenario.to(torch.complex128)
    R_s = torch.as_tensor(np.asarray(R_s)).to(torch.complex128)
    psi = torch.as_tensor(np.asarray(psi)).to(torch.complex128)
    mx = float(scn.max_crb(R_s, psi))
    ok = bool(scn.is_feasible(R_s, psi, rtol=1e-6)) and math.isfinite(mx)
    import fcntl

    Path(directory).mkdir(parents=True, exist_ok=True)
    with open(Path(directory) / ".best.lock", "w") as lock:  # a search and a benchmark may offer at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _store_if_better(directory, inst, scn, R_s, psi, mx, ok, found_by, stage, seed, seconds)


def _store_if_better(directory, inst, scn, R_s, psi, mx, ok, found_by, stage, seed, seconds):
    import torch

    from irs_torch.scenario import Solution

    _, prev = load_best(directory, inst)
    if not ok or not mx < prev * (1 - 1e-9):
        return False, mx, prev
    m = scn.constraint_margins(R_s, psi)
    md = {"instance": inst["id"], "max_crb": mx, "found_by": found_by, "stage": stage, "seed": int(seed),
          "seconds": float(seconds), "regime": regime(scn, R_s, psi), "version": _version(),
          "margins": {k: torch.as_tensor(v).flatten().tolist() for k, v in m.items()},
          "previous_max_crb": prev if math.isfinite(prev) else None}
    p = best_path(directory, inst["id"])
    p.parent.mkdir(parents=True, exist_ok=True)
    Solution.evaluate(scn, R_s, psi, method="best-known", metadata=md).save(p)
    return True, mx, prev


def monotonicity_violations(directory=SUITE_DIR, rtol: float = 1e-9) -> list[dict]:
    """Pairs of stored best-known designs that break the monotonicity of the optimum: in one group, a
    budget ``b`` >= ``a`` in P_t and P_s (a_max is per group) whose best max-CRB is above ``a``'s (the
    optimum cannot be: ``a``'s design is feasible at ``b``). The continuation passes remove them."""
    suite = load_suite(directory)
    best = {i["id"]: load_best(directory, i)[1] for i in suite}
    out = []
    for a in suite:
        for b in suite:
            if (a["group"] == b["group"] and a["id"] != b["id"] and b["P_t"] >= a["P_t"] and b["P_s"] >= a["P_s"]
                    and math.isfinite(best[a["id"]]) and best[b["id"]] > best[a["id"]] * (1 + rtol)
                    and math.isfinite(best[b["id"]])):
                out.append({"smaller": a["id"], "larger": b["id"], "ratio": best[b["id"]] / best[a["id"]]})
    return out


# ----------------------------------------------------------------------------- search tasks
def _neighbours(inst: dict, suite: list[dict]) -> list[dict]:
    """Instances of the same group one grid step away in P_t or P_s (both directions)."""
    pts, pss = list(P_T_GRID), list(P_S_GRID)
    out = []
    for o in suite:
        if o["group"] != inst["group"] or o["id"] == inst["id"]:
            continue
        dt = abs(pts.index(o["P_t"]) - pts.index(inst["P_t"])) if o["P_t"] in pts and inst["P_t"] in pts else 9
        ds = abs(pss.index(o["P_s"]) - pss.index(inst["P_s"])) if o["P_s"] in pss and inst["P_s"] in pss else 9
        if dt + ds == 1:
            out.append(o)
    return out


def search_task(task: dict) -> dict:
    """One search task (module level: runs in a worker). ``task``: ``inst``, ``stage``, ``seed``,
    ``time_limit``, ``inits`` (``[(name, R_s array, psi array)]``, continuation). Returns the best
    design found as numpy arrays, its max-CRB, how it was found and the task's cost in seconds."""
    import torch

    from irs_torch.solvers import SolverOptions
    from irs_torch.solvers.ao import solve_direct
    from irs_torch.solvers.strategy import thorough_search

    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    scn = build_scenario(task["inst"]).to(torch.complex128)
    opts = SolverOptions(seed=int(task["seed"]), effort="legacy")
    if task["stage"] == "thorough":
        res = thorough_search(scn, opts, time_limit=float(task["time_limit"]))
        found = res.options["found_by"]
        cands = res.options["candidates"]
    else:
        res, found, cands = None, None, []
        for name, R, psi in task["inits"]:
            r = solve_direct(scn, "ao", {"R_s": torch.as_tensor(R), "psi": torch.as_tensor(psi)}, opts, False)
            cands.append({"name": name, "max_crb": float(r.max_crb), "success": bool(r.success)})
            ok = bool(scn.is_feasible(r.R_s, r.psi, rtol=1e-6)) and math.isfinite(r.max_crb)
            if ok and (res is None or r.max_crb < res.max_crb):
                res, found = r, name
        if res is None:
            return {"id": task["inst"]["id"], "stage": task["stage"], "max_crb": None, "found_by": None,
                    "seconds": time.perf_counter() - t0, "candidates": cands}
    return {"id": task["inst"]["id"], "stage": task["stage"], "max_crb": float(res.max_crb), "found_by": found,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "candidates": cands,
            "success": bool(res.success),
            "R_s": res.R_s.numpy(), "psi": res.psi.numpy()}


def search_best_known(directory=SUITE_DIR, *, quick: bool = False, ids=None, time_limit: float = 25.0,
                      passes: int = 2, workers: int = 1, backend: str = "local", address: str | None = None,
                      seed: int = SEARCH_SEED, log=print, progress: bool = True) -> dict:
    """Find (or improve) the best-known designs of the suite; resumable (see the module docstring).

    Stage ``thorough`` per instance (``time_limit`` seconds of :func:`thorough_search` each), then
    ``passes`` continuation passes (stage ``continuation-k``: the AO from each budget neighbour's best
    design; a pass skips an instance whose neighbours did not change since its last pass). Every task
    appends one line to ``records.jsonl``; an improvement is written to ``best/<id>.npz`` first.
    Returns a summary dict (tasks run and skipped, improvements, seconds).
    """
    directory = Path(directory)
    write_suite(directory) if not (directory / "suite.json").exists() else None
    suite = load_suite(directory)
    chosen = sorted(load_suite(directory, quick=quick, ids=ids), key=lambda i: not i.get("quick"))  # quick first
    rec_path = directory / "records.jsonl"
    done = {(r["id"], r["stage"]) for r in read_jsonl(rec_path)}
    by_id = {i["id"]: i for i in suite}
    summary = {"run": 0, "skipped": 0, "improved": 0, "seconds": 0.0}
    t_start = time.perf_counter()

    def handle(task, out):
        inst = by_id[task["inst"]["id"]]
        if isinstance(out, BaseException):
            rec = {"id": inst["id"], "stage": task["stage"], "error": f"{type(out).__name__}: {out}"[:500]}
            log(f"  {inst['id']} [{task['stage']}]: FAILED {rec['error']}")
        else:
            improved, prev = False, load_best(directory, inst)[1]
            mx = out["max_crb"] if out["max_crb"] is not None else math.inf
            if out.get("R_s") is not None:
                improved, mx, prev = offer_design(directory, inst, build_scenario(inst), out["R_s"], out["psi"],
                                                  found_by=f"{task['stage']}:{out['found_by']}", stage=task["stage"],
                                                  seed=task["seed"], seconds=out["seconds"])
            best = mx if improved else prev
            rec = {"id": inst["id"], "stage": task["stage"], "max_crb": mx if math.isfinite(mx) else None,
                   "found_by": out["found_by"],
                   "seconds": round(out["seconds"], 3), "cpu_seconds": round(out.get("cpu_seconds", math.nan), 3),
                   "improved": improved,
                   "best_max_crb": best if math.isfinite(best) else None, "seed": task["seed"],
                   "time_limit": task.get("time_limit"), "version": _version(), "commit": _git_commit(),
                   "candidates": out["candidates"]}
            summary["improved"] += int(improved)
            log(f"  {inst['id']} [{task['stage']}]: {mx:.6g} in {out['seconds']:.1f} s"
                + (f"  IMPROVED best-known (was {prev:.6g})" if improved else f"  (best {best:.6g})"))
        append_jsonl(rec_path, rec)
        done.add((inst["id"], task["stage"]))
        summary["run"] += 1

    from irs_torch.data.parallel import run_tasks

    todo = [{"inst": i, "stage": "thorough", "seed": seed, "time_limit": time_limit} for i in chosen
            if (i["id"], "thorough") not in done]
    summary["skipped"] += len(chosen) - len(todo)
    from irs_torch.outputs import progress_bar

    log(f"best-known search: stage thorough, {len(todo)} task(s) ({len(chosen) - len(todo)} done before)")
    for task, out in progress_bar(run_tasks(search_task, todo, backend=backend, workers=workers, address=address),
                                  total=len(todo), desc="quality-search thorough", unit="task", progress=progress):
        handle(task, out)
    for k in range(1, passes + 1):
        stage = f"continuation-{k}"
        todo = []
        for inst in chosen:
            if (inst["id"], stage) in done:
                summary["skipped"] += 1
                continue
            inits = []
            for nb in _neighbours(inst, suite):
                sol, _ = load_best(directory, nb)
                if sol is not None:
                    inits.append((f"from {nb['id']}", sol.R_s.numpy(), sol.psi.numpy()))
            if inits:
                todo.append({"inst": inst, "stage": stage, "seed": seed, "inits": inits})
        log(f"best-known search: stage {stage}, {len(todo)} task(s)")
        for task, out in progress_bar(run_tasks(search_task, todo, backend=backend, workers=workers,
                                                address=address),
                                      total=len(todo), desc=f"quality-search {stage}", unit="task", progress=progress):
            handle(task, out)
    summary["seconds"] = time.perf_counter() - t_start
    viol = monotonicity_violations(directory)
    summary["monotonicity_violations"] = len(viol)
    for v in viol:
        log(f"  not monotone yet: {v['larger']} best is {v['ratio']:.4f}x that of {v['smaller']}")
    return summary


# ----------------------------------------------------------------------------- the benchmark
METHOD_EFFORTS = {"legacy": "legacy", "fast": "fast", "default": "default", "thorough": "thorough",
                  "portfolio": "portfolio", "first-order": "first-order"}
DEFAULT_METHODS = ("legacy", "fast", "default")


_WARM: set = set()


def bench_task(task: dict) -> dict:
    """One benchmark run (module level: runs in a worker): ``solve(scenario, options=SolverOptions(
    effort=..., seed=...))`` of one suite instance. Returns max-CRB, wall and CPU seconds and the design.
    The first instance of each problem size in a worker is preceded by an untimed 1-iteration solve
    (cvxpy compiles its problems once per size), so that no method pays the compilation."""
    import torch

    from irs_torch.solvers import SolverOptions, solve

    torch.set_num_threads(1)
    scn = build_scenario(task["inst"])
    key = (scn.M, scn.N, scn.L)
    if key not in _WARM:  # untimed: compile the cvxpy problems of this size once per process
        solve(scn, options=SolverOptions(effort="legacy", max_iter=1))
        _WARM.add(key)
    t0, c0 = time.perf_counter(), time.process_time()
    res = solve(scn, options=SolverOptions(effort=METHOD_EFFORTS[task["method"]], seed=int(task["seed"])))
    sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"max_crb": float(res.max_crb), "seconds": sec, "cpu_seconds": cpu, "success": bool(res.success),
            "nit": int(res.nit),
            "found_by": res.options.get("found_by"), "R_s": res.R_s.numpy(), "psi": res.psi.numpy()}


def _q(x, q):
    return float(np.quantile(np.asarray(x, dtype=float), q)) if len(x) else float("nan")


def summarize(rows: list[dict], methods) -> dict:
    """Per method and regime (``all``, ``standard``, ``c1-binding``): n, ratio median / p90 / max, median
    seconds."""
    out = {}
    for m in methods:
        out[m] = {}
        for reg in ("all", "standard", "c1-binding"):
            rr = [r for r in rows if r["method"] == m and (reg == "all" or r["regime"] == reg) and r.get("ratio")]
            ratios = [r["ratio"] for r in rr]
            secs = [r["seconds"] for r in rr]
            cpus = [r["cpu_seconds"] for r in rr if r.get("cpu_seconds") is not None]
            out[m][reg] = {"n": len(rr), "ratio_median": _q(ratios, 0.5), "ratio_p90": _q(ratios, 0.9),
                           "ratio_max": float(max(ratios)) if ratios else float("nan"),
                           "seconds_median": _q(secs, 0.5), "seconds_total": float(sum(secs)),
                           "cpu_seconds_median": _q(cpus, 0.5) if len(cpus) == len(rr) else float("nan")}
    return out


def bench_quality(out, *, suite_dir=SUITE_DIR, quick: bool = False, ids=None, methods=DEFAULT_METHODS,
                  seed: int = 0, workers: int = 1, backend: str = "local", address: str | None = None,
                  update_best: bool = True, log=print, progress: bool = True) -> dict:
    """Run ``methods`` (efforts, :data:`METHOD_EFFORTS`) over the suite and compare with best-known.

    Writes under ``out``: ``runs.jsonl`` (one line per (method, instance): max-CRB, seconds; the resume
    log: a second call computes nothing already there), ``summary.json`` (table per method and regime,
    config, version) and ``quality.png`` (ECDF of the ratio to best-known per method). A run better than
    the stored best-known design updates ``best/<id>.npz`` and ``records.jsonl`` of the suite (unless
    ``update_best=False``), and says so (log line; ``improved_best`` in its row). The thorough row is
    the search's own stage-``thorough`` records (the effort ``thorough`` is that search) unless
    "thorough" is in ``methods``, in which case it is run like the others.
    Times: ``workers=1`` gives comparable wall seconds (one torch thread).
    """
    suite_dir, out = Path(suite_dir), Path(out)
    if out.resolve() == suite_dir.resolve():
        raise ValueError(f"--out must not be the suite directory {suite_dir} (outputs never overwrite inputs)")
    bad = [m for m in methods if m not in METHOD_EFFORTS]
    if bad:
        raise ValueError(f"methods must be among {sorted(METHOD_EFFORTS)}, got {bad}")
    insts = load_suite(suite_dir, quick=quick, ids=ids)
    missing = [i["id"] for i in insts if not best_path(suite_dir, i["id"]).exists()]
    insts = [i for i in insts if i["id"] not in set(missing)]
    if missing:
        log(f"bench quality: warning: {len(missing)} instance(s) have no best-known design in {suite_dir}/best yet "
            f"(e.g. {missing[0]}) and are left out; `irs-torch bench quality-search` finds them")
    if not insts:
        raise FileNotFoundError(f"no selected instance has a best-known design in {suite_dir}/best; "
                                f"run `irs-torch bench quality-search` first")
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.jsonl"
    done = {(r["method"], r["id"], r.get("seed")) for r in read_jsonl(runs_path)}
    todo = [{"inst": i, "method": m, "seed": seed} for m in methods for i in insts if (m, i["id"], seed) not in done]
    log(f"bench quality: {len(insts)} instance(s) x {len(methods)} method(s); {len(todo)} run(s) to do")
    from irs_torch.data.parallel import run_tasks
    from irs_torch.outputs import progress_bar

    n_new = 0
    for task, res in progress_bar(run_tasks(bench_task, todo, backend=backend, workers=workers, address=address),
                                  total=len(todo), desc="bench quality", unit="run", progress=progress):
        inst = task["inst"]
        if isinstance(res, BaseException):
            row = {"method": task["method"], "id": inst["id"], "seed": seed,
                   "error": f"{type(res).__name__}: {res}"[:500]}
            log(f"  {task['method']:>8} {inst['id']}: FAILED {row['error']}")
        else:
            _, prev = load_best(suite_dir, inst)
            improved = False
            if update_best:  # offer_design checks feasibility itself (success may be False for failed steps)
                improved, _, _ = offer_design(suite_dir, inst, build_scenario(inst), res["R_s"], res["psi"],
                                              found_by=f"bench:{task['method']}:{res['found_by']}",
                                              stage=f"bench-{task['method']}", seed=seed, seconds=res["seconds"])
                if improved:
                    append_jsonl(suite_dir / "records.jsonl",
                                 {"id": inst["id"], "stage": f"bench-{task['method']}", "max_crb": res["max_crb"],
                                  "found_by": res["found_by"], "seconds": round(res["seconds"], 3), "improved": True,
                                  "best_max_crb": res["max_crb"], "seed": seed, "version": _version(),
                                  "commit": _git_commit()})
            row = {"method": task["method"], "id": inst["id"], "seed": seed, "max_crb": res["max_crb"],
                   "seconds": round(res["seconds"], 4), "cpu_seconds": round(res["cpu_seconds"], 4),
                   "success": res["success"], "nit": res["nit"],
                   "found_by": res["found_by"], "best_at_run": prev, "improved_best": improved,
                   "version": _version()}
            log(f"  {task['method']:>8} {inst['id']}: {res['max_crb']:.5g} ({res['max_crb'] / prev:.4f}x best) "
                f"in {res['seconds']:.1f} s" + ("  IMPROVED best-known" if improved else ""))
        append_jsonl(runs_path, row)
        n_new += 1
    return _report(out, suite_dir, insts, methods, seed, n_new, log, missing)


def _report(out, suite_dir, insts, methods, seed, n_new, log, missing=()) -> dict:
    best = {}
    reg = {}
    import torch

    for i in insts:
        sol, mx = load_best(suite_dir, i)
        best[i["id"]] = mx
        scn = build_scenario(i).to(torch.complex128)
        reg[i["id"]] = regime(scn, sol.R_s.to(torch.complex128), sol.psi.to(torch.complex128))
    ids = set(best)
    rows = []
    for r in read_jsonl(out / "runs.jsonl"):
        if r["id"] in ids and r.get("seed") == seed and r["method"] in methods and "max_crb" in r:
            rows.append({**r, "regime": reg[r["id"]], "ratio": r["max_crb"] / best[r["id"]]})
    meths = list(methods)
    if "thorough" not in meths:  # the search's own per-instance thorough stage
        for r in read_jsonl(Path(suite_dir) / "records.jsonl"):
            if r["id"] in ids and r.get("stage") == "thorough" and r.get("max_crb"):
                rows.append({"method": "thorough", "id": r["id"], "max_crb": r["max_crb"], "seconds": r["seconds"],
                             "cpu_seconds": r.get("cpu_seconds"),
                             "regime": reg[r["id"]], "ratio": r["max_crb"] / best[r["id"]],
                             "time_limit": r.get("time_limit")})
        meths.append("thorough")
    table = summarize(rows, meths)
    summary = {"format": "irs-torch/bench-quality", "version": _version(), "commit": _git_commit(), "seed": seed,
               "suite": str(suite_dir), "instances": len(insts), "regimes": {k: sum(v == k for v in reg.values())
                                                                             for k in ("standard", "c1-binding")},
               "new_runs": n_new, "left_out_no_best_known": list(missing), "methods": table,
               "notes": "ratio = max-CRB / best-known max-CRB (>= 1); seconds = wall time of one solve, 1 torch thread "
                        "(cpu_seconds: its CPU time, stable when other work shares the cores); "
                        "thorough = the search's stage-thorough records (time-capped per instance)"}
    from irs_torch.outputs import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, allow_nan=True) + "\n")
    _plot(out / "quality.png", rows, meths)
    log(format_table(summary))
    return summary


def format_table(summary: dict) -> str:
    lines = [(f"{'method':>9} {'regime':>11} {'n':>3} {'ratio med':>9} {'p90':>7} {'max':>7} {'wall med [s]':>12} "
              f"{'CPU med [s]':>11}")]
    for m, per in summary["methods"].items():
        for reg, s in per.items():
            if s["n"]:
                lines.append(f"{m:>9} {reg:>11} {s['n']:>3} {s['ratio_median']:>9.4f} {s['ratio_p90']:>7.4f} "
                             f"{s['ratio_max']:>7.3f} {s['seconds_median']:>12.2f} {s['cpu_seconds_median']:>11.2f}")
    return "\n".join(lines)


def _plot(path, rows, methods):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, reg in zip(axes, ("standard", "c1-binding")):
        for m in methods:
            r = np.sort([x["ratio"] for x in rows if x["method"] == m and x["regime"] == reg])
            if len(r):
                ax.step(r, np.arange(1, len(r) + 1) / len(r), where="post", label=f"{m} (n={len(r)})")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("max-CRB / best-known")
        ax.set_title(f"regime: {reg}")
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    axes[0].set_ylabel("fraction of instances")
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig

    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)

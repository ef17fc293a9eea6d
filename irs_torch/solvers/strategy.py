"""The exact solver's entry point, :func:`solve`, and its effort levels: which starting points the AO runs
from, and how many.

:func:`solve` decides the strategy; the AO itself (:func:`irs_torch.solvers.ao.solve_direct`) is a plain
function the strategies call for each start.

The AO (:mod:`.ao`) is a local method. When C1 binds it keeps roughly the amplitude level and
the beam structure it starts from (docs/assumptions.md "Numerical experience"), so a single random start can land 2x
above the best design known. The efforts trade time for quality:

- ``"legacy"``: the AO from one random start (``n_starts`` as given); data-set labels use it.
- ``"fast"``: a batched joint first-order screen (:func:`joint_first_order`) of a few diverse starts,
  then the AO from the best screened point, capped at a few iterations.
- ``"default"``: the screen over more diverse starts, then the full AO from the best point.
- ``"portfolio"``: the labeller of data sets: the diverse starts (and a network's hypotheses when given), some
  also from a relaxed IRS budget, refined together by the batched first-order method
  (:func:`portfolio_solve`), then one AO iteration (P2 + P3) from the best point.
- ``"thorough"``: the best-known search for one instance (:func:`thorough_search`): many diverse
  starts (random phases, a_max, co-phased, several BS power levels, the screen's best few) each
  run to convergence, plus continuation from relaxed budgets (P_t / 100, P_t / 10, 10 P_s), under a
  time cap; it keeps the best and says which start found it.

The screen optimises ``(R_s, psi)`` jointly with Adam on the differentiable torch CRB in a
parameterisation that is feasible by construction (BS budget by a softmax/sigmoid split of
``L P_t``, PSD as ``B B^H``, C1 and a_max by the closed-form largest scale of psi), batched over
starts. Unlike the AO it can trade BS power against IRS amplification continuously, which is
what the AO cannot do when C1 binds. Every returned point is the AO's (P2 certified), so the
result type, feasibility check and failure accounting are the AO's.
"""
from __future__ import annotations

import itertools
import math
import time

import torch

from irs_torch.scenario import Scenario
from irs_torch.solvers.ao import solve_direct
from irs_torch.solvers.result import EFFORTS, SolveResult, SolverOptions
from irs_torch.solvers.screen import joint_first_order
from irs_torch.solvers.starts import amax_start, diverse_starts, initial_point, random_start


def solve(scenario: Scenario, method: str = "ao", init: dict | None = None,
          options: SolverOptions | None = None, progress: bool = False) -> SolveResult:
    """Solve (P1) for one scenario with ``method`` in ``("ao", "transmit-only", "reflective-only",
    "passive")`` (see :mod:`irs_torch.solvers`). ``init``: see :func:`initial_point`. With
    ``init=None`` and ``options.n_starts > 1`` the AO also runs from :func:`amax_start` (and
    further random starts) and keeps the best. ``progress`` shows tqdm bars.

    Returns a :class:`SolveResult`; its CRB is the torch model's for the returned point, which is
    checked feasible (``success``). Raises ValueError for batched scenarios or bad arguments.
    Runs with ``options.torch_threads`` torch threads (restored afterwards).
    """
    options = options or SolverOptions()
    if not isinstance(options, SolverOptions):
        raise TypeError(f"options must be a SolverOptions, got {type(options).__name__}")
    n0 = torch.get_num_threads()
    if options.torch_threads is not None and options.torch_threads != n0:
        torch.set_num_threads(options.torch_threads)
    try:
        if method == "ao" and options.effort != "legacy":

            return solve_with_effort(scenario, options.effort, init, options, progress)
        return solve_direct(scenario, method, init, options, progress)
    finally:
        if torch.get_num_threads() != n0:
            torch.set_num_threads(n0)


# ----------------------------------------------------------------------------- strategies
def _legacy(options):
    from irs_torch.solvers.result import SolverOptions

    return SolverOptions(**{**options.to_dict(), "effort": "legacy"})


def _run_ao(scn, R, psi, options, progress=False):

    return solve_direct(scn, "ao", {"R_s": R, "psi": psi}, _legacy(options), progress)


# effort -> (screened starts, Adam steps, AO iterations cap of the continued point); lr 0.1 -> 0.005 (cosine)
# default: 400 steps / patience 50, chosen on the quality suite: 600 / 60 gave median 1.0002x,
# p90 1.026x at 1.61x the legacy time; 400 / 50 1.0097x, 1.043x at 1.42x; 300 / 40 1.017x, 1.079x at 1.31x
SCREEN = {"fast": (8, 200, 3), "default": (8, 400, None)}
SCREEN_LR, SCREEN_DECAY = 0.1, 0.05
AO_TRIES = 1  # AO runs from the next screened points when one fails (P2 failures cost ~10 s each: off)
PATIENCE = 50  # early stop of the screen: < 0.1% gain of the best start in this many Adam steps


def screened_solve(scenario: Scenario, options, effort: str = "default", progress: bool = False):
    """The ``fast`` / ``default`` strategy: :func:`diverse_starts` -> :func:`joint_first_order`
    (batched) -> the AO from the best screened point (``fast``: 8 starts, at most 200 Adam steps, at
    most 3 AO iterations; ``default``: 8 starts, at most 400 steps, the AO to convergence; both stop the
    screen early after :data:`PATIENCE` steps without 0.1% gain). With :data:`AO_TRIES` > 1, an AO
    run that fails (a P2 failure) is followed by one from the next screened point, and the best
    successful run is returned (``options["ao_runs"]``); off by default (on C1-binding instances the
    failing P2 rounds cost ~10 s a run, and the failed run's point is still feasible and screened).
    Returns the AO's :class:`SolveResult` with ``options["effort"]``, ``options["found_by"]`` (the start's name),
    ``options["screen_max_crb"]`` (per start) and ``times["screen"]`` added; ``init_*`` is the best
    start before the screen."""
    t0 = time.perf_counter()
    n, steps, cap = SCREEN[effort]
    scn = scenario.to(torch.complex128)
    starts = diverse_starts(scn, n, seed=options.seed)
    R0 = torch.stack([s[1] for s in starts])
    psi0 = torch.stack([s[2] for s in starts])
    if scn.M <= 32:  # the historical full-rank screen, bit for bit (the quality suite's numbers)
        R, psi, c = joint_first_order(scn, R0, psi0, steps=steps, lr=SCREEN_LR, decay=SCREEN_DECAY, patience=PATIENCE)
    else:  # large arrays: the same Adam steps on rank-8 transmit factors, no M x M product (first_order.refine_batch)
        from irs_torch.solvers.first_order import refine_batch

        fo = refine_batch(scn, R0, psi0, steps=steps, lr=SCREEN_LR, decay=SCREEN_DECAY, patience=PATIENCE,
                          keep_all=True)
        R, psi, c = fo.R_s[:, 0], fo.psi[:, 0], fo.max_crb[:, 0]
    t_screen = time.perf_counter() - t0
    opts = options if cap is None else _replace(options, max_iter=min(cap, options.max_iter))
    res, tried = None, []
    for j in torch.argsort(c)[:AO_TRIES].tolist():  # the next screened point only if the AO's run failed
        r = _run_ao(scn, R[j], psi[j], opts, progress)
        tried.append({"start": starts[j][0], "max_crb": float(r.max_crb), "success": bool(r.success)})
        if res is None or (r.success, -r.max_crb) > (res[1].success, -res[1].max_crb):
            res = (j, r)
        if r.success:
            break
    j, res = res
    start_c = scn.crb(R0[j], psi0[j]).total
    res.init_R_s, res.init_psi, res.init_crb, res.init_max_crb = R0[j], psi0[j], start_c, float(start_c.max())
    res.times["screen"] = t_screen
    res.times["total"] = time.perf_counter() - t0
    res.options.update(effort=effort, found_by=f"screen:{starts[j][0]}", screen_max_crb=c.tolist(), ao_runs=tried,
                       init={"kind": "screened", "start": starts[j][0]})
    return res


#: The ``portfolio`` effort (data-set labels): diverse starts, the first PORTFOLIO_RELAXED of them also from a
#: relaxed IRS budget (10 P_s, a continuation inside the batched first-order run), PORTFOLIO_STEPS steps, then
#: PORTFOLIO_AO AO iterations from the best point.
PORTFOLIO_STARTS, PORTFOLIO_RELAXED, PORTFOLIO_STEPS, PORTFOLIO_AO = 8, 4, 400, 1


def portfolio_solve(scenario: Scenario, options, progress: bool = False, extra_starts=()):
    """The ``portfolio`` effort: :func:`diverse_starts` (and ``extra_starts``, ``[(name, R_s, psi), ...]``, e.g. a
    network's hypotheses), the first :data:`PORTFOLIO_RELAXED` diverse ones a second time from a relaxed IRS budget
    (``relax=(1, 10)``: the run starts at 10 P_s and moves to P_s), all refined together by
    :func:`irs_torch.solvers.first_order.refine_batch`, then the AO capped at :data:`PORTFOLIO_AO` iterations from
    the best point. ``options["found_by"]`` names the winning start. Returns the AO's :class:`SolveResult`."""
    from irs_torch.solvers.first_order import refine_batch

    t0 = time.perf_counter()
    scn = scenario.to(torch.complex128)
    starts = list(extra_starts) + diverse_starts(scn, PORTFOLIO_STARTS, seed=options.seed)
    relaxed = [(f"{n} from 10 P_s", R, p) for n, R, p in starts[len(extra_starts):][:PORTFOLIO_RELAXED]]
    relax = [(1.0, 1.0)] * len(starts) + [(1.0, 10.0 if scn.active else 1.0)] * len(relaxed)
    starts += relaxed
    R0 = torch.stack([s[1].to(torch.complex128) for s in starts]).unsqueeze(1)
    psi0 = torch.stack([s[2].to(torch.complex128) for s in starts]).unsqueeze(1)
    fo = refine_batch(scn, R0, psi0, steps=PORTFOLIO_STEPS, lr=SCREEN_LR, decay=SCREEN_DECAY, patience=PATIENCE,
                      relax=torch.tensor(relax, dtype=torch.float64))
    t_screen = time.perf_counter() - t0
    j = int(fo.start[0])
    res = _run_ao(scn, fo.R_s[0], fo.psi[0], _replace(options, max_iter=min(PORTFOLIO_AO, options.max_iter)),
                  progress)
    start_c = scn.crb(R0[j, 0], scn.scale_psi_to_feasible(R0[j, 0], psi0[j, 0])).total
    res.init_R_s, res.init_psi, res.init_crb, res.init_max_crb = R0[j, 0], psi0[j, 0], start_c, float(start_c.max())
    res.times["screen"] = t_screen
    res.times["total"] = time.perf_counter() - t0
    res.options.update(effort="portfolio", found_by=f"portfolio:{starts[j][0]}",
                       screen_max_crb=fo.start_max_crb[:, 0].tolist(),
                       init={"kind": "portfolio", "start": starts[j][0]})
    return res


def _replace(options, **kw):
    from irs_torch.solvers.result import SolverOptions

    return SolverOptions(**{**options.to_dict(), **kw})


def relaxed_scenario(scenario: Scenario, P_t_factor: float = 1.0, P_s_factor: float = 1.0) -> Scenario:
    """The same system with P_t and P_s multiplied by the given factors (continuation steps)."""
    return scenario.replace(P_t=float(scenario.P_t) * P_t_factor, P_s=float(scenario.P_s) * P_s_factor)


def thorough_search(scenario: Scenario, options, *, time_limit: float = 120.0, extra_inits=(),
                    progress: bool = False):
    """Best-known search for one instance (effort ``"thorough"``).

    Candidates, each run by the AO to convergence, in this order until ``time_limit`` seconds are
    spent (the first three always run): the ``default`` strategy; the AO's own random and a_max starts;
    continuation from the design solved at P_t / 10 (feasible here); the best 4 of a 16-start joint
    screen; continuation from P_t / 100 and from 10 P_s (repaired by
    :func:`~irs_torch.solvers.starts.initial_point`); further random starts at several amplitude levels and
    BS beams. ``extra_inits``: ``[(name, R_s, psi), ...]`` warm starts tried first (e.g. neighbouring
    budgets' best designs; repaired by ``initial_point``). Returns the best :class:`SolveResult` with
    ``options["found_by"]``, ``options["candidates"]`` (name, max-CRB, seconds each) and
    ``times["total"]`` the whole search.
    """
    t0 = time.perf_counter()
    scn = scenario.to(torch.complex128)
    cands = []
    best = None

    last = []

    def consider(name, res):
        nonlocal best
        last[:] = [(name, res)]
        # a feasible point counts even where a P2 step failed (success False): it is a valid design
        ok = bool(scn.is_feasible(res.R_s, res.psi, rtol=options.feas_rtol)) and math.isfinite(res.max_crb)
        cands.append({"name": name, "max_crb": float(res.max_crb), "seconds": float(res.times.get("total", 0.0)),
                      "success": bool(res.success), "feasible": ok})
        if ok and (best is None or res.max_crb < best[1].max_crb):
            best = (name, res)

    c0 = time.process_time()

    def left():  # CPU seconds of this process: the cap does not shrink when other work shares the cores
        return time_limit - (time.process_time() - c0)

    for name, R, psi in extra_inits:
        consider(name, _run_ao(scn, R, psi, options, progress))
    consider("default", screened_solve(scn, options, "default", progress))

    R, psi, _ = initial_point(scn, None, _replace(options, seed=options.seed))
    consider(f"random(seed={options.seed})", _run_ao(scn, R, psi, options, progress))
    consider(f"amax(seed={options.seed})", _run_ao(scn, *amax_start(scn, options.seed), options, progress))
    plan = [("continuation(P_t/10)", ("P_t", 0.1)), ("screen16", None), ("continuation(P_t/100)", ("P_t", 0.01))]
    if scn.active:
        plan.append(("continuation(10 P_s)", ("P_s", 10.0)))
    for k in range(24):
        plan.append((f"random#{k}", k))
    for name, what in plan:
        if left() <= 0:
            break
        if name == "screen16":
            starts = diverse_starts(scn, 16, seed=options.seed + 1)
            Rs, ps, c = joint_first_order(scn, torch.stack([s[1] for s in starts]),
                                          torch.stack([s[2] for s in starts]), steps=1000, lr=SCREEN_LR,
                                          decay=SCREEN_DECAY)
            for j in torch.argsort(c)[:4].tolist():
                if left() <= 0:
                    break
                consider(f"screen16:{starts[j][0]}", _run_ao(scn, Rs[j], ps[j], options, progress))
        elif isinstance(what, tuple):
            field, f = what
            relaxed = relaxed_scenario(scn, **({"P_t_factor": f} if field == "P_t" else {"P_s_factor": f}))
            r0 = screened_solve(relaxed, options, "default", progress)
            consider(name, _run_ao(scn, r0.R_s, r0.psi, options, progress))
        else:
            k = what
            R, psi = random_start(scn, options.seed * 7919 + 101 + k, (1.0, 0.5, 0.25, 0.1)[k % 4], k % 2 == 1)
            consider(name, _run_ao(scn, R, psi, options, progress))
    if best is None:  # no candidate feasible: return the last one as is (its success says so)
        best = last[0]
    name, res = best
    res.times["total"] = time.perf_counter() - t0
    res.options.update(effort="thorough", found_by=name, candidates=cands, time_limit=float(time_limit))
    res.message = (res.message + "; " if res.message else "") + f"thorough: best of {len(cands)} candidates: {name}"
    return res


def solve_with_effort(scenario: Scenario, effort: str, init: dict | None, options, progress: bool = False):
    """Dispatch of :func:`irs_torch.solvers.solve` for ``method="ao"`` by ``options.effort`` (see the
    module docstring). A warm start (``init`` with ``R_s``/``psi``) and ``init={"kind": ...}`` run the
    AO from that start (``legacy``), as before; so does ``n_starts > 1`` (the legacy multi-start)."""

    if effort not in EFFORTS:
        raise ValueError(f"effort must be one of {EFFORTS}, got {effort!r}")
    if effort == "legacy" or init is not None or options.n_starts > 1:
        return solve_direct(scenario, "ao", init, _legacy(options), progress)
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be a Scenario, got {type(scenario).__name__}")
    if scenario.batch_shape:
        raise ValueError(
            f"solve needs an unbatched scenario, got batch shape {tuple(scenario.batch_shape)}; index it (scenario[i])"
        )
    if effort == "thorough":
        return thorough_search(scenario, options, progress=progress)
    if effort == "portfolio":
        return portfolio_solve(scenario, options, progress=progress)
    if effort == "first-order":  # the batched labeller on a batch of one
        from irs_torch.solvers.portfolio import first_order_portfolio

        res = first_order_portfolio(Scenario.stack([scenario]), options, progress=progress)
        return res.item_result(0, options)
    return screened_solve(scenario, options, effort, progress)


def continuation_sweep(scenarios, options, progress: bool = False):
    """Solve a sweep of budgets in order of increasing budget (same system, each of P_t, P_s, a_max
    non-decreasing along the list), using the monotonicity of the optimum: every point is
    solved with ``options`` and also by the AO from the previous point's design (feasible unchanged
    at the larger budget), keeping the better; then a downward pass tries each point from the next
    one's design (repaired by :func:`~irs_torch.solvers.starts.initial_point`). With an AO that never
    worsens its start, the returned max-CRBs are non-increasing along the list.

    Returns one :class:`SolveResult` per scenario (``options["found_by"]`` says which start won)."""

    scns = [s.to(torch.complex128) for s in scenarios]
    for a, b in itertools.pairwise(scns):
        for f in ("P_t", "P_s", "a_max"):
            if float(getattr(b, f)) < float(getattr(a, f)):
                raise ValueError(f"continuation_sweep needs non-decreasing budgets; {f} goes from "
                                 f"{float(getattr(a, f)):g} to {float(getattr(b, f)):g}")
    res = [solve(s, options=options) for s in scns]
    for k in range(1, len(scns)):  # upward: the smaller budget's design is feasible here
        r = _run_ao(scns[k], res[k - 1].R_s, res[k - 1].psi, options, progress)
        if r.success and r.max_crb < res[k].max_crb:
            r.options["found_by"] = f"continuation from point {k - 1}"
            res[k] = r
    for k in range(len(scns) - 2, -1, -1):  # downward: the larger budget's design, repaired
        r = _run_ao(scns[k], res[k + 1].R_s, res[k + 1].psi, options, progress)
        if r.success and r.max_crb < res[k].max_crb:
            r.options["found_by"] = f"continuation from point {k + 1}"
            res[k] = r
    return res

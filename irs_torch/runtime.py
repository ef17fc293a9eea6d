"""Runtime pipeline: the network proposes, the exact solver refines.

Batches: :func:`solve_batch` (one batched network pass; refinement item by item) over
:func:`load_scenarios` (a batched scenario file or a directory); :class:`BatchResult` writes one
solutions file. Portfolio: ``solve_learned(..., hypotheses=k)`` refines the network's k best designs
(:func:`network_hypotheses`, :func:`refine_starts`). The network-only path (:func:`network_result`)
imports no conic solver. The warm-start benchmark lives in :mod:`irs_torch.warmstart_bench`.

``solve_learned(scenario, checkpoint=None, refine="ao")``: batched network inference -> feasible
design (by construction) -> the AO solver started from the prediction -> a :class:`SolveResult`
whose ``times`` hold the per-stage wall times (``load``, ``predict``, ``refine``, ``total``).

Without ``checkpoint`` the shipped model in ``checkpoints/`` that matches the scenario's array sizes
(M, N_h, N_v, L) is used (:func:`find_checkpoint`); it says which on stderr. The directories searched
are :func:`checkpoint_dirs`: those listed in the environment variable ``IRS_TORCH_CHECKPOINTS``
(``os.pathsep``-separated) if it is set, else the repository's ``checkpoints/``.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from irs_torch.learn.checkpoint import default_checkpoint_dirs
from irs_torch.scenario import Scenario

CHECKPOINT_DIRS = default_checkpoint_dirs()  # the installed package's data folder, or the repository's
CHECKPOINTS_ENV = "IRS_TORCH_CHECKPOINTS"
REFINE = ("fo", "ao", "none")
#: The default refinement of a learned solve (see :data:`FO_STEPS` and the docs' learned warm-start page).
DEFAULT_REFINE = "fo"
#: Instances per network call in batch inference: measured on 2 cores (2,000 paper-size scenarios, 16
#: hypotheses) 1.25 ms per instance in chunks of 1024, 2.4 ms at 256, 4.3 ms at 4096 (memory traffic).
PREDICT_CHUNK = 1024


def checkpoint_dirs(dirs=None) -> list[Path]:
    """Directories searched for shipped models: ``dirs`` if given, else ``$IRS_TORCH_CHECKPOINTS``
    (``os.pathsep``-separated) if set, else :data:`CHECKPOINT_DIRS`."""
    if dirs is None:
        env = os.environ.get(CHECKPOINTS_ENV)
        dirs = [d for d in env.split(os.pathsep) if d] if env else CHECKPOINT_DIRS
    elif isinstance(dirs, (str, Path)):
        dirs = [dirs]
    return [Path(d) for d in dirs]


def shipped_checkpoints(dirs=None) -> list[Path]:
    """Model files (``*.pt``) in :func:`checkpoint_dirs` (listed, not opened)."""
    out = []
    for d in checkpoint_dirs(dirs):
        if d.is_dir():
            out.extend(sorted(d.glob("*.pt")))
    return out


def budget_preference(info: dict, scenario: Scenario) -> tuple:
    """Sort key among model files that fit a scenario's sizes (smaller is preferred): first the models
    whose training budget ranges (sidecar ``budgets``: P_t, P_s, a_max) contain every budget of the
    scenario (all batch items), the most specialised first (smallest log-volume of the ranges: the
    single-budget paper model at exactly its budget point, else the budget-conditioned model); then
    those that do not contain them, the widest first; then files that record no ranges."""
    b = info.get("budgets")
    if not b:
        return (2, 0.0)
    contains, logvol = True, 0.0
    for k in ("P_t", "P_s", "a_max"):
        lo, hi = float(b[k][0]), float(b[k][1])
        v = torch.as_tensor(getattr(scenario, k), dtype=torch.float64)
        contains &= bool((v >= lo * (1 - 1e-9)).all()) and bool((v <= hi * (1 + 1e-9)).all())
        logvol += math.log(hi / lo) if hi > lo else 0.0
    return (0, logvol) if contains else (1, -logvol)


def find_checkpoint(scenario: Scenario, dirs=None) -> Path:
    """The shipped model for the scenario's sizes (and element spacings d_h, d_v and ``active``), searched in
    :func:`checkpoint_dirs` (``dirs``): a per-size model where one fits, else the any-size model
    (:mod:`irs_torch.learn.anysize`; sidecar format ``irs-torch/warm-start-anysize-info``) whose training size
    ranges hold the scenario's sizes, else (with a UserWarning naming the sizes outside) any any-size model for
    the scenario's ``active``; FileNotFoundError listing the directories and what they hold otherwise.

    The scan never opens (unpickles) a model file: it reads each ``*.pt``'s JSON sidecar
    (:func:`irs_torch.learn.checkpoint.read_sidecar`, written by ``export_model``), and checks the
    chosen file's sha256 against it. Among several that fit, :func:`budget_preference` picks the one
    whose training budgets cover the scenario's. Files without a valid sidecar, or whose bytes changed since it
    was written, are skipped with a UserWarning naming them (and listed in the error if nothing
    matches); the model is then loaded weights-only by :func:`irs_torch.learn.checkpoint.load_model`."""
    import warnings

    from irs_torch.learn import anysize
    from irs_torch.learn.checkpoint import file_sha256, read_sidecar

    seen, matches, any_size = [], [], []
    want = {"M": scenario.M, "N_h": scenario.N_h, "N_v": scenario.N_v, "L": scenario.L}
    for p in shipped_checkpoints(dirs):
        if anysize.is_anysize_sidecar(p):  # a model for every size: the fallback when no per-size model fits
            try:
                info = anysize.read_sidecar(p)
            except ValueError as e:
                warnings.warn(f"checkpoint scan: skipped {e}", stacklevel=2)
                seen.append(f"{p.name} (skipped: no valid sidecar {p.with_suffix('.json').name})")
                continue
            rng = info["size_ranges"]
            seen.append(f"{p.name} (any size: " + ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in rng.items()) + ")")
            if bool(info["active"]) == bool(scenario.active):
                out = anysize.outside_ranges(scenario, rng)
                any_size.append((len(out), str(p), p, out))
            continue
        try:
            info = read_sidecar(p)
        except ValueError as e:
            warnings.warn(f"checkpoint scan: skipped {e}", stacklevel=2)
            seen.append(f"{p.name} (skipped: no valid sidecar {p.with_suffix('.json').name})")
            continue
        sizes = {k: int(info["sizes"][k]) for k in ("M", "N_h", "N_v", "L")}
        spacing = {k: float(info[k]) for k in ("d_h", "d_v")}
        seen.append(f"{p.name} {sizes}" + ("" if spacing == {"d_h": 0.5, "d_v": 0.5} else f" {spacing}"))
        if sizes == want and spacing == {"d_h": float(scenario.d_h), "d_v": float(scenario.d_v)} and \
                bool(info["active"]) == bool(scenario.active):
            if file_sha256(p) != info["sha256"]:
                warnings.warn(f"checkpoint scan: skipped {p}: its sha256 differs from its sidecar's (the file "
                              f"changed after the sidecar was written); rewrite the sidecar with "
                              f"`python -m irs_torch.learn.checkpoint sidecar {p}` if the file is right", stacklevel=2)
                seen[-1] = f"{p.name} (skipped: sha256 differs from its sidecar)"
                continue
            matches.append((budget_preference(info, scenario), str(p), p))
    if matches:
        pref, _, best = min(matches)
        if pref[0] == 1:
            b = read_sidecar(best)["budgets"]
            warnings.warn(f"the scenario's budgets (P_t, P_s, a_max) lie outside the training ranges of every model "
                          f"for its sizes; using {best.name} (trained on P_t {b['P_t']} W, P_s {b['P_s']} W, a_max "
                          f"{b['a_max']}): its network design may be far from optimal (refinement helps)", stacklevel=2)
        return best
    for n_out, _, p, out in sorted(any_size):  # the any-size model whose size ranges hold the scenario's sizes
        if file_sha256(p) != anysize.read_sidecar(p)["sha256"]:
            warnings.warn(f"checkpoint scan: skipped {p}: its sha256 differs from its sidecar's (the file changed "
                          f"after the sidecar was written)", stacklevel=2)
            continue
        if n_out:
            warnings.warn(f"no per-size model for M={scenario.M}, N_h={scenario.N_h}, N_v={scenario.N_v}, "
                          f"L={scenario.L}, and its sizes lie outside the training ranges of the any-size model "
                          f"{p.name}: {', '.join(out)}; using it anyway (its designs stay feasible, their quality "
                          f"there is untested; refinement helps)", stacklevel=2)
        return p
    raise FileNotFoundError(
        f"no shipped checkpoint for M={scenario.M}, N_h={scenario.N_h}, N_v={scenario.N_v}, L={scenario.L} "
        f"(d_h={float(scenario.d_h):g}, d_v={float(scenario.d_v):g}, active={scenario.active}) "
        f"in {', '.join(str(d) for d in checkpoint_dirs(dirs))} "
        f"(set ${CHECKPOINTS_ENV} to search elsewhere); found: {'; '.join(seen) or 'none'}. "
        f"Train one (training/README.md) and pass --checkpoint"
        + ("; a model file without a sidecar gets one with `python -m irs_torch.learn.checkpoint sidecar FILE.pt`"
           if any("sidecar" in x for x in seen) else ""))


#: AO iterations of the refinement stage by default (measured on the shipped model's test split: the
#: first 2-3 warm iterations bring the network's design to the cold AO's level; later ones add about
#: 1% each at 0.1-0.15x of a cold solve's time each; see docs/learned.md).
REFINE_ITER = 3


def warm_start_options(options=None, refine_iter: int | None = REFINE_ITER):
    """The AO settings of the refinement stage: ``options`` (default :class:`SolverOptions`) with the
    first reflective step (P3) run like the AO's later ones - one start (the current psi, i.e. the
    network's), ``p3_warm_steps`` Adam steps - instead of the cold solve's multi-start
    (``p3_starts`` x ``p3_steps``, whose random restarts are what a good start makes unnecessary).
    Measured on the paper data set: the cold first P3 is most of a warm AO's time. ``refine_iter``:
    cap on the AO iterations (``min(options.max_iter, refine_iter)``; None: ``options.max_iter``)."""
    import dataclasses

    from irs_torch.solvers import SolverOptions

    opts = options or SolverOptions()
    if refine_iter is not None and (isinstance(refine_iter, bool) or not isinstance(refine_iter, int)
                                    or refine_iter < 1):
        raise ValueError(f"refine_iter must be None or an integer >= 1, got {refine_iter!r}")
    it = opts.max_iter if refine_iter is None else min(opts.max_iter, refine_iter)
    return dataclasses.replace(opts, p3_starts=1, p3_steps=opts.p3_warm_steps, max_iter=it)


def network_hypotheses(net, scenario: Scenario, k: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The network's ``k`` best feasible designs for one scenario, best first: ``[(R_s, psi), ...]``.

    The first is the network's own output (:func:`irs_torch.learn.predict`: with K > 1 hypotheses the
    slot-by-slot combination :func:`irs_torch.learn.nets.combine_slots`, never worse than any single
    hypothesis); the next ``k - 1`` are the single hypotheses with the smallest max-CRB (exact torch
    physics), in that order. One batched forward pass. Shapes: R_s ``(L, M, M)`` [W], psi ``(L, N)``,
    complex128, each meeting every constraint of (P1). Raises ValueError if ``k`` is not in
    ``[1, net.hypotheses + 1]`` or the scenario is batched.
    """
    from irs_torch.learn.checkpoint import check_compatible, predict

    K = int(getattr(net, "hypotheses", 1))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= K + (K > 1):
        raise ValueError(f"hypotheses must be an integer in [1, {K + (K > 1)}] for this model ({K} network "
                         f"hypotheses{' + their slot-by-slot combination' if K > 1 else ''}), got {k!r}")
    if scenario.batch_shape:
        raise ValueError(f"network_hypotheses takes one scenario; got batch shape {tuple(scenario.batch_shape)}")
    R0, psi0 = predict(net, scenario)
    out = [(R0, psi0)]
    if k == 1:
        return out
    check_compatible(net, scenario, source=getattr(net, "source", "the model"))
    s = scenario.to(torch.complex128)
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            d, c, _ = net(s, return_all=True)  # designs (K, L, ...), crb (K, L)
    finally:
        net.train(was)
    for j in torch.argsort(c.amax(-1)).tolist()[: k - 1]:
        out.append((d.R_s[j], d.psi[j]))
    return out


def network_result(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, options=None):
    """A :class:`~irs_torch.solvers.SolveResult` for a network design without any solver step (status
    ``"network-only"``, ``nit`` 0): CRB by the torch model, constraint margins, ``success`` = feasible
    (``options.feas_rtol``) with finite CRBs. Imports no conic solver (cvxpy)."""
    from irs_torch.solvers.result import SolveResult, SolverOptions, failure_counts

    opts = options or SolverOptions()
    scn = scenario.to(torch.complex128)
    R, psi = R_s.to(torch.complex128), psi.to(torch.complex128)
    c = scn.crb(R, psi, validate=False)
    ok = bool(scn.is_feasible(R, psi, rtol=opts.feas_rtol)) and bool(torch.isfinite(c.total).all())
    return SolveResult(R_s=R.detach(), psi=psi.detach(), crb=c.total.detach(), max_crb=float(c.total.max()),
                       margins={k: v.detach() for k, v in scn.constraint_margins(R, psi).items()}, history=[],
                       status="network-only" if ok else "infeasible", success=ok, nit=0,
                       times={"p2": 0.0, "p3": 0.0}, options={**opts.to_dict(), "method": "learned",
                                                             "init": {"kind": "network"}},
                       init_R_s=R.detach(), init_psi=psi.detach(), init_crb=c.total.detach(),
                       init_max_crb=float(c.total.max()), crb_theta=c.theta.detach(), crb_phi=c.phi.detach(),
                       message="" if ok else "the network's design fails the constraint check",
                       failures=failure_counts([]))


def refine_starts(scenario: Scenario, starts, options=None, refine_iter: int | None = REFINE_ITER):
    """The refinement stage from several starts, keeping the best: the AO with
    :func:`warm_start_options` from each ``(R_s, psi)`` in ``starts`` (run one after another), then the
    successful run with the smallest max-CRB (the best run if none succeeded). Returns
    ``(best SolveResult, runs)`` with ``runs`` one dict per start: ``start_max_crb``, ``max_crb``,
    ``nit``, ``success``, ``seconds``. The same function refines network hypotheses and heuristic
    starts in ``irs-torch bench warmstart`` (equal refinement budgets)."""
    from irs_torch.solvers import SolverOptions, solve

    opts = warm_start_options(options or SolverOptions(), refine_iter)
    best, runs = None, []
    for R, psi in starts:
        t = time.perf_counter()
        r = solve(scenario, method="ao", init={"R_s": R, "psi": psi}, options=opts)
        runs.append({"start_max_crb": float(r.init_max_crb), "max_crb": float(r.max_crb), "nit": int(r.nit),
                     "success": bool(r.success), "seconds": time.perf_counter() - t})
        if best is None or (r.success, -r.max_crb) > (best.success, -best.max_crb):
            best = r
    if best is None:
        raise ValueError("refine_starts needs at least one start")
    return best, runs


#: First-order refinement (``refine="fo"``): at most this many Adam steps (each instance stops earlier when its
#: best start gains < 0.1% in :data:`FO_PATIENCE` steps), then one P2 solve per instance unless ``polish=False``.
FO_STEPS = 200
FO_PATIENCE = 25
#: Network hypotheses refined by ``refine="fo"`` by default (the combined design and the next best singles).
FO_HYPOTHESES = 4


def network_starts(net, scenarios: Scenario, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's ``k`` best feasible designs for each of B scenarios, batched: ``(R (k, B, L, M, M),
    psi (k, B, L, N))`` complex128. Start 0 is the network's own design (:func:`irs_torch.learn.predict`); starts
    1.. are its single hypotheses with the smallest max-CRB (a model with K > 1 hypotheses). One network pass per
    chunk of :data:`PREDICT_CHUNK` instances, no autograd. ``k`` is capped at the model's hypotheses + 1."""
    from irs_torch.learn.checkpoint import check_compatible
    from irs_torch.learn.nets import combine_slots

    if not scenarios.batch_shape or len(scenarios.batch_shape) != 1:
        raise ValueError(f"network_starts needs a batch of shape (B,), got {tuple(scenarios.batch_shape)}")
    K = int(getattr(net, "hypotheses", 1))
    k = max(1, min(int(k), K + (K > 1)))
    check_compatible(net, scenarios, source=getattr(net, "source", "the model"))
    scn = scenarios.to(torch.complex128)
    B = int(scn.batch_shape[0])
    was = net.training
    net.eval()
    Rs, ps = [], []
    try:
        with torch.no_grad():
            for i in range(0, B, PREDICT_CHUNK):
                s = scn[i: i + PREDICT_CHUNK]
                if K == 1:
                    d = net(s)
                    Rs.append(d.R_s.unsqueeze(0))
                    ps.append(d.psi.unsqueeze(0))
                    continue
                d, c, _ = net(s, return_all=True)  # (b, K, L, ...), crb (b, K, L)
                best, _, _ = combine_slots(d, c, s.budget("P_t"))
                order = torch.argsort(c.amax(-1), dim=-1)[:, : k - 1]  # (b, k-1)
                ar = torch.arange(order.shape[0]).unsqueeze(-1)
                Rs.append(torch.cat([best.R_s.unsqueeze(0), d.R_s[ar, order].movedim(1, 0)]))
                ps.append(torch.cat([best.psi.unsqueeze(0), d.psi[ar, order].movedim(1, 0)]))
    finally:
        net.train(was)
    return torch.cat(Rs, 1), torch.cat(ps, 1)


def polish_transmit(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, options=None) -> tuple:
    """One P2 solve (the transmit SDP, :func:`irs_torch.solvers.transmit.solve_transmit_sdp`) for the given psi of
    one unbatched scenario, from ``R_s``: returns ``(R, history_entry, certified)`` where R is P2's point if it
    lowers the max-CRB (it is then optimal for psi up to the certificate's gap) and ``R_s`` otherwise (never
    worse); ``history_entry`` carries the P2 status, failure counts and ``p2_gap_bound`` as the AO's history
    entries do; ``certified``: P2 returned a point whose full-space duality gap bound is within its tolerance."""
    from irs_torch.solvers import SolverOptions
    from irs_torch.solvers.ao import STEP_ERRORS, p2_record
    from irs_torch.solvers.transmit import TransmitResult, solve_transmit_sdp

    opts = options or SolverOptions()
    scn = scenario.to(torch.complex128)
    R_s, psi = R_s.to(torch.complex128), psi.to(torch.complex128)
    c0 = scn.crb(R_s, psi, validate=False).total
    before = float(c0.max())
    t0 = time.perf_counter()
    try:  # no SCS fallback: where the primary conic solver fails the first-order point is kept (measured: the
        # fallback took 20-45 s per instance on such points, 20x the whole refinement)
        p2 = solve_transmit_sdp(scn, psi, R_ref=R_s, solver=opts.p2_solver, eps=opts.p2_eps,
                                subspace=opts.p2_subspace, fallback=False)
    except STEP_ERRORS as e:
        p2 = TransmitResult(R_s=R_s, crb=c0, max_crb=before, status=f"error: {type(e).__name__}: {e}"[:200],
                            solver="none", sdp_bound=float("nan"), failed=True, solver_failures=1,
                            times={"total": time.perf_counter() - t0})
    rec = {"it": 1, "step": "p2-polish", "max_crb": before, "p2_gap_bound": float(p2.gap_bound), **p2_record(p2)}
    ok = not p2.failed and math.isfinite(p2.max_crb) and p2.max_crb <= before
    certified = bool(ok and not p2.inexact and p2.gap_bound <= 1e-4 * max(p2.max_crb, 1e-300))
    R = p2.R_s.to(torch.complex128) if ok else R_s
    c = scn.crb(R, psi, validate=False).total
    rec.update(max_crb=float(c.max()), crb=c.tolist(), t_p2=float(p2.times.get("total", 0.0)))
    return R, rec, certified


def solve_learned(scenario: Scenario, checkpoint=None, refine: str = DEFAULT_REFINE, options=None, net=None,
                  verbose: bool = True, refine_iter: int | None = REFINE_ITER, hypotheses: int | None = None,
                  fo_steps: int = FO_STEPS, polish: bool = True, extra_starts: int = 0, device=None):
    """Predict a design with the warm-start network and (optionally) refine it with the AO.

    scenario: unbatched. checkpoint: path of a model file or Lightning checkpoint (default: the shipped
    one for these sizes). refine: "ao" (AO warm-started at the prediction with
    :func:`warm_start_options` of ``options``; never worse than the prediction) or "none" (the
    network's feasible design alone; imports no conic solver). hypotheses: refine the network's
    ``k`` best designs (:func:`network_hypotheses`, a portfolio) and keep the best refined one
    (:func:`refine_starts`); ``options["portfolio"]`` lists each run. With ``refine="none"`` the
    network's own design is returned whatever ``k`` (it is the best of the hypotheses). refine "fo" (the
    default): the network's ``hypotheses`` best designs (default :data:`FO_HYPOTHESES`) and ``extra_starts``
    diverse heuristic starts (:func:`irs_torch.solvers.strategy.diverse_starts`) refined together by the batched
    first-order method (:func:`irs_torch.solvers.first_order.refine_batch`, at most ``fo_steps`` steps, on
    ``device``), then, with ``polish``, one P2 solve for the best point's psi (:func:`polish_transmit`), so R_s
    is certified optimal for psi (``options["p2_certified"]``). Returns a
    :class:`irs_torch.solvers.SolveResult` with ``options["method"] = "learned"`` and per-stage
    ``times`` (``load``, ``predict``, ``refine``, ``total`` seconds).
    """
    from irs_torch.learn.checkpoint import load_model

    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    if scenario.batch_shape:
        raise ValueError(f"solve_learned takes one scenario; got batch shape {tuple(scenario.batch_shape)} "
                         f"(use irs_torch.runtime.solve_batch or irs_torch.learn.predict for batches)")
    t0 = time.perf_counter()
    if net is None:
        if checkpoint is None:
            checkpoint = find_checkpoint(scenario)
            if verbose:
                print(f"using shipped checkpoint {checkpoint}", file=sys.stderr)
        net = load_model(checkpoint, scenario)
    t1 = time.perf_counter()
    if refine == "fo":
        k = FO_HYPOTHESES if hypotheses is None else hypotheses
        R0, p0 = network_starts(net, Scenario.stack([scenario]), k)
        t2 = time.perf_counter()
        res = refine_fo(Scenario.stack([scenario]), R0, p0, options=options, steps=fo_steps, polish=polish,
                        extra_starts=extra_starts, device=device).item_result(0)
        t3 = time.perf_counter()
        res.times.update({"load": t1 - t0, "predict": t2 - t1, "refine": t3 - t2, "total": t3 - t0})
        res.options.update({"method": "learned", "refine": "fo", "hypotheses": int(k),
                            "checkpoint": str(getattr(net, "source", checkpoint))})
        return res
    hypotheses = 1 if hypotheses is None else hypotheses
    starts = network_hypotheses(net, scenario, hypotheses if refine == "ao" else 1)
    t2 = time.perf_counter()
    runs = None
    if refine == "ao":
        res, runs = refine_starts(scenario, starts, options, refine_iter)
    else:
        res = network_result(scenario, *starts[0], options)
    t3 = time.perf_counter()
    res.times = dict(res.times or {})
    res.times.update({"load": t1 - t0, "predict": t2 - t1, "refine": t3 - t2 if refine == "ao" else 0.0,
                      "total": t3 - t0})
    res.options = dict(res.options or {})
    res.options.update({"method": "learned", "refine": refine, "hypotheses": int(hypotheses),
                        "checkpoint": str(getattr(net, "source", checkpoint))})
    if runs is not None and len(runs) > 1:
        res.options["portfolio"] = runs
    return res


@dataclass
class FirstOrderBatch:
    """Designs of :func:`refine_fo` for B scenarios: R_s ``(B, L, M, M)`` [W], psi ``(B, L, N)`` complex128;
    crb ``(B, L)`` [rad^2]; max_crb, start_max_crb (the best start's, before refinement) ``(B,)``; success
    ``(B,)`` bool (feasible with finite CRBs; a failed P2 polish keeps the first-order point and says so in
    ``status``, ``history`` and ``item_result(i).message``); status, history (one list of entries per item: the P2
    polish), certified ``(B,)`` bool;
    init_R_s, init_psi: the winning start of each item (``(B, ...)``);
    steps ``(B,)`` first-order steps; found_by: the winning start's name per item; times [s] and settings."""

    scenarios: Scenario
    R_s: torch.Tensor
    psi: torch.Tensor
    crb: torch.Tensor
    max_crb: torch.Tensor
    start_max_crb: torch.Tensor
    success: torch.Tensor
    status: list
    history: list
    certified: torch.Tensor
    steps: torch.Tensor
    found_by: list
    times: dict
    settings: dict
    init_R_s: torch.Tensor | None = None
    init_psi: torch.Tensor | None = None

    def item_result(self, i: int, options=None):
        """Item ``i`` as a :class:`~irs_torch.solvers.SolveResult` (``nit``: 1 with the P2 polish, else 0; the
        network's/best start's design as ``init_*``; failure counts from the polish's history entry)."""
        from irs_torch.solvers.result import SolveResult, SolverOptions, failure_counts

        opts = options or SolverOptions()
        scn = self.scenarios[i]
        R, psi = self.R_s[i], self.psi[i]
        c = scn.crb(R, psi, validate=False)
        hist = list(self.history[i])
        fails = failure_counts(hist)
        init = (None, None) if self.init_R_s is None else (self.init_R_s[i], self.init_psi[i])
        c0 = None if init[0] is None else scn.crb(init[0], init[1], validate=False).total
        msg = ""
        if fails["p2_failed"]:
            msg = ("warning: the P2 polish failed (" + str(hist[-1].get("p2_status", ""))[:120] + "): the design is "
                   "the first-order point, feasible but R_s not certified optimal for psi")
        return SolveResult(R_s=R, psi=psi, crb=c.total, max_crb=float(c.total.max()),
                           margins={k: v for k, v in scn.constraint_margins(R, psi).items()}, history=hist,
                           status=self.status[i], success=bool(self.success[i]), nit=len(hist),
                           times={"p2": float(sum(h.get("t_p2", 0.0) for h in hist)), "p3": 0.0,
                                  "first_order": float(self.times.get("first_order", 0.0))},
                           options={**opts.to_dict(), **self.settings, "found_by": self.found_by[i],
                                    "p2_certified": bool(self.certified[i]), "fo_steps": int(self.steps[i])},
                           init_R_s=init[0], init_psi=init[1], init_crb=None if init[0] is None else c0,
                           init_max_crb=float(self.start_max_crb[i]), crb_theta=c.theta, crb_phi=c.phi,
                           message=msg, failures=fails)


def refine_fo(scenarios: Scenario, R0: torch.Tensor, psi0: torch.Tensor, *, options=None, steps: int = FO_STEPS,
              patience: int = FO_PATIENCE, polish: bool = True, extra_starts: int = 0, device=None,
              progress: bool = False, start_names=None) -> FirstOrderBatch:
    """The first-order refinement stage for B scenarios (batch ``(B,)``) from K starts each (R0 ``(K, B, L, M,
    M)``, psi0 ``(K, B, L, N)``, e.g. :func:`network_starts`), plus ``extra_starts`` diverse heuristic starts per
    instance: :func:`irs_torch.solvers.first_order.refine_batch` (all instances together, feasible at every
    iterate, per-instance early stopping), then with ``polish`` one P2 solve per instance
    (:func:`polish_transmit`; item by item: a conic solve). ``success``: feasible with finite CRBs. Status:
    ``"first-order+p2"``, ``"first-order"`` (no polish) or ``"first-order (P2 polish failed)"`` (the conic solver
    failed or returned an inexact point: the first-order point is kept; counted in the failures as the AO counts
    its P2 steps)."""
    from irs_torch.solvers import SolverOptions
    from irs_torch.solvers.first_order import refine_batch
    from irs_torch.solvers.strategy import diverse_starts

    opts = options or SolverOptions()
    t0 = time.perf_counter()
    scn = scenarios.to(torch.complex128)
    B = int(scn.batch_shape[0])
    K = int(R0.shape[0])
    names = list(start_names) if start_names is not None else [f"network#{j}" for j in range(K)]
    if extra_starts:
        ds = [diverse_starts(scn[i], int(extra_starts), seed=opts.seed) for i in range(B)]
        R0 = torch.cat([R0.to(torch.complex128), torch.stack([torch.stack([d[1] for d in di]) for di in ds], 1)])
        psi0 = torch.cat([psi0.to(torch.complex128), torch.stack([torch.stack([d[2] for d in di]) for di in ds], 1)])
        names += [f"heuristic#{j}" for j in range(int(extra_starts))]
    fo = refine_batch(scn, R0, psi0, steps=steps, patience=patience, device=device, progress=progress)
    t1 = time.perf_counter()
    R, psi = fo.R_s, fo.psi
    history = [[] for _ in range(B)]
    certified = torch.zeros(B, dtype=torch.bool)
    if polish:
        Rp = []
        items = range(B)
        if progress:
            from tqdm.auto import tqdm

            items = tqdm(items, desc="P2 polish", unit="scenario")
        for i in items:
            Ri, rec, cert = polish_transmit(scn[i], R[i], psi[i], opts)
            Rp.append(Ri)
            history[i].append(rec)
            certified[i] = cert
        R = torch.stack(Rp)
    t2 = time.perf_counter()
    c = scn.crb(R, psi, validate=False).total
    feas = scn.is_feasible(R, psi, rtol=opts.feas_rtol) & torch.isfinite(c).all(-1)
    failed = [bool(h and h[-1].get("p2_failed")) for h in history]
    success = feas.clone()  # a failed polish keeps the first-order point: a feasible design, not certified
    status = [("first-order (P2 polish failed)" if failed[i] else "first-order+p2" if polish else "first-order")
              if bool(feas[i]) else "infeasible" for i in range(B)]
    ar = torch.arange(B)
    start_c = fo.start_max_crb[fo.start, ar]  # the winning start's own max-CRB
    R_init = R0[fo.start, ar].to(torch.complex128)
    psi_init = scn.scale_psi_to_feasible(R_init, psi0[fo.start, ar].to(torch.complex128))
    return FirstOrderBatch(init_R_s=R_init, init_psi=psi_init, scenarios=scn, R_s=R, psi=psi, crb=c,
                           max_crb=c.amax(-1), start_max_crb=start_c,
                           success=success, status=status, history=history, certified=certified, steps=fo.steps,
                           found_by=[names[int(j)] for j in fo.start], times={"first_order": t1 - t0,
                                                                             "polish": t2 - t1},
                           settings={"refine": "fo", "fo": fo.settings, "polish": bool(polish),
                                     "extra_starts": int(extra_starts)})


def predict_batch(scenario: Scenario, checkpoint=None, net=None):
    """Batched network inference (no solver) for a batched scenario: ``(R_s, psi, seconds)`` with
    R_s ``(B, L, M, M)``, psi ``(B, L, N)`` complex128 and the network's wall seconds."""
    from irs_torch.learn.checkpoint import load_model, predict

    if net is None:
        s0 = scenario[0] if scenario.batch_shape else scenario
        net = load_model(checkpoint or find_checkpoint(scenario), s0)  # the model whose budgets cover every item
    t = time.perf_counter()
    R, psi = predict(net, scenario, batch_size=PREDICT_CHUNK)
    return R, psi, time.perf_counter() - t


def load_scenarios(path) -> tuple[Scenario, list[str]]:
    """Scenarios for a batch solve: a batched scenario file (one ``.npz`` holding a batch, e.g. from
    ``irs-torch scenario --count K``), an unbatched file (a batch of one), or a directory of scenario
    ``.npz`` files (sorted by name, stacked; all of equal sizes). Returns ``(batched scenario (B,),
    sources)`` with one source string per item (``file`` or ``file[i]``). Raises FileNotFoundError /
    InputError naming the path."""
    from irs_torch.errors import InputError

    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.npz") if f.is_file())
        if not files:
            raise FileNotFoundError(f"--scenario: directory {p} holds no scenario .npz files")
        items, sources = [], []
        for f in files:
            s = Scenario.load(f)
            if s.batch_shape:
                n = int(s.batch_shape[0])
                items.extend(s[i] for i in range(n))
                sources.extend(f"{f}[{i}]" for i in range(n))
            else:
                items.append(s)
                sources.append(str(f))
        try:
            return Scenario.stack(items), sources
        except ValueError as e:
            raise InputError(f"--scenario: the files in {p} cannot form one batch: {e} "
                             f"(item {sources[0]} first)") from None
    s = Scenario.load(p)
    if not s.batch_shape:
        return Scenario.stack([s]), [str(p)]
    if len(s.batch_shape) != 1:
        raise InputError(f"{p}: batch shape must be one-dimensional, got {tuple(s.batch_shape)}")
    return s, [f"{p}[{i}]" for i in range(int(s.batch_shape[0]))]


@dataclass
class BatchResult:
    """Designs for a batch of B scenarios (:func:`solve_batch`).

    R_s ``(B, L, M, M)`` [W], psi ``(B, L, N)`` complex128; crb ``(B, L)`` tr(F^-1) by the torch model
    [rad^2]; max_crb ``(B,)``; success ``(B,)`` bool (feasible, finite CRB, no failed solver run);
    status: one string per item; nit: AO iterations per item; times: ``load``, ``predict``, ``solve``,
    ``total`` seconds of the whole batch; options: the settings (method, refine, checkpoint, ...)."""

    R_s: torch.Tensor
    psi: torch.Tensor
    crb: torch.Tensor
    max_crb: torch.Tensor
    success: torch.Tensor
    status: list
    nit: list
    times: dict
    options: dict

    def to_solution(self, sources=None):
        """One :class:`irs_torch.Solution` holding the whole batch (R_s ``(B, L, M, M)``, psi, crb
        ``(B, L)``; per-item ``max_crb``, ``success``, ``nit`` as arrays; status, settings, timings and
        the item sources in ``metadata``)."""
        from irs_torch import __version__
        from irs_torch.scenario import Solution

        md = {"batch": int(self.R_s.shape[0]), "status": list(self.status), "times": dict(self.times),
              "options": self.options, "version": __version__}
        if sources is not None:
            md["sources"] = list(sources)
        return Solution(R_s=self.R_s, psi=self.psi, crb=self.crb, method=str(self.options.get("method", "ao")),
                        metadata=md, arrays={"success": self.success.to(torch.int8),
                                             "nit": torch.tensor(self.nit, dtype=torch.int64)})


def solve_batch(scenarios: Scenario, method: str = "learned", *, checkpoint=None, refine: str = DEFAULT_REFINE,
                options=None, refine_iter: int | None = REFINE_ITER, hypotheses: int | None = None, init=None,
                fo_steps: int = FO_STEPS, polish: bool = True, extra_starts: int = 0, device=None,
                progress: bool = False, verbose: bool = True) -> BatchResult:
    """Solve a batch of scenarios (batch shape ``(B,)``) in one call.

    ``method="learned"``: one batched network pass over the whole batch (:func:`predict_batch`), then,
    with ``refine="ao"``, the refinement of :func:`solve_learned` item by item (``hypotheses`` as
    there); ``refine="fo"`` (the default) refines all instances together (:func:`refine_fo`: the network's
    ``hypotheses`` best designs each, default :data:`FO_HYPOTHESES`, batched first-order steps, then one P2 solve per
    instance unless ``polish=False``); ``refine="none"`` runs no solver and imports no conic solver. Other methods
    (:func:`irs_torch.solvers.solve`: "ao", "transmit-only", ...) run item by item with ``options``
    and ``init``. The model is loaded once (default: the shipped one for the sizes). Results equal a
    loop of single solves (:func:`solve_learned` / ``solve``) with the same settings.
    """
    from irs_torch.solvers.result import SolverOptions

    if not scenarios.batch_shape or len(scenarios.batch_shape) != 1:
        raise ValueError(f"solve_batch needs a batch of shape (B,), got {tuple(scenarios.batch_shape)}")
    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    opts = options or SolverOptions()
    B = int(scenarios.batch_shape[0])
    t0 = time.perf_counter()
    def items():
        if not progress:
            return range(B)
        from tqdm.auto import tqdm

        return tqdm(range(B), desc=f"solve ({method})", unit="scenario")

    if method == "learned":
        from irs_torch.learn.checkpoint import load_model

        s0 = scenarios[0]
        if checkpoint is None:
            checkpoint = find_checkpoint(scenarios)  # the model whose training budgets cover every item
            if verbose:
                print(f"using shipped checkpoint {checkpoint}", file=sys.stderr)
        net = load_model(checkpoint, s0)
        t1 = time.perf_counter()
        scn = scenarios.to(torch.complex128)
        opt_d = {**opts.to_dict(), "method": "learned", "refine": refine,
                 "checkpoint": str(getattr(net, "source", checkpoint))}
        if refine == "fo":
            k = FO_HYPOTHESES if hypotheses is None else hypotheses
            R0, p0 = network_starts(net, scn, k)
            t2 = time.perf_counter()
            fo = refine_fo(scn, R0, p0, options=opts, steps=fo_steps, polish=polish, extra_starts=extra_starts,
                           device=device, progress=progress)
            t3 = time.perf_counter()
            opt_d.update(fo.settings, hypotheses=int(k))
            return BatchResult(R_s=fo.R_s, psi=fo.psi, crb=fo.crb, max_crb=fo.max_crb, success=fo.success,
                               status=fo.status, nit=[len(h) for h in fo.history],
                               times={"load": t1 - t0, "predict": t2 - t1, "solve": t3 - t2, "total": t3 - t0,
                                      **{f"solve_{k}": v for k, v in fo.times.items()}}, options=opt_d)
        hypotheses = 1 if hypotheses is None else hypotheses
        opt_d["hypotheses"] = int(hypotheses)
        R, psi, _ = predict_batch(scn, net=net)
        t2 = time.perf_counter()
        if refine == "none":
            c = scn.crb(R, psi, validate=False)
            feas = scn.is_feasible(R, psi, rtol=opts.feas_rtol) & torch.isfinite(c.total).all(-1)
            t3 = time.perf_counter()
            return BatchResult(R_s=R, psi=psi, crb=c.total.detach(), max_crb=c.total.amax(-1).detach(),
                               success=feas, status=["network-only" if bool(f) else "infeasible" for f in feas],
                               nit=[0] * B, times={"load": t1 - t0, "predict": t2 - t1, "solve": t3 - t2,
                                                   "total": t3 - t0}, options=opt_d)
        results = []
        for i in items():
            s = scenarios[i]
            starts = [(R[i], psi[i])] if hypotheses == 1 else network_hypotheses(net, s, hypotheses)
            r, _ = refine_starts(s, starts, opts, refine_iter)
            results.append(r)
        times = {"load": t1 - t0, "predict": t2 - t1}
    else:
        from irs_torch.solvers import solve

        if checkpoint is not None:
            raise ValueError("checkpoint is only used with method 'learned'")
        t1 = t2 = time.perf_counter()
        results = [solve(scenarios[i], method, init=init, options=opts) for i in items()]
        times = {}
        opt_d = {**opts.to_dict(), "method": method}
    t3 = time.perf_counter()
    times.update({"solve": t3 - t2, "total": t3 - t0})
    return BatchResult(R_s=torch.stack([r.R_s for r in results]), psi=torch.stack([r.psi for r in results]),
                       crb=torch.stack([r.crb for r in results]),
                       max_crb=torch.tensor([r.max_crb for r in results], dtype=torch.float64),
                       success=torch.tensor([bool(r.success) for r in results]),
                       status=[r.status for r in results], nit=[int(r.nit) for r in results], times=times,
                       options=opt_d)


__all__ = ["solve_learned", "solve_batch", "BatchResult", "load_scenarios", "network_hypotheses", "network_result",
           "refine_starts", "find_checkpoint", "checkpoint_dirs", "shipped_checkpoints", "predict_batch",
           "warm_start_options", "REFINE_ITER"]


def __getattr__(name):  # the benchmark lives in irs_torch.warmstart_bench; this import path still works
    if name == "bench_warmstart":
        from irs_torch.warmstart_bench import bench_warmstart

        return bench_warmstart
    raise AttributeError(f"module 'irs_torch.runtime' has no attribute {name!r}")

"""One learned solve: the network proposes, the exact solver refines.

``solve_learned(scenario, checkpoint=None, refine="fo")``: batched network inference -> a feasible design (by
construction) -> refinement from the prediction (:mod:`irs_torch.inference.refine`) -> a :class:`SolveResult`
whose ``times`` hold the per-stage wall times (``load``, ``predict``, ``refine``, ``total``). Portfolio:
``solve_learned(..., hypotheses=k)`` refines the network's k best designs. Without ``checkpoint`` the shipped
model for the scenario's sizes is used (:func:`irs_torch.inference.checkpoints.find_checkpoint`); it says which
on stderr.
"""
from __future__ import annotations

import sys
import time

from irs_torch.inference.checkpoints import find_checkpoint
from irs_torch.inference.refine import FO_HYPOTHESES, FO_STEPS, REFINE_ITER, refine_fo, refine_starts
from irs_torch.inference.starts import network_hypotheses, network_result, network_starts
from irs_torch.scenario import Scenario

REFINE = ("fo", "ao", "none")
#: The default refinement of a learned solve (see :data:`FO_STEPS` and the docs' learned warm-start page).
DEFAULT_REFINE = "fo"


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
    diverse heuristic starts (:func:`irs_torch.solvers.starts.diverse_starts`) refined together by the batched
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
                         f"(use irs_torch.inference.solve_batch or irs_torch.learn.predict for batches)")
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

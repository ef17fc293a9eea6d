"""Runtime pipeline: the network proposes, the exact solver refines.

``solve_learned(scenario, checkpoint=None, refine="ao")``: batched network inference -> feasible
design (by construction) -> the AO solver started from the prediction -> a :class:`SolveResult`
whose ``times`` hold the per-stage wall times (``load``, ``predict``, ``refine``, ``total``).

Without ``checkpoint`` the shipped model in ``checkpoints/`` that matches the scenario's array sizes
(M, N_h, N_v, L) is used (:func:`find_checkpoint`); it says which on stderr.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


from irs_torch.scenario import Scenario

CHECKPOINT_DIRS = (Path(__file__).resolve().parent.parent / "checkpoints",)
REFINE = ("ao", "none")


def shipped_checkpoints() -> list[Path]:
    """Model files shipped in ``checkpoints/`` (``*.pt``)."""
    out = []
    for d in CHECKPOINT_DIRS:
        if d.is_dir():
            out.extend(sorted(d.glob("*.pt")))
    return out


def find_checkpoint(scenario: Scenario) -> Path:
    """The shipped model for the scenario's sizes; FileNotFoundError listing what exists otherwise."""
    from irs_torch.learn.checkpoint import load_model

    seen = []
    for p in shipped_checkpoints():
        try:
            net = load_model(p)
        except ValueError:
            continue
        sizes = {k: int(net.hparams[k]) for k in ("M", "N_h", "N_v", "L")}
        seen.append(f"{p.name} {sizes}")
        if sizes == {"M": scenario.M, "N_h": scenario.N_h, "N_v": scenario.N_v, "L": scenario.L} and \
                bool(net.hparams.get("active", True)) == bool(scenario.active):
            return p
    raise FileNotFoundError(
        f"no shipped checkpoint for M={scenario.M}, N_h={scenario.N_h}, N_v={scenario.N_v}, L={scenario.L} "
        f"(active={scenario.active}); shipped: {seen or 'none'}. Train one (training/README.md) and pass --checkpoint")


def solve_learned(scenario: Scenario, checkpoint=None, refine: str = "ao", options=None, net=None,
                  verbose: bool = True):
    """Predict a design with the warm-start network and (optionally) refine it with the AO.

    scenario: unbatched. checkpoint: path of a model file or Lightning checkpoint (default: the shipped
    one for these sizes). refine: "ao" (AO warm-started at the prediction; never worse than it) or
    "none" (the network's feasible design alone). Returns a :class:`irs_torch.solvers.SolveResult`
    with ``options["method"] = "learned"`` and per-stage ``times``.
    """
    from irs_torch.learn.checkpoint import load_model, predict
    from irs_torch.solvers import SolverOptions, solve
    from irs_torch.solvers.result import SolveResult

    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    if scenario.batch_shape:
        raise ValueError(f"solve_learned takes one scenario; got batch shape {tuple(scenario.batch_shape)} "
                         f"(use irs_torch.learn.predict for batched inference)")
    t0 = time.perf_counter()
    if net is None:
        if checkpoint is None:
            checkpoint = find_checkpoint(scenario)
            if verbose:
                print(f"using shipped checkpoint {checkpoint}", file=sys.stderr)
        net = load_model(checkpoint, scenario)
    t1 = time.perf_counter()
    R_p, psi_p = predict(net, scenario)
    t2 = time.perf_counter()
    opts = options or SolverOptions()
    if refine == "ao":
        res = solve(scenario, method="ao", init={"R_s": R_p, "psi": psi_p}, options=opts)
    else:
        from irs_torch.solvers.ao import _result, initial_point

        scn = scenario.to(torch.complex128)
        R0, psi0, info = initial_point(scn, {"R_s": R_p, "psi": psi_p}, opts)
        res = _result(scn, R0, psi0, method="ao", options=opts, history=[], status="network-only", nit=0,
                      times={"p2": 0.0, "p3": 0.0}, R0=R0, psi0=psi0, info=info)
    t3 = time.perf_counter()
    res.times = dict(res.times or {})
    res.times.update({"load": t1 - t0, "predict": t2 - t1, "refine": t3 - t2 if refine == "ao" else 0.0,
                      "total": t3 - t0})
    res.options = dict(res.options or {})
    res.options.update({"method": "learned", "refine": refine,
                        "checkpoint": str(getattr(net, "source", checkpoint))})
    assert isinstance(res, SolveResult)
    return res


def predict_batch(scenario: Scenario, checkpoint=None):
    """Batched network inference (no solver) for a batched scenario: ``(R_s, psi, seconds)``."""
    from irs_torch.learn.checkpoint import load_model, predict

    s0 = scenario[0] if scenario.batch_shape else scenario
    net = load_model(checkpoint or find_checkpoint(s0), s0)
    t = time.perf_counter()
    R, psi = predict(net, scenario)
    return R, psi, time.perf_counter() - t


__all__ = ["solve_learned", "find_checkpoint", "shipped_checkpoints", "predict_batch"]

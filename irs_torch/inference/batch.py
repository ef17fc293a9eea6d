"""Batches: :func:`solve_batch` (one batched network pass, then the refinement of all items together or item by
item) over :func:`load_scenarios` (a batched scenario file or a directory); :class:`BatchResult` writes one
solutions file.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from irs_torch.inference.checkpoints import find_checkpoint
from irs_torch.inference.learned import DEFAULT_REFINE, REFINE
from irs_torch.inference.refine import FO_HYPOTHESES, FO_STEPS, REFINE_ITER, refine_fo, refine_starts
from irs_torch.inference.starts import network_hypotheses, network_starts, predict_batch
from irs_torch.scenario import Scenario, load_scenario


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
            s = load_scenario(f)
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
    s = load_scenario(p)
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
        from irs_torch.outputs import progress_bar

        return progress_bar(range(B), desc=f"solve ({method})", unit="scenario")

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

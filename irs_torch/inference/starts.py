"""The network's designs: one batched prediction (:func:`predict_batch`), the k best hypotheses of one
scenario (:func:`network_hypotheses`) or of a batch (:func:`network_starts`), and a network-only
:class:`~irs_torch.solvers.result.SolveResult` (:func:`network_result`, which imports no conic solver).
"""
from __future__ import annotations

import time

import torch

from irs_torch.inference.checkpoints import find_checkpoint
from irs_torch.scenario import Scenario

#: Instances per network call in batch inference: measured on 2 cores (2,000 paper-size scenarios, 16
#: hypotheses) 1.25 ms per instance in chunks of 1024, 2.4 ms at 256, 4.3 ms at 4096 (memory traffic).
PREDICT_CHUNK = 1024


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

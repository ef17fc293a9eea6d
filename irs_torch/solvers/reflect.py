"""Reflective beamforming (P3): the IRS reflection vectors psi_l for given R_s.

Given R_s the problem decouples per IRS (P3.l.1): ``min tr(F_l^-1)`` s.t. C1 (17a), |psi_n| <= a_max
(17d). Two methods:

* :func:`solve_reflect_sca` - the paper's SCA + SDR (Section IV-B): with ``Theta = psi psi^H`` the
  FIM and C1 are linearised at the current point (Lemma 1, (24)), the SDP (SDR3.l.3) with
  ``diag(Theta) <= a_max^2`` is solved, Gaussian randomisation (seeded) draws rank-one candidates,
  each is brought to the largest scale meeting a_max and C1 exactly, the best is kept, and a step
  is accepted only if the exact (torch-model) CRB improves. A trust region keeps the SDP where the linearisation is
  meaningful (docs/assumptions.md "Numerical experience": the linearisation is neither an upper nor a lower bound, and
  the SDP exploits it).
* :func:`solve_reflect_first_order` - gradient descent (Adam) on the torch CRB, multi-start,
  ``psi = sigmoid(rho) exp(j phase)`` (amplitude limit in the parameterisation) followed by the
  closed-form largest real scale meeting C1 and a_max (C1 met exactly, and the scale is
  differentiable), from the current psi, a phase-aligned start and random phases.

Passive IRSs (``scenario.active`` False): ``|psi_n| = 1``, no C1; SDR with ``diag(Theta) = 1`` and
randomised candidates projected to unit modulus; the first-order method optimises the phases.

Both never return a psi worse (by the torch model) than the one they start from.

The SCA + SDR method and its Theta model live in :mod:`irs_torch.solvers.reflect_sdr` and
:mod:`irs_torch.solvers.theta_model`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from irs_torch import crb as crb_model
from irs_torch.scenario import Scenario
from irs_torch.solvers.baselines import aligned_phases


# ----------------------------------------------------------------------------- feasibility
def irs_crb(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, l: int) -> torch.Tensor:
    """tr(F_l^-1) of IRS l for psi ``(..., N)`` (batched candidates) -> ``(...)``."""
    per = scenario.budget  # one value for all IRSs of an unbatched scenario
    return crb_model.crb(
        scenario.G[l],
        psi,
        R_s[l].to(psi.dtype),
        scenario.theta[l],
        scenario.phi[l],
        scenario.beta[l],
        per("sigma_r2"),
        per("sigma_b2"),
        scenario.T_L,
        scenario.N_h,
        scenario.N_v,
        scenario.d_h,
        scenario.d_v,
    ).total


# ----------------------------------------------------------------------------- results
@dataclass
class ReflectResult:
    """Outcome of a P3 solve. psi ``(L, N)``; crb ``(L,)`` torch-model tr(F_l^-1); improved ``(L,)``
    bool (psi_l changed); steps: per IRS a list of dicts (SCA: sdp value, best candidate CRB,
    accepted, trust radius; first-order: loss per start); times ``total`` [s].

    failed ``(L,)`` bool: the method could not optimise psi_l at all (SCA: every SDR solve of IRS l
    returned no point; first-order: no start gave a finite CRB); psi_l is then the one it started
    from. solver_failures: conic solves that returned no point (SCA; 0 for first-order)."""

    psi: torch.Tensor
    crb: torch.Tensor
    max_crb: float
    improved: list
    method: str
    steps: list = field(default_factory=list)
    times: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    solver_failures: int = 0

    @property
    def any_failed(self) -> bool:
        """True if psi of some IRS could not be optimised (see ``failed``)."""
        return any(self.failed)


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def solve_reflect_first_order(
    scenario: Scenario,
    R_s: torch.Tensor,
    psi: torch.Tensor,
    *,
    steps: int = 150,
    n_starts: int = 4,
    seed: int = 0,
    lr: float = 0.05,
    rtol: float = 1e-4,
) -> ReflectResult:
    """Multi-start Adam on ``sum_l log tr(F_l^-1)`` of the torch model (IRSs are independent given
    R_s, so each IRS keeps its best start).

    Parameterisation: active ``psi = scale(sigmoid(rho) exp(j phase))`` with the closed-form
    largest scale meeting a_max and C1 (differentiable; C1 holds exactly, |psi_n| <= a_max);
    passive ``psi = exp(j phase)``. Starts: the current psi, phase-aligned
    (:func:`irs_torch.solvers.baselines.aligned_phases`)
    and ``n_starts - 2`` random phase vectors from ``seed``. Shapes: R_s ``(L, M, M)``,
    psi ``(L, N)``. Returns psi_l only where it beats the current one by ``rtol`` (relative).
    """
    t0 = time.perf_counter()
    L, N = scenario.L, scenario.N
    cdt = scenario.G.dtype
    R_s = R_s.to(cdt)
    psi = scenario.scale_psi_to_feasible(R_s, psi.to(cdt))
    cur_crb = scenario.crb(R_s, psi).total
    gen = seeded_generator(seed)
    amp0 = (psi.abs() / psi.abs().amax(-1, keepdim=True).clamp(min=1e-300)).clamp(1e-3, 1 - 1e-3)
    starts_ph = [torch.angle(psi), torch.angle(aligned_phases(scenario, R_s))]
    starts_rho = [torch.log(amp0 / (1 - amp0)), torch.full((L, N), 3.0, dtype=torch.float64)]
    for _ in range(max(n_starts - 2, 0)):
        starts_ph.append(2 * math.pi * torch.rand(L, N, generator=gen, dtype=torch.float64))
        starts_rho.append(torch.full((L, N), 3.0, dtype=torch.float64))
    ph = torch.stack(starts_ph[: max(n_starts, 1)]).requires_grad_(True)  # (S, L, N)
    rho = torch.stack(starts_rho[: max(n_starts, 1)]).requires_grad_(True)
    params = [ph, rho] if scenario.active else [ph]
    opt = torch.optim.Adam(params, lr=lr)

    def make(ph, rho):
        if scenario.active:
            raw = torch.polar(torch.sigmoid(rho), ph).to(cdt)
            return scenario.scale_psi_to_feasible(R_s, raw)
        return torch.polar(torch.ones_like(ph), ph).to(cdt)

    losses = []
    for _ in range(steps):
        opt.zero_grad()
        c = scenario.crb(R_s, make(ph, rho), validate=False).total  # (S, L)
        loss = torch.log(c).sum()
        if not torch.isfinite(loss):
            c = torch.where(torch.isfinite(c), c, torch.ones_like(c))
            loss = torch.log(c).sum()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        cand = make(ph, rho)  # (S, L, N)
        cand = scenario.scale_psi_to_feasible(R_s, cand)  # exact re-scaling (no-op up to rounding)
        c = scenario.crb(R_s, cand).total
        c = torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf")))
        j = torch.argmin(c, 0)  # (L,)
        best = cand[j, torch.arange(L)]
        best_c = c[j, torch.arange(L)]
        take = best_c < cur_crb * (1 - rtol)
        psi_new = torch.where(take.unsqueeze(-1), best, psi)
    crb_t = scenario.crb(R_s, psi_new).total
    return ReflectResult(psi=psi_new, crb=crb_t, max_crb=float(crb_t.max()), improved=take.tolist(),
                         method="first-order", steps=[{"loss_first": losses[0], "loss_last": losses[-1],
                                                       "best_start": j.tolist()}],
                         times={"total": time.perf_counter() - t0},
                         failed=(~torch.isfinite(best_c)).tolist())

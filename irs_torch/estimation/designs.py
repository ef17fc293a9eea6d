"""Designs (R_s, psi) compared by the Monte Carlo study.

- ``isotropic-random``: R_s = P_t/M I, random-phase psi at the largest C1/a_max-feasible amplitude.
- ``isotropic-aligned``: R_s = P_t/M I, psi phases aligned to the target
  (:func:`irs_torch.solvers.baselines.aligned_psi`).
- ``optimised``: :func:`adam_design` (a cheap first-order design), then the AO solver
  :func:`irs_torch.solvers.solve` (``method="ao"``) warm-started from it; the feasible design with
  the lower max tr(F^-1) wins (see :func:`make_design`).
- ``adam``: always :func:`adam_design`.
"""
from __future__ import annotations

import torch

from irs_torch.solvers.baselines import aligned_psi

DESIGNS = ("optimised", "adam", "isotropic-random", "isotropic-aligned")


def _feasible_design(scenario, W, psi_raw):
    """Map free parameters to a feasible design: ``R_s,l = L P_t W_l W_l^H / sum_l tr(W_l W_l^H)``
    (meets the average BS power exactly) and psi scaled in closed form to C1 and a_max."""
    Wc = torch.complex(W[..., 0], W[..., 1])
    R = Wc @ Wc.conj().transpose(-1, -2)
    tr = torch.diagonal(R, dim1=-2, dim2=-1).real.sum(-1).sum(-1)
    R = R * (scenario.L * float(scenario.P_t) / tr).to(R.dtype)
    psi = torch.complex(psi_raw[..., 0], psi_raw[..., 1])
    return R, scenario.scale_psi_to_feasible(R, psi)


def adam_design(scenario, steps: int = 300, lr: float = 0.03, seed: int = 0, init_psi=None,
                sharpness: float = 30.0, progress: bool = False, *, seconds: float | None = None,
                objective: str = "angles", return_steps: bool = False):
    """A cheap optimised design: Adam on a smooth max over IRSs of log CRB.

    ``R_s,l = L P_t W_l W_l^H / sum tr(W W^H)`` (BS budget (17b) met with equality), psi mapped to
    C1 (7) and a_max by :meth:`Scenario.scale_psi_to_feasible`, so every iterate is feasible. Starts
    from the isotropic R_s and ``init_psi`` (default: the target-aligned psi), plus a small seeded
    perturbation; returns the best iterate by the exact objective.

    ``objective``: ``"angles"`` (CRB(theta) + CRB(phi) per IRS, the Monte Carlo study's) or ``"total"``
    (tr(F_l^-1), the solvers' max-CRB). ``seconds``: a wall-time budget instead of ``steps`` (Adam steps
    until it is spent, at least one; no final evaluation after the last step), as the warm-start
    benchmark's first-order baseline. Shapes: -> ``R_s (L, M, M)``, ``psi (L, N)`` (and the number of
    Adam steps taken, with ``return_steps``).
    """
    import time

    if objective not in ("angles", "total"):
        raise ValueError(f"objective must be 'angles' or 'total', got {objective!r}")
    t0 = time.perf_counter()
    L, M = scenario.L, scenario.M
    g = torch.Generator().manual_seed(int(seed))
    R0 = scenario.isotropic_design()
    psi0 = aligned_psi(scenario, R0) if init_psi is None else init_psi.to(scenario.G.dtype)
    psi0 = psi0 / psi0.abs().amax(-1, keepdim=True)
    W = torch.eye(M, dtype=torch.float64).expand(L, M, M).clone()
    W = torch.stack([W, torch.zeros_like(W)], -1) + 0.01 * torch.randn(L, M, M, 2, generator=g, dtype=torch.float64)
    P = torch.view_as_real(psi0.clone()) + 0.01 * torch.randn(psi0.shape + (2,), generator=g, dtype=torch.float64)
    W.requires_grad_(True)
    P.requires_grad_(True)
    opt = torch.optim.Adam([W, P], lr=lr)
    best = (float("inf"), None, None)

    def value(R, psi):
        c = scenario.crb(R, psi, validate=False)
        return c.angles if objective == "angles" else c.total

    if seconds is None:
        it = range(steps)
        if progress:
            from irs_torch.outputs import progress_bar

            it = progress_bar(it, total=steps, desc="adam design", unit="step", leave=False)
    else:
        import itertools

        it = itertools.count()
    n = 0
    for n in it:
        if seconds is not None and n > 0 and time.perf_counter() - t0 >= seconds:
            break
        R, psi = _feasible_design(scenario, W, P)
        c = value(R, psi)
        val = float(c.detach().max())
        if val < best[0]:
            best = (val, R.detach().clone(), psi.detach().clone())
        loss = torch.logsumexp(sharpness * torch.log(c), -1) / sharpness
        opt.zero_grad()
        loss.backward()
        opt.step()
    taken = n + 1 if seconds is None else n
    if seconds is None:
        with torch.no_grad():
            R, psi = _feasible_design(scenario, W, P)
            val = float(value(R, psi).max())
            if val < best[0]:
                best = (val, R, psi)
    return (best[1], best[2], taken) if return_steps else (best[1], best[2])


def make_design(scenario, name: str, seed: int = 0, adam_steps: int = 300, optimiser: str = "auto"):
    """``(R_s, psi, label)`` for a named design (see module docstring).

    ``seed``: random phases / Adam perturbation / solver seed. For ``optimised``, ``optimiser``
    chooses ``adam`` (:func:`adam_design` only), ``ao`` (the AO solver only; an error if it fails
    or returns no feasible design) or ``auto`` (Adam, then the AO solver warm-started from it; the
    feasible design with the lower max tr(F^-1) is kept). The label says which method produced
    the design.
    """
    if name not in DESIGNS:
        raise ValueError(f"design must be one of {list(DESIGNS)}, got {name!r}")
    if optimiser not in ("auto", "adam", "ao"):
        raise ValueError(f"optimiser must be 'auto', 'adam' or 'ao', got {optimiser!r}")
    if name == "isotropic-random":
        R = scenario.isotropic_design()
        return R, scenario.random_phase_design(R, seed=seed), f"isotropic-random (seed {seed})"
    if name == "isotropic-aligned":
        R = scenario.isotropic_design()
        return R, aligned_psi(scenario, R), "isotropic-aligned"
    if name == "adam" or optimiser == "adam":
        R, psi = adam_design(scenario, steps=adam_steps, seed=seed)
        return R, psi, f"optimised (adam, {adam_steps} steps, seed {seed})"
    cands = []
    if optimiser == "auto":
        R, psi = adam_design(scenario, steps=adam_steps, seed=seed)
        cands.append((float(scenario.max_crb(R, psi)), R, psi, f"optimised (adam, {adam_steps} steps, seed {seed})"))
    init = {"R_s": cands[0][1], "psi": cands[0][2]} if cands else None
    try:
        ao = _ao_design(scenario, init, seed)
    except Exception as e:  # a solver error: "auto" keeps the Adam design
        if optimiser == "ao":
            raise ValueError(f"the AO solver (irs_torch.solvers.solve) failed: {e}") from None
        ao = None
    if ao is not None:
        R, psi = ao
        cands.append((float(scenario.max_crb(R, psi)), R, psi, "optimised (solvers.solve ao"
                      + (", warm-started from adam)" if init else ")")))
    if not cands:
        raise ValueError("the AO solver (irs_torch.solvers.solve) returned no feasible design")
    best = min(cands, key=lambda c: c[0])
    return best[1], best[2], best[3]


def _ao_design(scenario, init, seed):
    """The AO solver's design ``(R_s, psi)`` from ``init``, or None if it is not feasible
    (``success`` False, or constraint margins below -1e-5)."""
    from irs_torch.solvers import SolverOptions, solve

    res = solve(scenario, method="ao", init=init, options=SolverOptions(seed=seed))
    if not res.success:
        return None
    R, psi = res.R_s.to(scenario.G.dtype), res.psi.to(scenario.G.dtype)
    if not bool(scenario.is_feasible(R, psi, rtol=1e-5)):
        return None
    return R, psi

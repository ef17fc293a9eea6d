"""Starting points of the exact solver and the power balance they and the AO share.

:func:`initial_point` makes any start feasible (random phases, the co-phased beam, or a user's warm start,
repaired, never discarded); :func:`amax_start`, :func:`cophased_start`, :func:`random_start` and
:func:`diverse_starts` are the starts the effort strategies screen; :func:`balance_power` is the per-slot
BS-power / IRS-amplification balance (``R_l -> rho R_l``, psi re-scaled; never worse).
"""
from __future__ import annotations

import math

import torch

from irs_torch.scenario import Scenario
from irs_torch.solvers.result import INIT_KINDS, SolverOptions
from irs_torch.solvers.transmit import repair_transmit


# ----------------------------------------------------------------------------- starting points
def _as_tensor(name, v, scenario):
    if not torch.is_tensor(v):
        try:
            import numpy as np

            v = torch.as_tensor(np.asarray(v))
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"init['{name}'] must be a tensor or array, got {type(v).__name__}") from e
    return v.to(scenario.G.dtype)


def initial_point(scenario: Scenario, init: dict | None, options: SolverOptions):
    """Starting ``(R_s (L, M, M), psi (L, N), info)`` for :func:`solve`.

    ``init``: None or ``{"kind": "random"}`` - ``R_s = P_t/M I`` and random phases (``options.seed``)
    at the largest amplitude meeting C1 and a_max; ``{"kind": "aligned"}`` - phases co-phasing the
    two-hop echo of the BS beam that maximises it (:func:`irs_torch.physics.steering.cophasing_beam`;
    an eigenvector of the isotropic R_s would be an arbitrary antenna), same amplitude rule;
    ``{"R_s": ..., "psi": ...}`` (either or both) - the warm
    start. A user-given point is made feasible, never discarded (documented fallback): R_s
    projected onto the PSD cone and scaled into the BS budget; psi scaled down (real factor) to
    meet a_max and C1 if it violates them (passive: projected to unit modulus); with psi given
    and R_s not, R_s is ``P_t/M I`` scaled per slot to meet C1 with that psi. ``info`` says what
    was changed.
    """
    info: dict = {"kind": "random"}
    init = {} if init is None else init
    if not isinstance(init, dict):
        raise TypeError(f"init must be a dict or None, got {type(init).__name__}")
    unknown = set(init) - {"kind", "R_s", "psi"}
    if unknown:
        raise ValueError(f"init has unknown keys {sorted(unknown)}; expected 'kind', 'R_s', 'psi'")
    kind = init.get("kind", "random")
    if kind not in INIT_KINDS:
        raise ValueError(f"init['kind'] must be one of {INIT_KINDS}, got {kind!r}")
    info["kind"] = kind
    R_given = init.get("R_s") is not None
    psi_given = init.get("psi") is not None
    if R_given:
        R = _as_tensor("R_s", init["R_s"], scenario)
        scenario.check_design(R_s=R)
        if R.dim() != 3:
            raise ValueError(f"init['R_s'] must have shape (L, M, M), got {tuple(R.shape)}")
        info["kind"] = "given"
    else:
        R = scenario.isotropic_design()
    if psi_given:
        psi = _as_tensor("psi", init["psi"], scenario)
        scenario.check_design(psi=psi)
        if psi.dim() != 2:
            raise ValueError(f"init['psi'] must have shape (L, N), got {tuple(psi.shape)}")
        if (psi.abs().amax(-1) == 0).any():
            raise ValueError("init['psi'] has an all-zero IRS vector: the FIM is singular (no echo)")
        info["kind"] = "given"
        if not scenario.active:
            psi = scenario.scale_psi_to_feasible(R, psi)
    elif kind == "aligned":  # co-phasing rule with the beam it co-phases (not an eigenvector of isotropic R_s)
        from irs_torch.physics.steering import cophasing_beam

        psi = scenario.scale_psi_to_feasible(R, cophasing_beam(scenario)[1])
    else:
        psi = scenario.random_phase_design(R, seed=options.seed)
        if not scenario.active:
            psi = scenario.scale_psi_to_feasible(R, psi)
    if not (R_given or psi_given) and scenario.active:
        R, psi, rho = balance_power(scenario, R, psi)
        info["power_balance_rho"] = rho.tolist()
    if R_given or psi_given:
        # repair: R_s PSD + BS budget (+ C1 by scaling R when psi is the given part)
        R0 = R
        R, rep = repair_transmit(scenario, psi if (psi_given and not R_given) else None, R)
        info["R_s_scale"] = rep.get("scale")
        info["R_s_repaired"] = not torch.allclose(R, R0)
        if scenario.active:
            m = scenario.constraint_margins(R, psi)
            if (m["irs"] < 0).any() or (m["amp"] < 0).any():
                s_psi = scenario.scale_psi_to_feasible(R, psi)
                fac = (s_psi.abs().amax(-1) / psi.abs().amax(-1)).clamp(max=1.0)
                psi = psi * fac.unsqueeze(-1).to(psi.dtype)
                info["psi_scaled_by"] = fac.tolist()
    return R, psi, info


def balance_power(scenario: Scenario, R: torch.Tensor, psi: torch.Tensor, n_grid: int = 41):
    """Trade BS power against IRS amplification, per slot, by a 1-D search (never worse).

    When C1 binds, the AO keeps the amplitude level it starts from (docs/assumptions.md "Numerical experience"): P2
    cannot raise |psi| and P3 cannot lower R_s. This step scans ``R_l -> rho R_l`` for ``rho`` in
    ``logspace(-4, 0, n_grid)`` with psi_l rescaled by a real factor to the largest value meeting C1
    and a_max (closed form, :meth:`Scenario.scale_psi_to_feasible`), and keeps, per IRS, the rho
    with the lowest CRB_l (rho = 1 with the unscaled psi is a candidate, so the CRB never rises).
    Each slot only shrinks, so the BS budget still holds. Passive IRSs are returned unchanged.

    Shapes: R ``(L, M, M)``, psi ``(L, N)`` -> ``(R, psi, rho (L,))``.
    """
    if not scenario.active:
        return R, psi, torch.ones(scenario.L, dtype=torch.float64)
    rho = torch.logspace(-4, 0, n_grid, dtype=torch.float64)
    Rb = rho.to(R.dtype)[:, None, None, None] * R  # (n, L, M, M)
    psib = scenario.scale_psi_to_feasible(Rb, psi.expand(n_grid, *psi.shape))
    c = scenario.crb(Rb, psib, validate=False).total  # (n, L)
    c = torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf")))
    c_now = scenario.crb(R, psi, validate=False).total  # (L,)
    best = c.argmin(0)  # (L,)
    idx = torch.arange(scenario.L)
    better = c[best, idx] < c_now
    R_new = torch.where(better[:, None, None], Rb[best, idx], R)
    psi_new = torch.where(better[:, None], psib[best, idx], psi)
    rho_sel = torch.where(better, rho[best], torch.ones_like(rho[best]))
    return R_new, psi_new, rho_sel


def amax_start(scenario: Scenario, seed: int):
    """A second AO start (docs/assumptions.md "Numerical experience": the AO keeps the amplitude level it starts from
    when C1 binds): random phases at |psi_n| = a_max and ``R_s = P_t/M I`` scaled per slot to meet C1."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    ph = 2 * math.pi * torch.rand(scenario.L, scenario.N, generator=g, dtype=torch.float64)
    psi = torch.polar(torch.full_like(ph, float(scenario.a_max)), ph).to(scenario.G.dtype)
    from irs_torch.solvers.transmit import c1_rhs

    _, rhs = c1_rhs(scenario, psi)
    if (rhs <= 0).any():  # amplified noise alone above P_s: fall back to the C1-feasible amplitude
        return scenario.isotropic_design(), scenario.random_phase_design(seed=int(seed) + 1)
    R, _ = repair_transmit(scenario, psi, scenario.isotropic_design())
    return R, psi


def cophased_start(scenario: Scenario):
    """Co-phased start: ``R_s,l = P_t w_l w_l^H`` and psi_l co-phasing the cascade of the BS beam w_l
    (:func:`irs_torch.physics.steering.cophasing_beam`), psi at the largest scale meeting C1 and
    a_max, then :func:`~irs_torch.solvers.starts.balance_power`. Shapes ``(L, M, M)``, ``(L, N)``."""
    from irs_torch.physics.steering import cophasing_beam

    w, psi = cophasing_beam(scenario)
    R = float(scenario.P_t) * (w.unsqueeze(-1) @ w.conj().unsqueeze(-2))
    psi = scenario.scale_psi_to_feasible(R, psi)
    R, psi, _ = balance_power(scenario, R, psi)
    return R, psi


def random_start(scenario: Scenario, seed: int, level: float = 1.0, beam: bool = False):
    """Random phases at a_max-relative amplitude ``level`` (scaled to meet C1), ``R_s = P_t/M I``
    (or, with ``beam``, the co-phased beam ``P_t w w^H``), then :func:`balance_power` (which scans the
    BS power down and the amplitude up). Shapes ``(L, M, M)``, ``(L, N)``."""
    from irs_torch.physics.steering import cophasing_beam

    g = torch.Generator().manual_seed(int(seed))
    ph = 2 * math.pi * torch.rand(scenario.L, scenario.N, generator=g, dtype=torch.float64)
    psi = torch.polar(torch.full_like(ph, float(level) * float(scenario.a_max)), ph).to(scenario.G.dtype)
    if beam:
        w, _ = cophasing_beam(scenario)
        R = float(scenario.P_t) * (w.unsqueeze(-1) @ w.conj().unsqueeze(-2))
    else:
        R = scenario.isotropic_design()
    psi = scenario.scale_psi_to_feasible(R, psi)
    if scenario.active:
        R, psi, _ = balance_power(scenario, R, psi)
    return R, psi


def diverse_starts(scenario: Scenario, n: int, seed: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``n`` diverse feasible starts ``(name, R_s, psi)``: the co-phased start, the AO's own random
    start (:func:`~irs_torch.solvers.starts.initial_point`), its a_max start, then random phases
    alternating isotropic / beamformed R_s and amplitude levels 1, 0.5, 0.25 of a_max."""
    from irs_torch.solvers.result import SolverOptions

    out = [("cophased", *cophased_start(scenario))]
    if n > 1:
        R, psi, _ = initial_point(scenario, None, SolverOptions(seed=seed))
        out.append((f"random(seed={seed})", R, psi))
    if n > 2:
        out.append((f"amax(seed={seed})", *amax_start(scenario, seed)))
    k = 0
    while len(out) < n:
        level = (1.0, 0.5, 0.25)[k % 3]
        beam = k % 2 == 1
        sd = seed * 1000 + 17 + k
        out.append((f"random(seed={sd},level={level},{'beam' if beam else 'iso'})",
                    *random_start(scenario, sd, level, beam)))
        k += 1
    return out[:n]

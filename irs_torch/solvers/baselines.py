"""The paper's benchmarks (Section V), the passive-IRS model and the aligned (co-phasing) designs.

* transmit-BF only: random IRS phases at the largest amplitude meeting C1 (with isotropic R_s) and
  a_max, then (P2) for R_s.
* reflective-BF only: ``R_s,l = P_t / M I``, then (P3) for psi.
* passive IRS: ``|psi_n| = 1``, no amplification noise (``sigma_r2 = 0``), no C1; (P2) and (P3) with
  ``diag(Theta) = 1`` alternate. ``fair=True`` gives the BS ``P_t + P_s`` (the power-fair
  comparison: the active IRS's budget moves to the BS). :func:`passive_scenario` is the one
  conversion of a scenario to passive IRSs.

Aligned designs: the co-phasing rule :func:`irs_torch.physics.steering.cophasing_psi` applied to a
BS beam - the dominant direction of the channels (:func:`aligned_psi`, the "isotropic-aligned"
reference design of ``irs-torch crb`` and the Monte Carlo study) or of a transmit covariance
(:func:`aligned_phases`, a start of the first-order P3 method).
"""
from __future__ import annotations

import torch

from irs_torch.physics.steering import cophasing_psi
from irs_torch.scenario import Scenario


def passive_scenario(scenario: Scenario, fair: bool = False) -> Scenario:
    """The passive-IRS version of ``scenario``: ``active=False``, ``sigma_r2=0``, and with
    ``fair`` the BS budget ``P_t + P_s``. A scenario that is already passive is returned as is
    (plus the fair budget if asked)."""
    changes = {}
    if scenario.active:
        changes.update(active=False, sigma_r2=0.0)
    if fair:
        changes["P_t"] = float(scenario.P_t) + float(scenario.P_s)
    return scenario.replace(**changes) if changes else scenario


def aligned_psi(scenario: Scenario, R_s: torch.Tensor) -> torch.Tensor:
    """psi whose phases co-phase each IRS's two-hop echo of the dominant transmit direction ``w_l`` of
    ``G_l^H G_l`` (:func:`cophasing_psi`), scaled to the largest amplitude meeting C1 and a_max for
    ``R_s`` (:meth:`Scenario.scale_psi_to_feasible`). Shapes: R_s ``(..., L, M, M)`` -> ``(..., L, N)``."""
    w = torch.linalg.eigh(scenario.G.conj().transpose(-1, -2) @ scenario.G)[1][..., -1]
    return scenario.scale_psi_to_feasible(R_s, cophasing_psi(scenario, w))


def aligned_phases(scenario: Scenario, R_s: torch.Tensor) -> torch.Tensor:
    """Unit-modulus psi ``(L, N)`` that co-phases the two-hop echo of the dominant transmit direction
    ``w_l`` (principal eigenvector of R_s,l): :func:`cophasing_psi`. Shapes: R_s ``(L, M, M)``."""
    w = torch.linalg.eigh(0.5 * (R_s + R_s.conj().transpose(-1, -2)))[1][..., -1]  # (L, M)
    return cophasing_psi(scenario, w)

"""The paper's benchmarks (Section V) and the passive-IRS model.

* transmit-BF only: random IRS phases at the largest amplitude meeting C1 (with isotropic R_s) and
  a_max, then (P2) for R_s.
* reflective-BF only: ``R_s,l = P_t / M I``, then (P3) for psi.
* passive IRS: ``|psi_n| = 1``, no amplification noise (``sigma_r2 = 0``), no C1; (P2) and (P3) with
  ``diag(Theta) = 1`` alternate. ``fair=True`` gives the BS ``P_t + P_s`` (the power-fair
  comparison: the active IRS's budget moves to the BS).
"""
from __future__ import annotations

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

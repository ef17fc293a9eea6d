"""Constructors of :class:`~irs_torch.scenario.model.Scenario`: the paper's Section V preset and
any geometry (channels and the target coefficient drawn from a seed).

The defaults (path loss, Rician K, noise powers, beta model, element spacings) are the modelling
assumptions of docs/assumptions.md ("Defaults where the paper is silent").
"""
from __future__ import annotations

import torch

from irs_torch.physics.channels import rician_bs_irs_channel, target_coefficient
from irs_torch.physics.geometry import dbm_to_watt, direction_angles, target_angles
from irs_torch.scenario.model import Scenario
from irs_torch.scenario.placement import check_node_placement

# The paper's Section V geometry (m, rad): BS at the origin, two IRSs on the plane x = -5 facing +x.
PAPER_GEOMETRY = dict(bs_pos=[0.0, 0.0, 0.0], irs_pos=[[-5.0, 10.0, 0.0], [-5.0, 20.0, 0.0]],
                      irs_yaw=[0.0, 0.0], target_pos=[5.0, 15.0, 0.0])
#: Smallest spacing [m] along the IRS wall of :func:`irs_rows` (the accept rule's 2 m plus a margin).
MIN_ROW_SPACING = 2.5


def irs_rows(L: int, center: float = 15.0, span: float = 10.0, min_spacing: float = MIN_ROW_SPACING) -> list[float]:
    """The y coordinates [m] of L IRSs along the paper's IRS wall: evenly spread over ``span`` m centred
    at ``center`` (L = 2 gives the paper's 10 and 20 m; L = 1 the centre), spaced at least
    ``min_spacing`` m (the span grows for large L). Raises ValueError for L < 1."""
    if isinstance(L, bool) or not isinstance(L, int) or L < 1:
        raise ValueError(f"L must be an integer >= 1, got {L!r}")
    if L == 1:
        return [float(center)]
    step = max(span / (L - 1), min_spacing)
    return [float(center + (i - (L - 1) / 2) * step) for i in range(L)]


def paper_geometry(L: int = 2) -> dict:
    """The paper's Section V geometry with L IRSs on the plane x = -5 m facing +x, at :func:`irs_rows`
    (L = 2: the paper's). ValueError naming L if the placement breaks the geometry accept rule
    (:func:`irs_torch.scenario.placement.geometry_admissible`, 2 m separation, front cosine 0.2)."""
    import numpy as np

    from irs_torch.scenario.placement import geometry_admissible

    if L == 2:
        return dict(PAPER_GEOMETRY)
    irs = [[-5.0, y, 0.0] for y in irs_rows(L)]
    g = dict(PAPER_GEOMETRY, irs_pos=irs, irs_yaw=[0.0] * L)
    if not geometry_admissible(np.asarray(g["bs_pos"]), np.asarray(irs), np.zeros(L), np.asarray(g["target_pos"]),
                               2.0, 0.2):
        raise ValueError(f"L={L}: the paper geometry has no room for {L} IRSs on its wall (the BS or the target "
                         f"falls behind an outer IRS); give irs_pos and irs_yaw")
    return g


def paper_scenario(seed: int = 0, *, M: int = 16, N_h: int = 4, N_v: int = 4, P_t: float = 20.0,
          P_s: float = 0.1, a_max: float = 8.0, active: bool = True, L: int = 2, **overrides) -> Scenario:
    """The scenario of the paper's Section V with the defaults of docs/assumptions.md.

    BS at (0,0,0) (ULA along x), IRSs at (-5,10,0) and (-5,20,0) facing +x, target at (5,15,0),
    Rician K = 5 dB BS-IRS channels, PL(d) = -30 dB d^-2.2, |beta|^2 = PL(d_IT)^2,
    sigma_r^2 = sigma_b^2 = -80 dBm, T_c = 100. Channels and beta phases are drawn from ``seed``.
    ``L``: the number of IRSs (:func:`paper_geometry`: L = 2 is the paper's; others are spread along
    the same wall by :func:`irs_rows`). ``overrides``: any keyword of :func:`from_geometry` (positions
    included).
    """
    geom = paper_geometry(L)
    for k in list(geom):
        if k in overrides:
            geom[k] = overrides.pop(k)
    return from_geometry(seed=seed, M=M, N_h=N_h, N_v=N_v, P_t=P_t, P_s=P_s, a_max=a_max,
                         active=active, preset="paper", **geom, **overrides)


def from_geometry(*, bs_pos, irs_pos, irs_yaw, target_pos, M: int, N_h: int, N_v: int,
                  seed: int = 0, d_h: float = 0.5, d_v: float = 0.5, d_bs: float = 0.5,
                  wavelength: float = 0.1, K_db: float = 5.0, C0_db: float = -30.0,
                  alpha: float = 2.2, beta_model: str = "pathloss", sigma_rcs: float = 1.0,
                  sigma_r2: float | None = None, sigma_b2: float | None = None,
                  T_c: float = 100.0, P_t: float = 20.0, P_s: float = 0.1, a_max: float = 8.0,
                  active: bool = True, preset: str = "custom") -> Scenario:
    """Build one (unbatched) scenario from positions; channels and beta phase from ``seed``.

    Shapes: bs_pos ``(3,)``, irs_pos ``(L, 3)``, irs_yaw ``(L,)`` [rad], target_pos ``(3,)`` [m].
    Noise powers default to -80 dBm. The BS must be in front of every IRS (checked here); the
    target's placement is checked by :class:`Scenario` itself.
    """
    import math

    from irs_torch.limits import check_scenario_sizes

    check_scenario_sizes(M, N_h, N_v, len(irs_pos))  # before any allocation
    if not math.isfinite(float(K_db)) or abs(float(K_db)) > 300:  # 10**(K/10) overflows beyond ~3000 dB
        raise ValueError(f"K_db must be a finite number in [-300, 300] dB, got {K_db!r}")
    sigma_r2 = dbm_to_watt(-80.0) if sigma_r2 is None else sigma_r2
    sigma_b2 = dbm_to_watt(-80.0) if sigma_b2 is None else sigma_b2
    bs = torch.as_tensor(bs_pos, dtype=torch.float64)
    irs = torch.as_tensor(irs_pos, dtype=torch.float64)
    yaw = torch.as_tensor(irs_yaw, dtype=torch.float64)
    tgt = torch.as_tensor(target_pos, dtype=torch.float64)
    if irs.dim() != 2 or irs.shape[-1] != 3:
        raise ValueError(f"irs_pos must have shape (L, 3), got {tuple(irs.shape)}")
    if yaw.shape != irs.shape[:1]:
        raise ValueError(f"irs_yaw must have shape ({irs.shape[0]},), got {tuple(yaw.shape)}")
    if bs.shape != (3,) or tgt.shape != (3,):
        raise ValueError(f"bs_pos and target_pos must have shape (3,), got {tuple(bs.shape)} and {tuple(tgt.shape)}")
    _, _, d_bi, front_bs = direction_angles(irs, yaw, bs.expand_as(irs))
    check_node_placement("bs_pos", d_bi, front_bs, irs.shape[0])
    theta, phi, d_it, _ = target_angles(irs, yaw, tgt)
    gen = torch.Generator().manual_seed(int(seed))
    G = rician_bs_irs_channel(bs, irs, yaw, M, N_h, N_v, d_bs=d_bs, d_h=d_h, d_v=d_v, K_db=K_db,
                              C0_db=C0_db, alpha=alpha, generator=gen)
    beta = target_coefficient(d_it, model=beta_model, sigma_rcs=sigma_rcs, wavelength=wavelength,
                              C0_db=C0_db, alpha=alpha, generator=gen)
    return Scenario(G=G, theta=theta, phi=phi, beta=beta, M=M, N_h=N_h, N_v=N_v, d_h=d_h, d_v=d_v,
                    sigma_r2=sigma_r2, sigma_b2=sigma_b2, T_c=T_c, P_t=P_t, P_s=P_s, a_max=a_max,
                    active=active, bs_pos=bs, irs_pos=irs, irs_yaw=yaw, target_pos=tgt,
                    wavelength=wavelength, d_bs=d_bs, K_db=K_db, C0_db=C0_db, alpha=alpha,
                    beta_model=beta_model, sigma_rcs=sigma_rcs, seed=int(seed), preset=preset)

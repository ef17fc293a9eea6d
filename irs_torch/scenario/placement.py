"""Where the nodes may be: the placement rules every scenario obeys (:func:`check_node_placement`, used by the
:class:`~irs_torch.scenario.model.Scenario` checks and the presets) and the geometry accept rule of every random
geometry in irs-torch (:func:`geometry_admissible`).

:func:`geometry_admissible` is the rejection rule used by :class:`irs_torch.scenario.sampling.GeometryDistribution`,
the data-set distribution :class:`irs_torch.data.distribution.DatasetConfig` and the paper geometry with L IRSs: a
draw is admissible if every pair of nodes (BS, IRSs, target) is at least ``min_separation`` m apart and the target
and the BS are in front of every IRS with cosine to its normal at least ``min_front_cosine``. Each caller keeps its
own defaults for the two thresholds (both 2.0 m and 0.2 today).
"""
from __future__ import annotations

import numpy as np
import torch

# Minimum node separation (m) and the smallest admissible cosine between a direction and an
# IRS normal (the target and the BS must be in front of every IRS, off its plane).
MIN_SEPARATION_M = 0.5
MIN_FRONT_COSINE = 0.05


def check_node_placement(name: str, dist: torch.Tensor, front: torch.Tensor, L: int, what: str = ""):
    """The node ``name`` (``target_pos`` or ``bs_pos``) must be >= ``MIN_SEPARATION_M`` m from every IRS
    and in front of it (cosine to its normal >= ``MIN_FRONT_COSINE``). ``dist``, ``front``: ``(..., L)``
    from :func:`irs_torch.physics.geometry.direction_angles`. Raises ValueError naming the IRS."""
    if (dist < MIN_SEPARATION_M).any():
        idx = int(torch.nonzero((dist < MIN_SEPARATION_M).flatten())[0]) % L
        raise ValueError(f"{name} is {dist.flatten()[idx].item():.3g} m from IRS {idx + 1} "
                         f"(must be >= {MIN_SEPARATION_M} m){what}")
    if (front < MIN_FRONT_COSINE).any():
        idx = int(torch.nonzero((front < MIN_FRONT_COSINE).flatten())[0]) % L
        raise ValueError(f"{name} is behind or in the plane of IRS {idx + 1} "
                         f"(cosine to its normal {front.flatten()[idx].item():.3g}, must be >= {MIN_FRONT_COSINE})")


def geometry_admissible(bs_pos: np.ndarray, irs_pos: np.ndarray, irs_yaw: np.ndarray, target_pos: np.ndarray,
                        min_separation: float, min_front_cosine: float) -> bool:
    """The rejection rule: True if the geometry is admissible (see the module docstring).

    Shapes: bs_pos ``(3,)``, irs_pos ``(L, 3)`` [m], irs_yaw ``(L,)`` [rad] (IRS normal
    ``(cos yaw, sin yaw, 0)``), target_pos ``(3,)`` [m]; min_separation [m]; min_front_cosine.
    """
    nodes = np.vstack([bs_pos[None], irs_pos, target_pos[None]])
    dd = np.linalg.norm(nodes[:, None] - nodes[None], axis=-1)
    if (dd[np.triu_indices(len(nodes), 1)] < min_separation).any():
        return False
    n = np.stack([np.cos(irs_yaw), np.sin(irs_yaw), np.zeros_like(irs_yaw)], -1)
    for p in (target_pos, bs_pos):
        k = p[None] - irs_pos
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
        if ((k * n).sum(-1) < min_front_cosine).any():
            return False
    return True

"""Random geometries around the paper's scenario: :class:`GeometryDistribution` and :func:`random_scenario`.

A draw that breaks the geometry accept rule (:func:`irs_torch.scenario.placement.geometry_admissible`) is
redrawn, deterministically from the seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from irs_torch.scenario.model import Scenario
from irs_torch.scenario.placement import geometry_admissible
from irs_torch.scenario.presets import from_geometry


@dataclass(frozen=True)
class GeometryDistribution:
    """Random geometries around the paper's scenario (used by :func:`random_scenario`).

    The BS sits at the origin with its ULA along +x. IRS l sits at ``x = irs_x + U(-jitter, jitter)``,
    ``y = irs_y[l] + U(-jitter, jitter)``, ``z = 0`` (``irs_y`` None: the L rows of
    :func:`irs_torch.scenario.presets.irs_rows`, the paper's 10 and 20 m for L = 2), with yaw
    ``U(-yaw_max, yaw_max)`` (rad). The target
    is uniform in the box ``target_x x target_y`` at z = 0. Budgets are uniform in their ranges.

    Rejection rule (:func:`geometry_admissible`; a draw breaking it is redrawn, deterministically from
    the seed): every pair of nodes (BS, IRSs, target) at least ``min_separation`` m apart; the target
    and the BS in front of every IRS with cosine to its normal >= ``min_front_cosine``.
    """

    M: int = 16
    N_h: int = 4
    N_v: int = 4
    L: int = 2
    irs_x: float = -5.0
    irs_y: tuple | None = None
    jitter: float = 2.0
    yaw_max: float = math.radians(20.0)
    target_x: tuple = (2.0, 10.0)
    target_y: tuple = (8.0, 22.0)
    P_t: tuple = (20.0, 20.0)
    P_s: tuple = (0.1, 0.1)
    a_max: tuple = (8.0, 8.0)
    min_separation: float = 2.0
    min_front_cosine: float = 0.2
    max_tries: int = 1000

    def __post_init__(self):
        from irs_torch.scenario.presets import irs_rows

        if isinstance(self.L, bool) or not isinstance(self.L, int) or self.L < 1:
            raise ValueError(f"L must be an integer >= 1, got {self.L!r}")
        if self.irs_y is None:
            object.__setattr__(self, "irs_y", tuple(irs_rows(self.L)))
        if len(self.irs_y) != self.L:
            raise ValueError(f"irs_y must have L={self.L} entries, got {len(self.irs_y)}")
        for name in ("P_t", "P_s", "a_max", "target_x", "target_y"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name} range must have low <= high, got {getattr(self, name)}")
        for name in ("P_t", "P_s", "a_max"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name} range must be > 0, got {getattr(self, name)}")

    def _draw(self, rng: np.random.Generator):
        irs = np.zeros((self.L, 3))
        irs[:, 0] = self.irs_x + rng.uniform(-self.jitter, self.jitter, self.L)
        irs[:, 1] = np.asarray(self.irs_y) + rng.uniform(-self.jitter, self.jitter, self.L)
        yaw = rng.uniform(-self.yaw_max, self.yaw_max, self.L)
        tgt = np.array([rng.uniform(*self.target_x), rng.uniform(*self.target_y), 0.0])
        budgets = {k: float(rng.uniform(*getattr(self, k))) for k in ("P_t", "P_s", "a_max")}
        return irs, yaw, tgt, budgets

    def accept(self, bs, irs, yaw, tgt) -> bool:
        """The rejection rule :func:`geometry_admissible` with this distribution's thresholds."""
        return geometry_admissible(bs, irs, yaw, tgt, self.min_separation, self.min_front_cosine)

    def sample(self, seed: int, **overrides) -> Scenario:
        """One scenario drawn from ``seed`` (geometry and budgets from ``np.random.default_rng(seed)``,
        channels from :func:`irs_torch.scenario.presets.from_geometry`); ``overrides``: its keywords."""
        rng = np.random.default_rng(int(seed))
        bs = np.zeros(3)
        for _ in range(self.max_tries):
            irs, yaw, tgt, budgets = self._draw(rng)
            if self.accept(bs, irs, yaw, tgt):
                break
        else:
            raise RuntimeError(f"no admissible geometry in {self.max_tries} draws for seed {seed}; "
                               f"the ranges of this GeometryDistribution are too tight")
        kw = dict(M=self.M, N_h=self.N_h, N_v=self.N_v, **budgets)
        kw.update(overrides)
        return from_geometry(bs_pos=bs, irs_pos=irs, irs_yaw=yaw, target_pos=tgt, seed=seed, preset="random", **kw)


def random_scenario(seed: int = 0, distribution: GeometryDistribution | None = None, **overrides) -> Scenario:
    """A random geometry around the paper's scenario, drawn from ``seed``.

    See :class:`GeometryDistribution` for the ranges and the rejection rule (default:
    ``GeometryDistribution()``, or ``GeometryDistribution(L=L)`` with an ``L`` keyword: L IRSs); other
    ``overrides`` are keywords of :func:`irs_torch.scenario.presets.from_geometry`.
    """
    L = overrides.pop("L", None)
    if distribution is not None and L is not None and L != distribution.L:
        raise ValueError(f"L={L} differs from the distribution's L={distribution.L}")
    dist = distribution or (GeometryDistribution() if L is None else GeometryDistribution(L=L))
    return dist.sample(seed, **overrides)

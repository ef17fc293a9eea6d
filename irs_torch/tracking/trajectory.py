"""True target trajectories for the tracking loop: constant velocity or waypoints, in a plane.

A trajectory gives the target's position at the start of every sensing block ``t = 0, 1, ...``
(block duration ``dt`` seconds). The target moves in the horizontal plane ``z = z0`` (the plane
the IRSs see in the paper's geometry: BS, IRSs and target all at z = 0), so positions are
``(x, y, z0)`` [m].

- :meth:`Trajectory.constant_velocity`: ``p(t) = start + velocity * t * dt``.
- :meth:`Trajectory.waypoints`: along the polyline through the waypoints at constant ``speed``;
  the target stops at the last waypoint.

Both are defined for every block independently of how many blocks a run has (a 50-block run starts
with the 30 blocks of a 30-block run), which is what lets a resumed or extended run reuse records.

Default (:func:`default_trajectory`): a straight line through the scenario's own target position,
reached at block :data:`DEFAULT_CENTRE_BLOCK`, at :data:`DEFAULT_SPEED` m/s with blocks of
:data:`DEFAULT_DT` s. Its direction is the IRS array's spread (first IRS -> last IRS) tilted a
quarter towards the IRSs' mean normal, so the range to both IRSs changes along the way. On the
paper's scenario (IRSs at (-5, 10) and (-5, 20) facing +x, target at (5, 15)) it runs from
(3.54, 9.18) at block 0 to (6.46, 20.82) at block 40: a pedestrian / slow drone at 3 m/s
(10.8 km/h) sensed at a 10 Hz revisit rate (0.3 m per block), within the region the IRSs see.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from irs_torch.errors import InputError
from irs_torch.tracking.defaults import DEFAULT_CENTRE_BLOCK, DEFAULT_DT, DEFAULT_SPEED, DEFAULT_TILT  # noqa: F401


def _finite_vector(name: str, v, n: int) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {n} real numbers, got {v!r}") from None
    if a.shape != (n,):
        raise InputError(f"{name} must be {n} real numbers, got {a.size}: {v!r}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} must be finite, got {a.tolist()}")
    return a


def _positive(name: str, v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number, got {v!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {v!r}")
    return x


@dataclass(frozen=True)
class Trajectory:
    """A planar target trajectory sampled once per block.

    kind: "constant-velocity" or "waypoints"; dt: block duration [s]; z: the plane's height [m].
    constant-velocity: ``start`` (2,) [m], ``velocity`` (2,) [m/s]. waypoints: ``points`` (P, 2) [m]
    (P >= 2), ``speed`` [m/s].
    """

    kind: str
    dt: float
    z: float = 0.0
    start: tuple = ()
    velocity: tuple = ()
    points: tuple = ()
    speed: float = 0.0

    @classmethod
    def constant_velocity(cls, start, velocity, dt: float = DEFAULT_DT, z: float = 0.0) -> "Trajectory":
        s = _finite_vector("start", start, 2)
        v = _finite_vector("velocity", velocity, 2)
        return cls(kind="constant-velocity", dt=_positive("dt", dt), z=float(z), start=tuple(s.tolist()),
                   velocity=tuple(v.tolist()))

    @classmethod
    def waypoints(cls, points, speed: float = DEFAULT_SPEED, dt: float = DEFAULT_DT, z: float = 0.0) -> "Trajectory":
        try:
            p = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"waypoints must be (x, y) pairs, got {points!r}") from None
        if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 2:
            raise InputError(f"waypoints must be at least 2 (x, y) pairs, got shape {p.shape}")
        if not np.isfinite(p).all():
            i = int(np.nonzero(~np.isfinite(p).all(1))[0][0])
            raise InputError(f"waypoints must be finite, waypoint {i + 1} is {p[i].tolist()}")
        seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
        if (seg <= 0).any():
            i = int(np.nonzero(seg <= 0)[0][0])
            raise InputError(f"waypoints {i + 1} and {i + 2} coincide ({p[i].tolist()}): consecutive "
                             f"waypoints must differ")
        return cls(kind="waypoints", dt=_positive("dt", dt), z=float(z),
                   points=tuple(tuple(r) for r in p.tolist()), speed=_positive("speed", speed))

    def positions(self, steps: int) -> np.ndarray:
        """True positions at blocks ``0 .. steps-1``: ``(steps, 3)`` [m]."""
        t = np.arange(int(steps), dtype=np.float64) * self.dt
        if self.kind == "constant-velocity":
            xy = np.asarray(self.start)[None] + t[:, None] * np.asarray(self.velocity)[None]
        else:
            p = np.asarray(self.points)
            seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
            cum = np.concatenate([[0.0], np.cumsum(seg)])
            s = np.minimum(t * self.speed, cum[-1])
            xy = np.stack([np.interp(s, cum, p[:, 0]), np.interp(s, cum, p[:, 1])], -1)
        return np.concatenate([xy, np.full((len(t), 1), self.z)], -1)

    def velocities(self, steps: int) -> np.ndarray:
        """True velocities at blocks ``0 .. steps-1``: ``(steps, 2)`` [m/s] (waypoints: of the
        segment the target is on; zero once it has stopped)."""
        if self.kind == "constant-velocity":
            return np.tile(np.asarray(self.velocity), (int(steps), 1))
        p = np.asarray(self.points)
        seg = np.diff(p, axis=0)
        ln = np.linalg.norm(seg, axis=1)
        cum = np.concatenate([[0.0], np.cumsum(ln)])
        s = np.arange(int(steps)) * self.dt * self.speed
        out = np.zeros((int(steps), 2))
        for i, si in enumerate(s):
            if si >= cum[-1]:
                continue
            k = int(np.searchsorted(cum, si, side="right") - 1)
            out[i] = seg[k] / ln[k] * self.speed
        return out

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "dt": self.dt, "z": self.z}
        if self.kind == "constant-velocity":
            d.update(start=list(self.start), velocity=list(self.velocity),
                     speed=float(np.linalg.norm(self.velocity)))
        else:
            d.update(points=[list(p) for p in self.points], speed=self.speed)
        return d


def parse_waypoints(text: str) -> list[tuple[float, float]]:
    """``"x1,y1;x2,y2;..."`` -> list of (x, y) [m]. Raises InputError naming ``--waypoints``."""
    pts = []
    for i, item in enumerate(str(text).split(";")):
        item = item.strip()
        if not item:
            continue
        parts = item.split(",")
        if len(parts) != 2:
            raise InputError(f"--waypoints: waypoint {i + 1} must be 'x,y', got {item!r}")
        try:
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise InputError(f"--waypoints: waypoint {i + 1} must be two numbers 'x,y', got {item!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InputError(f"--waypoints: waypoint {i + 1} must be finite, got {item!r}")
        pts.append((x, y))
    if len(pts) < 2:
        raise InputError(f"--waypoints needs at least 2 waypoints 'x1,y1;x2,y2', got {text!r}")
    return pts


def default_trajectory(scenario, speed: float = DEFAULT_SPEED, dt: float = DEFAULT_DT) -> Trajectory:
    """The default straight line of the module docstring for a scenario with geometry."""
    if scenario.irs_pos is None or scenario.target_pos is None:
        raise InputError("the tracking loop needs a scenario with its geometry (irs_pos, target_pos)")
    speed = _positive("speed", speed)
    irs = np.asarray(scenario.irs_pos, dtype=np.float64)
    yaw = np.zeros(len(irs)) if scenario.irs_yaw is None else np.asarray(scenario.irs_yaw, dtype=np.float64)
    tgt = np.asarray(scenario.target_pos, dtype=np.float64)
    normal = np.stack([np.cos(yaw), np.sin(yaw)], -1).mean(0)
    spread = irs[-1, :2] - irs[0, :2]
    if np.linalg.norm(spread) < 1e-9:  # one IRS (or co-located): move across its normal
        spread = np.array([-normal[1], normal[0]])
    u = spread / np.linalg.norm(spread)
    nn = normal / max(np.linalg.norm(normal), 1e-12)
    d = u + DEFAULT_TILT * nn
    d = d / np.linalg.norm(d)
    v = speed * d
    start = tgt[:2] - v * DEFAULT_CENTRE_BLOCK * dt
    return Trajectory.constant_velocity(start, v, dt=dt, z=float(tgt[2]))

"""Geometry: IRS local frames, angles of a point seen from an IRS, path loss.

Conventions (docs/assumptions.md "Geometry and angles"): each IRS is a vertical plane; its frame is (h, v, n) with
h the horizontal array axis, v = +z the vertical array axis and n the outward normal.
An IRS with yaw ``gamma`` has ``n = (cos gamma, sin gamma, 0)`` and ``h = (-sin gamma, cos gamma, 0)``
(yaw 0: facing +x, horizontal axis along +y, as in the paper's scenario).
For a unit direction k from the IRS towards a point,
``cos(theta) = k.v`` (theta from the vertical axis) and ``sin(theta) cos(phi) = k.h``,
``sin(theta) sin(phi) = k.n`` (phi from the horizontal axis; phi in (0, pi) in front of the IRS).
"""
from __future__ import annotations

import math

import torch


def db_to_linear(x_db):
    """Power ratio from dB."""
    return 10.0 ** (x_db / 10.0)


def dbm_to_watt(x_dbm):
    """Power in W from dBm."""
    return 10.0 ** ((x_dbm - 30.0) / 10.0)


def irs_frames(yaw: torch.Tensor):
    """Local frame of IRSs with the given yaw [rad].

    Shapes: yaw ``(...)`` -> ``(h, v, n)``, each ``(..., 3)`` real unit vectors.
    """
    yaw = torch.as_tensor(yaw)
    c, s = torch.cos(yaw), torch.sin(yaw)
    z = torch.zeros_like(yaw)
    o = torch.ones_like(yaw)
    h = torch.stack([-s, c, z], dim=-1)
    v = torch.stack([z, z, o], dim=-1)
    n = torch.stack([c, s, z], dim=-1)
    return h, v, n


def direction_angles(origin: torch.Tensor, yaw: torch.Tensor, point: torch.Tensor):
    """Angles (theta, phi) [rad] of ``point`` seen from an IRS at ``origin`` with ``yaw``.

    Shapes: origin ``(..., 3)`` [m], yaw ``(...)`` [rad], point ``(..., 3)`` [m]
    -> ``(theta, phi, distance, front)`` each ``(...)``; ``front = k.n`` is the cosine between
    the direction and the IRS normal (> 0 in front of the IRS).
    """
    h, v, n = irs_frames(yaw)
    diff = point - origin
    dist = torch.linalg.vector_norm(diff, dim=-1)
    k = diff / dist.unsqueeze(-1)
    kh = (k * h).sum(-1)
    kv = (k * v).sum(-1)
    kn = (k * n).sum(-1)
    theta = torch.acos(kv.clamp(-1.0, 1.0))
    phi = torch.atan2(kn, kh)
    return theta, phi, dist, kn


def target_angles(irs_pos: torch.Tensor, irs_yaw: torch.Tensor, target_pos: torch.Tensor):
    """Target direction (theta_l, phi_l) seen from each IRS, and the IRS-target distance.

    Shapes: irs_pos ``(..., L, 3)``, irs_yaw ``(..., L)``, target_pos ``(..., 3)``
    -> ``(theta, phi, d, front)`` each ``(..., L)``.
    """
    return direction_angles(irs_pos, irs_yaw, target_pos.unsqueeze(-2))


def path_loss(d: torch.Tensor, C0_db: float = -30.0, alpha: float = 2.2) -> torch.Tensor:
    """Power path loss ``PL(d) = C0 (d / 1 m)^-alpha`` (linear, dimensionless). d in m."""
    return db_to_linear(C0_db) * torch.as_tensor(d) ** (-alpha)


def rad2deg(x):
    return x * (180.0 / math.pi)

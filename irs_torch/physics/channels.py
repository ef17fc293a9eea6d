"""Channels: Rician BS-IRS channels G_l and the target coefficient beta_l.

Randomness only through an explicit ``torch.Generator``.
"""
from __future__ import annotations

import math

import torch

from irs_torch.physics.geometry import db_to_linear, direction_angles, path_loss
from irs_torch.physics.steering import ula_steering, upa_steering


def _crandn(shape, generator, dtype=torch.float64):
    re = torch.randn(shape, generator=generator, dtype=dtype)
    im = torch.randn(shape, generator=generator, dtype=dtype)
    return torch.complex(re, im) / math.sqrt(2.0)


def rician_bs_irs_channel(bs_pos, irs_pos, irs_yaw, M: int, N_h: int, N_v: int, *,
                          d_bs: float = 0.5, d_h: float = 0.5, d_v: float = 0.5,
                          K_db: float = 5.0, C0_db: float = -30.0, alpha: float = 2.2,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Rician BS -> IRS channel ``G_l`` (N x M), eq. (5)'s G_l.

    ``G = sqrt(PL(d)) (sqrt(K/(K+1)) a_irs a_bs^T + sqrt(1/(K+1)) G_nlos)`` with ``G_nlos`` i.i.d.
    CN(0, 1), the BS ULA along +x (spacing ``d_bs`` wavelengths), ``a_irs`` the UPA response towards
    the BS. K in dB (paper: 5 dB).

    Shapes: bs_pos ``(3,)``, irs_pos ``(L, 3)``, irs_yaw ``(L,)`` -> ``(L, N, M)`` complex128.
    """
    bs_pos = torch.as_tensor(bs_pos, dtype=torch.float64)
    irs_pos = torch.as_tensor(irs_pos, dtype=torch.float64)
    irs_yaw = torch.as_tensor(irs_yaw, dtype=torch.float64)
    L = irs_pos.shape[0]
    N = N_h * N_v
    theta_b, phi_b, d, _ = direction_angles(irs_pos, irs_yaw, bs_pos.expand_as(irs_pos))
    a_irs = upa_steering(theta_b, phi_b, N_h, N_v, d_h, d_v)  # (L, N)
    k_bs = (irs_pos - bs_pos) / d.unsqueeze(-1)
    a_bs = ula_steering(k_bs[..., 0], M, d_bs)  # (L, M)
    K = db_to_linear(K_db)
    los = a_irs.unsqueeze(-1) * a_bs.unsqueeze(-2)
    nlos = _crandn((L, N, M), generator)
    pl = path_loss(d, C0_db, alpha).sqrt().view(L, 1, 1)
    return pl * (math.sqrt(K / (K + 1.0)) * los + math.sqrt(1.0 / (K + 1.0)) * nlos)


def target_coefficient(d_it, *, model: str = "pathloss", sigma_rcs: float = 1.0,
                       wavelength: float = 0.1, C0_db: float = -30.0, alpha: float = 2.2,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Round-trip target coefficient beta_l with a uniform random phase.

    ``model='pathloss'`` (default, docs/assumptions.md "Defaults where the paper is silent"): ``|beta|^2 = sigma_rcs *
    PL(d)^2``.
    ``model='radar'``: ``|beta|^2 = lambda^2 sigma_rcs / ((4 pi)^3 d^4)``.

    Shapes: d_it ``(L,)`` [m] -> ``(L,)`` complex128.
    """
    d_it = torch.as_tensor(d_it, dtype=torch.float64)
    if model == "pathloss":
        mag2 = sigma_rcs * path_loss(d_it, C0_db, alpha) ** 2
    elif model == "radar":
        mag2 = wavelength ** 2 * sigma_rcs / ((4 * math.pi) ** 3 * d_it ** 4)
    else:
        raise ValueError(f"beta_model must be 'pathloss' or 'radar', got {model!r}")
    phase = 2 * math.pi * torch.rand(d_it.shape, generator=generator, dtype=torch.float64)
    return torch.polar(mag2.sqrt(), phase)

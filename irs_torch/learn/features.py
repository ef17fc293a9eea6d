"""Normalised network inputs of a scenario (one model serves a whole geometry distribution).

Two kinds of per-IRS features (the network's per-IRS encoder is shared across IRSs); both start
with the same scalar and angle columns:

====================  =========  ==============================================================
block                 width      content
====================  =========  ==============================================================
scalars               2          log10 of the BS->IRS channel power ``||G_l||_F^2 / (N M)`` and of
                                 ``|beta_l|^2`` (path loss of both hops; standardised by the net)
angles                4          cos/sin of theta_l and phi_l
====================  =========  ==============================================================

``kind="gram"`` (default): the Gram matrix of the channel in the aligned frame,
``K = H H^H / mean(diag(H H^H))`` with ``H = diag(r_l * a) G_l`` (``a = a(theta_l, phi_l)``,
``r_l`` the aligned reflection of :func:`~irs_torch.learn.feasibility.aligned_reference`): its
diagonal (N) and the real and imaginary parts of its strict upper triangle (N(N-1)); width
``6 + N^2``. Why: the problem is invariant to a unitary change of the BS basis, ``G -> G U``
(the optimal ``R_s`` becomes ``U^T R_s U^*``, psi and the CRB stay), so the reflection design
depends on G only through ``G G^H``; and rotating the channel of element n by a phase rotates the
optimal ``psi_n`` back, which the aligned frame removes. The network then sees only what matters,
and its transmit output, expressed on the echo basis ``X^*`` (covariant under ``G -> G U``), follows.

``kind="raw"``: the steering vector (2N), the aligned echo vector ``u_ref = G^T (r * a) / ||.||``
(2M) and ``G_l / rms(G_l)`` (2NM) as real pairs; width ``6 + 2N + 2M + 2NM``.

Global (per instance): log10 of P_t, P_s, a_max [W, W, linear], sigma_r2, sigma_b2 [W] and T_L
[symbols] (standardised by the net with statistics fitted on training data). Complex numbers are
real pairs; channel magnitudes enter only through the logs, so features are O(1) whatever the
geometry. ``beta``'s phase is not a feature: the CRB does not depend on it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from irs_torch.physics.steering import upa_steering
from irs_torch.scenario import Scenario

N_IRS_SCALARS = 2
GLOBAL_NAMES = ("log10_P_t", "log10_P_s", "log10_a_max", "log10_sigma_r2", "log10_sigma_b2", "log10_T_L")
N_GLOBAL = len(GLOBAL_NAMES)
_LOG_FLOOR = 1e-30  # sigma_r2 may be 0 (ideal IRS)


FEATURE_KINDS = ("gram", "raw")


def per_irs_width(M: int, N: int, kind: str = "gram") -> int:
    """Width of the per-IRS feature vector for M BS antennas and N IRS elements."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {FEATURE_KINDS}, got {kind!r}")
    if kind == "gram":
        return N_IRS_SCALARS + 4 + N * N
    return N_IRS_SCALARS + 4 + 2 * N + 2 * M + 2 * N * M


class Features(NamedTuple):
    """``per_irs`` ``(..., L, per_irs_width(M, N))`` and ``glob`` ``(..., N_GLOBAL)`` real tensors
    (float64; the first ``N_IRS_SCALARS`` per-IRS columns and all global columns are raw logs to be
    standardised)."""

    per_irs: torch.Tensor
    glob: torch.Tensor


def _ri(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z.real, z.imag], dim=-1)


def _log10(x, dtype, shape, device=None):
    t = torch.as_tensor(x, dtype=dtype, device=device)
    return torch.log10(torch.clamp(t, min=_LOG_FLOOR)).expand(shape)


def scenario_features(scenario: Scenario, reference: torch.Tensor | None = None, kind: str = "gram") -> Features:
    """Features of a (batched) scenario; see the module docstring.

    Shapes: scenario batch ``(...)`` -> :class:`Features` with ``per_irs`` ``(..., L, F)`` and
    ``glob`` ``(..., 6)``, float64. ``reference``: the aligned phases ``(..., L, N)`` if already
    computed (else computed here). ``kind``: "gram" or "raw" (module docstring).
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {FEATURE_KINDS}, got {kind!r}")
    from irs_torch.learn.feasibility import aligned_reference

    s = scenario.to(torch.complex128)
    G = s.G
    L, N, M = s.L, s.N, s.M
    bshape = tuple(s.batch_shape)
    with torch.no_grad():
        gpow = (G.abs() ** 2).mean(dim=(-2, -1))  # (..., L)
        Gn = G / gpow.sqrt()[..., None, None]
        b2 = s.beta.abs() ** 2
        scal = torch.stack([torch.log10(gpow), torch.log10(b2)], dim=-1)
        ang = torch.stack([torch.cos(s.theta), torch.sin(s.theta), torch.cos(s.phi), torch.sin(s.phi)], -1)
        a = upa_steering(s.theta, s.phi, s.N_h, s.N_v, s.d_h, s.d_v).to(G.dtype)  # (..., L, N)
        r = aligned_reference(s) if reference is None else reference.to(G.dtype)
        if kind == "gram":
            H = (r * a).unsqueeze(-1) * G  # (..., L, N, M), rows rotated into the aligned frame
            K = H @ H.conj().transpose(-1, -2)
            K = K / torch.diagonal(K, dim1=-2, dim2=-1).real.mean(-1)[..., None, None]
            iu = torch.triu_indices(N, N, offset=1, device=G.device)
            off = K[..., iu[0], iu[1]]
            per = torch.cat([scal, ang, torch.diagonal(K, dim1=-2, dim2=-1).real, off.real, off.imag], dim=-1)
        else:
            u = (G.transpose(-1, -2) @ (r * a).unsqueeze(-1)).squeeze(-1)  # (..., L, M)
            u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(1e-300)
            per = torch.cat([scal, ang, _ri(a), _ri(u) * math.sqrt(M),
                             _ri(Gn.reshape(bshape + (L, N * M)))], dim=-1)
        dev = per.device  # budgets may be Python floats (CPU); the features live with the channels
        gl = torch.stack([
            _log10(s.P_t, torch.float64, bshape, dev),
            _log10(s.P_s, torch.float64, bshape, dev),
            _log10(s.a_max, torch.float64, bshape, dev),
            _log10(s.sigma_r2, torch.float64, bshape, dev),
            _log10(s.sigma_b2, torch.float64, bshape, dev),
            _log10(s.T_L, torch.float64, bshape, dev),
        ], dim=-1)
    return Features(per_irs=per, glob=gl)

"""Feasibility layer: any network output -> a design (R_s, psi) meeting every constraint of (P1).

The constraints of problem (P1) (paper eqs. (17a)-(17d)) are met *by construction*, for any
finite input, with a small relative safety factor ``safety`` (default 1e-9) so that rounding
never tips a constraint over:

- (17c) PSD: ``R_s,l = P_l * A_l / tr(A_l)`` with ``A_l = F_l F_l^H + ridge tr(F_l F_l^H) I / M``
  (Gram matrix of the transmit factor ``F_l`` plus a tiny relative ridge; ``F_l = 0`` gives
  ``A_l = I / M``, isotropic).
- (17b) BS budget (average over slots): the slot powers are ``P_l = L rho P_t softmax(omega)_l
  (1 - safety)``, so ``(1/L) sum_l tr(R_s,l) = rho P_t (1 - safety) <= P_t``; ``rho`` in (0, 1]
  is the used fraction of the budget (``sigmoid`` of a network logit, or 1).
- (17d) amplitude: ``psi0_n = a_max (eps + (1 - eps) tanh|z_n|) e^{j arg z_n} e^{j arg r_n}``
  has ``|psi0_n| <= a_max``; ``r`` is an optional reference phase vector (the "aligned" design,
  see :func:`aligned_reference`) so that the network predicts a correction to a physically
  sensible reflection. ``eps`` keeps psi away from 0 (a zero psi has an infinite CRB).
- (17a) C1: ``C1(s psi0) = s^4 P4 + s^2 P2`` (:func:`irs_torch.crb.irs_power_coefficients`); the
  largest feasible scale ``s_max`` is closed form (:func:`irs_torch.crb.c1_max_scale`) and
  ``psi = min(1, s_max) (1 - safety) psi0`` (``c1_mode="cap"``: the network chooses the amplitude
  level below the C1 limit) or ``psi = min(s_max, a_max / max|psi0|) (1 - safety) psi0``
  (``c1_mode="max"``: always the largest feasible amplitude). ``c1_mode="power"`` meets C1 by
  lowering the slot's BS power instead: C1 is affine in R_s, ``C1(t R) = t P_sig + P_noise``, so
  ``R_s,l <- t R_s,l`` with ``t = min(1, ((1 - safety) P_s - P_noise) / P_sig)`` (at least
  ``MIN_POWER_FRACTION``), then the "cap" scaling of psi for what remains (only when the IRS
  noise alone exceeds P_s). Why: with the echo's noise dominated by the BS receiver, the echo
  SNR grows like ``s^4 t`` in the psi scale s and power scale t while C1 grows like ``s^2 t``, so at a
  binding C1 the best design keeps |psi| at a_max and lowers the BS power; the solver's labels
  have |psi_n| = a_max on nearly every element and C1 binding.

Every step is differentiable (``s_max`` is a smooth function of ``(R_s, psi0)`` where C1 binds).
A passive scenario (``scenario.active`` False) gets unit-modulus ``psi = e^{j arg z}`` and no C1.

Transmit basis (``echo_basis``). The CRB depends on ``R_s,l`` only through the 3x3 Gram matrix
``X^T R_s,l X^*`` of the echo vectors ``X = [u, u_theta, u_phi]`` (see :mod:`irs_torch.crb`), so
the useful part of ``R_s,l`` lies in ``span(X^*)``. With ``V_l`` given, the transmit factor is
``W_l + Xn_l^* V_l`` with ``Xn`` the column-normalised ``X(psi0)`` (``X`` is linear in psi, so
the C1 rescaling does not change its span): the network can beam at the echo directions without
having to multiply channels by reflection vectors itself.

NaN or inf in a network output raise ``ValueError`` naming the output (a silent repair would hide
a diverged model).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from irs_torch import crb as crb_model
from irs_torch.scenario import Scenario

C1_MODES = ("cap", "max", "power")

#: Smallest fraction of a slot's power that ``c1_mode="power"`` keeps (below it, psi is scaled).
MIN_POWER_FRACTION = 1e-6


@dataclass(frozen=True)
class FeasibleDesign:
    """Output of :func:`feasible_design`. Shapes: R_s ``(..., L, M, M)``, psi ``(..., L, N)``
    complex (the scenario's dtype); rho ``(...)`` used BS-budget fraction; c1_scale ``(..., L)`` the
    applied real C1 scale s (1 where C1 does not bind in ``cap`` mode)."""

    R_s: torch.Tensor
    psi: torch.Tensor
    rho: torch.Tensor
    c1_scale: torch.Tensor


def _check_finite(name, t):
    if t is not None and not torch.isfinite(t).all():
        raise ValueError(f"feasibility layer: network output {name} contains NaN or inf values "
                         f"(shape {tuple(t.shape)}); the model has diverged or the input is invalid")


def aligned_reference(scenario: Scenario) -> torch.Tensor:
    """Unit-modulus "aligned" reflection phases ``r_l,n = e^{-j arg(a_n [G_l v_l]_n)}``.

    ``v_l`` is the principal right singular vector of ``G_l`` (the BS beam delivering the most power
    to IRS l) and ``a = a(theta_l, phi_l)`` the IRS steering vector towards the target (eq. (1)), so
    ``r`` co-phases the BS -> IRS -> target cascade (classic reflect beamforming). The arbitrary
    phase of ``v_l`` only rotates ``r`` by a common phase, to which the CRB is invariant
    (docs/assumptions.md "Modelling facts"). Not differentiated (a function of the scenario only).

    Shapes: scenario batch ``(...)`` -> ``(..., L, N)`` complex (scenario dtype).
    """
    from irs_torch.physics.steering import cophasing_psi

    with torch.no_grad():
        _, _, Vh = torch.linalg.svd(scenario.G, full_matrices=False)
        return cophasing_psi(scenario, Vh[..., 0, :].conj())  # v_l: (..., L, M)


def amplitude_map(z: torch.Tensor, a_max, eps: float = 1e-3) -> torch.Tensor:
    """``a_max (eps + (1 - eps) tanh|z|) z / |z|`` (``z = 0`` -> ``a_max eps``), ``|.| <= a_max``.

    Shapes: z ``(..., L, N)`` complex, a_max broadcastable to ``(..., L, 1)`` -> ``(..., L, N)``.
    """
    r = z.abs()
    pos = r > 0
    rs = torch.where(pos, r, torch.ones_like(r))
    unit = torch.where(pos, z / rs, torch.ones_like(z))
    amp = eps + (1.0 - eps) * torch.tanh(r)
    return (a_max * amp) * unit


def feasible_design(scenario: Scenario, W: torch.Tensor | None, z: torch.Tensor, *,
                    V: torch.Tensor | None = None, omega: torch.Tensor | None = None,
                    rho_logit: torch.Tensor | None = None, reference: torch.Tensor | None = None,
                    c1_mode: str = "cap", safety: float = 1e-9, ridge: float = 1e-6,
                    amp_eps: float = 1e-3) -> FeasibleDesign:
    """Map raw network outputs to a feasible design (see the module docstring).

    Shapes (``...`` = the scenario's batch shape): W ``(..., L, M, r)`` complex free transmit factors
    (or None: transmit on the echo basis only, then V is required);
    z ``(..., L, N)`` complex reflection pre-activations; V ``(..., L, 3, r)`` complex coefficients
    on the echo basis (optional); omega ``(..., L)`` real slot-power logits (optional: equal slots);
    rho_logit ``(...)`` real BS-budget logit (optional: full budget); reference ``(..., L, N)``
    unit-modulus phases multiplying psi (optional). The computation runs in the scenario's
    complex dtype; outputs of another dtype are cast.
    """
    if c1_mode not in C1_MODES:
        raise ValueError(f"c1_mode must be one of {C1_MODES}, got {c1_mode!r}")
    if not 0.0 <= safety < 1.0:
        raise ValueError(f"safety must be in [0, 1), got {safety}")
    L, N, M = scenario.L, scenario.N, scenario.M
    bshape = tuple(scenario.batch_shape)
    cdt = scenario.G.dtype
    rdt = scenario.real_dtype
    for name, t, tail in (("W", W, (L, M)), ("z", z, (L, N)), ("V", V, (L, 3)),
                          ("omega", omega, (L,)), ("rho_logit", rho_logit, ())):
        if t is None:
            continue
        got = tuple(t.shape)
        ok = (got[:len(bshape) + len(tail)] == bshape + tail) if name in ("W", "V") else got == bshape + tail
        if not ok or (name in ("W", "V") and t.dim() != len(bshape) + len(tail) + 1):
            want = bshape + tail + (("r",) if name in ("W", "V") else ())
            raise ValueError(f"feasibility layer: {name} must have shape {want}, got {got}")
        _check_finite(name, t)
    if W is None and V is None:
        raise ValueError("feasibility layer: give W (free transmit factors) or V (echo-basis coefficients)")
    z = z.to(cdt)

    # ---- psi0: amplitude limit (17d) and reference phases
    a_max = scenario.budget_broadcast("a_max").unsqueeze(-1)  # (..., 1, 1) or scalar
    if scenario.active:
        psi0 = amplitude_map(z, a_max, amp_eps)
    else:
        r = z.abs()
        psi0 = torch.where(r > 0, z / torch.where(r > 0, r, torch.ones_like(r)), torch.ones_like(z))
    if reference is not None:
        psi0 = psi0 * reference.to(cdt)

    # ---- transmit factors, optionally on the echo basis of psi0
    F = None if W is None else W.to(cdt)
    if V is not None:
        X = crb_model.echo_vectors(scenario.G, psi0, scenario.theta, scenario.phi, scenario.N_h,
                              scenario.N_v, scenario.d_h, scenario.d_v)  # (..., L, M, 3)
        nrm = torch.linalg.vector_norm(X, dim=-2, keepdim=True)
        Xn = X / torch.where(nrm > 0, nrm, torch.ones_like(nrm))
        E = Xn.conj() @ V.to(cdt)
        F = E if F is None else F + E
    # Guard against overflow: a common positive scale of F per slot does not change R/tr(R).
    fmax = F.abs().amax(dim=(-2, -1), keepdim=True)
    F = F / torch.where(fmax > 0, fmax, torch.ones_like(fmax)).detach()
    eye = torch.eye(M, dtype=cdt, device=F.device)
    A = F @ F.conj().transpose(-1, -2)
    trA = torch.diagonal(A, dim1=-2, dim2=-1).real.sum(-1)  # (..., L)
    # Scale-invariant ridge (so the detached max-abs normalisation above is exact); F = 0 -> A = I / M.
    A = A + ((ridge * trA + (trA == 0).to(trA.dtype)) / M)[..., None, None].to(cdt) * eye
    A = 0.5 * (A + A.conj().transpose(-1, -2))
    trA = torch.diagonal(A, dim1=-2, dim2=-1).real.sum(-1)
    # ---- slot powers (17b)
    P_t = scenario.budget("P_t")
    if omega is None:
        share = torch.full(bshape + (L,), 1.0 / L, dtype=rdt, device=F.device)
    else:
        share = torch.softmax(omega.to(rdt), dim=-1)
    rho = torch.ones(bshape, dtype=rdt, device=F.device) if rho_logit is None else torch.sigmoid(rho_logit.to(rdt))
    P_slot = (L * (1.0 - safety)) * (rho * P_t).unsqueeze(-1) * share  # (..., L)
    R = A * (P_slot / trA)[..., None, None].to(cdt)

    # ---- C1 (17a) by a closed-form real scale of psi
    if not scenario.active:
        return FeasibleDesign(R_s=R, psi=psi0, rho=rho, c1_scale=torch.ones(bshape + (L,), dtype=rdt))
    t1, t2, t3, t4 = crb_model.irs_power_terms(scenario.G, psi0, R, scenario.theta, scenario.phi, scenario.beta,
                                          scenario.budget_broadcast("sigma_r2"), scenario.N_h, scenario.N_v,
                                          scenario.d_h, scenario.d_v)
    P4, P2 = t1 + t2, t3 + t4
    if c1_mode == "power":
        # C1 is affine in R_s: C1(t R) = t (P_sig) + P_noise. Lower the slot power to meet it and
        # keep psi's amplitude (with sigma_r2 << the echo power, SNR ~ s^2 at fixed C1: see the module doc).
        P_s_l = scenario.budget_broadcast("P_s")
        noise = t2 + t4
        sig = t1 + t3
        room = (1.0 - safety) * P_s_l - noise
        t = torch.where(sig > 0, room / torch.where(sig > 0, sig, torch.ones_like(sig)), torch.ones_like(sig))
        t = t.clamp(min=MIN_POWER_FRACTION, max=1.0)
        R = R * t[..., None, None].to(cdt)
        P4, P2 = t2 + t1 * t, t4 + t3 * t
    s_max = crb_model.c1_max_scale(P4, P2, scenario.budget_broadcast("P_s"))
    if c1_mode in ("cap", "power"):
        s = torch.clamp(s_max, max=1.0)
    else:
        amax_psi = psi0.abs().amax(-1)
        s = torch.minimum(s_max, scenario.budget_broadcast("a_max") / amax_psi)
    s = s * (1.0 - safety)
    psi = psi0 * s.unsqueeze(-1).to(cdt)
    return FeasibleDesign(R_s=R, psi=psi, rho=rho, c1_scale=s)

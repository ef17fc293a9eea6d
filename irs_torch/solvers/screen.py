"""The joint first-order screen of starting points (:func:`joint_first_order`): Adam on the differentiable
torch CRB over (R_s, psi) jointly, batched over starts, in a parameterisation that is feasible by construction
(:class:`ScreenParams`, :func:`encode_start`, :func:`decode_design`: the BS budget by a softmax/sigmoid split of
``L P_t``, PSD as ``B B^H``, C1 and a_max by the closed-form largest scale of psi).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from irs_torch.scenario import Scenario


# ----------------------------------------------------------------------------- the joint screen
def _sqrt_psd(R):
    lam, V = torch.linalg.eigh(0.5 * (R + R.conj().transpose(-1, -2)))
    return V * lam.clamp(min=0).sqrt().to(R.dtype).unsqueeze(-2)


@dataclass
class ScreenParams:
    """The free (unconstrained) Adam parameters of a batch of S designs in the screens'
    feasible-by-construction parameterisation (:func:`encode_start`, :func:`decode_design`), all
    real float64 leaf tensors with ``requires_grad``:

    - ``Br`` ``(S, L, M, M, 2)``: ``view_as_real`` of B_l, the PSD square root of R_l scaled to unit
      Frobenius norm (so Adam's learning rate is relative), ``R_l ~ B_l B_l^H``;
    - ``u`` ``(S, L)``: log of the slots' shares of the used BS power (softmax logits);
    - ``v`` ``(S, L)``: logit of the used fraction of the average BS budget ``L P_t``;
    - ``rho`` ``(S, L, N)``: logit of the IRS amplitudes relative to each slot's largest;
    - ``ph`` ``(S, L, N)``: IRS phases [rad].
    """

    Br: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    rho: torch.Tensor
    ph: torch.Tensor

    def trainable(self, active: bool) -> list[torch.Tensor]:
        """The tensors to optimise: all but ``rho`` for a passive IRS (unit modulus)."""
        return [self.Br, self.u, self.v, self.ph] + ([self.rho] if active else [])


def encode_start(scenario: Scenario, R0: torch.Tensor, psi0: torch.Tensor) -> ScreenParams:
    """Encode starts ``(R0, psi0)`` into free :class:`ScreenParams` (inverse of :func:`decode_design`
    up to psi's feasibility scale and the clamps: used budget fraction in [1e-6, 0.98], relative
    amplitudes in [1e-3, 1 - 1e-3]). Only ``scenario.L`` and ``scenario.P_t`` [W] are used.

    Shapes: R0 ``(S, L, M, M)`` complex [W], psi0 ``(S, L, N)`` complex (taken as given: the caller
    makes it feasible first if it wants to). The BS budget is spread over the slots in proportion
    to ``tr R0_l``."""
    L, P_t = scenario.L, float(scenario.P_t)
    B = _sqrt_psd(R0)
    B = B / torch.linalg.matrix_norm(B).clamp(min=1e-300)[..., None, None]  # unit Frobenius norm: Adam's lr is relative
    tr = torch.diagonal(R0, dim1=-2, dim2=-1).real.sum(-1).clamp(min=1e-300)  # (S, L)
    frac = (tr.sum(-1, keepdim=True) / (L * P_t)).clamp(1e-6, 0.98).expand_as(tr)
    amp = (psi0.abs() / psi0.abs().amax(-1, keepdim=True).clamp(min=1e-300)).clamp(1e-3, 1 - 1e-3)
    return ScreenParams(
        Br=torch.view_as_real(B).clone().requires_grad_(True),
        u=torch.log(tr / tr.sum(-1, keepdim=True)).clone().requires_grad_(True),
        v=torch.log(frac / (1 - frac)).clone().requires_grad_(True),
        rho=torch.log(amp / (1 - amp)).clone().requires_grad_(True),
        ph=torch.angle(psi0).clone().requires_grad_(True),
    )


def decode_design(scenario: Scenario, params: ScreenParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode :class:`ScreenParams` into ``(R, psi_raw)`` (differentiable):
    ``R_l = L P_t softmax(u)_l sigmoid(v) B_l B_l^H / tr(B_l B_l^H)`` (PSD, average BS budget (6) met)
    and ``psi_raw_l = sigmoid(rho_l) exp(j ph_l)`` (passive scenario: ``exp(j ph_l)``), in
    ``scenario.G.dtype``. psi_raw is not yet scaled to meet C1 (7) and a_max: the caller applies its
    closed-form largest scale (:meth:`Scenario.scale_psi_to_feasible`, or over a region's candidates).

    Shapes: ``R (S, L, M, M)`` [W], ``psi_raw (S, L, N)``."""
    cdt, L, P_t = scenario.G.dtype, scenario.L, float(scenario.P_t)
    Bc = torch.view_as_complex(params.Br)
    G = Bc @ Bc.conj().transpose(-1, -2)
    trg = torch.diagonal(G, dim1=-2, dim2=-1).real.sum(-1).clamp(min=1e-300)
    p = L * P_t * torch.softmax(params.u, -1) * torch.sigmoid(params.v)
    R = G * (p / trg).to(cdt)[..., None, None]
    amp = torch.sigmoid(params.rho) if scenario.active else torch.ones_like(params.ph)
    return R, torch.polar(amp, params.ph).to(cdt)


def joint_first_order(scenario: Scenario, R0: torch.Tensor, psi0: torch.Tensor, *, steps: int = 150,
                      lr: float = 0.05, smooth: float = 20.0, decay: float = 1.0, patience: int = 0):
    """Adam on the smoothed max-CRB over ``(R_s, psi)`` jointly, batched over S starts.

    Parameterisation (feasible by construction, so every iterate is a valid design; :func:`encode_start`,
    :func:`decode_design`):
    ``R_l = L P_t softmax(u)_l sigmoid(v_l) B_l B_l^H / tr(B_l B_l^H)`` (average BS budget (6)),
    ``psi_l = scale(sigmoid(rho_l) exp(j ph_l))`` with the closed-form largest real scale meeting C1 (7)
    and a_max (:meth:`Scenario.scale_psi_to_feasible`). Loss: ``logsumexp(smooth * log c_l) / smooth``
    (a smooth max of log tr(F_l^-1)); learning rate ``lr`` annealed (cosine) to ``lr * decay``;
    ``patience`` > 0: stop early when the best start's max-CRB improved by < 0.1% over that many steps.
    Passive scenarios: unit-modulus psi, no C1.

    Shapes: R0 ``(S, L, M, M)``, psi0 ``(S, L, N)`` -> ``(R (S, L, M, M), psi (S, L, N), max_crb (S,))``,
    the best iterate of each start (exactly re-scaled and evaluated; never worse than its start).
    """
    cdt = scenario.G.dtype
    R0 = R0.to(cdt)
    psi0 = scenario.scale_psi_to_feasible(R0, psi0.to(cdt))
    with torch.no_grad():
        c0 = scenario.crb(R0, psi0, validate=False).total.amax(-1)
    params = encode_start(scenario, R0, psi0)
    opt = torch.optim.Adam(params.trainable(scenario.active), lr=lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(int(steps), 1), eta_min=lr * decay)
             if decay < 1 else None)

    def make():
        R, psi = decode_design(scenario, params)
        return R, (scenario.scale_psi_to_feasible(R, psi) if scenario.active else psi)

    best_R, best_psi, best_c = R0, psi0, c0.clone()
    mark = float(c0.min())
    for it in range(steps):
        if patience and it and it % patience == 0:  # stop when the best start gained < 0.1% in `patience` steps
            now = float(best_c.min())
            if now > mark * (1 - 1e-3):
                break
            mark = now
        opt.zero_grad()
        R, psi = make()
        c = scenario.crb(R, psi, validate=False).total  # (S, L)
        ok = torch.isfinite(c).all(-1) & (c > 0).all(-1)
        with torch.no_grad():
            mx = torch.where(ok, c.amax(-1), torch.full_like(c[..., 0], float("inf")))
            imp = mx < best_c
            if imp.any():
                best_R = torch.where(imp[:, None, None, None], R.detach(), best_R)
                best_psi = torch.where(imp[:, None, None], psi.detach(), best_psi)
                best_c = torch.where(imp, mx, best_c)
        lc = torch.log(torch.where(torch.isfinite(c) & (c > 0), c, torch.ones_like(c)))
        loss = (torch.logsumexp(smooth * lc, -1) / smooth).sum()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    with torch.no_grad():
        if scenario.active:
            best_psi = scenario.scale_psi_to_feasible(best_R, best_psi)
        c = scenario.crb(best_R, best_psi, validate=False).total.amax(-1)
        c = torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf")))
    return best_R, best_psi, c

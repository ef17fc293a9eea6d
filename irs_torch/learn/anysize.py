"""One warm-start network for every array size: shared weights over BS antennas, IRS elements and IRSs.

:class:`AnySizeNet` maps a scenario of any sizes (M BS antennas, N_h x N_v IRS elements, L IRSs) to
K feasible designs with ONE set of weights, and returns their slot-by-slot combination
(:func:`~irs_torch.learn.nets.combine_slots`), like the per-size :class:`~irs_torch.learn.nets.WarmStartNet`.

Why it can share weights (the graph of the problem):

- BS antennas. The problem is invariant to a unitary change of the BS basis (``G -> G U``), so the
  reflection design depends on the channel only through the per-IRS Gram matrix
  ``K_l = H_l H_l^H`` (N x N, an inner product over the M antennas; ``H_l = diag(r_l a_l) G_l`` in
  the aligned frame, :mod:`irs_torch.learn.features` ``kind="gram"``), and every transmit output is
  formed through the channel (echo basis ``X^*`` and ``G^H B``): one layer serves every M, and the
  ULA's antenna positions act through ``G``'s columns, i.e. through K. ``log M`` is a size input.
- IRS elements. Each element is a node with its position on the UPA (centred, in wavelengths), its
  phase-gradient profiles ``zeta_theta, zeta_phi`` (eqs. (26)-(27): the geometry of the angle
  derivatives) and ``K_nn``; a layer is ``h <- h + modReLU(h A + sum_k K^*/N (zeta_k * h) B_k + c_l)``
  with complex ``A, B_k`` shared over elements (a learned unrolled gradient/power iteration in the
  physics' own operators; :class:`~irs_torch.learn.nets.ElementGNN` uses the same layer for one size).
- IRSs. Each IRS's context ``e_l`` (path losses, angles, budgets, sizes) is mixed with the mean and
  the max over the IRSs (two DeepSets rounds), so permuting the IRSs permutes every output.

Outputs per hypothesis k and IRS l: the reflection pre-activation ``z_l = exp(c_k + u_l)`` (N, aligned
frame; ``c_k`` a hypothesis-specific log-amplitude level, Re u the log-amplitude and Im u the phase
corrections per element), echo-basis coefficients ``V_l`` (3 x r), free
transmit factors ``B_l`` (N x r, element basis, mapped to the BS by
:func:`~irs_torch.learn.nets.channel_transmit`), the slot-power logit ``omega_l``; per instance the
BS-budget logit. :func:`~irs_torch.learn.feasibility.feasible_design` turns them into designs that
meet every constraint of (P1), so every output is feasible at every size.

Mixed sizes: a batched :class:`~irs_torch.Scenario` has one size; :func:`predict_many` buckets a
list of scenarios by size, runs each bucket and returns the designs in input order.

Training is unsupervised on the differentiable CRB (``scripts/train_anysize.py``): no solver labels,
so every size is affordable. Model files: :func:`save_model` writes ``<stem>.pt`` (weights-only
loadable: tensors, numbers, strings) and the sidecar ``<stem>.json`` (format
:data:`SIDECAR_FORMAT`, with the training size ranges); :func:`load_model` loads weights-only.
Outside its size ranges the network warns and still predicts (its designs stay feasible).
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from irs_torch import crb as crb_model
from irs_torch.learn.feasibility import C1_MODES, FeasibleDesign, feasible_design
from irs_torch.learn.features import N_GLOBAL, N_IRS_SCALARS, Features, scenario_features
from irs_torch.learn.nets import CLinear, ModReLU, channel_transmit, combine_slots, expand_scenario, mlp
from irs_torch.learn.safe_load import read_checkpoint
from irs_torch.scenario import Scenario

MODEL_FORMAT = "irs-torch/warm-start-anysize-model"
SIDECAR_FORMAT = "irs-torch/warm-start-anysize-info"
SIZE_KEYS = ("M", "N_h", "N_v", "L")
#: The training ranges of the shipped model (inclusive); recorded in every model file and sidecar.
DEFAULT_SIZE_RANGES = {"M": [4, 64], "N_h": [2, 12], "N_v": [2, 12], "L": [1, 4]}
N_SIZE = 4  # size inputs: log M, log N, L, log(N_h / N_v)
NET_KEYS = ("hidden", "channels", "layers", "rank", "hypotheses", "c1_mode", "size_ranges", "balance")




def balance_slot_powers(scenario: Scenario, d: FeasibleDesign, crb_total: torch.Tensor, safety: float = 1e-9):
    """The slot powers that minimise the max-CRB for the design's beam shapes and reflections (closed form).

    For fixed psi_l and beam shape, the FIM is linear in R_s,l (the echo noise depends on psi only) and C1 is
    affine in it, so slot l at power ``p_l`` has ``CRB_l = e_l / p_l`` (``e_l = CRB_l p_l`` of the given design)
    and meets C1 up to ``u_l = t_l p_l`` with ``t_l = ((1 - safety) P_s - noise_l) / signal_l`` (the two
    R-dependent and R-independent terms of eq. (7)). Minimising ``max_l e_l / p_l`` subject to
    ``sum_l p_l <= L P_t`` (17b) and ``p_l <= u_l`` (17a) is water-filling: ``p_l = min(e_l / m, u_l)`` with
    ``m`` such that the budget is used (or every slot at its C1 limit). Never worse than the given powers
    (they are feasible for the problem it solves exactly). Differentiable. Shapes: the design's batch
    ``(...)``, crb_total ``(..., L)``; returns ``(FeasibleDesign, crb (..., L))``."""
    L = scenario.L
    rdt = crb_total.dtype
    p = torch.diagonal(d.R_s, dim1=-2, dim2=-1).real.sum(-1).to(rdt)  # (..., L)
    ok = torch.isfinite(crb_total).all(-1, keepdim=True) & (p > 0).all(-1, keepdim=True)
    e = crb_total * p
    t1, t2, t3, t4 = crb_model.irs_power_terms(scenario.G, d.psi, d.R_s, scenario.theta, scenario.phi, scenario.beta,
                                               scenario.budget_broadcast("sigma_r2"), scenario.N_h, scenario.N_v,
                                               scenario.d_h, scenario.d_v)
    sig, noise = (t1 + t3).to(rdt), (t2 + t4).to(rdt)
    room = (1.0 - safety) * scenario.budget_broadcast("P_s").to(rdt) - noise
    tiny = torch.finfo(rdt).tiny
    # C1 power limit of each slot (..., L); a slot without an R-dependent IRS power gets a huge finite one
    tmax = torch.where(sig > 0, room / torch.where(sig > 0, sig, torch.ones_like(sig)), torch.full_like(sig, 1e12))
    u = torch.clamp(tmax, min=0.0, max=1e12) * p
    B = (L * (1.0 - safety)) * scenario.budget("P_t").to(rdt)
    B = B.unsqueeze(-1) if B.dim() else B  # (..., 1)
    sat = torch.zeros_like(p, dtype=torch.bool)
    for _ in range(L):  # the saturated set only grows; L rounds reach the fixed point
        free_e = torch.where(sat, torch.zeros_like(e), e).sum(-1, keepdim=True)
        left = B - torch.where(sat, u, torch.zeros_like(u)).sum(-1, keepdim=True)
        m = (free_e / left.clamp(min=tiny)).clamp(min=tiny)
        sat = sat | (e / m > u)
    p_new = torch.where(sat, u, e / m)
    p_new = torch.minimum(p_new, u)  # all saturated: every slot at its C1 limit (budget left unused)
    good = ok & (p_new > 0).all(-1, keepdim=True) & torch.isfinite(p_new).all(-1, keepdim=True)
    p_safe = torch.where(p > 0, p, torch.ones_like(p))
    p_new = torch.where(good, p_new, p_safe)
    scale = torch.where(good, p_new / p_safe, torch.ones_like(p))
    R = d.R_s * scale[..., None, None].to(d.R_s.dtype)
    c = torch.where(good, crb_total / scale, crb_total)
    used = (p * scale).sum(-1) / B.squeeze(-1) if B.dim() else (p * scale).sum(-1) / B
    return FeasibleDesign(R_s=R, psi=d.psi, rho=used.to(d.rho.dtype), c1_scale=d.c1_scale), c


def principal_reference(scenario: Scenario, iters: int = 12) -> torch.Tensor:
    """The aligned reflection phases of :func:`~irs_torch.learn.feasibility.aligned_reference` (co-phasing the
    principal right singular vector v_l of G_l), with v_l by ``iters`` power iterations on ``G_l^H G_l`` from
    the row sum of G_l instead of an SVD (a batched SVD is most of a small network's time). Where the top two
    singular values are close the two references may differ; the network uses this one throughout (features and
    outputs), so it is consistent. Shapes: ``(..., L, N)`` complex (the scenario's dtype). Not differentiated."""
    from irs_torch.physics.steering import cophasing_psi

    with torch.no_grad():
        G = scenario.G
        A = G.mH @ G  # (..., L, M, M)
        v = G.sum(-2).conj()  # (..., L, M)
        v = torch.where(torch.linalg.vector_norm(v, dim=-1, keepdim=True) > 0, v, torch.ones_like(v))
        for _ in range(iters):
            v = (A @ v.unsqueeze(-1)).squeeze(-1)
            v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp(min=torch.finfo(v.real.dtype).tiny)
        return cophasing_psi(scenario, v)


def _rms_normalise(h: torch.Tensor) -> torch.Tensor:
    """``h / rms(h)`` over the element and channel dims of each IRS (phases kept): the element features stay
    O(1) through the layers at every N, so the readouts start near the aligned design."""
    ms = (h.real ** 2 + h.imag ** 2).mean(dim=(-2, -1), keepdim=True)
    return h * torch.rsqrt(ms + 1e-12)


def size_key(s: Scenario) -> tuple:
    """The bucket of a scenario: everything a batched Scenario must share (sizes, spacings, T_c, active)."""
    return (s.M, s.N_h, s.N_v, s.L, float(s.d_h), float(s.d_v), float(s.T_c), bool(s.active))


def _check_ranges(r) -> dict:
    if not isinstance(r, dict) or set(r) != set(SIZE_KEYS):
        raise ValueError(f"size_ranges must map {SIZE_KEYS} to [low, high], got {r!r}")
    out = {}
    for k in SIZE_KEYS:
        v = r[k]
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                     for x in v) and 1 <= v[0] <= v[1]):
            raise ValueError(f"size_ranges.{k} must be [low, high] integers with 1 <= low <= high, got {v!r}")
        out[k] = [int(v[0]), int(v[1])]
    return out


#: Element spacings [wavelengths] of every training scenario (the UPA positions are inputs, scaled by them).
TRAINED_SPACING = 0.5


def outside_ranges(scenario: Scenario, size_ranges: dict) -> list[str]:
    """The sizes of ``scenario`` outside ``size_ranges``, as ``"M=80 (trained 4..64)"`` strings, and element
    spacings d_h, d_v other than the trained :data:`TRAINED_SPACING` (``"d_h=0.25 (trained 0.5)"``)."""
    out = [f"{k}={getattr(scenario, k)} (trained {lo}..{hi})" for k, (lo, hi) in size_ranges.items()
           if not lo <= getattr(scenario, k) <= hi]
    return out + [f"{k}={float(getattr(scenario, k)):g} (trained {TRAINED_SPACING:g})" for k in ("d_h", "d_v")
                  if float(getattr(scenario, k)) != TRAINED_SPACING]


class AnySizeNet(nn.Module):
    """Scenario of any size -> K raw outputs -> feasible designs -> their slot-by-slot combination.

    Args: hidden (width of the IRS-level MLPs), channels (complex element channels C), layers (element
    message-passing layers), rank r (transmit factors per slot), hypotheses K, c1_mode (of
    :func:`~irs_torch.learn.feasibility.feasible_design`), size_ranges (the training ranges; sizes
    outside them warn), balance (re-split the BS power over the slots by :func:`balance_slot_powers`, exact for
    the predicted beams and reflections). Parameters float32; the physics runs in the scenario's dtype.
    """

    def __init__(self, hidden: int = 64, channels: int = 32, layers: int = 4, rank: int = 2, hypotheses: int = 4,
                 c1_mode: str = "power", size_ranges: dict | None = None, balance: bool = True):
        super().__init__()
        for name, v in (("hidden", hidden), ("channels", channels), ("layers", layers), ("rank", rank),
                        ("hypotheses", hypotheses)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if c1_mode not in C1_MODES:
            raise ValueError(f"c1_mode must be one of {C1_MODES}, got {c1_mode!r}")
        self.hidden, self.channels, self.layers, self.rank = hidden, channels, layers, rank
        self.hypotheses, self.c1_mode, self.balance = hypotheses, c1_mode, bool(balance)
        self.size_ranges = _check_ranges(size_ranges or DEFAULT_SIZE_RANGES)
        H, C, K = hidden, channels, hypotheses
        self.ctx_in = mlp(N_IRS_SCALARS + 4 + N_GLOBAL + N_SIZE, H, 1)
        self.ctx_mix = nn.ModuleList([mlp(3 * H, H, 1) for _ in range(2)])
        self.elem_in = nn.Linear(5 + H, C)
        self.self_w = nn.ModuleList([CLinear(C, C) for _ in range(layers)])
        self.msg_w = nn.ModuleList([nn.ModuleList([CLinear(C, C) for _ in range(3)]) for _ in range(layers)])
        self.bias = nn.ModuleList([nn.Linear(H, 2 * C) for _ in range(layers)])
        self.act = nn.ModuleList([ModReLU(C) for _ in range(layers)])
        self.z_out = CLinear(C, K, scale=0.1)
        self.b_out = CLinear(C, K * rank, scale=0.1)
        self.pool = mlp(2 * C + 2 * H, H, 1)
        self.v_out = nn.Linear(H, K * 2 * 3 * rank)
        self.omega_out = nn.Linear(H, K)
        self.rho_out = mlp(2 * H, max(H // 4, 1), 1, K)
        # Hypotheses start at different reflection amplitude levels (log |z|; tanh|z|: 0.995, 0.76, 0.46, 0.96, ...)
        # and BS budget fractions: different basins when C1 binds.
        levels = torch.tensor([3.0, 1.0, 0.5, 2.0, 1.5, 0.75, 2.5, 0.3]).log()
        self.z_level = nn.Parameter(levels.repeat(K // len(levels) + 1)[:K].clone())
        with torch.no_grad():
            self.v_out.weight.mul_(0.1)
            self.v_out.bias.zero_()
            self.v_out.bias.view(K, 2, 3, rank)[:, 0, 0, 0] = 1.0  # beam on u^*
            self.omega_out.weight.mul_(0.1)
            self.omega_out.bias.zero_()
            self.rho_out[-1].weight.mul_(0.1)
            rho0 = torch.tensor([4.0, 4.0, 1.0, 0.0, 4.0, 2.0, -1.0, 3.0])
            self.rho_out[-1].bias.copy_(rho0.repeat(K // len(rho0) + 1)[:K])
        # Feature standardisation of the log features (fitted on training data; stored in model files).
        self.register_buffer("irs_mean", torch.zeros(N_IRS_SCALARS))
        self.register_buffer("irs_std", torch.ones(N_IRS_SCALARS))
        self.register_buffer("glob_mean", torch.zeros(N_GLOBAL))
        self.register_buffer("glob_std", torch.ones(N_GLOBAL))
        self.hparams = {"active": True, **self.config()}
        self.meta: dict = {}
        self.source = "the any-size model"

    # ------------------------------------------------------------------ config / normaliser
    def config(self) -> dict:
        """Constructor arguments (JSON-like): ``AnySizeNet(**net.config())`` rebuilds the architecture."""
        return {"hidden": self.hidden, "channels": self.channels, "layers": self.layers, "rank": self.rank,
                "hypotheses": self.hypotheses, "c1_mode": self.c1_mode, "balance": self.balance,
                "size_ranges": {k: list(v) for k, v in self.size_ranges.items()}}

    def fit_normalizer(self, features: list[Features]):
        """Standardise the log features with statistics of ``features`` (a list, any sizes)."""
        p = torch.cat([f.per_irs[..., :N_IRS_SCALARS].reshape(-1, N_IRS_SCALARS) for f in features]).double()
        g = torch.cat([f.glob.reshape(-1, N_GLOBAL) for f in features]).double()
        for name, x in (("irs", p), ("glob", g)):
            mean = x.mean(0)
            std = x.std(0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(mean)
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    # ------------------------------------------------------------------ compatibility
    def check_scenario(self, scenario: Scenario):
        """Passive IRSs raise ValueError (trained for active ones); sizes outside the training ranges
        warn (the design stays feasible, its quality is untested there)."""
        if not scenario.active:
            raise ValueError("the any-size model was trained for active IRSs; the scenario is passive "
                             "(use method 'ao' or 'passive')")
        out = outside_ranges(scenario, self.size_ranges)
        if out:
            warnings.warn(f"{self.source}: the scenario lies outside the training ranges: {', '.join(out)}; "
                          f"the network still predicts a feasible design, but its quality there is untested "
                          f"(refinement helps)", stacklevel=3)

    # ------------------------------------------------------------------ forward
    def raw_outputs(self, scenario: Scenario, reference: torch.Tensor | None = None) -> dict:
        """Unconstrained outputs with a hypothesis dim K after the batch dims: z ``(..., K, L, N)``,
        V ``(..., K, L, 3, r)``, B ``(..., K, L, N, r)`` complex; omega ``(..., K, L)``, rho_logit
        ``(..., K)`` real (float32 unless the parameters are cast)."""
        s = scenario
        ref = principal_reference(s) if reference is None else reference
        f = scenario_features(s, ref, "gram")
        p0 = self.ctx_in[0].weight
        dt, dev = p0.dtype, p0.device
        N, L = s.N, s.L
        per = f.per_irs.to(dev)
        n0 = N_IRS_SCALARS + 4
        scal = ((per[..., :N_IRS_SCALARS] - self.irs_mean.to(per.dtype)) / self.irs_std.to(per.dtype)).to(dt)
        ang = per[..., N_IRS_SCALARS:n0].to(dt)
        diag = per[..., n0:n0 + N].to(dt)
        n_off = N * (N - 1) // 2
        off = torch.complex(per[..., n0 + N:n0 + N + n_off], per[..., n0 + N + n_off:n0 + N + 2 * n_off]).to(
            torch.complex64 if dt == torch.float32 else torch.complex128)
        iu = torch.triu_indices(N, N, offset=1, device=dev)
        Km = torch.zeros(per.shape[:-1] + (N, N), dtype=off.dtype, device=dev)
        Km[..., iu[0], iu[1]] = off
        Km = Km + Km.conj().transpose(-1, -2) + torch.diag_embed(diag.to(off.dtype))
        Kc = Km.conj() / N  # K^*, scaled so that a rank-one K has spectral norm ~1 at every N
        gl = ((f.glob.to(dev) - self.glob_mean.to(per.dtype)) / self.glob_std.to(per.dtype)).to(dt)
        sz = torch.tensor([math.log(s.M) / math.log(64.0), math.log(N) / math.log(144.0), L / 4.0,
                           math.log(s.N_h / s.N_v) / math.log(6.0)], dtype=dt, device=dev)
        gl = torch.cat([gl, sz.expand(gl.shape[:-1] + (N_SIZE,))], dim=-1)
        # element positions on the UPA (wavelengths, centred) and the phase-gradient profiles (eqs. (26)-(27))
        from irs_torch.physics.steering import element_indices

        hi, vi = element_indices(s.N_h, s.N_v, dtype=dt, device=dev)
        xh = float(s.d_h) * (hi - (s.N_h - 1) / 2)
        yv = float(s.d_v) * (vi - (s.N_v - 1) / 2)
        ap = float(s.d_h) * s.N_h + float(s.d_v) * s.N_v  # aperture scale: profiles are O(1) at every size
        ct, st, cp, sp = (ang[..., i].unsqueeze(-1) for i in range(4))
        zt = (ct * cp * xh - st * yv) / ap
        zp = (-st * sp * xh) / ap
        # IRS context, mixed over IRSs (DeepSets: mean and max; permutation-equivariant)
        g = gl.unsqueeze(-2).expand(scal.shape[:-1] + gl.shape[-1:])
        e = self.ctx_in(torch.cat([scal, ang, g], dim=-1))  # (..., L, H)
        for mix in self.ctx_mix:
            e = e + mix(torch.cat([e, e.mean(-2, keepdim=True).expand_as(e),
                                   e.amax(-2, keepdim=True).expand_as(e)], dim=-1))
        ef = torch.stack([zt, zp, diag, (2 * xh / ap).expand_as(zt), (2 * yv / ap).expand_as(zt)], dim=-1)
        h = self.elem_in(torch.cat([ef, e.unsqueeze(-2).expand(ef.shape[:-1] + e.shape[-1:])], dim=-1))
        h = torch.complex(h, torch.zeros_like(h))
        ztc, zpc = zt.unsqueeze(-1).to(h.dtype), zp.unsqueeze(-1).to(h.dtype)
        for A, Bs, bl, act in zip(self.self_w, self.msg_w, self.bias, self.act):
            b = bl(e)
            b = torch.complex(b[..., : b.shape[-1] // 2], b[..., b.shape[-1] // 2:]).unsqueeze(-2)
            m = A(h) + Bs[0](Kc @ h) + Bs[1](Kc @ (ztc * h)) + Bs[2](Kc @ (zpc * h))
            h = _rms_normalise(h + act(m + b))
        K, r = self.hypotheses, self.rank
        # z = exp(level_k + u_n): Re u moves the log-amplitude, Im u the phase (in the aligned frame), each at a
        # rate that does not depend on the amplitude level (tanh|z| saturates: a complex offset would not)
        z = torch.exp(self.z_level.to(h.dtype) + self.z_out(h)).movedim(-1, -3)  # (..., K, L, N)
        B = self.b_out(h).reshape(h.shape[:-1] + (K, r)).movedim(-2, -4)  # (..., K, L, N, r)
        pooled = torch.cat([h.abs().mean(-2), h.real.mean(-2), e, e.mean(-2, keepdim=True).expand_as(e)], dim=-1)
        q = self.pool(pooled)
        V = self.v_out(q).reshape(q.shape[:-1] + (K, 2, 3, r)).movedim(-4, -5)  # (..., K, L, 2, 3, r)
        V = torch.complex(V[..., 0, :, :], V[..., 1, :, :])
        omega = self.omega_out(q).movedim(-1, -2)  # (..., K, L)
        rho = self.rho_out(torch.cat([q.mean(-2), e.mean(-2)], dim=-1))  # (..., K)
        return {"z": z, "V": V, "B": B, "omega": omega, "rho_logit": rho}

    def candidates(self, scenario: Scenario, factors: bool = False):
        """All K feasible designs: ``(FeasibleDesign with batch (..., K), crb (..., K, L), expanded scenario)``;
        with ``factors`` also the transmit factors ``F (..., K, L, M, r)`` with ``R_s,l ~ F_l F_l^H`` (up to the
        layer's 1e-6 relative ridge), the start of a differentiable refinement."""
        ref = principal_reference(scenario)
        out = self.raw_outputs(scenario, ref)
        K = self.hypotheses
        scen = expand_scenario(scenario, K)
        nb = len(scenario.batch_shape)
        ref = ref.unsqueeze(nb).expand(ref.shape[:nb] + (K,) + ref.shape[nb:])
        dev = scenario.G.device
        W = channel_transmit(scen.G, out["B"].to(dev), ref)
        d = feasible_design(scen, W, out["z"].to(dev), V=out["V"].to(dev), omega=out["omega"].to(dev),
                            rho_logit=out["rho_logit"].to(dev), reference=ref, c1_mode=self.c1_mode)
        c = scen.crb(d.R_s, d.psi, validate=False).total
        if self.balance:
            d, c = balance_slot_powers(scen, d, c)
        if not factors:
            return d, c, scen
        # the layer's transmit factor W + Xn^* V (X linear in psi: the C1 scale does not change Xn), scaled to tr R_l
        X = crb_model.echo_vectors(scen.G, d.psi, scen.theta, scen.phi, scen.N_h, scen.N_v, scen.d_h, scen.d_v)
        nrm = torch.linalg.vector_norm(X, dim=-2, keepdim=True)
        F = W.to(X.dtype) + (X / torch.where(nrm > 0, nrm, torch.ones_like(nrm))).conj() @ out["V"].to(X.dtype)
        fn = (F.real ** 2 + F.imag ** 2).sum((-2, -1)).clamp(min=1e-300)
        p = torch.diagonal(d.R_s, dim1=-2, dim2=-1).real.sum(-1)
        F = F * (p / fn).sqrt().to(F.dtype)[..., None, None]
        return d, c, scen, F

    def forward(self, scenario: Scenario, return_all: bool = False):
        """The feasible design for ``scenario`` (batch ``(...)``, one size): R_s ``(..., L, M, M)``, psi
        ``(..., L, N)`` in the scenario's dtype (the slot-by-slot combination of the K hypotheses).
        ``return_all``: ``(designs (..., K, ...), crb (..., K, L), expanded scenario)`` instead."""
        d, c, scen = self.candidates(scenario)
        if return_all:
            return d, c, scen
        best, _, _ = combine_slots(d, c, scenario.budget("P_t"))
        return best


# ---------------------------------------------------------------------- mixed sizes
@torch.no_grad()
def predict_many(net: AnySizeNet, scenarios: list[Scenario], chunk: int = 1024) -> list[tuple]:
    """Designs for a list of unbatched scenarios of any sizes: bucketed by :func:`size_key`, each bucket
    one batched pass (in chunks of ``chunk``), returned in input order as ``[(R_s (L, M, M), psi (L, N))]``
    complex128, every design feasible."""
    was = net.training
    net.eval()
    try:
        buckets: dict[tuple, list[int]] = {}
        for i, s in enumerate(scenarios):
            if s.batch_shape:
                raise ValueError(f"scenario {i} is batched (batch shape {tuple(s.batch_shape)}); give unbatched ones")
            buckets.setdefault(size_key(s), []).append(i)
        out: list = [None] * len(scenarios)
        for idx in buckets.values():
            for j in range(0, len(idx), chunk):
                part = idx[j:j + chunk]
                b = Scenario.stack([scenarios[i] for i in part]).to(torch.complex128)
                d = net(b)
                for k, i in enumerate(part):
                    out[i] = (d.R_s[k], d.psi[k])
        return out
    finally:
        net.train(was)


# ---------------------------------------------------------------------- files
def save_model(net: AnySizeNet, path, meta: dict | None = None) -> Path:
    """Write the model file ``path`` (weights-only loadable: tensors, numbers, strings, containers) and
    its sidecar ``<stem>.json`` (:data:`SIDECAR_FORMAT`: size ranges, sha256, config, version, meta).
    Atomic (each file). Returns the model file's path."""
    from irs_torch import __version__
    from irs_torch.outputs import apply_file_mode, dumps, file_sha256

    path = Path(path)
    meta = dict(meta or {})
    meta.update({"format": MODEL_FORMAT, "version": __version__,
                 "num_parameters": sum(p.numel() for p in net.parameters())})
    obj = {"format": MODEL_FORMAT, "hyper_parameters": {"active": True, **net.config()},
           "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()}, "irs_torch": meta}
    path.parent.mkdir(parents=True, exist_ok=True)

    def atomic(write, target: Path):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            apply_file_mode(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    atomic(lambda t: torch.save(obj, t), path)
    load_model(path)  # check: loads weights-only
    info = {"format": SIDECAR_FORMAT, "model_file": path.name, "sha256": file_sha256(path),
            "bytes": path.stat().st_size, "size_ranges": net.config()["size_ranges"], "active": True,
            "model_format": MODEL_FORMAT, "version": __version__, "config": net.config(),
            **{k: meta[k] for k in ("seed", "budgets", "training") if k in meta}}
    sc = path.with_suffix(".json")
    atomic(lambda t: Path(t).write_text(dumps(info, indent=2) + "\n"), sc)
    return path


def read_sidecar(path) -> dict:
    """The any-size sidecar of model file ``path`` (JSON only), validated; ValueError naming the file."""
    from irs_torch.limits import load_json_file

    sc = Path(path).with_suffix(".json")
    try:
        info = load_json_file(sc, "model sidecar", max_bytes=1 << 20)  # size and nesting bounded
        if not isinstance(info, dict) or info.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format is not {SIDECAR_FORMAT!r}")
        info["size_ranges"] = _check_ranges(info["size_ranges"])
        if not isinstance(info["sha256"], str) or not isinstance(info["active"], bool):
            raise TypeError("sha256 must be a string and active true/false")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{sc}: not a valid any-size model sidecar ({e})") from None
    return info


def is_anysize_sidecar(path) -> bool:
    """True if the sidecar of model file ``path`` says it is an any-size model (JSON peek, no validation)."""
    from irs_torch.limits import load_json_file

    try:  # size and nesting bounded: a hostile sidecar cannot exhaust memory or the stack
        return load_json_file(Path(path).with_suffix(".json"), "model sidecar", max_bytes=1 << 20).get(
            "format") == SIDECAR_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_model(path, scenario: Scenario | None = None) -> AnySizeNet:
    """The :class:`AnySizeNet` of a model file, weights-only (:func:`irs_torch.learn.safe_load.read_checkpoint`),
    on CPU, in eval mode; with ``scenario``, :meth:`AnySizeNet.check_scenario` (warns outside the ranges)."""
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not an any-size warm-start model (format {ckpt.get('format')!r})")
    hp = dict(ckpt["hyper_parameters"])
    net = AnySizeNet(**{k: hp[k] for k in NET_KEYS if k in hp})
    try:
        net.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the recorded hyperparameters ({e})") from None
    net.eval()
    net.meta = dict(ckpt.get("irs_torch", {}))
    net.source = str(path)
    if scenario is not None:
        net.check_scenario(scenario)
    return net

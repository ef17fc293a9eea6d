"""The warm-start network: scenario -> feasible (R_s, psi), a plain ``nn.Module``.

Architecture (a DeepSets-style per-IRS shared encoder; why):

- The problem is equivariant under a permutation of the IRSs: the objective is a max over l,
  the BS budget an average over slots, and C1/(17d) are per IRS. So one MLP ``enc`` (shared
  weights) encodes each IRS's features (:mod:`irs_torch.learn.features`) into ``h_l``; the
  IRSs communicate through the mean ``c = mean_l h_l`` (the slot-power split and the max-CRB
  balance need it); budgets and noise enter through ``g = glob(global features)``.
- A shared head maps ``[h_l, c, g]`` to IRS l's raw outputs: the reflection pre-activation
  ``z_l`` (N complex, in the frame of the aligned reflection), echo-basis coefficients ``V_l``
  (3 x r complex), a free transmit factor ``W_l`` (M x r complex) and a slot-power logit
  ``omega_l``; a global head maps ``[c, g]`` to the BS-budget logit.
- :func:`~irs_torch.learn.feasibility.feasible_design` turns them into a design that meets every
  constraint. The head is initialised so that the untrained network outputs the physically
  sensible design "aligned reflection at ~0.76 a_max, transmit beam on the echo vector u^*,
  equal slots, full budget"; training learns the corrections.

Per-element or per-antenna weight sharing is deliberately not used: the UPA/ULA geometry makes
element positions matter. The parameter count does not depend on L (the checkpoint still records
L, since it was trained for one L). Parameters are float32; the physics runs in float64.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from irs_torch.learn.feasibility import C1_MODES, FeasibleDesign, aligned_reference, feasible_design
from irs_torch.learn.features import FEATURE_KINDS, N_GLOBAL, N_IRS_SCALARS, Features, per_irs_width, scenario_features
from irs_torch.scenario import Scenario

ARCHS = ("mlp", "gnn")
TRANSMIT_BASES = ("bs", "channel")


def channel_transmit(G: torch.Tensor, B: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
    """Free transmit factors given in the IRS-element basis: ``W = Gs^H (conj(r) * B)``.

    G ``(..., L, N, M)``; B ``(..., L, N, r)`` complex, in the frame of the reference phases r
    ``(..., L, N)`` (or None); ``Gs = G sqrt(N) / ||G||_F`` so that a unit-norm column of B gives a
    beam of norm ~1. Returns W ``(..., L, M, r)`` in the BS basis. Why: with BS-basis-invariant
    ("gram") features a network cannot say where a BS-basis beam points; beams formed through the
    channel are covariant under a change of BS basis (G -> G U gives W -> U^H W) and under element
    phase rotations (with the reference), so the network stays equivariant.
    """
    nrm = torch.linalg.vector_norm(G, dim=(-2, -1), keepdim=True)
    Gs = G * (G.shape[-2] ** 0.5 / torch.where(nrm > 0, nrm, torch.ones_like(nrm)))
    if reference is not None:
        B = reference.conj().unsqueeze(-1).to(B.dtype) * B
    return Gs.conj().transpose(-1, -2) @ B.to(G.dtype)


def mlp(d_in: int, hidden: int, depth: int, d_out: int | None = None, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = hidden
    if d_out is not None:
        layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class CLinear(nn.Module):
    """Complex linear map of the channel dim (real and imaginary weights as real parameters)."""

    def __init__(self, c_in: int, c_out: int, scale: float = 1.0):
        super().__init__()
        std = scale / math.sqrt(2 * c_in)
        self.wr = nn.Parameter(torch.randn(c_in, c_out) * std)
        self.wi = nn.Parameter(torch.randn(c_in, c_out) * std)

    def forward(self, h):
        return h @ torch.complex(self.wr, self.wi).to(h.dtype)


class ModReLU(nn.Module):
    """``relu(|h| + b) h / |h|`` per channel (phase-preserving nonlinearity)."""

    def __init__(self, c: int):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(c))

    def forward(self, h):
        mag = torch.sqrt(h.real ** 2 + h.imag ** 2 + 1e-12)
        return h * (torch.relu(mag + self.b) / mag)


class ElementGNN(nn.Module):
    """Complex message passing over the N elements of each IRS, with the aligned-frame Gram matrix
    ``K`` (:mod:`irs_torch.learn.features`, ``kind="gram"``) as the (complex) adjacency.

    Why: in the aligned frame the echo vectors are ``X = H^T [z, zeta_theta z, zeta_phi z]``
    (``zeta`` the real phase-gradient profiles of eqs. (26)-(27)), so every term of the FIM and of
    C1 is a quadratic form in the relative reflection ``z`` with matrices ``K^*`` (``H H^H``) and
    ``diag(zeta)``; gradient steps on the CRB are sums of ``K^* (zeta^k * z)``. A layer computes
    ``h <- h + modReLU(h A + sum_k K^* (zeta_k * h) B_k + c_l)`` for complex channels ``h`` (N x C)
    with learned complex ``A, B_k`` and an IRS-context bias ``c_l``: a learned, unrolled
    power/gradient iteration, linear in the physics' own operators. The reflection output is
    ``z_n = 1 + h_n w`` (1 = the aligned design); V, the slot-power logits and the BS-budget logit
    come from pooled element magnitudes and the IRS context (DeepSets over IRSs).
    """

    def __init__(self, N_h: int, N_v: int, rank: int, hidden: int, channels: int, layers: int,
                 d_h: float, d_v: float, hypotheses: int = 1):
        super().__init__()
        self.K = hypotheses
        from irs_torch.physics.steering import element_indices

        self.N_h, self.N_v, self.N = N_h, N_v, N_h * N_v
        self.rank = rank
        self.d_h, self.d_v = d_h, d_v
        h_idx, v_idx = element_indices(N_h, N_v, dtype=torch.float32)
        self.register_buffer("h_idx", h_idx, persistent=False)
        self.register_buffer("v_idx", v_idx, persistent=False)
        C = channels
        self.ctx_in = mlp(N_IRS_SCALARS + 4 + N_GLOBAL, hidden, 1)
        self.ctx_mix = mlp(2 * hidden, hidden, 1)
        self.elem_in = nn.Linear(5 + hidden, C)
        self.self_w = nn.ModuleList([CLinear(C, C) for _ in range(layers)])
        self.msg_w = nn.ModuleList([nn.ModuleList([CLinear(C, C) for _ in range(3)]) for _ in range(layers)])
        self.bias = nn.ModuleList([nn.Linear(hidden, 2 * C) for _ in range(layers)])
        self.act = nn.ModuleList([ModReLU(C) for _ in range(layers)])
        K = hypotheses
        self.z_out = CLinear(C, K, scale=0.1)
        self.pool = mlp(2 * C + 2 * hidden, hidden, 1)
        self.v_out = nn.Linear(hidden, K * 2 * 3 * rank)
        self.omega_out = nn.Linear(hidden, K)
        self.rho_out = mlp(2 * hidden, max(hidden // 4, 1), 1, K)
        with torch.no_grad():
            self.v_out.weight.mul_(0.1)
            self.v_out.bias.zero_()
            self.v_out.bias.view(K, 2, 3, rank)[:, 0, 0, 0] = 1.0  # beam on u^*
            self.omega_out.weight.mul_(0.1)
            self.omega_out.bias.zero_()
            self.rho_out[-1].weight.mul_(0.1)
            self.rho_out[-1].bias.fill_(4.0)

    def forward(self, x: torch.Tensor, gl: torch.Tensor) -> dict:
        """x ``(..., L, 6 + N^2)`` standardised gram features, gl ``(..., N_GLOBAL)`` -> raw outputs."""
        N = self.N
        n0 = N_IRS_SCALARS + 4
        scal = x[..., :n0]
        ct, st, cp, sp = (x[..., N_IRS_SCALARS + i] for i in range(4))
        diag = x[..., n0:n0 + N]
        n_off = N * (N - 1) // 2
        off = torch.complex(x[..., n0 + N:n0 + N + n_off], x[..., n0 + N + n_off:n0 + N + 2 * n_off])
        iu = torch.triu_indices(N, N, offset=1, device=x.device)
        K = torch.zeros(x.shape[:-1] + (N, N), dtype=off.dtype, device=x.device)
        K[..., iu[0], iu[1]] = off
        K = K + K.conj().transpose(-1, -2) + torch.diag_embed(diag.to(off.dtype))
        Kc = K.conj() / N  # K^*, scaled so that a rank-one K has spectral norm ~1
        # phase-gradient profiles of eqs. (26)-(27), per element (divided by 2 pi)
        zt = self.d_h * ct.unsqueeze(-1) * cp.unsqueeze(-1) * self.h_idx - self.d_v * st.unsqueeze(-1) * self.v_idx
        zp = -self.d_h * st.unsqueeze(-1) * sp.unsqueeze(-1) * self.h_idx
        # IRS context (DeepSets over IRSs)
        g = gl.unsqueeze(-2).expand(scal.shape[:-1] + gl.shape[-1:])
        e = self.ctx_in(torch.cat([scal, g], dim=-1))  # (..., L, H)
        e = self.ctx_mix(torch.cat([e, e.mean(-2, keepdim=True).expand_as(e)], dim=-1))
        hi = (self.h_idx / max(self.N_h - 1, 1) - 0.5).expand(zt.shape)
        vi = (self.v_idx / max(self.N_v - 1, 1) - 0.5).expand(zt.shape)
        ef = torch.stack([zt, zp, diag, hi, vi], dim=-1)  # (..., L, N, 5)
        h = self.elem_in(torch.cat([ef, e.unsqueeze(-2).expand(ef.shape[:-1] + e.shape[-1:])], dim=-1))
        h = torch.complex(h, torch.zeros_like(h))
        ztc, zpc = zt.unsqueeze(-1).to(h.dtype), zp.unsqueeze(-1).to(h.dtype)
        for A, Bs, bl, act in zip(self.self_w, self.msg_w, self.bias, self.act):
            b = bl(e)
            b = torch.complex(b[..., : b.shape[-1] // 2], b[..., b.shape[-1] // 2:]).unsqueeze(-2)
            m = A(h) + Bs[0](Kc @ h) + Bs[1](Kc @ (ztc * h)) + Bs[2](Kc @ (zpc * h))
            h = h + act(m + b)
        K = self.K
        z = (1.0 + self.z_out(h)).movedim(-1, -3)  # (..., K, L, N)
        pooled = torch.cat([h.abs().mean(-2), h.real.mean(-2), e, e.mean(-2, keepdim=True).expand_as(e)], dim=-1)
        q = self.pool(pooled)
        V = self.v_out(q).reshape(q.shape[:-1] + (K, 2, 3, self.rank)).movedim(-4, -5)  # (..., K, L, 2, 3, r)
        V = torch.complex(V[..., 0, :, :], V[..., 1, :, :])
        omega = self.omega_out(q).movedim(-1, -2)  # (..., K, L)
        rho = self.rho_out(torch.cat([q.mean(-2), e.mean(-2)], dim=-1))  # (..., K)
        return {"z": z, "V": V, "W": None, "omega": omega, "rho_logit": rho}


class WarmStartNet(nn.Module):
    """Scenario -> raw outputs -> feasible design. See the module docstring.

    Args: M, N_h, N_v, L (the sizes it is built for; checked on every call); hidden (width),
    depth (layers of the encoder; the head has ``depth`` too), rank r of the transmit factors,
    echo_basis (add ``Xn^* V`` to the transmit factor), aligned_reference (predict psi relative to
    the aligned reflection), learn_bs_power (a learned used fraction of P_t; else full budget),
    c1_mode ("cap", "max" or "power", see :mod:`~irs_torch.learn.feasibility`), dropout;
    transmit_basis: the basis of the free transmit factors W (``free_transmit``): "bs" (BS antennas,
    for ``features="raw"``) or "channel" (IRS elements, through :func:`channel_transmit`).
    """

    def __init__(self, M: int = 16, N_h: int = 4, N_v: int = 4, L: int = 2, hidden: int = 256,
                 depth: int = 2, rank: int = 2, echo_basis: bool = True, aligned_reference: bool = True,
                 learn_bs_power: bool = True, c1_mode: str = "cap", dropout: float = 0.0,
                 features: str = "gram", free_transmit: bool = False, arch: str = "mlp",
                 channels: int = 32, layers: int = 4, d_h: float = 0.5, d_v: float = 0.5,
                 hypotheses: int = 1, transmit_basis: str = "bs"):
        super().__init__()
        for name, v, lo in (("M", M, 1), ("N_h", N_h, 1), ("N_v", N_v, 1), ("L", L, 1), ("hidden", hidden, 1),
                            ("depth", depth, 1), ("rank", rank, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if c1_mode not in C1_MODES:
            raise ValueError(f"c1_mode must be one of {C1_MODES}, got {c1_mode!r}")
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        if transmit_basis not in TRANSMIT_BASES:
            raise ValueError(f"transmit_basis must be one of {TRANSMIT_BASES}, got {transmit_basis!r}")
        if arch == "gnn" and (features != "gram" or free_transmit or not echo_basis):
            raise ValueError("arch='gnn' needs features='gram', echo_basis=true and free_transmit=false")
        for name, v in (("channels", channels), ("layers", layers), ("hypotheses", hypotheses)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if features not in FEATURE_KINDS:
            raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")
        if not (echo_basis or free_transmit):
            raise ValueError("echo_basis and free_transmit are both false: the network has no transmit output")
        if features == "gram" and not aligned_reference:
            raise ValueError("features='gram' needs aligned_reference=true (the features live in its frame)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.M, self.N_h, self.N_v, self.L = M, N_h, N_v, L
        self.N = N_h * N_v
        self.rank = rank
        self.echo_basis = echo_basis
        self.use_reference = aligned_reference
        self.learn_bs_power = learn_bs_power
        self.c1_mode = c1_mode
        self.features = features
        self.free_transmit = free_transmit
        self.transmit_basis = transmit_basis
        self.arch = arch
        self.hypotheses = hypotheses
        K = hypotheses
        f_in = per_irs_width(M, self.N, features)
        self._n_z = 2 * self.N
        self._n_v = 2 * 3 * rank if echo_basis else 0
        self._n_w = 2 * (self.N if transmit_basis == "channel" else M) * rank if free_transmit else 0
        if arch == "mlp":
            self.enc = mlp(f_in, hidden, depth, dropout=dropout)
            self.glob = mlp(N_GLOBAL, hidden, 1)
            self._n_out = self._n_z + self._n_v + self._n_w + 1
            self.head = mlp(3 * hidden, hidden, depth, K * self._n_out, dropout=dropout)
            self.rho_head = mlp(2 * hidden, hidden // 4 or 1, 1, K)
        else:
            self.gnn = ElementGNN(N_h, N_v, rank, hidden, channels, layers, d_h, d_v, hypotheses)
        # Feature standardisation (fitted on training data; stored in checkpoints).
        self.register_buffer("irs_mean", torch.zeros(N_IRS_SCALARS))
        self.register_buffer("irs_std", torch.ones(N_IRS_SCALARS))
        self.register_buffer("glob_mean", torch.zeros(N_GLOBAL))
        self.register_buffer("glob_std", torch.ones(N_GLOBAL))
        self.register_buffer("stats_fitted", torch.tensor(False))
        self._init_outputs()

    # ------------------------------------------------------------------ init / normaliser
    def _init_outputs(self):
        if self.arch != "mlp":
            return
        last = self.head[-1]
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.zero_()
            b = last.bias.view(self.hypotheses, self._n_out)
            # Re z = 1: psi0 = tanh(1) a_max * reference; c1_mode "power" keeps |psi| near a_max
            # (tanh(3) = 0.995) and meets C1 with the BS power instead
            b[:, : self.N] = 3.0 if self.c1_mode == "power" else 1.0
            if self.echo_basis:
                v = b[:, self._n_z: self._n_z + self._n_v].view(self.hypotheses, 2, 3, self.rank)
                v[:, 0, 0, 0] = 1.0  # first column of V = e_1: beam on u^*
            rl = self.rho_head[-1]
            rl.weight.mul_(0.1)
            rl.bias.fill_(4.0)  # sigmoid(4) = 0.982 of P_t

    def fit_normalizer(self, features: Features):
        """Set the standardisation of the log features from training ``features`` (any batch shape)."""
        p = features.per_irs[..., :N_IRS_SCALARS].reshape(-1, N_IRS_SCALARS).double()
        g = features.glob.reshape(-1, N_GLOBAL).double()
        for name, x in (("irs", p), ("glob", g)):
            mean = x.mean(0)
            std = x.std(0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(mean)
            std = torch.where(std > 1e-6, std, torch.ones_like(std))
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std)
        self.stats_fitted.fill_(True)

    # ------------------------------------------------------------------ compatibility
    @property
    def sizes(self) -> dict:
        return {"M": self.M, "N_h": self.N_h, "N_v": self.N_v, "L": self.L}

    def check_scenario(self, scenario: Scenario):
        """Raise ValueError if the scenario's sizes differ from the ones the model was built for."""
        got = {"M": scenario.M, "N_h": scenario.N_h, "N_v": scenario.N_v, "L": scenario.L}
        if got != self.sizes:
            diff = ", ".join(f"{k}={got[k]} (model {self.sizes[k]})" for k in got if got[k] != self.sizes[k])
            raise ValueError(f"the model was trained for M={self.M}, N_h={self.N_h}, N_v={self.N_v}, "
                             f"L={self.L}, but the scenario has {diff}")

    # ------------------------------------------------------------------ forward
    def raw_outputs(self, scenario: Scenario, features: Features | None = None,
                    reference: torch.Tensor | None = None) -> dict:
        """Unconstrained outputs: ``z`` (..., L, N), ``V`` (..., L, 3, r) or None, ``W`` (..., L, M, r)
        or None, complex; ``omega`` (..., L), ``rho_logit`` (...) or None, real. With
        ``hypotheses = K > 1`` every output has a K dim after the batch dims, e.g. z ``(..., K, L, N)``."""
        out = self._raw(scenario, features, reference)
        if self.hypotheses == 1:
            kd = len(scenario.batch_shape)
            out = {k: (None if v is None else v.squeeze(kd)) for k, v in out.items()}
        return out

    def _raw(self, scenario: Scenario, features: Features | None, reference: torch.Tensor | None) -> dict:
        self.check_scenario(scenario)
        if features is None:
            features = scenario_features(scenario, reference, self.features)
        p0 = next(self.parameters())
        dt, dev = p0.dtype, p0.device
        per = features.per_irs.to(dev)
        sc = (per[..., :N_IRS_SCALARS] - self.irs_mean.to(per.dtype)) / self.irs_std.to(per.dtype)
        x = torch.cat([sc, per[..., N_IRS_SCALARS:]], dim=-1).to(dt)
        gl = ((features.glob.to(dev) - self.glob_mean.to(per.dtype)) / self.glob_std.to(per.dtype)).to(dt)
        if self.arch == "gnn":
            out = self.gnn(x, gl)
            if not self.learn_bs_power:
                out["rho_logit"] = None
            return out
        h = self.enc(x)  # (..., L, H)
        c = h.mean(-2)  # (..., H)
        g = self.glob(gl)  # (..., H)
        ctx = torch.cat([c, g], dim=-1)
        y = self.head(torch.cat([h, ctx.unsqueeze(-2).expand(h.shape[:-1] + ctx.shape[-1:])], dim=-1))
        y = y.reshape(y.shape[:-1] + (self.hypotheses, self._n_out)).movedim(-2, -3)  # (..., K, L, P)
        bs = y.shape[:-1]
        i = 0
        zr = y[..., i: i + self._n_z].reshape(bs + (2, self.N))
        i += self._n_z
        V = None
        if self.echo_basis:
            vr = y[..., i: i + self._n_v].reshape(bs + (2, 3, self.rank))
            i += self._n_v
            V = torch.complex(vr[..., 0, :, :], vr[..., 1, :, :])
        W = None
        if self.free_transmit:
            nw = self.N if self.transmit_basis == "channel" else self.M
            wr = y[..., i: i + self._n_w].reshape(bs + (2, nw, self.rank))
            i += self._n_w
            W = torch.complex(wr[..., 0, :, :], wr[..., 1, :, :])
        omega = y[..., i]
        rho_logit = self.rho_head(ctx)  # (..., K)
        return {"z": torch.complex(zr[..., 0, :], zr[..., 1, :]), "V": V,
                "W": W, "omega": omega,
                "rho_logit": rho_logit if self.learn_bs_power else None}

    def forward(self, scenario: Scenario, features: Features | None = None, return_all: bool = False):
        """Feasible design for ``scenario`` (batch ``(...)``): R_s ``(..., L, M, M)``, psi ``(..., L, N)``
        in the scenario's complex dtype (use complex128 scenarios to evaluate CRBs).

        With ``hypotheses = K > 1`` the network proposes K feasible designs per IRS slot and returns the
        best combination of them (:func:`combine_slots`: exact torch physics, K CRB evaluations, no
        iterative solver; never worse than the best single candidate). ``return_all``:
        return ``(designs, crb, expanded_scenario)`` with designs and crb ``(..., K, L, ...)`` instead.
        """
        ref = aligned_reference(scenario) if self.use_reference else None
        out = self.raw_outputs(scenario, features, ref)
        dev = scenario.G.device
        K = self.hypotheses
        scen = scenario
        if K > 1:
            scen = expand_scenario(scenario, K)
            if ref is not None:
                nb = len(scenario.batch_shape)
                ref = ref.unsqueeze(nb).expand(ref.shape[:nb] + (K,) + ref.shape[nb:])
        W = None if out["W"] is None else out["W"].to(dev)
        if W is not None and self.transmit_basis == "channel":
            W = channel_transmit(scen.G, W, ref)
        d = feasible_design(scen, W, out["z"].to(dev),
                            V=None if out["V"] is None else out["V"].to(dev),
                            omega=out["omega"].to(dev),
                            rho_logit=None if out["rho_logit"] is None else out["rho_logit"].to(dev),
                            reference=ref, c1_mode=self.c1_mode)
        if K == 1:
            if return_all:
                raise ValueError("return_all needs hypotheses > 1")
            return d
        c = scen.crb(d.R_s, d.psi, validate=False).total  # (..., K, L)
        if return_all:
            return d, c, scen
        best, _, _ = combine_slots(d, c, scenario.budget("P_t"))
        return best


def expand_scenario(scenario: Scenario, K: int) -> Scenario:
    """The scenario repeated K times along a new batch dim after its batch dims: batch ``(..., K)``."""
    nb = len(scenario.batch_shape)
    ch = {}
    for f in ("G", "theta", "phi", "beta", "bs_pos", "irs_pos", "irs_yaw", "target_pos"):
        t = getattr(scenario, f)
        if t is not None:
            t = torch.as_tensor(t).unsqueeze(nb)
            ch[f] = t.expand(t.shape[:nb] + (K,) + t.shape[nb + 1:])
    for f in ("sigma_r2", "sigma_b2", "P_t", "P_s", "a_max"):
        v = getattr(scenario, f)
        if torch.is_tensor(v) and v.dim():
            ch[f] = v.unsqueeze(-1).expand(v.shape + (K,))
    return scenario.replace(**ch)


def select_best(designs: FeasibleDesign, crb_total: torch.Tensor):
    """The candidate with the smallest max-CRB per instance.

    Shapes: designs with batch ``(..., K)``, crb_total ``(..., K, L)`` -> ``(FeasibleDesign (...),
    crb (..., L), index (...))``.
    """
    idx = crb_total.amax(-1).argmin(-1)  # (...)

    def take(t, tail):
        i = idx.reshape(idx.shape + (1,) * (1 + tail)).expand(idx.shape + (1,) + t.shape[idx.dim() + 1:])
        return t.gather(idx.dim(), i).squeeze(idx.dim())

    best = FeasibleDesign(R_s=take(designs.R_s, 3), psi=take(designs.psi, 2), rho=take(designs.rho, 0),
                          c1_scale=take(designs.c1_scale, 1))
    return best, take(crb_total, 1), idx



def combine_slots(designs: FeasibleDesign, crb_total: torch.Tensor, P_t):
    """The best design assembled slot by slot from K candidates (never worse than :func:`select_best`).

    The IRS slots are coupled only through the BS budget, an average over slots
    (``sum_l tr R_s,l <= L P_t``, docs/assumptions.md "Modelling facts"). Slot l may take candidate k_l, and lowering a
    slot's power by a factor t <= 1 keeps C1 (the IRS power grows with R_s,l) and multiplies that slot's
    CRB by exactly 1/t (the FIM is linear in R_s,l; the noise does not depend on it). With
    ``e = c p`` (CRB times slot power, invariant to that scaling), the smallest achievable max-CRB is
    the smallest m with ``sum_l min_{k: c_kl <= m} e_kl <= m L P_t``; it lies at
    ``max(b, g(b) / (L P_t))`` for one of the K L candidate CRBs b (``g`` is piecewise constant
    between them), so all K L values are tried at once. The chosen slots are scaled down (equalised
    at m) only if their powers exceed the budget.

    Shapes: designs with batch ``(..., K)``, crb_total ``(..., K, L)``, P_t ``(...)`` or scalar ->
    ``(FeasibleDesign (...), crb (..., L), index (..., L))``. Where no candidate has a finite CRB
    it falls back to :func:`select_best`.
    """
    K, L = crb_total.shape[-2:]
    c = crb_total
    p = torch.diagonal(designs.R_s, dim1=-2, dim2=-1).sum(-1).real.to(c.dtype)  # (..., K, L)
    budget = (L * torch.as_tensor(P_t, dtype=c.dtype, device=c.device)).expand(c.shape[:-2])
    inf = torch.tensor(float("inf"), dtype=c.dtype, device=c.device)
    e = torch.where(torch.isfinite(c), c * p, inf)
    b = c.flatten(-2)  # (..., J) candidate values of m, J = K L
    ok = c.unsqueeze(-3) <= b[..., :, None, None]  # (..., J, K, L)
    g = torch.where(ok, e.unsqueeze(-3), inf).amin(-2).sum(-1)  # (..., J)
    m = torch.where(torch.isfinite(g), torch.maximum(b, g / budget.unsqueeze(-1)), inf).amin(-1)  # (...)
    idx = torch.where(c <= m[..., None, None], e, inf).argmin(-2)  # (..., L)
    nb = idx.dim() - 1

    def take(t, tail):
        i = idx.reshape(idx.shape + (1,) * tail).unsqueeze(nb).expand(idx.shape[:nb] + (1, L) + t.shape[nb + 2:])
        return t.gather(nb, i).squeeze(nb)

    R, psi, c1 = take(designs.R_s, 2), take(designs.psi, 1), take(designs.c1_scale, 0)
    c_sel, p_sel = take(c, 0), take(p, 0)
    over = p_sel.sum(-1) > budget
    t = torch.where(over.unsqueeze(-1), (c_sel / m.unsqueeze(-1)).clamp(max=1.0), torch.ones_like(c_sel))
    R = R * t[..., None, None].to(R.dtype)
    crb = c_sel / t
    rho = (p_sel * t).sum(-1) / budget
    # fall back to the joint choice where the candidates gave no finite CRB at all
    bad = ~torch.isfinite(m)
    if bool(bad.any()):
        jb, jc, ji = select_best(designs, crb_total)
        sel = lambda x, y: torch.where(bad.reshape(bad.shape + (1,) * (x.dim() - bad.dim())), y, x)  # noqa: E731
        R, psi, crb = sel(R, jb.R_s), sel(psi, jb.psi), sel(crb, jc)
        rho, c1 = sel(rho, jb.rho.to(rho.dtype)), sel(c1, jb.c1_scale)
        idx = sel(idx, ji.unsqueeze(-1).expand_as(idx))
    return FeasibleDesign(R_s=R, psi=psi, rho=rho.to(designs.rho.dtype), c1_scale=c1), crb, idx

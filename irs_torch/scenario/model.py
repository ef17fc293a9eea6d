"""The :class:`Scenario` dataclass: a validated, batched multi-active-IRS sensing system.

A :class:`Scenario` holds everything the CRB needs (channels, target angles and coefficient,
noise powers, budgets) plus the geometry it came from. Tensors carry optional leading batch
dimensions ``...`` before the IRS dimension ``L``:

=============  ==================  ======================================================
field          shape               meaning (unit)
=============  ==================  ======================================================
G              (..., L, N, M)      BS -> IRS l channel, complex
theta, phi     (..., L)            target direction seen from IRS l (rad)
beta           (..., L)            round-trip target coefficient, complex
bs_pos         (..., 3)            BS position (m); ULA along +x
irs_pos        (..., L, 3)         IRS positions (m)
irs_yaw        (..., L)            IRS yaw (rad): normal (cos, sin, 0), horizontal axis (-sin, cos, 0)
target_pos     (..., 3)            target position (m)
=============  ==================  ======================================================

Scalars: M, N_h, N_v (ints); d_h, d_v, d_bs (element spacing in wavelengths); wavelength (m);
sigma_r2, sigma_b2 (W); T_c (symbols); P_t, P_s (W); a_max (amplitude, linear); active (bool);
K_db (Rician K, dB); C0_db (dB), alpha (path-loss exponent); beta_model; sigma_rcs (m^2); seed.

Budgets and noise powers (``BUDGET_FIELDS``) are one value per batch instance, the same for all
IRSs: a scalar, or a tensor of the batch shape of G (per-IRS budgets are not supported).
:meth:`Scenario.budget` returns one as a tensor, :meth:`Scenario.budget_broadcast` with a trailing
axis so that it broadcasts against per-IRS quantities ``(..., L)``.

This module knows nothing of presets, samplers or file reading: those build Scenarios.
:func:`irs_torch.scenario.presets.paper_scenario` (the paper's Section V) and
:func:`~irs_torch.scenario.presets.from_geometry`; :func:`irs_torch.scenario.sampling.random_scenario`;
:func:`irs_torch.scenario.files.load_scenario` and :func:`~irs_torch.scenario.files.scenario_from_dict` (strict
reading of what :meth:`Scenario.save` / :meth:`Scenario.to_dict` write). The node placement rules are in
:mod:`irs_torch.scenario.placement`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irs_torch import crb as crb_model
from irs_torch.errors import InputError, InputTypeError
from irs_torch.physics.geometry import target_angles
from irs_torch.scenario.placement import check_node_placement

SCENARIO_FORMAT = "irs-torch/scenario"
TENSOR_FIELDS = ("G", "theta", "phi", "beta", "bs_pos", "irs_pos", "irs_yaw", "target_pos")
SCALAR_FIELDS = ("M", "N_h", "N_v", "d_h", "d_v", "d_bs", "wavelength", "sigma_r2", "sigma_b2",
                 "T_c", "P_t", "P_s", "a_max", "active", "K_db", "C0_db", "alpha", "beta_model",
                 "sigma_rcs", "seed", "preset")
# Budgets and noise powers: one value per batch instance (a scalar, or the batch shape of G).
BUDGET_FIELDS = ("sigma_r2", "sigma_b2", "P_t", "P_s", "a_max")
REAL_SCALAR_FIELDS = ("d_h", "d_v", "d_bs", "wavelength", "T_c", "K_db", "C0_db", "alpha", "sigma_rcs")

# Largest admissible difference (rad) between stored angles and those of the stored geometry.
ANGLE_TOL_RAD = {torch.float64: 1e-9, torch.float32: 1e-5}



def _is_real_scalar(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float, np.integer, np.floating)):
        return True
    if torch.is_tensor(v) or isinstance(v, np.ndarray):
        return v.ndim == 0 and not (v.is_complex() if torch.is_tensor(v) else np.iscomplexobj(v)) \
            and v.dtype not in (torch.bool, np.bool_)
    return False


def _check_positive(name, value, *, allow_zero=False):
    v = torch.as_tensor(value, dtype=torch.float64)
    bad = ~torch.isfinite(v) | ((v < 0) if allow_zero else (v <= 0))
    if bad.any():
        worst = v[bad].flatten()[0].item() if v.dim() else v.item()
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {rel}, got {worst}")


@dataclass(frozen=True)
class Scenario:
    """A (batch of) multi-active-IRS sensing system(s). See the module docstring for fields."""

    G: torch.Tensor
    theta: torch.Tensor
    phi: torch.Tensor
    beta: torch.Tensor
    M: int
    N_h: int
    N_v: int
    d_h: float = 0.5
    d_v: float = 0.5
    sigma_r2: Any = 1e-11
    sigma_b2: Any = 1e-11
    T_c: float = 100.0
    P_t: Any = 20.0
    P_s: Any = 0.1
    a_max: Any = 8.0
    active: bool = True
    bs_pos: torch.Tensor | None = None
    irs_pos: torch.Tensor | None = None
    irs_yaw: torch.Tensor | None = None
    target_pos: torch.Tensor | None = None
    wavelength: float = 0.1
    d_bs: float = 0.5
    K_db: float = 5.0
    C0_db: float = -30.0
    alpha: float = 2.2
    beta_model: str = "pathloss"
    sigma_rcs: float = 1.0
    seed: int | None = None
    preset: str = "custom"

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        for name in ("M", "N_h", "N_v"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                                      or self.seed < 0):
            raise InputError(f"seed must be a non-negative integer or None, got {self.seed!r}")
        if not torch.is_tensor(self.G) or not self.G.is_complex():
            raise InputTypeError(
                f"G must be a complex torch tensor of shape (..., L, N, M), got {type(self.G).__name__}"
                + (f" of dtype {self.G.dtype}" if torch.is_tensor(self.G) else "")
            )
        if self.G.dim() < 3:
            raise ValueError(f"G must have shape (..., L, N, M), got {tuple(self.G.shape)}")
        L, N, M = self.G.shape[-3:]
        if L < 1:
            raise InputError(f"G must hold at least one IRS, got shape {tuple(self.G.shape)}")
        if N != self.N_h * self.N_v or M != self.M:
            raise ValueError(
                f"G must have shape (..., L, N={self.N_h * self.N_v}, M={self.M}) for "
                f"M={self.M}, N_h={self.N_h}, N_v={self.N_v}, got {tuple(self.G.shape)}"
            )
        # the geometry first: a target on top of an IRS gives an infinite beta, reported as what it is
        geometry = self._check_geometry()
        batch = self.G.shape[:-3]
        rdt = torch.float32 if self.G.dtype == torch.complex64 else torch.float64
        for name in ("theta", "phi"):
            t = torch.as_tensor(getattr(self, name), dtype=rdt)
            if t.shape != batch + (L,):
                raise ValueError(f"{name} must have shape {tuple(batch + (L,))}, got {tuple(t.shape)}")
            object.__setattr__(self, name, t)
        b = torch.as_tensor(self.beta)
        if not b.is_complex():
            b = b.to(self.G.dtype)
        if b.shape != batch + (L,):
            raise ValueError(f"beta must have shape {tuple(batch + (L,))}, got {tuple(b.shape)}")
        object.__setattr__(self, "beta", b.to(self.G.dtype))
        for name in ("G", "theta", "phi", "beta"):
            t = getattr(self, name)
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or inf values")
        if (self.beta.abs() == 0).any():
            raise ValueError("beta must be non-zero (a zero target coefficient gives no information)")
        for name in REAL_SCALAR_FIELDS:
            v = getattr(self, name)
            if not _is_real_scalar(v):
                what = f"shape {tuple(v.shape)}" if hasattr(v, "shape") and v.ndim else f"{v!r}"
                raise InputError(f"{name} must be a real scalar, got {what}")
        for name in BUDGET_FIELDS:
            v = getattr(self, name)
            shape = tuple(torch.as_tensor(v).shape) if (torch.is_tensor(v) or isinstance(v, np.ndarray)) else ()
            if shape and shape != tuple(batch):
                where = f"or have the batch shape {tuple(batch)} of G" if batch else "(one value for all IRSs)"
                raise InputError(
                    f"{name} must be a scalar {where}; per-IRS budgets are not supported, got shape {shape}"
                )
        for name in ("d_h", "d_v", "d_bs", "wavelength", "sigma_b2", "T_c", "P_t", "P_s", "a_max"):
            _check_positive(name, getattr(self, name))
        _check_positive("sigma_r2", self.sigma_r2, allow_zero=True)  # 0: an ideal (noise-free) IRS
        if self.T_c < self.L:
            raise ValueError(f"T_c must be >= L={self.L} (at least one symbol per IRS slot), got {self.T_c}")
        if self.beta_model not in ("pathloss", "radar"):
            raise ValueError(f"beta_model must be 'pathloss' or 'radar', got {self.beta_model!r}")
        if geometry is not None:
            self._check_angles_match_geometry(*geometry)

    def _check_geometry(self):
        """Shapes and placement of the stored positions; returns ``(irs_pos, irs_yaw, target_pos)``
        as float64 tensors when the target geometry is stored, else None."""
        batch = tuple(self.G.shape[:-3])
        L = int(self.G.shape[-3])
        if self.bs_pos is not None:
            bs = torch.as_tensor(self.bs_pos, dtype=torch.float64)
            if bs.shape[-1:] != (3,) or tuple(bs.shape[:-1]) not in ((), batch):
                raise InputError(f"bs_pos must have shape {batch + (3,)}, got {tuple(bs.shape)}")
            if not torch.isfinite(bs).all():
                raise InputError("bs_pos contains NaN or inf values")
        if self.irs_pos is None or self.target_pos is None:
            return None
        irs = torch.as_tensor(self.irs_pos, dtype=torch.float64)
        tgt = torch.as_tensor(self.target_pos, dtype=torch.float64)
        if irs.shape[-2:] != (L, 3) or tuple(irs.shape[:-2]) not in ((), batch):
            raise ValueError(
                f"irs_pos must have shape (..., L={L}, 3) with batch shape {batch}, got {tuple(irs.shape)}"
            )
        if tgt.shape[-1:] != (3,) or tuple(tgt.shape[:-1]) not in ((), batch):
            raise ValueError(f"target_pos must have shape (..., 3) with batch shape {batch}, got {tuple(tgt.shape)}")
        yaw = (
            torch.zeros(irs.shape[:-1], dtype=torch.float64)
            if self.irs_yaw is None
            else torch.as_tensor(self.irs_yaw, dtype=torch.float64)
        )
        if yaw.shape != irs.shape[:-1]:
            raise InputError(
                f"irs_yaw must have shape {tuple(irs.shape[:-1])} (one yaw per IRS), got {tuple(yaw.shape)}"
            )
        for name, t in (("irs_pos", irs), ("target_pos", tgt), ("irs_yaw", yaw)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or inf values")
        _, _, d, front = target_angles(irs, yaw, tgt)
        check_node_placement("target_pos", d, front, L, ": the target is on top of an IRS")
        return irs, yaw, tgt

    def _check_angles_match_geometry(self, irs, yaw, tgt):
        """theta and phi must be the direction of target_pos seen from each IRS (ANGLE_TOL_RAD)."""
        th, ph, _, _ = target_angles(irs, yaw, tgt)
        tol = ANGLE_TOL_RAD.get(self.real_dtype, 1e-5)
        for name, stored, ref in (("theta", self.theta, th), ("phi", self.phi, ph)):
            err = (stored.to(torch.float64) - ref).abs()
            if (err > tol).any():
                i = int(torch.argmax(err.flatten()))
                raise InputError(
                    f"{name} of IRS {i % self.L + 1} is {stored.flatten()[i].item():.12g} rad but the stored geometry "
                    f"(irs_pos, irs_yaw, target_pos) gives {ref.flatten()[i].item():.12g} rad (difference "
                    f"{err.flatten()[i].item():.3g} rad > {tol:g}): the angles must agree with the geometry"
                )

    # ------------------------------------------------------------------ shapes
    @property
    def L(self) -> int:
        return int(self.G.shape[-3])

    @property
    def N(self) -> int:
        return self.N_h * self.N_v

    @property
    def T_L(self) -> float:
        """Symbols per IRS slot, T_c / L."""
        return self.T_c / self.L

    @property
    def batch_shape(self) -> torch.Size:
        return self.G.shape[:-3]

    @property
    def complex_dtype(self):
        return self.G.dtype

    @property
    def real_dtype(self):
        return torch.float32 if self.G.dtype == torch.complex64 else torch.float64

    def replace(self, **changes) -> "Scenario":
        """A copy with fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def to(self, dtype=None, device=None) -> "Scenario":
        """Cast the tensors to ``dtype`` (torch.complex64 or torch.complex128) and/or move them."""
        cd = dtype or self.G.dtype
        rd = torch.float32 if cd == torch.complex64 else torch.float64
        ch = {}
        for f in TENSOR_FIELDS:
            t = getattr(self, f)
            if t is None:
                continue
            ch[f] = t.to(device=device, dtype=cd if t.is_complex() else rd)
        if rd == torch.float64 and self.real_dtype != torch.float64 and ch.get("target_pos") is not None:
            # up from float32: the angles carry float32 rounding (~1e-7 rad) that the float64 check against the
            # stored geometry (ANGLE_TOL_RAD) would reject; they are derived from the geometry, so derive them again
            ch["theta"], ch["phi"], _, _ = target_angles(ch["irs_pos"], ch["irs_yaw"], ch["target_pos"])
        return self.replace(**ch)

    def budget(self, name: str) -> torch.Tensor:
        """The budget or noise power ``name`` (one of ``BUDGET_FIELDS``) as a real tensor on G's device:
        shape ``()`` for a scalar, else the batch shape ``(...)`` (one value per batch instance)."""
        if name not in BUDGET_FIELDS:
            raise ValueError(f"name must be one of {BUDGET_FIELDS}, got {name!r}")
        return torch.as_tensor(getattr(self, name), dtype=self.real_dtype, device=self.G.device)

    def budget_broadcast(self, name: str) -> torch.Tensor:
        """:meth:`budget` shaped to broadcast against per-IRS quantities ``(..., L)``: ``()`` for a
        scalar, else ``(..., 1)`` (the same value for every IRS of a batch instance)."""
        v = self.budget(name)
        return v.unsqueeze(-1) if v.dim() else v

    # ------------------------------------------------------------------ physics
    def check_design(self, R_s: torch.Tensor | None = None, psi: torch.Tensor | None = None):
        """Validate shapes and values of a design; raises ValueError naming the field."""
        L, N, M = self.L, self.N, self.M
        if R_s is not None:
            if not torch.is_tensor(R_s):
                raise InputTypeError(f"R_s must be a torch tensor, got {type(R_s).__name__}")
            if R_s.shape[-3:] != (L, M, M):
                raise ValueError(f"R_s must have shape (..., L={L}, M={M}, M={M}), got {tuple(R_s.shape)}")
            if not torch.isfinite(R_s).all():
                raise ValueError("R_s contains NaN or inf values")
        if psi is not None:
            if not torch.is_tensor(psi):
                raise InputTypeError(f"psi must be a torch tensor, got {type(psi).__name__}")
            if psi.shape[-2:] != (L, N):
                raise ValueError(f"psi must have shape (..., L={L}, N={N}), got {tuple(psi.shape)}")
            if not torch.isfinite(psi).all():
                raise ValueError("psi contains NaN or inf values")

    def crb(self, R_s: torch.Tensor, psi: torch.Tensor, validate: bool = True,
            twice_differentiable: bool = False) -> crb_model.CRBResult:
        """Per-IRS CRB. Shapes: R_s ``(..., L, M, M)``, psi ``(..., L, N)`` -> fields ``(..., L)``.
        ``twice_differentiable``: see :func:`irs_torch.crb.crb` (for unrolled training)."""
        if validate:
            self.check_design(R_s, psi)
        psi = psi.to(self.G.dtype)
        return crb_model.crb(self.G, psi, R_s.to(self.G.dtype), *self._echo_model_args(),
                             twice_differentiable=twice_differentiable)

    def crb_factored(self, B: torch.Tensor, psi: torch.Tensor, validate: bool = True) -> crb_model.CRBResult:
        """Per-IRS CRB for the transmit covariances ``R_s,l = B_l B_l^H`` (no M x M matrix formed).

        Shapes: B ``(..., L, M, r)`` complex [sqrt(W)], any r >= 1; psi ``(..., L, N)`` -> fields ``(..., L)``.
        Equal to ``crb(B @ B.mH, psi)``; see :func:`irs_torch.crb.crb_factored`."""
        if validate:
            self.check_factor(B)
            self.check_design(psi=psi)
        return crb_model.crb_factored(self.G, psi.to(self.G.dtype), B.to(self.G.dtype), *self._echo_model_args())

    def check_factor(self, B: torch.Tensor):
        """Validate a transmit factor B ``(..., L, M, r)`` (``R_s = B B^H``); raises ValueError naming B."""
        if not torch.is_tensor(B):
            raise InputTypeError(f"B must be a torch tensor, got {type(B).__name__}")
        if B.dim() < 3 or B.shape[-3:-1] != (self.L, self.M) or B.shape[-1] < 1:
            raise ValueError(f"B must have shape (..., L={self.L}, M={self.M}, r>=1), got {tuple(B.shape)}")
        if not torch.isfinite(B).all():
            raise ValueError("B contains NaN or inf values")

    def irs_power_factored(self, B, psi) -> torch.Tensor:
        """:meth:`irs_power` (C1 left-hand side per IRS [W], ``(..., L)``) for ``R_s = B B^H``, B ``(..., L, M, r)``."""
        self.check_factor(B)
        self.check_design(psi=psi)
        p = crb_model.irs_power_factored(self.G, psi.to(self.G.dtype), B.to(self.G.dtype), self.theta, self.phi,
                                         self.beta, self.budget_broadcast("sigma_r2"), self.N_h, self.N_v,
                                         self.d_h, self.d_v)
        return p if self.active else torch.zeros_like(p)

    def scale_psi_to_feasible_factored(self, B: torch.Tensor, psi: torch.Tensor, amplitude_cap: bool = True,
                                       P_s: torch.Tensor | None = None):
        """:meth:`scale_psi_to_feasible` for ``R_s = B B^H``: B ``(..., L, M, r)``, psi ``(..., L, N)`` ->
        ``(..., L, N)``, each psi_l scaled by the largest real factor meeting C1 (and a_max); ``N M r`` instead of
        ``N M^2`` multiply-adds per IRS. ``P_s``: a budget [W] used instead of the scenario's."""
        psi = psi.to(self.G.dtype)
        if not self.active:
            return torch.sgn(psi) + (psi == 0).to(psi.dtype)
        P4, P2 = crb_model.irs_power_coefficients_factored(
            self.G, psi, B.to(psi.dtype), self.theta, self.phi, self.beta, self.budget_broadcast("sigma_r2"),
            self.N_h, self.N_v, self.d_h, self.d_v)
        s = crb_model.c1_max_scale(P4, P2, self.budget_broadcast("P_s") if P_s is None else P_s)
        if amplitude_cap:
            amax = psi.abs().amax(-1)
            cap = self.budget_broadcast("a_max") / torch.where(amax > 0, amax, torch.ones_like(amax))
            s = torch.minimum(s, cap)
        s = torch.where(torch.isfinite(s), s, torch.ones_like(s))
        return psi * s.unsqueeze(-1).to(psi.dtype)

    def max_crb(self, R_s, psi) -> torch.Tensor:
        """The paper's objective, ``max_l tr(F_l^-1)``. Shape ``(...)``."""
        return self.crb(R_s, psi).total.amax(-1)

    def fisher_information(self, R_s, psi) -> torch.Tensor:
        """SI-unit FIM per IRS, ``(..., L, 4, 4)``; see :func:`irs_torch.crb.fisher_information`."""
        self.check_design(R_s, psi)
        return crb_model.fisher_information(self.G, psi.to(self.G.dtype), R_s.to(self.G.dtype),
                                            *self._echo_model_args())

    def _echo_model_args(self) -> tuple:
        """The arguments after ``(G, psi, R_s)`` of :func:`irs_torch.crb.crb` and
        :func:`irs_torch.crb.fisher_information`: angles, beta, noise powers, T_L, array sizes and spacings."""
        return (self.theta, self.phi, self.beta, self.budget_broadcast("sigma_r2"),
                self.budget_broadcast("sigma_b2"), self.T_L, self.N_h, self.N_v, self.d_h, self.d_v)

    def irs_power(self, R_s, psi) -> torch.Tensor:
        """Left-hand side of C1 (eq. (7)) per IRS [W], ``(..., L)``. Zero for a passive IRS."""
        self.check_design(R_s, psi)
        p = crb_model.irs_power(
            self.G,
            psi.to(self.G.dtype),
            R_s.to(self.G.dtype),
            self.theta,
            self.phi,
            self.beta,
            self.budget_broadcast("sigma_r2"),
            self.N_h,
            self.N_v,
            self.d_h,
            self.d_v,
        )
        return p if self.active else torch.zeros_like(p)

    def bs_power(self, R_s) -> torch.Tensor:
        """Average BS power ``(1/L) sum_l tr(R_s,l)`` [W], ``(...)``."""
        self.check_design(R_s=R_s)
        return crb_model.bs_power(R_s)

    def constraint_margins(self, R_s, psi) -> dict:
        """Relative slack of every constraint (>= 0 means satisfied).

        ``bs``: ``1 - bs_power / P_t`` ``(...)``; ``irs``: ``1 - irs_power / P_s`` ``(..., L)`` (inf for
        a passive IRS); ``amp``: ``1 - max|psi| / a_max`` ``(..., L)`` (passive: ``-max||psi|-1|``);
        ``psd``: smallest eigenvalue of R_s,l relative to P_t ``(..., L)``.
        """
        bs = 1.0 - self.bs_power(R_s) / self.budget("P_t")
        if self.active:
            irs = 1.0 - self.irs_power(R_s, psi) / self.budget_broadcast("P_s")
            amp = 1.0 - psi.abs().amax(-1) / self.budget_broadcast("a_max")
        else:
            irs = torch.full(psi.shape[:-1], float("inf"), dtype=self.real_dtype)
            amp = -(psi.abs() - 1.0).abs().amax(-1)
        Rh = 0.5 * (R_s + R_s.conj().transpose(-1, -2))
        psd = torch.linalg.eigvalsh(Rh)[..., 0] / self.budget_broadcast("P_t")
        return {"bs": bs, "irs": irs, "amp": amp, "psd": psd}

    def is_feasible(self, R_s, psi, rtol: float = 1e-6) -> torch.Tensor:
        """All constraints hold within relative tolerance ``rtol``. Shape ``(...)`` bool."""
        m = self.constraint_margins(R_s, psi)
        ok = m["bs"] >= -rtol
        ok = ok & (m["irs"] >= -rtol).all(-1) & (m["amp"] >= -rtol).all(-1) & (m["psd"] >= -rtol).all(-1)
        return ok

    # ------------------------------------------------------------------ simple designs
    def isotropic_design(self) -> torch.Tensor:
        """``R_s,l = P_t / M I`` for every slot. Shape ``(..., L, M, M)``."""
        eye = torch.eye(self.M, dtype=self.G.dtype, device=self.G.device)
        pt = self.budget("P_t").to(self.G.dtype)
        R = (pt / self.M)[..., None, None, None] * eye if pt.dim() else pt / self.M * eye
        return R.expand(self.batch_shape + (self.L, self.M, self.M)).clone()

    def scale_psi_to_feasible(
        self, R_s: torch.Tensor, psi: torch.Tensor, amplitude_cap: bool = True, irs: int | None = None,
        P_s: torch.Tensor | None = None,
    ):
        """The one repair of psi: each psi_l scaled by a real factor to the largest value meeting C1
        (and |psi| <= a_max); a passive scenario gets unit-modulus psi (zeros become 1).

        The IRS power is ``s^4 P4 + s^2 P2`` in the scale s, so the largest feasible scale is a
        closed-form root (:func:`irs_torch.crb.c1_max_scale`); the CRB decreases with the scale.
        Shapes: R_s ``(..., L, M, M)``, psi ``(..., L, N)`` -> ``(..., L, N)``. With ``irs = l``
        (an unbatched scenario): psi ``(..., N)`` are candidates for IRS l alone -> ``(..., N)``.
        ``P_s``: an IRS power budget [W] used instead of the scenario's (broadcasting against ``(..., L)``;
        relaxed budgets of a continuation).
        """
        psi = psi.to(self.G.dtype)
        if not self.active:
            return torch.sgn(psi) + (psi == 0).to(psi.dtype)
        if irs is None:
            G, R, theta, phi, beta = self.G, R_s.to(self.G.dtype), self.theta, self.phi, self.beta
            per_irs = self.budget_broadcast
        else:
            l = int(irs)
            G, R, theta, phi, beta = self.G[l], R_s[l].to(psi.dtype), self.theta[l], self.phi[l], self.beta[l]
            per_irs = self.budget
        P4, P2 = crb_model.irs_power_coefficients(
            G, psi, R, theta, phi, beta, per_irs("sigma_r2"), self.N_h, self.N_v, self.d_h, self.d_v
        )
        s = crb_model.c1_max_scale(P4, P2, per_irs("P_s") if P_s is None else P_s)
        if amplitude_cap:
            amax = psi.abs().amax(-1)
            cap = per_irs("a_max") / torch.where(amax > 0, amax, torch.ones_like(amax))
            s = torch.minimum(s, cap)
        s = torch.where(torch.isfinite(s), s, torch.ones_like(s))
        return psi * s.unsqueeze(-1).to(psi.dtype)

    def random_phase_design(self, R_s: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        """Random-phase psi at the largest common amplitude meeting C1 and a_max (given R_s,
        default isotropic). The phases come from ``seed``. Shape ``(..., L, N)``."""
        if R_s is None:
            R_s = self.isotropic_design()
        g = torch.Generator().manual_seed(int(seed))
        ph = 2 * math.pi * torch.rand(self.batch_shape + (self.L, self.N), generator=g, dtype=torch.float64)
        psi = torch.polar(torch.ones_like(ph), ph).to(self.G.dtype)
        return self.scale_psi_to_feasible(R_s, psi)

    def __getitem__(self, idx) -> "Scenario":
        """Index the batch dimensions (``scenario[i]``)."""
        if not self.batch_shape:
            raise IndexError("Scenario is not batched")
        ch = {}
        for f in TENSOR_FIELDS:
            t = getattr(self, f)
            if t is not None:
                ch[f] = t[idx]
        for f in BUDGET_FIELDS:
            v = getattr(self, f)
            if torch.is_tensor(v) and v.dim():
                ch[f] = v[idx]
        return self.replace(**ch)

    @classmethod
    def stack(cls, scenarios: list["Scenario"]) -> "Scenario":
        """Stack unbatched scenarios of equal sizes into one batch (budgets become tensors)."""
        if not scenarios:
            raise ValueError("scenarios must be a non-empty list")
        s0 = scenarios[0]
        for i, s in enumerate(scenarios):
            if (s.M, s.N_h, s.N_v, s.L) != (s0.M, s0.N_h, s0.N_v, s0.L):
                raise ValueError(
                    f"scenario {i} has (M, N_h, N_v, L) = {(s.M, s.N_h, s.N_v, s.L)}, "
                    f"expected {(s0.M, s0.N_h, s0.N_v, s0.L)}"
                )
            if s.batch_shape:
                raise ValueError(f"scenario {i} is already batched (batch shape {tuple(s.batch_shape)})")
        ch = {}
        for f in TENSOR_FIELDS:
            if all(getattr(s, f) is not None for s in scenarios):
                ch[f] = torch.stack([torch.as_tensor(getattr(s, f)) for s in scenarios])
            else:
                ch[f] = None
        for f in BUDGET_FIELDS:
            vals = [float(getattr(s, f)) for s in scenarios]
            ch[f] = vals[0] if len(set(vals)) == 1 else torch.tensor(vals, dtype=s0.real_dtype)
        for f in ("T_c", "active", "d_h", "d_v"):
            vals = {getattr(s, f) for s in scenarios}
            if len(vals) > 1:
                raise ValueError(f"all scenarios must share {f}, got {sorted(vals)}")
        return s0.replace(seed=None, preset="batch", **ch)

    # ------------------------------------------------------------------ plain values and writing
    def to_dict(self) -> dict:
        """Plain numpy/str values keyed by the documented field names: the keys of a scenario file
        (read back, strictly, by :func:`irs_torch.scenario.files.load_scenario`)."""
        from irs_torch import __version__

        out: dict[str, Any] = {"format": SCENARIO_FORMAT, "version": __version__}
        for f in TENSOR_FIELDS:
            t = getattr(self, f)
            if t is not None:
                out[f] = torch.as_tensor(t).detach().cpu().numpy()
        for f in SCALAR_FIELDS:
            v = getattr(self, f)
            if torch.is_tensor(v):
                v = v.detach().cpu().numpy()
            out[f] = np.asarray(-1 if (f == "seed" and v is None) else v)
        out["L"] = np.asarray(self.L)
        return out

    def save(self, path) -> Path:
        """Write a ``.npz`` with the documented keys (:meth:`to_dict`). Atomic."""
        from irs_torch.outputs import atomic_savez

        return atomic_savez(path, self.to_dict())

    def export_mat(self, path) -> Path:
        """Write a MATLAB ``.mat`` file with the same keys as :meth:`save`."""
        from irs_torch.outputs import export_mat

        return export_mat(path, self.to_dict())

"""Scenario and Solution: validated, batched descriptions of systems and designs, presets, I/O.

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

The file format (``.npz``, see :meth:`Scenario.save`) uses exactly these names as keys, plus
``format`` = ``"irs-torch/scenario"``, ``version``, ``preset`` and ``L``. Reading is strict
(:meth:`Scenario.from_dict`): the keys of ``REQUIRED_KEYS`` must all be present (no defaults for
budgets or noise powers); M, N_h, N_v are integers; P_t, P_s, a_max, sigma_r2, sigma_b2 are scalars,
one value for all IRSs (in a batched file: scalars or arrays of the batch shape of G; per-IRS
budgets are not supported); ``L`` must equal the IRS count of G; theta and phi must agree with the
geometry (irs_pos, irs_yaw, target_pos) to ``ANGLE_TOL_RAD`` or are derived from it when left out;
seed is an integer >= 0, -1 meaning none. Any violation raises :class:`irs_torch.errors.InputError`
naming the field.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import importlib

_crb = importlib.import_module("irs_torch.crb")  # the module (the package re-exports the function `crb`)
from irs_torch.errors import InputError, InputTypeError
from irs_torch.physics.channels import rician_bs_irs_channel, target_coefficient
from irs_torch.physics.geometry import target_angles, direction_angles, dbm_to_watt

SCENARIO_FORMAT = "irs-torch/scenario"
SOLUTION_FORMAT = "irs-torch/solution"

_TENSOR_FIELDS = ("G", "theta", "phi", "beta", "bs_pos", "irs_pos", "irs_yaw", "target_pos")
_SCALAR_FIELDS = ("M", "N_h", "N_v", "d_h", "d_v", "d_bs", "wavelength", "sigma_r2", "sigma_b2",
                  "T_c", "P_t", "P_s", "a_max", "active", "K_db", "C0_db", "alpha", "beta_model",
                  "sigma_rcs", "seed", "preset")

# Fields read from a scenario file: required keys, integers, strings, budgets (scalars, or the
# batch shape of G in a batched file; per-IRS budgets are not supported), other real scalars.
REQUIRED_KEYS = ("G", "theta", "phi", "beta", "M", "N_h", "N_v", "d_h", "d_v", "sigma_r2", "sigma_b2",
                 "T_c", "P_t", "P_s", "a_max", "active")
_INT_FIELDS = ("M", "N_h", "N_v")
_STR_FIELDS = ("beta_model", "preset")
_BUDGET_FIELDS = ("sigma_r2", "sigma_b2", "P_t", "P_s", "a_max")
_REAL_SCALAR_FIELDS = ("d_h", "d_v", "d_bs", "wavelength", "T_c", "K_db", "C0_db", "alpha", "sigma_rcs")

# Largest admissible difference (rad) between stored angles and those of the stored geometry.
ANGLE_TOL_RAD = {torch.float64: 1e-9, torch.float32: 1e-5}

# Minimum node separation (m) and the smallest admissible cosine between a direction and an
# IRS normal (the target and the BS must be in front of every IRS, off its plane).
MIN_SEPARATION_M = 0.5
MIN_FRONT_COSINE = 0.05


def _version() -> str:
    from irs_torch import __version__

    return __version__


def _fmt(v) -> str:
    if torch.is_tensor(v):
        v = v.detach().cpu()
        return str(v.item()) if v.numel() == 1 else f"tensor of shape {tuple(v.shape)}"
    return repr(v)


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
            raise InputTypeError(f"G must be a complex torch tensor of shape (..., L, N, M), got {type(self.G).__name__}"
                            + (f" of dtype {self.G.dtype}" if torch.is_tensor(self.G) else ""))
        if self.G.dim() < 3:
            raise ValueError(f"G must have shape (..., L, N, M), got {tuple(self.G.shape)}")
        L, N, M = self.G.shape[-3:]
        if L < 1:
            raise InputError(f"G must hold at least one IRS, got shape {tuple(self.G.shape)}")
        if N != self.N_h * self.N_v or M != self.M:
            raise ValueError(f"G must have shape (..., L, N={self.N_h * self.N_v}, M={self.M}) for "
                             f"M={self.M}, N_h={self.N_h}, N_v={self.N_v}, got {tuple(self.G.shape)}")
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
        for name in _REAL_SCALAR_FIELDS:
            v = getattr(self, name)
            if not _is_real_scalar(v):
                what = f"shape {tuple(v.shape)}" if hasattr(v, "shape") and v.ndim else f"{v!r}"
                raise InputError(f"{name} must be a real scalar, got {what}")
        for name in _BUDGET_FIELDS:
            v = getattr(self, name)
            shape = tuple(torch.as_tensor(v).shape) if (torch.is_tensor(v) or isinstance(v, np.ndarray)) else ()
            if shape and shape != tuple(batch):
                where = f"or have the batch shape {tuple(batch)} of G" if batch else "(one value for all IRSs)"
                raise InputError(f"{name} must be a scalar {where}; per-IRS budgets are not supported, "
                                 f"got shape {shape}")
        for name in ("d_h", "d_v", "d_bs", "wavelength", "sigma_b2", "T_c", "P_t", "P_s", "a_max"):
            _check_positive(name, getattr(self, name))
        _check_positive("sigma_r2", self.sigma_r2, allow_zero=True)
        if self.active and (torch.as_tensor(self.sigma_r2) == 0).any():
            pass  # an ideal (noise-free) active IRS is allowed
        if self.T_c < self.L:
            raise ValueError(f"T_c must be >= L={self.L} (at least one symbol per IRS slot), got {self.T_c}")
        if self.beta_model not in ("pathloss", "radar"):
            raise ValueError(f"beta_model must be 'pathloss' or 'radar', got {self.beta_model!r}")
        self._check_geometry()

    def _check_geometry(self):
        batch = tuple(self.batch_shape)
        if self.bs_pos is not None:
            bs = torch.as_tensor(self.bs_pos, dtype=torch.float64)
            if bs.shape[-1:] != (3,) or tuple(bs.shape[:-1]) not in ((), batch):
                raise InputError(f"bs_pos must have shape {batch + (3,)}, got {tuple(bs.shape)}")
            if not torch.isfinite(bs).all():
                raise InputError("bs_pos contains NaN or inf values")
        if self.irs_pos is None or self.target_pos is None:
            return
        irs = torch.as_tensor(self.irs_pos, dtype=torch.float64)
        tgt = torch.as_tensor(self.target_pos, dtype=torch.float64)
        if irs.shape[-2:] != (self.L, 3) or tuple(irs.shape[:-2]) not in ((), batch):
            raise ValueError(f"irs_pos must have shape (..., L={self.L}, 3) with batch shape {batch}, "
                             f"got {tuple(irs.shape)}")
        if tgt.shape[-1:] != (3,) or tuple(tgt.shape[:-1]) not in ((), batch):
            raise ValueError(f"target_pos must have shape (..., 3) with batch shape {batch}, got {tuple(tgt.shape)}")
        yaw = torch.zeros(irs.shape[:-1], dtype=torch.float64) if self.irs_yaw is None else \
            torch.as_tensor(self.irs_yaw, dtype=torch.float64)
        if yaw.shape != irs.shape[:-1]:
            raise InputError(f"irs_yaw must have shape {tuple(irs.shape[:-1])} (one yaw per IRS), "
                             f"got {tuple(yaw.shape)}")
        for name, t in (("irs_pos", irs), ("target_pos", tgt), ("irs_yaw", yaw)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or inf values")
        _, _, d, front = target_angles(irs, yaw, tgt)
        if (d < MIN_SEPARATION_M).any():
            idx = int(torch.nonzero((d < MIN_SEPARATION_M).flatten())[0]) % self.L
            raise ValueError(f"target_pos is {d.flatten()[idx].item():.3g} m from IRS {idx + 1} "
                             f"(must be >= {MIN_SEPARATION_M} m): the target is on top of an IRS")
        if (front < MIN_FRONT_COSINE).any():
            idx = int(torch.nonzero((front < MIN_FRONT_COSINE).flatten())[0]) % self.L
            raise ValueError(f"target_pos is behind or in the plane of IRS {idx + 1} "
                             f"(cosine to its normal {front.flatten()[idx].item():.3g}, must be >= {MIN_FRONT_COSINE})")
        self._check_angles_match_geometry(irs, yaw, tgt)

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
                    f"{err.flatten()[i].item():.3g} rad > {tol:g}): the angles must agree with the geometry")

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
        for f in _TENSOR_FIELDS:
            t = getattr(self, f)
            if t is None:
                continue
            ch[f] = t.to(device=device, dtype=cd if t.is_complex() else rd)
        return self.replace(**ch)

    def _budget(self, name):
        v = getattr(self, name)
        return torch.as_tensor(v, dtype=self.real_dtype, device=self.G.device)

    def _per_irs(self, name):
        """A budget/noise broadcast against ``(..., L)``."""
        v = self._budget(name)
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

    def _args(self):
        return (self.theta, self.phi, self.beta)

    def crb(self, R_s: torch.Tensor, psi: torch.Tensor, validate: bool = True) -> _crb.CRBResult:
        """Per-IRS CRB. Shapes: R_s ``(..., L, M, M)``, psi ``(..., L, N)`` -> fields ``(..., L)``."""
        if validate:
            self.check_design(R_s, psi)
        psi = psi.to(self.G.dtype)
        return _crb.crb(self.G, psi, R_s.to(self.G.dtype), self.theta, self.phi, self.beta,
                        self._per_irs("sigma_r2"), self._per_irs("sigma_b2"), self.T_L,
                        self.N_h, self.N_v, self.d_h, self.d_v)

    def max_crb(self, R_s, psi) -> torch.Tensor:
        """The paper's objective, ``max_l tr(F_l^-1)``. Shape ``(...)``."""
        return self.crb(R_s, psi).total.amax(-1)

    def fisher_information(self, R_s, psi) -> torch.Tensor:
        """SI-unit FIM per IRS, ``(..., L, 4, 4)``; see :func:`irs_torch.crb.fisher_information`."""
        self.check_design(R_s, psi)
        return _crb.fisher_information(self.G, psi.to(self.G.dtype), R_s.to(self.G.dtype), self.theta,
                                       self.phi, self.beta, self._per_irs("sigma_r2"),
                                       self._per_irs("sigma_b2"), self.T_L, self.N_h, self.N_v,
                                       self.d_h, self.d_v)

    def irs_power(self, R_s, psi) -> torch.Tensor:
        """Left-hand side of C1 (eq. (7)) per IRS [W], ``(..., L)``. Zero for a passive IRS."""
        self.check_design(R_s, psi)
        p = _crb.irs_power(self.G, psi.to(self.G.dtype), R_s.to(self.G.dtype), self.theta, self.phi,
                           self.beta, self._per_irs("sigma_r2"), self.N_h, self.N_v, self.d_h, self.d_v)
        return p if self.active else torch.zeros_like(p)

    def bs_power(self, R_s) -> torch.Tensor:
        """Average BS power ``(1/L) sum_l tr(R_s,l)`` [W], ``(...)``."""
        self.check_design(R_s=R_s)
        return _crb.bs_power(R_s)

    def constraint_margins(self, R_s, psi) -> dict:
        """Relative slack of every constraint (>= 0 means satisfied).

        ``bs``: ``1 - bs_power / P_t`` ``(...)``; ``irs``: ``1 - irs_power / P_s`` ``(..., L)`` (inf for
        a passive IRS); ``amp``: ``1 - max|psi| / a_max`` ``(..., L)`` (passive: ``-max||psi|-1|``);
        ``psd``: smallest eigenvalue of R_s,l relative to P_t ``(..., L)``.
        """
        bs = 1.0 - self.bs_power(R_s) / self._budget("P_t")
        if self.active:
            irs = 1.0 - self.irs_power(R_s, psi) / self._per_irs("P_s")
            amp = 1.0 - psi.abs().amax(-1) / self._per_irs("a_max")
        else:
            irs = torch.full(psi.shape[:-1], float("inf"), dtype=self.real_dtype)
            amp = -(psi.abs() - 1.0).abs().amax(-1)
        Rh = 0.5 * (R_s + R_s.conj().transpose(-1, -2))
        psd = torch.linalg.eigvalsh(Rh)[..., 0] / self._per_irs("P_t")
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
        pt = self._budget("P_t").to(self.G.dtype)
        R = (pt / self.M)[..., None, None, None] * eye if pt.dim() else pt / self.M * eye
        return R.expand(self.batch_shape + (self.L, self.M, self.M)).clone()

    def scale_psi_to_feasible(self, R_s: torch.Tensor, psi: torch.Tensor, amplitude_cap: bool = True):
        """Scale each psi_l by a real factor to the largest value meeting C1 (and |psi| <= a_max).

        The IRS power is ``s^4 P4 + s^2 P2`` in the scale s, so the largest feasible scale is a
        closed-form root. A passive scenario returns unit-modulus psi. Shapes as :meth:`crb`.
        """
        psi = psi.to(self.G.dtype)
        if not self.active:
            return torch.sgn(psi) + (psi == 0).to(psi.dtype)
        P4, P2 = _crb.irs_power_coefficients(self.G, psi, R_s.to(self.G.dtype), self.theta, self.phi,
                                             self.beta, self._per_irs("sigma_r2"), self.N_h, self.N_v,
                                             self.d_h, self.d_v)
        s = _crb.c1_max_scale(P4, P2, self._per_irs("P_s"))
        if amplitude_cap:
            amax = psi.abs().amax(-1)
            cap = self._per_irs("a_max") / torch.where(amax > 0, amax, torch.ones_like(amax))
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
        for f in _TENSOR_FIELDS:
            t = getattr(self, f)
            if t is not None:
                ch[f] = t[idx]
        for f in ("sigma_r2", "sigma_b2", "P_t", "P_s", "a_max"):
            v = getattr(self, f)
            if torch.is_tensor(v) and v.dim():
                ch[f] = v[idx]
        return self.replace(**ch)

    # ------------------------------------------------------------------ presets
    @classmethod
    def paper(cls, seed: int = 0, *, M: int = 16, N_h: int = 4, N_v: int = 4, P_t: float = 20.0,
              P_s: float = 0.1, a_max: float = 8.0, active: bool = True, **overrides) -> "Scenario":
        """The scenario of the paper's Section V with the defaults of NOTES.md.

        BS at (0,0,0) (ULA along x), IRSs at (-5,10,0) and (-5,20,0) facing +x, target at (5,15,0),
        Rician K = 5 dB BS-IRS channels, PL(d) = -30 dB d^-2.2, |beta|^2 = PL(d_IT)^2,
        sigma_r^2 = sigma_b^2 = -80 dBm, T_c = 100. Channels and beta phases are drawn from ``seed``.
        """
        geom = dict(bs_pos=[0.0, 0.0, 0.0], irs_pos=[[-5.0, 10.0, 0.0], [-5.0, 20.0, 0.0]],
                    irs_yaw=[0.0, 0.0], target_pos=[5.0, 15.0, 0.0])
        for k in list(geom):
            if k in overrides:
                geom[k] = overrides.pop(k)
        return cls.from_geometry(seed=seed, M=M, N_h=N_h, N_v=N_v, P_t=P_t, P_s=P_s, a_max=a_max,
                                 active=active, preset="paper", **geom, **overrides)

    @classmethod
    def from_geometry(cls, *, bs_pos, irs_pos, irs_yaw, target_pos, M: int, N_h: int, N_v: int,
                      seed: int = 0, d_h: float = 0.5, d_v: float = 0.5, d_bs: float = 0.5,
                      wavelength: float = 0.1, K_db: float = 5.0, C0_db: float = -30.0,
                      alpha: float = 2.2, beta_model: str = "pathloss", sigma_rcs: float = 1.0,
                      sigma_r2: float | None = None, sigma_b2: float | None = None,
                      T_c: float = 100.0, P_t: float = 20.0, P_s: float = 0.1, a_max: float = 8.0,
                      active: bool = True, preset: str = "custom") -> "Scenario":
        """Build one (unbatched) scenario from positions; channels and beta phase from ``seed``."""
        sigma_r2 = dbm_to_watt(-80.0) if sigma_r2 is None else sigma_r2
        sigma_b2 = dbm_to_watt(-80.0) if sigma_b2 is None else sigma_b2
        bs = torch.as_tensor(bs_pos, dtype=torch.float64)
        irs = torch.as_tensor(irs_pos, dtype=torch.float64)
        yaw = torch.as_tensor(irs_yaw, dtype=torch.float64)
        tgt = torch.as_tensor(target_pos, dtype=torch.float64)
        if irs.dim() != 2 or irs.shape[-1] != 3:
            raise ValueError(f"irs_pos must have shape (L, 3), got {tuple(irs.shape)}")
        if yaw.shape != irs.shape[:1]:
            raise ValueError(f"irs_yaw must have shape ({irs.shape[0]},), got {tuple(yaw.shape)}")
        if bs.shape != (3,) or tgt.shape != (3,):
            raise ValueError(f"bs_pos and target_pos must have shape (3,), got {tuple(bs.shape)} and {tuple(tgt.shape)}")
        _, _, d_bi, front_bs = direction_angles(irs, yaw, bs.expand_as(irs))
        for l in range(irs.shape[0]):
            if d_bi[l] < MIN_SEPARATION_M:
                raise ValueError(f"bs_pos is {d_bi[l].item():.3g} m from IRS {l + 1} (must be >= {MIN_SEPARATION_M} m)")
            if front_bs[l] < MIN_FRONT_COSINE:
                raise ValueError(f"bs_pos is behind or in the plane of IRS {l + 1} "
                                 f"(cosine to its normal {front_bs[l].item():.3g})")
        # Validate the target geometry before drawing anything.
        theta, phi, d_it, front = target_angles(irs, yaw, tgt)
        for l in range(irs.shape[0]):
            if d_it[l] < MIN_SEPARATION_M:
                raise ValueError(f"target_pos is {d_it[l].item():.3g} m from IRS {l + 1} "
                                 f"(must be >= {MIN_SEPARATION_M} m): the target is on top of an IRS")
            if front[l] < MIN_FRONT_COSINE:
                raise ValueError(f"target_pos is behind or in the plane of IRS {l + 1} "
                                 f"(cosine to its normal {front[l].item():.3g}, must be >= {MIN_FRONT_COSINE})")
        gen = torch.Generator().manual_seed(int(seed))
        G = rician_bs_irs_channel(bs, irs, yaw, M, N_h, N_v, d_bs=d_bs, d_h=d_h, d_v=d_v, K_db=K_db,
                                  C0_db=C0_db, alpha=alpha, generator=gen)
        beta = target_coefficient(d_it, model=beta_model, sigma_rcs=sigma_rcs, wavelength=wavelength,
                                  C0_db=C0_db, alpha=alpha, generator=gen)
        return cls(G=G, theta=theta, phi=phi, beta=beta, M=M, N_h=N_h, N_v=N_v, d_h=d_h, d_v=d_v,
                   sigma_r2=sigma_r2, sigma_b2=sigma_b2, T_c=T_c, P_t=P_t, P_s=P_s, a_max=a_max,
                   active=active, bs_pos=bs, irs_pos=irs, irs_yaw=yaw, target_pos=tgt,
                   wavelength=wavelength, d_bs=d_bs, K_db=K_db, C0_db=C0_db, alpha=alpha,
                   beta_model=beta_model, sigma_rcs=sigma_rcs, seed=int(seed), preset=preset)

    @classmethod
    def random(cls, seed: int = 0, distribution: "GeometryDistribution | None" = None,
               **overrides) -> "Scenario":
        """A random geometry around the paper's scenario, drawn from ``seed``.

        See :class:`GeometryDistribution` for the ranges and the rejection rules.
        """
        dist = distribution or GeometryDistribution()
        return dist.sample(seed, **overrides)

    @classmethod
    def stack(cls, scenarios: list["Scenario"]) -> "Scenario":
        """Stack unbatched scenarios of equal sizes into one batch (budgets become tensors)."""
        if not scenarios:
            raise ValueError("scenarios must be a non-empty list")
        s0 = scenarios[0]
        for i, s in enumerate(scenarios):
            if (s.M, s.N_h, s.N_v, s.L) != (s0.M, s0.N_h, s0.N_v, s0.L):
                raise ValueError(f"scenario {i} has (M, N_h, N_v, L) = {(s.M, s.N_h, s.N_v, s.L)}, "
                                 f"expected {(s0.M, s0.N_h, s0.N_v, s0.L)}")
            if s.batch_shape:
                raise ValueError(f"scenario {i} is already batched (batch shape {tuple(s.batch_shape)})")
        ch = {}
        for f in _TENSOR_FIELDS:
            if all(getattr(s, f) is not None for s in scenarios):
                ch[f] = torch.stack([torch.as_tensor(getattr(s, f)) for s in scenarios])
            else:
                ch[f] = None
        for f in ("sigma_r2", "sigma_b2", "P_t", "P_s", "a_max"):
            vals = [float(getattr(s, f)) for s in scenarios]
            ch[f] = vals[0] if len(set(vals)) == 1 else torch.tensor(vals, dtype=s0.real_dtype)
        for f in ("T_c", "active", "d_h", "d_v"):
            vals = {getattr(s, f) for s in scenarios}
            if len(vals) > 1:
                raise ValueError(f"all scenarios must share {f}, got {sorted(vals)}")
        return s0.replace(seed=None, preset="batch", **ch)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """Plain numpy/str values keyed by the documented field names."""
        out: dict[str, Any] = {"format": SCENARIO_FORMAT, "version": _version()}
        for f in _TENSOR_FIELDS:
            t = getattr(self, f)
            if t is not None:
                out[f] = torch.as_tensor(t).detach().cpu().numpy()
        for f in _SCALAR_FIELDS:
            v = getattr(self, f)
            if torch.is_tensor(v):
                v = v.detach().cpu().numpy()
            out[f] = np.asarray(-1 if (f == "seed" and v is None) else v)
        out["L"] = np.asarray(self.L)
        return out

    def save(self, path) -> Path:
        """Write a ``.npz`` with the documented keys (see module docstring). Atomic."""
        return _atomic_savez(path, self.to_dict())

    def export_mat(self, path) -> Path:
        """Write a MATLAB ``.mat`` file with the same keys as :meth:`save`."""
        import scipy.io

        d = {k: v for k, v in self.to_dict().items()}
        scipy.io.savemat(str(path), d, do_compression=True)
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "Scenario":
        """A scenario from the file keys (module docstring); strict.

        Every key of ``REQUIRED_KEYS`` must be present (no defaults for budgets or noise powers);
        theta and phi may be left out when the geometry (irs_pos, target_pos, optionally irs_yaw)
        is given, and are then derived from it (if given, they must agree with it, see
        ``ANGLE_TOL_RAD``). M, N_h, N_v must be integers (4.0 is accepted, 4.7 is not); budgets and
        noise powers scalars (or the batch shape of G in a batched file); an ``L`` key must equal
        the number of IRSs in G; seed is an integer >= 0, or -1 for none. Raises
        :class:`irs_torch.errors.InputError` naming the field.
        """
        fmt = str(np.asarray(d.get("format", ""))) if "format" in d else None
        if fmt is not None and fmt != SCENARIO_FORMAT:
            raise InputError(f"{source}: format is {fmt!r}, expected {SCENARIO_FORMAT!r} "
                             f"(is this a solution file?)")
        has_geom = "irs_pos" in d and "target_pos" in d
        missing = [k for k in REQUIRED_KEYS if k not in d and not (has_geom and k in ("theta", "phi"))]
        if missing:
            raise InputError(f"{source}: missing keys {missing}")
        kw: dict[str, Any] = {}
        for f in _TENSOR_FIELDS:
            if f not in d:
                continue
            a = np.asarray(d[f])
            kinds = "c" if f == "G" else ("iufc" if f == "beta" else "iuf")
            if a.dtype.kind not in kinds:
                want = "complex" if f == "G" else ("numeric" if f == "beta" else "real")
                raise InputError(f"{source}: {f} must be a {want} array, got dtype {a.dtype}")
            kw[f] = torch.from_numpy(np.array(a))
        G = kw["G"]
        if G.dim() < 3:
            raise InputError(f"{source}: G must have shape (..., L, N, M), got {tuple(G.shape)}")
        batch = tuple(G.shape[:-3])
        for f in _SCALAR_FIELDS:
            if f not in d:
                continue
            v = np.asarray(d[f])
            if f in _STR_FIELDS:
                if v.dtype.kind not in "US" or v.ndim:
                    raise InputError(f"{source}: {f} must be a string, got {_show(v)}")
                kw[f] = str(v)
                continue
            if v.dtype.kind not in "biuf":
                raise InputError(f"{source}: {f} must be a number, got {_show(v)} (dtype {v.dtype})")
            if f in _BUDGET_FIELDS:
                if v.ndim and v.shape != batch:
                    where = f"or have the batch shape {batch} of G" if batch else "(one value for all IRSs)"
                    raise InputError(f"{source}: {f} must be a scalar {where}; per-IRS budgets are not "
                                     f"supported, got shape {v.shape}")
                kw[f] = torch.from_numpy(v.astype(np.float64)) if v.ndim else float(v)
                continue
            if v.ndim:
                raise InputError(f"{source}: {f} must be a scalar, got shape {v.shape}")
            if f in _INT_FIELDS or f == "seed":
                kw[f] = _file_int(f, v, source)
                if f == "seed":
                    if kw[f] < -1:
                        raise InputError(f"{source}: seed must be >= 0 (or -1 for none), got {kw[f]}")
                    kw[f] = None if kw[f] == -1 else kw[f]
            elif f == "active":
                if float(v) not in (0.0, 1.0):
                    raise InputError(f"{source}: active must be a boolean (0 or 1), got {_show(v)}")
                kw[f] = bool(v)
            else:
                kw[f] = float(v)
        if "L" in d:
            Lf = np.asarray(d["L"])
            if Lf.ndim or Lf.dtype.kind not in "iuf" or _file_int("L", Lf, source) != G.shape[-3]:
                raise InputError(f"{source}: L is {_show(Lf)} but G holds {G.shape[-3]} IRSs (shape {tuple(G.shape)})")
        if has_geom and ("theta" not in kw or "phi" not in kw):
            irs = kw["irs_pos"].to(torch.float64)
            yaw = kw["irs_yaw"].to(torch.float64) if "irs_yaw" in kw else torch.zeros(irs.shape[:-1], dtype=torch.float64)
            if irs.shape[-1:] != (3,) or yaw.shape != irs.shape[:-1] or kw["target_pos"].shape[-1:] != (3,):
                raise InputError(f"{source}: irs_pos (..., L, 3), irs_yaw (..., L) and target_pos (..., 3) have "
                                 f"shapes {tuple(irs.shape)}, {tuple(yaw.shape)}, {tuple(kw['target_pos'].shape)}")
            th, ph, _, _ = target_angles(irs, yaw, kw["target_pos"].to(torch.float64))
            kw.setdefault("theta", th)
            kw.setdefault("phi", ph)
        try:
            return cls(**kw)
        except (ValueError, TypeError) as e:
            msg = str(e)
            raise InputError(msg if msg.startswith(source) else f"{source}: {msg}") from None

    @classmethod
    def load(cls, path) -> "Scenario":
        """Read a scenario ``.npz`` written by :meth:`save` (or by hand with the same keys)."""
        d = _load_npz(path, "scenario")
        try:
            return cls.from_dict(d, source=str(path))
        except (ValueError, TypeError) as e:
            msg = str(e)
            raise InputError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


@dataclass(frozen=True)
class GeometryDistribution:
    """Random geometries around the paper's scenario (used by :meth:`Scenario.random`).

    The BS sits at the origin with its ULA along +x. IRS l sits at ``x = irs_x + U(-jitter, jitter)``,
    ``y = irs_y[l] + U(-jitter, jitter)``, ``z = 0``, with yaw ``U(-yaw_max, yaw_max)`` (rad). The target
    is uniform in the box ``target_x x target_y`` at z = 0. Budgets are uniform in their ranges.

    Rejection rules (a draw breaking any is redrawn, deterministically from the seed): every pair of
    nodes (BS, IRSs, target) at least ``min_separation`` m apart; the target and the BS in front of
    every IRS with cosine to its normal >= ``min_front_cosine`` (not behind or grazing the surface).
    """

    M: int = 16
    N_h: int = 4
    N_v: int = 4
    L: int = 2
    irs_x: float = -5.0
    irs_y: tuple = (10.0, 20.0)
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
        """The rejection rule (see class docstring)."""
        nodes = np.vstack([bs[None], irs, tgt[None]])
        dd = np.linalg.norm(nodes[:, None] - nodes[None], axis=-1)
        if (dd[np.triu_indices(len(nodes), 1)] < self.min_separation).any():
            return False
        n = np.stack([np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)], -1)
        for p in (tgt, bs):
            k = p[None] - irs
            k /= np.linalg.norm(k, axis=-1, keepdims=True)
            if ((k * n).sum(-1) < self.min_front_cosine).any():
                return False
        return True

    def sample(self, seed: int, **overrides) -> Scenario:
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
        return Scenario.from_geometry(bs_pos=bs, irs_pos=irs, irs_yaw=yaw, target_pos=tgt, seed=seed,
                                      preset="random", **kw)


@dataclass(frozen=True)
class Solution:
    """A design (R_s, psi) for a scenario, with its per-IRS CRB and metadata.

    Shapes: R_s ``(L, M, M)`` complex [W]; psi ``(L, N)`` complex; crb ``(L,)`` tr(F^-1) as the torch
    model computes it. ``method``: how it was obtained; ``metadata``: JSON-serialisable dict
    (seeds, solver settings, timings, version). File keys: ``R_s``, ``psi``, ``crb``, ``crb_theta``,
    ``crb_phi``, ``max_crb``, ``method``, ``metadata`` (JSON string), ``format``, ``version``; extra
    arrays in ``arrays`` are stored under their own names.
    """

    R_s: torch.Tensor
    psi: torch.Tensor
    crb: torch.Tensor | None = None
    method: str = "custom"
    metadata: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("R_s", "psi"):
            t = getattr(self, name)
            if not torch.is_tensor(t):
                object.__setattr__(self, name, torch.as_tensor(np.asarray(t)))
        if self.R_s.dim() < 3 or self.R_s.shape[-1] != self.R_s.shape[-2]:
            raise ValueError(f"R_s must have shape (L, M, M), got {tuple(self.R_s.shape)}")
        if self.psi.dim() < 2 or self.psi.shape[-2] != self.R_s.shape[-3]:
            raise ValueError(f"psi must have shape (L={self.R_s.shape[-3]}, N), got {tuple(self.psi.shape)}")
        for name in ("R_s", "psi"):
            if not torch.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} contains NaN or inf values")

    @classmethod
    def evaluate(cls, scenario: Scenario, R_s, psi, method: str = "custom", metadata: dict | None = None,
                 arrays: dict | None = None) -> "Solution":
        """A Solution whose ``crb`` is computed by the torch model for ``scenario``."""
        R_s = R_s.to(scenario.G.dtype)
        psi = psi.to(scenario.G.dtype)
        c = scenario.crb(R_s, psi)
        md = {"version": _version(), "scenario_seed": scenario.seed, "scenario_preset": scenario.preset}
        md.update(metadata or {})
        arr = {"crb_theta": c.theta.detach(), "crb_phi": c.phi.detach()}
        arr.update(arrays or {})
        return cls(R_s=R_s.detach(), psi=psi.detach(), crb=c.total.detach(), method=method, metadata=md,
                   arrays=arr)

    def check_compatible(self, scenario: Scenario, source: str = "solution"):
        L, M, N = scenario.L, scenario.M, scenario.N
        if tuple(self.R_s.shape[-3:]) != (L, M, M) or tuple(self.psi.shape[-2:]) != (L, N):
            raise ValueError(f"{source} has R_s {tuple(self.R_s.shape)} and psi {tuple(self.psi.shape)}, "
                             f"but the scenario needs R_s (L={L}, M={M}, M={M}) and psi (L={L}, N={N})")

    def to_dict(self) -> dict:
        out = {"format": SOLUTION_FORMAT, "version": _version(), "R_s": self.R_s.detach().cpu().numpy(),
               "psi": self.psi.detach().cpu().numpy(), "method": np.asarray(self.method),
               "metadata": np.asarray(_strict_json(self.metadata))}
        if self.crb is not None:
            c = torch.as_tensor(self.crb).detach().cpu().numpy()
            out["crb"] = c
            out["max_crb"] = np.asarray(c.max(-1))
        for k, v in self.arrays.items():
            out[k] = torch.as_tensor(v).detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
        return out

    def save(self, path) -> Path:
        """Write a ``.npz`` (keys in the class docstring). Atomic."""
        return _atomic_savez(path, self.to_dict())

    def export_mat(self, path) -> Path:
        """Write a MATLAB ``.mat`` file with the same keys as :meth:`save`."""
        import scipy.io

        scipy.io.savemat(str(path), self.to_dict(), do_compression=True)
        return Path(path)

    @classmethod
    def load(cls, path) -> "Solution":
        d = _load_npz(path, "solution")
        fmt = str(d["format"]) if "format" in d else SOLUTION_FORMAT
        if fmt != SOLUTION_FORMAT:
            raise ValueError(f"{path}: format is {fmt!r}, expected {SOLUTION_FORMAT!r} (is this a scenario file?)")
        for k in ("R_s", "psi"):
            if k not in d:
                raise ValueError(f"{path}: missing key {k!r}")
        known = {"format", "version", "R_s", "psi", "crb", "max_crb", "method", "metadata"}
        try:
            md = json.loads(str(d["metadata"])) if "metadata" in d else {}
        except ValueError as e:
            raise InputError(f"{path}: metadata is not valid JSON ({e})") from None
        for k, v in d.items():
            if k not in known and np.asarray(v).dtype.kind not in "biufc":
                raise InputError(f"{path}: array {k} must be numeric, got dtype {np.asarray(v).dtype}")
        arrays = {k: torch.from_numpy(np.array(v)) for k, v in d.items() if k not in known}
        for k in ("R_s", "psi", "crb"):
            if k in d and np.asarray(d[k]).dtype.kind not in "iufc":
                raise InputError(f"{path}: {k} must be a numeric array, got dtype {np.asarray(d[k]).dtype}")
        try:
            return cls(R_s=torch.from_numpy(np.array(d["R_s"])), psi=torch.from_numpy(np.array(d["psi"])),
                       crb=torch.from_numpy(np.array(d["crb"])) if "crb" in d else None,
                       method=str(d.get("method", "custom")), metadata=md, arrays=arrays)
        except (ValueError, TypeError) as e:
            raise InputError(f"{path}: {e}") from None


def _show(v: np.ndarray) -> str:
    return repr(v.item()) if v.ndim == 0 else f"an array of shape {v.shape}"


def _file_int(name: str, v: np.ndarray, source: str) -> int:
    """An integer read from a file: integer dtype, or a float with an integral value."""
    if v.dtype.kind in "iu":
        return int(v)
    x = float(v)
    if v.dtype.kind == "b" or not math.isfinite(x) or x != round(x):
        raise InputError(f"{source}: {name} must be an integer, got {_show(v)}")
    return int(x)


def _strict_json(obj) -> str:
    from irs_torch.outputs import dumps

    return dumps(obj)


def _atomic_savez(path, d: dict) -> Path:
    import os
    import tempfile

    from irs_torch.outputs import apply_file_mode, npz_path

    path = npz_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        apply_file_mode(fd)  # mkstemp makes 0600; give the mode of a plain open() (umask)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **d)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _load_npz(path, what: str) -> dict:
    import zipfile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable {what} .npz file ({e})") from None

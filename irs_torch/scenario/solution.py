"""The :class:`Solution` dataclass: a design (R_s, psi) with its per-IRS CRB, metadata and file I/O."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from irs_torch.errors import InputError
from irs_torch.outputs import atomic_savez, dumps
from irs_torch.scenario.files import SOLUTION_FORMAT, load_npz, package_version
from irs_torch.scenario.model import Scenario


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
        md = {"version": package_version(), "scenario_seed": scenario.seed, "scenario_preset": scenario.preset}
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
        out = {"format": SOLUTION_FORMAT, "version": package_version(), "R_s": self.R_s.detach().cpu().numpy(),
               "psi": self.psi.detach().cpu().numpy(), "method": np.asarray(self.method),
               "metadata": np.asarray(dumps(self.metadata))}
        if self.crb is not None:
            c = torch.as_tensor(self.crb).detach().cpu().numpy()
            out["crb"] = c
            out["max_crb"] = np.asarray(c.max(-1))
        for k, v in self.arrays.items():
            out[k] = torch.as_tensor(v).detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
        return out

    def save(self, path) -> Path:
        """Write a ``.npz`` (keys in the class docstring). Atomic."""
        return atomic_savez(path, self.to_dict())

    def export_mat(self, path) -> Path:
        """Write a MATLAB ``.mat`` file with the same keys as :meth:`save`."""
        from irs_torch.outputs import export_mat

        return export_mat(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "Solution":
        d = load_npz(path, "solution")
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


def design_summary(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor) -> dict:
    """A design on a scenario as plain Python values (the report of ``irs-torch crb``): per IRS the CRB
    tr(F^-1), the angle CRBs and root-CRBs [deg], IRS power against P_s; BS power against P_t; the largest
    amplitude against a_max; max-CRB, feasibility and the constraint margins."""
    c = scenario.crb(R_s, psi)
    irs = scenario.irs_power(R_s, psi)
    bs = scenario.bs_power(R_s)
    m = scenario.constraint_margins(R_s, psi)
    deg = 180.0 / math.pi
    tl = lambda t: [float(x) for x in t.detach().flatten()]  # noqa: E731
    return {
        "crb": tl(c.total),
        "crb_angles": tl(c.angles),
        "crb_theta": tl(c.theta),
        "crb_phi": tl(c.phi),
        "root_crb_theta_deg": [math.sqrt(x) * deg for x in tl(c.theta)],
        "root_crb_phi_deg": [math.sqrt(x) * deg for x in tl(c.phi)],
        "irs_power": tl(irs),
        "P_s": float(scenario.P_s),
        "bs_power": float(bs),
        "P_t": float(scenario.P_t),
        "max_amplitude": tl(psi.abs().amax(-1)),
        "a_max": float(scenario.a_max),
        "max_crb": float(c.total.max()),
        "feasible": bool(scenario.is_feasible(R_s, psi, rtol=1e-6)),
        "margins": {k: tl(v) for k, v in m.items()},
    }

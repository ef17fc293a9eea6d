"""Where the target may be: a :class:`Region` (a box or a covariance ellipse in the plane the IRSs
see), its K candidate positions (:meth:`Region.points`) and its prior covariance, and the command line's
region spec (:func:`parse_region_spec`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from irs_torch.errors import InputError

POINT_KINDS = ("ring", "sample")
REGION_KINDS = ("box", "ellipse")


# ----------------------------------------------------------------------------- the region
def _finite_array(name, v, shape):
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a real array of shape {shape}, got {v!r}") from None
    if a.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} must be finite, got {a.tolist()}")
    return a


@dataclass(frozen=True)
class Region:
    """Where the target may be: a box or an ellipse in the horizontal plane ``z = centre[2]``
    (the plane the IRSs see in the paper's geometry), in m.

    * ``Region.box(centre_xyz, (dx, dy))``: ``|x - cx| <= dx``, ``|y - cy| <= dy`` (half-widths, m);
    * ``Region.ellipse(centre_xyz, cov, k_sigma=2)``: ``p^T cov^-1 p <= k_sigma^2`` for the offset
      ``p = (x - cx, y - cy)`` (cov ``(2, 2)`` symmetric PSD in m^2, e.g. a position estimate's
      covariance; k_sigma = 2: the 2-sigma ellipse).

    Both are ``{centre + A u}`` for ``u`` in the unit square (box) or the unit disk (ellipse), with
    the shape matrix ``A`` (:attr:`shape_matrix`, 2 x 2, m). Zero sizes are allowed (a point).
    Invalid values raise :class:`~irs_torch.errors.InputError` naming the field.
    """

    kind: str
    centre: tuple
    half_widths: tuple | None = None
    cov: tuple | None = None
    k_sigma: float = 2.0

    def __post_init__(self):
        if self.kind not in REGION_KINDS:
            raise InputError(f"region kind must be one of {REGION_KINDS}, got {self.kind!r}")
        c = _finite_array("centre", self.centre, (3,))
        object.__setattr__(self, "centre", tuple(float(x) for x in c))
        if self.kind == "box":
            hw = _finite_array("half_widths", self.half_widths, (2,))
            if (hw < 0).any():
                raise InputError(f"half_widths must be >= 0 m, got {hw.tolist()}")
            object.__setattr__(self, "half_widths", tuple(float(x) for x in hw))
        else:
            C = _finite_array("cov", self.cov, (2, 2))
            if abs(C[0, 1] - C[1, 0]) > 1e-12 * max(abs(C).max(), 1e-300):
                raise InputError(f"cov must be symmetric, got {C.tolist()}")
            lam = np.linalg.eigvalsh(0.5 * (C + C.T))
            if (np.diag(C) < 0).any() or lam[0] < -1e-12 * max(lam[-1], 1e-300):
                raise InputError(f"cov must be positive semidefinite (variances >= 0 m^2), got {C.tolist()} "
                                 f"(eigenvalues {lam.tolist()})")
            object.__setattr__(self, "cov", tuple(tuple(float(x) for x in row) for row in 0.5 * (C + C.T)))
            k = self.k_sigma
            if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k <= 0:
                raise InputError(f"k_sigma must be a finite number > 0, got {k!r}")
            object.__setattr__(self, "k_sigma", float(k))

    @classmethod
    def box(cls, centre_xyz, half_widths_xy) -> "Region":
        """A box with half-widths ``(dx, dy)`` [m] around ``centre_xyz`` ``(3,)`` [m]."""
        return cls("box", centre_xyz, half_widths=half_widths_xy)

    @classmethod
    def ellipse(cls, centre_xyz, cov_2x2, k_sigma: float = 2.0) -> "Region":
        """The ``k_sigma`` ellipse of the x-y covariance ``cov_2x2`` [m^2] around ``centre_xyz`` [m]."""
        return cls("ellipse", centre_xyz, cov=cov_2x2, k_sigma=k_sigma)

    # -- geometry
    @property
    def shape_matrix(self) -> np.ndarray:
        """``A`` (2, 2) [m]: the region is ``centre + A u`` for u in the unit square / disk."""
        if self.kind == "box":
            return np.diag(self.half_widths)
        lam, V = np.linalg.eigh(np.asarray(self.cov))
        return self.k_sigma * V * np.sqrt(np.clip(lam, 0, None))

    @property
    def size(self) -> float:
        """Largest distance from the centre to the boundary [m]."""
        return float(np.linalg.norm(self.shape_matrix, 2)) if self.kind == "ellipse" else \
            float(np.hypot(*self.half_widths))

    def prior_covariance(self) -> np.ndarray:
        """Position covariance of the prior (2, 2) [m^2]: the ellipse's ``cov``; for a box the uniform
        box's ``diag(dx^2, dy^2) / 3``."""
        if self.kind == "box":
            return np.diag(np.asarray(self.half_widths) ** 2 / 3.0)
        return np.asarray(self.cov)

    def _xyz(self, u: np.ndarray) -> torch.Tensor:
        p = u @ self.shape_matrix.T
        out = np.repeat(np.asarray(self.centre)[None], len(u), 0)
        out[:, :2] += p
        return torch.from_numpy(out)

    def _boundary_u(self, n: int) -> np.ndarray:
        t = np.arange(n) / max(n, 1)
        if self.kind == "ellipse":
            return np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], -1)
        # square perimeter from the corner (1, 1), counter-clockwise, arc-length uniform
        s = 8.0 * t
        u = np.empty((n, 2))
        for i, si in enumerate(s):
            side, f = int(si // 2) % 4, (si % 2)
            u[i] = [(1 - f, 1), (-1, 1 - f), (-1 + f, -1), (1, -1 + f)][side]
        return u

    def points(self, K: int, seed: int = 0, kind: str = "ring") -> torch.Tensor:
        """K candidate positions ``(K, 3)`` float64 [m]; the first is the centre.

        ``kind="ring"`` (deterministic): the centre and K - 1 points evenly spaced along the boundary
        (box: by arc length from a corner, so K = 5 gives the corners and K = 9 the 3 x 3 grid;
        ellipse: evenly in the angle of ``u``). ``kind="sample"``: the centre and K - 1 points drawn
        uniformly in the region from ``seed``. K = 1: the centre.
        """
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise InputError(f"K (number of region points) must be an integer >= 1, got {K!r}")
        if kind not in POINT_KINDS:
            raise InputError(f"points kind must be one of {POINT_KINDS}, got {kind!r}")
        K = int(K)
        if kind == "ring":
            u = np.vstack([np.zeros((1, 2)), self._boundary_u(K - 1)])
        else:
            rng = np.random.default_rng(int(seed))
            if self.kind == "box":
                v = rng.uniform(-1, 1, (K - 1, 2))
            else:
                r, a = np.sqrt(rng.uniform(0, 1, K - 1)), rng.uniform(0, 2 * np.pi, K - 1)
                v = np.stack([r * np.cos(a), r * np.sin(a)], -1)
            u = np.vstack([np.zeros((1, 2)), v])
        return self._xyz(u[:K])

    def grid(self, n: int = 11) -> torch.Tensor:
        """Evaluation points ``(P, 3)`` [m]: the ``n x n`` lattice of the bounding square of ``u``
        (kept where inside the region) plus ``4 (n - 1)`` boundary points."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise InputError(f"grid size n must be an integer >= 2, got {n!r}")
        g = np.linspace(-1, 1, int(n))
        u = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        if self.kind == "ellipse":
            u = u[(u ** 2).sum(-1) <= 1 + 1e-12]
            u = np.vstack([u, self._boundary_u(4 * (int(n) - 1))])
        return self._xyz(u)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "centre": list(self.centre)}
        if self.kind == "box":
            d["half_widths"] = list(self.half_widths)
        else:
            d["cov"] = [list(r) for r in self.cov]
            d["k_sigma"] = self.k_sigma
        d["size_m"] = self.size
        return d


def parse_region_spec(spec: str, centre_xyz) -> Region:
    """A :class:`Region` around ``centre_xyz`` [m] from a command-line spec:
    ``box:D`` or ``box:DX,DY`` (half-widths, m) or ``ellipse:SXX,SXY,SYY[,K]`` (x-y covariance in m^2,
    K: k_sigma, default 2). Raises :class:`~irs_torch.errors.InputError` naming ``--region``."""
    kind, _, rest = str(spec).partition(":")
    try:
        vals = [float(v) for v in rest.split(",")] if rest else []
    except ValueError:
        raise InputError(f"--region {spec!r}: values must be numbers (box:DX,DY or ellipse:SXX,SXY,SYY[,K])") from None
    try:
        if kind == "box" and len(vals) in (1, 2):
            return Region.box(centre_xyz, vals * 2 if len(vals) == 1 else vals)
        if kind == "ellipse" and len(vals) in (3, 4):
            cov = [[vals[0], vals[1]], [vals[1], vals[2]]]
            return Region.ellipse(centre_xyz, cov, k_sigma=vals[3] if len(vals) == 4 else 2.0)
    except InputError as e:
        raise InputError(f"--region {spec!r}: {e}") from None
    raise InputError(f"--region must be box:D, box:DX,DY or ellipse:SXX,SXY,SYY[,K], got {spec!r}")

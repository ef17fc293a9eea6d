"""The scenario file format (``.npz``) and the shared ``.npz`` reader.

A scenario file (:meth:`Scenario.save <irs_torch.scenario.model.Scenario.save>`) uses the field
names of :mod:`irs_torch.scenario.model` as keys, plus ``format`` = ``"irs-torch/scenario"``,
``version``, ``preset`` and ``L``. Reading is strict (:func:`scenario_from_dict`): the keys of
``REQUIRED_KEYS`` must all be present (no defaults for budgets or noise powers); M, N_h, N_v are
integers; P_t, P_s, a_max, sigma_r2, sigma_b2 are scalars, one value for all IRSs (in a batched
file: scalars or arrays of the batch shape of G; per-IRS budgets are not supported); ``L`` must
equal the IRS count of G; theta and phi must agree with the geometry (irs_pos, irs_yaw,
target_pos) to ``ANGLE_TOL_RAD`` or are derived from it when left out; seed is an integer >= 0,
-1 meaning none. Any violation raises :class:`irs_torch.errors.InputError` naming the field.
Files are data, never code: ``np.load(allow_pickle=False)``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irs_torch.errors import InputError
from irs_torch.physics.geometry import target_angles
from irs_torch.scenario.model import BUDGET_FIELDS, SCALAR_FIELDS, SCENARIO_FORMAT, TENSOR_FIELDS, Scenario

SOLUTION_FORMAT = "irs-torch/solution"

# Fields read from a scenario file: required keys, integers, strings.
REQUIRED_KEYS = ("G", "theta", "phi", "beta", "M", "N_h", "N_v", "d_h", "d_v", "sigma_r2", "sigma_b2",
                 "T_c", "P_t", "P_s", "a_max", "active")
_INT_FIELDS = ("M", "N_h", "N_v")
_STR_FIELDS = ("beta_model", "preset")


def package_version() -> str:
    """The irs-torch version written into every file."""
    from irs_torch import __version__

    return __version__


def scenario_from_dict(d: dict, source: str = "<dict>") -> Scenario:
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
    for f in TENSOR_FIELDS:
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
    for f in SCALAR_FIELDS:
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
        if f in BUDGET_FIELDS:
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
            if not math.isfinite(kw[f]):
                raise InputError(f"{source}: {f} must be a finite number, got {kw[f]}")
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
        return Scenario(**kw)
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def load_scenario(path) -> Scenario:
    """Read a scenario ``.npz`` written by :meth:`Scenario.save` (or by hand with the same keys)."""
    d = load_npz(path, "scenario", keys=scenario_file_keys())
    try:
        return scenario_from_dict(d, source=str(path))
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


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


def scenario_file_keys() -> tuple:
    """The keys a scenario file may hold (any other key is not read)."""
    return tuple(dict.fromkeys((*REQUIRED_KEYS, *TENSOR_FIELDS, *SCALAR_FIELDS, "format", "version", "L")))


def _npy_header(zf, name: str):
    """(shape, dtype) of member ``name`` of an open ``.npz`` zip, from its ``.npy`` header only."""
    from numpy.lib import format as npf

    with zf.open(name + ".npy") as fh:
        version = npf.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npf.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = npf.read_array_header_2_0(fh)
        else:
            raise ValueError(f"array {name}: .npy format version {version} is not read")
    return shape, dtype


def load_npz(path, what: str, keys=None) -> dict:
    """The arrays of a ``.npz`` file (no pickles); FileNotFoundError or InputError naming the file.

    Only the arrays named in ``keys`` (all if None) are read. Before anything is loaded: the path is
    a regular file (not a directory, named pipe or device), a zip archive (a ``.mat``, text or pickle
    file is refused as such), with at most :data:`irs_torch.limits.MAX_NPZ_KEYS` arrays, and the
    arrays to read hold at most :data:`irs_torch.limits.MAX_NPZ_ELEMENTS` elements together (from
    their ``.npy`` headers), so a small compressed file cannot make a huge allocation."""
    import zipfile

    from irs_torch.limits import MAX_NPZ_ELEMENTS, MAX_NPZ_KEYS

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file (a directory, named pipe or device); a {what} file is a .npz")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a readable {what} .npz file: not a zip archive of .npy arrays (.mat, text "
                         f"and pickle files are not read)")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [k for k in z.files if keys is None or k in keys]
            if len(z.files) > MAX_NPZ_KEYS:
                raise InputError(f"{path}: {len(z.files)} arrays, more than the {MAX_NPZ_KEYS} a {what} file may hold")
            total = 0
            for k in names:
                shape, dtype = _npy_header(z.zip, k)
                if dtype.hasobject:
                    raise InputError(f"{path}: array {k} holds Python objects (dtype {dtype}); {what} files hold "
                                     f"numbers and strings only")
                n = int(np.prod(shape, dtype=object)) if shape else 1
                total += n
                if total > MAX_NPZ_ELEMENTS:
                    raise InputError(f"{path}: array {k} (shape {tuple(shape)}) takes the file over "
                                     f"{MAX_NPZ_ELEMENTS} elements, more than a {what} file may hold")
            return {k: z[k] for k in names}
    except InputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise InputError(f"{path}: not a readable {what} .npz file ({type(e).__name__}: {e})") from None

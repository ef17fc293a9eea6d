"""The on-disk format of a data set: HDF5 shards and a JSON manifest.

A data set is a directory::

    DIR/manifest.json            config, seeds, versions, counts, failures, shard list, field list
    DIR/shards/shard-00000.h5    instances 0 .. S-1           (S = shard_size)
    DIR/shards/shard-00001.h5    instances S .. 2S-1, ...

Instance ``i`` belongs to shard ``i // shard_size``. A shard holds the instances of its id range
that were solved (sorted by ``instance_id``); the failed ones are listed in its ``failures``
attribute and in the manifest. Every dataset of a shard has a leading instance dimension K
(the number of stored instances; 0 is allowed):

==================  ==============  ==========  ===============================================
dataset             shape           dtype       meaning (unit)
==================  ==============  ==========  ===============================================
G                   (K, L, N, M)    complex128  BS -> IRS l channel
theta, phi          (K, L)          float64     target direction seen from IRS l (rad)
beta                (K, L)          complex128  round-trip target coefficient
bs_pos              (K, 3)          float64     BS position (m)
irs_pos             (K, L, 3)       float64     IRS positions (m)
irs_yaw             (K, L)          float64     IRS yaw (rad); normal (cos, sin, 0)
target_pos          (K, 3)          float64     target position (m)
P_t, P_s            (K,)            float64     BS / IRS power budgets (W)
a_max               (K,)            float64     IRS amplitude limit (linear)
sigma_r2, sigma_b2  (K,)            float64     IRS / BS noise power (W)
T_c                 (K,)            float64     radar dwell time (symbols)
R_s                 (K, L, M, M)    complex128  label: transmit covariance of slot l (W)
psi                 (K, L, N)       complex128  label: reflection vector of IRS l
crb                 (K, L)          float64     label: tr(F_l^-1) of (R_s, psi), torch model
crb_theta, crb_phi  (K, L)          float64     CRB of theta_l / phi_l (rad^2)
max_crb             (K,)            float64     label: max_l crb (the paper's objective)
init_R_s, init_psi  like R_s, psi   complex128  the solver's starting point
init_crb            (K, L)          float64     its per-IRS CRB
init_max_crb        (K,)            float64     its max-CRB
history_max_crb     (K, H)          float64     max-CRB at the start, then after each AO iteration
                                                (H = max_iter + 1, NaN-padded)
status              (K,)            |S64        solver status (ASCII)
success             (K,)            int8        1 if the solver succeeded (a feasible finite point, P2 and
                                                P3 not failed throughout: SolveResult); 0 otherwise
nit                 (K,)            int64       AO iterations
solve_time          (K,)            float64     wall time of sampling + solving (s)
cpu_time            (K,)            float64     CPU time of the worker process for it (s)
instance_id         (K,)            int64       index of the instance in the data set
seed                (K,)            int64       the instance seed (distribution.instance_seed)
==================  ==============  ==========  ===============================================

Complex datasets use h5py's layout, a compound type with float64 fields ``r`` and ``i``
(numpy reads them back as complex128; MATLAB's ``h5read`` returns a struct with fields ``r``
and ``i``: ``G = complex(s.r, s.i)``; MATLAB lists dimensions in reverse order).
Shard attributes: ``format`` ("irs-torch/dataset-shard"), ``format_version``, ``version``
(irs-torch), ``M``, ``N_h``, ``N_v``, ``L``, ``d_h``, ``d_v``, ``d_bs``, ``wavelength``, ``active``,
``K_db``, ``C0_db``, ``alpha``, ``beta_model``, ``sigma_rcs``, ``dataset_seed``, ``config`` (JSON),
``config_sha256``, ``shard_index``, ``first_id``, ``stop_id`` (the shard's id range
``[first_id, stop_id)``), ``failures`` (JSON list of ``{instance_id, seed, error}``).

Shards are written atomically: to a temporary file in ``shards/``, flushed and fsynced, then
renamed over the final name (``os.replace``); a reader never sees a half-written shard. Shards and
the manifest get the mode a plain ``open()`` would give (``0o666 & ~umask``, typically 0644), not
the 0600 of the temporary file.

Integrity. The manifest's entry of every shard records ``sha256``, the SHA-256 of the shard file's
bytes, computed when the shard is written. :func:`check_shard_checksum` compares a file with it
(``irs-torch dataset info --verify`` and the training data module do, see
:func:`irs_torch.data.integrity.check_integrity`); a resumed ``dataset generate`` recomputes a shard
whose bytes no longer match. Manifests written before checksums existed have no ``sha256``
entries: readers warn and carry on, and resuming the data set (rerunning its ``dataset
generate`` command) records them for the shards that verify.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from irs_torch.outputs import apply_file_mode, dumps, file_sha256

SHARD_FORMAT = "irs-torch/dataset-shard"
MANIFEST_FORMAT = "irs-torch/dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
STATUS_LEN = 64


def field_specs(L: int, N: int, M: int, H: int) -> dict:
    """``name -> (per-instance shape, numpy dtype, unit/meaning)`` for every shard dataset."""
    c, f = np.complex128, np.float64
    return {
        "G": ((L, N, M), c, "BS -> IRS channel"),
        "theta": ((L,), f, "rad"), "phi": ((L,), f, "rad"),
        "beta": ((L,), c, "round-trip target coefficient"),
        "bs_pos": ((3,), f, "m"), "irs_pos": ((L, 3), f, "m"), "irs_yaw": ((L,), f, "rad"),
        "target_pos": ((3,), f, "m"),
        "P_t": ((), f, "W"), "P_s": ((), f, "W"), "a_max": ((), f, "linear amplitude"),
        "sigma_r2": ((), f, "W"), "sigma_b2": ((), f, "W"), "T_c": ((), f, "symbols"),
        "R_s": ((L, M, M), c, "W"), "psi": ((L, N), c, "reflection vector"),
        "crb": ((L,), f, "tr(F^-1), rad^2 + |beta|^2 units"),
        "crb_theta": ((L,), f, "rad^2"), "crb_phi": ((L,), f, "rad^2"),
        "max_crb": ((), f, "max_l crb"),
        "init_R_s": ((L, M, M), c, "W"), "init_psi": ((L, N), c, "reflection vector"),
        "init_crb": ((L,), f, "tr(F^-1)"), "init_max_crb": ((), f, "max_l init_crb"),
        "history_max_crb": ((H,), f, "max-CRB at the start and after each AO iteration, NaN-padded"),
        "status": ((), np.dtype(f"S{STATUS_LEN}"), "solver status, ASCII"),
        "success": ((), np.int8, "1 = solver succeeded (feasible finite point, no failed solver)"),
        "nit": ((), np.int64, "AO iterations"),
        "solve_time": ((), f, "wall time, s"),
        "cpu_time": ((), f, "process CPU time, s"),
        "instance_id": ((), np.int64, "index in the data set"),
        "seed": ((), np.int64, "instance seed"),
    }


class ShardError(ValueError):
    """A shard file is unreadable, truncated or inconsistent (the message names the file)."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def shard_path(root, index: int) -> Path:
    return Path(root) / SHARDS_DIR / shard_name(index)


def stack_records(records: list[dict], specs: dict) -> dict:
    """Per-instance records (name -> array) -> name -> (K, ...) arrays in the spec dtypes."""
    out = {}
    for name, (shape, dtype, _) in specs.items():
        if records:
            out[name] = np.stack([np.asarray(r[name]).astype(dtype, copy=False).reshape(shape) for r in records])
        else:
            out[name] = np.zeros((0,) + tuple(shape), dtype=dtype)
    return out


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_shard_checksum(root, entry: dict, num_instances: int | None = None) -> str | None:
    """Compare the shard of manifest entry ``entry`` (``file``, ``sha256``) under data set ``root``
    with its recorded SHA-256.

    Returns the file's digest, or None when the entry records no checksum (a manifest written
    before checksums existed; the file is not read). Raises :class:`ShardError` (one line naming
    the shard, the expected and the actual digest, and what to do) on a mismatch, and
    FileNotFoundError when the file is missing.
    """
    want = entry.get("sha256")
    if want is None:
        return None
    path = Path(root) / entry["file"]
    if not path.exists():
        raise FileNotFoundError(f"shard file not found: {path}")
    got = file_sha256(path)
    if got != want:
        cmd = f"irs-torch dataset generate --out {root}" + (f" --num {num_instances}" if num_instances else " --num N")
        raise ShardError(f"{path}: checksum mismatch: the manifest records sha256 {want}, the file has {got} "
                         f"(modified or damaged after it was written); rerun `{cmd}` to recompute it")
    return got


def write_shard(path, arrays: dict, attrs: dict) -> Path:
    """Write one shard atomically (tmp file + fsync + os.replace). ``arrays``: name -> (K, ...)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            for name, a in arrays.items():
                f.create_dataset(name, data=a)
            f.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        apply_file_mode(tmp)  # mkstemp made it 0600
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _int_attr(f, name):
    try:
        v = f.attrs[name]
        v = v.item() if isinstance(v, np.generic) else v
        return int(v) if not isinstance(v, (bool, bytes, str)) and int(v) == v else None
    except Exception:
        return None


def check_shard_shapes(f, path, sizes: dict | None = None, rows: int | None = None) -> None:
    """Bound every dataset of an open shard from its HDF5 metadata alone, before any of it is read.

    A forged shard can declare a dataset of billions of elements in a file of a few kilobytes (HDF5
    stores unwritten chunks as a fill value), so no reader may trust a shape before this check:

    - at most :data:`irs_torch.limits.MAX_SHARD_DATASETS` datasets, each at most
      :data:`irs_torch.limits.MAX_SHARD_ELEMENTS` elements;
    - every dataset the format defines has the per-instance shape of :func:`field_specs` for
      ``sizes`` (``M``, ``N_h``, ``N_v``, ``L`` and, when given, ``history_length``; default: the
      shard's own size attributes) and at most ``rows`` instances (default: its ``stop_id - first_id``;
      readers that know the manifest pass its sizes and the entry's id range).

    Raises :class:`ShardError` naming the shard, the dataset and both shapes.
    """
    import h5py

    from irs_torch.limits import MAX_SHARD_DATASETS, MAX_SHARD_ELEMENTS

    keys = list(f.keys())
    if len(keys) > MAX_SHARD_DATASETS:
        raise ShardError(f"{path}: holds {len(keys)} datasets, more than the {MAX_SHARD_DATASETS} allowed "
                         f"(a forged shard?)")
    if sizes is None:
        sizes = {k: _int_attr(f, k) for k in ("M", "N_h", "N_v", "L")}
    specs = None
    try:
        M, L = int(sizes["M"]), int(sizes["L"])
        N = int(sizes["N"]) if sizes.get("N") is not None else int(sizes["N_h"]) * int(sizes["N_v"])
        H = sizes.get("history_length")
        specs = field_specs(L, N, M, int(H) if H is not None else -1)
        if H is None:
            specs.pop("history_max_crb")
    except (KeyError, TypeError, ValueError):
        pass  # no usable size attributes: only the global bounds apply
    if rows is None:
        lo, hi = _int_attr(f, "first_id"), _int_attr(f, "stop_id")
        rows = hi - lo if lo is not None and hi is not None and hi >= lo else None
    for name in keys:
        if f.get(name, getclass=True) is not h5py.Dataset:
            raise ShardError(f"{path}: {name!r} is not a dataset (a group or link; a forged shard?)")
        shape = f[name].shape
        shape = tuple(int(x) for x in shape) if shape is not None else ()
        n = int(np.prod(shape, dtype=object)) if shape else 1
        if n > MAX_SHARD_ELEMENTS:
            raise ShardError(f"{path}: dataset {name!r} has shape {shape} ({n} elements), more than the "
                             f"{MAX_SHARD_ELEMENTS} a shard dataset may hold (a forged shard?); nothing was read")
        if specs is not None and name in specs:
            want = tuple(specs[name][0])
            if len(shape) != 1 + len(want) or shape[1:] != want:
                raise ShardError(f"{path}: dataset {name!r} has shape {shape}, the data set's sizes give "
                                 f"(K{''.join(f', {x}' for x in want)}); nothing was read")
        if rows is not None and shape and shape[0] > rows:
            raise ShardError(f"{path}: dataset {name!r} has {shape[0]} rows, more than the {rows} instances of the "
                             f"shard's id range; nothing was read")


def open_shard(path, sizes: dict | None = None, rows: int | None = None):
    """Open a shard read-only; a missing, truncated or non-HDF5 file raises a ShardError naming it.
    Every dataset's shape is bounded by :func:`check_shard_shapes` (``sizes``, ``rows``) before the
    caller reads anything."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"shard file not found: {path}")
    try:
        f = h5py.File(path, "r", locking=False)  # shards are immutable once written
    except OSError as e:
        raise ShardError(f"{path}: not a readable HDF5 shard, corrupt or truncated ({e})") from None
    try:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != SHARD_FORMAT:
            raise ShardError(f"{path}: attribute format is {fmt!r}, expected {SHARD_FORMAT!r}")
        check_shard_shapes(f, path, sizes, rows)
    except ShardError:
        f.close()
        raise
    except Exception as e:  # corrupt metadata
        f.close()
        raise ShardError(f"{path}: corrupt shard metadata ({e})") from None
    return f


def _attr(f, name):
    v = f.attrs[name]
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def shard_attrs(f) -> dict:
    """The attributes of an open shard as plain Python values (``failures`` parsed from JSON)."""
    from irs_torch.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH, json_depth

    d = {k: _attr(f, k) for k in f.attrs}
    text = d.get("failures", "[]")
    if not isinstance(text, str) or len(text) > MAX_JSON_BYTES or json_depth(text) > MAX_JSON_DEPTH:
        raise ShardError(f"{f.filename}: attribute failures is not a JSON list within the size and depth bounds")
    d["failures"] = json.loads(text)
    return d


def verify_shard(path, *, config_sha256: str | None = None, first_id: int | None = None,
                 stop_id: int | None = None, names=None, sizes: dict | None = None) -> dict:
    """Check a shard completely and return ``{attrs, instance_id, n}``; raise ShardError otherwise.

    Checks: the file opens; the format; ``config_sha256``/``first_id``/``stop_id`` attributes if
    given; all datasets ``names`` exist with one common leading length K; ``instance_id`` sorted,
    unique, inside ``[first_id, stop_id)``; stored ids + failed ids = the whole range; every dataset
    is readable (catches corrupted data blocks).
    """
    path = Path(path)
    rows = stop_id - first_id if first_id is not None and stop_id is not None else None
    with open_shard(path, sizes, rows) as f:
        try:
            a = shard_attrs(f)
            for key, want in (("config_sha256", config_sha256), ("first_id", first_id), ("stop_id", stop_id)):
                if want is not None and a.get(key) != want:
                    raise ShardError(f"{path}: attribute {key} is {a.get(key)!r}, expected {want!r}")
            specs = names if isinstance(names, dict) else None  # field_specs: shapes and dtypes checked too
            names = list(names) if names is not None else list(f.keys())
            missing = [n for n in names if n not in f]
            if missing:
                raise ShardError(f"{path}: missing dataset {missing[0]!r}")
            ids = np.asarray(f["instance_id"][...], dtype=np.int64)
            K = len(ids)
            for n in names:
                if f[n].shape[:1] != (K,):
                    raise ShardError(f"{path}: dataset {n!r} has {f[n].shape[0] if f[n].shape else 0} rows, "
                                     f"instance_id has {K}")
                if specs is not None and (tuple(f[n].shape[1:]) != tuple(specs[n][0])
                                          or f[n].dtype != np.dtype(specs[n][1])):
                    raise ShardError(f"{path}: dataset {n!r} has shape {tuple(f[n].shape)} and dtype {f[n].dtype}, "
                                     f"the format needs (K{''.join(f', {d}' for d in specs[n][0])}) and "
                                     f"{np.dtype(specs[n][1])}")
                f[n][...]  # read everything: a damaged block fails here
            lo, hi = int(a["first_id"]), int(a["stop_id"])
            failed = sorted(int(x["instance_id"]) for x in a["failures"])
            if (np.diff(ids) <= 0).any() or (K and (ids[0] < lo or ids[-1] >= hi)):
                raise ShardError(f"{path}: instance_id must be sorted, unique and in [{lo}, {hi})")
            if sorted(ids.tolist() + failed) != list(range(lo, hi)):
                raise ShardError(f"{path}: stored ids ({K}) and failed ids ({len(failed)}) do not cover "
                                 f"instances [{lo}, {hi}) exactly once")
        except ShardError:
            raise
        except Exception as e:
            raise ShardError(f"{path}: corrupt shard ({type(e).__name__}: {e})") from None
    return {"attrs": a, "instance_id": ids, "n": K}


def read_shard_arrays(path, names=None, sizes: dict | None = None, rows: int | None = None) -> dict:
    """All (or ``names``) datasets of a shard as numpy arrays (errors name the file; shapes bounded
    first by :func:`check_shard_shapes` with ``sizes`` and ``rows``)."""
    with open_shard(path, sizes, rows) as f:
        try:
            return {n: f[n][...] for n in (names if names is not None else f.keys())}
        except Exception as e:
            raise ShardError(f"{path}: corrupt shard ({type(e).__name__}: {e})") from None


def write_json_atomic(path, obj) -> Path:
    """Write JSON atomically (tmp + fsync + os.replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(dumps(obj, indent=1))
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        apply_file_mode(tmp)  # mkstemp made it 0600
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_manifest(root) -> dict:
    """The manifest of data set ``root`` (errors name the file)."""
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {root} is not a data set directory "
                                f"(create one with `irs-torch dataset generate --out {root}`)")
    from irs_torch.limits import load_json_file

    m = load_json_file(path, "data-set manifest")  # size and nesting bounded; not valid JSON: names the file
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format is {m.get('format') if isinstance(m, dict) else None!r}, "
                         f"expected {MANIFEST_FORMAT!r}")
    if int(m.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {m.get('format_version')} is newer than this irs-torch "
                         f"reads ({FORMAT_VERSION}); upgrade irs-torch")
    missing = [k for k in ("sizes", "config", "counts", "shards", "failures", "num_shards", "shard_size",
                           "dataset_seed") if k not in m]
    if not missing and isinstance(m["sizes"], dict):
        missing = [f"sizes.{k}" for k in ("M", "N_h", "N_v", "N", "L", "history_length") if k not in m["sizes"]]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (a damaged or hand-edited manifest)")
    return m


def start_kind(name: str) -> str:
    """A winning start's name without its seed (``"random(seed=7,level=0.5,beam) from 10 P_s"`` ->
    ``"random(level=0.5,beam) from 10 P_s"``): the recipe, which is what a summary counts."""
    import re

    return re.sub(r"\(\)", "", re.sub(r"seed=\d+,?", "", str(name)))


def read_found_by(path) -> dict:
    """The shard's ``found_by`` attribute (instance id -> winning start name; batched labels only), or {}."""
    import h5py

    with h5py.File(path, "r", locking=False) as f:
        v = f.attrs.get("found_by")
    if v is None:
        return {}
    try:
        d = json.loads(v.decode() if isinstance(v, bytes) else str(v))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{path}: attribute found_by is not JSON ({e})") from None
    if not isinstance(d, dict) or not all(isinstance(x, str) for x in d.values()):
        raise ShardError(f"{path}: attribute found_by must map instance ids to start names")
    return d

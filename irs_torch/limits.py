"""Upper bounds on every size that comes from outside, checked before any work or allocation.

A size-like flag, config field or file field (array sizes M, N_h, N_v, L, batch counts, grid points,
time steps, AO starts, network widths, the arrays of a ``.npz`` file, a JSON file's size and nesting)
is checked here before memory is allocated or a loop starts; a violation is an
:class:`irs_torch.errors.InputError` naming the flag or field, its value and the bound. The bounds
are far above any use of this package (the paper's sizes are M = 16, 4 x 4 IRS elements, L = 2) and
far below what exhausts a workstation's memory or runs for days.

Memory estimate of one scenario (:func:`scenario_bytes`): complex128 ``G`` (L N M), one design
``R_s`` (L M M) and the per-IRS N x N matrices of the IRS-power quadratic forms (L N N), 16 bytes
each; a scenario or a batch of them may use at most :data:`MAX_SCENARIO_BYTES`.

This module imports nothing from the package but :mod:`irs_torch.errors`.
"""
from __future__ import annotations

from irs_torch.errors import InputError

#: Bytes one scenario (or one batch of scenarios) may need by :func:`scenario_bytes`.
MAX_SCENARIO_BYTES = 2 << 30  # 2 GiB
#: Instances in one batched scenario file or ``irs-torch scenario --count``.
MAX_BATCH = 100_000
#: Elements (all arrays together) a ``.npz`` scenario or solution file may hold.
MAX_NPZ_ELEMENTS = 1 << 26  # 67 M: 1 GiB of complex128
#: Arrays (keys) a ``.npz`` file may hold.
MAX_NPZ_KEYS = 1000
#: A JSON file from outside (model sidecar, data-set manifest): size and nesting depth.
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 32
#: Network widths of a model file (``hidden``) and its depth (``depth``), and its parameter count.
MAX_HIDDEN = 1 << 14
MAX_NET_DEPTH = 64
MAX_NET_PARAMETERS = 200_000_000
#: A data-set shard (HDF5): datasets per file, and elements per dataset (checked from the file's
#: metadata before any read; 2^28 elements are 4 GiB of complex128). A data-set config must keep
#: ``shard_size`` times the largest per-instance array (L x max(N M, M M, H)) within it.
MAX_SHARD_DATASETS = 256
MAX_SHARD_ELEMENTS = 1 << 28
#: Command-line loop counts.
MAX_STEPS = 1_000_000  # track --steps
MAX_TRAJECTORIES = 100_000  # track --trajectories
MAX_STARTS = 10_000  # solve --n-starts
MAX_GRID = 2001  # mismatch --grid, points per axis
MAX_TRIALS = 100_000_000  # montecarlo --trials
#: Training configuration: network hypotheses (heads), unrolled refinement steps per batch, instances
#: drawn to fit the feature normaliser, DataLoader workers.
MAX_HYPOTHESES = 256
MAX_UNROLL_STEPS = 1000
MAX_NORMALIZER_INSTANCES = 1_000_000
MAX_LOADER_WORKERS = 256


def check_int(field: str, value, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``; InputError naming ``field`` otherwise (bools refused)."""
    try:
        ok = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise InputError(f"{field} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise InputError(f"{field} must be an integer {rng}, got {v}")
    return v


def scenario_bytes(M: int, N: int, L: int, batch: int = 1) -> int:
    """Estimated bytes of ``batch`` scenarios of these sizes (module docstring)."""
    return 16 * int(batch) * int(L) * (int(N) * int(M) + int(M) * int(M) + int(N) * int(N))


def check_scenario_sizes(M, N_h, N_v, L, batch: int = 1, names=None, stored_only: bool = False) -> None:
    """Each size an integer >= 1 and the memory estimate within :data:`MAX_SCENARIO_BYTES`.

    The estimate is :func:`scenario_bytes` (the work of solving or evaluating one scenario) times
    ``batch``, or with ``stored_only`` the channels ``G`` of the batch alone (16 L N M bytes each: a
    batched file, whose items are solved one by one). names: the flag or field names for the message
    (``{"M": "--M", ...}``; default the names themselves). Raises :class:`InputError`."""
    names = {"M": "M", "N_h": "N_h", "N_v": "N_v", "L": "L", "batch": "batch", **(names or {})}
    vals = {k: check_int(names[k], v, 1) for k, v in (("M", M), ("N_h", N_h), ("N_v", N_v), ("L", L),
                                                       ("batch", batch))}
    N = vals["N_h"] * vals["N_v"]
    need = (16 * vals["batch"] * vals["L"] * N * vals["M"] if stored_only
            else scenario_bytes(vals["M"], N, vals["L"], vals["batch"]))
    if need > MAX_SCENARIO_BYTES:
        what = ", ".join(f"{names[k]}={vals[k]}" for k in ("M", "N_h", "N_v", "L", "batch") if k != "batch"
                         or vals[k] > 1)
        kind = "the channels G" if stored_only else "G, R_s and the N x N IRS-power forms"
        raise InputError(f"{what}: these sizes need about {need / 2**30:.3g} GiB ({kind}, complex128), more than "
                         f"the {MAX_SCENARIO_BYTES / 2**30:g} GiB this package allows")


def json_depth(text: str) -> int:
    """Largest nesting depth of ``[``/``{`` in a JSON text (brackets inside strings ignored); linear
    time, no recursion, so it can run before :func:`json.loads` on untrusted text."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def load_json_file(path, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """Parse a JSON file from outside with bounds: a regular file of at most ``max_bytes`` bytes and
    nesting depth at most ``max_depth``, then :func:`json.loads`. Raises InputError naming the file
    (FileNotFoundError if missing); json's own errors become InputError too."""
    import json
    import os
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{path}: {what} is not a regular file")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise InputError(f"{path}: {what} has {size} bytes, more than the {max_bytes} allowed")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: {what} is not UTF-8 text ({e.reason})") from None
    d = json_depth(text)
    if d > max_depth:
        raise InputError(f"{path}: {what} is nested {d} levels deep, more than the {max_depth} allowed")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{path}: not valid JSON, corrupt or truncated ({what}; {type(e).__name__}: {e})") from None


def check_shard_elements(shard_size, M: int, N: int, L: int, H: int = 1, field: str = "shard_size") -> int:
    """``shard_size`` instances of the largest shard array (``L x max(N M, M M)``, or ``H`` history
    entries) within :data:`MAX_SHARD_ELEMENTS`, so that every shard written can be read back.
    InputError naming ``field`` otherwise; returns ``shard_size``."""
    ss = check_int(field, shard_size, 1)
    per = max(int(L) * max(int(N) * int(M), int(M) * int(M)), int(H))
    if ss * per > MAX_SHARD_ELEMENTS:
        raise InputError(f"{field} = {ss}: a shard would hold {ss * per} elements in one array (L x M x M etc.), "
                         f"more than the {MAX_SHARD_ELEMENTS} allowed; use at most {max(1, MAX_SHARD_ELEMENTS // per)}")
    return ss

"""Safe outputs: never overwrite an input, check writability first, strict JSON, normal file modes.

- :func:`check_output_path` refuses an output that is the same file as an input (real paths are
  compared, so links and ``./x`` vs ``x`` are caught) and checks, before any long work, that the
  file can be created (its nearest existing ancestor is a writable directory).
- :func:`check_output_dir` does the same for an output directory.
- :func:`json_safe` / :func:`dumps`: every JSON this package prints or writes is strict JSON
  (RFC 8259): non-finite floats (inf, -inf, NaN) are written as ``null``; numpy and torch values
  become plain numbers / lists. ``dumps`` always passes ``allow_nan=False``.
- :func:`file_mode`: files written through a temporary file (``tempfile.mkstemp`` creates them
  0600) get the mode a plain ``open()`` would give them, ``0o666 & ~umask``.
- :func:`file_sha256`: the checksum of shards (data-set manifest) and model files (sidecars).
- :func:`atomic_savez`: write a ``.npz`` through a temporary file, so a reader never sees half a file.
- :class:`DirLock`: an exclusive lock on an output folder that a long job appends to (data sets,
  ``track --out``, figure reproduction, benchmarks), so that two runs never write into one folder.
- :func:`atomic_write`: every file this package writes (figures, JSON/CSV records, solutions,
  scenarios, model files, reports) goes through a temporary file in the same folder and
  ``os.replace``; :func:`atomic_savefig` does it for a matplotlib figure.
- :func:`progress_bar`: the one progress report of every long loop (a tqdm bar on stderr; stdout
  stays clean for JSON/CSV). It is shown only when stderr is a terminal, unless the caller's flag
  (``--no-progress``/``--quiet``/``--json``) turns it off; ``IRS_TORCH_PROGRESS=1`` forces it on
  (as one plain line per update, at most every ``IRS_TORCH_PROGRESS_INTERVAL`` seconds, default 10,
  when stderr is not a terminal: log files) and ``IRS_TORCH_PROGRESS=0`` turns it off everywhere.

All errors are :class:`irs_torch.errors.InputError` with a one-line message naming the field.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
from pathlib import Path

from irs_torch.errors import InputError

_UMASK_LOCK = threading.Lock()


def npz_path(path) -> Path:
    """The path a ``.npz`` writer of this package actually writes for ``path`` (``.npz`` appended
    when missing, as :func:`irs_torch.scenario.Scenario.save` does)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    return path


def same_file(a, b) -> bool:
    """True if paths ``a`` and ``b`` name the same file (real paths, or the same inode)."""
    a, b = os.fspath(a), os.fspath(b)
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _inputs(inputs) -> list[tuple[str, str]]:
    out = []
    if inputs is None:
        return out
    items = inputs.items() if isinstance(inputs, dict) else inputs
    for item in items:
        name, p = item if isinstance(item, tuple) else ("input", item)
        if p is None or p == "":
            continue
        out.append((name, os.fspath(p)))
    return out


def check_writable(out, field: str, directory: bool = False) -> Path:
    """Raise :class:`InputError` unless ``out`` can be written (before any long work).

    A file output must not be an existing directory; a directory output must not be an existing
    file; the nearest existing ancestor must be a directory we may write into (missing parent
    directories are created by the writers). Returns ``Path(out)``.
    """
    if out is None or os.fspath(out) == "":
        raise InputError(f"{field} must be a path, got {out!r}")
    p = Path(out)
    if p.exists():
        if directory and not p.is_dir():
            raise InputError(f"{field} {out} exists and is not a directory")
        if not directory and p.is_dir():
            raise InputError(f"{field} {out} is a directory, expected a file path")
    a = p if directory else p.parent
    a = Path(os.path.abspath(a))
    while not a.exists() and a != a.parent:
        a = a.parent
    if not a.is_dir():
        raise InputError(f"{field} {out} cannot be created: {a} is not a directory")
    if not os.access(a, os.W_OK | os.X_OK):
        raise InputError(f"{field} {out} cannot be written: directory {a} is not writable")
    if directory and p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{field} {out} is not writable")
    return p


def check_output_path(out, inputs=None, field: str = "output") -> Path:
    """Refuse an output file that is the same file as an input, and check it can be written.

    out: the output path (exactly the file that will be written; pass ``npz_path(x)`` for the
    ``.npz`` writers). inputs: ``{name: path}`` or an iterable of ``(name, path)`` / paths; None
    entries are skipped. field: the option's name for the message (e.g. ``"-o/--output"``).
    Raises :class:`InputError`; returns ``Path(out)``.
    """
    if out is None or os.fspath(out) == "":
        raise InputError(f"{field} must be a path, got {out!r}")
    for name, p in _inputs(inputs):
        if same_file(out, p):
            raise InputError(f"{field} {out} is the same file as the input {name} {p}: "
                             f"refusing to overwrite an input (choose another output path)")
    return check_writable(out, field)


def check_output_dir(out, inputs=None, field: str = "--out") -> Path:
    """Like :func:`check_output_path` for an output directory: it must not be an input (file or
    directory) and must be creatable/writable. Returns ``Path(out)``."""
    if out is None or os.fspath(out) == "":
        raise InputError(f"{field} must be a path, got {out!r}")
    for name, p in _inputs(inputs):
        if same_file(out, p):
            raise InputError(f"{field} {out} is the input {name} {p}: refusing to write into an input "
                             f"(choose another output directory)")
    return check_writable(out, field, directory=True)


# ------------------------------------------------------------------------------------------ JSON
def json_safe(obj):
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON.

    Non-finite floats (inf, -inf, NaN) become ``None`` (JSON ``null``); numpy scalars/arrays and
    torch tensors become Python numbers/lists; tuples become lists; dict keys become strings;
    paths and other objects become their ``str``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return json_safe(float(obj))
        if isinstance(obj, np.ndarray):
            return json_safe(obj.tolist())
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        if torch.is_tensor(obj):
            return json_safe(obj.detach().cpu().tolist())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, complex):
        return str(obj)
    return str(obj)


def dumps(obj, **kwargs) -> str:
    """``json.dumps(json_safe(obj), allow_nan=False, **kwargs)``: strict JSON, inf/NaN as null."""
    kwargs.pop("default", None)
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


# ------------------------------------------------------------------------------------------ modes
def file_mode(base: int = 0o666) -> int:
    """The mode ``open()`` would give a new file: ``base & ~umask`` (e.g. 0o644 under umask 022)."""
    um = None
    try:
        with open("/proc/self/status") as fh:  # Linux: read the umask without changing it
            for line in fh:
                if line.startswith("Umask:"):
                    um = int(line.split()[1], 8)
                    break
    except OSError:
        pass
    if um is None:  # elsewhere: set and restore (not atomic with respect to other threads)
        with _UMASK_LOCK:
            um = os.umask(0)
            os.umask(um)
    return base & ~um


def apply_file_mode(path_or_fd) -> None:
    """Give a file created by ``tempfile.mkstemp`` (mode 0600) the mode of a plain ``open()``."""
    if isinstance(path_or_fd, int):
        os.fchmod(path_or_fd, file_mode())
    else:
        os.chmod(path_or_fd, file_mode())


# ------------------------------------------------------------------------------------------ checksums
def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, as 64 lowercase hex digits (read in 1 MiB blocks). Used for the
    data-set manifest's shard checksums and the model sidecars."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ npz files
def atomic_savez(path, arrays: dict) -> Path:
    """Write ``arrays`` (name -> array) as an uncompressed ``.npz`` at :func:`npz_path` of ``path``,
    atomically (a temporary file in the same folder, then ``os.replace``), with the mode of a plain
    ``open()``. Creates the parent folder. Returns the path written."""
    import tempfile

    import numpy as np

    path = npz_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        apply_file_mode(fd)  # mkstemp makes 0600; give the mode of a plain open() (umask)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ------------------------------------------------------------------------------------------ atomic text files
def atomic_open(path, mode: str = "w", **kwargs):
    """``with atomic_open(path) as fh: ...``: write ``path`` through a temporary file in its folder,
    fsynced and renamed over ``path`` only when the block finishes, so a reader never sees a partial
    file and a failed write (a full disk) leaves the old file or none, never a 0-byte one. An OSError
    while writing is re-raised naming ``path``. The file gets the mode of a plain ``open()``."""
    import contextlib
    import tempfile

    @contextlib.contextmanager
    def cm():
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        try:
            apply_file_mode(fd)
            with os.fdopen(fd, mode, **kwargs) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except OSError as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise OSError(e.errno, f"cannot write {p}: {e.strerror or e}") from None
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    return cm()


# ------------------------------------------------------------------------------------------ folder locks
class DirLock:
    """An exclusive advisory lock on ``DIR/.lock`` for as long as a job writes into ``DIR``.

    ``with DirLock(out, "--out"): ...`` creates ``DIR`` if needed and takes ``fcntl.flock`` on
    ``DIR/.lock`` without waiting: if another process holds it, raises :class:`InputError` naming the
    flag and the folder. The OS releases the lock when the process dies (a killed run leaves no stale
    lock; the empty ``.lock`` file stays and is harmless). Re-entrant within one process is *not*
    supported (a second ``DirLock`` on the same folder in the same process also fails).
    """

    def __init__(self, root, field: str = "--out"):
        self.root = Path(root)
        self.path = self.root / ".lock"
        self.field = field
        self.fh = None

    def __enter__(self):
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            self.fh = None
            raise InputError(f"{self.field} {self.root} is being written by another process (lock {self.path} "
                             f"held); wait for it to finish, or use another {self.field}") from None
        return self

    def __exit__(self, *exc):
        import fcntl

        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
        return False


# ------------------------------------------------------------------------------------------ atomic writes
def atomic_write(path, write, mode: str = "wb", **kwargs) -> Path:
    """Write ``path`` atomically by calling ``write(target)`` and renaming the result over ``path``.

    ``write`` receives an open file object (``mode``, ``kwargs`` as for :func:`open`) of a temporary
    file in ``path``'s folder (created if needed); when it returns, the file is fsynced and renamed
    over ``path``. If ``write`` raises (a full disk, a bug half-way), the temporary file is removed
    and ``path`` keeps its old content or stays absent: never a partial or 0-byte file. An OSError is
    re-raised naming ``path``. Works with ``torch.save``, ``np.savez``, ``fig.savefig`` (pass the
    format: :func:`atomic_savefig`), ``json``/``csv`` writers. Returns ``Path(path)``.
    """
    with atomic_open(path, mode, **kwargs) as fh:
        write(fh)
    return Path(path)


def atomic_savefig(fig, path, **kwargs) -> Path:
    """``fig.savefig(path, **kwargs)`` through :func:`atomic_write`; the image format is taken from
    ``path``'s suffix (``.png``, ``.pdf``, ``.svg``) unless ``format=`` is given."""
    path = Path(path)
    fmt = kwargs.pop("format", None) or (path.suffix[1:].lower() or "png")
    return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **kwargs))


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """``Path(path).write_text(text)``, atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(text), mode="w", encoding=encoding)


# ------------------------------------------------------------------------------------------ progress
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def progress_enabled(progress: bool = True, stream=None) -> bool:
    """Whether a long loop reports progress: ``IRS_TORCH_PROGRESS`` (1/true/yes/on forces it on,
    0/false/no/off off), else ``progress`` and ``stream`` (default stderr) being a terminal."""
    env = os.environ.get("IRS_TORCH_PROGRESS", "").strip().lower()
    if env in _OFF:
        return False
    if env in _ON:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    try:
        return bool(progress) and stream.isatty()
    except (AttributeError, ValueError):
        return False


class _LineStream:
    """A stderr wrapper for a progress bar that is not on a terminal: each update becomes one plain
    line (no carriage returns or cursor moves in a log file)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s):
        s = s.replace("\r", "").replace("\x1b[A", "")
        if s.strip():
            self.stream.write(s.rstrip("\n") + "\n")

    def flush(self):
        try:
            self.stream.flush()
        except (AttributeError, ValueError):
            pass


def progress_bar(iterable=None, *, total=None, desc: str = "", unit: str = "it", progress: bool = True,
                 leave: bool = True, initial: int = 0, **kwargs):
    """The progress report of a long loop: a ``tqdm`` bar on stderr (rate, ETA), or a disabled one
    (which costs nothing and still supports ``update``/``write``/``close``) when
    :func:`progress_enabled` says no. Use it as tqdm is used: ``for x in progress_bar(xs, desc=...)``
    or ``bar = progress_bar(total=n); bar.update(1); bar.close()``. Never writes to stdout."""
    from tqdm import tqdm

    stream = sys.stderr
    on = progress_enabled(progress, stream)
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if on and not tty:  # forced on in a log file: plain lines, not too often
        try:
            every = float(os.environ.get("IRS_TORCH_PROGRESS_INTERVAL", "10"))
        except ValueError:
            every = 10.0
        kwargs.setdefault("mininterval", max(every, 0.0))
        kwargs.setdefault("maxinterval", max(every, 0.0) or 10.0)
        kwargs["file"] = _LineStream(stream)
        kwargs["ascii"] = True
        kwargs["ncols"] = 100
        kwargs.pop("dynamic_ncols", None)
        leave = True
    else:
        kwargs["file"] = stream
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial, disable=not on, **kwargs)


def export_mat(path, d: dict) -> Path:
    """Write the file keys ``d`` of a scenario or solution as a compressed MATLAB ``.mat`` file."""
    import scipy.io

    scipy.io.savemat(str(path), d, do_compression=True)
    return Path(path)

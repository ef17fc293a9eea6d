"""Generation of solver-labelled data sets: sample, solve with the exact AO, write HDF5 shards.

:func:`generate_dataset` is the driver behind ``irs-torch dataset generate``. The work is
embarrassingly parallel: :func:`solve_instance` maps ``(config, instance_id)`` to one record and
depends on nothing else, so it runs in-process (``workers=1``), in a local process pool
(:class:`LocalBackend`, the default) or on a Ray cluster
(:class:`irs_torch.data.ray_backend.RayBackend`), with the same output.

Resumability. Instance ``i`` belongs to shard ``i // shard_size``. A shard is written (atomically,
see :mod:`irs_torch.data.shards`) once all its instances are done; the manifest is rewritten
atomically at the start, after every shard and at the end. A restarted run keeps every existing
shard that verifies (opens, same config hash, its id range covered exactly once by stored and
failed ids, and its SHA-256 equals the one the manifest recorded when it was written; a shard
without a recorded checksum gets one) and computes only the missing shards, so a killed run restarted completes with no
duplicate or missing instance. Failed instances (any exception while sampling or solving, a
non-finite solution, a crashed worker) are recorded in their shard's ``failures`` attribute and
the manifest, and skipped; ``retry_failed=True`` solves them again. Instances are independent of
the order and the worker that computes them, so the result equals an uninterrupted run instance
by instance (up to the timings ``solve_time`` and ``cpu_time``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from irs_torch.data import shards as _sh
from irs_torch.data.distribution import REJECTION_RULE, SEED_RULE, DatasetConfig, instance_seed, load_config

THROTTLE_ENV = "IRS_TORCH_DATASET_THROTTLE_S"
"""Debugging/testing aid: seconds to sleep after each instance (slows a run down, changes no data)."""

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot be used (e.g. Ray not installed or not reachable)."""


# ---------------------------------------------------------------------------------- one instance
_CONFIG_CACHE: dict[str, DatasetConfig] = {}


def _config(cfg) -> DatasetConfig:
    if isinstance(cfg, DatasetConfig):
        return cfg
    key = json.dumps(cfg, sort_keys=True)
    if key not in _CONFIG_CACHE:
        _CONFIG_CACHE[key] = DatasetConfig.from_dict(cfg)
    return _CONFIG_CACHE[key]


def _np(t):
    return t.detach().cpu().numpy()


def solve_instance(config, instance_id: int) -> dict:
    """Sample and solve instance ``instance_id`` of the data set ``config`` (a DatasetConfig or its
    ``to_dict()``). Deterministic: depends only on ``(config, instance_id)``.

    Returns a record ``name -> numpy array`` with the per-instance shapes of
    :func:`irs_torch.data.shards.field_specs`, or, if anything fails, ``{"failed": True,
    "instance_id", "seed", "error"}`` (never raises for a bad instance).
    """
    cfg = _config(config)
    i = int(instance_id)
    seed = instance_seed(cfg.seed, i)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        rec = _solve(cfg, i, seed)
        rec["solve_time"] = np.float64(time.perf_counter() - t0)
        rec["cpu_time"] = np.float64(time.process_time() - c0)
    except Exception as e:  # a bad instance is recorded, not fatal
        tb = traceback.format_exc(limit=-3).strip().splitlines()
        rec = {"failed": True, "instance_id": i, "seed": seed, "error": f"{type(e).__name__}: {e}",
               "traceback": tb[-6:]}
    delay = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)
    return rec


def reset_solver_state():
    """Make the next solve independent of earlier ones in this process.

    The solver caches compiled cvxpy problems per size and warm-starts SCS from the previous
    solution stored in them, so without a reset an instance's label would depend on which instance
    the same worker solved before (and differ between backends, worker counts and resumed runs).
    Calls ``irs_torch.solvers.reset_warm_starts()`` if the solver provides it; otherwise clears the
    warm-start store (``cvxpy.Problem._solver_cache``) of the cvxpy problems cached in module-level
    dicts of the solver modules. The compiled problems themselves are kept (no recompilation).
    """
    import pkgutil

    import irs_torch.solvers as solvers

    if hasattr(solvers, "reset_warm_starts"):
        solvers.reset_warm_starts()
        return
    import cvxpy as cp

    def problems(v):
        if isinstance(v, cp.Problem):
            yield v
        elif isinstance(v, (list, tuple)):
            for x in v:
                yield from problems(x)
        elif hasattr(v, "__dict__") and not isinstance(v, type):
            for x in vars(v).values():
                if isinstance(x, cp.Problem):
                    yield x
                elif isinstance(x, (list, tuple)):
                    yield from (y for y in x if isinstance(y, cp.Problem))

    for m in pkgutil.iter_modules(solvers.__path__):
        mod = sys.modules.get(f"irs_torch.solvers.{m.name}")
        if mod is None:
            continue
        for cache in list(vars(mod).values()):
            if isinstance(cache, dict):
                for v in list(cache.values()):
                    for prob in problems(v):
                        prob._solver_cache.clear()


def _solve(cfg: DatasetConfig, i: int, seed: int) -> dict:
    from irs_torch.solvers import solve

    reset_solver_state()
    s = cfg.scenario(seed)
    res = solve(s, method=cfg.solver["method"], init=cfg.solver.get("init"), options=cfg.solver_options(seed))
    for name in ("R_s", "psi"):
        if not bool(np.isfinite(_np(getattr(res, name))).all()):
            raise FloatingPointError(f"solver returned non-finite {name} (status {res.status!r})")
    c = s.crb(res.R_s, res.psi)
    if res.init_R_s is not None:
        init_R, init_psi = res.init_R_s, res.init_psi
    else:  # a solver that does not report its start: store NaN
        init_R = s.isotropic_design() * float("nan")
        init_psi = s.random_phase_design(seed=seed) * float("nan")
    ci = s.crb(init_R, init_psi, validate=False).total if res.init_crb is None else res.init_crb
    hist = np.full(cfg.history_length, np.nan)  # [start, after iteration 1, 2, ...], NaN-padded
    h = [float(_np(ci).max())] + [float(x["max_crb"]) for x in (res.history or [])]
    h = h[:len(hist)]
    hist[:len(h)] = h
    return {
        "G": _np(s.G), "theta": _np(s.theta), "phi": _np(s.phi), "beta": _np(s.beta),
        "bs_pos": _np(s.bs_pos), "irs_pos": _np(s.irs_pos), "irs_yaw": _np(s.irs_yaw),
        "target_pos": _np(s.target_pos),
        "P_t": np.float64(s.P_t), "P_s": np.float64(s.P_s), "a_max": np.float64(s.a_max),
        "sigma_r2": np.float64(s.sigma_r2), "sigma_b2": np.float64(s.sigma_b2), "T_c": np.float64(s.T_c),
        "R_s": _np(res.R_s), "psi": _np(res.psi), "crb": _np(c.total), "crb_theta": _np(c.theta),
        "crb_phi": _np(c.phi), "max_crb": np.float64(_np(c.total).max()),
        "init_R_s": _np(init_R), "init_psi": _np(init_psi), "init_crb": _np(ci),
        "init_max_crb": np.float64(_np(ci).max()),
        "history_max_crb": hist,
        "status": np.bytes_(str(res.status).encode("ascii", "replace")[:_sh.STATUS_LEN]),
        "success": np.int8(bool(res.success)), "nit": np.int64(res.nit),
        "instance_id": np.int64(i), "seed": np.int64(seed),
    }


# ---------------------------------------------------------------------------------- backends
@contextlib.contextmanager
def single_threaded_env():
    """Set OMP/MKL/OPENBLAS_NUM_THREADS=1 (where unset) for child processes, and torch's intra-op
    threads to 1 here; restore both on exit. Keeps workers from oversubscribing the cores and makes
    results independent of the thread count."""
    import torch

    old = {k: os.environ.get(k) for k in _THREAD_ENV}
    nt = torch.get_num_threads()
    for k in _THREAD_ENV:
        os.environ.setdefault(k, "1")
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(nt)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _watch_parent(ppid: int):
    while True:
        time.sleep(1.0)
        if os.getppid() != ppid:  # the driver died (e.g. SIGKILL): do not linger as an orphan
            os._exit(1)


def _worker_init(ppid: int):
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops the pool
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()


def _failure(i: int, cfg: DatasetConfig, msg: str) -> dict:
    return {"failed": True, "instance_id": int(i), "seed": instance_seed(cfg.seed, i), "error": msg}


class LocalBackend:
    """Runs :func:`solve_instance` in this process (``workers=1``) or a pool of ``workers``
    processes ('spawn' context, one torch thread each). Use as a context manager."""

    name = "local"

    def __init__(self, workers: int | None = None):
        if workers is None:
            workers = default_workers()
        if isinstance(workers, bool) or int(workers) != workers or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = int(workers)
        self._pool = None
        self._env = None

    def describe(self) -> dict:
        return {"backend": self.name, "workers": self.workers}

    def __enter__(self):
        self._env = single_threaded_env()
        self._env.__enter__()
        if self.workers > 1:
            self._new_pool()
        return self

    def _new_pool(self):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                         initializer=_worker_init, initargs=(os.getpid(),))

    def _kill_pool(self):
        if self._pool is None:
            return
        procs = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # stop running solves now, not after they finish
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
        self._pool = None

    def __exit__(self, *exc):
        try:
            if exc[0] is None and self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            else:
                self._kill_pool()
        finally:
            self._env.__exit__(*exc)
        return False

    def imap_unordered(self, config: DatasetConfig, ids):
        """Yield the records of ``ids`` as they complete (at most 2 * workers in flight)."""
        cfg_d = config.to_dict()
        if self._pool is None:
            for i in ids:
                yield solve_instance(config, i)
            return
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        ids = iter(ids)
        inflight = {}
        window = 2 * self.workers
        while True:
            while len(inflight) < window:
                i = next(ids, None)
                if i is None:
                    break
                inflight[self._pool.submit(solve_instance, cfg_d, i)] = i
            if not inflight:
                return
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                i = inflight.pop(fut)
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    broken = True
                    yield _failure(i, config, "worker process died (BrokenProcessPool)")
            if broken:  # every instance in flight is lost with the pool: record them, start a new pool
                for fut, i in inflight.items():
                    yield _failure(i, config, "worker process died (BrokenProcessPool)")
                inflight.clear()
                self._kill_pool()
                self._new_pool()


    def imap_tasks(self, fn, items):
        """Generic form of :meth:`imap_unordered` (the one engine for all embarrassingly parallel work,
        :mod:`irs_torch.parallel`): yield ``(item, result)`` for ``fn(item)`` as they complete (at most
        2 * workers in flight); ``fn`` must be a picklable module-level function. A task that raises
        yields ``(item, exception)``; a dead worker yields a ``RuntimeError`` for every task in flight."""
        if self._pool is None:
            for it in items:
                try:
                    yield it, fn(it)
                except Exception as e:  # noqa: BLE001  (reported to the caller as the result)
                    yield it, e
            return
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        items, inflight = iter(items), {}
        _end = object()
        while True:
            while len(inflight) < 2 * self.workers:
                it = next(items, _end)
                if it is _end:
                    break
                inflight[self._pool.submit(fn, it)] = it
            if not inflight:
                return
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                it = inflight.pop(fut)
                try:
                    yield it, fut.result()
                except BrokenProcessPool:
                    broken = True
                    yield it, RuntimeError("worker process died (BrokenProcessPool)")
                except Exception as e:  # noqa: BLE001
                    yield it, e
            if broken:
                for it in inflight.values():
                    yield it, RuntimeError("worker process died (BrokenProcessPool)")
                inflight.clear()
                self._kill_pool()
                self._new_pool()


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return max(1, os.cpu_count() or 1)


def make_backend(backend: str = "local", workers: int | None = None, address: str | None = None):
    """A backend by name: "local" (process pool) or "ray"."""
    if backend == "local":
        if address is not None:
            raise ValueError(f"address is only used by the ray backend, got address={address!r} with backend='local'")
        return LocalBackend(workers)
    if backend == "ray":
        from irs_torch.data.ray_backend import RayBackend

        return RayBackend(workers=workers, address=address)
    raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")


# ---------------------------------------------------------------------------------- the driver
def versions() -> dict:
    """Package and solver versions recorded in the manifest."""
    from importlib import metadata

    import irs_torch

    out = {"irs_torch": irs_torch.__version__, "python": platform.python_version()}
    try:
        import irs_torch.solvers as solvers

        out["solver"] = str(getattr(solvers, "__version__", irs_torch.__version__))
    except Exception:  # pragma: no cover
        out["solver"] = "unavailable"
    for pkg in ("numpy", "torch", "cvxpy", "scs", "clarabel", "h5py", "ray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def shard_attributes(cfg: DatasetConfig, index: int, first_id: int, stop_id: int, failures: list) -> dict:
    import irs_torch

    return {
        "format": _sh.SHARD_FORMAT, "format_version": _sh.FORMAT_VERSION, "version": irs_torch.__version__,
        "M": cfg.M, "N_h": cfg.N_h, "N_v": cfg.N_v, "L": cfg.L, "d_h": cfg.d_h, "d_v": cfg.d_v,
        "d_bs": cfg.d_bs, "wavelength": cfg.wavelength, "active": int(cfg.active), "K_db": cfg.K_db,
        "C0_db": cfg.C0_db, "alpha": cfg.alpha, "beta_model": cfg.beta_model, "sigma_rcs": cfg.sigma_rcs,
        "dataset_seed": cfg.seed, "config": cfg.canonical_json(), "config_sha256": cfg.sha256(),
        "shard_index": index, "first_id": first_id, "stop_id": stop_id,
        "failures": json.dumps(sorted(failures, key=lambda x: x["instance_id"])),
    }


class _Lock:
    """An exclusive advisory lock on ``DIR/.lock`` (released by the OS if the process dies)."""

    def __init__(self, root: Path):
        self.path = root / ".lock"
        self.fh = None

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise ValueError(f"{self.path.parent} is being written by another process (lock {self.path} held)") from None
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
        return False


def _config_diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    diffs = [k for k in keys if a.get(k) != b.get(k)]
    return ", ".join(f"{k}: {a.get(k)!r} (existing) vs {b.get(k)!r} (requested)" for k in diffs[:3])


def generate_dataset(out, num: int, config=None, *, workers: int | None = None, backend: str = "local",
                     address: str | None = None, seed: int | None = None, shard_size: int | None = None,
                     retry_failed: bool = False, progress: bool = True, log=None, force: bool = False) -> dict:
    """Generate (or resume) the data set ``out`` of ``num`` instances; returns the final manifest.

    config: a :class:`DatasetConfig`, a YAML/JSON path, a preset name, a dict, or None (resume: the
    existing manifest's config; new: the ``paper`` preset). ``seed`` / ``shard_size`` override the
    config's. workers: processes (local) or CPUs to use (Ray; default: the cluster's). backend:
    "local" or "ray" (``address`` as for ``ray.init``). progress: a tqdm bar (instances/s, ETA) on
    stderr. log: a callable for one-line notes (default: print to stderr).

    A directory whose ``shards/`` holds files but that has no manifest.json (the manifest was lost,
    or the files belong to something else) is refused, so that nothing is overwritten silently.
    force=True proceeds: shard files written under the same config for the same id ranges are
    reused, every other ``shard-*.h5`` is deleted, and each is named in the log; other files in
    ``shards/`` are left alone. force has no effect on a directory with a manifest.
    """
    out = Path(out)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if isinstance(num, bool) or int(num) != num or num < 1:
        raise ValueError(f"num must be an integer >= 1, got {num!r}")
    num = int(num)
    mpath = out / _sh.MANIFEST_NAME
    old = _sh.read_manifest(out) if mpath.exists() else None
    if config is None and old is not None:
        cfg = DatasetConfig.from_dict(old["config"], source=str(mpath))
    else:
        cfg = load_config(config)
    over = {k: v for k, v in (("seed", seed), ("shard_size", shard_size)) if v is not None}
    if over:
        cfg = cfg.replace(**over)
    if old is not None:
        oc = DatasetConfig.from_dict(old["config"], source=str(mpath))
        if oc.canonical_json() != cfg.canonical_json():
            raise ValueError(f"{out} holds a data set with a different config ({_config_diff(oc.to_dict(), cfg.to_dict())}); "
                             f"use the same config to resume, or a new --out")
        if num < int(old["num_instances"]):
            # Shrinking is safe only while no stored shard would be cut or left beyond the new end.
            ss, n_old = int(cfg.shard_size), int(old["num_instances"])
            cut = [p.name for k in range(num // ss, math.ceil(n_old / ss))
                   if min((k + 1) * ss, n_old) != min((k + 1) * ss, num) and (p := _sh.shard_path(out, k)).exists()]
            if cut:
                raise ValueError(f"{out} holds a data set of {n_old} instances and num={num} is smaller: shard(s) "
                                 f"{', '.join(cut)} already hold instances past {num} (a data set can be extended; "
                                 f"it can be shrunk only before such shards are written)")
            log(f"irs-torch: {out}: shrinking the data set from {n_old} to {num} instances (no shard past "
                f"instance {num} was written)")
    elif out.exists() and any(p.name not in (".lock", _sh.SHARDS_DIR) for p in out.iterdir()):
        raise ValueError(f"{out} exists, is not empty and has no {_sh.MANIFEST_NAME}: not a data set directory")
    elif (found := _files_without_manifest(out)) and not force:
        raise ValueError(f"{out} has no {_sh.MANIFEST_NAME} but {out / _sh.SHARDS_DIR} holds {len(found)} file(s) "
                         f"({_names(found)}): refusing to overwrite them; use a new --out, move them away, "
                         f"or pass --force to reuse the shards of the same config and delete the others")
    # Validate that the distribution can produce an instance at all before starting workers.
    try:
        cfg.draw(np.random.default_rng(instance_seed(cfg.seed, 0)))
    except RuntimeError as e:
        raise ValueError(f"config: instance 0: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    (out / _sh.SHARDS_DIR).mkdir(exist_ok=True)
    bk = make_backend(backend, workers, address)
    with _Lock(out):
        if old is None and force:
            if mpath.exists():
                raise ValueError(f"{out}: a {_sh.MANIFEST_NAME} appeared while starting (another writer?); "
                                 f"rerun without --force to resume it")
            _discard_foreign_shards(out, num, cfg, log)
        return _run(out, num, cfg, bk, retry_failed, progress, log, old)


def _files_without_manifest(out: Path) -> list[Path]:
    """The files in ``out/shards/`` (sorted; temporary files of a killed run excluded)."""
    sdir = out / _sh.SHARDS_DIR
    if (out / _sh.MANIFEST_NAME).exists() or not sdir.is_dir():
        return []
    return sorted(p for p in sdir.iterdir() if not (p.name.startswith(".shard-") and p.name.endswith(".tmp")))


def _names(paths: list[Path], n: int = 5) -> str:
    head = ", ".join(p.name for p in paths[:n])
    return head + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _discard_foreign_shards(out: Path, num: int, cfg: DatasetConfig, log):
    """--force on a ``shards/`` without manifest: keep the shards that verify against ``cfg`` and
    their id range, delete the other ``shard-*.h5`` files, leave any other file; log each group."""
    ss, sha = cfg.shard_size, cfg.sha256()
    specs = _sh.field_specs(cfg.L, cfg.N, cfg.M, cfg.history_length)
    names = {_sh.shard_name(k): k for k in range(math.ceil(num / ss))}
    kept, dropped, other = [], [], []
    for p in _files_without_manifest(out):
        if not (p.is_file() and p.name.startswith("shard-") and p.name.endswith(".h5")):
            other.append(p)
            continue
        k = names.get(p.name)
        if k is not None:
            try:
                _sh.verify_shard(p, config_sha256=sha, first_id=k * ss, stop_id=min((k + 1) * ss, num), names=specs)
                kept.append(p)
                continue
            except (_sh.ShardError, FileNotFoundError):
                pass
        dropped.append(p)
    for p in dropped:
        p.unlink()
    sdir = out / _sh.SHARDS_DIR
    if dropped:
        log(f"irs-torch: --force: deleted {len(dropped)} shard file(s) of another config or id range from {sdir}: "
            f"{_names(dropped, 20)}")
    if kept:
        log(f"irs-torch: --force: reusing {len(kept)} shard file(s) written under the same config: {_names(kept, 20)}")
    if other:
        log(f"irs-torch: --force: left {len(other)} other file(s) in {sdir} untouched: {_names(other, 20)}")


def _run(out: Path, num: int, cfg: DatasetConfig, bk, retry_failed: bool, progress: bool, log, old) -> dict:
    from tqdm.auto import tqdm

    ss = cfg.shard_size
    sdir = out / _sh.SHARDS_DIR
    for p in sdir.glob(".shard-*.tmp"):  # left by a killed run; never a complete shard
        p.unlink()
    H = cfg.history_length
    specs = _sh.field_specs(cfg.L, cfg.N, cfg.M, H)
    sha = cfg.sha256()
    n_shards = math.ceil(num / ss)
    table: dict[int, dict] = {}   # shard index -> {file, index, first_id, stop_id, stored, failures}
    todo: dict[int, list[int]] = {}  # shard index -> ids to compute
    partial: set[int] = set()
    # Checksums recorded by the previous run: a shard whose bytes changed since is recomputed; one
    # without a record (an older manifest, or a run killed between shard and manifest) is recorded.
    recorded = {int(e["index"]): e for e in (old or {}).get("shards", []) if e.get("sha256")}
    for s in range(n_shards):
        lo, hi = s * ss, min((s + 1) * ss, num)
        p = _sh.shard_path(out, s)
        if p.exists():
            try:
                info = _sh.verify_shard(p, config_sha256=sha, first_id=lo, stop_id=hi, names=specs)
                digest = (_sh.check_shard_checksum(out, recorded[s], num) if s in recorded
                          else None) or _sh.file_sha256(p)
            except _sh.ShardError as e:
                log(f"irs-torch: warning: recomputing shard {s}: {e}")
            else:
                fails = info["attrs"]["failures"]
                table[s] = {"file": f"{_sh.SHARDS_DIR}/{p.name}", "index": s, "first_id": lo, "stop_id": hi,
                            "sha256": digest, "stored": info["n"], "failures": fails}
                if retry_failed and fails:
                    todo[s] = sorted(int(f["instance_id"]) for f in fails)
                    partial.add(s)
                continue
        todo[s] = list(range(lo, hi))
    created = old.get("created") if old else _now()
    t_start = time.time()
    state = {"elapsed": float(old.get("elapsed_s", 0.0)) if old else 0.0, "computed": 0}
    run_info = {"started": _now(), "host": platform.node(), "retry_failed": bool(retry_failed),
                "versions": versions()}
    past_runs = list(old.get("runs", [])) if old else []

    def manifest(complete: bool) -> dict:
        this = run_info | bk.describe() | {"computed": state["computed"], "updated": _now()}
        return _manifest(cfg, num, table, created, complete, state["elapsed"] + time.time() - t_start, specs,
                         past_runs + [this])

    _sh.write_json_atomic(out / _sh.MANIFEST_NAME, manifest(False))
    n_todo = sum(len(v) for v in todo.values())
    n_done = num - n_todo
    if n_todo and (old is not None):
        log(f"irs-torch: resuming {out}: {n_done} of {num} instances done, {n_todo} to compute")
    remaining = {s: len(v) for s, v in todo.items()}
    buf: dict[int, list] = {s: [] for s in todo}
    fbuf: dict[int, list] = {s: [] for s in todo}
    n_failed = sum(len(t["failures"]) for s, t in table.items() if s not in partial)
    order = [i for s in sorted(todo) for i in todo[s]]
    if order:
        bar = tqdm(total=num, initial=n_done, unit="inst", desc="generate", disable=not progress,
                   dynamic_ncols=True, smoothing=0.05, file=sys.stderr)
        try:
            with bk:
                for rec in bk.imap_unordered(cfg, order):
                    i = int(rec["instance_id"])
                    s = i // ss
                    if rec.get("failed"):
                        fbuf[s].append({k: rec[k] for k in ("instance_id", "seed", "error")})
                        n_failed += 1
                        msg = f"irs-torch: instance {i} (seed {rec['seed']}) failed: {rec['error']}"
                        bar.write(msg, file=sys.stderr) if progress else log(msg)
                    else:
                        buf[s].append(rec)
                    state["computed"] += 1
                    remaining[s] -= 1
                    bar.update(1)
                    bar.set_postfix(failed=n_failed, refresh=False)
                    if remaining[s] == 0:
                        _write(out, cfg, s, num, specs, buf.pop(s), fbuf.pop(s), s in partial, table)
                        _sh.write_json_atomic(out / _sh.MANIFEST_NAME, manifest(False))
        except BaseException:
            bar.close()
            _sh.write_json_atomic(out / _sh.MANIFEST_NAME, manifest(False))
            raise
        bar.close()
    m = manifest(True)
    _sh.write_json_atomic(out / _sh.MANIFEST_NAME, m)
    return m


def _write(out, cfg, s, num, specs, recs, fails, is_partial, table):
    ss = cfg.shard_size
    lo, hi = s * ss, min((s + 1) * ss, num)
    recs = sorted(recs, key=lambda r: int(r["instance_id"]))
    arrays = _sh.stack_records(recs, specs)
    p = _sh.shard_path(out, s)
    if is_partial:  # retried failures: merge with the rows already stored
        old = _sh.read_shard_arrays(p, names=list(specs))
        order = np.argsort(np.concatenate([old["instance_id"], arrays["instance_id"]]), kind="stable")
        arrays = {k: np.concatenate([old[k], arrays[k]])[order] for k in specs}
    fails = sorted(fails, key=lambda x: x["instance_id"])
    _sh.write_shard(p, arrays, shard_attributes(cfg, s, lo, hi, fails))
    table[s] = {"file": f"{_sh.SHARDS_DIR}/{p.name}", "index": s, "first_id": lo, "stop_id": hi,
                "sha256": _sh.file_sha256(p),
                "stored": int(len(arrays["instance_id"])), "failures": fails}


def _manifest(cfg: DatasetConfig, num: int, table: dict, created: str, complete: bool, elapsed: float,
              specs: dict, runs: list) -> dict:
    shards = [{k: v for k, v in table[s].items() if k != "failures"} | {"failed": len(table[s]["failures"])}
              for s in sorted(table)]
    failures = [f for s in sorted(table) for f in table[s]["failures"]]
    stored = sum(t["stored"] for t in table.values())
    return {
        "format": _sh.MANIFEST_FORMAT, "format_version": _sh.FORMAT_VERSION,
        "created": created, "updated": _now(), "complete": bool(complete), "elapsed_s": round(elapsed, 3),
        "num_instances": num, "shard_size": cfg.shard_size, "num_shards": math.ceil(num / cfg.shard_size),
        "dataset_seed": cfg.seed, "seed_rule": SEED_RULE, "rejection_rule": REJECTION_RULE,
        "config": cfg.to_dict(), "config_sha256": cfg.sha256(),
        "sizes": {"M": cfg.M, "N_h": cfg.N_h, "N_v": cfg.N_v, "N": cfg.N, "L": cfg.L,
                  "history_length": cfg.history_length},
        "versions": runs[-1]["versions"], "generator": {k: v for k, v in runs[-1].items() if k != "versions"},
        "runs": runs,
        "counts": {"requested": num, "stored": stored, "failed": len(failures),
                   "pending": num - stored - len(failures)},
        "shards": shards, "failures": failures,
        "fields": {k: {"shape": ["K", *v[0]], "dtype": np.dtype(v[1]).str, "meaning": v[2]} for k, v in specs.items()},
        "splits": {"rule": "u = splitmix64(instance_id) / 2**64; train if u < f_train, val if u < f_train + f_val, "
                           "else test (irs_torch.data.dataset.split_of)",
                   "default_fractions": {"train": 0.8, "val": 0.1, "test": 0.1}},
    }

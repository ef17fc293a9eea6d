"""Where data-set instances (and any embarrassingly parallel task) run: this process, a local
process pool (:class:`LocalBackend`), or a Ray cluster (:mod:`irs_torch.data.ray_backend`).

A backend is a context manager with ``imap_unordered(config, ids)`` (the records of
:func:`irs_torch.data.instance.solve_instance` as they complete) and ``imap_tasks(fn, items)`` (any
picklable module-level function, :mod:`irs_torch.data.parallel`). :func:`irs_torch.data.parallel.make_backend`
picks one by name; this module knows nothing of Ray (the Ray backend imports its error type from here).
Workers run one torch thread each; a dead worker turns every task in flight into a failure record,
never into a silent gap.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from irs_torch.data.distribution import DatasetConfig
from irs_torch.data.instance import failure_record, solve_instance

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot be used (e.g. Ray not installed or not reachable)."""


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
                    yield failure_record(i, config, "worker process died (BrokenProcessPool)")
            if broken:  # every instance in flight is lost with the pool: record them, start a new pool
                for fut, i in inflight.items():
                    yield failure_record(i, config, "worker process died (BrokenProcessPool)")
                inflight.clear()
                self._kill_pool()
                self._new_pool()

    def imap_tasks(self, fn, items):
        """Generic form of :meth:`imap_unordered` (the one engine for all embarrassingly parallel work,
        :mod:`irs_torch.data.parallel`): yield ``(item, result)`` for ``fn(item)`` as they complete (at most
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

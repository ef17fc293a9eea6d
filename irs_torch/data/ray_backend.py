"""Ray backend of data set generation (``irs-torch dataset generate --backend ray``).

Each instance is one Ray task (``num_cpus=1``) running
:func:`irs_torch.data.instance.solve_instance`; the driver (this process) collects the records
and writes the shards and the manifest exactly as the local backend does, so the output is the
same for the same config and seed. Workers need irs-torch installed (same version) on every node.

Start a cluster with ``ray start --head`` (and ``ray start --address HEAD:6379`` on the other
nodes), then pass ``--address auto`` (on a node of the cluster) or ``--address ray://HEAD:10001``
(Ray Client). Without an address a local Ray instance with ``workers`` CPUs is started (and shut
down at the end); an already initialised Ray (``ray.is_initialized()``) is reused and left running.
"""
from __future__ import annotations

from irs_torch.data.backends import BackendUnavailable
from irs_torch.data.instance import failure_record, solve_instance

INSTALL_HINT = "install it with `pip install 'irs-torch[ray]'` (or `pip install 'ray>=2.9'`)"


def _ray():
    try:
        import ray
    except ImportError as e:
        raise BackendUnavailable(f"the ray backend needs the package 'ray', which cannot be imported ({e}); "
                                 f"{INSTALL_HINT}") from None
    return ray


def _ray_solve(config: dict, instance_id: int) -> dict:
    """The Ray task: one torch thread (Ray also sets OMP_NUM_THREADS=1 for 1-CPU tasks)."""
    import torch

    torch.set_num_threads(1)
    return solve_instance(config, instance_id)


def _ray_call(fn, item):
    """The Ray task of :meth:`RayBackend.imap_tasks`: ``fn(item)`` with one torch thread."""
    import torch

    torch.set_num_threads(1)
    return fn(item)


class RayBackend:
    """Runs :func:`solve_instance` as Ray tasks. Use as a context manager.

    workers: CPUs of a local Ray instance started here, or the maximum number of concurrent
    tasks on a cluster (default: the cluster's CPUs). address: as for ``ray.init`` ("auto",
    "HOST:PORT", "ray://HOST:10001"), None for a local instance.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = None if workers is None else int(workers)
        self.address = address
        self._started = False
        self._task = None
        self._slots = None

    def describe(self) -> dict:
        return {"backend": self.name, "workers": self._slots, "address": self.address}

    def __enter__(self):
        ray = _ray()
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=True)
            if self.address is None:
                kw["num_cpus"] = self.workers
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise BackendUnavailable(f"cannot start or connect to Ray at address={self.address!r}: {e}") from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        self._slots = min(self.workers, cpus) if self.workers else cpus
        self._task = ray.remote(num_cpus=1, max_retries=1)(_ray_solve)
        return self

    def __exit__(self, *exc):
        if self._started:
            _ray().shutdown()
            self._started = False
        return False

    def imap_unordered(self, config, ids):
        """Yield the records of ``ids`` as they complete (at most 2 * slots tasks in flight);
        a task that dies (worker crash, lost node) yields a failure record."""
        ray = _ray()
        cfg_ref = ray.put(config.to_dict())
        ids = iter(ids)
        inflight = {}
        window = 2 * self._slots
        try:
            while True:
                while len(inflight) < window:
                    i = next(ids, None)
                    if i is None:
                        break
                    inflight[self._task.remote(cfg_ref, i)] = i
                if not inflight:
                    return
                done, _ = ray.wait(list(inflight), num_returns=1)
                for ref in done:
                    i = inflight.pop(ref)
                    try:
                        rec = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        rec = failure_record(i, config, f"ray task failed: {type(e).__name__}: {str(e)[:500]}")
                    yield rec
        finally:
            for ref in inflight:  # interrupted: do not leave tasks running on the cluster
                ray.cancel(ref, force=True)

    def imap_tasks(self, fn, items):
        """Generic form of :meth:`imap_unordered` (:mod:`irs_torch.data.parallel`): yield ``(item, result)``
        of ``fn(item)`` as tasks complete (at most 2 * slots in flight); a task that raises or dies
        yields ``(item, exception)``."""
        ray = _ray()
        task = ray.remote(num_cpus=1, max_retries=1)(_ray_call)
        fn_ref = ray.put(fn)
        items, inflight = iter(items), {}
        _end = object()
        try:
            while True:
                while len(inflight) < 2 * self._slots:
                    it = next(items, _end)
                    if it is _end:
                        break
                    inflight[task.remote(fn_ref, it)] = it
                if not inflight:
                    return
                done, _ = ray.wait(list(inflight), num_returns=1)
                for ref in done:
                    it = inflight.pop(ref)
                    try:
                        yield it, ray.get(ref)
                    except Exception as e:  # noqa: BLE001  (RayTaskError wraps the task's exception)
                        yield it, e
        finally:
            for ref in inflight:
                ray.cancel(ref, force=True)

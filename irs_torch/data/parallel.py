"""One engine for embarrassingly parallel work: the data-set backends (local process pool or Ray)
run any picklable module-level task function, not only data-set instances.

>>> from irs_torch.data.parallel import run_tasks
>>> for item, result in run_tasks(task_fn, items, backend="local", workers=2): ...

The backends are :class:`irs_torch.data.backends.LocalBackend` and
:class:`irs_torch.data.ray_backend.RayBackend` (:func:`make_backend`, which imports Ray only when asked); their
``imap_tasks`` methods do the work. Used by data-set generation (through ``imap_unordered``) and by
the best-known search and quality benchmark (:mod:`irs_torch.bench.quality`).
"""
from __future__ import annotations

from irs_torch.data.backends import LocalBackend


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


def run_tasks(fn, items, *, backend: str = "local", workers: int | None = 1, address: str | None = None):
    """Yield ``(item, result_or_exception)`` of ``fn(item)`` for every item, in completion order.

    backend: "local" (``workers`` processes; 1 runs in this process) or "ray" (``address`` as for
    ``ray.init``). A task that raises yields its exception instead of a result (the caller decides);
    workers run one torch thread each.
    """
    with make_backend(backend, workers, address) as bk:
        yield from bk.imap_tasks(fn, items)

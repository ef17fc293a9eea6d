"""One engine for embarrassingly parallel work: the data-set backends (local process pool or Ray)
run any picklable module-level task function, not only data-set instances.

>>> from irs_torch.parallel import run_tasks
>>> for item, result in run_tasks(task_fn, items, backend="local", workers=2): ...

The backends are :class:`irs_torch.data.backends.LocalBackend` and
:class:`irs_torch.data.ray_backend.RayBackend` (:func:`irs_torch.data.backends.make_backend`); their
``imap_tasks`` methods do the work. Used by data-set generation (through ``imap_unordered``) and by
the best-known search and quality benchmark (:mod:`irs_torch.quality`).
"""
from __future__ import annotations


def run_tasks(fn, items, *, backend: str = "local", workers: int | None = 1, address: str | None = None):
    """Yield ``(item, result_or_exception)`` of ``fn(item)`` for every item, in completion order.

    backend: "local" (``workers`` processes; 1 runs in this process) or "ray" (``address`` as for
    ``ray.init``). A task that raises yields its exception instead of a result (the caller decides);
    workers run one torch thread each.
    """
    from irs_torch.data.backends import make_backend

    with make_backend(backend, workers, address) as bk:
        yield from bk.imap_tasks(fn, items)

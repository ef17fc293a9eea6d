"""One data-set instance: sample its scenario, solve it with the exact solver, and record the label.

:func:`solve_instance` maps ``(config, instance_id)`` to one record and depends on nothing else (the
instance seed comes from :func:`irs_torch.data.distribution.instance_seed`, and the solvers never
warm-start from an earlier solve: :func:`irs_torch.solvers.conic.solver_kwargs`), so any instance
can be regenerated alone, in any order, on any worker. The backends of
:mod:`irs_torch.data.backends` run it; :mod:`irs_torch.data.generate` writes the records to shards.
"""
from __future__ import annotations

import json
import os
import time
import traceback

import numpy as np

from irs_torch.data import shards
from irs_torch.data.distribution import DatasetConfig, instance_seed

THROTTLE_ENV = "IRS_TORCH_DATASET_THROTTLE_S"
"""Debugging/testing aid: seconds to sleep after each instance (slows a run down, changes no data)."""

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


def failure_record(instance_id: int, config: DatasetConfig, error: str) -> dict:
    """The record of an instance that could not be labelled: ``{"failed": True, "instance_id", "seed",
    "error"}`` (recorded in its shard and the manifest, then skipped)."""
    return {"failed": True, "instance_id": int(instance_id), "seed": instance_seed(config.seed, instance_id),
            "error": error}


def solve_instance(config, instance_id: int) -> dict:
    """Sample and solve instance ``instance_id`` of the data set ``config`` (a DatasetConfig or its
    ``to_dict()``). Deterministic: depends only on ``(config, instance_id)``.

    Returns a record ``name -> numpy array`` with the per-instance shapes of
    :func:`irs_torch.data.shards.field_specs`, or, if anything fails, :func:`failure_record` plus a
    short ``traceback`` (never raises for a bad instance).
    """
    cfg = _config(config)
    i = int(instance_id)
    seed = instance_seed(cfg.seed, i)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        rec = label_instance(cfg, i, seed)
        rec["solve_time"] = np.float64(time.perf_counter() - t0)
        rec["cpu_time"] = np.float64(time.process_time() - c0)
    except Exception as e:  # a bad instance is recorded, not fatal
        tb = traceback.format_exc(limit=-3).strip().splitlines()
        rec = failure_record(i, cfg, f"{type(e).__name__}: {e}") | {"traceback": tb[-6:]}
    delay = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)
    return rec


#: Instances labelled together (one batched first-order run) by the ``first-order`` effort.
LABEL_CHUNK = 32


def batched_labels(cfg: DatasetConfig) -> bool:
    """True when the config's labels come from the batched ``first-order`` effort (many instances per solve,
    :func:`solve_chunk`) rather than one solve per instance (:func:`solve_instance`)."""
    return cfg.solver.get("effort") == "first-order" and cfg.solver.get("method", "ao") == "ao" \
        and cfg.solver.get("init") is None


def solve_chunk(config, instance_ids) -> list[dict]:
    """Sample and label the instances ``instance_ids`` of the data set ``config`` together with the batched
    ``first-order`` effort (:func:`irs_torch.solvers.portfolio.first_order_portfolio`; each instance's starts
    are seeded by its own seed, and every batched operation acts per instance, so a record does not depend on the
    other ids in the chunk, up to about 1e-6 relative from the order of floating-point sums in batched
    products). Returns one record per id, in order, as :func:`solve_instance` does; a record also
    carries ``found_by`` (the winning start's name, stored in the shard's attributes). Never raises for a bad
    instance: a chunk that fails as a whole is retried one instance at a time, and an instance that still
    fails gets :func:`failure_record`."""
    import torch

    from irs_torch.scenario import Scenario
    from irs_torch.solvers.portfolio import first_order_portfolio

    cfg = _config(config)
    ids = [int(i) for i in instance_ids]
    if not ids:
        return []
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        seeds = [instance_seed(cfg.seed, i) for i in ids]
        scns = [cfg.scenario(sd) for sd in seeds]
        opts = [cfg.solver_options(sd) for sd in seeds]
        fo = first_order_portfolio(Scenario.stack(scns).to(torch.complex128), options=opts[0],
                                   seeds=[o.seed for o in opts])
        out = []
        for k, (i, sd) in enumerate(zip(ids, seeds)):
            try:
                rec = _record(cfg, scns[k], fo.item_result(k, opts[k]), i, sd)
                rec["found_by"] = fo.found_by[k]
            except Exception as e:  # noqa: BLE001  (one bad item: recorded, the others kept)
                rec = failure_record(i, cfg, f"{type(e).__name__}: {e}")
            out.append(rec)
    except Exception as e:  # noqa: BLE001  (a chunk-wide failure: label one by one to isolate the bad instance)
        if len(ids) == 1:
            tb = traceback.format_exc(limit=-3).strip().splitlines()
            return [failure_record(ids[0], cfg, f"{type(e).__name__}: {e}") | {"traceback": tb[-6:]}]
        return [r for i in ids for r in solve_chunk(cfg, [i])]
    delay = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay * len(ids))
    wall, cpu = (time.perf_counter() - t0) / len(ids), (time.process_time() - c0) / len(ids)
    for rec in out:  # the chunk's time, shared equally
        if not rec.get("failed"):
            rec["solve_time"], rec["cpu_time"] = np.float64(wall), np.float64(cpu)
    return out


def label_instance(cfg: DatasetConfig, i: int, seed: int) -> dict:
    """The record of instance ``i`` (seed ``seed``): its scenario, the solver's design and start, their
    torch-model CRBs, the max-CRB history and the solver status. Raises on a failed solve."""
    from irs_torch.solvers import solve

    s = cfg.scenario(seed)
    res = solve(s, method=cfg.solver["method"], init=cfg.solver.get("init"), options=cfg.solver_options(seed))
    return _record(cfg, s, res, i, seed)


def _record(cfg: DatasetConfig, s, res, i: int, seed: int) -> dict:
    """The shard record of instance ``i`` (scenario ``s``, seed ``seed``) from its ``SolveResult``."""
    for name in ("R_s", "psi"):
        if not bool(np.isfinite(_np(getattr(res, name))).all()):
            raise FloatingPointError(f"solver returned non-finite {name} (status {res.status!r})")
    c = s.crb(res.R_s, res.psi)
    ci = res.init_crb  # the solver always reports its start (SolveResult.init_R_s, init_psi, init_crb)
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
        "init_R_s": _np(res.init_R_s), "init_psi": _np(res.init_psi), "init_crb": _np(ci),
        "init_max_crb": np.float64(_np(ci).max()),
        "history_max_crb": hist,
        "status": np.bytes_(str(res.status).encode("ascii", "replace")[:shards.STATUS_LEN]),
        "success": np.int8(bool(res.success)), "nit": np.int64(res.nit),
        "instance_id": np.int64(i), "seed": np.int64(seed),
    }

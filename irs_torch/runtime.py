"""Runtime pipeline: the network proposes, the exact solver refines.

``solve_learned(scenario, checkpoint=None, refine="ao")``: batched network inference -> feasible
design (by construction) -> the AO solver started from the prediction -> a :class:`SolveResult`
whose ``times`` hold the per-stage wall times (``load``, ``predict``, ``refine``, ``total``).

Without ``checkpoint`` the shipped model in ``checkpoints/`` that matches the scenario's array sizes
(M, N_h, N_v, L) is used (:func:`find_checkpoint`); it says which on stderr. The directories searched
are :func:`checkpoint_dirs`: those listed in the environment variable ``IRS_TORCH_CHECKPOINTS``
(``os.pathsep``-separated) if it is set, else the repository's ``checkpoints/``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from irs_torch.outputs import dumps
from irs_torch.scenario import Scenario

CHECKPOINT_DIRS = (Path(__file__).resolve().parent.parent / "checkpoints",)
CHECKPOINTS_ENV = "IRS_TORCH_CHECKPOINTS"
REFINE = ("ao", "none")


def checkpoint_dirs(dirs=None) -> list[Path]:
    """Directories searched for shipped models: ``dirs`` if given, else ``$IRS_TORCH_CHECKPOINTS``
    (``os.pathsep``-separated) if set, else :data:`CHECKPOINT_DIRS`."""
    if dirs is None:
        env = os.environ.get(CHECKPOINTS_ENV)
        dirs = [d for d in env.split(os.pathsep) if d] if env else CHECKPOINT_DIRS
    elif isinstance(dirs, (str, Path)):
        dirs = [dirs]
    return [Path(d) for d in dirs]


def shipped_checkpoints(dirs=None) -> list[Path]:
    """Model files (``*.pt``) in :func:`checkpoint_dirs` (listed, not opened)."""
    out = []
    for d in checkpoint_dirs(dirs):
        if d.is_dir():
            out.extend(sorted(d.glob("*.pt")))
    return out


def find_checkpoint(scenario: Scenario, dirs=None) -> Path:
    """The shipped model for the scenario's sizes (and element spacings d_h, d_v and ``active``), searched in
    :func:`checkpoint_dirs` (``dirs``); FileNotFoundError listing the directories and what they hold
    otherwise.

    The scan never opens (unpickles) a model file: it reads each ``*.pt``'s JSON sidecar
    (:func:`irs_torch.learn.checkpoint.read_sidecar`, written by ``export_model``), and checks the
    chosen file's sha256 against it. Files without a valid sidecar, or whose bytes changed since it
    was written, are skipped with a UserWarning naming them (and listed in the error if nothing
    matches); the model is then loaded weights-only by :func:`irs_torch.learn.checkpoint.load_model`."""
    import warnings

    from irs_torch.learn.checkpoint import file_sha256, read_sidecar

    seen = []
    want = {"M": scenario.M, "N_h": scenario.N_h, "N_v": scenario.N_v, "L": scenario.L}
    for p in shipped_checkpoints(dirs):
        try:
            info = read_sidecar(p)
        except ValueError as e:
            warnings.warn(f"checkpoint scan: skipped {e}", stacklevel=2)
            seen.append(f"{p.name} (skipped: no valid sidecar {p.with_suffix('.json').name})")
            continue
        sizes = {k: int(info["sizes"][k]) for k in ("M", "N_h", "N_v", "L")}
        spacing = {k: float(info[k]) for k in ("d_h", "d_v")}
        seen.append(f"{p.name} {sizes}" + ("" if spacing == {"d_h": 0.5, "d_v": 0.5} else f" {spacing}"))
        if sizes == want and spacing == {"d_h": float(scenario.d_h), "d_v": float(scenario.d_v)} and \
                bool(info["active"]) == bool(scenario.active):
            if file_sha256(p) != info["sha256"]:
                warnings.warn(f"checkpoint scan: skipped {p}: its sha256 differs from its sidecar's (the file "
                              f"changed after the sidecar was written); rewrite the sidecar with "
                              f"`python -m irs_torch.learn.checkpoint sidecar {p}` if the file is right", stacklevel=2)
                seen[-1] = f"{p.name} (skipped: sha256 differs from its sidecar)"
                continue
            return p
    raise FileNotFoundError(
        f"no shipped checkpoint for M={scenario.M}, N_h={scenario.N_h}, N_v={scenario.N_v}, L={scenario.L} "
        f"(d_h={float(scenario.d_h):g}, d_v={float(scenario.d_v):g}, active={scenario.active}) in {', '.join(str(d) for d in checkpoint_dirs(dirs))} "
        f"(set ${CHECKPOINTS_ENV} to search elsewhere); found: {'; '.join(seen) or 'none'}. "
        f"Train one (training/README.md) and pass --checkpoint"
        + ("; a model file without a sidecar gets one with `python -m irs_torch.learn.checkpoint sidecar FILE.pt`"
           if any("sidecar" in x for x in seen) else ""))


#: AO iterations of the refinement stage by default (measured on the shipped model's test split: the
#: first 2-3 warm iterations bring the network's design to the cold AO's level; later ones add about
#: 1% each at 0.1-0.15x of a cold solve's time each; see README "Learned warm start").
REFINE_ITER = 3


def warm_start_options(options=None, refine_iter: int | None = REFINE_ITER):
    """The AO settings of the refinement stage: ``options`` (default :class:`SolverOptions`) with the
    first reflective step (P3) run like the AO's later ones - one start (the current psi, i.e. the
    network's), ``p3_warm_steps`` Adam steps - instead of the cold solve's multi-start
    (``p3_starts`` x ``p3_steps``, whose random restarts are what a good start makes unnecessary).
    Measured on the paper data set: the cold first P3 is most of a warm AO's time. ``refine_iter``:
    cap on the AO iterations (``min(options.max_iter, refine_iter)``; None: ``options.max_iter``)."""
    import dataclasses

    from irs_torch.solvers import SolverOptions

    opts = options or SolverOptions()
    if refine_iter is not None and (isinstance(refine_iter, bool) or not isinstance(refine_iter, int)
                                    or refine_iter < 1):
        raise ValueError(f"refine_iter must be None or an integer >= 1, got {refine_iter!r}")
    it = opts.max_iter if refine_iter is None else min(opts.max_iter, refine_iter)
    return dataclasses.replace(opts, p3_starts=1, p3_steps=opts.p3_warm_steps, max_iter=it)


def solve_learned(scenario: Scenario, checkpoint=None, refine: str = "ao", options=None, net=None,
                  verbose: bool = True, refine_iter: int | None = REFINE_ITER):
    """Predict a design with the warm-start network and (optionally) refine it with the AO.

    scenario: unbatched. checkpoint: path of a model file or Lightning checkpoint (default: the shipped
    one for these sizes). refine: "ao" (AO warm-started at the prediction with
    :func:`warm_start_options` of ``options``; never worse than the prediction) or "none" (the
    network's feasible design alone). Returns a :class:`irs_torch.solvers.SolveResult`
    with ``options["method"] = "learned"`` and per-stage ``times``.
    """
    from irs_torch.learn.checkpoint import load_model, predict
    from irs_torch.solvers import SolverOptions, solve
    from irs_torch.solvers.result import SolveResult

    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    if scenario.batch_shape:
        raise ValueError(f"solve_learned takes one scenario; got batch shape {tuple(scenario.batch_shape)} "
                         f"(use irs_torch.learn.predict for batched inference)")
    t0 = time.perf_counter()
    if net is None:
        if checkpoint is None:
            checkpoint = find_checkpoint(scenario)
            if verbose:
                print(f"using shipped checkpoint {checkpoint}", file=sys.stderr)
        net = load_model(checkpoint, scenario)
    t1 = time.perf_counter()
    R_p, psi_p = predict(net, scenario)
    t2 = time.perf_counter()
    opts = options or SolverOptions()
    if refine == "ao":
        res = solve(scenario, method="ao", init={"R_s": R_p, "psi": psi_p}, options=warm_start_options(opts, refine_iter))
    else:
        from irs_torch.solvers.ao import _result, initial_point

        scn = scenario.to(torch.complex128)
        R0, psi0, info = initial_point(scn, {"R_s": R_p, "psi": psi_p}, opts)
        res = _result(scn, R0, psi0, method="ao", options=opts, history=[], status="network-only", nit=0,
                      times={"p2": 0.0, "p3": 0.0}, R0=R0, psi0=psi0, info=info)
    t3 = time.perf_counter()
    res.times = dict(res.times or {})
    res.times.update({"load": t1 - t0, "predict": t2 - t1, "refine": t3 - t2 if refine == "ao" else 0.0,
                      "total": t3 - t0})
    res.options = dict(res.options or {})
    res.options.update({"method": "learned", "refine": refine,
                        "checkpoint": str(getattr(net, "source", checkpoint))})
    assert isinstance(res, SolveResult)
    return res


def predict_batch(scenario: Scenario, checkpoint=None):
    """Batched network inference (no solver) for a batched scenario: ``(R_s, psi, seconds)``."""
    from irs_torch.learn.checkpoint import load_model, predict

    s0 = scenario[0] if scenario.batch_shape else scenario
    net = load_model(checkpoint or find_checkpoint(s0), s0)
    t = time.perf_counter()
    R, psi = predict(net, scenario)
    return R, psi, time.perf_counter() - t


__all__ = ["solve_learned", "find_checkpoint", "checkpoint_dirs", "shipped_checkpoints", "predict_batch", "bench_warmstart"]


def bench_warmstart(data, checkpoint=None, split: str = "test", limit: int | None = None, out=None,
                    options=None, progress: bool = True, refine_iter: int | None = REFINE_ITER) -> dict:
    """Cold AO vs network alone vs network + AO refinement over a held-out split of a data set.

    Per instance: max-CRB and wall time of (a) the cold AO, (b) the network alone, (c) network + AO.
    The data set's stored label is not reused for (a): the cold AO is re-run here so that times are
    measured side by side on this machine. Batched inference time per instance is measured once over
    the whole split. Writes ``out/warmstart.json``, ``out/warmstart.csv`` and ``out/warmstart.png``
    (CRB ratio vs time saved) when ``out`` is given. Returns the summary dict.
    """
    import csv
    import json

    import numpy as np
    from tqdm.auto import tqdm

    from irs_torch.data import ShardDataset
    from irs_torch.learn.checkpoint import load_model, predict
    from irs_torch.solvers import SolverOptions, solve

    ds0 = ShardDataset(data)
    if len(ds0) == 0:
        raise ValueError(f"{data}: the data set has no solved instances (see 'irs-torch dataset info')")
    s0 = ds0.scenario(0)
    net = load_model(checkpoint or find_checkpoint(s0), s0)
    # the split the model was trained with (its test split is held out); default fractions otherwise
    fractions = net.meta.get("dataset", {}).get("fractions") or (0.8, 0.1, 0.1)
    ds = ShardDataset(data, split=split, fractions=fractions)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise ValueError(f"{data}: the {split!r} split (fractions {list(fractions)}) is empty")
    opts = options or SolverOptions()
    scen = [ds.scenario(i) for i in range(n)]
    batch = Scenario.stack([s.replace(seed=None) for s in scen])
    # steady-state batched throughput: one untimed warm-up call, then the best of 3 timed calls
    predict(net, batch)
    t_batch = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        predict(net, batch)
        t_batch = min(t_batch, (time.perf_counter() - t) / n)
    # Resumable: finished instances are appended to out/rows.jsonl (one JSON line each, keyed by the
    # checkpoint, the solver options and the split) and reused when the bench is rerun.
    import hashlib

    src = Path(str(getattr(net, "source", checkpoint)))
    digest = hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else None
    key = {"checkpoint": str(src), "checkpoint_sha256": digest, "options": opts.to_dict(),
           "refine_options": warm_start_options(opts, refine_iter).to_dict(),
           "fractions": list(fractions), "split": split}
    done: dict[int, dict] = {}
    log_path = None
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        log_path = Path(out) / "rows.jsonl"
        if log_path.exists():
            for line in log_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: recomputed
                    continue
                if rec.get("key") == key:
                    done[int(rec["row"]["instance_id"])] = rec["row"]
    rows = []
    for i, s in enumerate(tqdm(scen, desc="warm-start bench", disable=not progress)):
        iid = int(ds.instance_ids[i])
        if iid in done:
            rows.append({**done[iid], "index": i})
            continue
        t0 = time.perf_counter()
        cold = solve(s, method="ao", options=opts)
        t1 = time.perf_counter()
        R_p, psi_p = predict(net, s)
        t2 = time.perf_counter()
        warm = solve_learned(s, refine="ao", options=opts, net=net, verbose=False, refine_iter=refine_iter)
        t3 = time.perf_counter()
        net_crb = float(s.max_crb(R_p, psi_p))
        row = {"index": i, "instance_id": iid, "seed": s.seed, "cold_max_crb": cold.max_crb, "cold_time": t1 - t0,
               "net_max_crb": net_crb, "net_time": t2 - t1, "warm_max_crb": warm.max_crb,
               "warm_time": t3 - t2, "warm_nit": warm.nit, "cold_nit": cold.nit,
               "net_feasible": bool(s.is_feasible(R_p, psi_p, rtol=1e-6))}
        rows.append(row)
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(dumps({"key": key, "row": row}) + "\n")
    a = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0] if k not in ("seed", "instance_id")}

    def q(x, p):
        return float(np.quantile(x, p))

    r_net = a["net_max_crb"] / a["cold_max_crb"]
    r_warm = a["warm_max_crb"] / a["cold_max_crb"]
    t_ratio = a["warm_time"] / a["cold_time"]
    summary = {
        "instances": n, "split": split, "data": str(data), "checkpoint": str(getattr(net, "source", checkpoint)),
        "cold_time_median": q(a["cold_time"], 0.5), "cold_time_p90": q(a["cold_time"], 0.9),
        "net_time_median": q(a["net_time"], 0.5), "net_batched_time_per_instance": t_batch,
        "warm_time_median": q(a["warm_time"], 0.5), "warm_time_p90": q(a["warm_time"], 0.9),
        "crb_ratio_net_median": q(r_net, 0.5), "crb_ratio_net_p90": q(r_net, 0.9),
        "crb_ratio_warm_median": q(r_warm, 0.5), "crb_ratio_warm_p90": q(r_warm, 0.9),
        "time_ratio_warm_median": q(t_ratio, 0.5), "time_ratio_warm_p90": q(t_ratio, 0.9),
        "time_ratio_of_medians": q(a["warm_time"], 0.5) / q(a["cold_time"], 0.5),
        "fraction_warm_le_cold": float((a["warm_max_crb"] <= a["cold_max_crb"] * (1 + 1e-9)).mean()),
        "fractions": list(fractions), "torch_threads": torch.get_num_threads(),
        "net_feasible_fraction": float(a["net_feasible"].mean()),
        "solver_options": {**opts.to_dict()}, "refine_options": warm_start_options(opts, refine_iter).to_dict(),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "warmstart.json").write_text(dumps({"summary": summary, "instances": rows}, indent=1))
        with open(out / "warmstart.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.8), dpi=110)
        saved = 1.0 - t_ratio
        ax.scatter(saved, r_warm, s=10, label="network + AO refinement")
        ax.scatter(1.0 - a["net_time"] / a["cold_time"], r_net, s=10, marker="x", label="network alone")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("fraction of cold-AO time saved")
        ax.set_ylabel("max-CRB / cold AO max-CRB")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "warmstart.png")
        plt.close(fig)
        summary["outputs"] = [str(out / x) for x in ("warmstart.json", "warmstart.csv", "warmstart.png")]
    return summary

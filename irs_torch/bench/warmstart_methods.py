"""The warm-start benchmark's methods and instances: the method names (:data:`METHODS`,
:func:`is_method`), the instances of the quality suite and of a data set (:func:`suite_instances`,
:func:`data_instances`), the non-learned starts the network is compared with (:func:`heuristic_starts`,
:func:`random_starts`, :func:`first_order_design`) and one method run on one instance (:func:`run_method`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

BASE_METHODS = ("net", "net+refine", "ao-default", "ao-legacy", "ao-capped", "aligned+refine", "cophased+refine",
                "adam@1x", "adam@100x")
HYPOTHESES = (1, 2, 4)
ADAM_FACTORS = {"adam@1x": 1.0, "adam@100x": 100.0}


def portfolio_methods(ks=HYPOTHESES) -> list[str]:
    """Method names of the portfolio comparison for sizes ``ks`` (k = 1 is the base methods, except
    ``random+refine@1``)."""
    out = []
    for k in ks:
        if k > 1:
            out += [f"net+refine@{k}", f"heuristic+refine@{k}"]
        out.append(f"random+refine@{k}")
    return out


def all_methods(ks=HYPOTHESES) -> list[str]:
    return list(BASE_METHODS) + portfolio_methods(ks)


METHODS = tuple(all_methods())


def is_method(name: str) -> bool:
    """Whether ``name`` is a method of the benchmark (a base method or ``<portfolio kind>@<k>``)."""
    kind, at, k = name.partition("@")
    return name in BASE_METHODS or (bool(at) and kind in ("net+refine", "heuristic+refine", "random+refine")
                                    and k.isdigit() and int(k) >= 1)


# ----------------------------------------------------------------------------- instances
def suite_instances(sizes: dict, suite_dir=None, quick: bool = False, ids=None, limit: int | None = None) -> list[dict]:
    """Quality-suite instances of the given sizes (``M``, ``N_h``, ``N_v``, ``L``) that have a best-known
    design: dicts with ``source`` "suite", ``id``, ``scenario`` (complex128), ``ref_max_crb``,
    ``ref_R_s``, ``ref_psi`` (the best-known design)."""
    from irs_torch.bench import quality as Q

    suite_dir = Path(suite_dir) if suite_dir is not None else Q.SUITE_DIR
    out = []
    for inst in Q.load_suite(suite_dir, quick=quick, ids=ids):
        g = inst["geometry"]
        if (int(g["M"]), int(g.get("N_h", 4)), int(g.get("N_v", 4))) != (sizes["M"], sizes["N_h"], sizes["N_v"]):
            continue
        s = Q.build_scenario(inst).to(torch.complex128)
        if s.L != sizes["L"]:
            continue
        sol, mx = Q.load_best(suite_dir, inst)
        if sol is None:
            continue
        out.append({"source": "suite", "id": inst["id"], "scenario": s, "ref_max_crb": float(mx),
                    "ref_R_s": sol.R_s.to(torch.complex128), "ref_psi": sol.psi.to(torch.complex128)})
        if limit is not None and len(out) >= limit:
            break
    return out


def data_instances(data, split: str = "test", fractions=None, limit: int | None = None) -> list[dict]:
    """Instances of a data set's split (solved ones only): dicts as :func:`suite_instances` with
    source "data", ``id`` the instance id and the stored label as the reference."""
    from irs_torch.data import ShardDataset

    ds = ShardDataset(data, split=split, fractions=fractions or (0.8, 0.1, 0.1), require_success=True)
    n = len(ds) if limit is None else min(limit, len(ds))
    out = []
    for i in range(n):
        item = ds[i]
        s = ds.scenario(i).to(torch.complex128)
        R, psi = item["R_s"].to(torch.complex128), item["psi"].to(torch.complex128)
        out.append({"source": "data", "id": str(int(ds.instance_ids[i])), "scenario": s,
                    "ref_max_crb": float(s.max_crb(R, psi)), "ref_R_s": R, "ref_psi": psi,
                    "label_max_crb": float(item["max_crb"])})
    return out


# ----------------------------------------------------------------------------- baselines
def first_order_design(scenario, seconds: float, seed: int = 0, lr: float = 0.03, sharpness: float = 30.0):
    """A time-budgeted first-order design: :func:`irs_torch.estimation.designs.adam_design` on the
    max-CRB (``objective="total"``: Adam on ``logsumexp(sharpness * log tr(F_l^-1)) / sharpness``, every
    iterate feasible), from the isotropic R_s and the co-phased psi of the dominant transmit direction,
    until ``seconds`` of wall time are spent (at least one step; the start's cost counts). Returns
    ``(R_s (L, M, M), psi (L, N), steps)``, the best iterate by the exact max-CRB."""
    from irs_torch.estimation.designs import adam_design
    from irs_torch.physics.steering import cophasing_psi

    t0 = time.perf_counter()
    s = scenario.to(torch.complex128)
    w = torch.linalg.eigh(s.G.conj().transpose(-1, -2) @ s.G)[1][..., -1]
    psi0 = s.scale_psi_to_feasible(s.isotropic_design(), cophasing_psi(s, w))
    left = max(0.0, float(seconds) - (time.perf_counter() - t0))
    return adam_design(s, lr=lr, seed=seed, init_psi=psi0, sharpness=sharpness, seconds=left, objective="total",
                       return_steps=True)


def heuristic_starts(scenario, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The aligned start (:func:`irs_torch.solvers.initial_point` ``{"kind": "aligned"}``) and ``k - 1``
    random-phase variants (:func:`irs_torch.solvers.starts.random_start`, amplitude levels 1 and 0.5
    of a_max, isotropic and beamformed R_s alternating). Shapes ``[(R_s (L, M, M), psi (L, N))]``."""
    from irs_torch.solvers import SolverOptions, initial_point
    from irs_torch.solvers.starts import random_start

    R, psi, _ = initial_point(scenario, {"kind": "aligned"}, SolverOptions(seed=seed))
    out = [(R, psi)]
    for j in range(1, k):
        out.append(random_start(scenario, seed * 1000 + 7 + j, (1.0, 0.5)[(j - 1) % 2], beam=j % 2 == 0))
    return out


def random_starts(scenario, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``k`` random starts of the AO (:func:`irs_torch.solvers.initial_point` with seeds ``seed ..
    seed + k - 1``: random phases, isotropic R_s, power balance)."""
    from irs_torch.solvers import SolverOptions, initial_point

    return [initial_point(scenario, None, SolverOptions(seed=seed + j))[:2] for j in range(k)]


# ----------------------------------------------------------------------------- one instance
def _evaluate(s, R, psi) -> tuple[float, bool]:
    mx = float(s.max_crb(R.to(torch.complex128), psi.to(torch.complex128)))
    return mx, bool(s.is_feasible(R.to(torch.complex128), psi.to(torch.complex128), rtol=1e-6)) and math.isfinite(mx)


def run_method(method: str, inst: dict, net, options, refine_iter: int, seed: int, done: dict) -> dict:
    """One method on one instance: ``{"max_crb", "seconds", "nit", "feasible", "note"}``. ``done``:
    this instance's finished rows by method (``ao-capped`` reads ``net+refine``'s iterations, the
    Adam baselines the network's time)."""
    from irs_torch.inference import network_hypotheses, refine_starts
    from irs_torch.solvers import SolverOptions, solve

    s = inst["scenario"]
    note = ""
    if method == "net":
        t = time.perf_counter()
        (R, psi), = network_hypotheses(net, s, 1)
        sec = time.perf_counter() - t
        mx, ok = _evaluate(s, R, psi)
        return {"max_crb": mx, "seconds": sec, "nit": 0, "feasible": ok, "note": note}
    if method in ADAM_FACTORS:
        budget = ADAM_FACTORS[method] * done["net"]["seconds"]
        t = time.perf_counter()
        R, psi, steps = first_order_design(s, budget, seed=seed)
        sec = time.perf_counter() - t
        mx, ok = _evaluate(s, R, psi)
        return {"max_crb": mx, "seconds": sec, "nit": 0, "feasible": ok,
                "note": f"{steps} Adam steps in {budget:.4g} s"}
    if method in ("ao-default", "ao-legacy", "ao-capped"):
        kw = {**options.to_dict(), "seed": seed}
        if method == "ao-default":
            kw["effort"] = "default"
        else:
            kw["effort"] = "legacy"
        if method == "ao-capped":
            kw["max_iter"] = max(1, int(done["net+refine"]["nit"]))
            note = f"max_iter {kw['max_iter']}"
        t = time.perf_counter()
        r = solve(s, method="ao", options=SolverOptions(**kw))
        sec = time.perf_counter() - t
        mx, ok = _evaluate(s, r.R_s, r.psi)
        return {"max_crb": mx, "seconds": sec, "nit": int(r.nit), "feasible": ok and bool(r.success), "note": note}
    # refinement from starts
    name, _, kk = method.partition("@")
    k = int(kk) if kk else 1
    t = time.perf_counter()
    if name == "net+refine":
        if k > 1 and k > int(getattr(net, "hypotheses", 1)) + 1:
            return {"max_crb": math.nan, "seconds": math.nan, "nit": 0, "feasible": False,
                    "note": f"skipped: the model has {getattr(net, 'hypotheses', 1)} hypotheses"}
        starts = network_hypotheses(net, s, k)
    elif name == "aligned+refine":
        starts = heuristic_starts(s, 1, seed)
    elif name == "cophased+refine":
        from irs_torch.solvers.starts import cophased_start

        starts = [cophased_start(s)]
    elif name == "heuristic+refine":
        starts = heuristic_starts(s, k, seed)
    elif name == "random+refine":
        starts = random_starts(s, k, seed)
    else:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    r, runs = refine_starts(s, starts, options, refine_iter)
    sec = time.perf_counter() - t
    mx, ok = _evaluate(s, r.R_s, r.psi)
    return {"max_crb": mx, "seconds": sec, "nit": int(sum(x["nit"] for x in runs)) if k > 1 else int(r.nit),
            "feasible": ok and bool(r.success), "note": note}

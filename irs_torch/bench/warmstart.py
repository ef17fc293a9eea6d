"""The warm-start benchmark: the learned warm start against honest baselines.

``irs-torch bench warmstart`` is a thin wrapper of :func:`bench_warmstart`. For every instance, all
methods run side by side, on the same instance, on the same machine, in one process (one torch
thread by default, the conic problems compiled before any timed solve), and each is reported as a
ratio of its max-CRB to a *reference* max-CRB, with its wall time:

- source ``suite``: the quality suite (``benchmarks/quality``: ``suite.json`` and the best-known
  designs ``best/*.npz``, :mod:`irs_torch.bench.quality`) restricted to the model's sizes (M, N_h, N_v, L);
  reference = the best-known design;
- source ``data``: a data set's split (default: the test split, with the fractions the model was
  trained with); reference = the stored label (the data-set solver's design).

Methods (:data:`METHODS`; "refine" is always the same refinement stage,
:func:`irs_torch.inference.refine_starts`: the AO with :func:`irs_torch.inference.warm_start_options`,
``refine_iter`` iterations, one P3 start, from each start, keeping the best):

=====================  ===========================================================================
``net``                the network alone (one unbatched forward pass; its wall time)
``net+refine``         the network's design + refine (``solve_learned``)
``ao-default``         the cold AO, ``effort="default"`` (the library default)
``ao-legacy``          the cold AO, ``effort="legacy"`` (one random start)
``ao-capped``          the cold legacy AO capped at the AO iterations ``net+refine`` used there
``aligned+refine``     the ``aligned`` start (co-phased psi, isotropic R_s, power balance) + refine
``cophased+refine``    :func:`irs_torch.solvers.starts.cophased_start` (beam + co-phased psi) + refine
``adam@1x``            a first-order design (:func:`first_order_design`, Adam on the smooth max
                       angle CRB, the method of :func:`irs_torch.estimation.designs.adam_design`)
                       given the network's wall time on that instance
``adam@100x``          the same given 100x the network's wall time (time-, not step-budgeted)
``net+refine@k``       portfolio: the network's k best designs
                       (:func:`irs_torch.inference.network_hypotheses`) each refined, best kept
``heuristic+refine@k`` the aligned start + k - 1 random-phase variants
                       (:func:`irs_torch.solvers.starts.random_start`), each refined, best kept
``random+refine@k``    k random starts (the AO's own, seeds ``seed .. seed + k - 1``), each refined
=====================  ===========================================================================

(k = 1 of the portfolio: ``net+refine``, ``aligned+refine`` and ``random+refine@1``.) Times:
``net+refine*`` include the network's forward pass; heuristic and random starts include computing
the starts; k refinements run one after another (their times add).

Breakdowns (:mod:`irs_torch.learn.regimes`): C1 regime at the reference design (``c1-binding`` /
``standard``), P_s decade and P_t low/high buckets.

Outputs under ``out``: ``rows.jsonl`` (the resume log: one JSON line per (source, instance, method),
keyed by the configuration; a rerun computes only what is missing), ``warmstart.csv`` (one row per
instance and method), ``warmstart.json`` (config, per-method summaries per source and group, the
design targets checked), ``warmstart_<source>.png`` (ratio distribution per method and regime; ratio
vs time). Nothing is written into the inputs.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from irs_torch.bench.warmstart_methods import (
    ADAM_FACTORS,
    HYPOTHESES,
    all_methods,
    data_instances,
    is_method,
    run_method,
    suite_instances,
)
from irs_torch.bench.warmstart_report import order_methods, plot_rows, summarize
from irs_torch.learn.regimes import c1_binding, ps_bucket, pt_bucket

FORMAT = "irs-torch/bench-warmstart"
SOURCES = ("suite", "data")


# ----------------------------------------------------------------------------- the benchmark
def bench_warmstart(out=None, *, checkpoint=None, sources=("suite",), data=None, split: str = "test",
                    suite_dir=None, quick: bool = False, ids=None, limit: int | None = None, methods=None,
                    hypotheses=HYPOTHESES, options=None, refine_iter: int = 3, seed: int = 0, threads: int = 1,
                    progress: bool = True, log=print) -> dict:
    """Run the warm-start benchmark (module docstring). Returns the summary dict (also written to
    ``out/warmstart.json`` when ``out`` is given).

    checkpoint: model file (default: the shipped one for the sizes of the first instance, or of the
    paper sizes M = 16, 4 x 4, L = 2 for the suite). sources: "suite" and/or "data" (``data``: data
    set directory; ``split``). limit: at most this many instances per source. methods: names from
    :data:`METHODS` (default: all of :func:`all_methods` for ``hypotheses``). options: the
    :class:`~irs_torch.solvers.SolverOptions` of every AO run (effort set per method). threads: torch
    threads during the run (restored after). Raises ValueError / FileNotFoundError naming the input.
    """
    from irs_torch.bench.quality import append_jsonl, read_jsonl
    from irs_torch.inference import find_checkpoint, warm_start_options
    from irs_torch.learn.checkpoint import load_model
    from irs_torch.outputs import dumps, file_sha256
    from irs_torch.scenario import Scenario, paper_scenario
    from irs_torch.solvers import SolverOptions, solve

    bad = [s for s in sources if s not in SOURCES]
    if bad or not sources:
        raise ValueError(f"sources must be among {SOURCES}, got {list(sources)}")
    if "data" in sources and data is None:
        raise ValueError("source 'data' needs a data set directory (--data)")
    ks = sorted({int(k) for k in hypotheses})
    if not ks or ks[0] < 1:
        raise ValueError(f"hypotheses must be integers >= 1, got {list(hypotheses)}")
    methods = list(methods) if methods else all_methods(ks)
    unknown = [m for m in methods if not is_method(m)]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(all_methods(ks))}")
    if "ao-capped" in methods and "net+refine" not in methods:
        methods.insert(0, "net+refine")
    if any(m in ADAM_FACTORS for m in methods) and "net" not in methods:
        methods.insert(0, "net")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    opts = options or SolverOptions()

    # the model, and the instances of each source at its sizes
    if checkpoint is None:  # the shipped model whose training budgets cover the instances' budgets
        probes = []
        if "suite" in sources:
            from irs_torch.bench import quality as Q

            probes += [paper_scenario(0, P_t=float(i["P_t"]), P_s=float(i["P_s"]), a_max=float(i["a_max"]))
                       for i in Q.load_suite(Path(suite_dir) if suite_dir is not None else Q.SUITE_DIR,
                                             quick=quick, ids=ids)]
        if "data" in sources:
            from irs_torch.data import ShardDataset

            ds = ShardDataset(data)
            probes += [ds.scenario(i) for i in range(len(ds))]
        checkpoint = find_checkpoint(Scenario.stack([p.to(torch.complex128) for p in probes]) if probes
                                     else paper_scenario())
        log(f"using shipped checkpoint {checkpoint}")
    net = load_model(checkpoint)
    sizes = net.sizes
    insts = []
    if "suite" in sources:
        si = suite_instances(sizes, suite_dir, quick=quick, ids=ids, limit=limit)
        if not si:
            raise ValueError(f"the quality suite has no instance with a best-known design at the model's sizes {sizes}")
        log(f"suite: {len(si)} instance(s) at the model's sizes {sizes} with a best-known design")
        insts += si
    if "data" in sources:
        fractions = net.meta.get("dataset", {}).get("fractions") or (0.8, 0.1, 0.1)
        di = data_instances(data, split, fractions, limit)
        if not di:
            raise ValueError(f"{data}: the {split!r} split (fractions {list(fractions)}) has no solved instance")
        insts += di
    for inst in insts:
        from irs_torch.learn.checkpoint import check_compatible

        check_compatible(net, inst["scenario"], source=str(checkpoint))
        s = inst["scenario"]
        inst["regime"] = "c1-binding" if bool(c1_binding(s, inst["ref_R_s"], inst["ref_psi"])) else "standard"

    src = Path(str(getattr(net, "source", checkpoint)))
    key = {"format": FORMAT, "checkpoint_sha256": file_sha256(src) if src.is_file() else str(src),
           "options": opts.to_dict(), "refine_options": warm_start_options(opts, refine_iter).to_dict(),
           "refine_iter": refine_iter, "seed": seed, "threads": threads, "split": split if "data" in sources else None}
    key_s = hashlib.sha256(dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    done: dict = {}
    log_path = None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "rows.jsonl"
        for rec in read_jsonl(log_path):
            if rec.get("key") == key_s:
                done[(rec["source"], rec["id"], rec["method"])] = rec

    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    rows = []
    try:
        todo = [(i, m) for i in insts for m in order_methods(methods) if (i["source"], i["id"], m) not in done]
        log(f"bench warmstart: {len(insts)} instance(s) x {len(methods)} method(s); {len(todo)} run(s) to do")
        if todo:  # untimed warm-ups: the network and the conic problems of these sizes (compiled once)
            s0 = todo[0][0]["scenario"]
            from irs_torch.inference import network_hypotheses

            network_hypotheses(net, s0, 1)
            solve(s0, method="ao", options=SolverOptions(**{**opts.to_dict(), "effort": "legacy", "max_iter": 1}))
        it = insts
        if progress:
            from irs_torch.outputs import progress_bar

            it = progress_bar(insts, desc="bench warmstart", unit="instance")
        for inst in it:
            mine = {m: done[(inst["source"], inst["id"], m)] for m in methods
                    if (inst["source"], inst["id"], m) in done}
            s = inst["scenario"]
            for m in order_methods(methods):
                if m not in mine:
                    res = run_method(m, inst, net, opts, refine_iter, seed, mine)
                    rec = {"key": key_s, "source": inst["source"], "id": inst["id"], "method": m, **res}
                    if log_path is not None:
                        append_jsonl(log_path, rec)
                    mine[m] = rec
                r = mine[m]
                ratio = r["max_crb"] / inst["ref_max_crb"] if r["max_crb"] is not None and math.isfinite(
                    r["max_crb"] if r["max_crb"] is not None else math.nan) else math.nan
                rows.append({"source": inst["source"], "id": inst["id"], "method": m, "max_crb": r["max_crb"],
                             "ref_max_crb": inst["ref_max_crb"], "ratio": ratio, "seconds": r["seconds"],
                             "nit": r["nit"], "feasible": bool(r["feasible"]), "regime": inst["regime"],
                             "P_t": float(s.P_t), "P_s": float(s.P_s), "a_max": float(s.a_max),
                             "ps_bucket": ps_bucket(float(s.P_s)), "pt_bucket": pt_bucket(float(s.P_t)),
                             "note": r.get("note", "")})
    finally:
        torch.set_num_threads(old_threads)

    from irs_torch import __version__

    summary = {"format": FORMAT, "version": __version__, "checkpoint": str(src),
               "checkpoint_sha256": key["checkpoint_sha256"],
               "model_hypotheses": int(getattr(net, "hypotheses", 1)), "sizes": sizes, "sources": list(sources),
               "data": str(data) if data is not None else None, "split": key["split"], "methods": methods,
               "hypotheses": ks, "seed": seed, "threads": threads, "refine_iter": refine_iter,
               "solver_options": opts.to_dict(), "refine_options": key["refine_options"],
               "notes": "ratio = max-CRB / reference (suite: best-known design; data: the stored label); seconds = "
                        "wall time of the method on one instance, one process, torch threads = threads; regime = C1 "
                        "binding (margin < 1e-3) at the reference design for the IRS attaining the max-CRB",
               "summary": summarize(rows, methods)}
    if out is not None:
        import csv

        cols = list(rows[0]) if rows else []
        from irs_torch.outputs import atomic_open

        with atomic_open(out / "warmstart.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        from irs_torch.outputs import atomic_write_text

        atomic_write_text(out / "warmstart.json", dumps(summary, indent=1) + "\n")
        outs = [out / "warmstart.csv", out / "warmstart.json"]
        for source in summary["summary"]:
            p = out / f"warmstart_{source}.png"
            plot_rows(p, rows, methods, source)
            outs.append(p)
        summary["outputs"] = [str(p) for p in outs]
    summary["rows"] = rows
    return summary


def read_rows(csv_path) -> list[dict]:
    """The per-instance rows of a ``warmstart.csv`` (numbers parsed)."""
    import csv

    out = []
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            for k in ("max_crb", "ref_max_crb", "ratio", "seconds", "P_t", "P_s", "a_max"):
                r[k] = float(r[k]) if r[k] not in ("", "None") else math.nan
            r["nit"] = int(r["nit"])
            r["feasible"] = r["feasible"] == "True"
            out.append(r)
    return out


__all__ = ["bench_warmstart", "read_rows", "FORMAT", "SOURCES"]

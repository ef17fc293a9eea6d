"""Reference values for the default-suite quality test of a shipped warm-start model
(tests/test_model_quality.py); one JSON + one scenario file per model under tests/data/model_reference/.

    python scripts/model_reference.py --checkpoint checkpoints/warm-start-budget.pt --beats-heuristic
    python scripts/model_reference.py --checkpoint checkpoints/warm-start-paper.pt

What it does, for a model trained on the data set config recorded in the file (``dataset.config``):

1. Draws ``--n`` held-out instances of that data set: instance ids ``--first-id``.. (default 10**6;
   never a training instance: the labelled ids are < the data set's count and the unlabelled ones start
   at 2**40) and labels each exactly as ``irs-torch dataset generate`` does
   (:func:`irs_torch.data.instance.solve_instance`: the config's solver, the instance's seed). The
   label is the reference of the model card's "ratio to the solver label".
2. Runs, per instance: the network alone (``network_hypotheses(net, s, 1)``), the network + refinement
   (:func:`irs_torch.inference.refine_starts` with ``--refine-iter`` AO iterations), and the two
   heuristic starts of ``irs-torch bench warmstart`` with the same refinement (aligned, co-phased).
3. Writes ``<stem>.npz`` (the scenarios, stacked) and ``<stem>.json`` (per-instance max-CRBs, the
   card's values it is compared with, the command, versions, machine, date, seconds).

The test recomputes steps 2 on the stored scenarios and checks them against the stored values and the
card. Rerun this script (the same command, recorded in the JSON) whenever the model file changes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "model_reference"
FIRST_ID = 10 ** 6


def card_values(ckpt: Path) -> dict:
    """The numbers of the model card this reference is checked against: the test metrics of
    ``<stem>.metrics.json`` (network alone, held-out test split, ratio to the solver label)."""
    m = json.loads(ckpt.with_suffix(".metrics.json").read_text())
    keys = ("n", "ratio_median", "ratio_p90", "ratio_geomean", "ratio_max", "feasible_frac")
    return {"file": str(ckpt.with_suffix(".metrics.json").relative_to(REPO)), **{k: m[k] for k in keys}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--n", type=int, default=6, help="instances (default 6)")
    p.add_argument("--first-id", type=int, default=FIRST_ID)
    p.add_argument("--refine-iter", type=int, default=1, help="AO iterations of the refinement (default 1)")
    p.add_argument("--beats-heuristic", action="store_true",
                   help="the card claims network + refinement beats the best heuristic start with the same "
                        "refinement: the test checks it")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)

    import numpy as np
    import torch

    from irs_torch.bench.warmstart_methods import heuristic_starts
    from irs_torch.data.distribution import DatasetConfig
    from irs_torch.data.instance import solve_instance
    from irs_torch.inference import network_hypotheses, refine_starts
    from irs_torch.learn import load_model
    from irs_torch.learn.regimes import c1_binding
    from irs_torch.outputs import file_sha256
    from irs_torch.scenario import Scenario
    from irs_torch.solvers import SolverOptions
    from irs_torch.solvers.starts import cophased_start

    torch.set_num_threads(1)
    ckpt = a.checkpoint.resolve()
    net = load_model(ckpt)
    cfg_d = net.meta["dataset"]["config"]
    cfg = DatasetConfig.from_dict(cfg_d if isinstance(cfg_d, dict) else json.loads(cfg_d))
    opts = SolverOptions()
    rows, scens = [], []
    t_all = time.perf_counter()
    for j in range(a.n):
        iid = a.first_id + j
        t0 = time.perf_counter()
        rec = solve_instance(cfg, iid)
        if "max_crb" not in rec or not bool(rec.get("success", True)):
            raise SystemExit(f"instance {iid}: the label solve failed ({rec.get('error', rec.get('status'))})")
        from irs_torch.data.distribution import instance_seed

        s = cfg.scenario(instance_seed(cfg.seed, iid)).to(torch.complex128)
        label = float(rec["max_crb"])
        t_label = time.perf_counter() - t0
        (R, psi), = network_hypotheses(net, s, 1)
        row = {"instance_id": iid, "label_max_crb": label, "label_seconds": t_label,
               "P_t": float(s.P_t), "P_s": float(s.P_s), "a_max": float(s.a_max),
               "c1_binding": bool(c1_binding(s, torch.as_tensor(rec["R_s"]).to(s.G.dtype),
                                             torch.as_tensor(rec["psi"]).to(s.G.dtype))),
               "net_max_crb": float(s.max_crb(R, psi))}
        for name, starts in (("net+refine", [(R, psi)]), ("aligned+refine", heuristic_starts(s, 1, 0)),
                             ("cophased+refine", [cophased_start(s)])):
            t = time.perf_counter()
            r, _ = refine_starts(s, starts, opts, a.refine_iter)
            row[f"{name}_max_crb"] = float(r.max_crb)
            row[f"{name}_seconds"] = time.perf_counter() - t
            row[f"{name}_success"] = bool(r.success)
        rows.append(row)
        scens.append(s)
        print(f"instance {iid}: label {label:.4g}, net x{row['net_max_crb'] / label:.3f}, "
              f"net+refine x{row['net+refine_max_crb'] / label:.3f}, aligned+refine "
              f"x{row['aligned+refine_max_crb'] / label:.3f}, cophased+refine "
              f"x{row['cophased+refine_max_crb'] / label:.3f} ({time.perf_counter() - t0:.1f} s)", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = ckpt.stem
    Scenario.stack(scens).save(a.out / f"{stem}.npz")
    gm = lambda xs: float(math.exp(np.mean(np.log(xs))))  # noqa: E731
    lab = [r["label_max_crb"] for r in rows]
    best_h = [min(r["aligned+refine_max_crb"], r["cophased+refine_max_crb"]) for r in rows]
    summary = {
        "net_ratio_geomean": gm([r["net_max_crb"] / x for r, x in zip(rows, lab)]),
        "net_ratio_median": float(np.median([r["net_max_crb"] / x for r, x in zip(rows, lab)])),
        "refine_ratio_median": float(np.median([r["net+refine_max_crb"] / x for r, x in zip(rows, lab)])),
        "refine_vs_best_heuristic_geomean": gm([r["net+refine_max_crb"] / h for r, h in zip(rows, best_h)]),
        "c1_binding_instances": sum(r["c1_binding"] for r in rows),
    }
    c1 = [r["net+refine_max_crb"] / h for r, h in zip(rows, best_h) if r["c1_binding"]]
    summary["refine_vs_best_heuristic_geomean_c1_binding"] = gm(c1) if c1 else None
    args = [str(a.checkpoint), "--n", str(a.n), "--first-id", str(a.first_id), "--refine-iter", str(a.refine_iter)]
    doc = {"format": "irs-torch/model-reference", "model": str(ckpt.relative_to(REPO)), "sha256": file_sha256(ckpt),
           "scenarios": f"{stem}.npz", "refine_iter": a.refine_iter, "beats_heuristic": bool(a.beats_heuristic),
           "dataset_config_sha256": net.meta["dataset"].get("config_sha256"), "card": card_values(ckpt),
           "instances": rows, "summary": summary,
           "record": {"command": "python scripts/model_reference.py --checkpoint " + " ".join(args)
                      + (" --beats-heuristic" if a.beats_heuristic else ""),
                      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "machine": f"{platform.node()} {platform.machine()}, {__import__('os').cpu_count()} CPUs",
                      "load_average": list(__import__("os").getloadavg()),
                      "torch_threads": 1, "seconds": time.perf_counter() - t_all,
                      "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                                   "numpy": np.__version__}}}
    from irs_torch.outputs import atomic_write_text
    atomic_write_text(a.out / f"{stem}.json", json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary), file=sys.stderr)
    print(a.out / f"{stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

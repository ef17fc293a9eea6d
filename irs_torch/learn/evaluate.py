"""Test-split metrics of a trained warm-start model (the numbers of a model card).

    python -m irs_torch.learn.evaluate --checkpoint checkpoints/warm-start-paper.pt \\
        --data data/paper-8k --split test --json metrics.json

For every instance of the split: the network's design alone (no solver), its exact max-CRB
(float64 torch physics, eqs. (15)-(16)) and the ratio to the stored solver label's max-CRB.
Prints (and optionally writes) one JSON object: counts, ratio median / p90 / mean / max, the
fraction of instances with ratio <= 1.25, the same per C1 regime and budget bucket (``by_group``),
max-CRB medians, the smallest constraint margins, the feasible fraction and the network's time per
instance. The split is the data set's deterministic instance split
(:func:`irs_torch.data.dataset.split_of`) with the fractions recorded in the checkpoint (default 0.8/0.1/0.1).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from irs_torch.outputs import dumps, progress_bar


def evaluate(checkpoint, data_root, split: str = "test", batch_size: int = 256, fractions=None,
             require_success: bool = True, progress: bool = True, return_ratios: bool = False) -> dict:
    """Metrics of ``checkpoint`` on ``split`` of the data set at ``data_root`` (module docstring).
    ``return_ratios``: also return the per-instance ratios (list, split order) under ``"ratios"``."""
    from irs_torch.data.datamodule import TRAIN_KEYS, collate_instances
    from irs_torch.data.dataset import ShardDataset, scenario_from_batch
    from irs_torch.learn.checkpoint import check_compatible, load_model
    from irs_torch.learn.module import breakdown_groups, epoch_metrics, group_metrics
    from irs_torch.learn.regimes import c1_binding

    net = load_model(checkpoint)
    if fractions is None:
        fractions = net.meta.get("dataset", {}).get("fractions") or (0.8, 0.1, 0.1)
    ds = ShardDataset(data_root, split=split, fractions=fractions, keys=list(TRAIN_KEYS),
                      require_success=require_success, in_memory=True)
    if len(ds) == 0:
        raise ValueError(f"--data: split {split!r} of {data_root} has no instances")
    attrs = dict(ds.attrs)
    rows = []
    t_net = 0.0
    with torch.no_grad():
        for i in progress_bar(range(0, len(ds), batch_size), desc=f"evaluate {split}", progress=progress,
                      unit="batch"):
            b = collate_instances([ds[j] for j in range(i, min(len(ds), i + batch_size))])
            scen = scenario_from_batch(b, attrs).to(torch.complex128)
            if i == 0:
                check_compatible(net, scen, source=str(checkpoint))
                net(scen)  # warm-up (allocator, lazy init), so the timing below is the steady state
            t0 = time.perf_counter()
            d = net(scen)
            t_net += time.perf_counter() - t0
            c = scen.crb(d.R_s, d.psi, validate=False).total
            m = scen.constraint_margins(d.R_s, d.psi)
            label = b["max_crb"].to(torch.float64)
            rows.append({"max_crb": c.amax(-1), "ratio": c.amax(-1) / label, "label": label,
                         "bs": m["bs"], "irs": m["irs"].amin(-1), "amp": m["amp"].amin(-1),
                         "psd": m["psd"].amin(-1), "feasible": scen.is_feasible(d.R_s, d.psi).double(),
                         "log_ratio": torch.log(c.amax(-1) / label),
                         "c1_binding": c1_binding(scen, b["R_s"].to(scen.G.dtype), b["psi"].to(scen.G.dtype)).double(),
                         "P_t": scen.budget("P_t").expand(label.shape).double(),
                         "P_s": scen.budget("P_s").expand(label.shape).double()})
    cat = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
    out = {"checkpoint": str(checkpoint), "data": str(data_root), "split": split, "fractions": list(fractions),
           "n": len(ds), "dataset_seed": int(attrs.get("dataset_seed", -1)),
           "config_sha256": ds.manifest.get("config_sha256")}
    out.update(epoch_metrics(cat))
    r = cat["ratio"]
    out["ratio_max"] = float(r.max())
    if return_ratios:
        out["ratios"] = r.tolist()
    out["frac_ratio_le_1.25"] = float((r <= 1.25).double().mean())
    # per C1 regime (at the label) and budget bucket (irs_torch.learn.regimes): n, ratio median / p90,
    # mean log ratio ("loss_crb", exact max here), max-CRB median
    out["by_group"] = {name: group_metrics(cat, mask) for _, (mask, name) in breakdown_groups(cat).items()}
    out["net_ms_per_instance_batched"] = 1e3 * t_net / len(ds)
    # Latency of one unbatched call (what a runtime pipeline pays per scenario).
    s1 = scenario_from_batch(ds[0], attrs).to(torch.complex128)
    with torch.no_grad():
        net(s1)
        t0 = time.perf_counter()
        for _ in range(10):
            net(s1)
    out["net_ms_single"] = 1e3 * (time.perf_counter() - t0) / 10
    out["torch_threads"] = torch.get_num_threads()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m irs_torch.learn.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="model file (checkpoints/*.pt) or Lightning .ckpt")
    p.add_argument("--data", required=True, help="data set directory (with manifest.json)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", help="also write the JSON to this file")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        res = evaluate(a.checkpoint, a.data, a.split, a.batch_size, progress=not a.no_progress)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    text = dumps(res, indent=2)
    print(text)
    if a.json:
        from irs_torch.outputs import atomic_write_text

        atomic_write_text(a.json, text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

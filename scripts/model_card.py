"""Export a trained warm-start checkpoint as a shipped model and write its model card.

    python scripts/model_card.py --ckpt runs/paper/warm-start/version_0/checkpoints/last.ckpt \\
        --data data/paper --config training/paper.yaml --out checkpoints/warm-start-paper.pt

Writes (atomically, next to ``--out``):
  - ``<name>.pt``: the slim model (float32 weights, hyper-parameters, provenance: the training
    config, data set config hash and seed, library versions, the test metrics below);
  - ``<name>.metrics.json``: :func:`irs_torch.learn.evaluate.evaluate` on the test split (network
    alone, no solver: max-CRB ratio to the solver label, constraint margins, inference time);
  - ``<name>.md``: the model card (what it is, how it was made, the measured numbers);
  - ``<name>.ratio.png``: the empirical CDF of the test ratio.
Rerunning it on the same inputs reproduces the same numbers (timings aside).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path



def _plot_ratio(ratios, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    r = np.sort(np.asarray(ratios, dtype=float))
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=110)
    ax.step(r, np.arange(1, len(r) + 1) / len(r), where="post")
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.axvline(1.25, color="tab:red", lw=0.8, ls="--", label="target median 1.25")
    ax.set_xscale("log")
    ax.set_xlabel("max-CRB(network) / max-CRB(solver label)")
    ax.set_ylabel("fraction of test instances")
    ax.set_title(f"network alone, test split (n = {len(r)})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt) of the trained model")
    p.add_argument("--data", required=True, help="the solver-labelled data set it was trained/validated on")
    p.add_argument("--config", required=True, help="the training YAML (recorded in the model)")
    p.add_argument("--out", default="checkpoints/warm-start-paper.pt")
    p.add_argument("--command", default=None, help="the training command to record (default: derived)")
    p.add_argument("--recipe-ckpt", default=None,
                   help="the checkpoint the training command writes, for the card's reproduce block "
                        "(default: --ckpt)")
    p.add_argument("--history", default=None,
                   help="a paragraph on how this checkpoint was actually trained, where that differs from "
                        "--command (e.g. the runs a staged training was resumed from); recorded in the card")
    a = p.parse_args(argv)

    from irs_torch.learn.checkpoint import export_model, load_model, read_checkpoint
    from irs_torch.learn.evaluate import evaluate

    ckpt, data, cfg, out = Path(a.ckpt), Path(a.data), Path(a.config), Path(a.out)
    for name, path in (("--ckpt", ckpt), ("--data", data / "manifest.json"), ("--config", cfg)):
        if not path.exists():
            print(f"model_card: error: {name}: {path} not found", file=sys.stderr)
            return 2
    raw = read_checkpoint(ckpt)
    command = a.command or f"python -m irs_torch.learn.train fit --config {cfg.as_posix()}"
    net = load_model(ckpt)
    fractions = net.meta.get("dataset", {}).get("fractions") or [0.8, 0.1, 0.1]
    metrics = evaluate(ckpt, data, "test", fractions=fractions, progress=False, return_ratios=True)
    ratio = metrics.pop("ratios")
    meta = {"training_command": command, "training_config": cfg.read_text(),
            "epoch": int(raw.get("epoch", -1)), "global_step": int(raw.get("global_step", -1)),
            "test_metrics": metrics, "data_root": str(data), "training_history": a.history}
    export_model(ckpt, out, extra_meta=meta)
    stem = out.with_suffix("")
    (stem.parent / (stem.name + ".metrics.json")).write_text(json.dumps(metrics, indent=2) + "\n")

    shipped = load_model(out)
    _plot_ratio(ratio, stem.parent / (stem.name + ".ratio.png"))

    m = metrics
    dcfg = shipped.meta.get("dataset", {})
    size_mb = out.stat().st_size / 1e6
    history = f"\n- How this file was trained: {a.history}\n" if a.history else ""
    card = f"""# Model card: `{out.name}`

The warm-start network of irs-torch for the paper's array sizes: M = {shipped.M} BS antennas,
{shipped.N_h} x {shipped.N_v} IRS elements, L = {shipped.L} active IRSs. It maps a scenario (channels,
target angles, budgets) to a feasible design (R_s, psi) in one forward pass; `irs-torch solve
--method learned` uses it, and refines with the AO solver unless `--refine none`.

- File: `{out.name}` ({size_mb:.1f} MB, {shipped.meta.get('num_parameters')} parameters, float32),
  exported from `{ckpt.name}` (epoch {meta['epoch']}, step {meta['global_step']}); loads with `torch.load(weights_only=True)`.
  Its sidecar `{out.with_suffix('.json').name}` (sizes, spacings, sha256) is what the checkpoint scan reads.
- Architecture: {shipped.hparams.get('arch')} with {shipped.hparams.get('hypotheses')} hypotheses
  (combined slot by slot, `combine_slots`), features `{shipped.hparams.get('features')}`, c1_mode `{shipped.hparams.get('c1_mode')}`, transmit rank
  {shipped.hparams.get('rank')} (see `irs_torch/learn/nets.py` and `training/README.md`).
- Training data: the solver-labelled data set `{data}` (config sha256 `{dcfg.get('config_sha256')}`,
  data set seed {dcfg.get('dataset_seed')}, fractions train/val/test {fractions}) plus
  {dcfg.get('unlabelled', 0)} unlabelled geometries of the same distribution (CRB loss only).
- Reproduce:

  ```bash
  irs-torch dataset generate --config paper --num 384 --out data/paper --shard-size 32
  {command}
  python scripts/model_card.py --ckpt {Path(a.recipe_ckpt or ckpt).as_posix()} --data {data.as_posix()} --config {cfg.as_posix()} --out {out.as_posix()}
  ```
{history}
## Test metrics (held-out test split, network alone, no solver)

Measured by `python -m irs_torch.learn.evaluate --checkpoint {out.as_posix()} --data {data.as_posix()}`:

| metric | value |
|---|---|
| test instances | {m['n']} |
| median max-CRB ratio to the solver label | **{m.get('ratio_median', float('nan')):.3f}** (target <= 1.25) |
| p90 ratio | {m.get('ratio_p90', float('nan')):.3f} |
| fraction with ratio <= 1.25 | {m['frac_ratio_le_1.25']:.3f} |
| max ratio | {m['ratio_max']:.3f} |
| feasible fraction | {m.get('feasible_frac', float('nan')):.3f} |
| network time per instance, batched | {m['net_ms_per_instance_batched']:.3f} ms ({m['torch_threads']} torch threads) |
| network time, one unbatched call | {m['net_ms_single']:.2f} ms |

![ratio CDF]({stem.name}.ratio.png)

A ratio below 1 means the network beat the solver's label: the AO is a local method and its result
depends on its random start. The labels are `irs-torch dataset generate`'s AO solutions.
"""
    (stem.parent / (stem.name + ".md")).write_text(card)
    print(json.dumps({k: m[k] for k in m if k.startswith("ratio") or k in ("n", "feasible_frac")}, indent=2))
    print(f"wrote {out}, {stem.name}.md, {stem.name}.metrics.json, {stem.name}.ratio.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

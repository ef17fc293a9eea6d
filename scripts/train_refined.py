#!/usr/bin/env python
"""Fine-tune a warm-start model through the first-order refiner (irs_torch.learn.finetune), resumably.

    python scripts/train_refined.py --out runs/refined --steps 1000 --minutes 40     # starts or resumes
    python scripts/train_refined.py --out runs/refined --export checkpoints/warm-start-refined.pt

Defaults: the shipped budget model (checkpoints/warm-start-budget.pt) on its budget distribution
(training/budget-data.yaml); 64 fresh draws a step, 20 unrolled first-order steps from its 4 best designs.
Kill it at any time: rerunning the same command resumes from <out>/state.pt (same data order, same step count).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    from irs_torch.learn.finetune import FinetuneSettings, export, finetune

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory (state.pt, history.jsonl, tb/)")
    p.add_argument("--init", default=str(ROOT / "checkpoints" / "warm-start-budget.pt"))
    p.add_argument("--data-config", default=str(ROOT / "training" / "budget-data.yaml"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--unroll", type=int, default=20)
    p.add_argument("--hypotheses", type=int, default=4)
    p.add_argument("--w-raw", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--minutes", type=float, default=None, help="stop this call after this many minutes (resumable)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--export", default=None, metavar="MODEL.pt", help="write the model file of <out> and exit")
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.export:
        print(f"wrote {export(a.out, a.export)}")
        return 0
    st = FinetuneSettings(init=a.init, data_config=a.data_config, steps=a.steps, batch=a.batch, unroll=a.unroll,
                          hypotheses=a.hypotheses, w_raw=a.w_raw, lr=a.lr, seed=a.seed, val_every=a.val_every)
    r = finetune(a.out, st, minutes=a.minutes)
    print(f"{'done' if r['done'] else 'stopped (resumable)'} at step {r['step']} of {st.steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

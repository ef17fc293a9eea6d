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
    p.add_argument("--labels", default=None, metavar="DIR",
                   help="train on this labelled data set's train split (a fixed copy) instead of fresh draws")
    p.add_argument("--w-sup", type=float, default=0.0,
                   help="weight of the slot-wise winner-takes-all distance of the hypotheses to the labels")
    p.add_argument("--w-refined", type=float, default=1.0)
    p.add_argument("--fresh", type=int, default=0,
                   help="with --labels: fresh unlabelled draws per step (CRB terms only)")
    p.add_argument("--val-instances", type=int, default=48)
    p.add_argument("--val-steps", type=int, default=None,
                   help="first-order steps of the validation's refinement (default: --unroll)")
    p.add_argument("--label-fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
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
                          hypotheses=a.hypotheses, w_raw=a.w_raw, w_refined=a.w_refined, lr=a.lr, seed=a.seed,
                          val_every=a.val_every, val_instances=a.val_instances, labels=a.labels, w_sup=a.w_sup,
                          fresh=a.fresh, val_steps=a.val_steps, label_fractions=tuple(a.label_fractions))
    r = finetune(a.out, st, minutes=a.minutes)
    print(f"{'done' if r['done'] else 'stopped (resumable)'} at step {r['step']} of {st.steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

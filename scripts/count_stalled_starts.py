#!/usr/bin/env python
"""How many scenarios the runtime refiner leaves at the network's own design, under each stopping rule.

    python scripts/count_stalled_starts.py --labels data/budget-fo-snap --split test

For the labelled split's scenarios: the network's 4 best designs refined by ``refine_fo`` (200 steps, no polish) with
``stall="best"`` (an instance stops when no iterate beats its starts within 25 steps) and ``stall="trajectory"`` (it
stops when its iterates stop improving); prints how many end within 0.1% of the network's design and how many stopped
after 25 steps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", required=True, help="solver-labelled data set")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--checkpoint", default="checkpoints/warm-start-budget.pt")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from compare_models import labelled_split

    from irs_torch.bench.batch_warmstart import method_starts
    from irs_torch.inference import refine_fo
    from irs_torch.learn.checkpoint import load_model

    scn = labelled_split(a.labels, a.split, None)[0]
    net = load_model(a.checkpoint)
    R0, p0 = method_starts("net", net, scn)
    raw = scn.crb(R0[0], p0[0], validate=False).total.amax(-1)
    for stall in ("best", "trajectory"):
        fo = refine_fo(scn, R0, p0, steps=200, polish=False, stall=stall)
        at_start = int((fo.max_crb >= raw * (1 - 1e-3)).sum())
        print(f"stall={stall}: {at_start} of {len(raw)} within 0.1% of the network's design; "
              f"{int((fo.steps <= 25).sum())} stopped after 25 steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Design many scenarios at once with the shipped warm-start network (one batched pass, no solver).

    python examples/batch_inference.py --count 1000
"""
import argparse
import time

import torch

from irs_torch import Scenario, random_scenario
from irs_torch.inference import solve_batch

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--count", type=int, default=256, help="scenarios (default 256)")
args = p.parse_args()

# random geometries around the paper's, at the shipped model's sizes (M = 16, 4 x 4 elements, L = 2)
batch = Scenario.stack([random_scenario(seed=i) for i in range(args.count)])
t0 = time.perf_counter()
res = solve_batch(batch, "learned", refine="none")  # the network's designs as they are: no solver runs
dt = time.perf_counter() - t0
print(f"{args.count} scenarios in {dt:.2f} s ({dt / args.count * 1e3:.2f} ms each), "
      f"{int(res.success.sum())} feasible; checkpoint {res.options.get('checkpoint')}")
q = torch.quantile(res.max_crb.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
print("max-CRB quantiles 10/50/90%: " + ", ".join(f"{v:.3e}" for v in q.tolist()) + " rad^2")

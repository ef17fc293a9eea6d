"""A design for a target somewhere in a 4 m x 4 m box, against the design for its centre.

Both are evaluated on a grid over the box: the robust design lowers the worst case.

    python examples/robust_design.py --quick     # fewer AO iterations and a coarse grid
"""
import argparse

import torch

from irs_torch import paper_scenario
from irs_torch.design.robust import Region, region_crb, solve_robust
from irs_torch.solvers import SolverOptions, solve

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--quick", action="store_true", help="at most 3 AO iterations, a 5 x 5 evaluation grid")
args = p.parse_args()

s = paper_scenario(seed=0)
opts = SolverOptions(seed=0, max_iter=3 if args.quick else 20)
region = Region.box(s.target_pos.tolist(), (2.0, 2.0))
point = solve(s, "ao", options=opts)
robust = solve_robust(s, region, K=9, objective="worst", options=opts)

n = 5 if args.quick else 21
cx, cy, cz = s.target_pos.tolist()
xs, ys = torch.linspace(cx - 2, cx + 2, n), torch.linspace(cy - 2, cy + 2, n)
grid = torch.tensor([[x, y, cz] for x in xs.tolist() for y in ys.tolist()], dtype=torch.float64)
for name, r in (("centre design", point), ("robust design", robust)):
    worst = float(region_crb(s, r.R_s, r.psi, grid).total.amax())
    print(f"{name}: max-CRB {float(s.max_crb(r.R_s, r.psi)):.4e} at the centre, worst over the box {worst:.4e} rad^2")

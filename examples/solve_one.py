"""Solve one scenario with the default solver, print what each IRS gets, and draw the design.

    python examples/solve_one.py                 # the paper's scenario, the default solver
    python examples/solve_one.py --quick         # the same with the 'fast' effort
"""
import argparse
import math
from pathlib import Path

from irs_torch import paper_scenario
from irs_torch.plotting import plot_design
from irs_torch.solvers import SolverOptions, solve

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--quick", action="store_true", help="the 'fast' effort (a shorter screen, at most 3 AO iterations)")
p.add_argument("--out", default="example-out", help="folder for design.png (default: example-out)")
args = p.parse_args()

s = paper_scenario(seed=0)  # Section V: M = 16 antennas, two IRSs of 4 x 4 elements
res = solve(s, "ao", options=SolverOptions(effort="fast" if args.quick else "default", seed=0))
print(f"status {res.status}, max-CRB {res.max_crb:.4e} rad^2 in {res.times['total']:.1f} s")
for l in range(s.L):
    th, ph = (math.degrees(math.sqrt(float(v[l]))) for v in (res.crb_theta, res.crb_phi))
    print(f"IRS {l + 1}: CRB {float(res.crb[l]):.4e} rad^2, root-CRB theta {th:.2f} deg, phi {ph:.2f} deg, "
          f"C1 power {float(1 - res.margins['irs'][l]):.1%} of P_s")
Path(args.out).mkdir(parents=True, exist_ok=True)
print("wrote", plot_design(s, res.R_s, res.psi, Path(args.out) / "design.png"))

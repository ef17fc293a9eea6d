"""Sweep the BS power budget P_t, solve each point, and plot max-CRB against P_t.

Each point starts from the previous (smaller-budget) design, which stays feasible at a larger P_t, and
from the default cold start; the better one is kept, so the curve never rises with the budget.

    python examples/sweep_budget.py              # the paper's scenario, 6 budgets, the default solver
    python examples/sweep_budget.py --quick      # 3 budgets, the 'fast' effort
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from irs_torch import paper_scenario  # noqa: E402
from irs_torch.solvers import SolverOptions, solve  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--quick", action="store_true", help="P_t in {1, 5, 20} W and the 'fast' effort")
p.add_argument("--out", default="example-out", help="folder for sweep.png (default: example-out)")
args = p.parse_args()

budgets = [1.0, 5.0, 20.0] if args.quick else [1.0, 2.5, 5.0, 10.0, 20.0, 40.0]
opts = SolverOptions(effort="fast" if args.quick else "default", seed=0)
values, prev = [], None
for P_t in budgets:
    s = paper_scenario(seed=0, P_t=P_t)
    best = solve(s, "ao", options=opts)
    if prev is not None:  # the smaller budget's design is feasible here: continue from it
        warm = solve(s, "ao", init={"R_s": prev.R_s, "psi": prev.psi}, options=opts)
        best = min(best, warm, key=lambda r: r.max_crb)
    prev = best
    values.append(best.max_crb)
    print(f"P_t = {P_t:5.1f} W: max-CRB {best.max_crb:.4e} rad^2")

Path(args.out).mkdir(parents=True, exist_ok=True)
fig, ax = plt.subplots(figsize=(4.5, 3.3))
ax.semilogy(budgets, values, "o-")
ax.set_xlabel("BS power budget $P_t$ (W)")
ax.set_ylabel("max-CRB (rad$^2$)")
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()
fig.savefig(Path(args.out) / "sweep.png", dpi=120)
print("wrote", Path(args.out) / "sweep.png")

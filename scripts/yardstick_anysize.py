"""Yardstick for the any-size model: the runtime's first-order refinement (``refine_batch`` with FO_STEPS and
FO_PATIENCE, no P2 polish) from the network's 4 starts vs from 4 heuristic starts (``diverse_starts``: co-phased,
AO random, a_max, random), as max-CRB / the default solver's (from the eval's solver cache), 3 instances per size.

  OMP_NUM_THREADS=1 python scripts/yardstick_anysize.py     # after scripts/eval_anysize.py --solver-cache ...
"""
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_anysize import scenarios  # noqa: E402

from irs_torch.inference import FO_PATIENCE, FO_STEPS, network_starts  # noqa: E402
from irs_torch.learn.anysize import load_model  # noqa: E402
from irs_torch.outputs import atomic_write_text  # noqa: E402
from irs_torch.scenario import Scenario  # noqa: E402
from irs_torch.solvers.first_order import refine_batch  # noqa: E402
from irs_torch.solvers.starts import diverse_starts  # noqa: E402

warnings.simplefilter("ignore")
net = load_model("checkpoints/warm-start-any.pt")
cache = json.loads(Path("runs/anysize/solver-cache.json").read_text())
out = {}
for size in [(24, 6, 6, 3), (48, 8, 8, 2), (8, 3, 5, 4), (16, 4, 4, 2)]:
    sc = scenarios(size, 3, offset=100)
    b = Scenario.stack(sc).to(torch.complex128)
    t = time.perf_counter()
    R0, p0 = network_starts(net, b, 4)
    fn = refine_batch(b, R0, p0, steps=FO_STEPS, patience=FO_PATIENCE)
    tn = time.perf_counter() - t
    hs = [diverse_starts(s, 4) for s in sc]
    Rh = torch.stack([torch.stack([h[k][1] for h in hs]) for k in range(4)])
    ph = torch.stack([torch.stack([h[k][2] for h in hs]) for k in range(4)])
    t = time.perf_counter()
    fh = refine_batch(b, Rh, ph, steps=FO_STEPS, patience=FO_PATIENCE)
    th = time.perf_counter() - t
    key = "x".join(map(str, size))
    ref = torch.tensor([cache[f"{key}/{i}"]["max_crb"] for i in range(3)], dtype=torch.float64)
    rn, rh = (fn.max_crb / ref).tolist(), (fh.max_crb / ref).tolist()
    out[key] = {"net_starts_fo_vs_solver": rn, "heuristic_starts_fo_vs_solver": rh, "net_s": tn, "heur_s": th}
    print(size, "net starts + FO:", [round(x, 3) for x in rn], f"{tn:.1f}s | heuristic starts + FO:",
          [round(x, 3) for x in rh], f"{th:.1f}s", flush=True)
atomic_write_text(Path("runs/anysize/yardstick.json"), json.dumps(out, indent=1) + "\n")

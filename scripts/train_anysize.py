"""Train the any-size warm-start network (irs_torch.learn.anysize) unsupervised on the differentiable CRB.

No solver labels: each step draws random scenarios of random sizes (M log-uniform in [4, 64],
N_h and N_v uniform in [2, 12], L uniform in [1, 4]; geometry by the data-set sampler with the L IRS
boxes of ``irs_boxes(L)`` and its accept rule; budgets log-uniform as the budget model's data set:
P_t 1-40 W, P_s 1e-4-1 W, a_max 2-10), one size per bucket (a batched Scenario has one size), a few
buckets per optimiser step. Loss per instance: the smooth log max-CRB of the network's design
(slot-by-slot combination of its hypotheses) plus ``hyp_mean_weight`` times the mean over hypotheses
(keeps every hypothesis useful). The log makes every size and budget comparable (a per-instance
constant such as the co-phased design's log max-CRB does not change the gradient; it is subtracted in
the validation metric). With ``--unroll K`` (and a batched first-order refiner
``irs_torch.solvers.first_order.unrolled_refine``) the loss is also taken after K differentiable
refinement steps.

Held out of training (the issue's test sizes): (24, 6x6, 3), (48, 8x8, 2), (8, 3x5, 4).

Resumable: a state file (model, optimiser, step, RNG states, config, history) is written every
``--save-minutes`` and at the end; rerunning with the same ``--out`` resumes from it. ``--minutes``
is the wall-clock budget of this run. Progress is printed and logged to TensorBoard under ``runs/``.
At the end the model is exported with its sidecar (``--export``).

  OMP_NUM_THREADS=1 python scripts/train_anysize.py --minutes 30 --out runs/anysize/main \\
      --export checkpoints/warm-start-any.pt
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from irs_torch.data.distribution import DatasetConfig, irs_boxes
from irs_torch.learn.anysize import DEFAULT_SIZE_RANGES, AnySizeNet, save_model
from irs_torch.learn.features import scenario_features
from irs_torch.learn.losses import log_smooth_max
from irs_torch.learn.nets import combine_slots
from irs_torch.scenario import Scenario

HELD_OUT = ((24, 6, 6, 3), (48, 8, 8, 2), (8, 3, 5, 4))
BUDGETS = {"P_t": (1.0, 40.0), "P_s": (1e-4, 1.0), "a_max": (2.0, 10.0)}
VAL_SIZES = ((16, 4, 4, 2), (4, 2, 2, 1), (32, 8, 4, 2), (64, 10, 10, 3), (12, 12, 2, 4), (40, 5, 7, 1))
STATE_FORMAT = "irs-torch/anysize-train-state"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/anysize/main", help="run folder (state file, TensorBoard logs)")
    p.add_argument("--export", default=None, help="model file to export at the end (with its sidecar)")
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of this run [min]")
    p.add_argument("--save-minutes", type=float, default=3.0, help="state file every this many minutes")
    p.add_argument("--seed", type=int, default=22)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--hypotheses", type=int, default=4)
    p.add_argument("--c1-mode", default="power")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=16, help="instances per bucket (halved for large sizes)")
    p.add_argument("--buckets", type=int, default=2, help="size buckets per optimiser step")
    p.add_argument("--tau", type=float, default=0.05, help="smooth-max temperature (log units)")
    p.add_argument("--hyp-mean-weight", type=float, default=0.1)
    p.add_argument("--unroll", type=int, default=0, help="differentiable refinement steps in the loss (0: none)")
    p.add_argument("--unroll-weight", type=float, default=1.0, help="weight of the loss after the refinement")
    p.add_argument("--val-minutes", type=float, default=2.0, help="validation every this many minutes")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps in total (0: no cap)")
    a = p.parse_args(argv)
    for name in ("minutes", "save_minutes", "lr", "tau", "val_minutes"):
        if not getattr(a, name) > 0:
            raise SystemExit(f"train_anysize: --{name.replace('_', '-')} must be > 0, got {getattr(a, name)}")
    for name in ("batch", "buckets", "hypotheses"):
        if getattr(a, name) < 1:
            raise SystemExit(f"train_anysize: --{name} must be >= 1, got {getattr(a, name)}")
    return a


_CFG: dict = {}


def size_config(M, N_h, N_v, L) -> DatasetConfig:
    key = (M, N_h, N_v, L)
    if key not in _CFG:
        _CFG[key] = DatasetConfig(M=M, N_h=N_h, N_v=N_v, irs=irs_boxes(L), budget_sampling="log-uniform", **BUDGETS)
    return _CFG[key]


def sample_size(rng: np.random.Generator, ranges=DEFAULT_SIZE_RANGES) -> tuple:
    """(M, N_h, N_v, L): M log-uniform, the others uniform over their integer ranges; held-out sizes redrawn."""
    while True:
        lo, hi = ranges["M"]
        M = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        size = (M, int(rng.integers(ranges["N_h"][0], ranges["N_h"][1] + 1)),
                int(rng.integers(ranges["N_v"][0], ranges["N_v"][1] + 1)), int(rng.integers(ranges["L"][0],
                                                                                              ranges["L"][1] + 1)))
        if size not in HELD_OUT:
            return size


def make_batch(size, seeds, dtype=torch.complex64) -> Scenario:
    """A batched scenario of one size from instance seeds; float32 for training (geometry fields dropped:
    the angles are kept, and a complex64 cast of the geometry would not match it to 1e-9 rad)."""
    cfg = size_config(*size)
    s = Scenario.stack([cfg.scenario(int(x)) for x in seeds])
    return s.replace(bs_pos=None, irs_pos=None, irs_yaw=None, target_pos=None).to(dtype)


def bucket_batch(size, batch: int) -> int:
    M, N_h, N_v, L = size
    return max(4, batch // 2) if M * N_h * N_v * L > 8192 else batch


def cophased_log_max_crb(s: Scenario) -> torch.Tensor:
    """log max-CRB of the co-phased design (BS beam and psi co-phasing each cascade, full budget, psi at the
    largest C1/a_max scale): the per-instance reference of the validation metric. Shape ``(B,)``."""
    from irs_torch.physics.steering import cophasing_beam

    with torch.no_grad():
        w, psi = cophasing_beam(s)
        R = s.budget("P_t").to(s.G.dtype)[..., None, None, None] * (w.unsqueeze(-1) @ w.conj().unsqueeze(-2))
        psi = s.scale_psi_to_feasible(R, psi)
        return s.crb(R, psi, validate=False).total.amax(-1).log()


def loss_of(net: AnySizeNet, s: Scenario, a) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance training loss and the (detached) log max-CRB of the network's design."""
    if a.unroll <= 0:
        d, c, scen = net.candidates(s)
        best, ctot, _ = combine_slots(d, c, s.budget("P_t"))
        loss = log_smooth_max(ctot, a.tau) + a.hyp_mean_weight * log_smooth_max(c, a.tau).mean(-1)
        return loss, ctot.detach().amax(-1).log()
    from irs_torch.solvers.first_order import unrolled_refine

    d, c, scen, F = net.candidates(s, factors=True)
    best, ctot, idx = combine_slots(d, c, s.budget("P_t"))
    loss = log_smooth_max(ctot, a.tau) + a.hyp_mean_weight * log_smooth_max(c, a.tau).mean(-1)
    # refine every hypothesis (the refiner picks the best after refinement): loss of the best refined one
    R1, psi1 = unrolled_refine(scen, F, d.psi, a.unroll)
    c1 = scen.crb(R1, psi1, validate=False).total  # (B, K, L)
    sm = log_smooth_max(c1, a.tau)  # (B, K)
    loss = loss + a.unroll_weight * (-a.tau * torch.logsumexp(-sm / a.tau, -1))  # smooth min over hypotheses
    return loss, ctot.detach().amax(-1).log()


PER_SIZE_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "warm-start-budget.pt"


def validation_set(seed: int):
    """Fixed validation buckets (8 instances per size of VAL_SIZES) with the co-phased reference, and at the
    paper size (the first) the per-size budget model's log max-CRB when that model is shipped."""
    out = []
    for i, size in enumerate(VAL_SIZES):
        s = make_batch(size, [10 ** 9 + 1000 * seed + 100 * i + j for j in range(8)], torch.complex128)
        out.append((size, s, cophased_log_max_crb(s)))
    per_size = None
    if PER_SIZE_MODEL.is_file():
        from irs_torch.learn.checkpoint import load_model, predict

        s = out[0][1]
        R, psi = predict(load_model(PER_SIZE_MODEL), s)
        per_size = s.crb(R, psi, validate=False).total.amax(-1).log()
    return out, per_size


def validate(net, vset) -> dict:
    """Median max-CRB ratio to the co-phased design per validation size, their median, and at the paper size the
    median ratio to the per-size budget model (``paper_vs_per_size``)."""
    buckets, per_size = vset
    net.eval()
    res = {}
    with torch.no_grad():
        for i, (size, s, ref) in enumerate(buckets):
            d = net(s)
            lc = s.crb(d.R_s, d.psi, validate=False).total.amax(-1).log()
            res["x".join(map(str, size))] = float(torch.exp(lc - ref).median())
            if i == 0 and per_size is not None:
                paper = float(torch.exp(lc - per_size).median())
    net.train()
    res["median"] = float(np.median(list(res.values())))
    if per_size is not None:
        res["paper_vs_per_size"] = paper
    return res


def save_state(path: Path, net, opt, step, rng, a, history, elapsed):
    obj = {"format": STATE_FORMAT, "model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
           "numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
           "config": json.dumps(vars(a)), "history": json.dumps(history), "elapsed_s": float(elapsed)}
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def main(argv=None) -> int:
    a = parse(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pt"
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    net = AnySizeNet(hidden=a.hidden, channels=a.channels, layers=a.layers, rank=a.rank, hypotheses=a.hypotheses,
                     c1_mode=a.c1_mode)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    step, history, elapsed0 = 0, [], 0.0
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if st.get("format") != STATE_FORMAT:
            raise SystemExit(f"train_anysize: {state_path} is not a training state file")
        old = json.loads(st["config"])
        for k in ("hidden", "channels", "layers", "rank", "hypotheses", "c1_mode", "seed"):
            if old[k] != getattr(a, k):
                raise SystemExit(f"train_anysize: {state_path} was trained with {k}={old[k]!r}, got {getattr(a, k)!r}: "
                                 f"use another --out or the same settings")
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        for g in opt.param_groups:
            g["lr"] = a.lr
        step, history, elapsed0 = int(st["step"]), json.loads(st["history"]), float(st["elapsed_s"])
        rng.bit_generator.state = json.loads(st["numpy_rng"])
        torch.set_rng_state(st["torch_rng"])
        print(f"resumed {state_path} at step {step} ({elapsed0 / 60:.1f} min trained)", flush=True)
    else:
        feats = []
        nrng = np.random.default_rng(a.seed + 1)
        for _ in range(24):
            size = sample_size(nrng)
            feats.append(scenario_features(make_batch(size, nrng.integers(0, 2 ** 62, 8), torch.complex128)))
        net.fit_normalizer(feats)
        print(f"fitted the feature normaliser on {24 * 8} instances; {sum(p.numel() for p in net.parameters())} "
              f"parameters", flush=True)
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(out / "tb"))
    vset = validation_set(a.seed)
    t0 = time.perf_counter()
    t_save = t_val = t0
    net.train()
    run_loss, run_n = 0.0, 0
    while True:
        now = time.perf_counter()
        done = (now - t0) / 60 >= a.minutes or (a.max_steps and step >= a.max_steps)
        if done or (now - t_val) / 60 >= a.val_minutes:
            v = validate(net, vset)
            history.append({"step": step, "minutes": (elapsed0 + now - t0) / 60, **v})
            for k, x in v.items():
                tb.add_scalar(f"val_ratio/{k}", x, step)
            per_size = v.get("paper_vs_per_size")
            sizes = ", ".join(f"{k} {x:.3f}" for k, x in v.items() if k not in ("median", "paper_vs_per_size"))
            print(f"step {step} {(elapsed0 + now - t0) / 60:.1f} min: train loss {run_loss / max(run_n, 1):.3f}; "
                  f"val max-CRB / co-phased median {v['median']:.3f} ({sizes})"
                  + ("" if per_size is None else f"; paper size vs per-size model {per_size:.3f}"), flush=True)
            run_loss, run_n = 0.0, 0
            t_val = now
        if done or (now - t_save) / 60 >= a.save_minutes:
            save_state(state_path, net, opt, step, rng, a, history, elapsed0 + now - t0)
            t_save = now
        if done:
            break
        opt.zero_grad()
        tot = 0.0
        for _ in range(a.buckets):
            size = sample_size(rng)
            s = make_batch(size, rng.integers(0, 2 ** 62, bucket_batch(size, a.batch)))
            loss, _ = loss_of(net, s, a)
            loss = loss.mean() / a.buckets
            loss.backward()
            tot += float(loss.detach())
        gn = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        if torch.isfinite(gn):
            opt.step()
        step += 1
        run_loss += tot
        run_n += 1
        tb.add_scalar("train/loss", tot, step)
    tb.close()
    print(f"saved {state_path} at step {step}", flush=True)
    if a.export:
        meta = {"seed": a.seed, "budgets": {k: list(v) for k, v in BUDGETS.items()},
                "training": {"config": vars(a), "steps": step, "minutes": history[-1]["minutes"] if history else 0,
                             "held_out_sizes": [list(x) for x in HELD_OUT], "validation": history[-1:],
                             "command": " ".join(["python", "scripts/train_anysize.py"] + (argv or sys.argv[1:]))}}
        net.eval()
        print(f"exported {save_model(net, a.export, meta)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

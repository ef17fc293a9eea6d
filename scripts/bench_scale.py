#!/usr/bin/env python
"""Scale benchmark: time and peak memory of the CRB and the solver's parts as the arrays grow.

For the paper scenario (``paper_scenario(seed)``, L = 2) at M BS antennas and an N_h x N_v IRS
(N = N_h N_v), one run prints side by side, per size and device:

* ``crb_fwd`` / ``crb_fwd_bwd``: the CRB of a batch of ``--crb-batch`` designs (each L IRSs, dense
  R_s of M x M) for the one scenario, forward and forward + backward (gradients w.r.t. R_s and psi);
* ``crbB_fwd_bwd``: the same through the low-rank transmit path (``Scenario.crb_factored``, R_s = B B^H with
  B of M x ``--rank``);
* ``p2``: one transmit SDP (``irs_torch.solvers.transmit.solve_transmit_sdp``), after one untimed solve at the
  same size (the first builds the cvxpy problem);
* ``ao_iter``: one AO iteration (P2 + P3 + power balance) from the isotropic, random-phase design;
* ``screen``: the default strategy's first-order screen (``joint_first_order`` from ``diverse_starts``
  with the default effort's starts, step cap, learning rate and patience);
* ``solve``: ``irs_torch.solvers.solve(s, method="ao")`` with default options (screen + AO), with its
  own split (``solve_screen``, ``solve_p2``, ``solve_p3`` seconds) in the JSON record.

Peak memory is the growth of the process's peak resident set during the step (Linux
``/proc/self/clear_refs`` resets the peak before each step; ``ru_maxrss`` otherwise, then only an upper
bound) and, on cuda, ``torch.cuda.max_memory_allocated``. On cuda only the torch steps run (the CRB and
the screen); the SDP solvers are CPU-only.

Writes ``bench_scale.csv`` (one row per size, device and step) and ``bench_scale.json`` (the rows plus
the command, machine: nproc, CPU model, load average before and after, date, torch version, threads)
to ``--out-dir``. Timings on a shared machine are noisy; the load average is recorded with them.

    python scripts/bench_scale.py --quick                  # M = 16, 32 with a 4 x 4 IRS: about a minute
    python scripts/bench_scale.py                          # M in {16, 32, 64, 128} x N in {16, 64, 256}
    python scripts/bench_scale.py --sizes 128x256 --steps crb screen --out-dir /tmp/b
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import json
import os
import platform
import re
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

FULL_SIZES = [(M, n) for M in (16, 32, 64, 128) for n in (4, 8, 16)]  # (M, N_h = N_v = n)
QUICK_SIZES = [(16, 4), (32, 4)]
STEPS = ("crb", "p2", "ao_iter", "screen", "solve")


def _hwm_kib():
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kib():
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn, device, repeats=1):
    """Run ``fn`` ``repeats`` times (after nothing else: the caller warms up). Returns (median seconds,
    peak memory growth in MiB over the calls: host RSS on cpu, allocated device memory on cuda, result of
    the last call)."""
    gc.collect()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak()
        base = _rss_kib()
    ts = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        peak = max(_hwm_kib() - base, 0) / 1024
    return statistics.median(ts), peak, out


def designs(s, batch, rank, seed):
    """``batch`` random designs for scenario s: R (batch, L, M, M) of trace P_t, its factor B (batch, L, M, rank)
    (R = B B^H) and psi (batch, L, N) scaled to C1."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    L, M, N = s.L, s.M, s.N
    B = torch.randn(batch, L, M, rank, 2, generator=g, dtype=torch.float64)
    B = torch.view_as_complex(B)
    B = B * (float(s.P_t) / B.abs().pow(2).sum((-1, -2), keepdim=True)).sqrt()
    ph = 2 * torch.pi * torch.rand(batch, L, N, generator=g, dtype=torch.float64)
    psi = torch.polar(torch.ones_like(ph), ph)
    B, psi = B.to(s.G.device), psi.to(s.G.device)
    psi = s.scale_psi_to_feasible_factored(B, psi)
    return B @ B.mH, B, psi


def crb_steps(s, device, batch, rank, repeats):
    R0, B0, psi0 = designs(s, batch, rank, 0)

    def fwd():
        with torch.no_grad():
            return s.crb(R0, psi0, validate=False).total

    def fwd_bwd():
        R = R0.clone().requires_grad_(True)
        psi = psi0.clone().requires_grad_(True)
        s.crb(R, psi, validate=False).total.sum().backward()

    def fact_fwd_bwd():
        B = B0.clone().requires_grad_(True)
        psi = psi0.clone().requires_grad_(True)
        s.crb_factored(B, psi, validate=False).total.sum().backward()

    rows = []
    for name, fn in (("crb_fwd", fwd), ("crb_fwd_bwd", fwd_bwd), (f"crbB_fwd_bwd_r{rank}", fact_fwd_bwd)):
        fn()  # warm-up
        t, mem, _ = measure(fn, device, repeats)
        rows.append(dict(step=name, seconds=t, peak_mib=mem, evals_per_s=batch * s.L / t,
                         note=f"batch {batch} designs x L={s.L}"))
    return rows


def p2_step(s):
    from irs_torch.solvers import transmit as P2

    R = s.isotropic_design()
    P2.solve_transmit_sdp(s, s.random_phase_design(R, seed=1))  # builds the cvxpy problem
    psi = s.random_phase_design(R, seed=2)
    t, mem, r = measure(lambda: P2.solve_transmit_sdp(s, psi), "cpu")
    return [dict(step="p2", seconds=t, peak_mib=mem, note=f"status {r.status}")]


def ao_iter_step(s):
    from irs_torch.solvers import SolverOptions, solve

    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=3)
    opts = SolverOptions(effort="legacy", max_iter=1)
    t, mem, r = measure(lambda: solve(s, "ao", init={"R_s": R, "psi": psi}, options=opts), "cpu")
    return [dict(step="ao_iter", seconds=t, peak_mib=mem,
                 note=f"p2 {r.times.get('p2', float('nan')):.2f} s, p3 {r.times.get('p3', float('nan')):.2f} s")]


def screen_step(s, device):
    from irs_torch.solvers import strategy as st

    n, steps, _ = st.SCREEN["default"]
    scn = s if device == "cpu" else s.to(device=device)
    starts = st.diverse_starts(s, n, seed=0)
    R0 = torch.stack([x[1] for x in starts]).to(scn.G.device)
    psi0 = torch.stack([x[2] for x in starts]).to(scn.G.device)
    kw = dict(steps=steps, lr=st.SCREEN_LR, decay=st.SCREEN_DECAY, patience=getattr(st, "PATIENCE", 0))
    t, mem, out = measure(lambda: st.joint_first_order(scn, R0, psi0, **kw), device)
    return [dict(step="screen", seconds=t, peak_mib=mem, note=f"{n} starts, <= {steps} steps, best max-CRB "
                                                             f"{float(out[2].min()):.4e}")]


def solve_step(s):
    from irs_torch.solvers import solve

    t, mem, r = measure(lambda: solve(s, "ao"), "cpu")
    tm = r.times
    return [dict(step="solve", seconds=t, peak_mib=mem, note=f"max-CRB {r.max_crb:.4e}, nit {r.nit}",
                 solve_screen=tm.get("screen"), solve_p2=tm.get("p2"), solve_p3=tm.get("p3"))]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_size(text):
    """``MxN`` (N = n * n, a square IRS) -> (M, n); ValueError naming --sizes otherwise."""
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    n = int(round(int(m.group(2)) ** 0.5)) if m else 0
    if not m or n * n != int(m.group(2)) or int(m.group(1)) < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"--sizes: expected MxN with N a square (e.g. 16x16, 128x256), got {text!r}")
    return int(m.group(1)), n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes 16x16 and 32x16 only (about a minute)")
    ap.add_argument("--sizes", type=parse_size, nargs="+", metavar="MxN",
                    help="sizes as M x N (N = n^2, an n x n IRS), e.g. 16x16 64x256 (default: the full grid)")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to time (default: all)")
    ap.add_argument("--devices", nargs="+", default=None,
                    help="torch devices (default: cpu, and cuda when available)")
    ap.add_argument("--crb-batch", type=int, default=64, help="designs per CRB call (default 64)")
    ap.add_argument("--rank", type=int, default=2, help="rank of the factored transmit path (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed CRB calls per step, median (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the solver uses)")
    ap.add_argument("--seed", type=int, default=0, help="channel seed of the paper scenario (default 0)")
    ap.add_argument("--out-dir", default=".", help="where bench_scale.csv and bench_scale.json go (default .)")
    args = ap.parse_args(argv)
    for name in ("crb_batch", "rank", "repeats", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    from irs_torch import paper_scenario

    torch.set_num_threads(args.threads)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = dict(command=" ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  machine=dict(nproc=os.cpu_count(), cpu=cpu_model(), platform=platform.platform(),
                               cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None),
                  load_average_start=os.getloadavg(), torch=torch.__version__, threads=torch.get_num_threads(),
                  seed=args.seed, crb_batch=args.crb_batch, rank=args.rank, peak_reset=_reset_peak(), rows=[])
    print(f"bench_scale: {record['machine']['cpu']}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"torch {torch.__version__}, {args.threads} thread(s), devices {devices}")
    rows = record["rows"]
    for M, n in sizes:
        s = paper_scenario(args.seed, M=M, N_h=n, N_v=n)
        for dev in devices:
            sd = s if dev == "cpu" else s.to(device=dev)
            got = []
            if "crb" in args.steps:
                got += crb_steps(sd, dev, args.crb_batch, args.rank, args.repeats)
            if dev == "cpu":
                if "p2" in args.steps:
                    got += p2_step(s)
                if "ao_iter" in args.steps:
                    got += ao_iter_step(s)
            if "screen" in args.steps:
                got += screen_step(s, dev)
            if dev == "cpu" and "solve" in args.steps:
                got += solve_step(s)
            for r in got:
                r.update(M=M, N=n * n, N_h=n, N_v=n, device=dev, load_average=os.getloadavg()[0])
                rows.append(r)
            line = "  ".join(f"{r['step']} {r['seconds']:.3g} s / {r['peak_mib']:.0f} MiB" for r in got)
            print(f"M={M:<4} N={n * n:<4} ({n}x{n}) {dev:<5} {line}", flush=True)
    record["load_average_end"] = os.getloadavg()

    # side-by-side table: one line per size and device, one column per step
    names = list(dict.fromkeys(r["step"] for r in rows))
    print(f"\n{'M':>4} {'N':>4} {'device':<6} " + " ".join(f"{k:>22}" for k in names))
    print(f"{'':>16} " + " ".join(f"{'seconds / peak MiB':>22}" for _ in names))
    for key in dict.fromkeys((r["M"], r["N"], r["device"]) for r in rows):
        cells = {r["step"]: f"{r['seconds']:.3g} / {r['peak_mib']:.0f}" for r in rows
                 if (r["M"], r["N"], r["device"]) == key}
        txt = " ".join(f"{cells.get(k, '-'):>22}" for k in names)
        print(f"{key[0]:>4} {key[1]:>4} {key[2]:<6} {txt}")
    print(f"load average start {record['load_average_start'][0]:.2f}, end {record['load_average_end'][0]:.2f} "
          f"on {os.cpu_count()} CPUs (other jobs make the timings pessimistic)")

    fields = ["M", "N", "N_h", "N_v", "device", "step", "seconds", "peak_mib", "evals_per_s", "solve_screen",
              "solve_p2", "solve_p3", "load_average", "note"]
    from irs_torch.outputs import atomic_open

    with atomic_open(out_dir / "bench_scale.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    from irs_torch.outputs import atomic_write_text
    atomic_write_text(out_dir / "bench_scale.json", json.dumps(record, indent=1, default=float))
    print(f"wrote {out_dir / 'bench_scale.csv'} and {out_dir / 'bench_scale.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Benchmark of the differentiable CRB (irs_torch.crb.crb) against a naive dense implementation.

Counts per-IRS CRB evaluations per second (one evaluation = one tr(F_l^-1) for one IRS, i.e. L=1)
for a batch of random problems, forward only and forward + backward (gradients w.r.t. R_s and psi),
in float64 / complex128 on CPU. The naive reference builds C_theta, C_phi, H as M x M matrices,
inverts R_w explicitly, forms the 4 x 4 FIM from M x M traces and inverts it; it is run in the same
process on the same data, and the two CRBs are compared.

Targets: >= 20x (forward) and >= 25x (forward + backward) the naive dense version in the same run, and
>= 100,000 evaluations/s forward, >= 30,000/s forward + backward, at batch 4096, M = N = 16 (N_h = N_v = 4).

The low-rank transmit path (irs_torch.crb.crb_factored, R_s = B B^H with B of M x r) is timed at the ranks of
``--ranks`` in the same interleaved rounds; ``--shared-G`` gives the whole batch one G (many candidate
designs for one scenario, as in the solvers' screens) instead of one random G per problem.

    python scripts/bench_crb.py                      # defaults: batch 4096, M=16, 4x4 IRS
    python scripts/bench_crb.py --threads 1 --profile

    python scripts/bench_crb.py --compare /tmp/crb_before.py   # time another crb.py in the same run
    python scripts/bench_crb.py --threads 1 --M 128 --shared-G --no-naive   # a large array, one scenario

Timings on a shared machine are noisy: irs_torch.crb and the ``--compare`` versions are timed in
interleaved rounds (so a change of load hits them alike; the naive reference runs on its own after
them), and the script prints the load average, the median and best wall-clock rates and the
process CPU time per evaluation (all threads summed). With more torch threads than idle cores,
intra-op parallelism can be many times slower than one thread (OpenMP threads spin while waiting
for a descheduled partner; ``OMP_WAIT_POLICY=PASSIVE`` stops that); compare with ``--threads 1``.
glibc returning large temporaries to the OS costs page faults on
every call; ``MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=8000000000`` (or jemalloc /
tcmalloc) removes most of that.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import time

import torch

from irs_torch import crb as crbmod
from irs_torch.physics.steering import upa_steering_derivatives  # noqa: E402


def make_problem(batch, M, N_h, N_v, seed, dtype=torch.complex128, shared_G=False):
    """Random unit-scale problems (L = 1 per evaluation): G (B,N,M) (``shared_G``: (1,N,M), one G for the
    batch), psi (B,N), R_s (B,M,M) PSD with trace 1, theta/phi (B,) rad, beta (B,) complex; sigma_r2 = 0.1,
    sigma_b2 = 1, T_L = 50."""
    g = torch.Generator().manual_seed(seed)
    N = N_h * N_v
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32

    def cr(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=rdt),
                             torch.randn(*shape, generator=g, dtype=rdt)) / math.sqrt(2)

    G = cr(1 if shared_G else batch, N, M) / math.sqrt(N * M)
    psi = cr(batch, N)
    A = cr(batch, M, M)
    R = A @ A.conj().transpose(-1, -2)
    R = R / torch.diagonal(R, dim1=-2, dim2=-1).real.sum(-1)[:, None, None]
    theta = 0.3 + 2.5 * torch.rand(batch, generator=g, dtype=rdt)
    phi = 0.3 + 2.5 * torch.rand(batch, generator=g, dtype=rdt)
    beta = torch.polar(0.5 + torch.rand(batch, generator=g, dtype=rdt),
                       6.28 * torch.rand(batch, generator=g, dtype=rdt))
    return dict(G=G, psi=psi, R_s=R, theta=theta, phi=phi, beta=beta, sigma_r2=0.1, sigma_b2=1.0, T_L=50.0,
                N_h=N_h, N_v=N_v)


def crb_with(module):
    """The per-IRS CRB ``tr(F^-1)`` of ``module.crb`` (irs_torch.crb or another version of it)."""

    def crb_total(p, R_s, psi):
        return module.crb(p["G"], psi, R_s, p["theta"], p["phi"], p["beta"], p["sigma_r2"], p["sigma_b2"],
                          p["T_L"], p["N_h"], p["N_v"]).total
    return crb_total


crb_fast = crb_with(crbmod)


def make_factor(p, rank, seed):
    """A random transmit factor B (batch, M, rank) with tr(B B^H) = 1, same dtype as p["R_s"]."""
    g = torch.Generator().manual_seed(seed + 1000 * rank)
    batch, M = p["R_s"].shape[:2]
    rdt = p["R_s"].real.dtype
    B = torch.complex(torch.randn(batch, M, rank, generator=g, dtype=rdt), torch.randn(batch, M, rank, generator=g,
                                                                                        dtype=rdt))
    return B / B.abs().pow(2).sum((-1, -2), keepdim=True).sqrt()


def crb_factored_with(B):
    """The per-IRS CRB through irs_torch.crb.crb_factored with the factor B (the ``R_s`` argument of the
    returned function is ignored; the gradient is taken w.r.t. a copy of B)."""

    def crb_total(p, R_s, psi):
        F = B.clone().requires_grad_(R_s.requires_grad)
        return crbmod.crb_factored(p["G"], psi, F, p["theta"], p["phi"], p["beta"], p["sigma_r2"], p["sigma_b2"],
                                   p["T_L"], p["N_h"], p["N_v"]).total
    return crb_total


def load_module(path):
    """Import a crb.py from ``path`` (e.g. an earlier version kept for comparison) under a private name."""
    name = "bench_crb_compare_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise FileNotFoundError(f"--compare: cannot import {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def crb_naive(p, R_s, psi):
    """Straightforward dense eq. (15)-(16) (with conj(beta)): M x M matrices, explicit inverses."""
    G, theta, phi, beta = p["G"], p["theta"], p["phi"], p["beta"]
    a, da_t, da_p = upa_steering_derivatives(theta, phi, p["N_h"], p["N_v"])
    Gt = G.transpose(-1, -2) * psi.unsqueeze(-2)  # G^T Psi (B, M, N)
    PG = psi.unsqueeze(-1) * G  # Psi G (B, N, M)

    def outer(x, y):
        return x.unsqueeze(-1) * y.unsqueeze(-2)

    C_t = Gt @ (outer(da_t, a) + outer(a, da_t)) @ PG
    C_p = Gt @ (outer(da_p, a) + outer(a, da_p)) @ PG
    H = Gt @ outer(a, a) @ PG
    M = G.shape[-1]
    eye = torch.eye(M, dtype=G.dtype)
    Rw = p["sigma_r2"] * Gt @ Gt.conj().transpose(-1, -2) + p["sigma_b2"] * eye
    W = torch.linalg.inv(Rw)
    Cs = [C_t, C_p, H]
    WCR = [W @ C @ R_s for C in Cs]

    def tr(i, j):  # tr(C_i^H W C_j R)
        return (Cs[i].conj() * WCR[j]).sum((-1, -2))

    b2 = beta.abs() ** 2
    bc = beta.conj()
    t_tt, t_pp, t_tp = tr(0, 0).real, tr(1, 1).real, tr(0, 1).real
    t_th, t_ph, t_hh = bc * tr(0, 2), bc * tr(1, 2), tr(2, 2).real
    z = torch.zeros_like(t_hh)
    F = torch.stack([
        torch.stack([b2 * t_tt, b2 * t_tp, t_th.real, -t_th.imag], -1),
        torch.stack([b2 * t_tp, b2 * t_pp, t_ph.real, -t_ph.imag], -1),
        torch.stack([t_th.real, t_ph.real, t_hh, z], -1),
        torch.stack([-t_th.imag, -t_ph.imag, z, t_hh], -1),
    ], -2) * (2 * p["T_L"])
    return torch.diagonal(torch.linalg.inv(F), dim1=-2, dim2=-1).sum(-1)


def timeit_interleaved(fns, repeats):
    """Time each of ``fns`` (name -> callable) ``repeats`` times, in rounds of one timed call each.

    Returns name -> (median wall, best wall, median process CPU time) in s. Process CPU time sums all
    threads. Interleaving the rounds exposes every implementation to the same changes of load; an
    untimed call just before each timed one gives it the steady state of repeated calls (warm
    caches, and the allocator state its own previous call left, not the one of another version)."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            fn()
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), min(wall[k]), statistics.median(cpu[k])) for k in fns}


def bench(impls, p, repeats):
    """impls: name -> crb function. Returns (forward, forward+backward) timings, each as timeit_interleaved."""
    R0, psi0 = p["R_s"], p["psi"]

    def fwd(impl):
        def run():
            with torch.no_grad():
                impl(p, R0, psi0)

        return run

    def fwd_bwd(impl):
        def run():
            R = R0.clone().requires_grad_(True)
            psi = psi0.clone().requires_grad_(True)
            impl(p, R, psi).sum().backward()

        return run

    return (timeit_interleaved({k: fwd(f) for k, f in impls.items()}, repeats),
            timeit_interleaved({k: fwd_bwd(f) for k, f in impls.items()}, repeats))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--N-h", dest="N_h", type=int, default=4)
    ap.add_argument("--N-v", dest="N_v", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--complex64", action="store_true", help="complex64 instead of complex128")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of the fast version")
    ap.add_argument("--compare", nargs="+", default=[], metavar="CRB_PY",
                    help="also time these crb.py files (e.g. an earlier version), interleaved in the same run")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive dense reference")
    ap.add_argument("--ranks", type=int, nargs="*", default=[1, 2, 3, 4],
                    help="also time irs_torch.crb.crb_factored (R_s = B B^H, B of M x r) at these ranks r")
    ap.add_argument("--shared-G", dest="shared_G", action="store_true",
                    help="one G for the whole batch (one scenario, many candidate designs)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    dtype = torch.complex64 if args.complex64 else torch.complex128
    p = make_problem(args.batch, args.M, args.N_h, args.N_v, args.seed, dtype, args.shared_G)
    B = args.batch
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"irs-torch CRB benchmark: batch {B}, M={args.M}, N={args.N_h}x{args.N_v}, {dtype}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, seed {args.seed}, "
          f"median of {args.repeats}, {'one G for the batch' if args.shared_G else 'one random G per problem'}")
    if (args.threads > 1 and os.getloadavg()[0] > os.cpu_count() - 1
            and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"):
        print("note: the machine is busy; with several torch threads each OpenMP parallel region can wait for "
              "a scheduler time slice (threads spin-wait), so wall rates measure the load more than the code: "
              "compare with --threads 1 or OMP_WAIT_POLICY=PASSIVE")

    impls = {"fast (irs_torch.crb)": crb_fast}
    for path in args.compare:
        impls[f"compare {os.path.basename(path)}"] = crb_with(load_module(path))
    factors = {r: make_factor(p, r, args.seed) for r in args.ranks}
    with torch.no_grad():
        for r, F in factors.items():
            dense = crb_fast(p, F @ F.mH, p["psi"])
            rel = ((crb_factored_with(F)(p, F, p["psi"]) - dense).abs() / dense.abs()).max().item()
            print(f"agreement factored r={r} vs dense R = B B^H: max relative difference of the CRB {rel:.2e}")
    for r, F in factors.items():
        impls[f"factored r={r}"] = crb_factored_with(F)
    others = {k: v for k, v in list(impls.items())[1:] if k.startswith("compare")}
    if not args.no_naive:
        others["naive dense"] = crb_naive
    with torch.no_grad():
        c_fast = crb_fast(p, p["R_s"], p["psi"])
        for name, impl in others.items():
            c = impl(p, p["R_s"], p["psi"])
            rel = ((c_fast - c).abs() / c.abs()).max().item()
            print(f"agreement fast vs {name}: max relative difference of the CRB {rel:.2e}")

    # irs_torch.crb and the --compare versions interleaved; the naive reference (large temporaries that
    # would disturb the allocator and caches of the others) on its own afterwards.
    fwd, fb = bench(impls, p, args.repeats)
    if not args.no_naive:
        nf, nb = bench({"naive dense": crb_naive}, p, args.repeats)
        fwd.update(nf)
        fb.update(nb)
        impls["naive dense"] = crb_naive
    print(f"{'':<28} {'mode':<17} {'median wall /s':>15} {'best wall /s':>13} {'CPU us/eval':>12}")
    for mode, res in (("forward", fwd), ("forward+backward", fb)):
        for name, (w_med, w_min, c_med) in res.items():
            print(f"{name:<28} {mode:<17} {B / w_med:>15,.0f} {B / w_min:>13,.0f} {c_med / B * 1e6:>12.2f}")
    fast = "fast (irs_torch.crb)"
    for name in impls:
        if name != fast and not name.startswith("factored"):
            print(f"speed-up over {name} (median wall): forward x{fwd[name][0] / fwd[fast][0]:.2f}, "
                  f"forward+backward x{fb[name][0] / fb[fast][0]:.2f}")
    ff, fbr = B / fwd[fast][0], B / fb[fast][0]
    print(f"targets (median wall): forward >= 100,000/s {'MET' if ff >= 1e5 else 'MISSED'} ({ff:,.0f}); "
          f"forward+backward >= 30,000/s {'MET' if fbr >= 3e4 else 'MISSED'} ({fbr:,.0f})")
    if not args.no_naive:
        rf, rb = fwd["naive dense"][0] / fwd[fast][0], fb["naive dense"][0] / fb[fast][0]
        print(f"targets over the naive dense version (median wall): forward >= 20x {'MET' if rf >= 20 else 'MISSED'} "
              f"(x{rf:.2f}); forward+backward >= 25x {'MET' if rb >= 25 else 'MISSED'} (x{rb:.2f})")
        cf, cb = fwd["naive dense"][2] / fwd[fast][2], fb["naive dense"][2] / fb[fast][2]
        print(f"targets over the naive dense version (median CPU time per evaluation, steadier on a shared machine): "
              f"forward >= 20x {'MET' if cf >= 20 else 'MISSED'} (x{cf:.2f}); forward+backward >= 25x "
              f"{'MET' if cb >= 25 else 'MISSED'} (x{cb:.2f})")
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          f"(other jobs on the machine make wall-clock rates pessimistic)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        R = p["R_s"].clone().requires_grad_(True)
        psi = p["psi"].clone().requires_grad_(True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                crb_fast(p, R, psi).sum().backward()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

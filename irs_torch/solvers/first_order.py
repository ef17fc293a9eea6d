"""Batched first-order refinement: many starts of many scenarios refined together, feasible at every iterate.

One definition of a step serves inference and training (as in learned warm starts for fixed-point
methods, Sambharya et al., JMLR 2024): :func:`adam_step` is a functional Adam update, so
:func:`refine_batch` (inference: no graph, per-instance early stopping, best iterate kept) and
:func:`unrolled_refine` (training: K differentiable steps) run the same arithmetic.

Parameterisation (feasible by construction, :func:`encode` / :func:`decode`), per design and slot l:

    R_l   = L P_t softmax(u)_l sigmoid(v_l) B_l B_l^H / ||B_l||_F^2     (PSD, average BS budget (17b))
    psi_l = s_l(R, psi_raw) psi_raw_l,  psi_raw_l = sigmoid(rho_l) exp(j ph_l)    (|psi| <= a_max, C1 (17a))

with B_l of M x r (``rank`` r: the optimal R_l of (P2) has rank <= 3 by its KKT conditions, so a small
r loses nothing at the optimum and keeps every product thin) and s_l the closed-form largest real scale
meeting C1 and a_max (:meth:`Scenario.scale_psi_to_feasible`). A passive scenario has unit-modulus psi
and no C1. Loss per design: the smooth max ``logsumexp(smooth log c_l) / smooth`` of the per-IRS CRBs
c_l = tr(F_l^-1) (log scale: instances whose CRBs differ by decades get comparable gradients).

Batching. A batched :class:`Scenario` of shape ``(B,)`` (one size, per-item budgets) and starts of
shape ``(K, B, ...)``: K starts per instance. Every instance stops on its own when its best start
improved by less than ``tol`` (relative) over ``patience`` steps; stopped instances leave the batch
(their rows are dropped from every tensor), so easy instances cost little. The result per instance is
the best iterate over its K starts (never worse than the best start: the starts are iterate 0).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from irs_torch.scenario import Scenario

#: Adam's moment decay rates and denominator guard (torch.optim.Adam's defaults).
BETAS = (0.9, 0.999)
#: How :func:`refine_batch` decides that an instance has stalled (see its ``stall``).
STALL_RULES = ("best", "trajectory")
ADAM_EPS = 1e-8


# ----------------------------------------------------------------------------- parameterisation
def sqrt_psd(R: torch.Tensor, rank: int | None = None) -> torch.Tensor:
    """A factor ``B`` ``(..., M, r)`` with ``B B^H ~ R`` for Hermitian PSD ``R`` ``(..., M, M)`` (negative eigenvalues
    clipped). ``rank`` None or >= M: exact (all M eigen-directions). ``rank = r < M``: the r largest eigen-directions
    where they hold >= 99.9% of the trace (exact up to that for low-rank R, e.g. a beam); otherwise (e.g. an
    isotropic start, whose top-r eigenvectors would be an arbitrary r antennas) a fixed random sketch
    ``R^1/2 Omega`` with ``E[B B^H] = R`` and the same trace, so the start spreads over all antennas."""
    lam, V = torch.linalg.eigh(0.5 * (R + R.mH))
    lam = lam.clamp(min=0)
    full = V * lam.sqrt().to(R.dtype).unsqueeze(-2)
    M = R.shape[-1]
    if rank is None or rank >= M:
        return full
    top = full[..., -rank:]
    held = lam[..., -rank:].sum(-1) / lam.sum(-1).clamp(min=1e-300)  # (...)
    g = torch.Generator(device="cpu").manual_seed(12345)
    om = torch.complex(torch.randn(M, rank, generator=g, dtype=torch.float64),
                       torch.randn(M, rank, generator=g, dtype=torch.float64)) / math.sqrt(2 * rank)
    sk = full @ om.to(device=R.device, dtype=R.dtype)
    tr_sk = (sk.real ** 2 + sk.imag ** 2).sum((-2, -1)).clamp(min=1e-300)
    sk = sk * (lam.sum(-1) / tr_sk).sqrt().to(R.dtype)[..., None, None]
    return torch.where((held >= 0.999)[..., None, None], top, sk)


def default_rank(M: int) -> int:
    """The transmit factor's rank used by default: all of M up to 32 antennas (exact for any start; the
    quality suite's sizes), else 8 (>= the rank-3 optimum of (P2) plus room for the iterates to move between
    directions; every product is then M x 8, not M x M)."""
    return int(M) if M <= 32 else 8


def encode(scenario: Scenario, R0: torch.Tensor, psi0: torch.Tensor, rank: int | None = None) -> dict:
    """Free real parameters of starts ``(R0, psi0)``: :func:`encode_factor` of the PSD square root of R0 (its
    ``rank`` largest eigen-directions). Shapes: R0 ``(..., L, M, M)`` complex [W], psi0 ``(..., L, N)``."""
    return encode_factor(scenario, sqrt_psd(R0, rank), psi0)


def encode_factor(scenario: Scenario, B0: torch.Tensor, psi0: torch.Tensor) -> dict:
    """Free real parameters of starts given by transmit factors (``R0_l = B0_l B0_l^H``) and ``psi0``: the inverse
    of :func:`decode` up to psi's feasibility scale and the clamps (used budget fraction in [1e-6, 0.98], relative
    amplitudes in [1e-3, 1 - 1e-3]). Differentiable in B0 and psi0 (no eigendecomposition), which is how a
    network's start enters :func:`unrolled_refine`.

    Shapes: B0 ``(..., L, M, r)`` complex [sqrt(W)], psi0 ``(..., L, N)`` complex, ``...`` broadcasting against
    the scenario's batch shape. Returns a dict of real tensors: ``Br (..., L, M, r, 2)`` (``view_as_real`` of
    B_l scaled to unit Frobenius norm), ``u (..., L)`` slot-share logits, ``v (..., L)`` used-fraction logits,
    ``rho (..., L, N)`` amplitude logits, ``ph (..., L, N)`` phases [rad]."""
    L = scenario.L
    P_t = scenario.budget("P_t")
    P_t = P_t.unsqueeze(-1) if P_t.dim() else P_t  # (B, 1) against (..., L)
    tr = (B0.real ** 2 + B0.imag ** 2).sum((-2, -1)).clamp(min=1e-300)  # tr(R0_l), (..., L)
    B = B0 / tr.sqrt().to(B0.dtype)[..., None, None]
    frac = (tr.sum(-1, keepdim=True) / (L * P_t)).clamp(1e-6, 0.98).expand_as(tr)
    amp = (psi0.abs() / psi0.abs().amax(-1, keepdim=True).clamp(min=1e-300)).clamp(1e-3, 1 - 1e-3)
    return {"Br": torch.view_as_real(B.contiguous()), "u": torch.log(tr / tr.sum(-1, keepdim=True)),
            "v": torch.log(frac / (1 - frac)), "rho": torch.log(amp / (1 - amp)), "ph": torch.angle(psi0)}


def decode_factor(scenario: Scenario, p: dict, P_t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Bs, psi_raw)`` from the parameters of :func:`encode` (differentiable): the transmit factors Bs
    ``(..., L, M, r)`` [sqrt(W)] with ``R_l = Bs_l Bs_l^H`` PSD meeting the BS budget, and psi_raw ``(..., L, N)``
    with |psi_raw| <= 1, not yet scaled to C1 / a_max. ``P_t``: a BS budget [W] used instead of the scenario's,
    shaped to broadcast against ``(..., L)`` (relaxed budgets of a continuation)."""
    cdt, L = scenario.G.dtype, scenario.L
    if P_t is None:
        P_t = scenario.budget("P_t")
        P_t = P_t.unsqueeze(-1) if P_t.dim() else P_t
    Bc = torch.view_as_complex(p["Br"])
    trg = (Bc.real ** 2 + Bc.imag ** 2).sum((-2, -1)).clamp(min=1e-300)
    pw = L * P_t * torch.softmax(p["u"], -1) * torch.sigmoid(p["v"])
    Bs = Bc * (pw / trg).sqrt().to(cdt)[..., None, None]
    amp = torch.sigmoid(p["rho"]) if scenario.active else torch.ones_like(p["ph"])
    return Bs, torch.polar(amp, p["ph"]).to(cdt)


def decode(scenario: Scenario, p: dict, P_t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R, psi_raw)``: :func:`decode_factor` with ``R = Bs Bs^H`` ``(..., L, M, M)`` [W]."""
    Bs, psi = decode_factor(scenario, p, P_t)
    return Bs @ Bs.mH, psi


def feasible_factor(scenario: Scenario, p: dict, P_t: torch.Tensor | None = None,
                    P_s: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The feasible design of parameters ``p`` as ``(Bs, psi)`` (``R = Bs Bs^H``): :func:`decode_factor`, then psi
    at the largest real scale meeting C1 and a_max (:meth:`Scenario.scale_psi_to_feasible_factored`, no M x M
    product). Shapes ``(..., L, M, r)``, ``(..., L, N)``. ``P_t``, ``P_s`` [W]: budgets used instead of the
    scenario's (broadcasting against ``(..., L)``): the design is then feasible for those."""
    Bs, psi = decode_factor(scenario, p, P_t)
    return Bs, (scenario.scale_psi_to_feasible_factored(Bs, psi, P_s=P_s) if scenario.active else psi)


def feasible_point(scenario: Scenario, p: dict, P_t: torch.Tensor | None = None,
                   P_s: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`feasible_factor` as ``(R, psi)`` with ``R = Bs Bs^H`` ``(..., L, M, M)`` [W]."""
    Bs, psi = feasible_factor(scenario, p, P_t, P_s)
    return Bs @ Bs.mH, psi


def smooth_max_log(c: torch.Tensor, smooth: float) -> torch.Tensor:
    """``logsumexp(smooth log c) / smooth`` over the last axis (IRSs), with non-finite or non-positive CRBs
    read as 1 (no gradient from a singular FIM). Shapes ``(..., L)`` -> ``(...)``."""
    ok = torch.isfinite(c) & (c > 0)
    lc = torch.log(torch.where(ok, c, torch.ones_like(c)))
    return torch.logsumexp(smooth * lc, -1) / smooth


def trainable_keys(scenario: Scenario) -> tuple[str, ...]:
    """The parameters that move: all but the amplitudes ``rho`` for a passive IRS (unit modulus)."""
    return ("Br", "u", "v", "rho", "ph") if scenario.active else ("Br", "u", "v", "ph")


def cosine_lr(lr: float, decay: float, step: int, steps: int) -> float:
    """Learning rate at ``step`` (0-based) of a cosine schedule from ``lr`` to ``lr * decay`` over ``steps``
    (``torch.optim.lr_scheduler.CosineAnnealingLR`` with ``T_max = steps``); ``decay >= 1``: constant."""
    if decay >= 1:
        return lr
    lo = lr * decay
    return lo + (lr - lo) * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))) / 2


def adam_step(p: dict, g: dict, m: dict, v: dict, t: int, lr: float) -> tuple[dict, dict, dict]:
    """One functional Adam update (torch.optim.Adam's arithmetic, :data:`BETAS`, :data:`ADAM_EPS`) of the
    tensors in ``g``'s keys; ``t`` is the 1-based step count. Differentiable in ``p`` and ``g`` when they carry
    graphs (unrolled training). Returns new dicts ``(p, m, v)``; keys of ``p`` without a gradient are kept."""
    b1, b2 = BETAS
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    p, m, v = dict(p), dict(m), dict(v)
    for k, gk in g.items():
        m[k] = b1 * m[k] + (1 - b1) * gk
        v[k] = b2 * v[k] + (1 - b2) * gk * gk
        denom = (v[k] + 1e-300).sqrt() / math.sqrt(bc2) + ADAM_EPS
        p[k] = p[k] - (lr / bc1) * m[k] / denom
    return p, m, v


def _expand_scenario(scenario: Scenario) -> Scenario:
    return scenario if scenario.batch_shape else Scenario.stack([scenario])


# ----------------------------------------------------------------------------- batched refinement
@dataclass
class FirstOrderResult:
    """Outcome of :func:`refine_batch` for B instances with K starts each.

    R_s ``(B, L, M, M)`` [W], psi ``(B, L, N)`` complex: the best iterate of each instance (feasible);
    crb ``(B, L)`` tr(F^-1) [rad^2]; max_crb ``(B,)``; start ``(B,)`` which start it came from;
    start_max_crb ``(K, B)`` the starts' own max-CRBs; steps ``(B,)`` Adam steps run per instance (early
    stopping); seconds: wall time of the whole call; settings: the arguments."""

    R_s: torch.Tensor
    psi: torch.Tensor
    crb: torch.Tensor
    max_crb: torch.Tensor
    start: torch.Tensor
    start_max_crb: torch.Tensor
    steps: torch.Tensor
    seconds: float
    settings: dict = field(default_factory=dict)


def _as_starts(name: str, t: torch.Tensor, tail: tuple, B: int) -> torch.Tensor:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if tuple(t.shape[-len(tail):]) != tail:
        raise ValueError(f"{name} must end with shape {tail}, got {tuple(t.shape)}")
    lead = tuple(t.shape[:-len(tail)])
    if lead == ():
        t = t.reshape((1, 1) + tail)
    elif lead == (B,):
        t = t.unsqueeze(0)
    elif len(lead) != 2 or lead[1] != B:
        raise ValueError(f"{name} must have shape (K, B={B}) + {tail}, (B,) + {tail} or {tail}; got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return t.expand((t.shape[0], B) + tail)


def refine_batch(scenario: Scenario, R0: torch.Tensor, psi0: torch.Tensor, *, steps: int = 400, lr: float = 0.1,
                 decay: float = 0.05, smooth: float = 20.0, smooth_end: float | None = None, patience: int = 50,
                 tol: float = 1e-3,
                 rank: int | None = None, relax: torch.Tensor | None = None, relax_frac: float = 0.5,
                 keep_all: bool = False, device=None, progress: bool = False,
                 stall: str = "best") -> FirstOrderResult:
    """Refine K starts of each of B scenarios together by Adam on the smoothed max-CRB, feasible at every iterate.

    scenario: batched ``(B,)`` (or unbatched: B = 1, and starts ``(K, L, ...)``). R0 ``(K, B, L, M, M)`` [W], psi0
    ``(K, B, L, N)`` (also accepted: ``(B, ...)`` for K = 1, or one design for every instance); the starts are
    made feasible (psi scaled to C1 / a_max) and count as iterate 0. ``steps``: at most this many Adam steps; the
    learning rate anneals (cosine) from ``lr`` to ``lr * decay`` over ``steps``. ``patience`` > 0: an instance
    stops when the best max-CRB over its starts improved by less than ``tol`` (relative) over that many steps;
    ``stall="best"`` counts the starts themselves (a start that the first ``patience`` steps do not beat stops the
    instance), ``stall="trajectory"`` only the iterates (an instance runs while its iterates keep improving, even
    while they are still worse than the start: Adam's first steps from a start at the edge of the feasible set,
    such as a network's saturated design, often are). ``rank``: rank of the transmit factors (default
    :func:`default_rank`). ``relax`` ``(K, 2)``: per start,
    factors on (P_t, P_s) for a continuation inside the run: start k is refined at budgets ``(f_t P_t, f_s P_s)``
    that move geometrically to the real ones over the first ``relax_frac`` of ``steps`` (e.g. ``(0.01, 1)``: from
    P_t / 100; ``(1, 10)``: from 10 P_s; ``(1, 1)``: none); its iterates count (best iterate, early stopping) only
    once they are at the real budgets. When C1 binds, the basin a local method ends in depends on where it
    starts; a relaxed budget moves the start to another basin, as the thorough search's continuation does.
    ``keep_all``: return every start's best iterate (R_s ``(K, B, L, M, M)``, psi, crb, max_crb ``(K, B)``; ``start``
    is then ``arange(K)``) instead of each instance's best. ``device``: where to compute (e.g. ``"cuda"``); results
    come back on the scenario's device. Computation runs in complex128.

    Returns a :class:`FirstOrderResult`; each instance's design is its best iterate (never worse than its best
    feasible start)."""
    for name, val, lo in (("steps", steps, 0), ("patience", patience, 0)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
    for name, val in (("lr", lr), ("smooth", smooth), ("tol", tol)):
        if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {val!r}")
    if not (isinstance(decay, (int, float)) and 0 < decay <= 1):
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")
    if stall not in STALL_RULES:
        raise ValueError(f"stall must be one of {STALL_RULES}, got {stall!r}")
    t_start = time.perf_counter()
    home = scenario.G.device
    if not scenario.batch_shape:  # one scenario: (K, L, ...) starts are K starts of it
        R0 = R0.unsqueeze(-4) if torch.is_tensor(R0) and R0.dim() == 4 else R0
        psi0 = psi0.unsqueeze(-3) if torch.is_tensor(psi0) and psi0.dim() == 3 else psi0
    scn = _expand_scenario(scenario).to(torch.complex128, device=device)
    B, L, M, N = int(scn.batch_shape[0]), scn.L, scn.M, scn.N
    R0 = _as_starts("R0", R0, (L, M, M), B).to(device=scn.G.device, dtype=torch.complex128)
    psi0 = _as_starts("psi0", psi0, (L, N), B).to(device=scn.G.device, dtype=torch.complex128)
    K = int(R0.shape[0])
    r = default_rank(M) if rank is None else int(rank)
    if not 1 <= r <= M:
        raise ValueError(f"rank must be in [1, M={M}], got {rank!r}")
    keys = trainable_keys(scn)
    fac = _relax_factors(relax, K, scn)  # (K, 1, 2) or None
    t_relax = int(round(relax_frac * steps)) if fac is not None else 0
    Pt_full = scn.budget("P_t").expand(B)  # (B,)
    Ps_full = scn.budget("P_s").expand(B)
    with torch.no_grad():
        psi0 = scn.scale_psi_to_feasible(R0, psi0)
        c0 = scn.crb(R0, psi0, validate=False).total
        c0 = torch.where(torch.isfinite(c0).all(-1), c0.amax(-1), torch.full_like(c0[..., 0], math.inf))  # (K, B)
        p = encode(scn, R0, psi0, r)
    out_R, out_psi = R0.clone(), psi0.clone()  # best iterate per (start, instance)
    best_c = c0.clone()
    n_steps = torch.zeros(B, dtype=torch.int64)
    m = {k: torch.zeros_like(p[k]) for k in keys}
    v = {k: torch.zeros_like(p[k]) for k in keys}
    idx = torch.arange(B, device=scn.G.device)  # instances still running
    cur = scn
    mark = best_c.amin(0).clone()  # per instance: best max-CRB at the last patience check
    traj = None
    if stall == "trajectory":  # the iterates' own best (the starts excluded); the first check always passes
        traj = torch.full_like(mark, math.inf)
        mark = torch.full_like(mark, math.inf)
    bar = None
    if progress:
        from irs_torch.outputs import progress_bar

        bar = progress_bar(total=steps, desc=f"first-order refine ({B} instance{'s' if B != 1 else ''} x {K})",
                           unit="step")
    for it in range(steps):
        relaxed = it < t_relax
        if patience and it > t_relax and (it - t_relax) % patience == 0:
            now = best_c[:, idx].amin(0) if traj is None else traj[idx]
            keep = now < mark[idx] * (1 - tol)
            mark[idx] = torch.minimum(mark[idx], now)
            if not bool(keep.all()):
                idx = idx[keep]
                if idx.numel() == 0:
                    break
                sel = keep.nonzero().squeeze(-1)
                p = {k: t[:, sel] for k, t in p.items()}
                m = {k: t[:, sel] for k, t in m.items()}
                v = {k: t[:, sel] for k, t in v.items()}
                cur = cur[sel]
        with torch.enable_grad():  # also when called under no_grad (inference): the steps need gradients
            leaf = {k: (p[k].detach().requires_grad_(True) if k in keys else p[k]) for k in p}
            if relaxed:  # budgets of this step: geometric from the relaxed ones to the real ones
                f = fac ** (1.0 - it / t_relax)  # (K, 1, 2)
                Pt = (Pt_full[idx] * f[..., 0]).unsqueeze(-1)  # (K, b, 1)
                Ps = (Ps_full[idx] * f[..., 1]).unsqueeze(-1)
                Bs, psi = feasible_factor(cur, leaf, Pt, Ps)
            else:
                Bs, psi = feasible_factor(cur, leaf)
            c = cur.crb_factored(Bs, psi, validate=False).total  # (K, b, L)
            sm = smooth if smooth_end is None else smooth * (smooth_end / smooth) ** (it / steps)
            g = torch.autograd.grad(smooth_max_log(c, sm).sum(), [leaf[k] for k in keys])
        with torch.no_grad():
            ok = torch.isfinite(c).all(-1) & (c > 0).all(-1)
            mx = torch.where(ok, c.amax(-1), torch.full_like(c[..., 0], math.inf))
            imp = mx < best_c[:, idx]
            if relaxed:  # only iterates at the real budgets count
                imp &= (fac[..., 0] == 1) & (fac[..., 1] == 1)
            if traj is not None:
                real = mx if not relaxed else torch.where((fac[..., 0] == 1) & (fac[..., 1] == 1), mx,
                                                          torch.full_like(mx, math.inf))
                traj[idx] = torch.minimum(traj[idx], real.amin(0))
            if bool(imp.any()):
                kk, bb = imp.nonzero(as_tuple=True)
                Bi = Bs.detach()[kk, bb]
                out_R[kk, idx[bb]] = Bi @ Bi.mH
                out_psi[kk, idx[bb]] = psi.detach()[kk, bb]
                best_c[kk, idx[bb]] = mx[kk, bb]
            n_steps[idx.cpu()] += 1
            p, m, v = adam_step({k: leaf[k].detach() for k in leaf}, dict(zip(keys, g)), m, v, it + 1,
                                cosine_lr(lr, decay, it, steps))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        j = best_c.argmin(0)  # (B,)
        ar = torch.arange(B, device=j.device)
        R_best, psi_best = (out_R, out_psi) if keep_all else (out_R[j, ar], out_psi[j, ar])
        if keep_all:
            j = torch.arange(K, device=j.device)
        if scn.active:
            psi_best = scn.scale_psi_to_feasible(R_best, psi_best)
        cb = scn.crb(R_best, psi_best, validate=False).total
    return FirstOrderResult(
        R_s=R_best.to(home), psi=psi_best.to(home), crb=cb.to(home), max_crb=cb.amax(-1).to(home),
        start=j.to(home), start_max_crb=c0.to(home), steps=n_steps, seconds=time.perf_counter() - t_start,
        settings={"steps": steps, "lr": lr, "decay": decay, "smooth": smooth, "patience": patience, "tol": tol,
                  "stall": stall,
                  "rank": r, "starts": K, "device": str(scn.G.device),
                  "relax": None if fac is None else fac[:, 0].tolist(), "relax_frac": relax_frac})


def _relax_factors(relax, K: int, scn: Scenario):
    """``relax`` ``(K, 2)`` as a ``(K, 1, 2)`` float64 tensor on the scenario's device, or None."""
    if relax is None:
        return None
    f = torch.as_tensor(relax, dtype=torch.float64)
    if tuple(f.shape) != (K, 2):
        raise ValueError(f"relax must have shape (K={K}, 2) (factors on P_t and P_s per start), got {tuple(f.shape)}")
    if not (torch.isfinite(f).all() and (f > 0).all()):
        raise ValueError(f"relax factors must be finite and > 0, got {f.tolist()}")
    if not scn.active and bool((f[:, 1] != 1).any()):
        raise ValueError("relax: a passive scenario has no IRS power budget P_s to relax (use factor 1)")
    return f.to(scn.G.device).unsqueeze(1)


# ----------------------------------------------------------------------------- unrolled (training)
def unrolled_refine(scenario: Scenario, B0: torch.Tensor, psi0: torch.Tensor, steps: int, *, lr: float = 0.1,
                    decay: float = 0.05, smooth: float = 20.0,
                    exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` differentiable refinement steps from the start ``R0_l = B0_l B0_l^H``, ``psi0`` (the arithmetic of
    :func:`refine_batch` without early stopping or best-iterate selection); returns the last iterate ``(R, psi)``
    (feasible), with a graph back to ``B0`` and ``psi0``. Shapes: B0 ``(..., L, M, r)`` (a network's transmit
    factors; any r), psi0 ``(..., L, N)``, ``...`` the scenario's batch shape.

    ``exact=False`` (the default, cheap): each step's gradient is a constant (truncated backpropagation: the
    Jacobian of a step is taken as the identity, so the training signal is the gradient of the loss at the
    refined point, carried back to the start: first-order unrolling). ``exact=True``: the inner gradients
    keep their graph (``create_graph``), so the result is differentiable exactly; this needs a twice-
    differentiable CRB (:func:`irs_torch.crb.crb` with ``twice_differentiable=True``) and costs ~3x more.
    The learning-rate schedule is the cosine of :func:`refine_batch` over ``steps``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    keys = trainable_keys(scenario)
    p = encode_factor(scenario, B0, psi0)  # psi0's scale does not matter: only relative amplitudes are encoded
    if exact:  # every moving tensor must be in the graph (a start without a graph enters as a leaf)
        p = {k: (t if t.requires_grad or k not in keys else t.detach().requires_grad_(True)) for k, t in p.items()}
    m = {k: torch.zeros_like(p[k]) for k in keys}
    v = {k: torch.zeros_like(p[k]) for k in keys}
    for it in range(steps):
        if exact:
            q = p
            R, psi = feasible_point(scenario, q)
            c = _crb_total(scenario, R, psi, twice=True)
            loss = smooth_max_log(c, smooth).sum()
            g = torch.autograd.grad(loss, [q[k] for k in keys], create_graph=True)
        else:
            q = {k: (p[k].detach().requires_grad_(True) if k in keys else p[k].detach()) for k in p}
            with torch.enable_grad():
                R, psi = feasible_point(scenario, q)
                loss = smooth_max_log(scenario.crb(R, psi, validate=False).total, smooth).sum()
                g = torch.autograd.grad(loss, [q[k] for k in keys])
            g = tuple(gi.detach() for gi in g)
        p, m, v = adam_step(p, dict(zip(keys, g)), m, v, it + 1, cosine_lr(lr, decay, it, steps))
    return feasible_point(scenario, p)


def _crb_total(scenario: Scenario, R: torch.Tensor, psi: torch.Tensor, twice: bool) -> torch.Tensor:
    return scenario.crb(R, psi, validate=False, twice_differentiable=twice).total


__all__ = ["FirstOrderResult", "refine_batch", "unrolled_refine", "encode", "encode_factor", "decode",
           "decode_factor", "feasible_point", "feasible_factor", "adam_step", "cosine_lr", "smooth_max_log", "sqrt_psd",
           "default_rank", "trainable_keys"]

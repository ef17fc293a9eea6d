"""The paper's qualitative claims checked on a figure's rows (:func:`check_claims`): who beats whom,
and the monotonicity in the budgets.
"""
from __future__ import annotations

import itertools
import math

from irs_torch.figures.sweeps import CURVES, SWEEP_CURVE_BUDGET


def _curve(rows, label):
    return {r["x"]: r["mean_max_crb"] for r in rows if r["curve"] == label}


def check_claims(fig: str, rows: list[dict]) -> list[dict]:
    """The paper's qualitative claims of Section V, checked on a figure's aggregated rows.

    Returns a list of ``{"claim", "holds" (bool), "evidence" (str)}``; the comparison is point by
    point on the mean max-CRB.
    """
    out = []

    def below(a, b, name):
        A, B = _curve(rows, a), _curve(rows, b)
        xs = sorted(set(A) & set(B))
        ok = [A[x] <= B[x] * (1 + 1e-6) for x in xs]
        ratio = [A[x] / B[x] for x in xs]
        out.append({"claim": name, "holds": bool(xs) and all(ok),
                    "evidence": f"{a} / {b} = " + ", ".join(f"{r:.3g}" for r in ratio) + f" at x = {xs}"})

    if fig == "fig2":
        below("Proposed, a_max = 8", "Transmit BF only, a_max = 8", "proposed < transmit-only")
        below("Transmit BF only, a_max = 8", "Reflective BF only, a_max = 8", "transmit-only < reflective-only")
        below("Proposed, a_max = 8", "Passive IRS", "active far below passive")
        below("Proposed, a_max = 8", "Proposed, a_max = 4", "larger a_max better")
        A, P = _curve(rows, "Proposed, a_max = 8"), _curve(rows, "Passive IRS")
        xs = sorted(set(A) & set(P))
        if xs:
            orders = [math.log10(P[x] / A[x]) for x in xs]
            out[2]["evidence"] += f"; passive/active = 10^{min(orders):.1f} .. 10^{max(orders):.1f}"
            out[2]["holds"] = out[2]["holds"] and min(orders) >= 1.0
    elif fig == "fig3":
        curves = sorted({r["curve"] for r in rows})
        xs = sorted({r["x"] for r in rows})
        if len(xs) >= 2 and len(curves) > 1:
            lo = [_curve(rows, c).get(xs[0]) for c in curves]
            spread_lo = max(lo) / min(lo)
            hi = [_curve(rows, c).get(xs[-1]) for c in curves]
            spread_hi = max(hi) / min(hi)
            out.append({"claim": "at low P_s the curves for different P_t coincide",
                        "holds": spread_lo < 1.5 and spread_lo < spread_hi,
                        "evidence": f"max/min over P_t at P_s={xs[0]:g}: {spread_lo:.3g}; "
                                    f"at P_s={xs[-1]:g}: {spread_hi:.3g}"})
            flat = []
            for c in curves:
                cv = _curve(rows, c)
                if len(xs) >= 2:
                    flat.append(cv[xs[-2]] / cv[xs[-1]])
            out.append({"claim": "the CRB flattens at high P_s",
                        "holds": all(f < 1.5 for f in flat),
                        "evidence": "CRB(P_s=%g)/CRB(P_s=%g) per curve: " % (xs[-2], xs[-1])
                                    + ", ".join(f"{f:.3g}" for f in flat)})
    elif fig == "fig4":
        cv = _curve(rows, "Proposed")
        xs = sorted(cv)
        if len(xs) >= 3:
            dec = all(cv[b] <= cv[a] * (1 + 1e-6) for a, b in zip(xs, xs[1:]))
            gains = [cv[a] / cv[b] for a, b in zip(xs, xs[1:])]
            out.append({"claim": "the CRB falls with M", "holds": dec,
                        "evidence": "successive ratios CRB(M_i)/CRB(M_i+1): " + ", ".join(f"{g:.3g}" for g in gains)
                                    + f" at M = {xs}"})
            out.append({"claim": "and saturates", "holds": gains[-1] < gains[0],
                        "evidence": f"first gain {gains[0]:.3g} vs last gain {gains[-1]:.3g}"})
        below("Proposed", "Transmit BF only", "proposed < transmit-only (all M)")
        below("Proposed", "Reflective BF only", "proposed < reflective-only (all M)")
    if fig in SWEEP_CURVE_BUDGET:
        out.extend(_budget_monotone_claim(fig, rows))
    return out


def _budget_monotone_claim(fig: str, rows: list[dict]) -> list[dict]:
    """The optimum cannot rise with a budget: the proposed curves' means, point by point, must be
    non-increasing in x and across the curves ordered by their budget (Figs. 2 and 3)."""
    name = SWEEP_CURVE_BUDGET[fig]
    budget = {label: over.get(name) for label, method, over in CURVES[fig] if method == "ao"}
    cv = {c: _curve(rows, c) for c in budget if _curve(rows, c)}
    if not cv:
        return []
    worst, where = 0.0, ""
    for c, pts in cv.items():
        xs = sorted(pts)
        for a, b in itertools.pairwise(xs):
            if pts[b] / pts[a] > worst:
                worst, where = pts[b] / pts[a], f"{c}: x={b:g} vs x={a:g}"
    order = sorted(cv, key=lambda c: budget[c])
    for lo, hi in itertools.pairwise(order):
        for x in sorted(set(cv[lo]) & set(cv[hi])):
            if cv[hi][x] / cv[lo][x] > worst:
                worst, where = cv[hi][x] / cv[lo][x], f"x={x:g}: {hi} vs {lo}"
    return [{"claim": f"proposed non-increasing in the budgets ({name} and the swept one)",
             "holds": worst <= 1 + 1e-6,
             "evidence": f"largest ratio larger-budget / smaller-budget neighbour = {worst:.4g} ({where})"}]

"""Pictures of a design (R_s, psi): where the BS transmits, where each IRS steers, how close each
constraint is, and what CRB each IRS gets.

- :func:`bs_beampattern`: the BS transmit gain of each slot's covariance R_s,l over the angle from
  the BS array axis (a ULA only resolves that one angle).
- :func:`irs_beampattern`: the power each IRS reflects towards every direction (theta, phi) of the
  half-space in front of it, for the BS signal of its own slot.
- :func:`design_report`: the numbers shown beside them (per-IRS CRBs, constraint use).
- :func:`plot_design`: all of it in one figure, written as PNG (default) or SVG / PDF by the file's
  extension. ``irs-torch plot`` is its command.

Angles follow :mod:`irs_torch.physics.geometry`: theta from the IRS vertical axis, phi from its
horizontal axis (phi in (0, pi) in front of the IRS).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from irs_torch.physics.steering import ula_steering, upa_steering
from irs_torch.scenario import Scenario

FORMATS = ("png", "svg", "pdf")
DB_FLOOR = -30.0  # dB below the peak where the IRS maps' colour scale stops


def bs_beampattern(scenario: Scenario, R_s: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """BS transmit gain of each slot over an isotropic transmission of the same power (linear).

    ``g_l(x) = a(x)^T R_s,l conj(a(x)) / tr(R_s,l)`` with ``a`` the ULA response at the angle
    ``x`` from the array axis (:func:`irs_torch.physics.steering.ula_steering`, the convention of the
    BS-IRS channels). An isotropic ``R_s,l = P/M I`` gives 1 everywhere; a beam matched to one
    direction gives M there. A slot with ``tr(R_s,l) = 0`` gives 0.

    Shapes: R_s ``(L, M, M)`` complex, angles ``(A,)`` [rad] -> ``(L, A)`` real.
    """
    R = torch.as_tensor(R_s).to(torch.complex128)
    a = ula_steering(torch.cos(torch.as_tensor(angles, dtype=torch.float64)), scenario.M, scenario.d_bs)  # (A, M)
    p = torch.einsum("am,lmn,an->la", a, R, a.conj()).real
    tr = torch.diagonal(R, dim1=-2, dim2=-1).sum(-1).real.unsqueeze(-1)
    return torch.where(tr > 0, p / tr.clamp_min(1e-300), torch.zeros_like(p))


def irs_beampattern(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, theta: torch.Tensor,
                    phi: torch.Tensor) -> torch.Tensor:
    """Power IRS l reflects towards (theta, phi) in its own slot [W, before the IRS-target path loss].

    ``P_l(theta, phi) = v R_s,l v^H`` with ``v = a(theta, phi)^T diag(psi_l) G_l``: the far-field sum of
    the amplified reflections of the BS signal (eq. (5)'s echo path, first hop; the amplification noise
    is not included). Its value at the target's direction (theta_l, phi_l) is what the echo's first
    hop delivers to the target.

    Shapes: R_s ``(L, M, M)``, psi ``(L, N)`` complex; theta ``(T,)``, phi ``(P,)`` [rad] -> ``(L, T, P)``.
    """
    th, ph = torch.meshgrid(torch.as_tensor(theta, dtype=torch.float64), torch.as_tensor(phi, dtype=torch.float64),
                            indexing="ij")
    a = upa_steering(th, ph, scenario.N_h, scenario.N_v, scenario.d_h, scenario.d_v)  # (T, P, N)
    G = scenario.G.to(torch.complex128)
    v = torch.einsum("tpn,ln,lnm->ltpm", a, torch.as_tensor(psi).to(torch.complex128), G)
    R = torch.as_tensor(R_s).to(torch.complex128)
    return torch.einsum("ltpm,lmk,ltpk->ltp", v, R, v.conj()).real.clamp_min(0.0)


def design_report(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor) -> dict:
    """Per-IRS CRBs and constraint use of a design (plain floats and lists).

    Returns ``crb`` (tr(F^-1) per IRS), ``crb_theta``, ``crb_phi`` [rad^2], ``root_crb_deg`` (per IRS
    ``(sqrt(crb_theta), sqrt(crb_phi))`` in degrees), ``max_crb``, and the share of each budget used:
    ``bs_use = bs_power / P_t``, ``irs_use = C1 power / P_s`` per IRS (None for a passive IRS, which has
    no C1), ``amp_use = max|psi| / a_max`` per IRS (1 means the constraint binds; above 1 it is violated).
    """
    R = torch.as_tensor(R_s).to(scenario.complex_dtype)
    p = torch.as_tensor(psi).to(scenario.complex_dtype)
    c = scenario.crb(R, p)
    m = scenario.constraint_margins(R, p)
    deg = 180.0 / math.pi
    th, ph = c.theta.tolist(), c.phi.tolist()
    return {
        "crb": c.total.tolist(), "crb_theta": th, "crb_phi": ph, "max_crb": float(c.total.max()),
        "root_crb_deg": [(math.sqrt(a) * deg, math.sqrt(b) * deg) for a, b in zip(th, ph)],
        "bs_use": float(1.0 - m["bs"]),
        "irs_use": [float(1.0 - x) for x in m["irs"]] if scenario.active else None,
        "amp_use": (p.abs().amax(-1) / scenario.budget_broadcast("a_max")).tolist(),
        "active": bool(scenario.active),
    }


def _output_format(path) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"output {path}: the extension must be one of {', '.join('.' + f for f in FORMATS)}, "
                         f"got {'.' + ext if ext else 'none'}")
    return ext


def _bs_angle_to(scenario: Scenario, points: torch.Tensor) -> list[float]:
    """Angles [rad] from the BS array axis (+x) to the given points ``(K, 3)``."""
    d = points.to(torch.float64) - scenario.bs_pos.to(torch.float64)
    return torch.acos((d[:, 0] / torch.linalg.vector_norm(d, dim=-1)).clamp(-1, 1)).tolist()


def plot_design(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, path=None, *, title: str | None = None,
                resolution: int = 181):
    """One figure of a design: BS transmit gain per slot, each IRS's reflected power map with the target
    marked, per-IRS root-CRBs, and the share of every budget used.

    ``path``: write the figure there (``.png`` default at 150 dpi, ``.svg`` or ``.pdf`` as vector
    graphics) and return the path; ``None`` returns the matplotlib Figure instead.
    ``resolution``: grid points per angle axis. scenario: one (unbatched) :class:`Scenario`.

    Shapes: R_s ``(L, M, M)`` complex [W], psi ``(L, N)`` complex.
    """
    if path is not None:
        fmt = _output_format(path)
    if scenario.batch_shape:
        raise ValueError(f"plot_design takes one scenario, got a batch of shape {tuple(scenario.batch_shape)}")
    R_s, psi = torch.as_tensor(R_s), torch.as_tensor(psi)
    scenario.check_design(R_s.to(scenario.complex_dtype), psi.to(scenario.complex_dtype))
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    L = scenario.L
    rep = design_report(scenario, R_s, psi)
    deg = 180.0 / math.pi
    ncols = max(L, 2) + 1
    fig = plt.figure(figsize=(3.9 * ncols, 7.4), dpi=100)
    gs = GridSpec(2, ncols, figure=fig, height_ratios=[1.0, 1.15], hspace=0.42, wspace=0.42)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    # BS transmit gain per slot
    ax = fig.add_subplot(gs[0, : ncols - 1])
    ang = torch.linspace(0.0, math.pi, 721, dtype=torch.float64)
    g = bs_beampattern(scenario, R_s, ang)
    for l in range(L):
        ax.plot(ang.numpy() * deg, 10 * torch.log10(g[l].clamp_min(1e-6)).numpy(), color=colours[l % 10],
                label=f"slot {l + 1} (sensing via IRS {l + 1})")
    top = 10 * math.log10(scenario.M)
    ax.set_ylim(-25.0, top + 2.0)
    ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
    ax.text(2, 0.4, "isotropic", fontsize=7, color="0.45")
    if scenario.bs_pos is not None and scenario.irs_pos is not None:
        for l, a in enumerate(_bs_angle_to(scenario, scenario.irs_pos)):
            ax.axvline(a * deg, color=colours[l % 10], ls="--", lw=1.0)
            ax.text(a * deg + 1, top + 0.6 - 2.2 * (l % 2), f"IRS {l + 1}", color=colours[l % 10], fontsize=8)
    ax.set_xlim(0, 180)
    ax.set_xlabel("angle from the BS array axis (deg)")
    ax.set_ylabel("transmit gain over isotropic (dB)")
    ax.set_title("BS transmit beampattern per slot\n(dashed: line-of-sight direction of each IRS; the BS-IRS "
                 "channels also have a scattered part)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", framealpha=0.9)

    # share of each budget used
    ax = fig.add_subplot(gs[0, ncols - 1])
    names = ["BS power / P_t"]
    use = [rep["bs_use"]]
    for l in range(L):
        if rep["irs_use"] is not None:
            names.append(f"IRS {l + 1}: power / P_s (C1)")
            use.append(rep["irs_use"][l])
        names.append(f"IRS {l + 1}: max|psi| / a_max" if scenario.active else f"IRS {l + 1}: max|psi| (passive: 1)")
        use.append(rep["amp_use"][l])
    y = list(range(len(names)))[::-1]
    cols = ["tab:red" if u > 1 + 1e-6 else ("tab:orange" if u > 0.999 else "tab:green") for u in use]
    ax.barh(y, use, color=cols, height=0.7, alpha=0.55)
    ax.axvline(1.0, color="k", lw=0.8)
    for yi, u, name in zip(y, use, names):
        ax.text(0.03, yi, name, va="center", fontsize=7.5)
        ax.text(min(u, 1.15) + 0.02, yi, f"{u:.3f}", va="center", fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(0, 1.3)
    ax.set_xlabel("share of the budget used (1 = binding)", fontsize=8)
    ax.set_title("constraints (orange: binding, red: violated)", fontsize=9)

    # reflected power maps
    th = torch.linspace(0.0, math.pi, resolution, dtype=torch.float64)
    ph = torch.linspace(0.0, math.pi, resolution, dtype=torch.float64)
    P = irs_beampattern(scenario, R_s, psi, th, ph)
    im = None
    for l in range(L):
        ax = fig.add_subplot(gs[1, l])
        peak = float(P[l].max())
        db = 10 * torch.log10((P[l] / peak).clamp_min(1e-12)) if peak > 0 else torch.full_like(P[l], DB_FLOOR)
        im = ax.imshow(db.clamp_min(DB_FLOOR).numpy(), origin="lower", extent=(0, 180, 0, 180), aspect="auto",
                       cmap="viridis", vmin=DB_FLOOR, vmax=0.0)
        t_th, t_ph = float(scenario.theta[l]) * deg, float(scenario.phi[l]) * deg
        ax.plot([t_ph], [t_th], marker="*", ms=13, mfc="none", mec="white", mew=1.6)
        ax.annotate("target", (t_ph, t_th), xytext=(6, 6), textcoords="offset points", color="white", fontsize=8)
        if scenario.bs_pos is not None and scenario.irs_pos is not None:
            from irs_torch.physics.geometry import direction_angles

            b_th, b_ph, _, _ = direction_angles(scenario.irs_pos[l], scenario.irs_yaw[l], scenario.bs_pos)
            ax.plot([float(b_ph) * deg], [float(b_th) * deg], marker="^", ms=8, mfc="none", mec="orange", mew=1.4)
            ax.annotate("BS", (float(b_ph) * deg, float(b_th) * deg), xytext=(6, -10), textcoords="offset points",
                        color="orange", fontsize=8)
        k_t = int(torch.argmin((th - scenario.theta[l]).abs()))
        k_p = int(torch.argmin((ph - scenario.phi[l]).abs()))
        ax.set_title(f"IRS {l + 1}: reflected power, dB re peak\n(towards the target: {float(db[k_t, k_p]):.1f} dB)",
                     fontsize=9)
        ax.set_xlabel("phi: from the IRS horizontal axis (deg)", fontsize=8)
        ax.set_ylabel("theta: from the IRS vertical axis (deg)", fontsize=8)
    if im is not None:
        cax = ax.inset_axes([1.03, 0.0, 0.04, 1.0])
        fig.colorbar(im, cax=cax)
        cax.tick_params(labelsize=7)

    # per-IRS root-CRBs
    ax = fig.add_subplot(gs[1, ncols - 1])
    x = torch.arange(L, dtype=torch.float64).numpy()
    r = rep["root_crb_deg"]
    ax.bar(x - 0.18, [v[0] for v in r], width=0.36, label="theta", color="tab:blue")
    ax.bar(x + 0.18, [v[1] for v in r], width=0.36, label="phi", color="tab:purple")
    for l in range(L):
        ax.text(x[l], max(r[l]) * 1.04, f"CRB {rep['crb'][l]:.3g}", ha="center", fontsize=7)
    ax.set_xticks(x, [f"IRS {l + 1}" for l in range(L)])
    ax.set_ylabel("root-CRB (deg)")
    ax.set_ylim(0, max(max(v) for v in r) * 1.25)
    ax.set_title(f"per-IRS root-CRB; max-CRB {rep['max_crb']:.3g} rad$^2$", fontsize=9)
    ax.legend(fontsize=7)

    fig.suptitle(title or f"design for {scenario.preset} scenario: M = {scenario.M}, N = {scenario.N_h}x"
                          f"{scenario.N_v}, L = {L}, P_t = {float(scenario.P_t):g} W, P_s = {float(scenario.P_s):g} W, "
                          f"a_max = {float(scenario.a_max):g}", fontsize=10)
    if path is None:
        return fig
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, path, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")
    plt.close(fig)
    return Path(path)

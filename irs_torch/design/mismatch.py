"""Designs for a wrong target position: moving a scenario's target, and the mismatch CRB map.

A design (R_s, psi) is made for an *assumed* target position; the system then senses a target at
the *true* position. With the BS and the IRSs static, only the target-dependent quantities of the
scenario change with the position (docs/assumptions.md "Geometry and angles"):

* the IRS-target angles (theta_l, phi_l) seen from each IRS (paper eq. (1), :func:`target_angles`);
* the round-trip coefficient beta_l, whose magnitude follows the scenario's path-loss model at the
  IRS-target distance d_l (:func:`irs_torch.physics.target_coefficient`).

The BS-IRS channels G_l, the noise powers, T_c and the budgets are unchanged.
:func:`move_target` builds that scenario; :func:`mismatch_crb` evaluates a design's per-IRS CRB at
true positions on a grid of position errors (one batched torch CRB call).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from irs_torch.crb import broadcast_shapes
from irs_torch.errors import InputError
from irs_torch.physics.geometry import path_loss, target_angles
from irs_torch.scenario import Scenario

__all__ = ["move_target", "beta_magnitude", "valid_positions", "mismatch_map", "MismatchMap",
           "plot_mismatch", "run_mismatch", "DEFAULT_EXTENT_M", "DEFAULT_GRID"]

#: Default half-extent of the error grid (m) and points per axis: +-4 m around the assumed position
#: covers the paper's geometry (IRSs 10 m from the target, 4 x 4 elements: a beam ~5 m wide there).
DEFAULT_EXTENT_M = 4.0
DEFAULT_GRID = 41


def beta_magnitude(d, *, beta_model: str = "pathloss", sigma_rcs: float = 1.0, wavelength: float = 0.1,
                   C0_db: float = -30.0, alpha: float = 2.2) -> torch.Tensor:
    """|beta| at IRS-target distance ``d`` [m] under the scenario's model (as
    :func:`irs_torch.physics.target_coefficient` draws it, without the random phase).

    ``pathloss``: ``|beta| = sqrt(sigma_rcs) PL(d)`` with ``PL(d) = C0 d^-alpha``;
    ``radar``: ``|beta| = lambda sqrt(sigma_rcs) / ((4 pi)^1.5 d^2)``. Shapes: d ``(...)`` -> ``(...)`` real.
    """
    d = torch.as_tensor(d, dtype=torch.float64)
    if beta_model == "pathloss":
        return math.sqrt(sigma_rcs) * path_loss(d, C0_db, alpha)
    if beta_model == "radar":
        return wavelength * math.sqrt(sigma_rcs) / ((4 * math.pi) ** 1.5 * d ** 2)
    raise InputError(f"beta_model must be 'pathloss' or 'radar', got {beta_model!r}")


def _scenario_beta_magnitude(scenario: Scenario, d) -> torch.Tensor:
    return beta_magnitude(d, beta_model=scenario.beta_model, sigma_rcs=scenario.sigma_rcs,
                          wavelength=scenario.wavelength, C0_db=scenario.C0_db, alpha=scenario.alpha)


def move_target(scenario: Scenario, target_xyz) -> Scenario:
    """The same system with the target at ``target_xyz``: same BS, IRSs, channels G, noise, budgets.

    Only the target-dependent fields change:

    * ``theta``, ``phi`` (..., L): the direction of the new position seen from each IRS
      (:func:`irs_torch.physics.target_angles` of ``irs_pos``, ``irs_yaw``, ``target_xyz``);
    * ``beta`` (..., L): ``beta_new = beta * m(d_new) / m(d_old)`` with ``m`` the magnitude model of
      the scenario (``beta_model``, ``C0_db``, ``alpha``, ``sigma_rcs``, ``wavelength``; see
      :func:`beta_magnitude`) and d the IRS-target distances of the old and the new position. So the
      phase of beta is kept (the random phase drawn with the scenario: the target's reflection
      phase is a property of the target, not re-drawn at each position), and the magnitude is the
      path-loss model's at the new distance, exactly as :func:`irs_torch.scenario.presets.from_geometry` would draw it,
      for every scenario whose beta came from the model (presets, from_geometry, random); a
      hand-set |beta| keeps its ratio to the model;
    * ``target_pos``: ``target_xyz``.

    Moving to the scenario's own position returns an identical scenario (bit for bit: the distance
    ratio is exactly 1). The scenario must carry its geometry (``irs_pos`` and ``target_pos``;
    ``irs_yaw`` defaults to 0).

    Shapes: scenario with batch shape ``S``; target_xyz ``(*B, 3)`` [m], with ``B`` broadcastable
    against ``S`` -> a Scenario with batch shape ``broadcast(S, B)``; G (and batched budgets) are
    expanded (views, no copy). E.g. an unbatched scenario and ``K`` positions ``(K, 3)`` give a
    batch of ``K`` scenarios, one per position; ``(3,)`` gives an unbatched one.

    Raises :class:`~irs_torch.errors.InputError` naming ``target_xyz`` if it is not finite, has the
    wrong shape, or is too close to / behind an IRS (the rules of :class:`Scenario`).
    """
    if scenario.irs_pos is None or scenario.target_pos is None:
        raise InputError("move_target needs a scenario with its geometry (irs_pos and target_pos); "
                         "this scenario has none (built from channels and angles alone)")
    try:
        tgt = torch.as_tensor(target_xyz, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"target_xyz must be a real array of shape (..., 3) in m, got {target_xyz!r} ({e})") from None
    if tgt.is_complex() or tgt.dim() < 1 or tgt.shape[-1] != 3:
        raise InputError(f"target_xyz must have shape (..., 3) [m], got {tuple(tgt.shape)}")
    if not torch.isfinite(tgt).all():
        raise InputError(f"target_xyz must be finite, got {tgt.tolist() if tgt.numel() <= 12 else 'NaN/inf values'}")
    S = tuple(scenario.batch_shape)
    try:
        batch = tuple(broadcast_shapes(S, tuple(tgt.shape[:-1])))
    except RuntimeError:
        raise InputError(f"target_xyz has batch shape {tuple(tgt.shape[:-1])}, which does not broadcast "
                         f"with the scenario's batch shape {S}") from None
    L = scenario.L
    irs = torch.as_tensor(scenario.irs_pos, dtype=torch.float64)
    yaw = torch.zeros(irs.shape[:-1], dtype=torch.float64) if scenario.irs_yaw is None else \
        torch.as_tensor(scenario.irs_yaw, dtype=torch.float64)
    old = torch.as_tensor(scenario.target_pos, dtype=torch.float64)
    th, ph, d_new, front = target_angles(irs, yaw, tgt)
    _, _, d_old, _ = target_angles(irs, yaw, old)
    from irs_torch.scenario import MIN_FRONT_COSINE, MIN_SEPARATION_M

    bad = (d_new < MIN_SEPARATION_M) | (front < MIN_FRONT_COSINE)
    if bad.any():
        i = int(torch.nonzero(bad.flatten())[0])
        l, k = i % L, i // L
        pos = tgt.reshape(-1, 3)[k % max(tgt.reshape(-1, 3).shape[0], 1)].tolist()
        raise InputError(f"target_xyz {pos} is not a valid target position for IRS {l + 1}: distance "
                         f"{d_new.flatten()[i].item():.3g} m (must be >= {MIN_SEPARATION_M} m), cosine to its "
                         f"normal {front.flatten()[i].item():.3g} (must be >= {MIN_FRONT_COSINE}; the "
                         f"target must be in front of every IRS)")
    ratio = _scenario_beta_magnitude(scenario, d_new) / _scenario_beta_magnitude(scenario, d_old)
    rdt, cdt = scenario.real_dtype, scenario.complex_dtype
    beta = scenario.beta * ratio.to(cdt) if not bool((ratio == 1).all()) else scenario.beta
    if tuple(beta.shape[:-1]) != batch:
        beta = beta.expand(batch + (L,))
    ch = dict(theta=th.to(rdt).expand(batch + (L,)), phi=ph.to(rdt).expand(batch + (L,)), beta=beta,
              target_pos=tgt.to(torch.as_tensor(scenario.target_pos).dtype).expand(batch + (3,)))
    if batch != S:
        ch["G"] = scenario.G.expand(batch + tuple(scenario.G.shape[-3:]))
        for f in ("sigma_r2", "sigma_b2", "P_t", "P_s", "a_max"):
            v = getattr(scenario, f)
            if torch.is_tensor(v) and v.dim():
                ch[f] = v.expand(batch)
        for f, tail in (("irs_pos", 2), ("irs_yaw", 1), ("bs_pos", 1)):
            v = getattr(scenario, f)
            if v is not None and torch.as_tensor(v).dim() > tail:
                ch[f] = torch.as_tensor(v).expand(batch + tuple(torch.as_tensor(v).shape[-tail:]))
    try:
        return scenario.replace(**ch)
    except ValueError as e:  # pragma: no cover - the checks above cover the geometry rules
        raise InputError(f"target_xyz: {e}") from None


def valid_positions(scenario: Scenario, positions) -> torch.Tensor:
    """Which ``positions`` ``(..., 3)`` [m] are admissible targets (>= MIN_SEPARATION_M from every IRS and
    in front of every IRS with cosine >= MIN_FRONT_COSINE; the rules of :class:`Scenario`). -> ``(...)`` bool."""
    from irs_torch.scenario import MIN_FRONT_COSINE, MIN_SEPARATION_M

    irs = torch.as_tensor(scenario.irs_pos, dtype=torch.float64)
    yaw = torch.zeros(irs.shape[:-1], dtype=torch.float64) if scenario.irs_yaw is None else \
        torch.as_tensor(scenario.irs_yaw, dtype=torch.float64)
    _, _, d, front = target_angles(irs, yaw, torch.as_tensor(positions, dtype=torch.float64))
    return ((d >= MIN_SEPARATION_M) & (front >= MIN_FRONT_COSINE)).all(-1)


@dataclass
class MismatchMap:
    """The CRB of one design at true positions ``assumed + (dx, dy, 0)``.

    dx ``(nx,)``, dy ``(ny,)`` [m]; crb, crb_theta, crb_phi ``(nx, ny, L)`` (tr(F^-1) mixed units as
    the paper, and the angle CRBs in rad^2; NaN where the true position is not an admissible target);
    max_crb ``(nx, ny)``; point_crb ``(L,)``: the design's CRB at the assumed position itself
    (unbatched evaluation); assumed ``(3,)`` [m].
    """

    dx: torch.Tensor
    dy: torch.Tensor
    crb: torch.Tensor
    crb_theta: torch.Tensor
    crb_phi: torch.Tensor
    point_crb: torch.Tensor
    assumed: torch.Tensor

    @property
    def max_crb(self) -> torch.Tensor:
        return self.crb.amax(-1)

    def at_zero(self):
        """Index ``(i, j)`` of the zero error, or None if the grid does not contain it."""
        i = torch.nonzero(self.dx == 0)
        j = torch.nonzero(self.dy == 0)
        return (int(i[0]), int(j[0])) if len(i) and len(j) else None

    def to_dict(self) -> dict:
        tl = lambda t: t.detach().tolist()  # noqa: E731
        return {"dx_m": tl(self.dx), "dy_m": tl(self.dy), "assumed_xyz_m": tl(self.assumed),
                "crb": tl(self.crb), "crb_theta_rad2": tl(self.crb_theta), "crb_phi_rad2": tl(self.crb_phi),
                "max_crb": tl(self.max_crb), "point_crb": tl(self.point_crb)}


def _axis(name, extent, n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{name} grid size must be an integer >= 1, got {n!r}")
    if not (isinstance(extent, (int, float)) and math.isfinite(extent) and extent >= 0):
        raise InputError(f"{name} extent must be a finite number >= 0 m, got {extent!r}")
    h = (n - 1) / 2.0  # symmetric, exactly 0 in the middle for odd n
    return float(extent) * (torch.arange(n, dtype=torch.float64) - h) / h if n > 1 else \
        torch.zeros(1, dtype=torch.float64)


def mismatch_map(scenario: Scenario, R_s: torch.Tensor, psi: torch.Tensor, *, assumed_xyz=None,
                 extent=(DEFAULT_EXTENT_M, DEFAULT_EXTENT_M), n=(DEFAULT_GRID, DEFAULT_GRID)) -> MismatchMap:
    """CRB at the true positions ``assumed + (dx, dy, 0)`` of a design (R_s, psi) made for ``assumed``.

    scenario: unbatched, with geometry. assumed_xyz ``(3,)`` [m] (default ``scenario.target_pos``).
    extent ``(ex, ey)`` [m]: half-widths of the error grid; n ``(nx, ny)`` points per axis
    (``linspace(-e, e, n)``: an odd n contains the zero error). Errors lie in the horizontal plane
    through the assumed position (the plane the IRSs see). One batched CRB call over the valid grid
    points (:func:`move_target`); inadmissible true positions are NaN.
    Shapes: R_s ``(L, M, M)`` [W], psi ``(L, N)``.
    """
    if scenario.batch_shape:
        raise InputError(f"mismatch_map needs an unbatched scenario, got batch shape {tuple(scenario.batch_shape)}")
    scenario.check_design(R_s, psi)
    if R_s.dim() != 3 or psi.dim() != 2:
        raise InputError(f"R_s must have shape (L, M, M) and psi (L, N), got {tuple(R_s.shape)} and {tuple(psi.shape)}")
    assumed = torch.as_tensor(scenario.target_pos if assumed_xyz is None else assumed_xyz, dtype=torch.float64)
    if assumed.shape != (3,) or not bool(torch.isfinite(assumed).all()):
        raise InputError(f"assumed_xyz must be 3 finite coordinates [m], got {assumed.tolist()}")
    ex, ey = (extent, extent) if isinstance(extent, (int, float)) else tuple(extent)
    nx, ny = (n, n) if isinstance(n, int) else tuple(n)
    dx, dy = _axis("x", ex, nx), _axis("y", ey, ny)
    base = move_target(scenario, assumed)
    pos = assumed.expand(len(dx), len(dy), 3).clone()
    pos[..., 0] += dx[:, None]
    pos[..., 1] += dy[None, :]
    ok = valid_positions(scenario, pos)
    L = scenario.L
    out = {k: torch.full((len(dx), len(dy), L), float("nan"), dtype=torch.float64) for k in ("total", "theta", "phi")}
    if ok.any():
        scnP = move_target(base, pos[ok])
        c = scnP.crb(R_s.to(base.G.dtype), psi.to(base.G.dtype))
        for k in out:
            out[k][ok] = getattr(c, k).detach().to(torch.float64)
    pc = base.crb(R_s.to(base.G.dtype), psi.to(base.G.dtype)).total.detach().to(torch.float64)
    return MismatchMap(dx=dx, dy=dy, crb=out["total"], crb_theta=out["theta"], crb_phi=out["phi"],
                       point_crb=pc, assumed=assumed)


def plot_mismatch(m: MismatchMap, path, per_irs: bool = False, title: str | None = None):
    """Heatmap of the max-CRB (or one panel per IRS) over the error grid, log colour scale [rad^2 +
    beta units, the paper's tr(F^-1)], axes dx, dy in m, the zero error marked. Writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    panels = [(f"IRS {l + 1}", m.crb[..., l]) for l in range(m.crb.shape[-1])] if per_irs else \
        [("max over IRSs", m.max_crb)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    finite = torch.cat([p[1][torch.isfinite(p[1])] for p in panels])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.numel() else (1e-6, 1.0)
    for ax, (name, z) in zip(axes[0], panels):
        im = ax.pcolormesh(m.dx.numpy(), m.dy.numpy(), z.T.numpy(), shading="nearest",
                           norm=LogNorm(vmin=vmin, vmax=max(vmax, vmin * 1.0001)), cmap="viridis")
        ax.plot([0], [0], "r+", ms=12, mew=2, label="assumed position")
        ax.set_xlabel("position error dx [m]")
        ax.set_ylabel("position error dy [m]")
        ax.set_title(name)
        ax.set_aspect("equal")
        fig.colorbar(im, ax=ax, label="CRB tr(F$^{-1}$) [rad$^2$]")
    fig.suptitle(title or f"CRB at the true position of a design\nmade for "
                          f"{tuple(round(float(v), 3) for v in m.assumed)} m", fontsize=11)
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return path


def run_mismatch(scenario: Scenario, *, out_dir, solution=None, options=None,
                 extent=(DEFAULT_EXTENT_M, DEFAULT_EXTENT_M), n=(DEFAULT_GRID, DEFAULT_GRID), per_irs: bool = False,
                 inputs=None, config: dict | None = None) -> dict:
    """The ``irs-torch mismatch`` run: a design for the scenario's target position (``solution``: a
    :class:`~irs_torch.scenario.Solution`, else the exact solver with ``options``, a
    :class:`~irs_torch.solvers.SolverOptions`), its :func:`mismatch_map`, and the files
    ``out_dir/mismatch.png`` (heatmap) and ``out_dir/mismatch.json`` (strict JSON: the map, the design's
    point CRB, seed, config, version). ``inputs``: ``{name: path}`` the outputs must not overwrite.
    Returns the JSON's dict plus ``files``."""
    import time as _time
    from pathlib import Path

    from irs_torch import __version__
    from irs_torch.outputs import check_output_path, dumps

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, js = out_dir / "mismatch.png", out_dir / "mismatch.json"
    for f in (png, js):
        check_output_path(f, inputs, "--out")
    t0 = _time.perf_counter()
    if solution is not None:
        solution.check_compatible(scenario, source="solution")
        R, psi, design = solution.R_s, solution.psi, {"source": "solution", "method": solution.method}
    else:
        from irs_torch.solvers import SolverOptions, solve

        options = options or SolverOptions()
        res = solve(scenario, "ao", None, options)
        R, psi = res.R_s, res.psi
        design = {"source": "solve", "method": "ao", "status": res.status, "success": bool(res.success),
                  "options": options.to_dict()}
    t_design = _time.perf_counter() - t0
    m = mismatch_map(scenario, R, psi, extent=extent, n=n)
    z = m.at_zero()
    mx = m.max_crb
    fin = torch.isfinite(mx)
    summary = {"point_max_crb": float(m.point_crb.max()),
               "max_crb_at_zero_error": float(mx[z]) if z else None,
               "worst_max_crb_on_grid": float(mx[fin].max()) if fin.any() else None,
               "best_max_crb_on_grid": float(mx[fin].min()) if fin.any() else None,
               "invalid_points": int((~fin).sum())}
    rings = {}
    r = torch.sqrt(m.dx[:, None] ** 2 + m.dy[None, :] ** 2)
    for rad in (0.5, 1.0, 2.0, 4.0):  # worst max-CRB within a radius: how fast the design degrades
        sel = fin & (r <= rad + 1e-12)
        if sel.any() and rad <= float(r.max()):
            rings[f"{rad:g}"] = float(mx[sel].max())
    summary["worst_max_crb_within_radius_m"] = rings
    plot_mismatch(m, png, per_irs=per_irs)
    out = {"format": "irs-torch/mismatch", "version": __version__, "seed": getattr(options, "seed", None)
           if solution is None else None, "scenario_seed": scenario.seed, "scenario_preset": scenario.preset,
           "config": {"extent_m": list(extent) if not isinstance(extent, (int, float)) else [extent, extent],
                      "n": list(n) if not isinstance(n, int) else [n, n], "per_irs": per_irs, **(config or {})},
           "design": design, "units": {"crb": "tr(F^-1): rad^2 for the angles plus the |beta|^2-unit CRB of beta "
                                              "(the paper's objective)", "crb_theta_rad2": "rad^2", "dx_m": "m"},
           "summary": summary, "map": m.to_dict(), "times": {"design": t_design, "total": _time.perf_counter() - t0}}
    from irs_torch.outputs import atomic_write_text
    atomic_write_text(js, dumps(out, indent=1) + "\n")
    out["files"] = [str(png), str(js)]
    return out

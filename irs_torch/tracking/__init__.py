"""Tracking a moving target: the closed design -> sense -> estimate -> localise -> track loop.

- :mod:`.trajectory`: true trajectories (constant velocity, waypoints) and the default line;
- :mod:`.filter`: the gated constant-velocity Kalman filter (Stone Soup) and NEES bounds;
- :mod:`.measurement`: Stansfield fix in the target's plane and its covariance (2-D position CRB);
- :mod:`.policies`: design policies (oracle, ao, learned, learned-net, robust, isotropic);
- :mod:`.loop`: :func:`run_tracking` (resumable per-block JSON-lines records);
- :mod:`.report`: summaries, CSV, plots; :func:`track` runs and reports in one call.
"""
from __future__ import annotations

from irs_torch.tracking.defaults import POLICIES, SCENARIO_PRESETS  # noqa: F401  (imports nothing)

# Lazy names (PEP 562): importing the package (the command line does) imports neither numpy nor torch.
_LAZY = {"Trajectory": "irs_torch.tracking.trajectory", "default_trajectory": "irs_torch.tracking.trajectory",
         "parse_waypoints": "irs_torch.tracking.trajectory", "parse_policies": "irs_torch.tracking.policies",
         "TrackConfig": "irs_torch.tracking.loop", "run_tracking": "irs_torch.tracking.loop",
         "TrackFilter": "irs_torch.tracking.filter"}


def __getattr__(name):
    from irs_torch.lazy import lazy_attribute

    return lazy_attribute(globals(), _LAZY, name, "irs_torch.tracking")


def load_scenario(spec: str | None, seed: int = 0):
    """A tracking scenario from a preset name or a scenario ``.npz`` file.

    ``paper`` (default): the paper's Section V scenario (M = 16, 4 x 4 IRS elements, L = 2) at the
    budgets the shipped network was trained at (P_t 20 W, P_s 0.1 W, a_max 8), channels from
    ``seed``; ``tiny``: the same geometry with M = 4 and 2 x 2 elements (for smoke tests; no
    shipped network). Returns ``(scenario, name)``.
    """
    from pathlib import Path

    from irs_torch.errors import InputError
    from irs_torch.scenario import load_scenario, paper_scenario

    spec = spec or "paper"
    if spec == "paper":
        return paper_scenario(seed=seed, P_t=20.0, P_s=0.1, a_max=8.0), "paper"
    if spec == "tiny":
        return paper_scenario(seed=seed, M=4, N_h=2, N_v=2, P_t=20.0, P_s=0.1, a_max=8.0).replace(preset="tiny"), "tiny"
    p = Path(spec)
    if not p.exists():
        raise InputError(f"--scenario {spec!r} is neither a preset ({', '.join(SCENARIO_PRESETS)}) nor an "
                         f"existing file")
    s = load_scenario(p)
    if s.batch_shape:
        raise InputError(f"--scenario {spec}: a batched scenario file (batch shape {tuple(s.batch_shape)}); "
                         f"tracking takes one scenario")
    if s.irs_pos is None or s.target_pos is None:
        raise InputError(f"--scenario {spec}: the file has no geometry (irs_pos, target_pos); tracking needs it")
    return s, str(p)


def track(cfg, out, plots: bool = True, progress: bool = False, log=None) -> dict:
    """Run (or resume) :func:`~irs_torch.tracking.loop.run_tracking` and write the report, holding the
    lock of ``out`` (:class:`irs_torch.outputs.DirLock`: a second run into the same folder is refused).

    Returns the JSON summary: ``policy`` (the comma list), ``steps``, ``seed``, ``config``,
    ``version``, ``results`` ({policy: summary}), ``comparison``, ``files``, ``resumed_blocks``,
    and, for ONE policy, its summary's keys at the top level as well (``position_rmse`` [m],
    ``peb_rms`` [m], ``design_seconds_median`` [s], ``lost_tracks``, ...); with several policies
    those top-level keys hold ``{policy: value}`` objects.
    """
    from irs_torch import __version__
    from irs_torch.outputs import DirLock
    from irs_torch.tracking.loop import run_tracking
    from irs_torch.tracking.report import comparison, summarise, write_outputs

    with DirLock(out, "--out"):  # two runs never append to one steps.jsonl
        res = run_tracking(cfg, out, progress=progress, log=log)
        sums = {p: summarise(res["records"], p, cfg.steps, res["setup_seconds"].get(p)) for p in cfg.policies}
        config = cfg.to_dict()
        files = write_outputs(res, sums, config, cfg.scenario, out, plots=plots)
    outj = {"policy": ",".join(cfg.policies), "steps": int(cfg.steps), "trajectories": int(cfg.trajectories),
            "seed": int(cfg.seed), "version": __version__, "config": config, "results": sums,
            "comparison": comparison(sums), "resumed_blocks": res["resumed"], "dropped_lines": res["dropped_lines"],
            "records": res["records_path"], "files": files}
    keys = ("position_rmse", "peb_rms", "rmse_over_peb", "design_seconds_median", "fix_rmse", "lost_tracks",
            "lost_track_events")
    if len(cfg.policies) == 1:
        s = sums[cfg.policies[0]]
        outj.update({k: s[k] for k in keys if k in s})
    else:
        outj.update({k: {p: sums[p].get(k) for p in cfg.policies} for k in keys})
    return outj


__all__ = ["Trajectory", "default_trajectory", "parse_waypoints", "POLICIES", "parse_policies", "load_scenario",
           "track", "SCENARIO_PRESETS", "TrackConfig", "run_tracking", "TrackFilter"]

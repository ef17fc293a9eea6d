"""The closed design -> sense -> estimate -> localise -> track loop.

For Monte Carlo trajectory m and block t = 0 .. steps-1, and for every policy on the SAME draws:

1. predict: the filter's predicted position (block 0: the prior) -> the design position; if that
   position is not a valid target position for the scenario (behind / on top of an IRS), the
   nearest valid point on the segment towards the last design position is used (``design_clipped``);
2. design (R_s, psi) with the policy (:mod:`.policies`) for the scenario moved to the design position
   (:func:`irs_torch.design.mismatch.move_target`: same BS, IRSs, G; new angles and beta); wall time of the
   design call alone, on one torch thread;
3. simulate one block's echo with :func:`irs_torch.estimation.simulate_echoes` at the TRUE position;
   a block's dwell is ``frames`` frames of the scenario's T_c symbols (the same design throughout),
   simulated as one echo of ``frames * T_c`` symbols;
   its noise and waveform draws come from a seed fixed by (seed, m, t) only, so the noise of block t
   is identical for every policy (common random numbers); AO randomness is seeded by a separate
   design seed of (seed, m, t);
4. ML angles per IRS (:func:`irs_torch.estimation.estimate_directions`, ``method="ml"``);
5. Stansfield fix in the target's plane with the CRB angle variances as weights, measurement
   covariance R = the 2-D position CRB of the design at the design position
   (:mod:`.measurement`), and a gated Kalman update (:class:`.filter.TrackFilter`).

Dwell. The paper's T_c = 100 symbols is one frame; a tracker's block (0.1 s) holds many. The design
does not depend on the dwell: the FIM is linear in the number of symbols, so every design's CRB
scales by ``1 / frames`` and the constraints (BS power, IRS power C1, a_max) do not involve T_c; the
designs are therefore made for the scenario at its own T_c (where the network was trained), and
the sensing, the estimator, R and the PEB use ``T_c * frames``. Default ``frames`` =
:data:`FRAMES` (10^4 symbols per block: 1 ms at 10 Msymbol/s, a small part of a 0.1 s block). With
``frames=1`` (the paper's dwell) the single-block 2-D PEB of the oracle design is 2-4 m on the
default line and ML is in its threshold region (outliers), so every policy but the oracle loses
the target: the tracker's prediction errors then exceed the reflected beams' width.

A fix that is not a possible target position (non-finite: parallel bearings; behind or on top of an
IRS) is not used and counts as a gate miss. Lost track: ``gate_misses`` consecutive measurements
outside the 99.9% NIS gate, or the filter's error above ``lost_distance`` m (the simulation knows
the truth; this stands for an external re-acquisition and keeps one diverged track from dominating
the RMSE). Either records an event and re-initialises the filter from the latest valid Stansfield
fix (its R as position covariance, zero velocity with the prior's velocity std).

Records and resume. Every finished (policy, m, t) appends one JSON line to ``steps.jsonl`` in the
output directory, with the filter state after the block. A run restarted with the same arguments
reads the file, drops lines that do not parse (a line cut by a kill) and duplicates, restores each
(policy, m)'s filter from its last record and continues; with the per-block seeds the continued
run gives the same records as an uninterrupted one (except wall times). Each record carries a key
(a hash of the scenario, trajectory, seed, filter and estimator settings, and the policy's own
settings); records of another key in the same directory are an error (use another ``out``).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from irs_torch.errors import InputError
from irs_torch.outputs import dumps
from irs_torch.tracking.filter import TrackFilter
from irs_torch.tracking.measurement import angle_variances, peb_2d, position_covariance, stansfield_in_plane
from irs_torch.tracking.policies import POLICIES, make_policy
from irs_torch.tracking.trajectory import Trajectory

RECORDS = "steps.jsonl"
from irs_torch.tracking.defaults import (  # noqa: E402,F401
    FRAMES,
    GATE_MISSES,
    GATE_PROBABILITY,
    LOST_DISTANCE,
    PRIOR_POSITION_STD,
    PRIOR_VELOCITY_STD,
    PROCESS_NOISE,
)


@dataclass
class TrackConfig:
    """Settings of a tracking run (see the module docstring; units SI).

    scenario: an unbatched Scenario with geometry; scenario_name: its preset name or file path (for
    the records); trajectory: the truth; steps: blocks per trajectory (>= 1); trajectories: Monte
    Carlo trajectories (same truth, independent noise and prior draws); policies: names from
    :data:`~irs_torch.tracking.policies.POLICIES`; seed: every random draw derives from it.
    """

    scenario: object
    trajectory: Trajectory
    steps: int
    policies: list
    seed: int = 0
    trajectories: int = 1
    scenario_name: str = "paper"
    process_noise: float = PROCESS_NOISE
    gate_probability: float = GATE_PROBABILITY
    gate_misses: int = GATE_MISSES
    lost_distance: float = LOST_DISTANCE
    prior_position_std: float = PRIOR_POSITION_STD
    prior_velocity_std: float = PRIOR_VELOCITY_STD
    checkpoint: str | None = None
    robust_points: int = 9
    frames: int = FRAMES
    policy_options: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("steps", "trajectories", "frames"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not self.policies:
            raise InputError("policies must name at least one policy")
        for p in self.policies:
            if p not in POLICIES:
                raise InputError(f"policy: unknown policy {p!r}; choose from {', '.join(POLICIES)}")
        for name in ("lost_distance", "prior_position_std", "prior_velocity_std"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.process_noise, (int, float)) and math.isfinite(self.process_noise)
                and self.process_noise >= 0):
            raise InputError(f"process_noise must be a finite number >= 0, got {self.process_noise!r}")
        if not 0 < self.gate_probability < 1:
            raise InputError(f"gate_probability must be in (0, 1), got {self.gate_probability!r}")
        s = self.scenario
        if s.batch_shape:
            raise InputError(f"scenario must be a single scenario, got a batch of shape {tuple(s.batch_shape)}")
        if s.irs_pos is None or s.target_pos is None:
            raise InputError("scenario must carry its geometry (irs_pos, target_pos) for tracking")

    # -------------------------------------------------------------- identity
    def scenario_fingerprint(self) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.scenario.to_dict().items()):
            if k == "version":
                continue
            a = np.asarray(v)
            h.update(k.encode())
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes() if a.dtype.kind != "U" else str(a).encode())
        return h.hexdigest()

    def common(self) -> dict:
        """Everything that determines the records of every policy (JSON)."""
        from irs_torch import __version__

        return {"scenario": self.scenario_name, "scenario_sha256": self.scenario_fingerprint(),
                "trajectory": self.trajectory.to_dict(), "seed": int(self.seed),
                "process_noise": self.process_noise, "gate_probability": self.gate_probability,
                "gate_misses": self.gate_misses, "lost_distance": self.lost_distance,
                "prior_position_std": self.prior_position_std, "prior_velocity_std": self.prior_velocity_std,
                "frames": int(self.frames), "estimator": "ml", "localisation": "stansfield-in-plane",
                "filter": "stonesoup-kalman-cv",
                "version": __version__}

    def policy_settings(self, policy: str) -> dict:
        if policy in ("learned", "learned-net"):
            return {"checkpoint": self.checkpoint}
        if policy == "robust":
            return {"robust_points": self.robust_points}
        return {}

    def key(self, policy: str) -> str:
        d = {"common": self.common(), "policy": policy, "settings": self.policy_settings(policy)}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def run_id(self) -> str:
        """Short hash of :meth:`common` (the default output directory's name)."""
        return hashlib.sha256(json.dumps(self.common(), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {**self.common(), "steps": int(self.steps), "trajectories": int(self.trajectories),
                "policies": list(self.policies), "checkpoint": self.checkpoint,
                "robust_points": self.robust_points}


def block_seed(seed: int, stream: int, m: int, t: int) -> int:
    """A 31-bit seed for (run seed, stream, trajectory m, block t); stream 1: echoes, 2: design,
    3: the prior of trajectory m (t = 0). 31 bits: the solvers add offsets to their seed."""
    return int(np.random.SeedSequence([int(seed), int(stream), int(m), int(t)]).generate_state(1, np.uint32)[0]
               >> np.uint32(1))


def prior(cfg: TrackConfig, m: int, truth0: np.ndarray, v0: np.ndarray):
    """The filter's prior for trajectory m: mean = truth + N(0, prior_position_std^2) position,
    zero velocity; covariance diag(sp^2, sv^2, sp^2, sv^2). Seeded by (seed, 3, m)."""
    rng = np.random.default_rng(block_seed(cfg.seed, 3, m, 0))
    p = truth0[:2] + cfg.prior_position_std * rng.standard_normal(2)
    mean = np.array([p[0], 0.0, p[1], 0.0])
    sp2, sv2 = cfg.prior_position_std ** 2, cfg.prior_velocity_std ** 2
    return mean, np.diag([sp2, sv2, sp2, sv2])


# ------------------------------------------------------------------------------ records
def read_records(path: Path) -> tuple[list[dict], int]:
    """Parse ``steps.jsonl``: (records, lines dropped). Unparsable lines (a cut last line) and
    duplicates of (key, policy, m, t) are dropped, the first occurrence kept."""
    recs, seen, dropped = [], set(), 0
    if not path.exists():
        return recs, 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                dropped += 1  # cut by a kill mid-write
                continue
            try:
                r = json.loads(line)
                k = (r["key"], r["policy"], int(r["m"]), int(r["t"]))
            except (ValueError, KeyError, TypeError):
                dropped += 1
                continue
            if k in seen:
                dropped += 1
                continue
            seen.add(k)
            recs.append(r)
    return recs, dropped


def _rewrite(path: Path, recs: list[dict]) -> None:
    from irs_torch.outputs import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as fh:
        for r in recs:
            fh.write(dumps(r) + "\n")


def _valid_design_position(base, xy, z0, fallback_xy):
    """move_target at (xy, z0), or at the farthest valid point on the segment fallback -> xy."""
    from irs_torch.design.mismatch import move_target

    try:
        return move_target(base, [float(xy[0]), float(xy[1]), z0]), np.asarray(xy, dtype=float), False
    except InputError:
        pass
    lo, hi = 0.0, 1.0  # fraction of the way from fallback to xy; lo is valid
    fb = np.asarray(fallback_xy, dtype=float)
    d = np.asarray(xy, dtype=float) - fb
    if not np.isfinite(d).all():
        d = np.zeros(2)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        p = fb + mid * d
        try:
            move_target(base, [p[0], p[1], z0])
            lo = mid
        except InputError:
            hi = mid
    p = fb + lo * d
    return move_target(base, [p[0], p[1], z0]), p, True


def _valid_position(base, xy, z0) -> bool:
    """Whether (xy, z0) is a possible target position (in front of every IRS, off its surface)."""
    from irs_torch.design.mismatch import move_target

    try:
        move_target(base, [float(xy[0]), float(xy[1]), z0])
        return True
    except InputError:
        return False


class _Track:
    """State of one (policy, m) sequence."""

    def __init__(self, cfg: TrackConfig, m: int, truth: np.ndarray, vel: np.ndarray):
        self.filter = TrackFilter(cfg.trajectory.dt, cfg.process_noise, cfg.gate_probability, cfg.gate_misses)
        mean, cov = prior(cfg, m, truth[0], vel[0])
        self.filter.initialise(mean, cov, 0)
        self.last_design = np.asarray(cfg.scenario.target_pos, dtype=float)[:2]
        self.last_fix = None  # (xy, R) of the latest valid Stansfield fix
        self.next_t = 0

    def restore(self, rec: dict):
        self.filter.initialise(rec["state_mean"], rec["state_cov"], rec["t"])
        self.filter.misses = int(rec["misses"])
        self.last_design = np.asarray(rec["design_pos"], dtype=float)
        lf = rec.get("last_fix")
        self.last_fix = None if lf is None else (np.asarray(lf[0], dtype=float), np.asarray(lf[1], dtype=float))
        self.next_t = int(rec["t"]) + 1


def _finite(a) -> bool:
    return bool(np.isfinite(np.asarray(a, dtype=float)).all())


def run_block(cfg: TrackConfig, policy, track: _Track, m: int, t: int, truth: np.ndarray) -> dict:
    """One block of one policy (module docstring, steps 1-5); returns its record (without key)."""
    from irs_torch.design.mismatch import move_target
    from irs_torch.estimation import estimate_directions, simulate_echoes

    base = cfg.scenario
    z0 = float(truth[t, 2])
    f = track.filter
    if t > 0:
        f.predict(t)
    pred_xy, pred_cov = f.position(), f.position_covar()
    scn_pred, design_xy, clipped = _valid_design_position(base, pred_xy, z0, track.last_design)
    track.last_design = design_xy
    scn_true = move_target(base, truth[t])
    dseed, eseed = block_seed(cfg.seed, 2, m, t), block_seed(cfg.seed, 1, m, t)
    R, psi, info = policy.design(scn_pred, scn_true, design_xy, pred_cov, dseed)
    R, psi = R.to(base.G.dtype), psi.to(base.G.dtype)
    # sense at the truth with the block's dwell, estimate, localise
    if cfg.frames != 1:
        T_c = float(base.T_c) * int(cfg.frames)
        scn_true, scn_pred = scn_true.replace(T_c=T_c), scn_pred.replace(T_c=T_c)
    echoes = simulate_echoes(scn_true, R, psi, trials=1, seed=eseed)
    est = estimate_directions(scn_true, psi, echoes, method="ml")
    vt, vp = angle_variances(scn_pred, R, psi)
    yaw = base.irs_yaw if base.irs_yaw is not None else torch.zeros(base.L, dtype=torch.float64)
    theta, phi = est["theta"][0].numpy(), est["phi"][0].numpy()
    if _finite(vt) and _finite(vp):
        fix = stansfield_in_plane(base.irs_pos, yaw, theta, phi, z0, vt, vp)
    else:
        fix = stansfield_in_plane(base.irs_pos, yaw, theta, phi, z0)
    Rm = position_covariance(scn_pred, R, psi)
    fix_valid = _finite(fix) and _finite(Rm) and _valid_position(base, fix, z0)
    if fix_valid:
        upd = f.update(fix, Rm)
        track.last_fix = (np.asarray(fix, dtype=float), np.asarray(Rm, dtype=float))
    else:  # no usable fix (parallel bearings, behind / on an IRS): counted as a gate miss
        upd = f.update(np.full(2, np.nan), Rm)
    est_xy = f.position()
    err = float(np.linalg.norm(est_xy - truth[t, :2]))
    fix_err = float(np.linalg.norm(fix - truth[t, :2])) if _finite(fix) else float("inf")
    lost_reason = None
    if upd["lost"]:
        lost_reason = f"{cfg.gate_misses} consecutive NIS > gate"
    elif err > cfg.lost_distance:
        lost_reason = f"error > {cfg.lost_distance:g} m"
    if lost_reason is not None and track.last_fix is not None:  # restart from the latest valid fix
        f.reinitialise(track.last_fix[0], track.last_fix[1], t, cfg.prior_velocity_std)
    with torch.no_grad():
        crb_true = float(scn_true.max_crb(R, psi))
    return {
        "policy": policy.name, "m": int(m), "t": int(t),
        "truth": truth[t, :2].tolist(), "pred": pred_xy.tolist(), "pred_cov": pred_cov.tolist(),
        "design_pos": design_xy.tolist(), "design_clipped": bool(clipped),
        "theta_hat": theta.tolist(), "phi_hat": phi.tolist(), "theta_true": scn_true.theta.tolist(),
        "phi_true": scn_true.phi.tolist(),
        "fix": fix.tolist(), "fix_valid": bool(fix_valid), "R": Rm.tolist(), "nis": upd["nis"],
        "accepted": upd["accepted"],
        "estimate": est_xy.tolist(), "error": err, "fix_error": fix_err,
        "lost": lost_reason is not None, "lost_reason": lost_reason,
        "peb": peb_2d(scn_true, R, psi), "max_crb_true": crb_true,
        "design_seconds": float(info.get("seconds", float("nan"))), "design_status": info.get("status", ""),
        "design_success": bool(info.get("success", True)),
        "state_mean": f.mean.tolist(), "state_cov": f.covar.tolist(), "misses": int(f.misses),
        "echo_seed": eseed, "design_seed": dseed,
        "last_fix": None if track.last_fix is None else [track.last_fix[0].tolist(), track.last_fix[1].tolist()],
    }


def run_tracking(cfg: TrackConfig, out, progress: bool = False, log=None) -> dict:
    """Run (or resume) the loop for every policy and trajectory of ``cfg``; records in
    ``out/steps.jsonl``. Returns ``{"records": [...], "setup_seconds": {policy: s}, "resumed": n,
    "dropped_lines": n, "records_path": str}`` (records of this configuration only, sorted by
    policy order, m, t)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORDS
    recs, dropped = read_records(path)
    keys = {p: cfg.key(p) for p in POLICIES}
    foreign = [r for r in recs if r["key"] != keys.get(r["policy"])]
    if foreign:
        raise InputError(f"--out {out} holds {len(foreign)} records of another run configuration (key "
                         f"{foreign[0]['key']}, policy {foreign[0]['policy']}); use another --out directory")
    if dropped:
        _rewrite(path, recs)  # drop a cut last line / duplicates before appending
    done = {(r["policy"], int(r["m"]), int(r["t"])): r for r in recs}
    truth = cfg.trajectory.positions(cfg.steps)
    vel = cfg.trajectory.velocities(cfg.steps)
    for t in range(cfg.steps):  # every true position must be a valid target position
        from irs_torch.design.mismatch import move_target

        try:
            move_target(cfg.scenario, truth[t])
        except InputError as e:
            raise InputError(f"trajectory: the target at block {t} {truth[t, :2].round(3).tolist()} is not a valid "
                             f"position for this scenario ({e}); use fewer --steps, a lower --speed or other "
                             f"--waypoints") from None
    tracks, todo, stale = {}, 0, []
    for p in cfg.policies:
        for m in range(cfg.trajectories):
            k = 0  # resume after the contiguous prefix of finished blocks
            while (p, m, k) in done:
                k += 1
            stale += [key for key in done if key[0] == p and key[1] == m and key[2] > k]
            tr = _Track(cfg, m, truth, vel)
            if k > 0:
                tr.restore(done[(p, m, k - 1)])
            tracks[(p, m)] = tr
            todo += max(cfg.steps - k, 0)
    if stale:  # records after a gap (never written by this loop, but possible by hand): recomputed
        for key in stale:
            del done[key]
        recs = [r for r in recs if (r["policy"], int(r["m"]), int(r["t"])) in done]
        _rewrite(path, recs)
    resumed = sum(1 for (p, m, t) in done if p in cfg.policies and m < cfg.trajectories and t < cfg.steps)
    policies, setup = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bar = None
    try:
        if todo:
            for p in cfg.policies:
                t0 = time.perf_counter()
                policies[p] = make_policy(p, cfg.scenario, checkpoint=cfg.checkpoint, robust_points=cfg.robust_points,
                                          **cfg.policy_options)
                setup[p] = time.perf_counter() - t0
        if progress and todo:
            from irs_torch.outputs import progress_bar

            bar = progress_bar(total=todo, desc="track", unit="step", leave=False)
        with open(path, "a", encoding="utf-8") as fh:
            for m in range(cfg.trajectories):
                for t in range(cfg.steps):
                    for p in cfg.policies:
                        tr = tracks[(p, m)]
                        if t < tr.next_t:
                            continue
                        rec = {"key": keys[p], **run_block(cfg, policies[p], tr, m, t, truth)}
                        tr.next_t = t + 1
                        fh.write(dumps(rec) + "\n")
                        fh.flush()
                        done[(p, m, t)] = json.loads(dumps(rec))
                        if bar is not None:
                            bar.update(1)
                        if log is not None and rec["lost"]:
                            log(f"{p} trajectory {m} block {t}: lost track ({rec['lost_reason']}), "
                                f"re-initialised from the latest valid Stansfield fix")
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    order = {p: i for i, p in enumerate(cfg.policies)}
    mine = [r for (p, m, t), r in done.items() if p in order and m < cfg.trajectories and t < cfg.steps]
    mine.sort(key=lambda r: (order[r["policy"]], r["m"], r["t"]))
    return {"records": mine, "setup_seconds": setup, "resumed": resumed, "dropped_lines": dropped,
            "records_path": str(path)}

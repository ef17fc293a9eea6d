"""``irs-torch track``: the closed design -> sense -> estimate -> localise -> track loop."""
from __future__ import annotations

import argparse
import math
import sys

from irs_torch.commands import positive_int_arg, seed_arg


def _pair(name):
    def parse(text):
        parts = text.split(",")
        try:
            vals = [float(x) for x in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be 'x,y' (two numbers), got {text!r}") from None
        if len(vals) != 2 or not all(math.isfinite(v) for v in vals):
            raise argparse.ArgumentTypeError(f"{name} must be two finite numbers 'x,y', got {text!r}")
        return vals
    return parse


def _positive_float(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number > 0, got {text!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number > 0, got {text!r}")
        return v
    return parse


def register(sub):
    from irs_torch.limits import MAX_STEPS, MAX_TRAJECTORIES
    from irs_torch.tracking.defaults import DEFAULT_DT, DEFAULT_SPEED, FRAMES, LOST_DISTANCE, PROCESS_NOISE

    p = sub.add_parser(
        "track", help="track a moving target: design, sense, estimate, localise, filter, per block",
        description="Move a target along a trajectory and, every block, design (R_s, psi) from the "
                    "tracker's predicted position with each policy, simulate the echoes at the true "
                    "position, estimate the angles by ML, localise by Stansfield and update a Kalman "
                    "filter (Stone Soup). Policies share the echo noise of every block. Writes per-block "
                    "records (steps.jsonl, steps.csv), summary.json and plots into --out; a killed run "
                    "restarted with the same arguments continues where it stopped.")
    p.add_argument("--scenario", default="paper",
                   help="scenario .npz file or preset: paper (default; M=16, 4x4 elements, L=2, P_t 20 W, "
                        "P_s 0.1 W, a_max 8) or tiny (M=4, 2x2 elements)")
    p.add_argument("--scenario-seed", type=seed_arg, default=0, help="preset's channel seed (default 0)")
    p.add_argument("--steps", type=positive_int_arg("--steps", MAX_STEPS), required=True,
                   help=f"blocks per trajectory (at most {MAX_STEPS})")
    p.add_argument("--policy", default="ao",
                   help="oracle, ao, learned, learned-net, robust, isotropic, a comma list, or all (default ao)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the noise, prior and design draws (default 0)")
    p.add_argument("--trajectories", type=positive_int_arg("--trajectories", MAX_TRAJECTORIES), default=1,
                   help="Monte Carlo runs of the trajectory (independent noise and prior; default 1)")
    p.add_argument("--waypoints", help="'x1,y1;x2,y2;...' [m]: follow these at --speed (default: a straight line "
                                       "through the scenario's target position)")
    p.add_argument("--start", type=_pair("--start"), help="constant velocity: start 'x,y' [m] (with --velocity)")
    p.add_argument("--velocity", type=_pair("--velocity"), help="constant velocity: 'vx,vy' [m/s] (with --start)")
    p.add_argument("--speed", type=_positive_float("--speed"), default=DEFAULT_SPEED,
                   help=f"speed of the default line and of --waypoints [m/s] (default {DEFAULT_SPEED:g})")
    p.add_argument("--dt", type=_positive_float("--dt"), default=DEFAULT_DT,
                   help=f"block duration [s] (default {DEFAULT_DT:g})")
    p.add_argument("--frames", type=positive_int_arg("--frames"), default=FRAMES,
                   help=f"sensing frames of T_c symbols per block (default {FRAMES}; 1 is the paper's dwell)")
    p.add_argument("--process-noise", type=float, default=PROCESS_NOISE,
                   help=f"filter's white-noise acceleration density [m^2/s^3] (default {PROCESS_NOISE:g})")
    p.add_argument("--lost-distance", type=_positive_float("--lost-distance"), default=LOST_DISTANCE,
                   help=f"track error [m] counted as a lost track (default {LOST_DISTANCE:g})")
    p.add_argument("--checkpoint", help="learned policies: model file (default: the shipped one for the sizes)")
    p.add_argument("--out", help="output directory (default: track-runs/<hash of the settings>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from irs_torch.errors import InputError
    from irs_torch.outputs import check_output_dir, dumps
    from irs_torch.tracking import load_scenario, track
    from irs_torch.tracking.loop import TrackConfig
    from irs_torch.tracking.policies import parse_policies
    from irs_torch.tracking.trajectory import Trajectory, default_trajectory, parse_waypoints

    policies = parse_policies(args.policy)
    if args.checkpoint and not any(p_.startswith("learned") for p_ in policies):  # it would be ignored
        raise InputError(f"--checkpoint is used by the learned policies only (learned, learned-net), got --policy "
                         f"{args.policy}")
    if not math.isfinite(args.process_noise) or args.process_noise < 0:
        raise InputError(f"--process-noise must be a finite number >= 0, got {args.process_noise!r}")
    if (args.start is None) != (args.velocity is None):
        raise InputError("--start and --velocity go together (a constant-velocity trajectory)")
    if args.waypoints is not None and args.start is not None:
        raise InputError("--waypoints and --start/--velocity are alternatives; give one")
    scenario, name = load_scenario(args.scenario, args.scenario_seed)
    z0 = float(scenario.target_pos[2])
    if args.waypoints is not None:
        traj = Trajectory.waypoints(parse_waypoints(args.waypoints), speed=args.speed, dt=args.dt, z=z0)
    elif args.start is not None:
        traj = Trajectory.constant_velocity(args.start, args.velocity, dt=args.dt, z=z0)
    else:
        traj = default_trajectory(scenario, speed=args.speed, dt=args.dt)
    cfg = TrackConfig(scenario=scenario, trajectory=traj, steps=args.steps, policies=policies, seed=args.seed,
                      trajectories=args.trajectories, scenario_name=name, process_noise=args.process_noise,
                      lost_distance=args.lost_distance, checkpoint=args.checkpoint, frames=args.frames)
    out = Path(args.out) if args.out else Path("track-runs") / cfg.run_id()
    check_output_dir(out, {"--scenario": args.scenario if Path(args.scenario).exists() else None,
                           "--checkpoint": args.checkpoint}, "--out")

    def log(msg):
        print(msg, file=sys.stderr)

    res = track(cfg, out, plots=not args.no_plots, progress=not args.no_progress and not args.json, log=log)
    if args.json:
        print(dumps(res, indent=1))
        return 0
    print(f"tracking {cfg.steps} block{'s' * (cfg.steps != 1)} x {cfg.trajectories} "
          f"trajector{'ies' if cfg.trajectories != 1 else 'y'}, seed {cfg.seed}, scenario {name}; "
          f"records in {res['records']}"
          + (f" ({res['resumed_blocks']} policy-block records resumed)" if res["resumed_blocks"] else ""))
    print(f"{'policy':12s} {'RMSE [m]':>9s} {'PEB [m]':>8s} {'RMSE/PEB':>9s} {'fix RMSE':>9s} "
          f"{'design s/blk':>12s} {'lost':>5s}")
    for p_, s in res["results"].items():
        print(f"{p_:12s} {s['position_rmse']:9.3f} {s['peb_rms']:8.3f} {s['rmse_over_peb']:9.2f} "
              f"{s['fix_rmse']:9.3f} {s['design_seconds_median']:12.4f} {s['lost_tracks']:5d}")
    for k, v in res["comparison"].items():
        print(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}")
    print("wrote " + ", ".join([res["files"]["records_csv"], res["files"]["summary"], *res["files"].get("plots", [])]))
    return 0

"""Default settings of the tracking loop (plain constants; imports nothing, so the command line can
show them without importing torch). Their reasons are in :mod:`.trajectory` and :mod:`.loop`."""

DEFAULT_SPEED = 3.0  # m/s: brisk walk / slow drone
DEFAULT_DT = 0.1  # s: 10 Hz revisit (one design + one sensing block per 0.1 s)
DEFAULT_CENTRE_BLOCK = 20  # the default line passes the scenario's target position at this block
DEFAULT_TILT = 0.25  # fraction of the IRS normal mixed into the default direction
LOST_DISTANCE = 5.0  # m: about one reflected-beam width at 10 m (4 x 4 IRS, ~0.5 rad)
PRIOR_POSITION_STD = 1.0  # m per axis
PRIOR_VELOCITY_STD = 3.0  # m/s per axis (the default speed)
PROCESS_NOISE = 1.0  # m^2/s^3 (white-noise acceleration spectral density per axis)
FRAMES = 100  # frames of T_c symbols per block (irs_torch.tracking.loop, "Dwell")
GATE_PROBABILITY = 0.999  # NIS gate (chi^2, 2 dof: 13.8)
GATE_MISSES = 3  # consecutive gated measurements that declare a lost track
SCENARIO_PRESETS = ("paper", "tiny")
POLICIES = ("oracle", "ao", "learned", "learned-net", "robust", "isotropic")

"""The distribution of a data set's instances: a config file, its validation, per-instance seeds.

A :class:`DatasetConfig` fixes everything that is the same for every instance of a data set
(array sizes M, N_h, N_v, the number of IRSs L, the channel and noise model, the solver settings,
the shard size) and the ranges the per-instance quantities are drawn from (BS, IRS and target
positions, IRS yaws, budgets P_t, P_s, a_max). It is read from YAML or JSON (:func:`load_config`)
with the same keys as :meth:`DatasetConfig.to_dict`; ``irs-torch dataset config`` writes a template.

Ranges: every ranged field is ``[low, high]`` (a number ``v`` means ``[v, v]``); positions in m,
yaws in degrees (``yaw_deg``), budgets in W (``P_t``, ``P_s``) and linear amplitude (``a_max``),
noise powers in dBm. Positions are drawn uniformly in their boxes, yaws uniformly, budgets
uniformly, or log-uniformly with ``budget_sampling: log-uniform``.

Rejection rule (documented in the manifest of every data set). A drawn geometry is *rejected*
and drawn again, from the same random stream, if

1. two nodes (the BS, any IRS, the target) are closer than ``min_separation`` m
   (overlapping or touching nodes; the far-field model is meaningless there), or
2. the target or the BS is not in front of some IRS: the cosine between the IRS normal
   ``(cos yaw, sin yaw, 0)`` and the unit direction from the IRS to the node is below
   ``min_front_cosine`` (target or BS behind the IRS, or grazing its plane, where it neither
   receives nor reflects).

After ``max_tries`` rejected draws the instance fails (recorded, not fatal). ``min_separation`` and
``min_front_cosine`` must be at least the limits :class:`irs_torch.Scenario` itself enforces
(0.5 m, 0.05), so every accepted draw is a valid Scenario.

Per-instance seeds. Instance ``i`` of a data set with seed ``s`` has the seed

    seed_i = int.from_bytes(SeedSequence(s, spawn_key=(i,)).generate_state(2, uint32), "little") & (2**63 - 1)

(numpy's ``np.random.SeedSequence``). ``seed_i`` alone determines the instance: the geometry and
budgets come from ``np.random.default_rng(seed_i)``, the channels and beta phase from
``torch.Generator().manual_seed(seed_i)`` (:func:`irs_torch.scenario.presets.from_geometry`) and the
solver's randomness from ``SolverOptions(seed=seed_i % 2**31)`` (the solver derives further seeds
arithmetically from its seed, e.g. ``seed * 1000 + iteration``, which must stay below 2**63). So any instance can be
regenerated alone
(:func:`irs_torch.data.instance.solve_instance`), in any order, on any worker.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irs_torch.physics.geometry import dbm_to_watt
from irs_torch.scenario.placement import MIN_FRONT_COSINE, MIN_SEPARATION_M, geometry_admissible

CONFIG_FORMAT = "irs-torch/dataset-config"

REJECTION_RULE = (
    "A geometry draw is rejected and redrawn (same random stream) if (1) two nodes among the BS, "
    "the IRSs and the target are closer than min_separation m, or (2) the target or the BS is not in "
    "front of some IRS: cosine between the IRS normal (cos yaw, sin yaw, 0) and the unit direction "
    "from the IRS to the node below min_front_cosine. After max_tries rejections the instance fails.")

SEED_RULE = ("seed_i = int.from_bytes(numpy.random.SeedSequence(dataset_seed, spawn_key=(i,))"
             ".generate_state(2, numpy.uint32).tobytes(), 'little') & (2**63 - 1); geometry and budgets "
             "from numpy.random.default_rng(seed_i), channels and beta phase from "
             "torch.Generator().manual_seed(seed_i), solver randomness from SolverOptions(seed=seed_i % 2**31)")


def instance_seed(dataset_seed: int, instance_id: int) -> int:
    """The seed of instance ``instance_id`` of a data set with seed ``dataset_seed`` (see module doc).

    A non-negative int < 2**63; distinct instances get independent streams (numpy SeedSequence).
    """
    if int(dataset_seed) < 0 or int(instance_id) < 0:
        raise ValueError(f"dataset_seed and instance_id must be >= 0, got {dataset_seed}, {instance_id}")
    st = np.random.SeedSequence(int(dataset_seed), spawn_key=(int(instance_id),)).generate_state(2, np.uint32)
    return int.from_bytes(st.astype("<u4").tobytes(), "little") & (2 ** 63 - 1)


def _range(name: str, v) -> tuple[float, float]:
    """``[low, high]`` (or a number) -> ``(low, high)`` floats, validated."""
    if isinstance(v, bool):
        raise ValueError(f"{name} must be a number or [low, high], got {v!r}")
    if isinstance(v, (int, float, np.integer, np.floating)):
        lo = hi = float(v)
    else:
        try:
            lo, hi = (float(x) for x in v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or [low, high], got {v!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {[lo, hi]}")
    if lo > hi:
        raise ValueError(f"{name} must have low <= high, got {[lo, hi]}")
    return (lo, hi)


@dataclass(frozen=True)
class NodeBox:
    """Ranges of one node's position (m) and, for an IRS, its yaw (degrees).

    ``x, y, z``: ``(low, high)`` in m; ``yaw_deg``: ``(low, high)`` in degrees (IRS only; the IRS
    normal is ``(cos yaw, sin yaw, 0)``, yaw 0 faces +x as in the paper).
    """

    x: tuple = (0.0, 0.0)
    y: tuple = (0.0, 0.0)
    z: tuple = (0.0, 0.0)
    yaw_deg: tuple = (0.0, 0.0)

    @classmethod
    def from_dict(cls, d, name: str) -> "NodeBox":
        if not isinstance(d, dict):
            raise ValueError(f"{name} must be a mapping with keys x, y, z, yaw_deg, got {d!r}")
        unknown = sorted(set(d) - {"x", "y", "z", "yaw_deg"})
        if unknown:
            raise ValueError(f"{name}: unknown key {unknown[0]!r} (known: x, y, z, yaw_deg)")
        return cls(**{k: _range(f"{name}.{k}", v) for k, v in d.items()})

    def to_dict(self, yaw: bool = True) -> dict:
        d = {k: list(getattr(self, k)) for k in ("x", "y", "z")}
        if yaw:
            d["yaw_deg"] = list(self.yaw_deg)
        return d

    def draw(self, rng: np.random.Generator):
        """One position (3,) [m] and yaw [rad]; always consumes 4 uniforms (fixed stream layout)."""
        u = rng.random(4)
        lo = np.array([self.x[0], self.y[0], self.z[0], self.yaw_deg[0]])
        hi = np.array([self.x[1], self.y[1], self.z[1], self.yaw_deg[1]])
        v = lo + (hi - lo) * u
        return v[:3], math.radians(v[3])


def irs_boxes(L: int = 2) -> tuple:
    """The position boxes of L IRSs around the paper's wall, as :class:`GeometryDistribution` draws them:
    IRS l at x = -5 +- 2 m, y = ``irs_rows(L)[l]`` +- 2 m (:func:`irs_torch.scenario.presets.irs_rows`;
    L = 2: 10 and 20 m), yaw +- 20 deg. Overlapping draws are rejected by the accept rule."""
    from irs_torch.scenario.presets import irs_rows

    return tuple(NodeBox(x=(-7.0, -3.0), y=(y - 2.0, y + 2.0), yaw_deg=(-20.0, 20.0)) for y in irs_rows(L))


def _paper_irs() -> tuple:
    # The GeometryDistribution defaults: IRS at (-5, 10/20, 0) +- 2 m, yaw +- 20 deg.
    return irs_boxes(2)


_SCALARS = {  # name: (type, check, message)
    "M": int, "N_h": int, "N_v": int, "seed": int, "shard_size": int, "max_tries": int,
    "d_h": float, "d_v": float, "d_bs": float, "wavelength": float, "min_separation": float,
    "min_front_cosine": float, "K_db": float, "C0_db": float, "alpha": float, "sigma_rcs": float,
    "sigma_r2_dbm": float, "sigma_b2_dbm": float, "T_c": float,
}


@dataclass(frozen=True)
class DatasetConfig:
    """Everything that defines a data set except its size (see the module docstring).

    Fixed per data set: ``M`` (BS antennas), ``N_h``, ``N_v`` (IRS elements), ``L = len(irs)``,
    ``d_h``, ``d_v``, ``d_bs`` (element spacings, wavelengths), ``wavelength`` (m), ``active``,
    ``K_db`` (Rician K of BS-IRS links, dB), ``C0_db`` (path loss at 1 m, dB), ``alpha`` (path-loss
    exponent), ``beta_model`` ("pathloss" or "radar"), ``sigma_rcs`` (m^2), ``sigma_r2_dbm``,
    ``sigma_b2_dbm`` (noise powers, dBm), ``T_c`` (symbols), ``solver`` (``method`` in
    {"ao", "transmit-only", "reflective-only", "passive"}, optional ``init`` and any
    :class:`irs_torch.solvers.SolverOptions` field except ``seed``, which is per instance),
    ``shard_size`` (instances per HDF5 shard), ``seed`` (the data set seed).
    Ranged per instance: ``bs``, ``irs[l]``, ``target`` (:class:`NodeBox`), ``P_t``, ``P_s`` (W),
    ``a_max`` (linear), drawn as ``budget_sampling`` ("uniform" or "log-uniform").
    Rejection rule: ``min_separation`` (m), ``min_front_cosine``, ``max_tries`` (module docstring).
    """

    seed: int = 0
    M: int = 16
    N_h: int = 4
    N_v: int = 4
    d_h: float = 0.5
    d_v: float = 0.5
    d_bs: float = 0.5
    wavelength: float = 0.1
    bs: NodeBox = NodeBox()
    irs: tuple = field(default_factory=_paper_irs)
    target: NodeBox = NodeBox(x=(2.0, 10.0), y=(8.0, 22.0))
    min_separation: float = 2.0
    min_front_cosine: float = 0.2
    max_tries: int = 1000
    P_t: tuple = (20.0, 20.0)
    P_s: tuple = (0.1, 0.1)
    a_max: tuple = (8.0, 8.0)
    budget_sampling: str = "uniform"
    active: bool = True
    K_db: float = 5.0
    C0_db: float = -30.0
    alpha: float = 2.2
    beta_model: str = "pathloss"
    sigma_rcs: float = 1.0
    sigma_r2_dbm: float = -80.0
    sigma_b2_dbm: float = -80.0
    T_c: float = 100.0
    solver: dict = field(default_factory=lambda: {"method": "ao"})
    shard_size: int = 64

    def __post_init__(self):
        for name, typ in _SCALARS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be a number, got {v!r}")
            if typ is int:
                if float(v) != int(v):
                    raise ValueError(f"{name} must be an integer, got {v!r}")
                v = int(v)
            else:
                v = float(v)
                if not math.isfinite(v):
                    raise ValueError(f"{name} must be finite, got {v!r}")
            object.__setattr__(self, name, v)
        for name in ("M", "N_h", "N_v", "shard_size", "max_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("d_h", "d_v", "d_bs", "wavelength", "sigma_rcs", "alpha"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_separation < MIN_SEPARATION_M:
            raise ValueError(f"min_separation must be >= {MIN_SEPARATION_M} m (the Scenario limit), "
                             f"got {self.min_separation}")
        if not MIN_FRONT_COSINE <= self.min_front_cosine < 1:
            raise ValueError(f"min_front_cosine must be in [{MIN_FRONT_COSINE}, 1), got {self.min_front_cosine}")
        irs = self.irs
        if isinstance(irs, (dict, NodeBox)) or not hasattr(irs, "__len__") or len(irs) < 1:
            raise ValueError(f"irs must be a non-empty list of IRS boxes (one per IRS), got {irs!r}")
        object.__setattr__(self, "irs", tuple(b if isinstance(b, NodeBox) else NodeBox.from_dict(b, f"irs[{i}]")
                                              for i, b in enumerate(irs)))
        for name in ("bs", "target"):
            b = getattr(self, name)
            if not isinstance(b, NodeBox):
                object.__setattr__(self, name, NodeBox.from_dict(b, name))
        from irs_torch.limits import check_scenario_sizes, check_shard_elements

        check_scenario_sizes(self.M, self.N_h, self.N_v, self.L)  # bounded before any instance is drawn
        check_shard_elements(self.shard_size, self.M, self.N, self.L, self.history_length)  # shards stay readable
        if abs(self.K_db) > 300:
            raise ValueError(f"K_db must be in [-300, 300] dB, got {self.K_db}")
        if self.T_c < self.L:
            raise ValueError(f"T_c must be >= L={self.L} symbols, got {self.T_c}")
        for name in ("P_t", "P_s", "a_max"):
            r = _range(name, getattr(self, name))
            if r[0] <= 0:
                raise ValueError(f"{name} must be > 0, got {list(r)}")
            object.__setattr__(self, name, r)
        if self.budget_sampling not in ("uniform", "log-uniform"):
            raise ValueError(f"budget_sampling must be 'uniform' or 'log-uniform', got {self.budget_sampling!r}")
        if not isinstance(self.active, bool):
            raise ValueError(f"active must be true or false, got {self.active!r}")
        if self.beta_model not in ("pathloss", "radar"):
            raise ValueError(f"beta_model must be 'pathloss' or 'radar', got {self.beta_model!r}")
        self._check_solver()

    def _check_solver(self):
        s = self.solver
        if not isinstance(s, dict):
            raise ValueError(f"solver must be a mapping (method, init, SolverOptions fields), got {s!r}")
        s = dict(s)
        s.setdefault("method", "ao")
        from irs_torch.solvers import METHODS, SolverOptions

        if s["method"] not in METHODS:
            raise ValueError(f"solver.method must be one of {METHODS}, got {s['method']!r}")
        if "seed" in s:
            raise ValueError(f"solver.seed must not be set (got {s['seed']!r}): the solver seed of each "
                             f"instance is its instance seed, derived from the data set seed")
        init = s.get("init")
        if init is not None and not (isinstance(init, dict) and set(init) <= {"kind"}):
            raise ValueError(f"solver.init must be null or {{kind: random|aligned}}, got {init!r}")
        known = {f.name for f in dataclasses.fields(SolverOptions)}
        opts = {k: v for k, v in s.items() if k not in ("method", "init")}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(f"solver.{unknown[0]} is not a solver option (known: method, init, "
                             f"{', '.join(sorted(known - {'seed'}))})")
        try:
            SolverOptions(**opts)
        except (TypeError, ValueError) as e:
            raise ValueError(f"solver: {e}") from None
        object.__setattr__(self, "solver", s)

    # ------------------------------------------------------------------ derived
    @property
    def L(self) -> int:
        return len(self.irs)

    @property
    def N(self) -> int:
        return self.N_h * self.N_v

    def solver_options(self, seed: int):
        """The :class:`irs_torch.solvers.SolverOptions` of an instance with seed ``seed`` (the solver
        seed is ``seed % 2**31``, see the module docstring)."""
        from irs_torch.solvers import SolverOptions

        # effort "legacy" unless the config sets one: labels stay those of the single-start AO the existing
        # data sets were made with (the solver's default effort differs; a resumed data set never mixes solvers)
        return SolverOptions(seed=int(seed) % 2 ** 31, **{"effort": "legacy", **{k: v for k, v in self.solver.items()
                                                                               if k not in ("method", "init")}})

    @property
    def history_length(self) -> int:
        """Length of the stored max-CRB history: the start plus ``max_iter`` iterations (NaN-padded)."""
        from irs_torch.solvers import SolverOptions

        return int(self.solver.get("max_iter", SolverOptions().max_iter)) + 1

    # ------------------------------------------------------------------ sampling
    def accept(self, bs_pos: np.ndarray, irs_pos: np.ndarray, irs_yaw: np.ndarray, target_pos: np.ndarray) -> bool:
        """The rejection rule (module docstring, :func:`irs_torch.scenario.sampling.geometry_admissible`)
        with this config's thresholds: True if the geometry is admissible.

        Shapes: bs_pos (3,), irs_pos (L, 3), irs_yaw (L,) [rad], target_pos (3,) [m].
        """
        return geometry_admissible(bs_pos, irs_pos, irs_yaw, target_pos, self.min_separation, self.min_front_cosine)

    def draw(self, rng: np.random.Generator) -> dict:
        """Geometry (rejection-sampled) and budgets from ``rng``.

        Returns ``bs_pos`` (3,), ``irs_pos`` (L, 3), ``irs_yaw`` (L,) rad, ``target_pos`` (3,) m,
        ``P_t``, ``P_s`` (W), ``a_max``, ``tries``. Raises RuntimeError after ``max_tries`` rejections.
        """
        for tries in range(1, self.max_tries + 1):
            bs, _ = self.bs.draw(rng)
            irs = [b.draw(rng) for b in self.irs]
            irs_pos = np.stack([p for p, _ in irs])
            irs_yaw = np.array([y for _, y in irs])
            tgt, _ = self.target.draw(rng)
            if self.accept(bs, irs_pos, irs_yaw, tgt):
                break
        else:
            raise RuntimeError(f"no admissible geometry in max_tries={self.max_tries} draws (rejection rule: "
                               f"min_separation={self.min_separation} m, min_front_cosine={self.min_front_cosine}); "
                               f"the position ranges are too tight or put nodes behind an IRS")
        out = {"bs_pos": bs, "irs_pos": irs_pos, "irs_yaw": irs_yaw, "target_pos": tgt, "tries": tries}
        u = rng.random(3)
        for name, ui in zip(("P_t", "P_s", "a_max"), u):
            lo, hi = getattr(self, name)
            if self.budget_sampling == "log-uniform":
                out[name] = float(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * ui))
            else:
                out[name] = float(lo + (hi - lo) * ui)
        return out

    def scenario(self, seed: int):
        """The (unbatched) :class:`irs_torch.Scenario` of the instance with seed ``seed``."""
        from irs_torch.scenario.presets import from_geometry

        g = self.draw(np.random.default_rng(int(seed)))
        return from_geometry(
            bs_pos=g["bs_pos"], irs_pos=g["irs_pos"], irs_yaw=g["irs_yaw"], target_pos=g["target_pos"],
            M=self.M, N_h=self.N_h, N_v=self.N_v, seed=int(seed), d_h=self.d_h, d_v=self.d_v, d_bs=self.d_bs,
            wavelength=self.wavelength, K_db=self.K_db, C0_db=self.C0_db, alpha=self.alpha,
            beta_model=self.beta_model, sigma_rcs=self.sigma_rcs, sigma_r2=dbm_to_watt(self.sigma_r2_dbm),
            sigma_b2=dbm_to_watt(self.sigma_b2_dbm), T_c=self.T_c, P_t=g["P_t"], P_s=g["P_s"],
            a_max=g["a_max"], active=self.active, preset="dataset")

    def instance_scenario(self, instance_id: int):
        """The Scenario of instance ``instance_id`` of this data set (seed from :func:`instance_seed`)."""
        return self.scenario(instance_seed(self.seed, instance_id))

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """Plain JSON/YAML values, keys as the config file (round-trips through :meth:`from_dict`)."""
        d: dict[str, Any] = {"format": CONFIG_FORMAT}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, NodeBox):
                v = v.to_dict(yaw=False)
            elif f.name == "irs":
                v = [b.to_dict() for b in v]
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = json.loads(json.dumps(v))
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "DatasetConfig":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: a data set config must be a mapping, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", CONFIG_FORMAT)
        if fmt != CONFIG_FORMAT:
            raise ValueError(f"{source}: format is {fmt!r}, expected {CONFIG_FORMAT!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        for k in ("bs", "target"):
            if k in d:
                d[k] = NodeBox.from_dict(d[k], k) if not isinstance(d[k], NodeBox) else d[k]
                if d[k].yaw_deg != (0.0, 0.0):
                    raise ValueError(f"{source}: {k}.yaw_deg is only meaningful for an IRS")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    def replace(self, **changes) -> "DatasetConfig":
        return dataclasses.replace(self, **changes)

    def canonical_json(self) -> str:
        """Sorted-key JSON of :meth:`to_dict` (what the shards and the manifest store)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def save(self, path) -> Path:
        """Write YAML (``.yaml``/``.yml``) or JSON (anything else)."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            from irs_torch.outputs import atomic_write_text
            atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None))
        else:
            from irs_torch.outputs import atomic_write_text
            atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _tiny() -> DatasetConfig:
    return DatasetConfig(M=4, N_h=2, N_v=2, shard_size=8,
                         solver={"method": "ao", "max_iter": 2, "p2_solver": "CLARABEL", "p3_steps": 20})


PRESETS = {
    "paper": DatasetConfig,
    "paper-budgets": lambda: DatasetConfig(P_t=(1.0, 40.0), P_s=(0.01, 1.0), a_max=(2.0, 8.0),
                                           budget_sampling="log-uniform"),
    "tiny": _tiny,
}
"""Built-in configs: ``paper`` (the default: random geometries around the paper's Section V
scenario with its budgets P_t = 20 W, P_s = 0.1 W, a_max = 8), ``paper-budgets`` (the same
geometries with log-uniform budgets over the paper's sweeps), ``tiny`` (M = 4, 2 x 2 IRSs, for
smoke tests: a 2-iteration AO with Clarabel for P2)."""


def load_config(source=None) -> DatasetConfig:
    """A :class:`DatasetConfig` from a YAML/JSON file, a preset name (:data:`PRESETS`), a dict, or
    None (the ``paper`` preset)."""
    if source is None:
        return DatasetConfig()
    if isinstance(source, DatasetConfig):
        return source
    if isinstance(source, dict):
        return DatasetConfig.from_dict(source)
    path = Path(source)
    if not path.exists() and str(source) in PRESETS:
        return PRESETS[str(source)]()
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path} (or use a preset: {', '.join(PRESETS)})")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            d = json.loads(text)
        else:
            import yaml

            d = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({e})") from None
    return DatasetConfig.from_dict(d if d is not None else {}, source=str(path))

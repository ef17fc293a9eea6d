"""Reading data sets: a torch Dataset over the shards, splits, batched Scenarios, statistics.

:class:`ShardDataset` indexes the shards listed in a data set's manifest (each is opened and
checked at construction: a corrupt or truncated shard raises an error naming the file) and reads
one instance per item. Items are dicts of torch tensors keyed as the shard datasets
(:mod:`irs_torch.data.shards`), without the leading K dimension, except ``status`` (a str).
``success`` is a bool tensor. :func:`scenario_from_batch` turns an item or a collated batch back
into a (batched) :class:`irs_torch.Scenario`.

Splits are deterministic functions of ``instance_id`` (:func:`split_of`), so they do not depend
on the shard size, on which instances failed, or on how large the data set has grown.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from irs_torch.data import shards as _sh

SPLITS = ("train", "val", "test")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of uint64 values (vectorised, wrap-around arithmetic)."""
    z = (np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_uniform(instance_id) -> np.ndarray:
    """``u = splitmix64(instance_id) / 2**64`` in [0, 1) (the top 53 bits), per id."""
    return (_splitmix64(instance_id) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_of(instance_id, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Split name per id: "train" if u < f_train, "val" if u < f_train + f_val, else "test"."""
    ft, fv, _ = _check_fractions(fractions)
    u = split_uniform(instance_id)
    return np.where(u < ft, "train", np.where(u < ft + fv, "val", "test"))


def _check_fractions(fractions):
    if isinstance(fractions, dict):
        fractions = tuple(fractions.get(k, 0.0) for k in SPLITS)
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be (train, val, test), got {fractions!r}") from None
    if len(f) != 3 or any(x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three numbers >= 0 summing to 1 (train, val, test), got {fractions!r}")
    return f


class ShardDataset(torch.utils.data.Dataset):
    """A torch Dataset over the shards of data set ``root``.

    split: None (all instances) or "train" / "val" / "test" by :func:`split_of` with ``fractions``.
    keys: the item keys to read (default all). require_success: drop instances whose solver did not
    report success. in_memory: read everything once at construction (fast random access for data
    sets that fit in RAM); otherwise each item is read from its shard (file handles are opened per
    process, so DataLoader workers are fine).

    Attributes: ``attrs`` (the first shard's attributes: M, N_h, N_v, L, d_h, d_v, active, ...),
    ``manifest``, ``instance_ids`` (int64 array, item order), ``complete`` (manifest flag).
    """

    def __init__(self, root, split: str | None = None, fractions=(0.8, 0.1, 0.1), keys=None,
                 require_success: bool = False, in_memory: bool = False):
        self.root = Path(root)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be None or one of {SPLITS}, got {split!r}")
        self.split = split
        self.fractions = _check_fractions(fractions)
        self.manifest = _sh.read_manifest(self.root)
        self.complete = bool(self.manifest.get("complete"))
        sizes = self.manifest["sizes"]
        specs = _sh.field_specs(sizes["L"], sizes["N"], sizes["M"], sizes["history_length"])
        if keys is None:
            keys = list(specs)
        unknown = [k for k in keys if k not in specs]
        if unknown:
            raise ValueError(f"keys: unknown field {unknown[0]!r} (known: {', '.join(specs)})")
        self.keys = list(keys)
        self._files: list[Path] = []
        rows_s, rows_r, ids = [], [], []
        self.attrs: dict = {}
        for sh in self.manifest["shards"]:
            p = self.root / sh["file"]
            with _sh.open_shard(p) as f:
                try:
                    a = _sh.shard_attrs(f)
                    missing = [k for k in set(self.keys) | {"instance_id", "success"} if k not in f]
                    if missing:
                        raise _sh.ShardError(f"{p}: missing dataset {missing[0]!r}")
                    sid = np.asarray(f["instance_id"][...], dtype=np.int64)
                    succ = np.asarray(f["success"][...]).astype(bool)
                    for k in self.keys:
                        if f[k].shape[:1] != sid.shape:
                            raise _sh.ShardError(f"{p}: dataset {k!r} has {f[k].shape[:1]} rows, "
                                                 f"instance_id {len(sid)}")
                except _sh.ShardError:
                    raise
                except Exception as e:
                    raise _sh.ShardError(f"{p}: corrupt shard ({type(e).__name__}: {e})") from None
            if a.get("config_sha256") != self.manifest["config_sha256"]:
                raise _sh.ShardError(f"{p}: config_sha256 {a.get('config_sha256')!r} differs from the manifest's "
                                     f"{self.manifest['config_sha256']!r} (a shard of another data set?)")
            if len(sid) != sh["stored"]:
                raise _sh.ShardError(f"{p}: holds {len(sid)} instances, the manifest says {sh['stored']}")
            if not self.attrs:
                self.attrs = {k: v for k, v in a.items() if k not in ("failures", "shard_index", "first_id", "stop_id")}
            keep = np.ones(len(sid), dtype=bool)
            if split is not None:
                keep &= split_of(sid, self.fractions) == split
            if require_success:
                keep &= succ
            r = np.nonzero(keep)[0]
            rows_s.append(np.full(len(r), len(self._files), dtype=np.int64))
            rows_r.append(r)
            ids.append(sid[r])
            self._files.append(p)
        if not self.attrs:  # no shard written yet
            self.attrs = {"M": sizes["M"], "N_h": sizes["N_h"], "N_v": sizes["N_v"], "L": sizes["L"]}
            cfg = self.manifest["config"]
            self.attrs.update({k: cfg[k] for k in ("d_h", "d_v", "d_bs", "wavelength", "K_db", "C0_db", "alpha",
                                                   "beta_model", "sigma_rcs")})
            self.attrs["active"] = int(cfg["active"])

        def cat(xs, dt):
            return np.concatenate(xs) if xs else np.zeros(0, dtype=dt)

        self._shard = cat(rows_s, np.int64)
        self._row = cat(rows_r, np.int64)
        self.instance_ids = cat(ids, np.int64)
        self._handles: dict = {}
        self._pid = None
        self._memory = None
        if in_memory:
            self._memory = self._load_all()

    def __len__(self) -> int:
        return len(self.instance_ids)

    def _load_all(self) -> dict:
        out = {k: [] for k in self.keys}
        for s, p in enumerate(self._files):
            rows = self._row[self._shard == s]
            if not len(rows):
                continue
            arr = _sh.read_shard_arrays(p, names=self.keys)
            for k in self.keys:
                out[k].append(arr[k][rows])
        return {k: np.concatenate(v) if v else None for k, v in out.items()}

    def _handle(self, s: int):
        if self._pid != os.getpid():  # new process (DataLoader worker): never reuse HDF5 handles
            self._handles = {}
            self._pid = os.getpid()
        h = self._handles.get(s)
        if h is None:
            h = self._handles[s] = _sh.open_shard(self._files[s])
        return h

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_handles"] = {}
        d["_pid"] = None
        return d

    def raw(self, idx: int) -> dict:
        """Item ``idx`` as numpy values (status as bytes)."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for a data set of {len(self)} instances")
        idx = idx % len(self)
        if self._memory is not None:
            return {k: self._memory[k][idx] for k in self.keys}
        s, r = int(self._shard[idx]), int(self._row[idx])
        f = self._handle(s)
        try:
            return {k: f[k][r] for k in self.keys}
        except Exception as e:
            raise _sh.ShardError(
                f"{self._files[s]}: cannot read instance row {r} ({type(e).__name__}: {e}); the shard is corrupt"
            ) from None

    def __getitem__(self, idx: int) -> dict:
        out = {}
        for k, v in self.raw(int(idx)).items():
            if k == "status":
                out[k] = bytes(v).decode("ascii", "replace")
            elif k == "success":
                out[k] = torch.tensor(bool(v))
            else:
                out[k] = torch.from_numpy(np.array(v))
        return out

    def scenario(self, idx: int):
        """The (unbatched) :class:`irs_torch.Scenario` of item ``idx``."""
        return scenario_from_batch(self[idx], self.attrs)

    def close(self):
        for h in self._handles.values():
            h.close()
        self._handles = {}

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass


def scenario_from_batch(batch: dict, attrs: dict):
    """A :class:`irs_torch.Scenario` from an item (unbatched) or a collated batch (leading dim B).

    batch: the keys G, theta, phi, beta, P_t, P_s, a_max, sigma_r2, sigma_b2, T_c (and, if present,
    bs_pos, irs_pos, irs_yaw, target_pos, seed); attrs: M, N_h, N_v, d_h, d_v, active (and
    optionally wavelength, d_bs, K_db, C0_db, alpha, beta_model, sigma_rcs), e.g.
    ``ShardDataset.attrs``. T_c must be equal over the batch. Budgets and noise powers become
    per-instance tensors of shape (B,) (floats for an unbatched item).
    """
    from irs_torch.scenario import Scenario

    for k in ("G", "theta", "phi", "beta", "P_t", "P_s", "a_max", "sigma_r2", "sigma_b2", "T_c"):
        if k not in batch:
            raise KeyError(k)
    G = torch.as_tensor(batch["G"])
    batched = G.dim() == 4
    T_c = torch.as_tensor(batch["T_c"], dtype=torch.float64).flatten()
    if len(T_c) and not bool((T_c == T_c[0]).all()):
        raise ValueError(f"T_c must be equal over a batch, got values {sorted(set(T_c.tolist()))}")
    kw = {}
    for k in ("P_t", "P_s", "a_max", "sigma_r2", "sigma_b2"):
        v = torch.as_tensor(batch[k], dtype=torch.float64)
        kw[k] = v if batched else float(v)
    geo = {k: torch.as_tensor(batch[k]) for k in ("bs_pos", "irs_pos", "irs_yaw", "target_pos") if k in batch}
    seed = None
    if not batched and "seed" in batch:
        seed = int(batch["seed"])
    extra = {k: (attrs[k].decode() if isinstance(attrs[k], bytes) else attrs[k])
             for k in ("wavelength", "d_bs", "K_db", "C0_db", "alpha", "beta_model", "sigma_rcs") if k in attrs}
    for k in ("wavelength", "d_bs", "K_db", "C0_db", "alpha", "sigma_rcs"):
        if k in extra:
            extra[k] = float(extra[k])
    return Scenario(G=G, theta=torch.as_tensor(batch["theta"]), phi=torch.as_tensor(batch["phi"]),
                    beta=torch.as_tensor(batch["beta"]), M=int(attrs["M"]), N_h=int(attrs["N_h"]),
                    N_v=int(attrs["N_v"]), d_h=float(attrs.get("d_h", 0.5)), d_v=float(attrs.get("d_v", 0.5)),
                    T_c=float(T_c[0]), active=bool(int(attrs.get("active", 1))), seed=seed, preset="dataset",
                    **kw, **geo, **extra)


def dataset_info(root, verify: bool = False) -> dict:
    """Counts, failures and CRB statistics of data set ``root`` (what ``irs-torch dataset info``
    prints). verify: :func:`verify_dataset` with ``labels="full"`` (every manifest field that can be
    recomputed, every byte of every shard, every label recomputed; its report is under
    ``integrity``; None without verify). Raises ShardError on the first inconsistency."""
    root = Path(root)
    m = _sh.read_manifest(root)
    sizes = m["sizes"]
    names = ["max_crb", "init_max_crb", "crb_theta", "crb_phi", "status", "success", "nit", "solve_time", "cpu_time"]
    cols = {k: [] for k in names}
    integrity = verify_dataset(root, labels="full", manifest=m) if verify else None
    for sh in m["shards"]:
        p = root / sh["file"]
        a = _sh.read_shard_arrays(p, names=names)
        for k in names:
            cols[k].append(a[k])
    cols = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    n = len(cols["max_crb"])

    def stats(x):
        x = np.asarray(x, dtype=np.float64)
        x = x[np.isfinite(x)]
        if not len(x):
            return None
        q = np.quantile(x, [0.0, 0.1, 0.5, 0.9, 1.0])
        q = [float(v) for v in q]
        return {"min": q[0], "p10": q[1], "median": q[2], "p90": q[3], "max": q[4], "mean": float(x.mean()),
                "n_finite": int(len(x))}

    status, cnt = np.unique(cols["status"].astype("S"), return_counts=True) if n else ([], [])
    ratio = cols["max_crb"] / cols["init_max_crb"] if n else np.zeros(0)
    angle = (
        np.sqrt(np.maximum(cols["crb_theta"], 0) + np.maximum(cols["crb_phi"], 0)).max(-1) * 180 / np.pi
        if n
        else np.zeros(0)
    )
    return {
        "root": str(root), "complete": bool(m.get("complete")), "counts": m["counts"],
        "num_shards": m["num_shards"], "shards_written": len(m["shards"]), "shard_size": m["shard_size"],
        "dataset_seed": m["dataset_seed"], "sizes": sizes, "solver": m["config"]["solver"],
        "versions": m["versions"], "generator": m.get("generator"), "runs": len(m.get("runs", [])),
        "elapsed_s": m.get("elapsed_s"),
        "failures": m["failures"],
        "stored": n, "solver_success": int(cols["success"].sum()) if n else 0,
        "status": {s.decode("ascii", "replace"): int(c) for s, c in zip(status, cnt)},
        "max_crb": stats(cols["max_crb"]), "init_max_crb": stats(cols["init_max_crb"]),
        "max_crb_over_init": stats(ratio), "worst_root_crb_angles_deg": stats(angle),
        "nit": stats(cols["nit"]), "solve_time_s": stats(cols["solve_time"]), "cpu_time_s": stats(cols["cpu_time"]),
        "total_solve_time_s": float(cols["solve_time"].sum()) if n else 0.0,
        "integrity": integrity,
    }


# ---------------------------------------------------------------------------------- integrity
#: Tolerances of :func:`check_integrity` (relative; see there).
MAX_CRB_RTOL = 1e-9
CRB_RTOL = 1e-6
FEASIBILITY_TOL = 1e-6
#: Instances per shard whose CRBs training recomputes before its first epoch (``labels="sample"``).
CRB_SAMPLE = 32

_LABEL_KEYS_CHEAP = ("instance_id", "crb", "max_crb", "init_crb", "init_max_crb")
_SCENARIO_KEYS = ("G", "theta", "phi", "beta", "bs_pos", "irs_pos", "irs_yaw", "target_pos", "P_t", "P_s",
                  "a_max", "sigma_r2", "sigma_b2", "T_c")
_LABEL_KEYS_FULL = _LABEL_KEYS_CHEAP + _SCENARIO_KEYS + ("R_s", "psi", "crb_theta", "crb_phi", "success")


def check_integrity(root, *, labels: str = "full", manifest: dict | None = None, shards=None) -> dict:
    """Check the shards of data set ``root`` against the manifest and their labels against the model.

    For every shard listed in the manifest (or in ``shards``, a subset of its entries):

    1. checksum: the SHA-256 of the file's bytes equals the manifest's ``sha256``
       (:func:`irs_torch.data.shards.check_shard_checksum`). An entry without one (a manifest
       written before checksums existed) is reported under ``checksums_missing``, not an error;
       resuming the data set with its ``dataset generate`` command records them.
    2. labels, per instance (``labels`` = "cheap" or "full"; "none" skips them):
       "cheap": ``max_crb == max_l crb`` and ``init_max_crb == max_l init_crb`` (relative
       tolerance :data:`MAX_CRB_RTOL` = 1e-9; equal NaN/inf count as equal). Reads 5 small columns.
       "full": also ``crb``, ``crb_theta``, ``crb_phi`` recomputed from the stored scenario
       (G, theta, phi, beta, budgets, noise, T_c) and design (R_s, psi) with the torch model
       (:meth:`irs_torch.Scenario.crb`; relative tolerance :data:`CRB_RTOL` = 1e-6), and, for every
       instance whose ``success`` flag is set, the design is finite and feasible: every
       :meth:`irs_torch.Scenario.constraint_margins` entry (BS power, IRS power C1, amplitude,
       R_s PSD) >= -:data:`FEASIBILITY_TOL` = -1e-6; and ``success`` is 0 or 1.
       "sample": as "full", but the CRBs are recomputed for a deterministic sample of
       :data:`CRB_SAMPLE` instances per shard (the feasibility and ``success`` checks still cover
       every instance); what training runs before its first epoch.

    Raises :class:`~irs_torch.data.ShardError` on the first inconsistency, in one line naming the
    shard file, the instance, the field, the stored and the expected value, and what to do.
    Returns ``{"shards", "checksums_verified", "checksums_missing" (list of files),
    "instances_checked", "labels", "num_instances"}``. Cost: one read of every shard file (hash) plus, for "full",
    one batched CRB evaluation per shard.
    """
    if labels not in ("none", "cheap", "sample", "full"):
        raise ValueError(f"labels must be 'none', 'cheap', 'sample' or 'full', got {labels!r}")
    root = Path(root)
    m = manifest if manifest is not None else _sh.read_manifest(root)
    entries = m["shards"] if shards is None else shards
    num = m.get("num_instances")
    rep = {"shards": 0, "checksums_verified": 0, "checksums_missing": [], "instances_checked": 0, "labels": labels,
           "num_instances": num}
    for e in entries:
        path = root / e["file"]
        if _sh.check_shard_checksum(root, e, num) is None:
            if not path.exists():
                raise FileNotFoundError(f"shard file not found: {path}")
            rep["checksums_missing"].append(e["file"])
        else:
            rep["checksums_verified"] += 1
        rep["shards"] += 1
        if labels != "none":
            rep["instances_checked"] += _check_shard_labels(root, path, labels, num)
    return rep


def check_manifest(root, manifest: dict | None = None) -> dict:
    """Check every field of data set ``root``'s manifest that can be recomputed from the others.

    The config parses and its SHA-256 is ``config_sha256``; ``sizes``, ``shard_size``,
    ``dataset_seed`` and ``num_shards`` follow from it and ``num_instances``; every shard entry has
    an index in ``[0, num_shards)`` (each once), the file name and id range of that index, and
    ``stored + failed`` equal to its range's length; the ``failures`` list holds each failed id once,
    in the range of a listed shard, as many per shard as the entry's ``failed``; ``counts``
    (requested, stored, failed, pending) add up; a ``complete`` data set lists every shard.
    Raises :class:`~irs_torch.data.ShardError` naming the manifest, the field and both values.
    Returns the parsed :class:`~irs_torch.data.DatasetConfig`.
    """
    import math

    from irs_torch.data.distribution import DatasetConfig

    root = Path(root)
    m = manifest if manifest is not None else _sh.read_manifest(root)
    where = root / _sh.MANIFEST_NAME

    def bad(field, got, want):
        raise _sh.ShardError(f"{where}: field {field} is {got!r} but {want} (a damaged or hand-edited manifest); "
                             f"restore the data set's manifest, or regenerate it into a new --out")

    def whole(field, v, lo=0):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            bad(field, v, f"must be an integer >= {lo}")
        return v

    try:
        cfg = DatasetConfig.from_dict(m["config"], source=f"{where}: config")
    except ValueError as e:
        raise _sh.ShardError(f"{e}") from None
    if m.get("config_sha256") != cfg.sha256():
        bad("config_sha256", m.get("config_sha256"), f"the SHA-256 of its config is {cfg.sha256()!r} (config edited?)")
    want_sizes = {"M": cfg.M, "N_h": cfg.N_h, "N_v": cfg.N_v, "N": cfg.N, "L": cfg.L,
                  "history_length": cfg.history_length}
    for k, v in want_sizes.items():
        if m["sizes"].get(k) != v:
            bad(f"sizes.{k}", m["sizes"].get(k), f"the config gives {v}")
    if m["shard_size"] != cfg.shard_size:
        bad("shard_size", m["shard_size"], f"the config gives {cfg.shard_size}")
    if m["dataset_seed"] != cfg.seed:
        bad("dataset_seed", m["dataset_seed"], f"the config gives {cfg.seed}")
    num = whole("num_instances", m.get("num_instances"), 1)
    ss = cfg.shard_size
    if whole("num_shards", m["num_shards"]) != math.ceil(num / ss):
        bad("num_shards", m["num_shards"], f"ceil(num_instances / shard_size) = {math.ceil(num / ss)}")
    if not isinstance(m["shards"], list):
        bad("shards", type(m["shards"]).__name__, "must be a list")
    seen: dict[int, dict] = {}
    for j, e in enumerate(m["shards"]):
        if not isinstance(e, dict):
            bad(f"shards[{j}]", e, "must be an object")
        i = whole(f"shards[{j}].index", e.get("index"))
        if i >= m["num_shards"] or i in seen:
            bad(f"shards[{j}].index", i, f"must be unique and < num_shards = {m['num_shards']}")
        seen[i] = e
        lo, hi = i * ss, min((i + 1) * ss, num)
        for k, v in (("file", f"{_sh.SHARDS_DIR}/{_sh.shard_name(i)}"), ("first_id", lo), ("stop_id", hi)):
            if e.get(k) != v:
                bad(f"shards[{j}].{k}", e.get(k), f"shard {i} has {v!r}")
        st, fa = whole(f"shards[{j}].stored", e.get("stored")), whole(f"shards[{j}].failed", e.get("failed", 0))
        if st + fa != hi - lo:
            bad(f"shards[{j}].stored", st, f"stored + failed must be the {hi - lo} instances [{lo}, {hi}) "
                                           f"(failed is {fa})")
    if not isinstance(m["failures"], list):
        bad("failures", type(m["failures"]).__name__, "must be a list")
    fid = []
    for j, f in enumerate(m["failures"]):
        fid.append(whole(f"failures[{j}].instance_id", f.get("instance_id") if isinstance(f, dict) else f))
    if len(set(fid)) != len(fid):
        bad("failures", "a repeated instance_id", "each failed instance is listed once")
    per = {}
    for i in fid:
        if i // ss not in seen or i >= num:
            bad("failures", f"instance_id {i}", "every failed instance lies in a listed shard")
        per[i // ss] = per.get(i // ss, 0) + 1
    for i, e in seen.items():
        if per.get(i, 0) != e.get("failed", 0):
            bad(f"shards (index {i}).failed", e.get("failed", 0), f"the failures list has {per.get(i, 0)} in its range")
    stored = sum(e["stored"] for e in seen.values())
    c = m["counts"] if isinstance(m["counts"], dict) else {}
    for k, v in (("requested", num), ("stored", stored), ("failed", len(fid)), ("pending", num - stored - len(fid))):
        if c.get(k) != v:
            bad(f"counts.{k}", c.get(k), f"the shard list gives {v}")
    if m.get("complete") and len(seen) != m["num_shards"]:
        bad("complete", True, f"only {len(seen)} of {m['num_shards']} shards are listed")
    return cfg


def verify_dataset(root, *, labels: str = "full", manifest: dict | None = None) -> dict:
    """Everything ``irs-torch dataset info --verify`` checks, and training before its first epoch.

    1. :func:`check_manifest` (every recomputable manifest field);
    2. per listed shard: its checksum, then :func:`irs_torch.data.shards.verify_shard` (every byte read,
       the config hash, the id range, instance ids sorted, unique, and with the failed ids covering the
       range exactly once), its stored count and failed ids equal to the manifest's;
    3. :func:`check_integrity` with ``labels`` ("full": every CRB recomputed; "sample": a sample per
       shard, as training does; both check ``success`` in {0, 1} and the feasibility of every
       ``success = 1`` design).

    Since the shards' id ranges are disjoint and each is covered exactly once, the instance ids of the
    data set are unique and complete. Raises ShardError (one line naming the file and the field) on
    the first inconsistency; returns the :func:`check_integrity` report.
    """
    root = Path(root)
    m = manifest if manifest is not None else _sh.read_manifest(root)
    cfg = check_manifest(root, m)
    specs = _sh.field_specs(cfg.L, cfg.N, cfg.M, cfg.history_length)
    fails = {}
    for f in m["failures"]:
        fails.setdefault(int(f["instance_id"]) // cfg.shard_size, set()).add(int(f["instance_id"]))
    reports = []
    for e in m["shards"]:
        p = root / e["file"]
        info = _sh.verify_shard(p, config_sha256=m["config_sha256"], first_id=e["first_id"], stop_id=e["stop_id"],
                                names=specs)
        if info["n"] != e["stored"]:
            raise _sh.ShardError(f"{p}: holds {info['n']} instances, the manifest's field stored says {e['stored']}")
        got = {int(x["instance_id"]) for x in info["attrs"]["failures"]}
        if got != fails.get(int(e["index"]), set()):
            raise _sh.ShardError(f"{p}: its failed ids {sorted(got)[:5]} differ from the manifest's failures in its "
                                 f"range {sorted(fails.get(int(e['index']), set()))[:5]}")
        reports.append(check_integrity(root, labels=labels, manifest=m, shards=[e]))
    rep = _merge_reports(reports) if reports else check_integrity(root, labels=labels, manifest=m, shards=[])
    rep["labels"] = labels
    return rep


def _merge_reports(reports: list[dict]) -> dict:
    out = {"shards": 0, "checksums_verified": 0, "checksums_missing": [], "instances_checked": 0,
           "labels": reports[0]["labels"] if reports else "full",
           "num_instances": reports[0]["num_instances"] if reports else None}
    for r in reports:
        for k in ("shards", "checksums_verified", "instances_checked"):
            out[k] += r[k]
        out["checksums_missing"] += r["checksums_missing"]
    return out


def _fix_hint(root, num) -> str:
    return f"delete the shard and rerun `irs-torch dataset generate --out {root} --num {num or 'N'}` to recompute it"


def _first_mismatch(path, ids, field, stored, want, what, rtol, root, num):
    """Raise a ShardError for the first instance where ``stored`` and ``want`` differ beyond ``rtol``."""
    stored, want = np.asarray(stored, dtype=np.float64), np.asarray(want, dtype=np.float64)
    ok = np.isclose(stored, want, rtol=rtol, atol=0.0, equal_nan=True)
    if ok.ndim > 1:
        ok = ok.reshape(len(ok), -1).all(-1)
    if ok.all():
        return
    bad = np.nonzero(~ok)[0]
    k = int(bad[0])
    sv, wv = stored[k], want[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.nanmax(np.abs(np.atleast_1d(sv - wv)) / np.maximum(np.abs(np.atleast_1d(wv)), 1e-300))
    more = f" (and {len(bad) - 1} more instance(s))" if len(bad) > 1 else ""

    def fmt(v):
        return f"{float(v):.10g}" if np.ndim(v) == 0 else np.array2string(v, precision=10, separator=", ")

    raise _sh.ShardError(
        f"{path}: instance {int(ids[k])}{more}: field {field} = {fmt(sv)} "
        f"but {what} = {fmt(wv)} (relative difference "
        f"{rel:.2g} > {rtol:g}): the labels are inconsistent; {_fix_hint(root, num)}"
    )


def _sample_rows(K: int, n: int) -> np.ndarray:
    """``min(K, n)`` row indices spread evenly over ``range(K)``, first and last included."""
    if K <= n:
        return np.arange(K)
    return np.unique(np.linspace(0, K - 1, n).round().astype(np.int64))


def _check_shard_labels(root, path, labels: str, num) -> int:
    """Label checks of one shard (see :func:`check_integrity`); returns the number of instances."""
    full = labels in ("full", "sample")
    with _sh.open_shard(path) as f:
        attrs = _sh.shard_attrs(f)
    a = _sh.read_shard_arrays(path, names=list(_LABEL_KEYS_FULL if full else _LABEL_KEYS_CHEAP))
    ids = a["instance_id"]
    K = len(ids)
    if K == 0:
        return 0
    if full:
        bad = np.nonzero((a["success"] != 0) & (a["success"] != 1))[0]
        if len(bad):
            k = int(bad[0])
            raise _sh.ShardError(f"{path}: instance {int(ids[k])}: field success = {int(a['success'][k])}, must be 0 "
                                 f"or 1; {_fix_hint(root, num)}")
    _first_mismatch(path, ids, "max_crb", a["max_crb"], np.max(a["crb"], axis=-1), "max_l crb", MAX_CRB_RTOL, root, num)
    _first_mismatch(path, ids, "init_max_crb", a["init_max_crb"], np.max(a["init_crb"], axis=-1), "max_l init_crb",
                    MAX_CRB_RTOL, root, num)
    if not full:
        return K
    finite = np.isfinite(a["R_s"]).reshape(K, -1).all(-1) & np.isfinite(a["psi"]).reshape(K, -1).all(-1)
    success = a["success"].astype(bool)
    if (success & ~finite).any():
        k = int(np.nonzero(success & ~finite)[0][0])
        field = "R_s" if not np.isfinite(a["R_s"][k]).all() else "psi"
        raise _sh.ShardError(f"{path}: instance {int(ids[k])}: field {field} is not finite but field success is 1; "
                             f"{_fix_hint(root, num)}")
    crb_rows = np.zeros(K, dtype=bool)
    crb_rows[_sample_rows(K, CRB_SAMPLE) if labels == "sample" else np.arange(K)] = True
    got = {k: np.full(a["crb"].shape, np.nan) for k in ("crb", "crb_theta", "crb_phi")}
    names = {"bs": "R_s (BS power over P_t)", "psd": "R_s (not PSD)", "irs": "psi (IRS power C1 over P_s)",
             "amp": "psi (amplitude over a_max)"}
    for T_c in np.unique(a["T_c"]):  # scenario_from_batch wants one T_c per batch
        rows = np.nonzero((a["T_c"] == T_c) & finite & (crb_rows | success))[0]
        if not len(rows):
            continue
        batch = {k: torch.from_numpy(np.ascontiguousarray(a[k][rows])) for k in _SCENARIO_KEYS}
        try:
            s = scenario_from_batch(batch, attrs)
        except (ValueError, TypeError) as e:
            raise _sh.ShardError(f"{path}: instances {int(ids[rows[0]])}..{int(ids[rows[-1]])}: the stored scenario "
                                 f"is invalid ({e}); {_fix_hint(root, num)}") from None
        R_s, psi = torch.from_numpy(a["R_s"][rows]), torch.from_numpy(a["psi"][rows])
        with torch.no_grad():
            sub = crb_rows[rows]
            if sub.any():
                c = s[torch.from_numpy(np.nonzero(sub)[0])].crb(R_s[sub], psi[sub], validate=False) if not sub.all() \
                    else s.crb(R_s, psi, validate=False)
                for k, arr in got.items():
                    arr[rows[sub]] = getattr(c, "total" if k == "crb" else k[4:]).numpy()
            if success[rows].any():
                for cname, v in s.constraint_margins(R_s, psi).items():
                    v = v.numpy().reshape(len(rows), -1).min(-1)
                    bad = np.nonzero((v < -FEASIBILITY_TOL) & success[rows])[0]
                    if len(bad):
                        j = int(bad[0])
                        raise _sh.ShardError(
                            f"{path}: instance {int(ids[rows[j]])}: field success is 1 but the stored design "
                            f"violates a constraint: {names[cname]}, margin {v[j]:.3g} < -{FEASIBILITY_TOL:g} "
                            f"(fields R_s, psi, P_t, P_s, a_max); {_fix_hint(root, num)}")
    for k in ("crb", "crb_theta", "crb_phi"):
        # rows with a non-finite design or outside the sample: nothing recomputed
        want = np.where((finite & crb_rows)[:, None], got[k], a[k])
        _first_mismatch(path, ids, k, a[k], want, f"{k} recomputed from the stored scenario and design", CRB_RTOL,
                        root, num)
    return K

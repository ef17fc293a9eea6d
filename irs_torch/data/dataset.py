"""Reading data sets: a torch Dataset over the shards, splits, batched Scenarios.

:class:`ShardDataset` indexes the shards listed in a data set's manifest (each is opened and
checked at construction: a corrupt or truncated shard raises an error naming the file) and reads
one instance per item. Items are dicts of torch tensors keyed as the shard datasets
(:mod:`irs_torch.data.shards`), without the leading K dimension, except ``status`` (a str).
``success`` is a bool tensor. :func:`scenario_from_batch` turns an item or a collated batch back
into a (batched) :class:`irs_torch.Scenario`. Statistics and integrity checks of a data set are in
:mod:`irs_torch.data.integrity`.

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
            with _sh.open_shard(p, sizes, entry_rows(sh)) as f:
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
            arr = _sh.read_shard_arrays(p, names=self.keys, sizes=self.manifest["sizes"])
            for k in self.keys:
                out[k].append(arr[k][rows])
        return {k: np.concatenate(v) if v else None for k, v in out.items()}

    def _handle(self, s: int):
        if self._pid != os.getpid():  # new process (DataLoader worker): never reuse HDF5 handles
            self._handles = {}
            self._pid = os.getpid()
        h = self._handles.get(s)
        if h is None:
            h = self._handles[s] = _sh.open_shard(self._files[s], self.manifest["sizes"])
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


def entry_rows(entry) -> int | None:
    """The id-range length of a manifest shard entry (``stop_id - first_id``), None if not two integers."""
    lo, hi = (entry.get("first_id"), entry.get("stop_id")) if isinstance(entry, dict) else (None, None)
    if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool) and not isinstance(hi, bool):
        return max(hi - lo, 0)
    return None


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

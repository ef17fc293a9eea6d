"""A LightningDataModule over a data set's HDF5 shards (training the warm-start model).

Splits are by instance (:func:`irs_torch.data.dataset.split_of`: a fixed hash of ``instance_id``
with ``fractions`` = (train, val, test)), so they do not depend on shard sizes, failures or on how
far the data set has grown, and every user of a data set sees the same test split.
Distributed training needs nothing here: Lightning wraps the loaders in a DistributedSampler.

Batches are dicts of stacked tensors (leading dim B) with the keys of
:class:`~irs_torch.data.ShardDataset` (``status`` a list of str); turn one into a batched
:class:`~irs_torch.Scenario` with :func:`irs_torch.data.scenario_from_batch` and :attr:`attrs`.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from irs_torch.data.dataset import SPLITS, ShardDataset

#: The keys a training batch needs (inputs of the Scenario + the solver labels + bookkeeping).
TRAIN_KEYS = ("G", "theta", "phi", "beta", "bs_pos", "irs_pos", "irs_yaw", "target_pos", "P_t", "P_s",
              "a_max", "sigma_r2", "sigma_b2", "T_c", "R_s", "psi", "crb", "max_crb", "instance_id", "seed")


#: Instance ids of unlabelled training instances start here (far above any labelled id).
UNLABELLED_ID_OFFSET = 1 << 40


def collate_instances(items: list[dict]) -> dict:
    """Stack a list of ShardDataset items: tensors -> ``(B, ...)`` tensors, others -> lists.

    Items with a ``labelled`` flag (:class:`SampledScenarios`) may be mixed with shard items
    (which count as labelled); the batch then has a bool ``labelled`` ``(B,)``.
    """
    if not items:
        raise ValueError("collate_instances: empty batch")
    if any("labelled" in it for it in items):
        items = [it if "labelled" in it else {**it, "labelled": torch.tensor(True)} for it in items]
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
    return out


class SampledScenarios(torch.utils.data.Dataset):
    """Unlabelled training instances drawn from a data set's own distribution (no solver).

    The CRB term of the loss needs no label, so training can see many more geometries than were
    solved. Instance ``i`` is ``config.instance_scenario(UNLABELLED_ID_OFFSET + offset + i)``: its seed
    is :func:`irs_torch.data.instance_seed` of the data set seed and that id, so the instances are
    reproducible and disjoint from the labelled ones. Items have the keys of :data:`TRAIN_KEYS`
    with NaN labels and ``labelled = False``.

    Drawing costs about 5 ms per instance at the paper's sizes. Without ``cache_dir`` instances are
    drawn lazily and kept per process (about 9 kB each). With ``cache_dir``, :meth:`prepare` (called
    by :class:`ShardDataModule` at set-up) draws all of them once, with a progress bar, and saves
    them to ``cache_dir/unlabelled-<config sha256>-o<offset>-n<n>.pt`` (atomically); later runs
    and resumed runs load that file instead. A cache file that does not load or does not match
    (config, offset, n, sizes) is drawn again and replaced; an unwritable ``cache_dir`` only warns.
    """

    #: Per-instance fields that vary (stacked in the cache); labels are NaN and built on access.
    FIELDS = ("G", "theta", "phi", "beta", "bs_pos", "irs_pos", "irs_yaw", "target_pos", "P_t", "P_s",
              "a_max", "sigma_r2", "sigma_b2", "T_c", "seed")
    CACHE_FORMAT = 1

    def __init__(self, config, n: int, offset: int = 0, cache_dir=None):
        from irs_torch.data.distribution import DatasetConfig, instance_seed

        self.config = config if isinstance(config, DatasetConfig) else DatasetConfig.from_dict(config)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"unlabelled must be an integer >= 0, got {n!r}")
        self.n = n
        self.offset = int(offset)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._seed = instance_seed
        self._cache: dict[int, dict] = {}
        self._stacked: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.n

    @property
    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"unlabelled-{self.config.sha256()[:16]}-o{self.offset}-n{self.n}.pt"

    def _draw(self, i: int) -> dict:
        cfg = self.config
        seed = self._seed(cfg.seed, UNLABELLED_ID_OFFSET + self.offset + i)
        s = cfg.scenario(seed)
        f64 = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
        return {"G": s.G, "theta": s.theta, "phi": s.phi, "beta": s.beta, "bs_pos": s.bs_pos,
                "irs_pos": s.irs_pos, "irs_yaw": s.irs_yaw, "target_pos": s.target_pos,
                "P_t": f64(s.P_t), "P_s": f64(s.P_s), "a_max": f64(s.a_max), "sigma_r2": f64(s.sigma_r2),
                "sigma_b2": f64(s.sigma_b2), "T_c": f64(s.T_c), "seed": torch.tensor(seed, dtype=torch.int64)}

    def _meta(self) -> dict:
        c = self.config
        return {"format": self.CACHE_FORMAT, "config_sha256": c.sha256(), "offset": self.offset, "n": self.n,
                "sizes": [int(c.L), int(c.N), int(c.M)]}

    def prepare(self, progress: bool = True, log=None, workers: int = 1) -> "SampledScenarios":
        """Draw (or load from ``cache_dir``) every instance now; returns self.

        ``workers > 1`` draws contiguous chunks in that many processes (the instances are the same:
        each is a function of its seed only)."""
        import os
        import sys
        import warnings

        from irs_torch.outputs import progress_bar

        if self._stacked is not None or self.n == 0:
            return self
        log = log or (lambda msg: print(msg, file=sys.stderr))
        path = self.cache_path
        if path is not None and path.exists():
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
                if obj.get("meta") != self._meta():
                    raise ValueError(f"it was written for {obj.get('meta')}, not {self._meta()}")
                data = obj["data"]
                bad = [k for k in self.FIELDS if k not in data or int(data[k].shape[0]) != self.n]
                if bad:
                    raise ValueError(f"fields {bad} are missing or have the wrong length")
                self._stacked = {k: data[k] for k in self.FIELDS}
                log(f"irs-torch: loaded {self.n} unlabelled geometries from {path}")
                return self
            except Exception as e:  # noqa: BLE001 - any unreadable cache is drawn again
                warnings.warn(f"unlabelled-geometry cache {path} is unusable ({e}); drawing it again",
                              stacklevel=2)
        if workers > 1 and self.n >= 2 * workers:
            self._stacked = self._draw_parallel(workers, progress)
        else:
            items = [self._cache[i] if i in self._cache else self._draw(i)
                     for i in progress_bar(range(self.n), desc="draw unlabelled geometries", unit="geom",
                                           progress=progress, mininterval=2.0)]
            self._stacked = {k: torch.stack([it[k] for it in items]) for k in self.FIELDS}
        self._cache.clear()
        if path is not None:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"meta": self._meta(), "data": self._stacked}, tmp)
                os.replace(tmp, path)
                log(f"irs-torch: saved {self.n} unlabelled geometries to {path} (later runs load it)")
            except OSError as e:
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass
                warnings.warn(f"could not write the unlabelled-geometry cache {path}: {e}", stacklevel=2)
        return self

    def _draw_parallel(self, workers: int, progress: bool) -> dict[str, torch.Tensor]:
        from concurrent.futures import ProcessPoolExecutor

        from irs_torch.outputs import progress_bar

        bounds = [round(self.n * k / (4 * workers)) for k in range(4 * workers + 1)]
        chunks = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        parts: dict[int, dict] = {}
        with ProcessPoolExecutor(max_workers=workers) as ex, \
                progress_bar(total=self.n, desc="draw unlabelled geometries", unit="geom", progress=progress,
                             mininterval=2.0) as bar:
            futs = {ex.submit(_draw_chunk, self.config.to_dict(), self.offset, a, b): a for a, b in chunks}
            for fut in futs:
                parts[futs[fut]] = fut.result()
                bar.update(int(next(iter(parts[futs[fut]].values())).shape[0]))
        return {k: torch.cat([parts[a][k] for a, _ in chunks]) for k in self.FIELDS}

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} sampled instances")
        if self._stacked is not None:
            item = {k: v[i] for k, v in self._stacked.items()}
        elif i in self._cache:
            item = self._cache[i]
        else:
            item = self._cache[i] = self._draw(i)
        L, N, M = int(item["G"].shape[-3]), int(item["G"].shape[-2]), int(item["G"].shape[-1])
        nan = float("nan")
        return item | {
            "R_s": torch.full((L, M, M), complex(nan, nan), dtype=torch.complex128),
            "psi": torch.full((L, N), complex(nan, nan), dtype=torch.complex128),
            "crb": torch.full((L,), nan, dtype=torch.float64), "max_crb": torch.tensor(nan, dtype=torch.float64),
            "instance_id": torch.tensor(UNLABELLED_ID_OFFSET + self.offset + i, dtype=torch.int64),
            "labelled": torch.tensor(False)}


def _draw_chunk(config: dict, offset: int, start: int, stop: int) -> dict[str, torch.Tensor]:
    """Instances ``start .. stop - 1`` of a :class:`SampledScenarios` pool, stacked (a process-pool task)."""
    torch.set_num_threads(1)
    pool = SampledScenarios(config, stop, offset=offset)
    items = [pool._draw(i) for i in range(start, stop)]
    return {k: torch.stack([it[k] for it in items]) for k in SampledScenarios.FIELDS}


class ShardDataModule(L.LightningDataModule):
    """Train/val/test loaders over the data set at ``root`` (a directory with ``manifest.json``).

    Args:
        root: data set directory (``irs-torch dataset generate --out``).
        batch_size: training batch size (per device).
        eval_batch_size: validation/test/predict batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes (0: load in the main process).
        fractions: (train, val, test) fractions of the instance split.
        in_memory: read the shards into RAM once (fast; a data set of 10k instances at the paper's
            sizes is ~100 MB).
        require_success: drop instances whose solver did not report success (``success = 0``: an
            infeasible label or a failed solver, status "solver-failed"; see
            :class:`irs_torch.solvers.SolveResult`) from every split (default); False keeps them.
        max_train_instances: use only the first n training instances (for overfitting checks and
            learning curves); None: all.
        unlabelled: add this many unlabelled training instances drawn from the data set's own
            distribution (:class:`SampledScenarios`; the CRB term trains on them, the supervised
            term only on labelled ones). 0: none.
        keys: item keys to read (default :data:`TRAIN_KEYS`).
        unlabelled_cache: keep the drawn unlabelled geometries in ``<root>/cache/`` (drawn once,
            loaded by later and resumed runs; :class:`SampledScenarios`). False: draw them lazily
            in every run.
        unlabelled_workers: processes that draw the unlabelled geometries into the cache (1: this
            process; about 5 ms per geometry at the paper's sizes).
    """

    def __init__(self, root: str, batch_size: int = 64, eval_batch_size: int | None = None,
                 num_workers: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 in_memory: bool = True, require_success: bool = True,
                 max_train_instances: int | None = None, unlabelled: int = 0, keys: list[str] | None = None,
                 unlabelled_cache: bool = True, unlabelled_workers: int = 1):
        super().__init__()
        if isinstance(unlabelled_workers, bool) or not isinstance(unlabelled_workers, int) or unlabelled_workers < 1:
            raise ValueError(f"unlabelled_workers must be an integer >= 1, got {unlabelled_workers!r}")
        self.unlabelled_workers = unlabelled_workers
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size < 1):
            raise ValueError(f"eval_batch_size must be an integer >= 1, got {eval_batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        from irs_torch.limits import MAX_BATCH, MAX_LOADER_WORKERS, check_int

        check_int("data.batch_size", batch_size, 1, MAX_BATCH)
        if eval_batch_size is not None:
            check_int("data.eval_batch_size", eval_batch_size, 1, MAX_BATCH)
        check_int("data.num_workers", num_workers, 0, MAX_LOADER_WORKERS)
        if max_train_instances is not None and (not isinstance(max_train_instances, int) or max_train_instances < 1):
            raise ValueError(f"max_train_instances must be None or an integer >= 1, got {max_train_instances!r}")
        if isinstance(unlabelled, bool) or not isinstance(unlabelled, int) or unlabelled < 0:
            raise ValueError(f"unlabelled must be an integer >= 0, got {unlabelled!r}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.fractions = tuple(fractions)
        self.in_memory = in_memory
        self.require_success = require_success
        self.max_train_instances = max_train_instances
        self.unlabelled = unlabelled
        self.unlabelled_cache = bool(unlabelled_cache)
        self.keys = list(keys) if keys is not None else list(TRAIN_KEYS)
        self._sets: dict[str, torch.utils.data.Dataset] = {}
        self._attrs: dict | None = None
        self._manifest: dict | None = None
        self._pool: SampledScenarios | None = None
        self._integrity: dict | None = None

    # ------------------------------------------------------------------ data sets
    def _check_root(self):
        if not (self.root / "manifest.json").exists():
            raise FileNotFoundError(f"data.root: no data set at {self.root} (manifest.json not found); "
                                    f"generate one with `irs-torch dataset generate --out {self.root} ...`")

    def dataset(self, split: str) -> torch.utils.data.Dataset:
        """The :class:`ShardDataset` of ``split`` ("train", "val" or "test"), built once."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._sets:
            self._check_root()
            self.check_integrity()
            ds = ShardDataset(self.root, split=split, fractions=self.fractions, keys=self.keys,
                              require_success=self.require_success, in_memory=self.in_memory)
            if self._attrs is None:
                self._attrs, self._manifest = dict(ds.attrs), ds.manifest
            if len(ds) == 0:
                raise ValueError(f"data.root: split {split!r} of {self.root} has no instances "
                                 f"(fractions={list(self.fractions)}, require_success={self.require_success}); "
                                 f"the data set is too small or its solves failed")
            if split == "train" and self.max_train_instances is not None and len(ds) > self.max_train_instances:
                ds = torch.utils.data.Subset(ds, range(self.max_train_instances))
            self._sets[split] = ds
            if split == "train" and self.unlabelled:
                self._sets["train"] = torch.utils.data.ConcatDataset(
                    [
                        ds,
                        self._sampled().prepare(workers=self.unlabelled_workers)
                        if self.unlabelled_cache
                        else self._sampled(),
                    ]
                )
            return self._sets[split]
        return self._sets[split]

    def check_integrity(self) -> dict:
        """Check the data set once, before the first split is built (so before training), with the
        checks of ``irs-torch dataset info --verify`` (:func:`irs_torch.data.integrity.verify_dataset`):
        every recomputable manifest field, every shard read completely against the manifest (SHA-256,
        id range, unique and complete instance ids, stored count), ``success`` in {0, 1}, every
        ``success = 1`` design feasible, ``max_crb == max_l crb`` everywhere and the CRBs recomputed
        on a sample of each shard (``labels="sample"``). A mismatch raises a ShardError naming the
        shard and field; a manifest written before checksums existed only warns. Returns the report."""
        if self._integrity is None:
            import warnings

            from irs_torch.data.integrity import verify_dataset

            rep = verify_dataset(self.root, labels="sample")
            if rep["checksums_missing"]:
                warnings.warn(f"data.root: {self.root}/manifest.json records no checksum for "
                              f"{len(rep['checksums_missing'])} shard(s) (written by an older irs-torch), so they "
                              f"were not verified; rerun its `irs-torch dataset generate --out {self.root} "
                              f"--num {rep['num_instances']}` to record them", stacklevel=2)
            self._integrity = rep
        return self._integrity

    def _sampled(self) -> SampledScenarios:
        """The unlabelled pool, built once per data module (so a pool drawn by :meth:`prepare_data`
        in this process is used as is, not reloaded from its cache file)."""
        if self._pool is None:
            self._pool = SampledScenarios(self.manifest["config"], self.unlabelled,
                                          cache_dir=self.root / "cache" if self.unlabelled_cache else None)
        return self._pool

    def prepare_data(self):
        """Draw the unlabelled geometries into the cache once (Lightning calls this on one process
        per node before :meth:`setup`), so that every process then loads the same file."""
        if self.unlabelled and self.unlabelled_cache:
            self._check_root()
            self._sampled().prepare(workers=self.unlabelled_workers)

    @property
    def attrs(self) -> dict:
        """Data set attributes (M, N_h, N_v, L, d_h, d_v, active, config, dataset_seed, ...)."""
        if self._attrs is None:
            self._check_root()
            ds = ShardDataset(self.root, keys=["instance_id"])
            self._attrs, self._manifest = dict(ds.attrs), ds.manifest
        return self._attrs

    @property
    def manifest(self) -> dict:
        self.attrs
        return self._manifest

    def describe(self) -> dict:
        """What a checkpoint records about its training data (path, seed, config hash, sizes)."""
        a, m = self.attrs, self.manifest
        return {"root": str(self.root), "dataset_seed": int(a.get("dataset_seed", -1)),
                "config_sha256": m.get("config_sha256"), "config": m.get("config"), "sizes": m.get("sizes"),
                "counts": m.get("counts"), "fractions": list(self.fractions),
                "unlabelled": self.unlabelled, "unlabelled_id_offset": UNLABELLED_ID_OFFSET}

    def setup(self, stage: str | None = None):
        if stage in (None, "fit"):
            self.dataset("train")
            self.dataset("val")
        if stage == "validate":
            self.dataset("val")
        if stage in (None, "test"):
            self.dataset("test")
        if stage == "predict":
            self.dataset("test")

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, shuffle: bool, batch_size: int):
        return torch.utils.data.DataLoader(
            self.dataset(split), batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=collate_instances, persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self):
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self):
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self):
        return self._loader("test", False, self.eval_batch_size)

    def predict_dataloader(self):
        return self._loader("test", False, self.eval_batch_size)

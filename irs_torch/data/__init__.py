"""Solver-labelled data sets over random geometries.

- :mod:`.distribution`: :class:`DatasetConfig` (the config file: ranges, sizes, solver settings,
  the documented rejection rule) and :func:`instance_seed`.
- :mod:`.instance`: :func:`solve_instance` (one instance, regenerable alone).
- :mod:`.backends` (and :mod:`.ray_backend`): where instances run (this process, a process pool, Ray).
- :mod:`.generate`: :func:`generate_dataset` (the resumable driver: shards and manifest).
- :mod:`.shards`: the HDF5 shard + JSON manifest format (documented there).
- :mod:`.dataset`: :class:`ShardDataset` (a torch Dataset with deterministic splits),
  :func:`scenario_from_batch`, :func:`dataset_info`.
"""
from irs_torch.data.dataset import ShardDataset, scenario_from_batch, split_of  # noqa: F401
from irs_torch.data.distribution import (  # noqa: F401
    PRESETS,
    DatasetConfig,
    NodeBox,
    instance_seed,
    load_config,
)
from irs_torch.data.generate import generate_dataset  # noqa: F401
from irs_torch.data.instance import solve_instance  # noqa: F401
from irs_torch.data.integrity import dataset_info  # noqa: F401
from irs_torch.data.shards import ShardError  # noqa: F401

__all__ = ["DatasetConfig", "NodeBox", "PRESETS", "load_config", "instance_seed", "generate_dataset",
           "solve_instance", "ShardDataset", "scenario_from_batch", "dataset_info", "split_of", "ShardError"]

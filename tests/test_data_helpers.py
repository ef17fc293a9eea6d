"""Helpers shared by the data set tests (no tests here). Reads data sets with h5py/json only."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

# Tiny arrays and a short AO with Clarabel (an interior-point P2, ~50 ms at M = 4) keep tests fast.
TINY = {"M": 4, "N_h": 2, "N_v": 2, "shard_size": 3,
        "solver": {"method": "ao", "max_iter": 2, "p2_solver": "CLARABEL", "p3_steps": 20}}

# Fields that legitimately differ between two runs of the same data set.
RUN_DEPENDENT = {"solve_time", "cpu_time"}


def write_config(path: Path, **over) -> Path:
    import yaml

    d = dict(TINY)
    d.update(over)
    path.write_text(yaml.safe_dump(d))
    return path


def load_rows(root) -> dict:
    """All stored instances of a data set as name -> (K, ...) arrays, read with h5py only."""
    root = Path(root)
    m = json.loads((root / "manifest.json").read_text())
    cols: dict = {}
    for sh in m["shards"]:
        with h5py.File(root / sh["file"], "r") as f:
            for k in f:
                cols.setdefault(k, []).append(f[k][...])
    return {k: np.concatenate(v) for k, v in cols.items()}


def assert_same_data(a_root, b_root):
    """Two data sets hold the same instances, equal bit for bit except run-dependent fields."""
    a, b = load_rows(a_root), load_rows(b_root)
    assert set(a) == set(b)
    np.testing.assert_array_equal(a["instance_id"], b["instance_id"])
    for k in sorted(set(a) - RUN_DEPENDENT):
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"field {k}")
    ma = json.loads((Path(a_root) / "manifest.json").read_text())
    mb = json.loads((Path(b_root) / "manifest.json").read_text())
    assert ma["failures"] == mb["failures"]
    assert ma["counts"] == mb["counts"] and ma["config"] == mb["config"]

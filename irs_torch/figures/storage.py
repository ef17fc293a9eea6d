"""Where a figure's points live: one line per finished task in ``<out>/<fig>/points.jsonl``
(:class:`PointStore`; flush + fsync per line, a truncated last line is dropped, so a killed sweep resumes), the
earlier layout's migration (:func:`migrate_points`), and the figure's CSV (:func:`write_csv`,
:func:`write_sweep_csv`, :func:`read_csv`; per-point means over seeds by :func:`aggregate`).
"""
from __future__ import annotations

import csv
import fcntl
import json
import math
import os
from pathlib import Path

import numpy as np


class PointStore:
    """Append-only JSON-lines file of finished tasks: one line ``{"key": task key, **record}`` each.

    :meth:`append` writes a whole line with one ``write`` under an exclusive ``flock``, then flushes
    and fsyncs, so a killed run leaves at most a truncated last line; :meth:`load` ignores it and
    :meth:`append` cuts it off before writing. A key stored twice keeps its first record (a task is
    never recomputed once stored). A malformed line other than the last raises ValueError.
    """

    def __init__(self, path):
        self.path = Path(path)

    def load(self) -> dict:
        """``{key: record}`` of every complete line (in file order)."""
        if not self.path.exists():
            return {}
        out: dict = {}
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        for n, ln in enumerate(lines):
            if not ln.strip():
                continue
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError as e:
                if n == len(lines) - 1:  # truncated last line of a killed run: not a finished task
                    break
                raise ValueError(f"{self.path}: line {n + 1} is not valid JSON ({e}); only a truncated last "
                                 f"line is tolerated") from None
            if not isinstance(rec, dict) or "key" not in rec:
                raise ValueError(f"{self.path}: line {n + 1} has no 'key' field")
            out.setdefault(rec["key"], rec)
        return out

    def append(self, key: str, record: dict) -> None:
        """Append one finished task (flush + fsync); a truncated last line is removed first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps({"key": key, **record}) + "\n").encode()
        with open(self.path, "ab+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                size = f.seek(0, os.SEEK_END)
                if size:
                    f.seek(max(0, size - 1))
                    if f.read(1) != b"\n":  # cut a truncated last line back to the last newline
                        f.seek(0)
                        data = f.read()
                        f.truncate(data.rfind(b"\n") + 1)
                f.seek(0, os.SEEK_END)
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def store_path(out_dir, fig: str) -> Path:
    """Where a figure's finished tasks are kept: ``<out>/<fig>/points.jsonl``."""
    return Path(out_dir) / fig / "points.jsonl"


def migrate_points(out_dir, fig: str, *, remove: bool = False) -> dict:
    """Move the earlier layout's per-task files ``<out>/<fig>/points/*.json`` into the store.

    One-off step (``irs-torch reproduce FIG --migrate``). Each file becomes the line
    ``{"key": <file name without .json>, **record}`` (the key is the file's :attr:`Task.key`), in
    file-name order; files whose key is already stored are not appended again. Then every file is
    re-read and compared with its stored record; only if all match and ``remove`` is set are the
    files (and the then empty folder) deleted. Returns ``{"files", "appended", "verified",
    "removed"}``; raises ValueError if a stored record differs from its file.
    """
    pdir = Path(out_dir) / fig / "points"
    files = sorted(pdir.glob("*.json")) if pdir.is_dir() else []
    store = PointStore(store_path(out_dir, fig))
    have = store.load()
    appended = 0
    for fp in files:
        if fp.stem not in have:
            store.append(fp.stem, json.loads(fp.read_text()))
            appended += 1
    have = store.load()
    for fp in files:
        rec = dict(have.get(fp.stem, {}))
        rec.pop("key", None)
        if json.dumps(rec, sort_keys=True) != json.dumps(json.loads(fp.read_text()), sort_keys=True):
            raise ValueError(f"migrate_points: {fp} and its record in {store.path} differ; nothing removed")
    removed = 0
    if remove:
        for fp in files:
            fp.unlink()
            removed += 1
        if pdir.is_dir() and not any(pdir.iterdir()):
            pdir.rmdir()
    return {"files": len(files), "appended": appended, "verified": len(files), "removed": removed,
            "store": str(store.path)}


def write_sweep_csv(sweeps: list[dict], path, fig: str) -> Path:
    """Per (curve, x) of the monotone sweeps: cold vs final max-CRB and where the final came from.

    Columns: ``mean_cold_max_crb``, ``mean_max_crb`` (means over the draws where both are finite),
    ``improved`` (draws where the final is below the cold value by more than 1e-6 relative),
    ``max_gain`` (largest cold / final), ``from_cold``, ``from_down``, ``from_up`` (draws whose final
    design came from each pass), ``count``, ``mean_time_s`` (all starts at the point) and
    ``mean_cold_time_s``. The header line gives the number of draws monotone in every budget.
    """
    from irs_torch import __version__

    groups: dict = {}
    for sw in sweeps:
        for p in sw["points"]:
            groups.setdefault((p["curve"], p["x"]), []).append(p)
    rows = []
    for (curve, x), ps in groups.items():
        ok = [p for p in ps if math.isfinite(p["max_crb"]) and math.isfinite(p["cold_max_crb"])]
        cold = np.array([p["cold_max_crb"] for p in ok])
        fin = np.array([p["max_crb"] for p in ok])
        src = [str(p.get("source")) for p in ps]
        rows.append({"figure": fig, "curve": curve, "x_name": ps[0]["x_name"], "x": x,
                     "mean_cold_max_crb": float(cold.mean()) if ok else float("nan"),
                     "mean_max_crb": float(fin.mean()) if ok else float("nan"),
                     "improved": int(np.sum(fin < cold * (1 - 1e-6))),
                     "max_gain": float(np.max(cold / fin)) if ok else float("nan"),
                     "from_cold": sum(s == "cold" for s in src), "from_down": sum(s.startswith("down") for s in src),
                     "from_up": sum(s.startswith("up") for s in src), "count": len(ps),
                     "seeds": " ".join(str(p["seed"]) for p in sorted(ps, key=lambda p: p["seed"])),
                     "mean_time_s": float(np.mean([p["time"] for p in ps])),
                     "mean_cold_time_s": float(np.mean([p["cold_time"] for p in ps]))})
    rows.sort(key=lambda r: (r["curve"], r["x"]))
    n_mono = sum(bool(sw["monotone"]) for sw in sweeps)
    path = Path(path)
    from irs_torch.outputs import atomic_open

    with atomic_open(path, "w", newline="") as f:
        f.write(f"# irs-torch {__version__} monotone sweep of {fig}: {n_mono} of {len(sweeps)} channel draws "
                f"non-increasing in every budget; mean time per draw "
                f"{np.mean([sw['time'] for sw in sweeps]):.0f} s, {np.mean([sw['n_solves'] for sw in sweeps]):.0f} "
                f"AO runs; solver options {json.dumps(sweeps[0]['solver_options'])}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def aggregate(records: list[dict]) -> list[dict]:
    """Mean / spread / count of max-CRB per (curve, x), over successful realisations."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["curve"], r["x"]), []).append(r)
    rows = []
    for (curve, x), rs in groups.items():
        ok = [r for r in rs if r.get("success") and math.isfinite(r.get("max_crb", float("nan")))]
        v = np.array([r["max_crb"] for r in ok], dtype=float)
        r0 = rs[0]
        rows.append({
            "figure": r0["fig"], "curve": curve, "method": r0["method"], "x_name": r0["x_name"], "x": x,
            "mean_max_crb": float(v.mean()) if len(v) else float("nan"),
            "median_max_crb": float(np.median(v)) if len(v) else float("nan"),
            "std_max_crb": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min_max_crb": float(v.min()) if len(v) else float("nan"),
            "max_max_crb": float(v.max()) if len(v) else float("nan"),
            "count": len(v), "failed": len(rs) - len(v),
            "seeds": " ".join(str(r["seed"]) for r in sorted(ok, key=lambda r: r["seed"])),
            "mean_time_s": float(np.mean([r.get("time", float("nan")) for r in rs])),
            "params": json.dumps(r0["params"], sort_keys=True),
        })
    rows.sort(key=lambda r: (r["curve"], r["x"]))
    return rows


def write_csv(rows: list[dict], path: Path, fig: str, solver_options: dict | None = None) -> Path:
    """CSV with a commented header (version, figure, solver options) then one row per point."""
    from irs_torch import __version__

    path = Path(path)
    from irs_torch.outputs import atomic_open

    with atomic_open(path, "w", newline="") as f:
        f.write(f"# irs-torch {__version__} reproduction of {fig}; solver options {json.dumps(solver_options or {})}; "
                f"scenario: paper preset (defaults in docs/assumptions.md), channels drawn from the listed seeds\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["figure"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def read_csv(path) -> list[dict]:
    with open(path) as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    rows = list(csv.DictReader(lines))
    for r in rows:
        for k in ("x", "mean_max_crb", "median_max_crb", "std_max_crb", "min_max_crb", "max_max_crb", "mean_time_s"):
            r[k] = float(r[k])
        for k in ("count", "failed"):
            r[k] = int(r[k])
    return rows

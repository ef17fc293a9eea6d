"""What a data set holds and whether it is sound: :func:`dataset_info` (counts, CRB statistics, winning starts:
``irs-torch dataset info``) and the integrity checks (:func:`verify_dataset`: ``dataset info --verify`` and
training's check before its first epoch; :func:`check_integrity`, :func:`check_manifest`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from irs_torch.data import shards as _sh
from irs_torch.data.dataset import entry_rows, scenario_from_batch


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
    winners: dict[str, int] = {}
    for sh in m["shards"]:
        p = root / sh["file"]
        a = _sh.read_shard_arrays(p, names=names, sizes=sizes, rows=entry_rows(sh))
        for k in names:
            cols[k].append(a[k])
        for name in _sh.read_found_by(p).values():
            kind = _sh.start_kind(name)
            winners[kind] = winners.get(kind, 0) + 1
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
        "found_by": dict(sorted(winners.items(), key=lambda kv: -kv[1])),
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
                                names=specs, sizes=m["sizes"])
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

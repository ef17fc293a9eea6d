"""Generation of solver-labelled data sets: the driver that writes HDF5 shards and the manifest.

:func:`generate_dataset` is the driver behind ``irs-torch dataset generate``. The work is
embarrassingly parallel: :func:`irs_torch.data.instance.solve_instance` maps ``(config,
instance_id)`` to one record and depends on nothing else, so it runs in-process (``workers=1``), in
a local process pool (:class:`irs_torch.data.backends.LocalBackend`, the default) or on a Ray cluster
(:class:`irs_torch.data.ray_backend.RayBackend`), with the same output.

Resumability. Instance ``i`` belongs to shard ``i // shard_size``. A shard is written (atomically,
see :mod:`irs_torch.data.shards`) once all its instances are done; the manifest is rewritten
atomically at the start, after every shard and at the end. A restarted run keeps every existing
shard that verifies (opens, same config hash, its id range covered exactly once by stored and
failed ids, and its SHA-256 equals the one the manifest recorded when it was written; a shard
without a recorded checksum gets one) and computes only the missing shards, so a killed run restarted completes with no
duplicate or missing instance. Failed instances (any exception while sampling or solving, a
non-finite solution, a crashed worker) are recorded in their shard's ``failures`` attribute and
the manifest, and skipped; ``retry_failed=True`` solves them again. Instances are independent of
the order and the worker that computes them, so the result equals an uninterrupted run instance
by instance (up to the timings ``solve_time`` and ``cpu_time``).
"""
from __future__ import annotations

import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from irs_torch.data import shards as sh
from irs_torch.data.distribution import REJECTION_RULE, SEED_RULE, DatasetConfig, instance_seed, load_config
from irs_torch.data.parallel import make_backend
from irs_torch.outputs import DirLock, file_sha256


# ---------------------------------------------------------------------------------- the driver
def versions() -> dict:
    """Package and solver versions recorded in the manifest."""
    from importlib import metadata

    import irs_torch

    # "solver": the solver is part of the package, so its version is the package's
    out = {"irs_torch": irs_torch.__version__, "python": platform.python_version(), "solver": irs_torch.__version__}
    for pkg in ("numpy", "torch", "cvxpy", "scs", "clarabel", "h5py", "ray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def shard_attributes(cfg: DatasetConfig, index: int, first_id: int, stop_id: int, failures: list) -> dict:
    import irs_torch

    return {
        "format": sh.SHARD_FORMAT, "format_version": sh.FORMAT_VERSION, "version": irs_torch.__version__,
        "M": cfg.M, "N_h": cfg.N_h, "N_v": cfg.N_v, "L": cfg.L, "d_h": cfg.d_h, "d_v": cfg.d_v,
        "d_bs": cfg.d_bs, "wavelength": cfg.wavelength, "active": int(cfg.active), "K_db": cfg.K_db,
        "C0_db": cfg.C0_db, "alpha": cfg.alpha, "beta_model": cfg.beta_model, "sigma_rcs": cfg.sigma_rcs,
        "dataset_seed": cfg.seed, "config": cfg.canonical_json(), "config_sha256": cfg.sha256(),
        "shard_index": index, "first_id": first_id, "stop_id": stop_id,
        "failures": json.dumps(sorted(failures, key=lambda x: x["instance_id"])),
    }


class _Lock(DirLock):
    """The data-set folder's lock (:class:`irs_torch.outputs.DirLock` on ``DIR/.lock``)."""

    def __init__(self, root: Path):
        super().__init__(root, "--out")


def _config_diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    diffs = [k for k in keys if a.get(k) != b.get(k)]
    return ", ".join(f"{k}: {a.get(k)!r} (existing) vs {b.get(k)!r} (requested)" for k in diffs[:3])


def generate_dataset(out, num: int, config=None, *, workers: int | None = None, backend: str = "local",
                     address: str | None = None, seed: int | None = None, shard_size: int | None = None,
                     retry_failed: bool = False, progress: bool = True, log=None, force: bool = False) -> dict:
    """Generate (or resume) the data set ``out`` of ``num`` instances; returns the final manifest.

    config: a :class:`DatasetConfig`, a YAML/JSON path, a preset name, a dict, or None (resume: the
    existing manifest's config; new: the ``paper`` preset). ``seed`` / ``shard_size`` override the
    config's. workers: processes (local) or CPUs to use (Ray; default: the cluster's). backend:
    "local" or "ray" (``address`` as for ``ray.init``). progress: a tqdm bar (instances/s, ETA) on
    stderr. log: a callable for one-line notes (default: print to stderr).

    A directory whose ``shards/`` holds files but that has no manifest.json (the manifest was lost,
    or the files belong to something else) is refused, so that nothing is overwritten silently.
    force=True proceeds: shard files written under the same config for the same id ranges are
    reused, every other ``shard-*.h5`` is deleted, and each is named in the log; other files in
    ``shards/`` are left alone. On a directory with a manifest, a resume never discards finished work
    silently: a manifest whose config no longer hashes to its ``config_sha256``, or shards written
    under another config than the manifest's, are an error; force=True recomputes those shards.
    """
    out = Path(out)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if isinstance(num, bool) or int(num) != num or num < 1:
        raise ValueError(f"num must be an integer >= 1, got {num!r}")
    num = int(num)
    mpath = out / sh.MANIFEST_NAME
    old = sh.read_manifest(out) if mpath.exists() else None
    if config is None and old is not None:
        cfg = DatasetConfig.from_dict(old["config"], source=str(mpath))
    else:
        cfg = load_config(config)
    over = {k: v for k, v in (("seed", seed), ("shard_size", shard_size)) if v is not None}
    if over:
        cfg = cfg.replace(**over)
    if old is not None:
        oc = DatasetConfig.from_dict(old["config"], source=str(mpath))
        if old.get("config_sha256") != oc.sha256() and not force:
            raise ValueError(f"{mpath}: field config_sha256 {old.get('config_sha256')!r} is not the SHA-256 of its "
                             f"config ({oc.sha256()!r}): the manifest's config was edited after the shards were "
                             f"written; restore it, or pass --force to recompute the shards of another config")
        if oc.canonical_json() != cfg.canonical_json():
            raise ValueError(f"{out} holds a data set with a different config "
                             f"({_config_diff(oc.to_dict(), cfg.to_dict())}); "
                             f"use the same config to resume, or a new --out")
        if num < int(old["num_instances"]):
            # Shrinking is safe only while no stored shard would be cut or left beyond the new end.
            ss, n_old = int(cfg.shard_size), int(old["num_instances"])
            cut = [
                p.name
                for k in range(num // ss, math.ceil(n_old / ss))
                if min((k + 1) * ss, n_old) != min((k + 1) * ss, num) and (p := sh.shard_path(out, k)).exists()
            ]
            if cut:
                raise ValueError(
                    f"{out} holds a data set of {n_old} instances and num={num} is smaller: shard(s) "
                    f"{', '.join(cut)} already hold instances past {num} (a data set can be extended; "
                    f"it can be shrunk only before such shards are written)"
                )
            log(
                f"irs-torch: {out}: shrinking the data set from {n_old} to {num} instances (no shard past "
                f"instance {num} was written)"
            )
    elif out.exists() and any(p.name not in (".lock", sh.SHARDS_DIR) for p in out.iterdir()):
        raise ValueError(f"{out} exists, is not empty and has no {sh.MANIFEST_NAME}: not a data set directory")
    elif (found := _files_without_manifest(out)) and not force:
        raise ValueError(
            f"{out} has no {sh.MANIFEST_NAME} but {out / sh.SHARDS_DIR} holds {len(found)} file(s) "
            f"({_names(found)}): refusing to overwrite them; use a new --out, move them away, "
            f"or pass --force to reuse the shards of the same config and delete the others"
        )
    # Validate that the distribution can produce an instance at all before starting workers.
    try:
        cfg.draw(np.random.default_rng(instance_seed(cfg.seed, 0)))
    except RuntimeError as e:
        raise ValueError(f"config: instance 0: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    (out / sh.SHARDS_DIR).mkdir(exist_ok=True)
    bk = make_backend(backend, workers, address)
    with _Lock(out):
        if old is None and force:
            if mpath.exists():
                raise ValueError(
                    f"{out}: a {sh.MANIFEST_NAME} appeared while starting (another writer?); "
                    f"rerun without --force to resume it"
                )
            _discard_foreign_shards(out, num, cfg, log)
        return _run(out, num, cfg, bk, retry_failed, progress, log, old, force)


def _files_without_manifest(out: Path) -> list[Path]:
    """The files in ``out/shards/`` (sorted; temporary files of a killed run excluded)."""
    sdir = out / sh.SHARDS_DIR
    if (out / sh.MANIFEST_NAME).exists() or not sdir.is_dir():
        return []
    return sorted(p for p in sdir.iterdir() if not (p.name.startswith(".shard-") and p.name.endswith(".tmp")))


def _names(paths: list[Path], n: int = 5) -> str:
    head = ", ".join(p.name for p in paths[:n])
    return head + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _discard_foreign_shards(out: Path, num: int, cfg: DatasetConfig, log):
    """--force on a ``shards/`` without manifest: keep the shards that verify against ``cfg`` and
    their id range, delete the other ``shard-*.h5`` files, leave any other file; log each group."""
    ss, sha = cfg.shard_size, cfg.sha256()
    specs = sh.field_specs(cfg.L, cfg.N, cfg.M, cfg.history_length)
    names = {sh.shard_name(k): k for k in range(math.ceil(num / ss))}
    kept, dropped, other = [], [], []
    for p in _files_without_manifest(out):
        if not (p.is_file() and p.name.startswith("shard-") and p.name.endswith(".h5")):
            other.append(p)
            continue
        k = names.get(p.name)
        if k is not None:
            try:
                sh.verify_shard(p, config_sha256=sha, first_id=k * ss, stop_id=min((k + 1) * ss, num), names=specs)
                kept.append(p)
                continue
            except (sh.ShardError, FileNotFoundError):
                pass
        dropped.append(p)
    for p in dropped:
        p.unlink()
    sdir = out / sh.SHARDS_DIR
    if dropped:
        log(f"irs-torch: --force: deleted {len(dropped)} shard file(s) of another config or id range from {sdir}: "
            f"{_names(dropped, 20)}")
    if kept:
        log(f"irs-torch: --force: reusing {len(kept)} shard file(s) written under the same config: {_names(kept, 20)}")
    if other:
        log(f"irs-torch: --force: left {len(other)} other file(s) in {sdir} untouched: {_names(other, 20)}")


def _foreign_shards(out: Path, n_shards: int, sha: str) -> list[str]:
    """Names of the existing shards of ``out`` (indices < n_shards) written under another config hash."""
    names = []
    for s in range(n_shards):
        p = sh.shard_path(out, s)
        if not p.exists():
            continue
        try:
            with sh.open_shard(p) as f:
                other = sh.shard_attrs(f).get("config_sha256")
        except (sh.ShardError, OSError, ValueError):
            continue  # unreadable: recomputed (it holds no finished work)
        if other != sha:
            names.append(p.name)
    return names


def _run(out: Path, num: int, cfg: DatasetConfig, bk, retry_failed: bool, progress: bool, log, old,
         force: bool = False) -> dict:
    from irs_torch.outputs import progress_bar

    ss = cfg.shard_size
    sdir = out / sh.SHARDS_DIR
    for p in sdir.glob(".shard-*.tmp"):  # left by a killed run; never a complete shard
        p.unlink()
    H = cfg.history_length
    specs = sh.field_specs(cfg.L, cfg.N, cfg.M, H)
    sha = cfg.sha256()
    n_shards = math.ceil(num / ss)
    foreign = _foreign_shards(out, n_shards, sha)
    if foreign and not force:  # never discard finished work because a config was edited
        raise ValueError(f"{out}: {len(foreign)} finished shard(s) ({_names([Path(n) for n in foreign])}) were "
                         f"written under another config than {out / sh.MANIFEST_NAME} records (config_sha256 "
                         f"{sha[:12]}...): resuming would recompute them; restore the manifest, or pass --force "
                         f"to recompute them")
    table: dict[int, dict] = {}  # shard index -> {file, index, first_id, stop_id, stored, failures}
    todo: dict[int, list[int]] = {}  # shard index -> ids to compute
    partial: set[int] = set()
    # Checksums recorded by the previous run: a shard whose bytes changed since is recomputed; one
    # without a record (an older manifest, or a run killed between shard and manifest) is recorded.
    recorded = {int(e["index"]): e for e in (old or {}).get("shards", []) if e.get("sha256")}
    for s in range(n_shards):
        lo, hi = s * ss, min((s + 1) * ss, num)
        p = sh.shard_path(out, s)
        if p.exists():
            try:
                info = sh.verify_shard(p, config_sha256=sha, first_id=lo, stop_id=hi, names=specs)
                digest = (sh.check_shard_checksum(out, recorded[s], num) if s in recorded else None) or file_sha256(
                    p
                )
            except sh.ShardError as e:
                log(f"irs-torch: warning: recomputing shard {s}: {e}")
            else:
                fails = info["attrs"]["failures"]
                table[s] = {
                    "file": f"{sh.SHARDS_DIR}/{p.name}",
                    "index": s,
                    "first_id": lo,
                    "stop_id": hi,
                    "sha256": digest,
                    "stored": info["n"],
                    "failures": fails,
                }
                if retry_failed and fails:
                    todo[s] = sorted(int(f["instance_id"]) for f in fails)
                    partial.add(s)
                continue
        todo[s] = list(range(lo, hi))
    created = old.get("created") if old else _now()
    t_start = time.time()
    state = {"elapsed": float(old.get("elapsed_s", 0.0)) if old else 0.0, "computed": 0}
    run_info = {"started": _now(), "host": platform.node(), "retry_failed": bool(retry_failed),
                "versions": versions()}
    past_runs = list(old.get("runs", [])) if old else []

    def manifest(complete: bool) -> dict:
        this = run_info | bk.describe() | {"computed": state["computed"], "updated": _now()}
        return _manifest(cfg, num, table, created, complete, state["elapsed"] + time.time() - t_start, specs,
                         past_runs + [this])

    sh.write_json_atomic(out / sh.MANIFEST_NAME, manifest(False))
    n_todo = sum(len(v) for v in todo.values())
    n_done = num - n_todo
    if n_todo and (old is not None):
        log(f"irs-torch: resuming {out}: {n_done} of {num} instances done, {n_todo} to compute")
    remaining = {s: len(v) for s, v in todo.items()}
    buf: dict[int, list] = {s: [] for s in todo}
    fbuf: dict[int, list] = {s: [] for s in todo}
    n_failed = sum(len(t["failures"]) for s, t in table.items() if s not in partial)
    order = [i for s in sorted(todo) for i in todo[s]]
    if order:
        bar = progress_bar(total=num, initial=n_done, unit="inst", desc="generate", progress=progress,
                           dynamic_ncols=True, smoothing=0.05)
        try:
            with bk:
                for rec in _records(bk, cfg, todo):
                    i = int(rec["instance_id"])
                    s = i // ss
                    if rec.get("failed"):
                        fbuf[s].append({k: rec[k] for k in ("instance_id", "seed", "error")})
                        n_failed += 1
                        msg = f"irs-torch: instance {i} (seed {rec['seed']}) failed: {rec['error']}"
                        bar.write(msg, file=sys.stderr) if progress else log(msg)
                    else:
                        buf[s].append(rec)
                    state["computed"] += 1
                    remaining[s] -= 1
                    bar.update(1)
                    bar.set_postfix(failed=n_failed, refresh=False)
                    if remaining[s] == 0:
                        _write(out, cfg, s, num, specs, buf.pop(s), fbuf.pop(s), s in partial, table)
                        sh.write_json_atomic(out / sh.MANIFEST_NAME, manifest(False))
        except BaseException:
            bar.close()
            sh.write_json_atomic(out / sh.MANIFEST_NAME, manifest(False))
            raise
        bar.close()
    m = manifest(True)
    sh.write_json_atomic(out / sh.MANIFEST_NAME, m)
    return m


def _label_chunk(task):
    """Worker task of the batched labels: ``(config dict, ids) -> records`` (module level: picklable)."""
    from irs_torch.data.instance import solve_chunk

    cfg_d, ids = task
    return solve_chunk(cfg_d, ids)


def _records(bk, cfg: DatasetConfig, todo: dict):
    """The records of every id in ``todo`` (shard index -> ids), as they complete: one solve per instance, or
    for the batched ``first-order`` effort chunks of :data:`irs_torch.data.instance.LABEL_CHUNK` ids of one
    shard labelled together (a chunk whose worker died yields a failure record for each of its ids)."""
    from irs_torch.data.instance import LABEL_CHUNK, batched_labels, failure_record

    order = [i for s in sorted(todo) for i in todo[s]]
    if not batched_labels(cfg):
        yield from bk.imap_unordered(cfg, order)
        return
    cfg_d = cfg.to_dict()
    chunks = [(cfg_d, ids[k:k + LABEL_CHUNK]) for s in sorted(todo) for ids in [todo[s]]
              for k in range(0, len(ids), LABEL_CHUNK)]
    for (_, ids), recs in bk.imap_tasks(_label_chunk, chunks):
        if isinstance(recs, BaseException):
            yield from (failure_record(i, cfg, f"{type(recs).__name__}: {recs}") for i in ids)
        else:
            yield from recs


def _write(out, cfg, s, num, specs, recs, fails, is_partial, table):
    ss = cfg.shard_size
    lo, hi = s * ss, min((s + 1) * ss, num)
    recs = sorted(recs, key=lambda r: int(r["instance_id"]))
    arrays = sh.stack_records(recs, specs)
    p = sh.shard_path(out, s)
    if is_partial:  # retried failures: merge with the rows already stored
        old = sh.read_shard_arrays(p, names=list(specs))
        order = np.argsort(np.concatenate([old["instance_id"], arrays["instance_id"]]), kind="stable")
        arrays = {k: np.concatenate([old[k], arrays[k]])[order] for k in specs}
    fails = sorted(fails, key=lambda x: x["instance_id"])
    attrs = shard_attributes(cfg, s, lo, hi, fails)
    won = {str(int(r["instance_id"])): str(r["found_by"]) for r in recs if "found_by" in r}
    if won:  # batched labels: the winning start of each instance (JSON: instance id -> start name)
        if is_partial:
            won = {**sh.read_found_by(p), **won}
        attrs["found_by"] = json.dumps(won, sort_keys=True)
    sh.write_shard(p, arrays, attrs)
    table[s] = {
        "file": f"{sh.SHARDS_DIR}/{p.name}",
        "index": s,
        "first_id": lo,
        "stop_id": hi,
        "sha256": file_sha256(p),
        "stored": int(len(arrays["instance_id"])),
        "failures": fails,
    }


def _manifest(cfg: DatasetConfig, num: int, table: dict, created: str, complete: bool, elapsed: float,
              specs: dict, runs: list) -> dict:
    shards = [{k: v for k, v in table[s].items() if k != "failures"} | {"failed": len(table[s]["failures"])}
              for s in sorted(table)]
    failures = [f for s in sorted(table) for f in table[s]["failures"]]
    stored = sum(t["stored"] for t in table.values())
    return {
        "format": sh.MANIFEST_FORMAT,
        "format_version": sh.FORMAT_VERSION,
        "created": created,
        "updated": _now(),
        "complete": bool(complete),
        "elapsed_s": round(elapsed, 3),
        "num_instances": num,
        "shard_size": cfg.shard_size,
        "num_shards": math.ceil(num / cfg.shard_size),
        "dataset_seed": cfg.seed,
        "seed_rule": SEED_RULE,
        "rejection_rule": REJECTION_RULE,
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        "sizes": {
            "M": cfg.M,
            "N_h": cfg.N_h,
            "N_v": cfg.N_v,
            "N": cfg.N,
            "L": cfg.L,
            "history_length": cfg.history_length,
        },
        "versions": runs[-1]["versions"],
        "generator": {k: v for k, v in runs[-1].items() if k != "versions"},
        "runs": runs,
        "counts": {"requested": num, "stored": stored, "failed": len(failures),
                   "pending": num - stored - len(failures)},
        "shards": shards, "failures": failures,
        "fields": {k: {"shape": ["K", *v[0]], "dtype": np.dtype(v[1]).str, "meaning": v[2]} for k, v in specs.items()},
        "splits": {"rule": "u = splitmix64(instance_id) / 2**64; train if u < f_train, val if u < f_train + f_val, "
                           "else test (irs_torch.data.dataset.split_of)",
                   "default_fractions": {"train": 0.8, "val": 0.1, "test": 0.1}},
    }

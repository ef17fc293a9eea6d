"""Bit-identity check between two source trees of irs-torch (e.g. before and after a restructuring).

    python scripts/check_identical.py BEFORE_TREE AFTER_TREE [--work DIR] [--keep]

Runs the same small workload with each tree's code (``PYTHONPATH=TREE``, one thread, the command line, which
is the same in both layouts) and compares the outputs exactly:

- solutions (``.npz``): every array with ``np.array_equal`` (same dtype and shape; NaN equal to NaN), the
  JSON metadata number for number (``repr`` of every float);
- JSON, JSONL and CSV records: every number and string equal, except timings, paths and the git commit (keys or
  columns named like ``time``, ``seconds``, ``path``, ``t_p2``...; the tree and output folders are replaced by
  placeholders).

Workload (small sizes, minutes in all): a small paper-geometry scenario solved by the default solver, the three
benchmarks (transmit-only, reflective-only, passive) and a robust design over a box; the mismatch map of a
design; the learned path (``solve --method learned``, first-order refinement) on a batch of three random
scenarios and with ``--refine ao`` on one of them; Fig. 4 and Fig. 2 (a monotone sweep) of ``reproduce`` on a
tiny grid; one quality-suite record (``bench quality``, effort legacy, one instance, no update of the
best-known designs). Prints one line per compared file and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SMALL = ["--M", "8", "--N-h", "2", "--N-v", "2"]
QUALITY_ID = "paper-m16-s0-a8/pt1-ps0.0001"
VOLATILE = ("time", "seconds", "elapsed", "wall", "path", "created", "date", "host", "duration", "eta", "commit")


def steps(tree: Path, out: Path) -> list[tuple[str, list[str]]]:
    """(name, irs-torch arguments) of the workload, outputs under ``out``."""
    s, b = str(out / "s.npz"), str(out / "batch.npz")
    return [
        ("scenario", ["scenario", "--preset", "paper", "--seed", "3", *SMALL, "-o", s]),
        ("batch", ["scenario", "--preset", "random", "--seed", "5", "--count", "3", "-o", b]),
        ("ao", ["solve", "--scenario", s, "--no-progress", "-o", str(out / "ao.npz")]),
        ("transmit-only", ["solve", "--scenario", s, "--method", "transmit-only", "--no-progress",
                           "-o", str(out / "transmit.npz")]),
        ("reflective-only", ["solve", "--scenario", s, "--method", "reflective-only", "--no-progress",
                             "-o", str(out / "reflective.npz")]),
        ("passive", ["solve", "--scenario", s, "--method", "passive", "--no-progress", "-o", str(out / "passive.npz")]),
        ("robust", ["solve", "--scenario", s, "--region", "box:1.5", "--region-points", "5", "--max-iter", "3",
                    "--effort", "fast", "--no-progress", "-o", str(out / "robust.npz")]),
        ("mismatch", ["mismatch", "--scenario", s, "--solution", str(out / "ao.npz"), "--extent", "1.5", "--grid", "5",
                      "--out", str(out / "mismatch")]),
        ("learned", ["solve", "--scenario", b, "--method", "learned", "--no-progress", "-o", str(out / "learned.npz")]),
        ("learned-ao", ["solve", "--scenario", b, "--index", "1", "--method", "learned", "--refine", "ao",
                        "--no-progress", "-o", str(out / "learned_ao.npz")]),
        ("fig4", ["reproduce", "fig4", "--out", str(out / "fig"), "--grid", "4", "8", "--realisations", "1",
                  "--set", "N_h=2", "--set", "N_v=2", "--max-iter", "3", "--workers", "1", "--no-progress"]),
        ("fig2", ["reproduce", "fig2", "--out", str(out / "fig"), "--grid", "1", "10", "--realisations", "1",
                  "--set", "N_h=2", "--set", "N_v=2", "--set", "M=8", "--max-iter", "3", "--workers", "1",
                  "--no-progress"]),
        ("quality", ["bench", "quality", "--ids", QUALITY_ID, "--methods", "legacy", "--suite",
                     str(tree / "benchmarks" / "quality"), "--out", str(out / "quality"), "--no-update-best",
                     "--workers", "1"]),
    ]


def run_tree(tree: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("IRS_TORCH_CHECKPOINTS", None)
    took = {}
    for name, args in steps(tree, out):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "irs_torch", *args], cwd=out, env=env, capture_output=True,
                           text=True)
        took[name] = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{tree}: step {name} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
        print(f"  {tree.name}: {name:16s} {took[name]:6.1f} s", flush=True)
    return took


def volatile(key) -> bool:
    """Timings and paths: ``times``, ``seconds``, ..., and per-step timings such as ``history_t_p2``."""
    k = str(key).lower()
    return any(v in k for v in VOLATILE) or re.search(r"(^|_)t_[a-z0-9]+$", k) is not None


def normalise(x, roots):
    if isinstance(x, dict):
        return {k: normalise(v, roots) for k, v in x.items() if not volatile(k)}
    if isinstance(x, list):
        return [normalise(v, roots) for v in x]
    if isinstance(x, float):
        return "nan" if math.isnan(x) else repr(x)
    if isinstance(x, str):
        for r, tag in roots:
            x = x.replace(r, tag)
        return x
    return x


def diff(a, b, where="") -> list[str]:
    if type(a) is not type(b):
        return [f"{where}: {type(a).__name__} vs {type(b).__name__}"]
    if isinstance(a, dict):
        out = [f"{where}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        for k in sorted(set(a) & set(b), key=str):
            out += diff(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in diff(u, v, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {str(a)[:80]} vs {str(b)[:80]}"]


def load_json_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def compare_npz(fa: Path, fb: Path, roots_a, roots_b) -> list[str]:
    out = []
    with np.load(fa, allow_pickle=False) as A, np.load(fb, allow_pickle=False) as B:
        if set(A.files) != set(B.files):
            return [f"keys differ: {sorted(set(A.files) ^ set(B.files))}"]
        for k in sorted(A.files):
            a, b = A[k], B[k]
            if a.dtype.kind in "US" and a.ndim == 0:  # JSON metadata stored as a string
                out += diff(normalise(load_json_text(str(a)), roots_a), normalise(load_json_text(str(b)), roots_b), k)
            elif volatile(k):
                continue
            elif a.dtype != b.dtype or a.shape != b.shape:
                out.append(f"{k}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
            elif not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
                gap = np.max(np.abs(a - b)) if a.dtype.kind in "fciu" else "?"
                out.append(f"{k}: arrays differ (max |a - b| = {gap})")
    return out


def compare_csv(fa: Path, fb: Path, roots_a, roots_b) -> list[str]:
    """Rows by column name (the first line not starting with ``#`` is the header); comment lines compared with
    durations (``12.3 s``) masked."""
    def rows(f, roots):
        lines = f.read_text().splitlines(keepends=True)
        comments = [re.sub(r"[0-9.]+ s\b", "<s>", x) for x in lines if x.startswith("#")]
        body = "".join(x for x in lines if not x.startswith("#"))
        r = list(csv.DictReader(io.StringIO(body)))
        return [normalise(comments, roots)] + [{k: normalise(v, roots) for k, v in row.items() if not volatile(k)}
                                               for row in r]

    return diff(rows(fa, roots_a), rows(fb, roots_b), fa.name)


def compare_file(fa: Path, fb: Path, roots_a, roots_b) -> list[str] | None:
    if fa.suffix == ".npz":
        return compare_npz(fa, fb, roots_a, roots_b)
    if fa.suffix == ".csv":
        return compare_csv(fa, fb, roots_a, roots_b)
    if fa.suffix == ".json":
        return diff(normalise(json.loads(fa.read_text()), roots_a), normalise(json.loads(fb.read_text()), roots_b))
    if fa.suffix == ".jsonl":
        la = [normalise(json.loads(x), roots_a) for x in fa.read_text().splitlines() if x.strip()]
        lb = [normalise(json.loads(x), roots_b) for x in fb.read_text().splitlines() if x.strip()]
        key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731 - completion order of parallel tasks may differ
        return diff(sorted(la, key=key), sorted(lb, key=key))
    return None  # pictures and logs are not compared


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--work", type=Path, default=None, help="output folder (default: a temporary one)")
    p.add_argument("--compare-only", action="store_true", help="compare WORK/before and WORK/after as they are")
    p.add_argument("--keep", action="store_true", help="keep the outputs")
    p.add_argument("--reuse-before", type=Path, default=None,
                   help="outputs of an earlier run of the workload with BEFORE_TREE (its WORK/before): not run again")
    a = p.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="check-identical-"))
    trees = [a.before.resolve(), a.after.resolve()]
    outs = [a.reuse_before.resolve() if a.reuse_before else work / "before", work / "after"]
    for k, (t, o) in enumerate(zip(trees, outs)):
        if a.compare_only or (k == 0 and a.reuse_before):
            print(f"reusing the outputs of {t} in {o}", flush=True)
            continue
        if o.exists():
            shutil.rmtree(o)
        print(f"running the workload with {t}", flush=True)
        run_tree(t, o)
    roots = [[(str(o), "<OUT>"), (str(t), "<TREE>")] for t, o in zip(trees, outs)]
    files_a = sorted(f.relative_to(outs[0]) for f in outs[0].rglob("*") if f.is_file())
    files_b = sorted(f.relative_to(outs[1]) for f in outs[1].rglob("*") if f.is_file())
    bad = 0
    if files_a != files_b:
        print(f"DIFFERENT FILE SETS: {sorted(set(map(str, files_a)) ^ set(map(str, files_b)))}")
        bad += 1
    n = 0
    for rel in files_a:
        if rel not in files_b:
            continue
        d = compare_file(outs[0] / rel, outs[1] / rel, roots[0], roots[1])
        if d is None:
            continue
        n += 1
        print(f"{'identical' if not d else 'DIFFERENT'}  {rel}")
        for line in d[:10]:
            print(f"    {line}")
        bad += bool(d)
    print(f"{n} files compared, {bad} different")
    if not a.keep and a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

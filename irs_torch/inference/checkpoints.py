"""Which shipped model serves a scenario.

Without an explicit checkpoint the learned pipeline uses the shipped model in ``checkpoints/`` that matches the
scenario's array sizes (M, N_h, N_v, L) and whose training budgets cover it (:func:`find_checkpoint`). The
directories searched are :func:`checkpoint_dirs`: those listed in the environment variable
``IRS_TORCH_CHECKPOINTS`` (``os.pathsep``-separated) if it is set, else the installed package's data folder or the
repository's ``checkpoints/``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from irs_torch.learn.checkpoint import default_checkpoint_dirs
from irs_torch.scenario import Scenario

CHECKPOINT_DIRS = default_checkpoint_dirs()  # the installed package's data folder, or the repository's
CHECKPOINTS_ENV = "IRS_TORCH_CHECKPOINTS"


def checkpoint_dirs(dirs=None) -> list[Path]:
    """Directories searched for shipped models: ``dirs`` if given, else ``$IRS_TORCH_CHECKPOINTS``
    (``os.pathsep``-separated) if set, else :data:`CHECKPOINT_DIRS`."""
    if dirs is None:
        env = os.environ.get(CHECKPOINTS_ENV)
        dirs = [d for d in env.split(os.pathsep) if d] if env else CHECKPOINT_DIRS
    elif isinstance(dirs, (str, Path)):
        dirs = [dirs]
    return [Path(d) for d in dirs]


def shipped_checkpoints(dirs=None) -> list[Path]:
    """Model files (``*.pt``) in :func:`checkpoint_dirs` (listed, not opened)."""
    out = []
    for d in checkpoint_dirs(dirs):
        if d.is_dir():
            out.extend(sorted(d.glob("*.pt")))
    return out


def budget_preference(info: dict, scenario: Scenario) -> tuple:
    """Sort key among model files that fit a scenario's sizes (smaller is preferred): first the models
    whose training budget ranges (sidecar ``budgets``: P_t, P_s, a_max) contain every budget of the
    scenario (all batch items), the most specialised first (smallest log-volume of the ranges: the
    single-budget paper model at exactly its budget point, else the budget-conditioned model); then
    those that do not contain them, the widest first; then files that record no ranges."""
    b = info.get("budgets")
    if not b:
        return (2, 0.0)
    contains, logvol = True, 0.0
    for k in ("P_t", "P_s", "a_max"):
        lo, hi = float(b[k][0]), float(b[k][1])
        v = torch.as_tensor(getattr(scenario, k), dtype=torch.float64)
        contains &= bool((v >= lo * (1 - 1e-9)).all()) and bool((v <= hi * (1 + 1e-9)).all())
        logvol += math.log(hi / lo) if hi > lo else 0.0
    return (0, logvol) if contains else (1, -logvol)


def find_checkpoint(scenario: Scenario, dirs=None) -> Path:
    """The shipped model for the scenario's sizes (and element spacings d_h, d_v and ``active``), searched in
    :func:`checkpoint_dirs` (``dirs``): a per-size model where one fits, else the any-size model
    (:mod:`irs_torch.learn.anysize`; sidecar format ``irs-torch/warm-start-anysize-info``) whose training size
    ranges hold the scenario's sizes, else (with a UserWarning naming the sizes outside) any any-size model for
    the scenario's ``active``; FileNotFoundError listing the directories and what they hold otherwise.

    The scan never opens (unpickles) a model file: it reads each ``*.pt``'s JSON sidecar
    (:func:`irs_torch.learn.checkpoint.read_sidecar`, written by ``export_model``), and checks the
    chosen file's sha256 against it. Among several that fit, :func:`budget_preference` picks the one
    whose training budgets cover the scenario's. Files without a valid sidecar, or whose bytes changed since it
    was written, are skipped with a UserWarning naming them (and listed in the error if nothing
    matches); the model is then loaded weights-only by :func:`irs_torch.learn.checkpoint.load_model`."""
    import warnings

    from irs_torch.learn import anysize
    from irs_torch.learn.checkpoint import read_sidecar
    from irs_torch.outputs import file_sha256

    seen, matches, any_size = [], [], []
    want = {"M": scenario.M, "N_h": scenario.N_h, "N_v": scenario.N_v, "L": scenario.L}
    for p in shipped_checkpoints(dirs):
        if anysize.is_anysize_sidecar(p):  # a model for every size: the fallback when no per-size model fits
            try:
                info = anysize.read_sidecar(p)
            except ValueError as e:
                warnings.warn(f"checkpoint scan: skipped {e}", stacklevel=2)
                seen.append(f"{p.name} (skipped: no valid sidecar {p.with_suffix('.json').name})")
                continue
            rng = info["size_ranges"]
            seen.append(f"{p.name} (any size: " + ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in rng.items()) + ")")
            if bool(info["active"]) == bool(scenario.active):
                out = anysize.outside_ranges(scenario, rng)
                any_size.append((len(out), str(p), p, out))
            continue
        try:
            info = read_sidecar(p)
        except ValueError as e:
            warnings.warn(f"checkpoint scan: skipped {e}", stacklevel=2)
            seen.append(f"{p.name} (skipped: no valid sidecar {p.with_suffix('.json').name})")
            continue
        sizes = {k: int(info["sizes"][k]) for k in ("M", "N_h", "N_v", "L")}
        spacing = {k: float(info[k]) for k in ("d_h", "d_v")}
        seen.append(f"{p.name} {sizes}" + ("" if spacing == {"d_h": 0.5, "d_v": 0.5} else f" {spacing}"))
        if sizes == want and spacing == {"d_h": float(scenario.d_h), "d_v": float(scenario.d_v)} and \
                bool(info["active"]) == bool(scenario.active):
            if file_sha256(p) != info["sha256"]:
                warnings.warn(f"checkpoint scan: skipped {p}: its sha256 differs from its sidecar's (the file "
                              f"changed after the sidecar was written); rewrite the sidecar with "
                              f"`python -m irs_torch.learn.checkpoint sidecar {p}` if the file is right", stacklevel=2)
                seen[-1] = f"{p.name} (skipped: sha256 differs from its sidecar)"
                continue
            matches.append((budget_preference(info, scenario), str(p), p))
    if matches:
        pref, _, best = min(matches)
        if pref[0] == 1:
            b = read_sidecar(best)["budgets"]
            warnings.warn(f"the scenario's budgets (P_t, P_s, a_max) lie outside the training ranges of every model "
                          f"for its sizes; using {best.name} (trained on P_t {b['P_t']} W, P_s {b['P_s']} W, a_max "
                          f"{b['a_max']}): its network design may be far from optimal (refinement helps)", stacklevel=2)
        return best
    for n_out, _, p, out in sorted(any_size):  # the any-size model whose size ranges hold the scenario's sizes
        if file_sha256(p) != anysize.read_sidecar(p)["sha256"]:
            warnings.warn(f"checkpoint scan: skipped {p}: its sha256 differs from its sidecar's (the file changed "
                          f"after the sidecar was written)", stacklevel=2)
            continue
        if n_out:
            warnings.warn(f"no per-size model for M={scenario.M}, N_h={scenario.N_h}, N_v={scenario.N_v}, "
                          f"L={scenario.L}, and its sizes lie outside the training ranges of the any-size model "
                          f"{p.name}: {', '.join(out)}; using it anyway (its designs stay feasible, their quality "
                          f"there is untested; refinement helps)", stacklevel=2)
        return p
    raise FileNotFoundError(
        f"no shipped checkpoint for M={scenario.M}, N_h={scenario.N_h}, N_v={scenario.N_v}, L={scenario.L} "
        f"(d_h={float(scenario.d_h):g}, d_v={float(scenario.d_v):g}, active={scenario.active}) "
        f"in {', '.join(str(d) for d in checkpoint_dirs(dirs))} "
        f"(set ${CHECKPOINTS_ENV} to search elsewhere); found: {'; '.join(seen) or 'none'}. "
        f"Train one (training/README.md) and pass --checkpoint"
        + ("; a model file without a sidecar gets one with `python -m irs_torch.learn.checkpoint sidecar FILE.pt`"
           if any("sidecar" in x for x in seen) else ""))

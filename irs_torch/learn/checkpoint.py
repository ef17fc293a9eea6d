"""Loading, exporting and using trained warm-start models.

Two checkpoint kinds are accepted everywhere:

- a Lightning checkpoint written during training (``.ckpt``: weights, optimizer state,
  hyperparameters, the ``irs_torch`` entry with the data set description), for resuming;
- a slim model file (:func:`export_model`: hyperparameters + network weights + model-card
  metadata, no optimizer state; what ``checkpoints/`` ships).

Both record the sizes M, N_h, N_v, L; using a model for a scenario of other sizes raises a
ValueError that names them.

Safety: model files from outside are data, never code. Every load is ``torch.load(...,
weights_only=True)`` (tensors, numbers, strings, containers only); a file that needs anything else
(a pickled object, a legacy or crafted file) is refused with a ValueError naming it, and nothing in
it runs (:func:`irs_torch.learn.safe_load.read_checkpoint`). There is no unsafe fallback. The checkpoint
scan (:func:`irs_torch.inference.find_checkpoint`) does not open the model files at all: it reads the JSON
sidecar ``<stem>.json`` that :func:`export_model` writes next to each slim model file (:func:`write_sidecar`; format
:data:`SIDECAR_FORMAT`: sizes, element spacings, ``active``, the model file's sha256). For a model
file without one: ``python -m irs_torch.learn.checkpoint sidecar FILE.pt`` (a weights-only load).
"""
from __future__ import annotations

import inspect
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from irs_torch.learn.nets import WarmStartNet
from irs_torch.learn.safe_load import read_checkpoint
from irs_torch.outputs import apply_file_mode, dumps, file_sha256
from irs_torch.scenario import Scenario

MODEL_FORMAT = "irs-torch/warm-start-model"
# No Lightning import here (it costs seconds at start-up; the runtime CLI only needs the network):
# the sizes and the network's constructor arguments (module.SIZE_KEYS / module.NET_KEYS).
SIZE_KEYS = ("M", "N_h", "N_v", "L")
NET_KEYS = tuple(k for k in inspect.signature(WarmStartNet.__init__).parameters if k != "self")


SIDECAR_FORMAT = "irs-torch/warm-start-model-info"


def default_checkpoint_dirs() -> tuple[Path, ...]:
    """Where the shipped models (``*.pt`` with their ``*.json`` sidecars) are, existing folders only:
    the data folder ``irs_torch/checkpoints/`` of an installed package (``pip install .`` copies the
    repository's top-level ``checkpoints/*.pt`` and ``*.json`` there, pyproject.toml), then, in a source
    checkout (a ``pyproject.toml`` next to the package), the repository's ``checkpoints/``."""
    pkg = Path(__file__).resolve().parents[1]  # the irs_torch package folder
    out = []
    if (pkg / "checkpoints").is_dir():
        out.append(pkg / "checkpoints")
    repo = pkg.parent
    if (repo / "pyproject.toml").is_file() and (repo / "checkpoints").is_dir():
        out.append(repo / "checkpoints")
    return tuple(out)


def sidecar_path(path) -> Path:
    """The metadata sidecar of model file ``path``: ``<stem>.json`` next to it."""
    return Path(path).with_suffix(".json")


def _atomic_write_text(path: Path, text: str):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        apply_file_mode(fd)  # mkstemp made it 0600
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_sidecar(path) -> Path:
    """Write the JSON sidecar (:func:`sidecar_path`) of the model file ``path`` from a weights-only
    load of it: ``format`` (:data:`SIDECAR_FORMAT`), ``model_file`` (name), ``sha256`` and ``bytes``
    of the model file, ``sizes`` (M, N_h, N_v, L), ``d_h``, ``d_v`` (wavelengths), ``active``,
    ``model_format``, ``version`` and, when the checkpoint records its data set, ``budgets`` (the
    training ranges of P_t, P_s [W] and a_max, :func:`training_budgets`). Atomic. Refuses (ValueError)
    files that are not weights-only warm-start checkpoints. Returns the sidecar's path."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    missing = [k for k in SIZE_KEYS if k not in hp]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks the sizes {missing}")
    meta = ckpt.get("irs_torch", {}) if isinstance(ckpt.get("irs_torch"), dict) else {}
    info = {"format": SIDECAR_FORMAT, "model_file": path.name, "sha256": file_sha256(path),
            "bytes": path.stat().st_size, "sizes": {k: int(hp[k]) for k in SIZE_KEYS},
            "d_h": float(hp.get("d_h", 0.5)), "d_v": float(hp.get("d_v", 0.5)),
            "active": bool(hp.get("active", True)), "model_format": str(ckpt.get("format", "lightning-checkpoint")),
            "version": str(meta.get("version", ""))}
    budgets = training_budgets(meta)
    if budgets is not None:
        info["budgets"] = budgets
    out = sidecar_path(path)
    if out.resolve() == path.resolve():
        raise ValueError(f"{path}: a model file named *.json would be overwritten by its own sidecar; rename it *.pt")
    if out.exists():  # never overwrite a file that is not a sidecar
        try:
            other = json.loads(out.read_text()).get("format")
        except (ValueError, AttributeError, OSError):
            other = None
        if other != SIDECAR_FORMAT:
            raise ValueError(f"{out}: exists and is not a model sidecar (format {SIDECAR_FORMAT!r}); not overwritten: "
                             f"move it, or rename the model file {path.name}")
    _atomic_write_text(out, dumps(info, indent=2) + "\n")
    return out


BUDGET_KEYS = ("P_t", "P_s", "a_max")


def training_budgets(meta: dict) -> dict | None:
    """``{"P_t": [lo, hi], "P_s": [lo, hi], "a_max": [lo, hi]}`` (W, W, linear) of the data set a model
    was trained on, from a checkpoint's ``irs_torch`` entry (``dataset.config``); None if not recorded."""
    cfg = ((meta or {}).get("dataset") or {}).get("config") or {}
    try:
        out = {}
        for k in BUDGET_KEYS:
            v = cfg[k]
            lo, hi = (float(v), float(v)) if isinstance(v, (int, float)) else (float(v[0]), float(v[1]))
            out[k] = [lo, hi]
        return out
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def read_sidecar(path) -> dict:
    """The sidecar of model file ``path`` (JSON only; the model file is not opened). Raises
    ValueError naming the file, with what to do, if the sidecar is missing or malformed."""
    path = Path(path)
    sc = sidecar_path(path)
    fix = f"write it with `python -m irs_torch.learn.checkpoint sidecar {path}` (a weights-only load)"
    if not sc.is_file():
        raise ValueError(f"{path}: no metadata sidecar {sc.name} (the checkpoint scan never unpickles model "
                         f"files); {fix}")
    try:
        from irs_torch.limits import load_json_file

        info = load_json_file(sc, "model sidecar", max_bytes=1 << 20)  # size and nesting bounded
        if not isinstance(info, dict) or info.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format is not {SIDECAR_FORMAT!r}")
        sizes = info["sizes"]
        for k in SIZE_KEYS:
            if isinstance(sizes[k], bool) or not isinstance(sizes[k], int) or sizes[k] < 1:
                raise ValueError(f"sizes.{k} must be an integer >= 1, got {sizes[k]!r}")
        for k in ("d_h", "d_v"):
            if isinstance(info[k], bool) or not isinstance(info[k], (int, float)) or not info[k] > 0:
                raise ValueError(f"{k} must be a number > 0, got {info[k]!r}")
        if not isinstance(info["active"], bool) or not isinstance(info["sha256"], str):
            raise TypeError("active must be true/false and sha256 a string")
        for k, v in (info.get("budgets") or {}).items():  # optional: the training budget ranges
            if k not in BUDGET_KEYS or not (isinstance(v, list) and len(v) == 2 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v) and v[0] <= v[1]):
                raise ValueError(f"budgets.{k} must be [low, high] with 0 < low <= high, got {v!r}")
    except (ValueError, KeyError, TypeError) as e:
        what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{sc}: not a valid model sidecar ({what}); {fix}") from None
    return info


def load_model(path, scenario: Scenario | None = None) -> WarmStartNet:
    """The :class:`WarmStartNet` of a checkpoint (Lightning ``.ckpt`` or slim file), on CPU, in eval mode.

    ``net.hparams`` holds the training hyperparameters and ``net.meta`` the ``irs_torch`` entry
    (data set, metrics, version). With ``scenario``, raises ValueError unless its M, N_h, N_v, L
    match the checkpoint's. An any-size model file gives an
    :class:`irs_torch.learn.anysize.AnySizeNet` (same calls; it warns outside its size ranges).
    """
    ckpt = read_checkpoint(path)
    if ckpt.get("format") == "irs-torch/warm-start-anysize-model":  # one model for every size
        from irs_torch.learn.anysize import load_model as load_anysize

        return load_anysize(path, scenario)
    hp = dict(ckpt["hyper_parameters"])
    missing = [k for k in SIZE_KEYS if k not in hp]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks the sizes {missing}")
    sd = ckpt["state_dict"]
    if any(k.startswith("net.") for k in sd):
        sd = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
    kw = {k: hp[k] for k in NET_KEYS if k in hp}
    check_model_sizes(path, kw, sd)  # before the network is allocated
    net = WarmStartNet(**kw)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the recorded hyperparameters ({e})") from None
    net.eval()
    net.hparams = hp
    net.meta = dict(ckpt.get("irs_torch", {}))
    net.source = str(path)
    check_sidecar_claims(path, hp, net.meta)
    if scenario is not None:
        check_compatible(net, scenario, source=str(path))
    return net


def check_model_sizes(path, kw: dict, state_dict: dict) -> None:
    """Bound a model file's hyperparameters before its network is allocated, and check that its
    weights are the network they describe: the sizes (M, N_h, N_v, L) pass
    :func:`irs_torch.limits.check_scenario_sizes`; ``hidden``/``channels`` are at most
    :data:`~irs_torch.limits.MAX_HIDDEN`, ``depth``/``layers`` at most
    :data:`~irs_torch.limits.MAX_NET_DEPTH`; the network built on torch's ``meta`` device (no memory)
    has at most :data:`~irs_torch.limits.MAX_NET_PARAMETERS` elements and exactly the tensor names and
    shapes of ``state_dict``. Raises ValueError naming the file and the field."""
    import math

    from irs_torch.errors import InputError
    from irs_torch.limits import MAX_HIDDEN, MAX_NET_DEPTH, MAX_NET_PARAMETERS, check_int, check_scenario_sizes

    try:
        check_scenario_sizes(*(kw[k] for k in SIZE_KEYS), names={k: f"hyper_parameters.{k}" for k in SIZE_KEYS})
        for k, hi in (("hidden", MAX_HIDDEN), ("channels", MAX_HIDDEN), ("depth", MAX_NET_DEPTH),
                      ("layers", MAX_NET_DEPTH)):
            if k in kw and isinstance(kw[k], (int, float)) and not isinstance(kw[k], bool):
                check_int(f"hyper_parameters.{k}", kw[k], 0, hi)
    except InputError as e:
        raise ValueError(f"{path}: {e}") from None
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in WarmStartNet(**kw).state_dict().items()}
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: hyper_parameters do not describe a network ({e})") from None
    n = sum(math.prod(s) for s in shapes.values())
    if n > MAX_NET_PARAMETERS:
        raise ValueError(f"{path}: hyper_parameters describe a network of {n} weights, more than the "
                         f"{MAX_NET_PARAMETERS} allowed")
    got = {k: tuple(v.shape) if torch.is_tensor(v) else "not a tensor" for k, v in state_dict.items()}
    if got != shapes:
        bad = sorted(k for k in set(shapes) | set(got) if shapes.get(k) != got.get(k))
        k = bad[0]
        raise ValueError(f"{path}: weights do not match the recorded hyperparameters: state_dict {k!r} is "
                         f"{got.get(k, 'missing')}, the network needs {shapes.get(k, 'no such tensor')}"
                         + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


def check_sidecar_claims(path, hp: dict, meta: dict) -> None:
    """If model file ``path`` has a sidecar (:func:`sidecar_path`), check that what it claims (and the
    checkpoint scan chose the file by) is what the file holds: ``sizes``, ``d_h``, ``d_v``, ``active``
    and ``budgets`` against the loaded hyperparameters and training data. Raises ValueError naming
    the sidecar and the field; a file without a sidecar is not checked."""
    sc = sidecar_path(path)
    if sc.resolve() == Path(path).resolve() or not sc.is_file():
        return
    try:
        info = read_sidecar(path)
    except ValueError:
        return  # not a sidecar (the scan skips such files with its own message)
    claims = {f"sizes.{k}": (info["sizes"][k], int(hp[k])) for k in SIZE_KEYS}
    claims.update({k: (float(info[k]), float(hp.get(k, 0.5))) for k in ("d_h", "d_v")})
    claims["active"] = (bool(info["active"]), bool(hp.get("active", True)))
    budgets = training_budgets(meta)
    for k, v in (info.get("budgets") or {}).items():
        claims[f"budgets.{k}"] = ([float(x) for x in v], budgets.get(k) if budgets else None)
    for field, (claimed, actual) in claims.items():
        if claimed != actual:
            raise ValueError(f"{sc}: field {field} is {claimed!r} but the model file {Path(path).name} holds "
                             f"{actual!r}: the sidecar does not describe this model; rewrite it with "
                             f"`python -m irs_torch.learn.checkpoint sidecar {path}`")


def check_compatible(net: WarmStartNet, scenario: Scenario, source: str = "the model"):
    """Raise ValueError naming the sizes if ``scenario`` does not fit ``net`` (M, N_h, N_v, L, active);
    warn (UserWarning) if only the element spacings d_h, d_v differ."""
    try:
        net.check_scenario(scenario)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if bool(getattr(net, "hparams", {}).get("active", True)) != bool(scenario.active):
        raise ValueError(f"{source}: the model was trained for active={net.hparams.get('active')} IRSs, "
                         f"the scenario has active={scenario.active}")
    hp = getattr(net, "hparams", {})
    off = [f"{k}={float(getattr(scenario, k)):g} (model {float(hp[k]):g})" for k in ("d_h", "d_v")
           if k in hp and float(hp[k]) != float(getattr(scenario, k))]
    if off:
        warnings.warn(f"{source}: the model was trained for other IRS element spacings: {', '.join(off)}; its "
                      f"designs stay feasible but were not trained for this array geometry", stacklevel=3)


def export_model(ckpt_path, out_path, extra_meta: dict | None = None) -> Path:
    """Write the slim model file of a Lightning checkpoint (weights in float32, no optimizer state)
    and its JSON sidecar (:func:`write_sidecar`, ``<stem>.json``) for the checkpoint scan.

    ``extra_meta`` (JSON-like: training command, test metrics, ...) is merged into the ``irs_torch``
    entry. Atomic (each file). The file loads with ``torch.load(weights_only=True)`` (checked).
    Returns the path.
    """
    from irs_torch import __version__

    ckpt = read_checkpoint(ckpt_path)
    net = load_model(ckpt_path)
    meta = dict(ckpt.get("irs_torch", {}))
    meta.update(extra_meta or {})
    meta.update({"format": MODEL_FORMAT, "version": __version__, "source_checkpoint": Path(ckpt_path).name,
                 "sizes": {k: int(net.hparams[k]) for k in SIZE_KEYS},
                 "num_parameters": sum(p.numel() for p in net.parameters())})
    obj = {"format": MODEL_FORMAT, "hyper_parameters": {k: v for k, v in net.hparams.items()},
           "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
           "irs_torch": meta}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=out_path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        apply_file_mode(tmp)  # mkstemp made it 0600
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    write_sidecar(out_path)  # a weights-only load of what was just written
    return out_path


def _as_net(model) -> WarmStartNet:
    if isinstance(model, (str, Path)):
        return load_model(model)
    if isinstance(getattr(model, "net", None), WarmStartNet):  # a WarmStartModule
        return model.net
    if isinstance(model, WarmStartNet):
        return model
    from irs_torch.learn.anysize import AnySizeNet

    if isinstance(model, AnySizeNet):
        return model
    raise TypeError(f"model must be a WarmStartNet, a WarmStartModule or a checkpoint path, got {type(model).__name__}")


@torch.no_grad()
def predict(model, scenario: Scenario, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's feasible design for ``scenario`` (no solver): ``(R_s, psi)``.

    model: a :class:`WarmStartNet`, a :class:`WarmStartModule` or a checkpoint path. scenario:
    unbatched or batched (batch ``(...)``); evaluated in complex128 in chunks of ``batch_size``
    instances. Returns R_s ``(..., L, M, M)`` [W] and psi ``(..., L, N)``, complex128, meeting every
    constraint of (P1) (eqs. (17a)-(17d)) by construction. Runs without autograd (inference only;
    call the network itself to differentiate through it).
    """
    net = _as_net(model)
    check_compatible(net, scenario, source=getattr(net, "source", "the model"))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            s = scenario.to(torch.complex128)
            bshape = tuple(s.batch_shape)
            if len(bshape) != 1 or bshape[0] <= batch_size:
                d = net(s)
                return d.R_s, d.psi
            Rs, ps = [], []
            for i in range(0, bshape[0], batch_size):
                d = net(s[i : i + batch_size])
                Rs.append(d.R_s)
                ps.append(d.psi)
            return torch.cat(Rs), torch.cat(ps)
    finally:
        net.train(was_training)


def main(argv=None) -> int:
    """``python -m irs_torch.learn.checkpoint sidecar FILE.pt ...``: write the metadata sidecar of each
    model file (weights-only load; a refused file gets a one-line error and exit status 2)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m irs_torch.learn.checkpoint",
                                description="Model-file utilities (all loads are weights-only).")
    sub = p.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser(
        "sidecar", help="write <stem>.json (sizes, spacings, sha256) next to each model file, for the checkpoint scan"
    )
    sc.add_argument("files", nargs="+", help="model files (*.pt)")
    a = p.parse_args(argv)
    rc = 0
    for f in a.files:
        try:
            print(f"wrote {write_sidecar(f)}")
        except (ValueError, FileNotFoundError, OSError) as e:
            print(f"checkpoint: error: {e}", file=sys.stderr)
            rc = 2
    return rc


if __name__ == "__main__":
    raise SystemExit(main())

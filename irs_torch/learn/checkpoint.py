"""Loading, exporting and using trained warm-start models.

Two checkpoint kinds are accepted everywhere:

- a Lightning checkpoint written during training (``.ckpt``: weights, optimizer state,
  hyperparameters, the ``irs_torch`` entry with the data set description), for resuming;
- a slim model file (:func:`export_model`: hyperparameters + network weights + model-card
  metadata, no optimizer state; what ``checkpoints/`` ships).

Both record the sizes M, N_h, N_v, L; using a model for a scenario of other sizes raises a
ValueError that names them. Checkpoints are pickles: load only files you trust.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import torch

from irs_torch.learn.nets import WarmStartNet
from irs_torch.scenario import Scenario

MODEL_FORMAT = "irs-torch/warm-start-model"
# No Lightning import here (it costs seconds at start-up; the runtime CLI only needs the network):
# the sizes and the network's constructor arguments (module.SIZE_KEYS / module.NET_KEYS).
SIZE_KEYS = ("M", "N_h", "N_v", "L")
NET_KEYS = tuple(k for k in inspect.signature(WarmStartNet.__init__).parameters if k != "self")


def _read(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:  # Lightning checkpoints may hold other picklable objects (trusted files only)
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path}: not a warm-start checkpoint (no state_dict / hyper_parameters)")
    return ckpt


def load_model(path, scenario: Scenario | None = None) -> WarmStartNet:
    """The :class:`WarmStartNet` of a checkpoint (Lightning ``.ckpt`` or slim file), on CPU, in eval mode.

    ``net.hparams`` holds the training hyperparameters and ``net.meta`` the ``irs_torch`` entry
    (data set, metrics, version). With ``scenario``, raises ValueError unless its M, N_h, N_v, L
    match the checkpoint's.
    """
    ckpt = _read(path)
    hp = dict(ckpt["hyper_parameters"])
    missing = [k for k in SIZE_KEYS if k not in hp]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks the sizes {missing}")
    net = WarmStartNet(**{k: hp[k] for k in NET_KEYS if k in hp})
    sd = ckpt["state_dict"]
    if any(k.startswith("net.") for k in sd):
        sd = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the recorded hyperparameters ({e})") from None
    net.eval()
    net.hparams = hp
    net.meta = dict(ckpt.get("irs_torch", {}))
    net.source = str(path)
    if scenario is not None:
        check_compatible(net, scenario, source=str(path))
    return net


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
    """Write the slim model file of a Lightning checkpoint (weights in float32, no optimizer state).

    ``extra_meta`` (JSON-like: training command, test metrics, ...) is merged into the ``irs_torch``
    entry. Atomic. Returns the path.
    """
    import os
    import tempfile

    from irs_torch import __version__

    ckpt = _read(ckpt_path)
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
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def _as_net(model) -> WarmStartNet:
    if isinstance(model, (str, Path)):
        return load_model(model)
    if isinstance(getattr(model, "net", None), WarmStartNet):  # a WarmStartModule
        return model.net
    if isinstance(model, WarmStartNet):
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
                d = net(s[i:i + batch_size])
                Rs.append(d.R_s)
                ps.append(d.psi)
            return torch.cat(Rs), torch.cat(ps)
    finally:
        net.train(was_training)

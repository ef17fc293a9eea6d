"""Reading a model file safely: ``torch.load(..., weights_only=True)`` only (tensors, numbers, strings,
containers); a file that needs anything else is refused with one line naming it, and nothing in it runs.
Both model kinds (:mod:`irs_torch.learn.checkpoint`, :mod:`irs_torch.learn.anysize`) read their files here.
"""
from __future__ import annotations

from pathlib import Path

import torch


def _refusal_detail(e: Exception) -> str:
    """The specific reason in torch's weights-only refusal (e.g. "Unsupported global: GLOBAL io.open
    was not an allowed global by default."), without its boilerplate; one line."""
    text = str(e)
    key = "WeightsUnpickler error:"
    if key in text:
        lines = [ln.strip() for ln in text.split(key, 1)[1].splitlines() if ln.strip()]
        if lines:
            return lines[0].split(" Please use", 1)[0][:200]
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first}"[:200]


def read_checkpoint(path) -> dict:
    """The raw dict of a model file or Lightning checkpoint, loaded with ``torch.load(...,
    weights_only=True)`` only (nothing in the file is executed). Raises FileNotFoundError if it does
    not exist and ValueError naming the file if it is not a weights-only warm-start checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(
            f"{path}: refused: not a weights-only checkpoint (torch.load(weights_only=True): {_refusal_detail(e)}); "
            f"irs-torch never unpickles model files (they could run code): use a model file written by "
            f"irs-torch (export_model, or a Lightning .ckpt of `python -m irs_torch.learn.train`), or re-save a "
            f"model you trust as plain tensors and numbers") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path}: not a warm-start checkpoint (no state_dict / hyper_parameters)")
    return ckpt

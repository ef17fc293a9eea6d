"""Training entry point (LightningCLI): ``python -m irs_torch.learn.train {fit,validate,test,predict}``.

Everything is configured by YAML (``training/*.yaml``) and/or command-line flags, e.g.::

    python -m irs_torch.learn.train fit --config training/paper.yaml --data.root data/paper-10k
    python -m irs_torch.learn.train fit --config training/paper.yaml --ckpt_path runs/paper/.../last.ckpt  # resume
    python -m irs_torch.learn.train test --config training/paper.yaml --ckpt_path best.ckpt

``--model`` takes :class:`irs_torch.learn.module.WarmStartModule`'s arguments, ``--data``
:class:`irs_torch.data.datamodule.ShardDataModule`'s, ``--trainer`` Lightning's Trainer's
(``accelerator: auto``; ``strategy: ddp`` and ``num_nodes`` scale out with Lightning's own
launchers). ``--print_config`` shows the full resolved config; the config of every run is saved
next to its logs and the checkpoints store the hyperparameters.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from irs_torch.data.datamodule import ShardDataModule
from irs_torch.learn.module import WarmStartModule


class WarmStartCLI(LightningCLI):
    """LightningCLI with the seed recorded and user errors reported in one line.

    On ``--ckpt_path`` the config and command line win over the checkpoint's hyperparameters
    (LightningCLI's default is the reverse), so a resumed run can change the loss or other model
    settings (e.g. ``scripts/train_staged.py --stage-config``); differences are printed. A change of
    architecture still fails when the weights are loaded.
    """

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        if not sub:
            return
        ckpt_path = self.config[sub].get("ckpt_path")
        if ckpt_path is None:
            return
        check_ckpt_path(ckpt_path)
        # Lightning loads the file again itself: make that load weights-only too (its default for a URL is not).
        if self.config[sub].get("weights_only") is False:
            raise ValueError("--weights_only false: irs-torch never unpickles checkpoints (they could run code)")
        if "weights_only" in self.config[sub]:
            self.config[sub]["weights_only"] = True
        from irs_torch.learn.checkpoint import read_checkpoint

        hp = read_checkpoint(ckpt_path).get("hyper_parameters", {})
        mine = self.config[sub].get("model") or {}
        diff = [f"model.{k}={mine[k]!r} (checkpoint {v!r})" for k, v in hp.items()
                if not k.startswith("_") and k in mine and mine[k] != v]
        if diff:
            print(f"irs-torch train: resuming {ckpt_path} with the config's {', '.join(diff)}", file=sys.stderr)


def check_ckpt_path(ckpt_path) -> Path:
    """The gate in front of Lightning for ``--ckpt_path``: a local regular file only (no URL, no
    ``fsspec`` protocol, no Lightning keyword such as ``last``/``hpc``/``registry``, no named pipe or
    device), that loads with ``torch.load(weights_only=True)`` as a warm-start checkpoint
    (:func:`irs_torch.learn.checkpoint.read_checkpoint`). Raises ValueError (one line naming the
    flag and the path) otherwise; nothing in a refused file runs."""
    from irs_torch.learn.checkpoint import read_checkpoint

    text = str(ckpt_path)
    if "://" in text or text in ("last", "best", "hpc", "registry") or text.startswith("registry:"):
        raise ValueError(f"--ckpt_path {text!r}: only a local checkpoint file is accepted (no URL, remote "
                         f"file system or Lightning keyword); download it and check it first")
    p = Path(text)
    if not p.exists():
        raise FileNotFoundError(f"--ckpt_path {text}: checkpoint file not found")
    if not p.is_file():
        raise ValueError(f"--ckpt_path {text}: not a regular file")
    read_checkpoint(p)  # weights-only; ValueError naming the file if refused
    return p


def main(args: list[str] | None = None) -> int:
    try:
        WarmStartCLI(WarmStartModule, ShardDataModule, seed_everything_default=0,
                     save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False, args=args)
    except (ValueError, FileNotFoundError, OSError) as e:
        from irs_torch.errors import debug_enabled

        if debug_enabled():
            raise
        print(f"irs-torch train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

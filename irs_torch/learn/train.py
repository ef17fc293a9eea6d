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

from lightning.pytorch.cli import LightningCLI

from irs_torch.data.datamodule import ShardDataModule
from irs_torch.learn.module import WarmStartModule


class WarmStartCLI(LightningCLI):
    """LightningCLI with the seed recorded and user errors reported in one line."""


def main(args: list[str] | None = None) -> int:
    try:
        WarmStartCLI(WarmStartModule, ShardDataModule, seed_everything_default=0,
                     save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False, args=args)
    except (ValueError, FileNotFoundError) as e:
        import os

        if os.environ.get("IRS_TORCH_DEBUG"):
            raise
        print(f"irs-torch train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

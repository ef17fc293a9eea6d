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

    def init_parser(self, **kwargs):
        """The main and every subcommand parser raise on a bad flag or config field (instead of printing a
        multi-line usage and exiting), so :func:`main` reports it in one line naming the field."""
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def instantiate_trainer(self, **kwargs):
        """Lightning's Trainer checks its own settings (``devices``, ``max_epochs``, ...) with a TypeError
        or MisconfigurationException; report them as the user errors they are, naming the section."""
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        try:
            return super().instantiate_trainer(**kwargs)
        except (TypeError, MisconfigurationException) as e:
            raise ValueError(f"trainer: {e}") from None

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed <= 2**32 - 1:
            raise ValueError(f"seed_everything must be an integer in [0, {2**32 - 1}] (or true/false), got {seed}")
        super()._set_seed()

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
    """Run the CLI; exit status 0, or 2 with one line ``irs-torch train: error: ...`` naming the flag,
    config field or file of a user error (a bad flag or YAML value, a missing or refused file)."""
    from jsonargparse import ArgumentError

    try:
        WarmStartCLI(WarmStartModule, ShardDataModule, seed_everything_default=0,
                     save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False, args=args)
    except (ValueError, FileNotFoundError, OSError, ArgumentError) as e:
        from irs_torch.errors import debug_enabled

        if debug_enabled():
            raise
        msg = " ".join(str(e).split())  # jsonargparse's messages span lines: keep the field and the value
        print(f"irs-torch train: error: {msg}", file=sys.stderr)
        return 2
    except RecursionError:  # e.g. a YAML alias that contains itself (a: &x [*x])
        print("irs-torch train: error: --config: the configuration is nested too deeply or refers to itself "
              "(a recursive YAML alias)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

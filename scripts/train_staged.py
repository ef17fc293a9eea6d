"""Train a warm-start model in stages: warm restarts of the cosine learning-rate schedule.

    python scripts/train_staged.py --config training/paper.yaml --epochs 20 30 50 60 \
        --stage-config 4 training/paper-slots.yaml

Stage k trains until ``epochs[k]`` epochs in total. Stage 1 starts from scratch; stage k > 1 resumes
stage k-1's ``last.ckpt`` with ``--trainer.max_epochs epochs[k]``. The cosine schedule of
:class:`irs_torch.learn.module.WarmStartModule` spans the run's whole length, so each resume
restarts the learning rate at the value the longer schedule has at that step (a warm restart,
40% of the peak when going from 29 to 50 epochs in the shipped run) and decays it again. That is how the shipped
``checkpoints/warm-start-paper.pt`` was trained (see its model card).

``--stage-config K FILE`` adds a config file to stage K only (LightningCLI merges it over
``--config``); the shipped model's last stage switches the loss to the slot-by-slot combination
(``training/paper-slots.yaml``).

Stage k logs to ``<save_dir>/<name>/stage<k>`` (the config's TensorBoard logger with version
``stage<k>``), checkpoints under its ``checkpoints/``. Resumable: rerunning the same command
continues a killed stage from its own ``last.ckpt`` and skips finished stages. Extra arguments after
``--`` go to every stage (e.g. ``-- --data.root data/other``). Prints the last checkpoint's path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _log_root(config: Path, extra: list[str]) -> Path:
    import yaml

    cfg = yaml.safe_load(config.read_text()) or {}
    args = (cfg.get("trainer") or {}).get("logger") or {}
    init = args.get("init_args") or {} if isinstance(args, dict) else {}
    save_dir, name = init.get("save_dir"), init.get("name", "lightning_logs")
    for i, a in enumerate(extra):  # command-line overrides win, as in LightningCLI
        for key, var in (
            ("--trainer.logger.init_args.save_dir", "save_dir"),
            ("--trainer.logger.init_args.name", "name"),
        ):
            val = (
                a.split("=", 1)[1]
                if a.startswith(key + "=")
                else (extra[i + 1] if a == key and i + 1 < len(extra) else None)
            )
            if val is not None:
                save_dir, name = (val, name) if var == "save_dir" else (save_dir, val)
    if not save_dir:
        raise ValueError(f"--config {config}: trainer.logger.init_args.save_dir is not set; the stages need "
                         f"a TensorBoardLogger with a save_dir (see training/paper.yaml)")
    return Path(save_dir) / name


def _finished_epochs(ckpt: Path) -> int:
    """Epochs completed by a Lightning checkpoint (0 if unreadable)."""
    import torch

    try:  # saved at the end of an epoch's validation: "epoch" is that epoch's index
        return int(torch.load(ckpt, map_location="cpu", weights_only=True).get("epoch", -1)) + 1
    except Exception:  # noqa: BLE001
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="training YAML (e.g. training/paper.yaml)")
    p.add_argument("--epochs", type=int, nargs="+", required=True,
                   help="total epochs at the end of each stage, increasing (e.g. 20 30 50)")
    p.add_argument("--stage-config", nargs=2, action="append", default=[], metavar=("K", "YAML"),
                   help="an extra config file for stage K only (1-based; repeatable), e.g. a change of loss "
                        "for a fine-tuning stage: --stage-config 4 training/paper-slots.yaml")
    a = p.parse_args(own)
    stage_cfg: dict[int, list[str]] = {}
    for k, path in a.stage_config:
        if not k.isdigit() or not 1 <= int(k) <= len(a.epochs):
            p.error(f"--stage-config: stage {k!r} is not one of 1..{len(a.epochs)}")
        if not Path(path).exists():
            p.error(f"--stage-config {k}: {path}: no such file")
        stage_cfg.setdefault(int(k), []).extend(["--config", path])
    if any(e < 1 for e in a.epochs) or any(b <= c for c, b in zip(a.epochs, a.epochs[1:])):
        p.error(f"--epochs must be positive and increasing, got {a.epochs}")
    config = Path(a.config)
    if not config.exists():
        p.error(f"--config {config}: no such file")

    from irs_torch.learn.train import main as train

    try:
        root = _log_root(config, extra)
    except ValueError as e:
        print(f"train_staged: error: {e}", file=sys.stderr)
        return 2
    prev = None
    for k, epochs in enumerate(a.epochs, start=1):
        last = root / f"stage{k}" / "checkpoints" / "last.ckpt"
        resume = last if last.exists() else prev
        if last.exists() and _finished_epochs(last) >= epochs:
            print(f"train_staged: stage {k} ({epochs} epochs) already done: {last}", file=sys.stderr)
            prev = last
            continue
        print(
            f"train_staged: stage {k}: to {epochs} epochs" + (f", resuming {resume}" if resume else ""), file=sys.stderr
        )
        args = (
            [
                "fit",
                "--config",
                str(config),
                *stage_cfg.get(k, []),
                "--trainer.logger.init_args.version",
                f"stage{k}",
                "--trainer.max_epochs",
                str(epochs),
            ]
            + (["--ckpt_path", str(resume)] if resume else [])
            + extra
        )
        rc = train(args)
        if rc != 0:
            return rc
        if not last.exists():
            print(f"train_staged: error: stage {k} wrote no {last}", file=sys.stderr)
            return 2
        prev = last
    print(prev)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Training to a wall-clock budget: a learning-rate schedule in time, not in steps.

A cosine schedule over ``trainer.estimated_stepping_batches`` needs the number of steps in advance,
which is unknown when a run is given a fixed amount of (rented) accelerator time. :class:`WallClockCosine`
spans the schedule over ``minutes`` of wall time instead: a linear warm-up over ``warmup_steps``
optimizer steps, then ``lr(t) = lr0 (r + (1 - r) (1 + cos(pi t / T)) / 2)`` with ``t`` the seconds
since training started, ``T = 60 * minutes`` and ``r = min_lr_ratio``; at ``t >= T`` it stops the
trainer after the current step (``ModelCheckpoint(save_last=True)`` then writes ``last.ckpt``; the
stop usually comes mid-epoch, so measure the final model with :mod:`irs_torch.learn.evaluate`).

Use it with the module's ``lr_schedule: constant`` (the callback owns the learning rate). Optionally
``switch_hyp_loss`` changes the module's ``hyp_loss`` hyperparameter (e.g. to ``"slots"``) once a
fraction ``switch_at`` of the budget has passed, as the shipped paper model's last stage did.

Resuming (``--ckpt_path``) restarts the clock: the budget is per run. The elapsed training seconds of
every run are stored in the checkpoint (``irs_torch_wallclock``) and logged as ``train/elapsed_s``.
"""
from __future__ import annotations

import math
import time

from lightning.pytorch.callbacks import Callback


class WallClockCosine(Callback):
    """Cosine learning rate over a wall-clock budget of ``minutes`` (see the module doc).

    Args:
        minutes: training budget in minutes (> 0).
        warmup_steps: linear warm-up length in optimizer steps (>= 0).
        min_lr_ratio: final learning rate as a fraction of the initial one, in [0, 1].
        switch_hyp_loss: ``None`` or a value of the module's ``hyp_loss`` to switch to.
        switch_at: fraction of the budget after which ``switch_hyp_loss`` applies, in [0, 1].
    """

    def __init__(self, minutes: float, warmup_steps: int = 200, min_lr_ratio: float = 0.02,
                 switch_hyp_loss: str | None = None, switch_at: float = 0.8):
        if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
            raise ValueError(f"minutes must be a finite number > 0, got {minutes!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if not (isinstance(min_lr_ratio, (int, float)) and 0 <= min_lr_ratio <= 1):
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        if not (isinstance(switch_at, (int, float)) and 0 <= switch_at <= 1):
            raise ValueError(f"switch_at must be in [0, 1], got {switch_at!r}")
        self.seconds = 60.0 * float(minutes)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        self.switch_hyp_loss = switch_hyp_loss
        self.switch_at = float(switch_at)
        self._t0: float | None = None
        self._base: list[float] = []
        self._steps = 0
        self._done = False
        self.elapsed = 0.0

    def factor(self, elapsed: float, step: int) -> float:
        """The learning-rate factor after ``elapsed`` seconds and ``step`` optimizer steps."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        frac = min(1.0, max(0.0, elapsed / self.seconds))
        r = self.min_lr_ratio
        return warm * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * frac)))

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.monotonic()
        self._base = [g.get("initial_lr", g["lr"]) for opt in trainer.optimizers for g in opt.param_groups]
        for opt in trainer.optimizers:
            for g in opt.param_groups:
                g.setdefault("initial_lr", g["lr"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            return
        self.elapsed = time.monotonic() - self._t0
        f = self.factor(self.elapsed, self._steps)
        groups = [g for opt in trainer.optimizers for g in opt.param_groups]
        for g, base in zip(groups, self._base):
            g["lr"] = base * f
        if (self.switch_hyp_loss is not None and self.elapsed >= self.switch_at * self.seconds
                and pl_module.hparams.get("hyp_loss") != self.switch_hyp_loss):
            pl_module.hparams.hyp_loss = self.switch_hyp_loss
            print(f"irs-torch train: hyp_loss -> {self.switch_hyp_loss!r} after {self.elapsed:.0f} s", flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._steps += 1
        if self._t0 is None:
            return
        self.elapsed = time.monotonic() - self._t0
        pl_module.log("train/elapsed_s", float(self.elapsed), on_step=True, on_epoch=False, batch_size=1)
        if self.elapsed >= self.seconds and not self._done:
            self._done = True
            trainer.should_stop = True

    def state_dict(self):
        return {"elapsed": float(self.elapsed), "steps": int(self._steps)}

    def load_state_dict(self, state_dict):
        self._steps = int(state_dict.get("steps", 0))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["irs_torch_wallclock"] = {"elapsed_s": float(self.elapsed), "steps": int(self._steps),
                                             "budget_s": self.seconds}

"""The LightningModule of the warm-start model (training, validation metrics, checkpoints).

Loss per instance (weights configurable, all logged separately):

    w_crb * [ tau logsumexp_l(log CRB_l / tau) - log maxCRB_label ]          (smooth log max-CRB)
  + w_sup * [ w_psi * psi_label_loss + w_R * transmit_label_loss ]          (towards the solver)

The first term is the paper's objective (P1) in log form (the CRB spans decades across
geometries) evaluated exactly (float64 torch physics) at the *feasible* output of the network;
subtracting the label's log max-CRB changes no gradient but makes the value the log-ratio to the
solver. The supervised term is invariant to each IRS's common psi phase (docs/assumptions.md
"Modelling facts": common phase).

Logged (TensorBoard): ``{train,val,test}/loss``, ``.../loss_crb``, ``.../loss_psi``, ``.../loss_R``;
per epoch ``val/ratio_median``, ``val/ratio_p90``, ``val/ratio_mean`` (max-CRB of the prediction
over the label's), ``val/max_crb_median``, ``val/label_max_crb_median``, the smallest constraint
margins ``val/margin_{bs,irs,amp,psd}_min`` (>= 0: feasible), ``val/feasible_frac``, histograms
``val/ratio`` and ``val/log10_ratio``; the learning rate through Lightning's LearningRateMonitor.
Broken down (:func:`breakdown_groups`, definitions in :mod:`irs_torch.learn.regimes`) by
the C1 regime at the label (``by_c1_binding``, ``by_standard``), the P_s decade (``by_P_s_lt1e-3``,
``by_P_s_1e-3-1e-2``, ``by_P_s_1e-2-0p1``, ``by_P_s_ge0p1``) and P_t (``by_P_t_low``, ``by_P_t_high``):
scalars ``val/by_<group>/{n,ratio_median,ratio_p90,loss_crb,max_crb_median}`` (``loss_crb``: the mean
smooth log ratio to the label, the CRB term of the loss) and histograms ``val/by_<group>/log10_ratio``;
a group appears when the epoch has instances in it. So a user sees where the model is weak while it trains.
Checkpoints carry the hyperparameters (sizes M, N_h, N_v, L included) and an ``irs_torch`` entry
(data set description, package version, metrics).
"""
from __future__ import annotations

import math

import lightning as L
import torch

from irs_torch.learn.features import scenario_features
from irs_torch.learn.losses import log_smooth_max, psi_label_loss, refined_log_max, transmit_label_loss
from irs_torch.learn.nets import WarmStartNet, combine_slots
from irs_torch.learn.regimes import PS_BUCKETS, PS_EDGES, PT_BUCKETS, PT_SPLIT, REGIMES, bucket_index, c1_binding, tag

SIZE_KEYS = ("M", "N_h", "N_v", "L")
NET_KEYS = ("M", "N_h", "N_v", "L", "hidden", "depth", "rank", "echo_basis", "aligned_reference",
            "learn_bs_power", "c1_mode", "dropout", "features", "free_transmit", "arch", "channels", "layers",
            "d_h", "d_v", "hypotheses", "transmit_basis")
LR_SCHEDULES = ("cosine", "constant")
HYP_LOSSES = ("joint", "slots")


def _check_sizes(kw: dict) -> None:
    """Bound every size-like field of the model config before anything is allocated or trained
    (:mod:`irs_torch.limits`); ValueError naming the field (``model.hidden`` etc.) otherwise."""
    from irs_torch.limits import (
        MAX_HIDDEN,
        MAX_HYPOTHESES,
        MAX_NET_DEPTH,
        MAX_NET_PARAMETERS,
        MAX_NORMALIZER_INSTANCES,
        MAX_UNROLL_STEPS,
        check_int,
        check_scenario_sizes,
    )

    check_scenario_sizes(kw["M"], kw["N_h"], kw["N_v"], kw["L"],
                         names={k: f"model.{k}" for k in ("M", "N_h", "N_v", "L")})
    for k, lo, hi in (("hidden", 1, MAX_HIDDEN), ("channels", 1, MAX_HIDDEN), ("depth", 0, MAX_NET_DEPTH),
                      ("layers", 0, MAX_NET_DEPTH), ("rank", 1, MAX_HIDDEN), ("hypotheses", 1, MAX_HYPOTHESES),
                      ("unroll_steps", 0, MAX_UNROLL_STEPS), ("unroll_hypotheses", 1, MAX_HYPOTHESES),
                      ("normalizer_instances", 1, MAX_NORMALIZER_INSTANCES), ("warmup_steps", 0, None)):
        check_int(f"model.{k}", kw[k], lo, hi)
    try:
        with torch.device("meta"):
            n = sum(math.prod(p.shape) for p in WarmStartNet(**{k: kw[k] for k in NET_KEYS}).parameters())
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"model: these settings do not describe a network ({type(e).__name__}: {e})") from None
    if n > MAX_NET_PARAMETERS:
        raise ValueError(f"model: hidden/depth/channels/layers give a network of {n} weights, more than the "
                         f"{MAX_NET_PARAMETERS} allowed")


class WarmStartModule(L.LightningModule):
    """Train :class:`~irs_torch.learn.nets.WarmStartNet` on solver-labelled shards.

    Args:
        M, N_h, N_v, L: sizes the model is built for (must match the data set; stored in checkpoints).
        d_h, d_v: IRS element spacings (wavelengths); active: active IRSs (must match the data set).
        hidden, depth, rank, echo_basis, aligned_reference, learn_bs_power, c1_mode, dropout, features,
            free_transmit, arch, channels, layers, hypotheses, transmit_basis: the network (see
            :class:`~irs_torch.learn.nets.WarmStartNet`).
        w_crb, w_sup, w_psi, w_R: loss weights (module docstring); tau: smooth-max temperature;
            hyp_mean_weight: with K > 1 hypotheses the CRB term is that of the best candidate plus
            this weight times the mean over candidates (keeps every head training).
            hyp_loss: which best candidate the CRB term sees: "joint" (the single candidate with the
            smallest smooth max-CRB) or "slots" (the slot-by-slot combination that ``forward``
            returns, :func:`~irs_torch.learn.nets.combine_slots`; lets each slot's candidates
            specialise).
        lr, weight_decay: AdamW; lr_schedule: "cosine" (linear warmup of ``warmup_steps`` then cosine
            decay to ``min_lr_ratio * lr`` over the run) or "constant".
        normalizer_instances: training instances used to fit the feature standardisation.
        init_from: ``None`` or a model file (``.pt`` from :func:`irs_torch.learn.checkpoint.export_model`,
            loaded weights-only) whose network weights AND feature standardisation start this run
            (fine-tuning, e.g. the budget-conditioned model from the single-budget paper model). Its
            architecture must equal this module's; the standardisation is then not refitted, so
            features that were constant in its training data (std 1, mean at that data's value) enter
            as their deviation from that value.
        unroll_steps, w_unrolled, unroll_hypotheses, unroll_exact: train through the refiner: add
            ``w_unrolled`` times the smooth log max-CRB (minus the label's) of the best of the network's
            ``unroll_hypotheses`` designs after ``unroll_steps`` first-order refinement steps
            (:func:`~irs_torch.learn.losses.refined_log_max`; ``unroll_exact``: exact second-order unrolling,
            ~3x the cost); 0 steps: off. Logged as ``{stage}/log_ratio_refined`` and, per epoch,
            ``val/ratio_refined_median`` / ``_p90``.
    """

    def __init__(self, M: int = 16, N_h: int = 4, N_v: int = 4, L: int = 2, d_h: float = 0.5, d_v: float = 0.5,
                 active: bool = True, hidden: int = 256, depth: int = 2, rank: int = 2, echo_basis: bool = True,
                 aligned_reference: bool = True, learn_bs_power: bool = True, c1_mode: str = "cap",
                 dropout: float = 0.0, features: str = "gram", free_transmit: bool = False, arch: str = "mlp",
                 channels: int = 32, layers: int = 4, hypotheses: int = 1, transmit_basis: str = "bs",
                 w_crb: float = 1.0, w_sup: float = 0.1, w_psi: float = 1.0, w_R: float = 1.0, tau: float = 0.05,
                 hyp_mean_weight: float = 0.1, lr: float = 1e-3, weight_decay: float = 1e-6,
                 lr_schedule: str = "cosine", warmup_steps: int = 100, min_lr_ratio: float = 0.02,
                 normalizer_instances: int = 4096, hyp_loss: str = "joint", init_from: str | None = None,
                 unroll_steps: int = 0, w_unrolled: float = 1.0, unroll_hypotheses: int = 1,
                 unroll_exact: bool = False):
        super().__init__()
        if isinstance(unroll_steps, bool) or not isinstance(unroll_steps, int) or unroll_steps < 0:
            raise ValueError(f"unroll_steps must be an integer >= 0, got {unroll_steps!r}")
        if isinstance(unroll_hypotheses, bool) or not isinstance(unroll_hypotheses, int) or unroll_hypotheses < 1:
            raise ValueError(f"unroll_hypotheses must be an integer >= 1, got {unroll_hypotheses!r}")
        if not (isinstance(w_unrolled, (int, float)) and math.isfinite(w_unrolled) and w_unrolled >= 0):
            raise ValueError(f"w_unrolled must be a finite number >= 0, got {w_unrolled!r}")
        for name in ("w_crb", "w_sup", "w_psi", "w_R", "weight_decay", "hyp_mean_weight"):
            v = locals()[name]
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if w_crb == 0 and w_sup == 0:
            raise ValueError("w_crb and w_sup are both 0: nothing to train")
        if not (isinstance(tau, (int, float)) and tau > 0):
            raise ValueError(f"tau must be > 0, got {tau!r}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if hyp_loss not in HYP_LOSSES:
            raise ValueError(f"hyp_loss must be one of {HYP_LOSSES}, got {hyp_loss!r}")
        if not isinstance(normalizer_instances, int) or normalizer_instances < 1:
            raise ValueError(f"normalizer_instances must be an integer >= 1, got {normalizer_instances!r}")
        _check_sizes(locals())
        self.save_hyperparameters()
        hp = self.hparams
        self.net = WarmStartNet(**{k: hp[k] for k in NET_KEYS})
        if init_from is not None:
            self._init_from(init_from)
        self._val_rows: list[dict] = []
        self.irs_meta: dict = {}

    def _init_from(self, path: str):
        """Start from the network (weights + standardisation) of model file ``path`` (weights-only)."""
        from irs_torch.learn.checkpoint import load_model

        src = load_model(path)
        mine = {k: self.hparams[k] for k in NET_KEYS}
        theirs = {k: src.hparams.get(k) for k in NET_KEYS}
        diff = [f"{k}={mine[k]!r} (file {theirs[k]!r})" for k in NET_KEYS
                if theirs[k] is not None and theirs[k] != mine[k]]
        if diff:
            raise ValueError(f"model.init_from {path}: architecture differs: {', '.join(diff)}")
        self.net.load_state_dict(src.state_dict(), strict=True)

    # ------------------------------------------------------------------ data -> scenario
    @property
    def attrs(self) -> dict:
        hp = self.hparams
        return {"M": hp.M, "N_h": hp.N_h, "N_v": hp.N_v, "L": hp.L, "d_h": hp.d_h, "d_v": hp.d_v,
                "active": int(hp.active)}

    def scenario(self, batch: dict):
        """Batched complex128 :class:`~irs_torch.Scenario` of a collated batch."""
        from irs_torch.data.dataset import scenario_from_batch

        return scenario_from_batch(batch, self.attrs).to(torch.complex128)

    def check_data_attrs(self, attrs: dict, source: str = "the data set"):
        """Raise ValueError if ``attrs`` (a data set's) differ from the model's sizes / model."""
        mine = self.attrs
        bad = []
        for k in SIZE_KEYS + ("d_h", "d_v", "active"):
            if k in attrs:
                a, b = attrs[k], mine[k]
                if (float(a) != float(b)) if k in ("d_h", "d_v") else int(a) != int(b):
                    bad.append(f"{k}={a} (model {b})")
        if bad:
            raise ValueError(f"{source} has {', '.join(bad)}: the model is built for "
                             f"M={mine['M']}, N_h={mine['N_h']}, N_v={mine['N_v']}, L={mine['L']}; set "
                             f"model.M/N_h/N_v/L (and d_h, d_v, active) to the data set's")

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str):
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "attrs"):
            self.check_data_attrs(dm.attrs, f"data set {getattr(dm, 'root', '')}")
            if hasattr(dm, "describe"):
                self.irs_meta["dataset"] = dm.describe()
        if stage == "fit" and not bool(self.net.stats_fitted) and dm is not None and hasattr(dm, "dataset"):
            self._fit_normalizer(dm.dataset("train"))

    def _fit_normalizer(self, dataset):
        """Feature standardisation from up to ``normalizer_instances`` evenly spaced training items."""
        from irs_torch.data.datamodule import collate_instances

        n = len(dataset)
        k = min(n, self.hparams.normalizer_instances)
        idx = torch.linspace(0, n - 1, k).round().long().unique().tolist()
        feats = []
        for i in range(0, len(idx), 512):
            b = collate_instances([dataset[j] for j in idx[i:i + 512]])
            feats.append(scenario_features(self.scenario(b), kind=self.hparams.features))
        per = torch.cat([f.per_irs for f in feats])
        gl = torch.cat([f.glob for f in feats])
        from irs_torch.learn.features import Features

        self.net.fit_normalizer(Features(per, gl))
        self.irs_meta["normalizer_instances"] = len(idx)

    # ------------------------------------------------------------------ forward / loss
    def forward(self, scenario):
        return self.net(scenario)

    def _compute(self, batch: dict) -> dict:
        hp = self.hparams
        scen = self.scenario(batch)
        if not bool(self.net.stats_fitted):
            # No datamodule to fit on (e.g. plain dataloaders): fit on the first batch seen.
            self.net.fit_normalizer(scenario_features(scen, kind=self.hparams.features))
        B = int(batch["G"].shape[0])
        label = batch.get("max_crb")
        if label is not None:
            label = label.to(torch.float64)
            has = batch["labelled"].to(torch.bool) if "labelled" in batch else torch.isfinite(label)
        else:
            has = torch.zeros(B, dtype=torch.bool, device=scen.G.device)
        # log of the label where there is one (unlabelled instances: plain log max-CRB, same gradient)
        logl = torch.where(has, torch.log(torch.where(has, label, torch.ones_like(label))), 0.0) \
            if label is not None else torch.zeros(B, dtype=torch.float64, device=scen.G.device)
        if self.net.hypotheses > 1:
            d_all, c_all, _ = self.net(scen, return_all=True)
            sm_all = log_smooth_max(c_all, hp.tau)  # (B, K)
            d, ctot, _ = combine_slots(d_all, c_all, scen.budget("P_t"))  # the design forward() returns
            smax = log_smooth_max(ctot, hp.tau) if hp.hyp_loss == "slots" else sm_all.min(-1).values
            extra = hp.hyp_mean_weight * (sm_all.mean(-1) - logl)
        else:
            d = self.net(scen)
            ctot = scen.crb(d.R_s, d.psi, validate=False).total
            smax = log_smooth_max(ctot, hp.tau)
            extra = torch.zeros_like(smax)
        out = {"scenario": scen, "design": d, "crb": ctot}
        loss = hp.w_crb * (smax - logl + extra).mean()
        if hp.get("unroll_steps", 0) > 0:
            # Train through the refiner: the smooth log max-CRB after K first-order steps from the network's
            # designs (the combined design and, with unroll_hypotheses > 1, the next best single hypotheses; the
            # best of them after refinement counts, as at inference).
            sm_ref = self._unrolled(scen, d, d_all if self.net.hypotheses > 1 else None,
                                    c_all if self.net.hypotheses > 1 else None)
            loss = loss + hp.w_unrolled * (sm_ref - logl).mean()
            out["log_ratio_refined"] = (sm_ref - logl).detach()
        out["log_max_crb"] = smax.mean()
        if bool(has.any()):
            out["loss_crb"] = (smax - logl)[has].mean()  # log ratio to the solver labels
            if hp.w_sup > 0 and "psi" in batch and "R_s" in batch:
                a_max = scen.budget("a_max")
                a_max = a_max[has] if a_max.dim() else a_max
                lp = psi_label_loss(d.psi[has], batch["psi"][has].to(d.psi.dtype), a_max).mean()
                lr_ = transmit_label_loss(d.R_s[has], batch["R_s"][has].to(d.R_s.dtype)).mean()
                loss = loss + hp.w_sup * (has.double().mean()) * (hp.w_psi * lp + hp.w_R * lr_)
                out["loss_psi"], out["loss_R"] = lp, lr_
            out["ratio"] = (ctot.detach().amax(-1)[has] / label[has]).detach()
            out["log_ratio_all"] = (smax - logl).detach()  # per instance: the smooth log max-CRB ratio (loss_crb)
        out["loss"] = loss
        out["labelled"] = has
        return out

    def _unrolled(self, scen, d, d_all, c_all) -> torch.Tensor:
        """Per instance ``(B,)``: :func:`~irs_torch.learn.losses.refined_log_max` of the network's designs."""
        hp = self.hparams
        return refined_log_max(scen, d, int(hp.unroll_steps), hp.tau, d_all, c_all, int(hp.unroll_hypotheses),
                               bool(hp.unroll_exact))

    def _log_losses(self, out: dict, stage: str, bs: int):
        on_step = stage == "train"
        if "log_ratio_refined" in out:
            self.log(f"{stage}/log_ratio_refined", out["log_ratio_refined"].mean().float(), on_step=stage == "train",
                     on_epoch=True, batch_size=bs, sync_dist=stage != "train")
        for k in ("loss", "loss_crb", "loss_psi", "loss_R", "log_max_crb"):
            if k in out:
                self.log(f"{stage}/{k}", out[k].detach().float(), on_step=on_step, on_epoch=True,
                         batch_size=bs, sync_dist=not on_step, prog_bar=(k == "loss"))

    def training_step(self, batch, batch_idx):
        out = self._compute(batch)
        bs = int(batch["G"].shape[0])
        self._log_losses(out, "train", bs)
        if "ratio" in out:
            self.log("train/ratio_median", out["ratio"].median().float(), on_step=True, on_epoch=False,
                     batch_size=bs)
        return out["loss"]

    def _eval_step(self, batch, stage: str):
        out = self._compute(batch)
        bs = int(batch["G"].shape[0])
        self._log_losses(out, stage, bs)
        scen, d = out["scenario"], out["design"]
        m = scen.constraint_margins(d.R_s.detach(), d.psi.detach())
        row = {"max_crb": out["crb"].detach().amax(-1), "bs": m["bs"].reshape(bs),
               "irs": m["irs"].amin(-1), "amp": m["amp"].amin(-1), "psd": m["psd"].amin(-1),
               "feasible": scen.is_feasible(d.R_s.detach(), d.psi.detach()).to(torch.float64)}
        if "ratio" in out and bool(out["labelled"].all()):
            row["ratio"] = out["ratio"]
            row["label"] = batch["max_crb"].to(torch.float64)
            # breakdowns (irs_torch.learn.regimes): C1 regime at the label, budget buckets, per-instance CRB loss
            if "R_s" in batch and "psi" in batch:
                row["c1_binding"] = c1_binding(scen, batch["R_s"].to(scen.G.dtype),
                                               batch["psi"].to(scen.G.dtype)).to(torch.float64).reshape(bs)
            row["log_ratio"] = out["log_ratio_all"].detach()
        if "log_ratio_refined" in out and bool(out["labelled"].all()):
            row["ratio_refined"] = torch.exp(out["log_ratio_refined"])  # smooth max-CRB after K steps / label
        row["P_t"] = scen.budget("P_t").expand(bs).to(torch.float64)
        row["P_s"] = scen.budget("P_s").expand(bs).to(torch.float64)
        self._val_rows.append(row)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, "test")

    def on_validation_epoch_start(self):
        self._val_rows = []

    def on_test_epoch_start(self):
        self._val_rows = []

    def on_validation_epoch_end(self):
        self._epoch_metrics("val")

    def on_test_epoch_end(self):
        self._epoch_metrics("test")

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer is not None and self.trainer.world_size > 1:
            t = self.all_gather(t).reshape(-1)  # (world, n) -> flat; ranks hold equal counts
        return t

    def _epoch_metrics(self, stage: str):
        rows = self._val_rows
        self._val_rows = []
        if not rows:
            return
        cat = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
        cat = {k: self._gather(v) for k, v in cat.items()}
        metrics = epoch_metrics(cat)
        if "ratio_refined" in cat:  # the network's designs after unroll_steps first-order steps, over the label
            rr = cat["ratio_refined"][torch.isfinite(cat["ratio_refined"])]
            if rr.numel():
                metrics["ratio_refined_median"] = float(rr.median())
                metrics["ratio_refined_p90"] = float(torch.quantile(rr, 0.9))
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", v, sync_dist=False)  # identical on every rank (gathered)
        self.last_metrics = {f"{stage}/{k}": float(v) for k, v in metrics.items()}
        groups = breakdown_groups(cat)
        for g, (mask, _) in groups.items():
            for k, v in group_metrics(cat, mask).items():
                self.log(f"{stage}/by_{g}/{k}", v, sync_dist=False)
                self.last_metrics[f"{stage}/by_{g}/{k}"] = float(v)
        self.irs_meta[f"{stage}_metrics"] = self.last_metrics
        if "ratio" in cat and self.logger is not None and hasattr(self.logger, "experiment") \
                and hasattr(self.logger.experiment, "add_histogram") and not self.trainer.sanity_checking:
            r = cat["ratio"].detach().cpu()
            fin = torch.isfinite(r)
            if bool(fin.any()):
                self.logger.experiment.add_histogram(f"{stage}/ratio", r[fin], self.global_step)
                self.logger.experiment.add_histogram(f"{stage}/log10_ratio", torch.log10(r[fin]), self.global_step)
            for g, (mask, _) in groups.items():
                m = mask.cpu() & fin
                if bool(m.any()):
                    self.logger.experiment.add_histogram(f"{stage}/by_{g}/log10_ratio", torch.log10(r[m]),
                                                         self.global_step)

    def predict_step(self, batch, batch_idx):
        d = self.net(self.scenario(batch))
        return {"R_s": d.R_s, "psi": d.psi, "instance_id": batch.get("instance_id")}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1000
        warm = min(hp.warmup_steps, max(0, total - 1))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict):
        from irs_torch import __version__

        meta = dict(self.irs_meta)
        meta.update({"format": "irs-torch/warm-start", "version": __version__,
                     "sizes": {k: int(self.hparams[k]) for k in SIZE_KEYS}})
        checkpoint["irs_torch"] = meta

    def on_load_checkpoint(self, checkpoint: dict):
        hp = checkpoint.get("hyper_parameters", {})
        theirs = {k: hp.get(k) for k in SIZE_KEYS}
        mine = {k: int(self.hparams[k]) for k in SIZE_KEYS}
        if any(v is not None and int(v) != mine[k] for k, v in theirs.items()):
            raise ValueError(f"checkpoint was trained for M={theirs['M']}, N_h={theirs['N_h']}, N_v={theirs['N_v']}, "
                             f"L={theirs['L']}, but this model is built for M={mine['M']}, N_h={mine['N_h']}, "
                             f"N_v={mine['N_v']}, L={mine['L']}")
        self.irs_meta = dict(checkpoint.get("irs_torch", {}))


def epoch_metrics(cat: dict) -> dict:
    """Epoch summary of concatenated per-instance rows (see the module docstring): ratio median /
    p90 / mean and geometric mean, max-CRB medians, smallest margins, feasible fraction."""
    out = {}
    q = lambda x, p: float(torch.quantile(x.double(), p)) if len(x) else float("nan")  # noqa: E731
    mc = cat["max_crb"]
    out["max_crb_median"] = q(mc[torch.isfinite(mc)], 0.5)
    if "ratio" in cat:
        r = cat["ratio"]
        rf = r[torch.isfinite(r)]
        out["ratio_median"] = q(rf, 0.5)
        out["ratio_p90"] = q(rf, 0.9)
        out["ratio_mean"] = float(rf.mean()) if len(rf) else float("nan")
        out["ratio_geomean"] = float(torch.exp(torch.log(rf).mean())) if len(rf) else float("nan")
        out["ratio_inf_frac"] = float((~torch.isfinite(r)).double().mean())
        out["label_max_crb_median"] = q(cat["label"], 0.5)
    for k in ("bs", "irs", "amp", "psd"):
        out[f"margin_{k}_min"] = float(cat[k].min())
    out["feasible_frac"] = float(cat["feasible"].mean())
    return out


def breakdown_groups(cat: dict) -> dict:
    """The validation breakdowns of concatenated rows (:mod:`irs_torch.learn.regimes`): ``{tag: (mask,
    name)}`` for the C1 regimes at the label (``c1_binding`` / ``standard``, when labels are present),
    the P_s decade buckets and the P_t low/high buckets present in the rows."""
    out = {}
    if "c1_binding" in cat:
        b = cat["c1_binding"] > 0.5
        for name, m in ((REGIMES[1], b), (REGIMES[0], ~b)):
            out[tag(name).replace("-", "_")] = (m, name)
    if "P_s" in cat:
        i = bucket_index(cat["P_s"], PS_EDGES)
        for j, name in enumerate(PS_BUCKETS):
            out[tag(name)] = (i == j, name)
    if "P_t" in cat:
        hi = cat["P_t"] >= PT_SPLIT
        for name, m in ((PT_BUCKETS[0], ~hi), (PT_BUCKETS[1], hi)):
            out[tag(name)] = (m, name)
    return {k: v for k, v in out.items() if bool(v[0].any())}


def group_metrics(cat: dict, mask: torch.Tensor) -> dict:
    """Per-group scalars: ``n``, ``ratio_median``, ``ratio_p90`` (max-CRB of the prediction over the
    label's) and ``loss_crb`` (mean smooth log ratio, the CRB term of the loss) where labels exist;
    ``max_crb_median`` always."""
    q = lambda x, p: float(torch.quantile(x.double(), p)) if len(x) else float("nan")  # noqa: E731
    out = {"n": float(mask.sum())}
    mc = cat["max_crb"][mask]
    out["max_crb_median"] = q(mc[torch.isfinite(mc)], 0.5)
    if "ratio" in cat:
        r = cat["ratio"][mask]
        rf = r[torch.isfinite(r)]
        out["ratio_median"] = q(rf, 0.5)
        out["ratio_p90"] = q(rf, 0.9)
    if "log_ratio" in cat:
        lr = cat["log_ratio"][mask]
        lr = lr[torch.isfinite(lr)]
        out["loss_crb"] = float(lr.mean()) if len(lr) else float("nan")
    return out

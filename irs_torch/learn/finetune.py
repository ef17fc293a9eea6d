"""Fine-tune a warm-start model through the refiner, resumably, on fresh draws of its budget distribution.

The loss per instance is ``w_raw * (smooth log max-CRB of the network's design) + w_refined * (the same after
``unroll`` first-order refinement steps, best of ``hypotheses`` starts)`` (:func:`irs_torch.learn.losses.
refined_log_max`, the runtime's ``refine="fo"`` arithmetic): the network is rewarded for starts that the refiner
turns into good designs, not only for its raw prediction. No labels are needed (the CRB is the objective), so
every step draws new instances: step t uses instances ``t * batch .. (t + 1) * batch - 1`` of the data-set config
with seed ``seed`` (the data order depends on the step alone, so a resumed run sees the same data as an
uninterrupted one).

With ``labels`` (a solver-labelled data set, e.g. made by the ``first-order`` effort, near the best designs known)
the steps take the data set's train split instead (:class:`LabelledData`), the CRB terms become log ratios to the
labels, and ``w_sup`` adds the slot-wise winner-takes-all distance of the network's hypotheses to the label
(:func:`irs_torch.learn.losses.slot_label_loss`): one hypothesis per slot is pulled into the label's basin, which
no local refinement reaches from elsewhere where C1 binds. Validation then also reports ratios to the val split's
labels; ``fresh`` > 0 adds that many fresh draws of the distribution per step (CRB terms only, weighted by count),
which keeps a small labelled set from being overfitted. Train on a fixed copy of a data set (a resume checks that
the instances are the same).

Resumable: ``<out>/state.pt`` (weights, optimiser, step, wall seconds used; replaced atomically every
``save_every`` steps and at the end) is loaded by a rerun with the same ``<out>``; the settings must match
(``<out>/settings.json``). ``<out>/history.jsonl`` logs one line per validation (step, wall seconds, validation
medians); TensorBoard scalars go to ``<out>/tb``. Validation: fixed held-out draws (seed ``seed + 1``), the
network alone and after ``unroll`` refinement steps (:func:`irs_torch.solvers.first_order.refine_batch`, four
starts, no polish), as max-CRB ratios to the starting model's same numbers (< 1: better).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

STATE = "state.pt"


@dataclass(frozen=True)
class FinetuneSettings:
    """What defines a fine-tuning run (recorded; a resume must use the same)."""

    init: str
    data_config: str
    steps: int = 1000
    batch: int = 64
    unroll: int = 20
    hypotheses: int = 4
    w_raw: float = 0.2
    w_refined: float = 1.0
    lr: float = 2e-4
    tau: float = 0.05
    seed: int = 0
    val_instances: int = 48
    val_every: int = 50
    save_every: int = 10
    labels: str | None = None
    w_sup: float = 0.0
    fresh: int = 0
    val_steps: int | None = None
    label_fractions: tuple = (0.8, 0.1, 0.1)

    def __post_init__(self):
        for k in ("steps", "batch", "unroll", "hypotheses", "val_instances", "val_every", "save_every", "fresh"):
            v = getattr(self, k)
            zero_ok = k in ("unroll", "fresh")
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
                raise ValueError(f"{k} must be a {'non-negative' if zero_ok else 'positive'} integer, got {v!r}")
        if (self.fresh > 4096 or self.batch > 4096 or self.steps > 10_000_000 or self.unroll > 1000
                or self.hypotheses > 17):
            raise ValueError(f"batch, fresh <= 4096, steps <= 1e7, unroll <= 1000, hypotheses <= 17; got batch "
                             f"{self.batch}, fresh {self.fresh}, steps {self.steps}, unroll {self.unroll}, "
                             f"hypotheses {self.hypotheses}")
        if self.val_steps is not None and (isinstance(self.val_steps, bool) or not isinstance(self.val_steps, int)
                                           or not 0 <= self.val_steps <= 1000):
            raise ValueError(f"val_steps must be None or an integer in [0, 1000], got {self.val_steps!r}")
        if self.w_sup > 0 and not self.labels:
            raise ValueError(f"w_sup = {self.w_sup} needs a labelled data set (labels)")
        for k in ("w_raw", "w_refined", "lr", "tau", "w_sup"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")


def _draws(cfg, first: int, n: int):
    from irs_torch.scenario import Scenario

    return Scenario.stack([cfg.instance_scenario(i) for i in range(first, first + n)]).to(torch.complex128)


class LabelledData:
    """Solver-labelled instances of data set ``root`` for fine-tuning: the train split (require success, in memory)
    in a step-determined order, and the first ``n_val`` of the val split for validation.

    Step t uses positions ``t * batch .. (t + 1) * batch - 1`` of the concatenation of per-epoch permutations (epoch
    e: ``torch.randperm(n_train)`` seeded by ``seed * 1_000_003 + e``), so the data order depends on the step alone.
    """

    KEYS = ("G", "theta", "phi", "beta", "P_t", "P_s", "a_max", "sigma_r2", "sigma_b2", "T_c", "R_s", "psi",
            "max_crb")

    def __init__(self, root, fractions, seed: int, n_val: int):
        from irs_torch.data.dataset import ShardDataset

        self.root, self.seed = str(root), int(seed)
        self.train = ShardDataset(root, split="train", fractions=fractions, keys=list(self.KEYS),
                                  require_success=True, in_memory=True)
        self.val = ShardDataset(root, split="val", fractions=fractions, keys=list(self.KEYS),
                                require_success=True, in_memory=True)
        if len(self.train) == 0 or len(self.val) == 0:
            raise ValueError(f"labels {root}: {len(self.train)} train and {len(self.val)} val instances with a "
                             f"successful label (fractions {list(fractions)}); both must be > 0")
        self.n_val = min(int(n_val), len(self.val))

    def signature(self) -> dict:
        """What a resumed run must find again: the instance ids of both splits."""
        import hashlib

        ids = [int(i) for i in self.train.instance_ids] + [-1] + [int(i) for i in self.val.instance_ids]
        return {"labels": self.root, "n_train": len(self.train), "n_val": self.n_val,
                "ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()}

    def _get(self, ds, idx):
        from irs_torch.data.dataset import scenario_from_batch

        batch = torch.utils.data.default_collate([ds[int(i)] for i in idx])
        scn = scenario_from_batch(batch, ds.attrs).to(torch.complex128)
        return scn, {k: batch[k] for k in ("R_s", "psi", "max_crb")}

    def step_batch(self, step: int, batch: int):
        n = len(self.train)
        pos = torch.arange(step * batch, (step + 1) * batch)
        idx = []
        for e in torch.unique(pos // n).tolist():
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(e))
            perm = torch.randperm(n, generator=g)
            idx += perm[(pos[pos // n == e] % n)].tolist()
        return self._get(self.train, idx)

    def validation(self):
        return self._get(self.val, range(self.n_val))


def _atomic_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def validate(net, scn, unroll: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per instance ``(B,)``: the network's max-CRB alone and after ``unroll`` first-order steps from its four best
    designs (:func:`irs_torch.inference.network_starts`, :func:`irs_torch.solvers.first_order.refine_batch`)."""
    from irs_torch.inference import network_starts
    from irs_torch.solvers.first_order import refine_batch

    R0, p0 = network_starts(net, scn, 4)
    raw = scn.crb(R0[0], p0[0], validate=False).total.amax(-1)
    if unroll == 0:
        return raw, raw
    return raw, refine_batch(scn, R0, p0, steps=unroll, patience=0).max_crb


def _crb_terms(net, scn, logl, st: FinetuneSettings):
    """Per instance ``(B,)``: the smooth log max-CRB of the network's design minus ``logl`` and, when ``st.unroll``
    and ``st.w_refined`` are > 0, the same after the unrolled refinement (else None); plus the designs."""
    from irs_torch.learn.losses import log_smooth_max, refined_log_max
    from irs_torch.learn.nets import combine_slots

    if net.hypotheses > 1:
        d_all, c_all, _ = net(scn, return_all=True)
        d, ctot, _ = combine_slots(d_all, c_all, scn.budget("P_t"))
    else:
        d_all = c_all = None
        d = net(scn)
        ctot = scn.crb(d.R_s, d.psi, validate=False).total
    raw = log_smooth_max(ctot, st.tau) - logl
    ref = None
    if st.unroll > 0 and st.w_refined > 0:
        ref = refined_log_max(scn, d, st.unroll, st.tau, d_all, c_all, st.hypotheses) - logl
    return raw, ref, d_all, d


def finetune(out, settings: FinetuneSettings, *, minutes: float | None = None, log=print) -> dict:
    """Run (or resume) the fine-tuning of ``settings.init`` into ``out`` (module docstring) until
    ``settings.steps`` steps are done or ``minutes`` of wall time pass in this call; returns the last state's
    summary (``step``, ``done``, ``seconds``, last validation). The model file is written by :func:`export`."""
    from torch.utils.tensorboard import SummaryWriter

    from irs_torch.data.distribution import load_config
    from irs_torch.learn.checkpoint import load_model
    from irs_torch.learn.losses import slot_label_loss

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    st = settings
    from irs_torch.outputs import atomic_write_text

    sfile = out / "settings.json"
    mine = json.loads(json.dumps(asdict(st)))
    if sfile.exists():
        old = {**json.loads(json.dumps(asdict(FinetuneSettings(init="", data_config="")))),
               **json.loads(sfile.read_text())}
        if old != mine:
            diff = {k: (old.get(k), v) for k, v in mine.items() if old.get(k) != v}
            raise ValueError(f"{out} holds a run with other settings {diff} (old, new): use another --out")
    else:
        atomic_write_text(sfile, json.dumps(mine, indent=1))
    cfg = load_config(st.data_config).replace(seed=int(st.seed))
    vcfg = cfg.replace(seed=int(st.seed) + 1)
    data = None
    if st.labels:
        data = LabelledData(st.labels, tuple(st.label_fractions), st.seed, st.val_instances)
        dfile = out / "labels.json"
        if dfile.exists() and json.loads(dfile.read_text()) != data.signature():
            raise ValueError(f"labels {st.labels}: its instances differ from those the run in {out} started with "
                             f"({dfile}); train on a fixed copy of a data set that is still growing")
        atomic_write_text(dfile, json.dumps(data.signature(), indent=1))
    net = load_model(st.init)
    opt = torch.optim.AdamW(net.parameters(), lr=st.lr, weight_decay=1e-6)
    step, used = 0, 0.0
    spath = out / STATE
    if spath.exists():
        s = torch.load(spath, weights_only=True)
        net.load_state_dict(s["net"])
        opt.load_state_dict(s["opt"])
        step, used = int(s["step"]), float(s["seconds"])
        log(f"resumed {spath}: step {step} of {st.steps}, {used / 60:.1f} min used")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, st.steps) / st.steps)) * 0.95 + 0.05, last_epoch=step - 1)
    if data is None:
        val, val_label = _draws(vcfg, 0, st.val_instances), None
    else:
        val, vl = data.validation()
        val_label = vl["max_crb"].to(torch.float64)
    vsteps = st.unroll if st.val_steps is None else st.val_steps
    base_path = out / "baseline.json"
    if base_path.exists():
        base = {k: torch.tensor(v, dtype=torch.float64) for k, v in json.loads(base_path.read_text()).items()}
    else:
        b_raw, b_ref = validate(load_model(st.init), val, vsteps)
        base = {"raw": b_raw, "refined": b_ref}
        atomic_write_text(base_path, json.dumps({k: v.tolist() for k, v in base.items()}))
    if val_label is not None:
        log(f"starting model on {len(val_label)} labelled val instances: alone "
            f"{float((base['raw'] / val_label).median()):.4f}x, after {vsteps} steps "
            f"{float((base['refined'] / val_label).median()):.4f}x the label (median)")
    tb = SummaryWriter(str(out / "tb"))
    t0 = time.perf_counter()
    last = {}

    def save():
        _atomic_save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step,
                      "seconds": used + time.perf_counter() - t0}, spath)

    while step < st.steps and (minutes is None or time.perf_counter() - t0 < 60 * minutes):
        net.train()
        if data is None:
            scn, lab, logl = _draws(cfg, step * st.batch, st.batch), None, 0.0
        else:
            scn, lab = data.step_batch(step, st.batch)
            logl = torch.log(lab["max_crb"].to(torch.float64))  # log ratios to the labels: same gradients
        raw, ref, d_all, d = _crb_terms(net, scn, logl, st)
        loss = st.w_raw * raw.mean() + (st.w_refined * ref.mean() if ref is not None else 0.0)
        if ref is not None:
            tb.add_scalar("train/log_max_crb_refined", float(ref.detach().mean()), step)
        if lab is not None and st.w_sup > 0:
            cand = d_all if d_all is not None else d
            ps, Rs = (cand.psi, cand.R_s) if d_all is not None else (cand.psi[:, None], cand.R_s[:, None])
            sup = slot_label_loss(ps, Rs, lab["psi"].to(ps.dtype), lab["R_s"].to(Rs.dtype), scn.budget("a_max"))
            loss = loss + st.w_sup * sup.mean()
            tb.add_scalar("train/label_distance", float(sup.detach().mean()), step)
        if data is not None and st.fresh > 0:  # unlabelled draws of the distribution: CRB terms only
            f_raw, f_ref, _, _ = _crb_terms(net, _draws(cfg, step * st.fresh, st.fresh), 0.0, st)
            f_loss = st.w_raw * f_raw.mean() + (st.w_refined * f_ref.mean() if f_ref is not None else 0.0)
            loss = (st.batch * loss + st.fresh * f_loss) / (st.batch + st.fresh)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        sched.step()
        step += 1
        tb.add_scalar("train/loss", float(loss.detach()), step)
        tb.add_scalar("train/log_max_crb_raw", float(raw.detach().mean()), step)
        if step % st.val_every == 0 or step == st.steps:
            net.eval()
            with torch.no_grad():
                v_raw, v_ref = validate(net, val, vsteps)
            last = {"step": step, "seconds": used + time.perf_counter() - t0,
                    "raw_vs_start_median": float((v_raw / base["raw"]).median()),
                    "refined_vs_start_median": float((v_ref / base["refined"]).median()),
                    "refined_vs_start_p90": float(torch.quantile(v_ref / base["refined"], 0.9))}
            if val_label is not None:
                for k, v in (("raw", v_raw), ("refined", v_ref)):
                    last[f"{k}_vs_label_median"] = float((v / val_label).median())
                    last[f"{k}_vs_label_p90"] = float(torch.quantile(v / val_label, 0.9))
            for k, v in last.items():
                if k not in ("step", "seconds"):
                    tb.add_scalar(f"val/{k}", v, step)
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(last) + "\n")
            log(f"step {step}/{st.steps} ({last['seconds'] / 60:.1f} min): network alone "
                f"{last['raw_vs_start_median']:.4f}, after {vsteps} steps {last['refined_vs_start_median']:.4f} "
                f"(p90 {last['refined_vs_start_p90']:.4f}) x the starting model (median)"
                + ("" if val_label is None else f"; x the label: alone {last['raw_vs_label_median']:.4f}, after "
                   f"{last['refined_vs_label_median']:.4f} (p90 {last['refined_vs_label_p90']:.4f})"))
        if step % st.save_every == 0:
            save()
    save()
    tb.close()
    return {"step": step, "done": step >= st.steps, "seconds": used + time.perf_counter() - t0, **last}


def export(out, model_path, extra_meta: dict | None = None) -> Path:
    """Write the fine-tuned weights of ``<out>/state.pt`` as a model file (the format of
    :func:`irs_torch.learn.checkpoint.export_model`, with its JSON sidecar) at ``model_path``; the starting
    model's metadata (training budgets, sizes) is kept and the fine-tuning settings added."""
    from irs_torch.learn.checkpoint import export_model, read_checkpoint

    out = Path(out)
    st = json.loads((out / "settings.json").read_text())
    ck = read_checkpoint(st["init"])
    s = torch.load(out / STATE, weights_only=True)
    ck["state_dict"] = {k: v.to(ck["state_dict"][k].dtype) for k, v in s["net"].items()}
    meta = dict(ck.get("irs_torch", {}))
    meta["finetune"] = {"settings": st, "step": int(s["step"]), "seconds": float(s["seconds"])}
    ck["irs_torch"] = meta
    tmp = out / "finetuned-checkpoint.pt"
    _atomic_save(ck, tmp)
    return export_model(tmp, model_path, extra_meta)


def plot_history(out, png=None, hardware: str = "") -> Path:
    """Validation ratios (network alone and after ``unroll`` steps, median and p90, vs the starting model) against
    wall-clock training time [min] from ``<out>/history.jsonl``; writes ``png`` (default ``<out>/history.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines() if x.strip()]
    if not rows:
        raise ValueError(f"{out}/history.jsonl holds no validation yet")
    t = [r["seconds"] / 60 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(t, [r["raw_vs_start_median"] for r in rows], "o-", label="network alone / starting model's, median")
    ax.plot(t, [r["refined_vs_start_median"] for r in rows], "s-", label="after the first-order steps / same, median")
    ax.plot(t, [r["refined_vs_start_p90"] for r in rows], "s--", label="after the first-order steps / same, p90")
    if "refined_vs_label_median" in rows[0]:
        ax.plot(t, [r["raw_vs_label_median"] for r in rows], "^:", label="network alone / label, median")
        ax.plot(t, [r["refined_vs_label_median"] for r in rows], "v:", label="after the steps / label, median")
        ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel(f"wall-clock training time [min]{' (' + hardware + ')' if hardware else ''}")
    ax.set_ylabel("max-CRB ratio (held-out instances)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png) if png else out / "history.png"
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, png, dpi=120)
    plt.close(fig)
    return png


__all__ = ["FinetuneSettings", "finetune", "export", "validate", "plot_history"]

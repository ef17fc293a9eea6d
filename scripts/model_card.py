"""Export a trained warm-start checkpoint as a shipped model and write its model card.

    python scripts/model_card.py --ckpt runs/paper/warm-start/version_0/checkpoints/last.ckpt \\
        --data data/paper --config training/paper.yaml --out checkpoints/warm-start-paper.pt

Writes (atomically, next to ``--out``):
  - ``<name>.pt``: the slim model (float32 weights, hyper-parameters, provenance: the training
    config, data set config hash and seed, library versions, the test metrics below);
  - ``<name>.metrics.json``: :func:`irs_torch.learn.evaluate.evaluate` on the test split (network
    alone, no solver: max-CRB ratio to the solver label, constraint margins, inference time);
  - ``<name>.md``: the model card (what it is, how it was made, the measured numbers);
  - ``<name>.ratio.png``: the empirical CDF of the test ratio.
The card also gives, per C1 regime and budget bucket (:mod:`irs_torch.learn.regimes`), the network
alone on the test split, and - from a finished ``irs-torch bench warmstart`` run (``--bench DIR``) - the
network + refinement and the honest baselines side by side with the design targets; the reproduction
commands; and the training time (the checkpoint's ``training_seconds`` metadata, else ``--training-time``).
Rerunning it on the same inputs reproduces the same numbers (timings aside).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _plot_ratio(ratios, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    r = np.sort(np.asarray(ratios, dtype=float))
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=110)
    ax.step(r, np.arange(1, len(r) + 1) / len(r), where="post")
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.axvline(1.25, color="tab:red", lw=0.8, ls="--", label="target median 1.25")
    ax.set_xscale("log")
    ax.set_xlabel("max-CRB(network) / max-CRB(solver label)")
    ax.set_ylabel("fraction of test instances")
    ax.set_title(f"network alone, test split (n = {len(r)})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from irs_torch.outputs import atomic_savefig
    atomic_savefig(fig, path)
    plt.close(fig)


def _parse_duration(text: str) -> float:
    """Seconds from "12345", "12345s", "3h20m", "45m", "1h"."""
    import re

    s = text.strip().lower()
    if re.fullmatch(r"[0-9.]+s?", s):
        return float(s.rstrip("s"))
    m = re.fullmatch(r"(?:([0-9.]+)h)?(?:([0-9.]+)m)?(?:([0-9.]+)s)?", s)
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r} (give seconds, or e.g. 3h20m)")
    h, mi, se = (float(x) if x else 0.0 for x in m.groups())
    return 3600 * h + 60 * mi + se


def _fmt_duration(s) -> str:
    if s is None:
        return "not recorded (pass --training-time)"
    s = float(s)
    return f"{s:.0f} s ({s / 3600:.2f} h)"


def _group_table(by_group: dict) -> str:
    if not by_group:
        return "(no breakdown: the evaluation found no labelled instances)"
    lines = ["| group | n | ratio median | ratio p90 | mean log ratio |", "|---|---|---|---|---|"]
    for name, g in by_group.items():
        lines.append(f"| {name} | {int(g['n'])} | {g.get('ratio_median', float('nan')):.3f} | "
                     f"{g.get('ratio_p90', float('nan')):.3f} | {g.get('loss_crb', float('nan')):.4f} |")
    return "\n".join(lines)


CARD_METHODS = ("net", "net+refine", "ao-default", "ao-legacy", "ao-capped", "aligned+refine", "cophased+refine",
                "adam@1x", "adam@100x", "random+refine@1", "net+refine@2", "heuristic+refine@2", "random+refine@2",
                "net+refine@4", "heuristic+refine@4", "random+refine@4")


def _bench_section(benches) -> str:
    """The per-regime tables of `bench warmstart` runs (a list of ``(directory, warmstart.json)``):
    network + refinement and the baselines, and the design targets (met / missed by how much)."""
    if not benches:
        return ("## Network + refinement and baselines\n\nNot measured for this card: run `irs-torch bench "
                "warmstart` (command above) and pass `--bench DIR`.")
    out = ["## Network + refinement and baselines, per regime (`irs-torch bench warmstart`)", "",
           "Refinement: the AO from the start, with the run's number of iterations, one P3 start "
           "(`warm_start_options`); times are wall seconds per instance, all methods of a run side by side on the "
           "same machine. Ratio = max-CRB / reference (suite: best-known design; data: the label)."]
    for where, bench in benches:
        out += _bench_tables(where, bench)
    return "\n".join(out)


def _bench_tables(where: str, bench: dict) -> list[str]:
    out = []
    for src, S in bench.get("summary", {}).items():
        out += ["", f"### `{where}`, source `{src}`, refinement {bench.get('refine_iter')} AO iteration(s), "
                    f"{bench.get('threads')} torch thread(s): {S['instances']} instances "
                    f"({', '.join(f'{g} {n}' for g, n in S['counts'].items() if g != 'all')})", "",
                "| group | method | n | ratio median | p90 | max | time median | time / default AO |",
                "|---|---|---|---|---|---|---|---|"]
        for g, per in S["groups"].items():
            for meth in CARD_METHODS:
                v = per.get(meth)
                if not v or not v["n"]:
                    continue
                ts = v["seconds_median"]
                tt = f"{ts * 1e3:.1f} ms" if ts < 0.1 else f"{ts:.2f} s"
                tvd = v.get("time_vs_default")
                tvd = "-" if tvd is None else f"{tvd:.3f}"  # "-": this run had no cold default AO
                out.append(f"| {g} | {meth} | {v['n']} | {v['ratio_median']:.3f} | {v['ratio_p90']:.3f} | "
                           f"{v['ratio_max']:.2f} | {tt} | {tvd} |")
        out += ["", "Targets:", ""]
        for k, v in S.get("targets", {}).items():
            if v.get("met") is None:
                out.append(f"- {k}: not measured")
                continue
            gap = v["value"] - v["target"] if v["op"] == "<=" else v["target"] - v["value"]
            out.append(f"- {k}: {v['value']:.3f} (target {v['op']} {v['target']:g}): "
                       + ("met" if v["met"] else f"MISSED by {gap:.3f}"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt) of the trained model")
    p.add_argument("--data", required=True, help="the solver-labelled data set it was trained/validated on")
    p.add_argument("--config", required=True, help="the training YAML (recorded in the model)")
    p.add_argument("--out", default="checkpoints/warm-start-paper.pt")
    p.add_argument("--command", default=None, help="the training command to record (default: derived)")
    p.add_argument("--recipe-ckpt", default=None,
                   help="the checkpoint the training command writes, for the card's reproduce block "
                        "(default: --ckpt)")
    p.add_argument("--history", default=None,
                   help="a paragraph on how this checkpoint was actually trained, where that differs from "
                        "--command (e.g. the runs a staged training was resumed from); recorded in the card")
    p.add_argument("--bench", default=None, nargs="+",
                   help="output directories of `irs-torch bench warmstart` runs on this model (warmstart.json): "
                        "the card's per-regime tables of network + refinement and the baselines, one per run")
    p.add_argument("--bench-command", default=None, help="the bench command to record (default: derived)")
    p.add_argument("--data-command", default=None,
                   help="the data-set command to record (default: `irs-torch dataset generate` of --data's config)")
    p.add_argument("--notes", default=None,
                   help="a Markdown file appended to the card (e.g. what was tried where a target is missed)")
    p.add_argument("--training-time", default=None,
                   help="training wall time (seconds, or e.g. '3h20m') when the checkpoint does not record "
                        "training_seconds")
    a = p.parse_args(argv)

    from irs_torch.learn.checkpoint import export_model, load_model, read_checkpoint
    from irs_torch.learn.evaluate import evaluate

    ckpt, data, cfg, out = Path(a.ckpt), Path(a.data), Path(a.config), Path(a.out)
    for name, path in (("--ckpt", ckpt), ("--data", data / "manifest.json"), ("--config", cfg)):
        if not path.exists():
            print(f"model_card: error: {name}: {path} not found", file=sys.stderr)
            return 2
    raw = read_checkpoint(ckpt)
    benches = []
    for d in a.bench or []:
        bp = Path(d) / "warmstart.json"
        if not bp.exists():
            print(f"model_card: error: --bench: {bp} not found (run `irs-torch bench warmstart --out {d}`)",
                  file=sys.stderr)
            return 2
        benches.append((Path(d).as_posix(), json.loads(bp.read_text())))
    bench = benches[0][1] if benches else None
    raw_meta = raw.get("irs_torch", {}) if isinstance(raw.get("irs_torch"), dict) else {}
    train_s = raw_meta.get("training_seconds")
    if train_s is None and a.training_time:
        try:
            train_s = _parse_duration(a.training_time)
        except ValueError as e:
            print(f"model_card: error: --training-time: {e}", file=sys.stderr)
            return 2
    command = a.command or f"python -m irs_torch.learn.train fit --config {cfg.as_posix()}"
    net = load_model(ckpt)
    fractions = net.meta.get("dataset", {}).get("fractions") or [0.8, 0.1, 0.1]
    metrics = evaluate(ckpt, data, "test", fractions=fractions, progress=False, return_ratios=True)
    ratio = metrics.pop("ratios")
    meta = {"training_command": command, "training_config": cfg.read_text(),
            "epoch": int(raw.get("epoch", -1)), "global_step": int(raw.get("global_step", -1)),
            "test_metrics": metrics, "data_root": str(data), "training_history": a.history,
            "training_seconds": train_s}
    export_model(ckpt, out, extra_meta=meta)
    stem = out.with_suffix("")
    from irs_torch.outputs import atomic_write_text
    atomic_write_text(stem.parent / (stem.name + ".metrics.json"), json.dumps(metrics, indent=2) + "\n")

    shipped = load_model(out)
    _plot_ratio(ratio, stem.parent / (stem.name + ".ratio.png"))

    m = metrics
    dcfg = shipped.meta.get("dataset", {})
    size_mb = out.stat().st_size / 1e6
    history = f"\n- How this file was trained: {a.history}\n" if a.history else ""
    man = json.loads((data / "manifest.json").read_text())
    data_command = a.data_command or (f"irs-torch dataset generate --config <{data.as_posix()}/manifest.json's config> "
                                      f"--num {man.get('num', man.get('counts', {}).get('requested', '?'))} "
                                      f"--out {data.as_posix()}")
    bench_dir = " ".join(d for d, _ in benches) if benches else "bench-warmstart"
    bench_command = a.bench_command or (bench.get("command") if bench else None) or (
        f"irs-torch bench warmstart --checkpoint {out.as_posix()} --source suite data --data {data.as_posix()} "
        f"--out {bench_dir}")
    bench_flag = f" --bench {bench_dir}" if a.bench else ""
    budgets = {k: dcfg.get("config", {}).get(k) for k in ("P_t", "P_s", "a_max", "budget_sampling")}
    # the single-budget paper model's target was 1.25; a budget-conditioned model's is 1.10
    ranged = any(isinstance(v, list) and v[0] != v[1] for k, v in budgets.items() if k != "budget_sampling")
    target_text = "target <= 1.10" if ranged else "target <= 1.25"

    card = f"""# Model card: `{out.name}`

The warm-start network of irs-torch for the paper's array sizes: M = {shipped.M} BS antennas,
{shipped.N_h} x {shipped.N_v} IRS elements, L = {shipped.L} active IRSs. It maps a scenario (channels,
target angles, budgets) to a feasible design (R_s, psi) in one forward pass; `irs-torch solve
--method learned` uses it, and refines with the AO solver unless `--refine none`.

- File: `{out.name}` ({size_mb:.1f} MB, {shipped.meta.get('num_parameters')} parameters, float32),
  exported from `{ckpt.name}` (epoch {meta['epoch']}, step {meta['global_step']}); \
loads with `torch.load(weights_only=True)`.
  Its sidecar `{out.with_suffix('.json').name}` (sizes, spacings, sha256) is what the checkpoint scan reads.
- Architecture: {shipped.hparams.get('arch')} with {shipped.hparams.get('hypotheses')} hypotheses
  (combined slot by slot, `combine_slots`), features `{shipped.hparams.get('features')}`, \
c1_mode `{shipped.hparams.get('c1_mode')}`, transmit rank
  {shipped.hparams.get('rank')} (see `irs_torch/learn/nets.py` and `training/README.md`).
- Training data: the solver-labelled data set `{data}` (config sha256 `{dcfg.get('config_sha256')}`,
  data set seed {dcfg.get('dataset_seed')}, fractions train/val/test {fractions}) plus
  {dcfg.get('unlabelled', 0)} unlabelled geometries of the same distribution (CRB loss only).
- Reproduce:

  ```bash
  {data_command}
  {command}
  python scripts/model_card.py --ckpt {Path(a.recipe_ckpt or ckpt).as_posix()} --data {data.as_posix()} \
--config {cfg.as_posix()} --out {out.as_posix()}{bench_flag}
  {bench_command}
  ```
- Training time: {_fmt_duration(train_s)}.
{history}
## Test metrics (held-out test split, network alone, no solver)

Measured by `python -m irs_torch.learn.evaluate --checkpoint {out.as_posix()} --data {data.as_posix()}`:

| metric | value |
|---|---|
| test instances | {m['n']} |
| median max-CRB ratio to the solver label | **{m.get('ratio_median', float('nan')):.3f}** ({target_text}) |
| p90 ratio | {m.get('ratio_p90', float('nan')):.3f} |
| fraction with ratio <= 1.25 | {m['frac_ratio_le_1.25']:.3f} |
| max ratio | {m['ratio_max']:.3f} |
| feasible fraction | {m.get('feasible_frac', float('nan')):.3f} |
| network time per instance, batched | {m['net_ms_per_instance_batched']:.3f} ms ({m['torch_threads']} torch threads) |
| network time, one unbatched call | {m['net_ms_single']:.2f} ms |

![ratio CDF]({stem.name}.ratio.png)

A ratio below 1 means the network beat the solver's label: the AO is a local method and its result
depends on its random start. The labels are `irs-torch dataset generate`'s AO solutions
(training budgets: P_t {budgets['P_t']} W, P_s {budgets['P_s']} W, a_max {budgets['a_max']}, \
sampled {budgets['budget_sampling']}).

### Network alone per regime and budget bucket (test split)

C1 regime at the label (C1 margin < 0.1 % for the IRS with the largest CRB) and budget buckets as in
`irs_torch/learn/regimes.py`.

{_group_table(m.get('by_group', {}))}

{_bench_section(benches)}
"""
    if a.notes:
        card += "\n" + Path(a.notes).read_text().strip() + "\n"
    from irs_torch.outputs import atomic_write_text
    atomic_write_text(stem.parent / (stem.name + ".md"), card)
    print(json.dumps({k: m[k] for k in m if k.startswith("ratio") or k in ("n", "feasible_frac")}, indent=2))
    print(f"wrote {out}, {stem.name}.md, {stem.name}.metrics.json, {stem.name}.ratio.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

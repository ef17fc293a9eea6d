"""Train a tiny warm-start model (training/tiny.yaml) on a tiny solver-labelled data set, then look at
the run in TensorBoard.

    python examples/train_tiny.py                 # about a minute on a laptop CPU
    tensorboard --logdir example-out/runs         # then open http://localhost:6006
"""
import argparse
from pathlib import Path

from irs_torch.data.distribution import load_config
from irs_torch.data.generate import generate_dataset
from irs_torch.learn.train import main as train

REPO = Path(__file__).resolve().parents[1]
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="example-out", help="folder for the data set and the runs (default: example-out)")
p.add_argument("--num", type=int, default=48, help="labelled instances (default 48)")
args = p.parse_args()

out = Path(args.out)
cfg = load_config(REPO / "training" / "tiny-data.yaml")  # M = 4, 2 x 2 elements, L = 2, a one-iteration AO
generate_dataset(out / "data", args.num, cfg, workers=1, progress=False)  # resumable: a rerun reuses the shards
rc = train(["fit", "--config", str(REPO / "training" / "tiny.yaml"), "--data.root", str(out / "data"),
            "--trainer.default_root_dir", str(out / "runs"), "--trainer.logger.init_args.save_dir", str(out / "runs")])
print(f"training exit status {rc}; checkpoints and TensorBoard logs under {out / 'runs'}")
print(f"look at them with:  tensorboard --logdir {out / 'runs'}")
raise SystemExit(rc)

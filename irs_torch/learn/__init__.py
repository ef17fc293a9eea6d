"""Learned warm starts: a network mapping a scenario to a feasible (R_s, psi) in milliseconds.

- :mod:`.features`: normalised network inputs of a scenario.
- :mod:`.feasibility`: any network output -> a design meeting every constraint of (P1) exactly.
- :mod:`.nets`: :class:`WarmStartNet` (plain ``nn.Module``, per-IRS shared encoder).
- :mod:`.losses`: smooth log max-CRB, phase-invariant supervised terms.
- :mod:`.module`: :class:`WarmStartModule` (LightningModule); data in
  :class:`irs_torch.data.datamodule.ShardDataModule`.
- :mod:`.checkpoint`: :func:`load_model`, :func:`predict`, :func:`export_model` (weights-only loads;
  :func:`write_sidecar` / :func:`read_sidecar`: the JSON metadata the checkpoint scan reads).
- :mod:`.train` (LightningCLI, ``python -m irs_torch.learn.train``) and :mod:`.evaluate`
  (test-split metrics of a checkpoint, ``python -m irs_torch.learn.evaluate``).

Lightning is imported only by :mod:`.module`, :mod:`.checkpoint`, :mod:`.train`, :mod:`.evaluate`.
"""
from irs_torch.learn.feasibility import FeasibleDesign, aligned_reference, feasible_design  # noqa: F401
from irs_torch.learn.features import Features, scenario_features  # noqa: F401
from irs_torch.learn.nets import WarmStartNet  # noqa: F401


def __getattr__(name):  # lazy: keep `import irs_torch.learn` free of Lightning
    if name in ("load_model", "predict", "export_model", "check_compatible", "read_checkpoint", "write_sidecar",
                "read_sidecar"):
        from irs_torch.learn import checkpoint

        return getattr(checkpoint, name)
    if name == "WarmStartModule":
        from irs_torch.learn.module import WarmStartModule

        return WarmStartModule
    raise AttributeError(f"module 'irs_torch.learn' has no attribute {name!r}")


__all__ = ["FeasibleDesign", "feasible_design", "aligned_reference", "Features", "scenario_features",
           "WarmStartNet", "WarmStartModule", "load_model", "predict", "export_model", "check_compatible",
           "read_checkpoint", "write_sidecar", "read_sidecar"]

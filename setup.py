"""Packaging beyond what pyproject.toml can say: the shipped models.

The repository keeps its models in the top-level ``checkpoints/`` folder (the project layout is
fixed). A wheel ships every ``checkpoints/*.pt`` and ``checkpoints/*.json`` (models and their JSON
sidecars) as the data folder ``irs_torch/checkpoints/`` of the installed package, where
:func:`irs_torch.learn.checkpoint.default_checkpoint_dirs` finds them. Only the ``irs_torch``
packages are built: ``results/``, ``benchmarks/``, ``training/`` and the tests stay out of the wheel.
Everything else (metadata, dependencies, entry points) is in pyproject.toml.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["irs_torch", "irs_torch.*"]) + ["irs_torch.checkpoints"],
    package_dir={"irs_torch.checkpoints": "checkpoints"},
    package_data={"irs_torch.checkpoints": ["*.pt", "*.json"]},
    exclude_package_data={"irs_torch.checkpoints": ["*.md", "*.png"]},
)

"""irs-torch: learning-augmented beamforming design for multi-active-IRS cooperative sensing.

Public API (see docs/python.md):

- :class:`Scenario`, :class:`Solution`, :class:`GeometryDistribution` - systems, designs, files;
  :func:`paper_scenario`, :func:`random_scenario`, :func:`from_geometry`, :func:`load_scenario`,
  :func:`scenario_from_dict` - the functions that build a Scenario.
- :func:`fisher_information`, :func:`irs_power`, :func:`bs_power` - the torch physics; the module
  :mod:`irs_torch.crb` holds it all (``irs_torch.crb.crb`` is the per-IRS CRB). The package does not
  re-export a function ``crb``: a function must not shadow the module of the same name.
- :class:`InputError` - the one error type for invalid user input (a ``ValueError``).
"""
__version__ = "0.1.0"

from irs_torch.errors import InputError  # noqa: E402  (imports nothing else)

# Lazy public names (PEP 562): `import irs_torch` (and so `irs-torch --help`, and the `solve --refine none`
# path) does not import torch, cvxpy or the physics until a name is used: the CLI starts fast.
_LAZY = {"CRBResult": "irs_torch.crb", "bs_power": "irs_torch.crb",
         "fim_normalized": "irs_torch.crb", "fisher_information": "irs_torch.crb", "irs_power": "irs_torch.crb",
         "GeometryDistribution": "irs_torch.scenario", "Scenario": "irs_torch.scenario",
         "Solution": "irs_torch.scenario", "paper_scenario": "irs_torch.scenario",
         "random_scenario": "irs_torch.scenario", "from_geometry": "irs_torch.scenario",
         "load_scenario": "irs_torch.scenario", "scenario_from_dict": "irs_torch.scenario"}


def __getattr__(name):
    if name == "crb":  # the submodule, imported on first use (the import binds it on the package)
        import irs_torch.crb  # noqa: F401

        return globals()["crb"]
    from irs_torch.lazy import lazy_attribute

    return lazy_attribute(globals(), _LAZY, name, "irs_torch")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "Scenario",
    "Solution",
    "GeometryDistribution",
    "paper_scenario",
    "random_scenario",
    "from_geometry",
    "load_scenario",
    "scenario_from_dict",
    "CRBResult",
    "fisher_information",
    "fim_normalized",
    "irs_power",
    "bs_power",
    "InputError",
]

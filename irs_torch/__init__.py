"""irs-torch: learning-augmented beamforming design for multi-active-IRS cooperative sensing.

Public API (see README.md):

- :class:`Scenario`, :class:`Solution`, :class:`GeometryDistribution` - systems, designs, files.
- :func:`crb`, :func:`fisher_information`, :func:`irs_power`, :func:`bs_power` - the torch physics.
- :class:`InputError` - the one error type for invalid user input (a ``ValueError``).
"""
__version__ = "0.1.0"

from irs_torch.crb import (  # noqa: E402
    CRBResult,
    bs_power,
    crb,
    fim_normalized,
    fisher_information,
    irs_power,
)
from irs_torch.errors import InputError  # noqa: E402
from irs_torch.scenario import GeometryDistribution, Scenario, Solution  # noqa: E402

__all__ = [
    "__version__",
    "Scenario",
    "Solution",
    "GeometryDistribution",
    "CRBResult",
    "crb",
    "fisher_information",
    "fim_normalized",
    "irs_power",
    "bs_power",
    "InputError",
]

"""Physics of the multi-active-IRS sensing model: geometry, steering vectors, channels.

Everything is written once, in torch, batched over leading dimensions. SI units (m, rad, W);
element spacings are in wavelengths.
"""
from irs_torch.physics.channels import rician_bs_irs_channel, target_coefficient
from irs_torch.physics.geometry import (
    db_to_linear,
    dbm_to_watt,
    direction_angles,
    irs_frames,
    path_loss,
    target_angles,
)
from irs_torch.physics.steering import (
    cophasing_psi,
    element_indices,
    ula_steering,
    upa_steering,
    upa_steering_derivatives,
)

__all__ = [
    "upa_steering",
    "upa_steering_derivatives",
    "cophasing_psi",
    "ula_steering",
    "element_indices",
    "irs_frames",
    "direction_angles",
    "target_angles",
    "path_loss",
    "db_to_linear",
    "dbm_to_watt",
    "rician_bs_irs_channel",
    "target_coefficient",
]

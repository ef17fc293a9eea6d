"""Estimation beyond the bound: echo simulation (eqs. (5)-(9)), direction estimators (ML, MUSIC),
target localisation (Stansfield) with its position error bound, and the Monte Carlo study.

- :func:`simulate_echoes`, :func:`waveform`, :func:`echo_covariance` - :mod:`.echo`
- :func:`ml_estimate`, :func:`music_estimate`, :func:`estimate_directions` - :mod:`.estimators`
- :func:`stansfield`, :func:`position_error_bound`, :func:`angle_covariance_bound` - :mod:`.localisation`
- :func:`run_monte_carlo`, :func:`design_violations` - :mod:`.montecarlo`; designs compared - :mod:`.designs`
"""
from irs_torch.estimation.echo import Echoes, echo_covariance, echo_mean, simulate_echoes, waveform, z1_noise_ratio
from irs_torch.estimation.estimators import (
    DirectionEstimate,
    estimate_directions,
    ml_estimate,
    music_estimate,
)
from irs_torch.estimation.localisation import (
    angle_covariance_bound,
    angle_position_jacobian,
    bearing_vectors,
    position_error_bound,
    stansfield,
)
from irs_torch.estimation.montecarlo import MonteCarloResult, design_violations, run_monte_carlo

__all__ = [
    "Echoes", "simulate_echoes", "waveform", "echo_mean", "echo_covariance", "z1_noise_ratio",
    "DirectionEstimate", "ml_estimate", "music_estimate", "estimate_directions",
    "bearing_vectors", "stansfield", "angle_position_jacobian", "angle_covariance_bound",
    "position_error_bound", "MonteCarloResult", "run_monte_carlo", "design_violations",
]

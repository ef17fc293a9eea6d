"""Constant-velocity Kalman filter of the 2-D target position, on Stone Soup.

State ``[x, vx, y, vy]`` (m, m/s); transition: two independent continuous white-noise acceleration
models (Stone Soup ``ConstantVelocity``, ``Q = q [[dt^3/3, dt^2/2], [dt^2/2, dt]]`` per axis, q the
``process_noise`` [m^2/s^3]); measurement: the position ``[x, y]`` with a covariance R that changes
every block (the position bound of the design used, :mod:`irs_torch.tracking.measurement`).

Library choice: Stone Soup (``stonesoup``, the Dstl tracking framework, actively maintained,
released several times a year; pure Python on numpy/scipy). Measured here: ``pip install
stonesoup`` took 3.7 s from wheels (8 small packages: plotly, rtree, pymap3d, utm, ruamel.yaml,
ordered-set, narwhals, stonesoup itself), and importing its Kalman predictor/updater 0.9 s, light
enough for CI, so it is the optional extra ``track`` and part of the ``test`` extra. filterpy
would also do, but its 1.x line went without a release from 2018; Stone Soup's model / predictor /
updater split also maps one to one onto the loop (predict -> design -> measure -> update).

Gate and lost track (:class:`TrackFilter`): each measurement's normalised innovation squared
``NIS = nu^T S^-1 nu`` (``nu = z - H x_pred``, ``S = H P_pred H^T + R``) is compared with the
``gate_probability`` quantile of chi^2 with 2 degrees of freedom (99.9%: 13.8). A measurement
outside the gate is not used (the state stays at the prediction); ``gate_misses`` consecutive
misses declare the track lost, and :meth:`TrackFilter.reinitialise` restarts it from a fix.

NEES / NIS consistency helpers: :func:`nees`, :func:`anees_bounds` (two-sided chi^2 bounds of the
average NEES over N Monte Carlo runs, Bar-Shalom, Li and Kirubarajan, Estimation with Applications
to Tracking and Navigation, 2001, Sec. 5.4).
"""
from __future__ import annotations

import datetime
import math

import numpy as np
from scipy.stats import chi2

from irs_torch.errors import InputError

_EPOCH = datetime.datetime(2000, 1, 1)

INSTALL_HINT = ("the tracking filter needs Stone Soup: pip install 'irs-torch[track]' (or pip install stonesoup)")


def _stonesoup():
    try:
        from stonesoup.models.measurement.linear import LinearGaussian
        from stonesoup.models.transition.linear import CombinedLinearGaussianTransitionModel, ConstantVelocity
        from stonesoup.predictor.kalman import KalmanPredictor
        from stonesoup.types.detection import Detection
        from stonesoup.types.hypothesis import SingleHypothesis
        from stonesoup.types.state import GaussianState
        from stonesoup.updater.kalman import KalmanUpdater
    except ImportError as e:  # pragma: no cover - depends on the environment
        # a missing optional dependency: the user's installation, said in one line (exit 2), not a bug
        raise InputError(f"{INSTALL_HINT} ({e})") from None
    return dict(LinearGaussian=LinearGaussian, Combined=CombinedLinearGaussianTransitionModel,
                ConstantVelocity=ConstantVelocity, KalmanPredictor=KalmanPredictor, Detection=Detection,
                SingleHypothesis=SingleHypothesis, GaussianState=GaussianState, KalmanUpdater=KalmanUpdater)


def gate_threshold(probability: float, dof: int = 2) -> float:
    """The chi^2 quantile a NIS is compared with (e.g. 13.82 for 99.9% and 2 dof)."""
    if not 0 < probability < 1:
        raise InputError(f"gate probability must be in (0, 1), got {probability!r}")
    return float(chi2.ppf(probability, dof))


def anees_bounds(runs: int, dim: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided bounds of the average NEES over ``runs`` independent runs of a ``dim``-state filter:
    ``runs * ANEES ~ chi^2(runs * dim)`` when the filter is consistent."""
    a = (1 - confidence) / 2
    n = runs * dim
    return float(chi2.ppf(a, n) / runs), float(chi2.ppf(1 - a, n) / runs)


def nees(x_true, x_est, P) -> float:
    """``(x - x_hat)^T P^-1 (x - x_hat)``. Shapes: (n,), (n,), (n, n)."""
    e = np.asarray(x_true, dtype=np.float64) - np.asarray(x_est, dtype=np.float64)
    return float(e @ np.linalg.solve(np.asarray(P, dtype=np.float64), e))


class TrackFilter:
    """A gated constant-velocity Kalman filter (module docstring). Times are block indices x ``dt``.

    State access: :attr:`mean` (4,) ``[x, vx, y, vy]``, :attr:`covar` (4, 4), :meth:`position`,
    :meth:`position_covar`. Use: ``predict(t)`` then ``update(z, R)`` (or nothing, to coast).
    """

    def __init__(self, dt: float, process_noise: float = 1.0, gate_probability: float = 0.999,
                 gate_misses: int = 3):
        if not (math.isfinite(dt) and dt > 0):
            raise InputError(f"dt must be > 0, got {dt!r}")
        if not (math.isfinite(process_noise) and process_noise >= 0):
            raise InputError(f"process_noise must be >= 0 [m^2/s^3], got {process_noise!r}")
        if isinstance(gate_misses, bool) or not isinstance(gate_misses, int) or gate_misses < 1:
            raise InputError(f"gate_misses must be an integer >= 1, got {gate_misses!r}")
        ss = _stonesoup()
        self._ss = ss
        self.dt = float(dt)
        self.process_noise = float(process_noise)
        self.gate = gate_threshold(gate_probability, 2)
        self.gate_probability = float(gate_probability)
        self.gate_misses = int(gate_misses)
        self.transition = ss["Combined"]([ss["ConstantVelocity"](self.process_noise),
                                          ss["ConstantVelocity"](self.process_noise)])
        self.predictor = ss["KalmanPredictor"](self.transition)
        self.updater = ss["KalmanUpdater"](None)
        self.state = None
        self.misses = 0

    # -------------------------------------------------------------- state
    def _time(self, t: float):
        return _EPOCH + datetime.timedelta(seconds=float(t) * self.dt)

    def initialise(self, mean, covar, t: float) -> None:
        """Set the state (4,) / (4, 4) at block ``t`` and clear the miss counter."""
        self._set(mean, np.asarray(covar, dtype=np.float64).reshape(4, 4), self._time(t))
        self.misses = 0

    def reinitialise(self, fix_xy, fix_covar, t: float, velocity_std: float) -> None:
        """Restart from a position fix (2,) with covariance (2, 2), zero velocity of std
        ``velocity_std`` [m/s] per axis."""
        P = np.zeros((4, 4))
        P[np.ix_([0, 2], [0, 2])] = np.asarray(fix_covar, dtype=np.float64)
        P[1, 1] = P[3, 3] = velocity_std ** 2
        self.initialise([fix_xy[0], 0.0, fix_xy[1], 0.0], P, t)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.state.state_vector, dtype=np.float64).reshape(-1)

    @property
    def covar(self) -> np.ndarray:
        return np.asarray(self.state.covar, dtype=np.float64)

    def position(self) -> np.ndarray:
        return self.mean[[0, 2]]

    def position_covar(self) -> np.ndarray:
        return self.covar[np.ix_([0, 2], [0, 2])]

    # -------------------------------------------------------------- steps
    def predict(self, t: float) -> None:
        """Propagate the state to block ``t`` (no-op if it is already there)."""
        ts = self._time(t)
        if self.state.timestamp == ts:
            return
        pr = self.predictor.predict(self.state, timestamp=ts)
        self._set(pr.state_vector, pr.covar, ts)

    def _set(self, mean, covar, ts):
        """Store a plain GaussianState with an exactly symmetric covariance (so that a state written
        to a record and read back is the same state bit for bit)."""
        P = np.asarray(covar, dtype=np.float64)
        self.state = self._ss["GaussianState"](np.asarray(mean, dtype=np.float64).reshape(4, 1), 0.5 * (P + P.T),
                                               timestamp=ts)

    def innovation(self, z, R):
        """``(nu (2,), S (2, 2), NIS)`` of measurement z (2,) with covariance R (2, 2) at the
        current (predicted) state."""
        mm = self._ss["LinearGaussian"](ndim_state=4, mapping=(0, 2), noise_covar=np.asarray(R, dtype=np.float64))
        mp = self.updater.predict_measurement(self.state, measurement_model=mm)
        nu = np.asarray(z, dtype=np.float64).reshape(2) - np.asarray(mp.state_vector, dtype=np.float64).reshape(2)
        S = np.asarray(mp.covar, dtype=np.float64)
        return nu, S, float(nu @ np.linalg.solve(S, nu))

    def update(self, z, R, gated: bool = True) -> dict:
        """Update with z (2,) [m], R (2, 2) [m^2] unless the NIS is outside the gate (``gated``).

        Returns ``{"nis", "accepted", "misses", "lost"}``; ``lost`` is True when ``gate_misses``
        consecutive measurements were rejected (the caller re-initialises).
        """
        z = np.asarray(z, dtype=np.float64).reshape(2)
        R = np.asarray(R, dtype=np.float64).reshape(2, 2)
        if not (np.isfinite(z).all() and np.isfinite(R).all()):
            nis, accepted = float("inf"), False
        else:
            _, _, nis = self.innovation(z, R)
            accepted = (not gated) or nis <= self.gate
        if accepted:
            mm = self._ss["LinearGaussian"](ndim_state=4, mapping=(0, 2), noise_covar=R)
            det = self._ss["Detection"](z.reshape(2, 1), timestamp=self.state.timestamp, measurement_model=mm)
            upd = self.updater.update(self._ss["SingleHypothesis"](self.state, det))
            self._set(upd.state_vector, upd.covar, upd.timestamp)
            self.misses = 0
        else:
            self.misses += 1
        return {"nis": nis, "accepted": bool(accepted), "misses": self.misses,
                "lost": self.misses >= self.gate_misses}

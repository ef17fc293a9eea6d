"""Design policies of the tracking loop: how (R_s, psi) for block t are chosen.

Each policy designs from what the tracker knows, the predicted position and its covariance (only
``oracle`` is given the truth), and returns the design with the wall time of the design call alone
(model loading and other one-off setup are done once, in the constructor, and reported separately).

=============  ======================================================================================
policy         design for block t
=============  ======================================================================================
oracle         full default AO (:func:`irs_torch.solvers.solve`, ``method="ao"``) at the TRUE position:
               the bound of what a better prediction could give
ao             the same AO at the predicted position
learned        the shipped warm-start network + AO refinement (:func:`irs_torch.inference.solve_learned`,
               ``refine="ao"``, its default refinement iterations) at the predicted position
learned-net    the network alone (``refine="none"``) at the predicted position
robust         the worst-case robust design (:func:`irs_torch.design.robust.solve_robust`, K = 9 candidate
               points on the region) over the 2-sigma ellipse of the prediction's position covariance;
               if a candidate is not a valid target position (behind an IRS), the point AO at the
               prediction (status ``point-fallback``)
isotropic      ``R_s = P_t / M I`` and a fixed uniform-amplitude random-phase psi at the largest
               C1 / a_max-feasible amplitude (:meth:`Scenario.random_phase_design`, seed 0): a design
               that ignores the target, so its time is ~0
=============  ======================================================================================

AO randomness (its random starts) is seeded per block by the loop's design seed, separately from the
echo noise.
"""
from __future__ import annotations

import time

import numpy as np

from irs_torch.errors import InputError
from irs_torch.tracking.defaults import POLICIES  # noqa: E402


def parse_policies(text: str) -> list[str]:
    """``"all"``, one name or a comma list -> names in :data:`POLICIES` order-preserving, unique.
    Raises InputError naming ``--policy``."""
    items = [p.strip() for p in str(text).split(",") if p.strip()]
    if not items:
        raise InputError(f"--policy must name a policy ({', '.join(POLICIES)}) or 'all', got {text!r}")
    out = []
    for p in items:
        names = list(POLICIES) if p == "all" else [p]
        for n in names:
            if n not in POLICIES:
                raise InputError(f"--policy: unknown policy {n!r}; choose from {', '.join(POLICIES)} or 'all'")
            if n not in out:
                out.append(n)
    return out


class Policy:
    """Base class: ``design(scn_pred, scn_true, pred_xy, pred_cov, seed) -> (R_s, psi, info)``."""

    name = "base"
    needs_solver = False

    def __init__(self, scenario, **_):
        self.setup_seconds = 0.0

    def design(self, scn_pred, scn_true, pred_xy, pred_cov, seed: int):
        raise NotImplementedError


class Isotropic(Policy):
    name = "isotropic"

    def __init__(self, scenario, **kw):
        super().__init__(scenario)
        self._R = scenario.isotropic_design()
        self._psi = scenario.random_phase_design(self._R, seed=0)

    def design(self, scn_pred, scn_true, pred_xy, pred_cov, seed):
        t = time.perf_counter()
        R, psi = self._R.clone(), self._psi.clone()
        return R, psi, {"seconds": time.perf_counter() - t, "status": "fixed"}


class AO(Policy):
    name = "ao"
    truth = False

    def __init__(self, scenario, **kw):
        super().__init__(scenario)

    def design(self, scn_pred, scn_true, pred_xy, pred_cov, seed):
        from irs_torch.solvers import SolverOptions, solve

        scn = scn_true if self.truth else scn_pred
        t = time.perf_counter()
        r = solve(scn, method="ao", options=SolverOptions(seed=int(seed)))
        dt = time.perf_counter() - t
        return r.R_s, r.psi, {"seconds": dt, "status": r.status, "success": bool(r.success), "nit": int(r.nit),
                              "design_max_crb": float(r.max_crb)}


class Oracle(AO):
    name = "oracle"
    truth = True


class Learned(Policy):
    name = "learned"
    refine = "ao"

    def __init__(self, scenario, checkpoint=None, **kw):
        super().__init__(scenario)
        from irs_torch.inference import find_checkpoint
        from irs_torch.learn.checkpoint import load_model

        t = time.perf_counter()
        try:
            path = checkpoint or find_checkpoint(scenario)
        except FileNotFoundError as e:
            raise InputError(f"--policy {self.name}: {e}") from None
        self.checkpoint = str(path)
        self.net = load_model(path, scenario)
        self.setup_seconds = time.perf_counter() - t

    def design(self, scn_pred, scn_true, pred_xy, pred_cov, seed):
        from irs_torch.inference import solve_learned
        from irs_torch.solvers import SolverOptions

        t = time.perf_counter()
        r = solve_learned(scn_pred, refine=self.refine, net=self.net, verbose=False,
                          options=SolverOptions(seed=int(seed)))
        dt = time.perf_counter() - t
        return r.R_s, r.psi, {"seconds": dt, "status": r.status, "success": bool(r.success), "nit": int(r.nit),
                              "design_max_crb": float(r.max_crb)}


class LearnedNet(Learned):
    name = "learned-net"
    refine = "none"


def _robust_solver():
    """The robust solver and its region type (:mod:`irs_torch.design.robust`; imported on first use: cvxpy)."""
    from irs_torch.design.robust import Region, solve_robust

    return solve_robust, Region


class Robust(Policy):
    """Robust design over the prediction's ``sigmas``-sigma covariance ellipse (``points`` candidates)."""

    name = "robust"
    sigmas = 2.0

    def __init__(self, scenario, robust_points: int = 9, **kw):
        super().__init__(scenario)
        self.solve_robust, self.Region = _robust_solver()
        self.points = int(robust_points)

    def region(self, scn_pred, pred_xy, pred_cov):
        z = float(np.asarray(scn_pred.target_pos)[2])
        return self.Region.ellipse([float(pred_xy[0]), float(pred_xy[1]), z],
                                   np.asarray(pred_cov, dtype=np.float64), k_sigma=self.sigmas)

    def design(self, scn_pred, scn_true, pred_xy, pred_cov, seed):
        from irs_torch.solvers import SolverOptions, solve

        t = time.perf_counter()
        reg = self.region(scn_pred, pred_xy, pred_cov)
        try:
            r = self.solve_robust(scn_pred, reg, K=self.points, options=SolverOptions(seed=int(seed)))
        except InputError:  # e.g. a candidate of the ellipse behind an IRS: the point design instead
            r = solve(scn_pred, method="ao", options=SolverOptions(seed=int(seed)))
            r.status = f"point-fallback ({r.status})"
        dt = time.perf_counter() - t
        return r.R_s, r.psi, {"seconds": dt, "status": getattr(r, "status", ""),
                              "success": bool(getattr(r, "success", True)), "nit": int(getattr(r, "nit", 0)),
                              "design_max_crb": float(getattr(r, "max_crb", float("nan")))}


_CLASSES = {"oracle": Oracle, "ao": AO, "learned": Learned, "learned-net": LearnedNet, "robust": Robust,
            "isotropic": Isotropic}


def make_policy(name: str, scenario, **options) -> Policy:
    """The policy object ``name`` for ``scenario`` (options: ``checkpoint`` for the learned ones,
    ``robust_points`` for robust)."""
    if name not in _CLASSES:
        raise InputError(f"--policy: unknown policy {name!r}; choose from {', '.join(POLICIES)} or 'all'")
    return _CLASSES[name](scenario, **options)

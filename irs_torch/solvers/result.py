"""The solver's options and its one result type.

:class:`SolverOptions` (frozen, validated) configures :func:`irs_torch.solvers.solve`;
:class:`SolveResult` is what every method returns (modelled on ``scipy.optimize.OptimizeResult``),
convertible to a :class:`irs_torch.Solution` for files.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from irs_torch.scenario import Scenario, Solution

P2_SOLVERS = ("SCS", "CLARABEL")
P3_METHODS = ("sca-sdr", "first-order")
METHODS = ("ao", "transmit-only", "reflective-only", "passive")
INIT_KINDS = ("random", "aligned")
EFFORTS = ("legacy", "fast", "default", "thorough", "portfolio", "first-order")  # see irs_torch.solvers.strategy


@dataclass(frozen=True)
class SolverOptions:
    """Settings of the exact solver (all have defaults; validated on construction).

    max_iter: cap on AO iterations (one P2 + one P3 each). rtol: stop when the relative max-CRB
    improvement of an AO iteration is below rtol. p2_solver: conic solver of the SDPs ("CLARABEL",
    default, equilibration off; or "SCS" with eps_abs = eps_rel = p2_eps). Measured on the paper
    scenario (scripts/bench_solver.py): SCS needs 10^4-2*10^5 iterations on P2 and returned a
    max-CRB 4% above the optimum on one of five instances, Clarabel ~20 interior-point iterations.
    p2_subspace: dimension k of the certified subspace P2 (None or >= M: the full SDP; see
    :func:`irs_torch.solvers.transmit.solve_transmit_sdp`). p3: reflective step, "first-order"
    (default: Adam on the torch CRB; it reached the lower max-CRB in our measurements, see
    scripts/bench_solver.py) or "sca-sdr" (SCA + SDR + Gaussian randomisation, Section IV-B).
    p3_steps, p3_starts: Adam steps and starts of the first-order P3 in the first AO iteration;
    p3_warm_steps: its steps in later iterations (one start: the current psi). sca_iter: SCA iterations per
    P3 call. n_randomizations: Gaussian randomisation draws of the SDR. seed: all randomness
    (initial phases, randomisation, multi-starts). n_starts: AO starting points for ``init=None``
    (1: the random start; 2: also the a_max start, docs/assumptions.md "Numerical experience"; more: further random
    starts).
    p2_eps: conic solver tolerance. feas_rtol: relative tolerance of the final constraint check.
    passive_fair: for method "passive", give the BS P_t + P_s (power-fair comparison).
    torch_threads: torch intra-op threads while solving (restored afterwards; None leaves torch's
    setting). effort: how hard method "ao" with ``init=None`` searches (:mod:`irs_torch.solvers.strategy`):
    "legacy" (one random start; data-set labels use it), "fast", "default" (a batched joint
    first-order screen of 8 diverse starts, then the AO from the best) or "thorough" (the best-known
    search). The solver's tensors are tiny: on the 2-core machine one thread ran the paper AO in
    6.7 s and two threads (with other work running) in 48 s. Run instances in parallel instead.
    """

    max_iter: int = 20
    rtol: float = 1e-3
    p2_solver: str = "CLARABEL"
    p3: str = "first-order"
    n_randomizations: int = 50
    seed: int = 0
    verbose: bool = False
    n_starts: int = 1
    p2_eps: float = 1e-8
    p2_subspace: int | None = 8
    p3_steps: int = 100
    p3_starts: int = 4
    p3_warm_steps: int = 30
    sca_iter: int = 10
    feas_rtol: float = 1e-6
    passive_fair: bool = False
    torch_threads: int | None = 1
    effort: str = "default"

    def __post_init__(self):
        def _int(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")

        _int("max_iter", 1)
        _int("n_randomizations", 0)
        _int("seed", 0)
        _int("n_starts", 1)
        _int("p3_steps", 1)
        _int("sca_iter", 1)
        _int("p3_starts", 1)
        _int("p3_warm_steps", 1)
        if self.torch_threads is not None:
            _int("torch_threads", 1)
        if self.p2_subspace is not None:
            _int("p2_subspace", 4)
        for name in ("rtol", "p2_eps", "feas_rtol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v < 1):
                raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")
        p2 = str(self.p2_solver).upper()
        if p2 not in P2_SOLVERS:
            raise ValueError(f"p2_solver must be one of {P2_SOLVERS}, got {self.p2_solver!r}")
        object.__setattr__(self, "p2_solver", p2)
        if self.effort not in EFFORTS:
            raise ValueError(f"effort must be one of {EFFORTS}, got {self.effort!r}")
        if self.p3 not in P3_METHODS:
            raise ValueError(f"p3 must be one of {P3_METHODS}, got {self.p3!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def failure_counts(history: list) -> dict:
    """Failed steps of a run from its history entries: ``p2_steps`` (entries with a P2 step),
    ``p2_failed`` (those with ``p2_failed``), ``p2_solver_failures`` (conic solves that failed, including
    ones a fallback recovered), and the same for P3. All ints."""
    out = {}
    for k in ("p2", "p3"):
        steps = [h for h in history or [] if f"{k}_failed" in h]
        out[f"{k}_steps"] = len(steps)
        out[f"{k}_failed"] = sum(bool(h[f"{k}_failed"]) for h in steps)
        out[f"{k}_solver_failures"] = sum(int(h.get(f"{k}_solver_failures", 0)) for h in steps)
    out["p2_inexact"] = sum(bool(h.get("p2_inexact", False)) for h in history or [])
    return out


@dataclass
class SolveResult:
    """Result of :func:`irs_torch.solvers.solve` for one (unbatched) scenario.

    R_s ``(L, M, M)`` complex128 [W]; psi ``(L, N)`` complex128; crb ``(L,)`` tr(F_l^-1) computed
    by the torch model for the returned (R_s, psi) (never a solver's own objective); max_crb its
    max; margins: :meth:`Scenario.constraint_margins` of the returned point (>= 0 satisfied);
    history: one dict per AO iteration (``max_crb``, ``crb`` list, ``t_p2``, ``t_p3`` seconds, and
    step details, including ``p2_failed`` / ``p3_failed`` and the solver failure counts); status:
    ``"converged"`` (relative improvement < rtol), ``"max-iter"``, ``"single-step"`` (benchmarks),
    ``"network-only"`` (:func:`irs_torch.inference.solve_learned` with ``refine="none"``),
    ``"solver-failed"`` or ``"infeasible"`` (see below); success: see below; nit: AO iterations;
    times: ``total``, ``p2``, ``p3`` seconds; options: the settings as a dict plus ``method``;
    init_*: the starting point; message: what went wrong or is worth knowing (empty if nothing);
    failures: :func:`failure_counts` of the history (``p2_steps``, ``p2_failed``,
    ``p2_solver_failures``, ``p2_inexact``, ``p3_steps``, ``p3_failed``, ``p3_solver_failures``).

    Failures and ``success`` (the rule). A P2 step fails when no conic solve returned a point
    (infeasible / error / no or non-finite point) or the step raised a solver error. A P2 step whose
    points all violate the constraints beyond the check's tolerance is *inexact*, not failed: the
    better point is repaired to exact feasibility and used like any other (kept only if it lowers
    the max-CRB); inexact steps are counted (``p2_inexact``) and noted in the message, and do not
    change ``success`` (measured: on C1-binding instances refusing them cost up to 7x in max-CRB); a P3 step
    fails when psi of some IRS could not be optimised at all (SCA:
    every SDR solve of that IRS returned no point; first-order: no finite CRB) or it raised. A
    failed step's point is never used: a failed P2 keeps R_s, a failed IRS keeps its psi, so the
    returned point always comes from the start and the steps that succeeded. Then

    - ``success=False``, status ``"infeasible"``: the returned point fails the constraint check
      (``options.feas_rtol``) or has a non-finite CRB;
    - ``success=False``, status ``"solver-failed"``: every P2 step of the run failed (methods with
      P2: ao, transmit-only, passive, learned with refine) or every P3 step failed (ao,
      reflective-only, passive, learned with refine); the message starts with ``"FAILED:"``;
    - ``success=True`` otherwise; if some steps failed, the message starts with ``"warning:"`` and
      gives the counts and the last failure (the run's status is kept).
    """

    R_s: torch.Tensor
    psi: torch.Tensor
    crb: torch.Tensor
    max_crb: float
    margins: dict
    history: list = field(default_factory=list)
    status: str = ""
    success: bool = False
    nit: int = 0
    times: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    init_R_s: torch.Tensor | None = None
    init_psi: torch.Tensor | None = None
    init_crb: torch.Tensor | None = None
    init_max_crb: float = float("nan")
    crb_theta: torch.Tensor | None = None
    crb_phi: torch.Tensor | None = None
    message: str = ""
    failures: dict = field(default_factory=dict)

    def to_solution(self, scenario: Scenario | None = None) -> Solution:
        """A :class:`Solution` holding R_s, psi, the per-IRS crb (torch model), the history as
        arrays (``history_max_crb``, ``history_crb``, ``history_t_p2``, ``history_t_p3``), the
        starting point (``init_R_s``, ``init_psi``, ``init_crb``) and the settings/status/timings
        in ``metadata``."""
        md = {"status": self.status, "success": bool(self.success), "nit": int(self.nit),
              "max_crb": float(self.max_crb), "init_max_crb": float(self.init_max_crb),
              "times": {k: float(v) for k, v in self.times.items()}, "options": self.options,
              "margins": {k: torch.as_tensor(v).detach().flatten().tolist() for k, v in self.margins.items()},
              "message": self.message, "failures": {k: int(v) for k, v in (self.failures or {}).items()}}
        if scenario is not None:
            md.update({"scenario_seed": scenario.seed, "scenario_preset": scenario.preset})
        arrays = {}
        if self.crb_theta is not None:
            arrays["crb_theta"] = self.crb_theta.detach()
            arrays["crb_phi"] = self.crb_phi.detach()
        if self.history:
            arrays["history_max_crb"] = torch.tensor([h["max_crb"] for h in self.history], dtype=torch.float64)
            arrays["history_crb"] = torch.tensor([h["crb"] for h in self.history], dtype=torch.float64)
            arrays["history_t_p2"] = torch.tensor([h.get("t_p2", 0.0) for h in self.history], dtype=torch.float64)
            arrays["history_t_p3"] = torch.tensor([h.get("t_p3", 0.0) for h in self.history], dtype=torch.float64)
        if self.init_R_s is not None:
            arrays["init_R_s"] = self.init_R_s.detach()
            arrays["init_psi"] = self.init_psi.detach()
            arrays["init_crb"] = self.init_crb.detach()
        from irs_torch import __version__

        md["version"] = __version__
        return Solution(R_s=self.R_s.detach(), psi=self.psi.detach(), crb=self.crb.detach(),
                        method=str(self.options.get("method", "ao")), metadata=md, arrays=arrays)

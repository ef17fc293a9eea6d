"""Scenarios and solutions: validated, batched descriptions of systems and designs, presets, files.

- :mod:`.model`: :class:`Scenario` (fields, shapes, validation, the physics on a scenario, simple designs).
- :mod:`.presets`: :func:`~.presets.paper` (the paper's Section V) and :func:`~.presets.from_geometry`.
- :mod:`.sampling`: the geometry accept rule :func:`~.sampling.geometry_admissible` and
  :class:`GeometryDistribution` (:meth:`Scenario.random`).
- :mod:`.files`: the scenario ``.npz`` format (strict reading) and the ``.npz`` reader.
- :mod:`.solution`: :class:`Solution` (a design with its CRB and metadata, ``.npz`` / ``.mat``).

``from irs_torch.scenario import Scenario, Solution, GeometryDistribution, ...`` keeps working.
"""
from irs_torch.scenario.files import REQUIRED_KEYS, SCENARIO_FORMAT, SOLUTION_FORMAT
from irs_torch.scenario.model import (
    ANGLE_TOL_RAD,
    BUDGET_FIELDS,
    MIN_FRONT_COSINE,
    MIN_SEPARATION_M,
    Scenario,
)
from irs_torch.scenario.sampling import GeometryDistribution, geometry_admissible
from irs_torch.scenario.solution import Solution

__all__ = ["Scenario", "Solution", "GeometryDistribution", "geometry_admissible", "SCENARIO_FORMAT",
           "SOLUTION_FORMAT", "REQUIRED_KEYS", "ANGLE_TOL_RAD", "BUDGET_FIELDS", "MIN_SEPARATION_M",
           "MIN_FRONT_COSINE"]

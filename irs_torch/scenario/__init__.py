"""Scenarios and solutions: validated, batched descriptions of systems and designs, presets, files.

- :mod:`.model`: :class:`Scenario` (fields, shapes, validation, the physics on a scenario, simple designs,
  :meth:`Scenario.save`); it knows nothing of presets, samplers or file reading: those build Scenarios.
- :mod:`.placement`: where nodes may be (the placement checks and the geometry accept rule
  :func:`~.placement.geometry_admissible`).
- :mod:`.presets`: :func:`~.presets.paper_scenario` (the paper's Section V) and :func:`~.presets.from_geometry`.
- :mod:`.sampling`: random geometries, :class:`GeometryDistribution` and :func:`~.sampling.random_scenario`.
- :mod:`.files`: the scenario ``.npz`` format, read strictly (:func:`~.files.load_scenario`,
  :func:`~.files.scenario_from_dict`).
- :mod:`.solution`: :class:`Solution` (a design with its CRB and metadata, ``.npz`` / ``.mat``).
"""
from irs_torch.scenario.files import REQUIRED_KEYS, SOLUTION_FORMAT, load_scenario, scenario_from_dict
from irs_torch.scenario.model import (
    ANGLE_TOL_RAD,
    BUDGET_FIELDS,
    SCENARIO_FORMAT,
    Scenario,
)
from irs_torch.scenario.placement import MIN_FRONT_COSINE, MIN_SEPARATION_M, geometry_admissible
from irs_torch.scenario.presets import from_geometry, paper_scenario
from irs_torch.scenario.sampling import GeometryDistribution, random_scenario
from irs_torch.scenario.solution import Solution

__all__ = ["Scenario", "Solution", "GeometryDistribution", "geometry_admissible", "paper_scenario", "from_geometry",
           "random_scenario", "load_scenario", "scenario_from_dict", "SCENARIO_FORMAT", "SOLUTION_FORMAT",
           "REQUIRED_KEYS", "ANGLE_TOL_RAD", "BUDGET_FIELDS", "MIN_SEPARATION_M", "MIN_FRONT_COSINE"]

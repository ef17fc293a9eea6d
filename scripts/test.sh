#!/usr/bin/env bash
# Install irs-torch with its test and dev dependencies, lint it (ruff), and run the test suite.
#   bash scripts/test.sh [PYTEST_ARGS...]        the default (fast) suite: what CI runs (.ci/run)
#   bash scripts/test.sh --all [PYTEST_ARGS...]  the default suite AND the tests marked slow
# Other arguments are passed to pytest unchanged (e.g. -x, -k NAME, tests/test_data.py).
# Lint runs first and fails the run on any finding: rules E, F, I (import order), W, line length 120
# ([tool.ruff] in pyproject.toml); `ruff check --fix .` repairs what it can.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check -e ".[test,dev]"
python -m ruff check --no-cache .
if [[ "${1:-}" == "--all" ]]; then
  shift
  # pyproject's addopts deselect slow tests (-m 'not slow'); a later -m replaces that filter.
  python -m pytest -q -m "slow or not slow" "$@"
else
  python -m pytest -q "$@"
fi

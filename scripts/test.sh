#!/usr/bin/env bash
# Install irs-torch with its test dependencies and run the default (fast) test suite.
# Slow tests: `python -m pytest -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check -e ".[test]"
python -m pytest -q "$@"

"""Shared test setup: make the numpy reference module (tests/reference.py) importable."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

"""``python -m irs_torch``: the ``irs-torch`` command (part of the command layer, like cli.py)."""
import sys

from .cli import main

sys.exit(main())

import sys

from irs_torch.cli import main

sys.exit(main())

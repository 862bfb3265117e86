"""`python -m wsmooth_ext ...` runs the `wsmooth` command line (for environments without the console script)."""

import sys

from .cli import main

sys.exit(main())

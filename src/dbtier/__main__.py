"""`python3 -m dbtier`: the CLI without the console script (e.g. from Debian's python3)."""

import sys

from .cli import main

sys.exit(main())

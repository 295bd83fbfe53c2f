"""`python -m benchmarks.soak`: see the package's docstring."""

import sys

from benchmarks.soak.cli import main

sys.exit(main())

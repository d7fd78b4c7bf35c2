"""``python -m devtools.runner``: the runner's command line (see :mod:`devtools.runner.cli`)."""

import sys

from devtools.runner.cli import main

sys.exit(main())

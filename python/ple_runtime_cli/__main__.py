"""``python -m ple_runtime_cli ARGS`` runs the ``ple`` tool (see the package docstring)."""

import sys

from . import main

sys.exit(main())

"""``python -m sourcetrace`` runs the CLI."""

import sys

from sourcetrace.cli import main

sys.exit(main())

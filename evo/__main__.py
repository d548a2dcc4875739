"""``python -m evo`` runs the command line."""

import sys

from evo.cli import main

sys.exit(main())

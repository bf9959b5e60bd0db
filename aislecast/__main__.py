"""``python -m aislecast``."""

import sys

from aislecast.apps.cli import main

sys.exit(main())

"""``python -m aislecast``."""

import sys

from aislecast.cli import main

sys.exit(main())

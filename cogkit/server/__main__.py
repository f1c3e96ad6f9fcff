"""``python -m cogkit.server``: what a cogkit image's CMD runs."""

import sys

from cogkit.server.main import main

sys.exit(main())

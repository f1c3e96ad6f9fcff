import sys

from cogkit.cli.main import main

sys.exit(main())

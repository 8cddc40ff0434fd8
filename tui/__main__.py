"""`python -m tui [--source SRC]`: the terminal UI (what a bare `blurcast` runs)."""

import sys

from tui.app import main

sys.exit(main())

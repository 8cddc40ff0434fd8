import sys

from blurcast.cli import main

sys.exit(main())

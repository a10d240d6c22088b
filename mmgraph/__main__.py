"""``python -m mmgraph``: the same command line as the ``mmgraph`` console script."""

import sys

from mmgraph.cli import main

sys.exit(main())
